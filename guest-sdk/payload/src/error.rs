//! The one error type of this crate.
//!
//! Strategy: an [`Error`] is a message plus the path to where in the value it
//! happened (`point.x`, `items[2]`). The path is collected while the error
//! bubbles up through lists, dicts and struct fields, so building it costs
//! nothing on the success path. `Display` is always a single line (newlines in
//! messages from user `Serialize`/`Deserialize` impls are folded into spaces),
//! because these messages end up in log lines and in the `message` of error
//! payloads.

use std::fmt;

/// Why a conversion between a Rust value, a [`WorkflowArgumentValue`] and
/// bytes failed.
///
/// Every fallible function of this crate returns it, including the serde
/// `Serializer`/`Deserializer` (it implements [`serde::ser::Error`] and
/// [`serde::de::Error`], so `#[derive]`d impls report through it too).
/// `Display` is one line, e.g.
/// ``at field `point.x`: invalid type: string "a", expected i64``.
///
/// [`WorkflowArgumentValue`]: crate::WorkflowArgumentValue
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    /// Path segments, innermost first (they are pushed while unwinding).
    path: Vec<Segment>,
}

#[derive(Clone, PartialEq, Eq)]
enum Segment {
    /// A struct field or dict key.
    Key(String),
    /// A list or tuple position.
    Index(usize),
}

impl Error {
    /// An error with the given message (folded onto one line).
    pub(crate) fn msg(message: impl fmt::Display) -> Self {
        let message = message.to_string();
        let message = if message.contains(['\n', '\r']) {
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        } else {
            message
        };
        Error {
            message,
            path: Vec::new(),
        }
    }

    /// Records that the error happened inside the field or key `key`.
    pub(crate) fn in_key(mut self, key: &str) -> Self {
        self.path.push(Segment::Key(key.to_owned()));
        self
    }

    /// Records that the error happened inside list or tuple item `index`.
    pub(crate) fn in_index(mut self, index: usize) -> Self {
        self.path.push(Segment::Index(index));
        self
    }

    /// The message without the location, e.g. for matching in tests or for
    /// callers that print the location themselves.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the value the error happened, e.g. `point.x` or `items[2]`;
    /// `None` when it happened at the top level.
    pub fn path(&self) -> Option<String> {
        if self.path.is_empty() {
            return None;
        }
        let mut out = String::new();
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        Some(out)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            Some(path) => write!(f, "at field `{path}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.to_string())
    }
}

impl std::error::Error for Error {}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::msg(msg)
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::msg(msg)
    }
}
