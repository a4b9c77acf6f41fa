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
//!
//! The same dependency can be injected as a value, `Dep<Log>`, which a test
//! can point at a [`testing::RecordingLog`](crate::testing::RecordingLog) to
//! check what was logged:
//!
//! ```
//! use cairn_sdk::{Dep, Log};
//!
//! #[cairn_sdk::action]
//! fn charge(amount_cents: u64, log: Dep<Log>) {
//!     log.info("charging", &[("amount_cents", &amount_cents.to_string())]);
//! }
//! ```

use std::fmt;
use std::rc::Rc;

use crate::deps::builtin_dependency;

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

/// The `log` dependency as an injectable value.
#[derive(Clone)]
pub struct Log {
    backend: Rc<dyn LogBackend>,
}

/// Where a [`Log`] writes: the host's `tracing` output in a component,
/// stderr natively (both through this module's functions), or a test double
/// such as [`testing::RecordingLog`](crate::testing::RecordingLog).
pub trait LogBackend {
    /// Emit one record.
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]);
}

impl Log {
    /// A `Log` over any backend.
    pub fn new(backend: impl LogBackend + 'static) -> Self {
        Log {
            backend: Rc::new(backend),
        }
    }

    /// Emit one record with a message and extra key/value fields.
    pub fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.backend.log(level, message, fields);
    }

    /// Emit a `trace` record.
    pub fn trace(&self, message: &str, fields: &[(&str, &str)]) {
        self.log(Level::Trace, message, fields);
    }

    /// Emit a `debug` record.
    pub fn debug(&self, message: &str, fields: &[(&str, &str)]) {
        self.log(Level::Debug, message, fields);
    }

    /// Emit an `info` record.
    pub fn info(&self, message: &str, fields: &[(&str, &str)]) {
        self.log(Level::Info, message, fields);
    }

    /// Emit a `warn` record.
    pub fn warn(&self, message: &str, fields: &[(&str, &str)]) {
        self.log(Level::Warn, message, fields);
    }

    /// Emit an `error` record.
    pub fn error(&self, message: &str, fields: &[(&str, &str)]) {
        self.log(Level::Error, message, fields);
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Log { .. }")
    }
}

/// This module's functions as a backend: the host import in a component,
/// stderr natively.
struct Global;

impl LogBackend for Global {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        log(level, message, fields);
    }
}

builtin_dependency!(Log, log, Rc::new(Global));

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
