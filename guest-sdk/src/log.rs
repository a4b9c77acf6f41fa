//! Dependency `cairn:plugin/log`: structured records in the host's `tracing`
//! output.
//!
//! Calling any function here makes the plugin import `cairn:plugin/log`; a
//! plugin that never logs does not import it, and the host sees that in the
//! component's import list. The host adds the plugin's module, the action's
//! name and the attempt number to every record; the guest cannot forge them.
//!
//! ```no_run
//! cairn_sdk::log::info("charging card", &[("amount", "12.50"), ("currency", "EUR")]);
//! ```
//!
//! On native targets (a plugin's unit tests) records are printed to stderr as
//! `[LEVEL] message key=value ...`, so actions that log can be called directly.

/// A record's severity, mapped one to one onto `tracing` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Useful when debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected, but the action goes on.
    Warn,
    /// Something failed.
    Error,
}

/// Emit one record with a message and extra key/value fields.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    imp::log(level, message, fields);
}

/// Emit a `trace` record.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields);
}

/// Emit a `debug` record.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// Emit an `info` record.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Emit a `warn` record.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Emit an `error` record.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::cairn::plugin::log as wit;

    pub(super) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wit::log(level, message, &fields);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;

    pub(super) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let mut line = format!("[{}] {message}", format!("{level:?}").to_uppercase());
        for (key, value) in fields {
            line.push_str(&format!(" {key}={value}"));
        }
        eprintln!("{line}");
    }
}
