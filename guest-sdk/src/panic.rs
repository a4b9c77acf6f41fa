//! The panic protocol: how a panic inside a plugin reaches the host as an
//! error rather than an anonymous trap.
//!
//! `wasm32-wasip2` builds with `panic = "abort"`, so a panicking action
//! cannot be caught inside the guest: the instance traps. What the guest can
//! do is say why before it dies. At the start of every `describe` and
//! `invoke` the SDK installs (once per instance) a panic hook that writes one
//! record to stderr:
//!
//! ```text
//! cairn:panic: <message> (at <file>:<line>:<col>)
//! ```
//!
//! and writes nothing after it; the abort follows immediately. The message is
//! the panic payload (`&str` or `String`; otherwise `Box<dyn Any>`), verbatim,
//! so it may span several lines. The location part is omitted if the panic
//! has none.
//!
//! The host captures the guest's stderr, finds the **last** occurrence of
//! [`PANIC_MARKER`], and reports everything after it, trimmed, as an error of
//! type `Panic`. "Last" matters: the author's own stderr output may quote the
//! marker, but nothing can be written after the hook's record.
//!
//! On native targets (unit tests of a plugin crate) the hook is not installed,
//! so test failures print as Rust normally prints them.

use std::panic::PanicHookInfo;

/// The text that starts the panic record on stderr (defined once, for the
/// host and the SDK, in `cairn-contract`).
pub use cairn_contract::PANIC_MARKER;

/// Install the hook, once. Cheap to call on every entry.
pub(crate) fn install_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| std::panic::set_hook(Box::new(hook)));
    }
}

#[cfg(target_arch = "wasm32")]
fn hook(info: &PanicHookInfo<'_>) {
    use std::io::Write;
    // One write of the whole record; a failed write has nowhere to be reported.
    let _ = std::io::stderr().write_all(panic_record(info).as_bytes());
}

/// The stderr record for one panic, newline-terminated.
pub fn panic_record(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "Box<dyn Any>"
    };
    match info.location() {
        Some(at) => format!(
            "{PANIC_MARKER} {message} (at {}:{}:{})\n",
            at.file(),
            at.line(),
            at.column()
        ),
        None => format!("{PANIC_MARKER} {message}\n"),
    }
}
