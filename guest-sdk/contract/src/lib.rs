//! The small rules that cairn's host and its guest SDKs must agree on, defined
//! once.
//!
//! Each rule is written on both sides of the host/guest line: the SDK checks
//! what an author writes at build time, the host checks what an operator or a
//! plugin hands it at run time. When the two sides kept their own copies they
//! drifted (the host took `timeout = "0s"` that the SDK would refuse), so both
//! now call this crate, and its tests are the one specification:
//!
//! * [`parse_duration`] / [`parse_positive_duration`]: the duration grammar
//!   of `#[action(timeout = "30s")]`, `cairn.toml` and the CLI's flags.
//! * [`check_name`]: what a module or action name may contain.
//! * [`PANIC_MARKER`]: how a guest's panic report is found on its stderr.
//! * [`ERROR_TRACEBACK_KEY`] and [`ERROR_TYPE_HIERARCHY_KEY`]: where a
//!   guest puts what the WIT `action-error` has no field for.
//!
//! The Python SDK (`guest-sdk/python`) re-implements the duration grammar in
//! Python; it runs the same vectors (`tests/durations.txt`).
//!
//! This crate has no dependencies: a proc-macro crate, a `wasm32-wasip2`
//! guest and the host all link it.

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

/// The text that starts a guest's panic report on its stderr.
///
/// The guest SDK's panic hook writes `cairn:panic: <message> (at
/// <file>:<line>:<col>)` and nothing after it (the instance aborts at once).
/// The host keeps everything after the **last** occurrence of the marker and
/// reports it as an error of type `Panic`; "last", because the author's own
/// output may quote the marker, but nothing can follow the hook's record.
pub const PANIC_MARKER: &str = "cairn:panic:";

/// The key of an `action-error`'s `details` entry that carries the guest's
/// traceback (a string). The WIT `action-error` record has no field for it;
/// the host moves the entry into the error payload's `traceback`. A `:`
/// keeps it apart from any field name a guest's own details use. The Python
/// SDK sends it (`cairn.errors.TRACEBACK_KEY`, same text).
pub const ERROR_TRACEBACK_KEY: &str = "cairn:traceback";

/// The key of an `action-error`'s `details` entry that carries the error
/// type's ancestors, nearest first (a list of strings, e.g. a Python MRO);
/// the host moves it into the error payload's `type_hierarchy`.
pub const ERROR_TYPE_HIERARCHY_KEY: &str = "cairn:type_hierarchy";

/// Why a duration was refused. Displays as a sentence fragment that names the
/// problem and the accepted form, e.g. `` `500` has no unit (write 500ms, 30s,
/// 5m or 1h) ``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
    why: DurationProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DurationProblem {
    Empty,
    NoNumber,
    NoUnit,
    UnknownUnit,
    TooLarge,
    Zero,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match self.why {
            DurationProblem::Empty => f.write_str("the duration is empty")?,
            DurationProblem::NoNumber => write!(f, "`{text}` does not start with a whole number")?,
            DurationProblem::NoUnit => write!(f, "`{text}` has no unit")?,
            DurationProblem::UnknownUnit => write!(f, "`{text}` has an unknown unit")?,
            DurationProblem::TooLarge => write!(f, "`{text}` is too large")?,
            DurationProblem::Zero => write!(f, "`{text}` is zero; it must be greater than zero")?,
        }
        f.write_str(" (write a whole number and a unit: 500ms, 30s, 5m or 1h)")
    }
}

impl std::error::Error for DurationError {}

/// Parse a duration: a whole number of milliseconds (`ms`), seconds (`s`),
/// minutes (`m`) or hours (`h`), e.g. `250ms`, `30s`, `5m`, `1h`. Whitespace
/// around the text and between the number and the unit is allowed. Zero is
/// allowed (`0s`: "no delay"); use [`parse_positive_duration`] where it would
/// be nonsense.
///
/// The unit is required: a bare `500` could mean milliseconds or seconds, and
/// a guess either way turns a typo into a budget a thousand times off. The
/// total must fit `u64` milliseconds.
///
/// # Errors
///
/// A [`DurationError`] saying what is wrong and which form is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_millis(text).map(Duration::from_millis)
}

/// [`parse_duration`], refusing zero: for timeouts, leases and backoffs,
/// where a zero budget would fail every call at once.
///
/// # Errors
///
/// As [`parse_duration`], and for a zero duration.
pub fn parse_positive_duration(text: &str) -> Result<Duration, DurationError> {
    match parse_millis(text)? {
        0 => Err(error(text, DurationProblem::Zero)),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn parse_millis(text: &str) -> Result<u64, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error(text, DurationProblem::Empty));
    }
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    if number.is_empty() {
        return Err(error(text, DurationProblem::NoNumber));
    }
    let scale: u64 = match unit.trim_start() {
        "" => return Err(error(text, DurationProblem::NoUnit)),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(error(text, DurationProblem::UnknownUnit)),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| error(text, DurationProblem::TooLarge))
}

fn error(text: &str, why: DurationProblem) -> DurationError {
    DurationError {
        text: text.trim().to_owned(),
        why,
    }
}

/// A duration as the grammar writes it, in the largest unit that keeps it
/// exact: `1h`, `5m`, `30s`, `250ms`; below a millisecond, `0ms`. What
/// [`parse_duration`] reads back (for whole milliseconds).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, scale) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= scale && ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// Why a module or action name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    kind: &'static str,
    name: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} name {:?} is invalid: it must be non-empty, without `:` or whitespace",
            self.kind, self.name
        )
    }
}

impl std::error::Error for NameError {}

/// Whether `name` may name a module or an action: non-empty, no `:` (the
/// separator of the registry key `module:name`) and no whitespace (names
/// appear in logs, CLI arguments and metric labels).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(':') && !name.chars().any(char::is_whitespace)
}

/// [`is_valid_name`] as a `Result`; `kind` (`"module"`, `"action"`) goes
/// into the message.
///
/// # Errors
///
/// A [`NameError`] naming the kind and the refused name.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NameError {
            kind,
            name: name.to_owned(),
        })
    }
}
