//! `src/messages.rs` is generated from `proto/messages.proto` and checked in,
//! so that guests build it without protoc, protox or prost-build. This test
//! regenerates it (protox compiles the .proto, bundling the well-known
//! `google/protobuf/struct.proto`; prost-build writes the Rust) and fails when
//! the checked-in file differs: the Rust types always match the .proto.
//!
//! After editing the .proto, run it with `CAIRN_BLESS=1` to rewrite
//! `src/messages.rs` instead of failing:
//!
//! ```sh
//! CAIRN_BLESS=1 cargo test -p cairn-payload --test all generated_messages_match_proto_file
//! ```

use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles the .proto and returns the generated Rust source.
fn generate() -> Result<String, Box<dyn std::error::Error>> {
    let proto_dir = crate_dir().join("proto");
    let fds = protox::compile([proto_dir.join("messages.proto")], [&proto_dir])?;
    // A fresh directory per run, so that concurrent test runs do not collide.
    let out_dir = std::env::temp_dir().join(format!(
        "cairn-payload-messages-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&out_dir)?;
    let result = prost_build::Config::new()
        .out_dir(&out_dir)
        .compile_fds(fds)
        .and_then(|()| std::fs::read_to_string(out_dir.join("cairn.messages.rs")));
    std::fs::remove_dir_all(&out_dir)?;
    Ok(result?)
}

#[test]
fn generated_messages_match_proto_file() -> TestResult {
    let generated = generate()?;
    let checked_in_path: &Path = &crate_dir().join("src/messages.rs");
    if std::env::var_os("CAIRN_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(checked_in_path, &generated)?;
        return Ok(());
    }
    let checked_in = std::fs::read_to_string(checked_in_path)?;
    assert!(
        checked_in == generated,
        "src/messages.rs does not match proto/messages.proto; rerun with CAIRN_BLESS=1 to regenerate it.\n--- generated ---\n{generated}"
    );
    Ok(())
}
