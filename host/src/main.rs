//! The `cairn` binary; everything lives in the library (`cairn::cli`).

fn main() -> std::process::ExitCode {
    cairn::cli::main()
}
