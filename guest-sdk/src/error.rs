//! How an action reports failure.
//!
//! An action that returns `Result<T, E>` fails with its `E`. The SDK turns
//! that `E` into the WIT `action-error` record (type name, module, message,
//! retryable, details) that the host stores as the action's error payload and
//! consults for retries:
//!
//! * [`Error`] (this module's builder) sets every field explicitly.
//! * Any other `E: Display + 'static` (an `std::io::Error`, a `thiserror` enum,
//!   an `anyhow::Error`, a `String`...) is described by its Rust type:
//!   type name = the last segment of `std::any::type_name::<E>()` without
//!   generics, module = the path before it, message = its `Display` (alternate
//!   form, `{:#}`, so `anyhow` errors keep their whole context chain on one
//!   line), never retryable.
//!
//! The dispatch between the two is an `Any` downcast at run time, not trait
//! specialization, so it works on stable Rust for every `E`.

use std::any::Any;
use std::fmt;

use serde::Serialize;

use crate::bindings::cairn::plugin::types::ActionError;

/// The module reported for errors the SDK itself raises (bad arguments,
/// unknown action, unserializable result) and for an [`Error`] without a
/// custom type.
pub(crate) const SDK_MODULE: &str = "cairn_sdk";

/// An action's failure, with full control over what the host sees.
///
/// ```
/// use cairn_sdk::Error;
///
/// fn divide(a: f64, b: f64) -> Result<f64, Error> {
///     if b == 0.0 {
///         return Err(Error::new("division by zero").with_type("ZeroDivisionError"));
///     }
///     Ok(a / b)
/// }
///
/// let err = divide(1.0, 0.0).unwrap_err();
/// assert_eq!(err.type_name(), "ZeroDivisionError");
/// assert_eq!(err.to_string(), "division by zero");
/// assert!(!err.is_retryable());
/// ```
///
/// It converts from any `std::error::Error` with `?`, keeping that error's
/// type name and module, so an action returning `cairn_sdk::Result<T>` can
/// mix its own errors with library ones:
///
/// ```
/// fn read(path: &str) -> cairn_sdk::Result<String> {
///     Ok(std::fs::read_to_string(path)?)
/// }
///
/// let err = read("/definitely/not/here").unwrap_err();
/// assert_eq!(err.type_name(), "Error"); // std::io::Error
/// ```
///
/// `Error` deliberately does not implement `std::error::Error`: that would
/// conflict with the blanket `From` conversion above (the same trade-off
/// `anyhow::Error` makes).
///
/// It is `Clone` so that test doubles (e.g. a scripted HTTP failure) can hand
/// out the same error more than once.
#[derive(Clone)]
pub struct Error {
    type_name: Option<String>,
    module: Option<String>,
    message: String,
    retryable: bool,
    details: Option<Result<Vec<u8>, String>>,
}

impl Error {
    /// A non-retryable error with type name `Error` (module `cairn_sdk`) and
    /// this message. Name the type with [`Error::with_type`] so callers can
    /// tell failures apart.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            type_name: None,
            module: None,
            message: message.into(),
            retryable: false,
            details: None,
        }
    }

    /// A retryable error: the host runs the action again, following its retry
    /// policy, as long as attempts remain. Use it for transient conditions
    /// (a busy dependency, a lost race), not for bad input.
    pub fn retryable(message: impl Into<String>) -> Self {
        Error::new(message).with_retryable(true)
    }

    /// Set the error's type name, e.g. `ValueError`. Unless
    /// [`Error::with_module`] says otherwise, the module reported with it is
    /// the Rust module path of the action that returned the error.
    pub fn with_type(mut self, type_name: impl Into<String>) -> Self {
        self.type_name = Some(type_name.into());
        self
    }

    /// Set the module reported with the type name.
    pub fn with_module(mut self, module: impl Into<String>) -> Self {
        self.module = Some(module.into());
        self
    }

    /// Set whether running the action again may succeed.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Attach structured data, which becomes the `values` of the error
    /// payload. It must serialize to a dict: a struct, a map or a
    /// `serde_json::Value::Object`.
    ///
    /// If it does not, the error is still reported, without details and with
    /// a note on why appended to its message; an action's failure is never
    /// masked by a failure to describe it.
    pub fn with_details<D: Serialize>(mut self, details: D) -> Self {
        self.details = Some(encode_details(&details));
        self
    }

    /// The type name the host will see.
    pub fn type_name(&self) -> &str {
        self.type_name.as_deref().unwrap_or("Error")
    }

    /// The message the host will see (without any note about dropped
    /// details).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the host may retry the action.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The module reported for a custom type name when none was set: the
    /// Rust module path of the code that raised it (an action's or a
    /// dependency's).
    pub(crate) fn with_default_module(mut self, module: &str) -> Self {
        if self.module.is_none() && self.type_name.is_some() {
            self.module = Some(module.to_owned());
        }
        self
    }

    /// The module the host will see, if it is already decided (it is not for
    /// a custom type name without [`Error::with_module`]: that one takes the
    /// module of the action that returns it).
    pub(crate) fn module_if_set(&self) -> Option<&str> {
        match (&self.module, &self.type_name) {
            (Some(module), _) => Some(module),
            (None, None) => Some(SDK_MODULE),
            (None, Some(_)) => None,
        }
    }

    /// Convert to the WIT record; `action_module` is the Rust module path of
    /// the action, the default module for a custom type name.
    pub(crate) fn into_action_error(self, action_module: &str) -> ActionError {
        let module = match (&self.module, &self.type_name) {
            (Some(module), _) => module.clone(),
            (None, Some(_)) => action_module.to_owned(),
            (None, None) => SDK_MODULE.to_owned(),
        };
        let type_name = self.type_name().to_owned();
        let (message, details) = match self.details {
            None => (self.message, None),
            Some(Ok(bytes)) => (self.message, Some(bytes)),
            Some(Err(why)) => (
                format!("{} (error details dropped: {why})", self.message),
                None,
            ),
        };
        ActionError {
            type_name,
            module,
            message,
            retryable: self.retryable,
            details,
        }
    }
}

fn encode_details<D: Serialize + ?Sized>(details: &D) -> Result<Vec<u8>, String> {
    use cairn_payload::workflow_argument_value::Kind;
    use prost::Message;

    let value = cairn_payload::to_value(details).map_err(|err| err.to_string())?;
    match value.kind {
        Some(Kind::DictValue(dict)) => Ok(dict.encode_to_vec()),
        Some(Kind::Basemodel(model)) => Ok(model.data.unwrap_or_default().encode_to_vec()),
        _ => Err("details must serialize to a dict (a struct or a map)".to_owned()),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("type_name", &self.type_name())
            .field("module", &self.module)
            .field("message", &self.message)
            .field("retryable", &self.retryable)
            .field("has_details", &self.details.is_some())
            .finish()
    }
}

impl<E: std::error::Error + 'static> From<E> for Error {
    /// Keep the source error's type name and module; its message is its
    /// `Display` followed by its `source()` chain, joined by `: `.
    fn from(err: E) -> Self {
        let (module, type_name) = split_type_name(std::any::type_name::<E>());
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::new(message).with_type(type_name).with_module(module)
    }
}

/// Split `a::b::Type<c::D>` into (`a::b`, `Type`).
pub(crate) fn split_type_name(full: &str) -> (&str, &str) {
    let without_generics = full.split('<').next().unwrap_or(full);
    match without_generics.rfind("::") {
        Some(at) => (&without_generics[..at], &without_generics[at + 2..]),
        None => ("", without_generics),
    }
}

/// Marker for what an action's `Err` may hold. Blanket-implemented for every
/// `Display + 'static` type; it exists so the compiler's complaint about an
/// unsuitable error type says what is needed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an action's error type",
    label = "an #[action]'s error type must implement `Display` and be `'static`",
    note = "return `cairn_sdk::Error`, or any error type that implements `Display`"
)]
pub trait ActionFailure: fmt::Display + 'static {}

impl<E: fmt::Display + 'static> ActionFailure for E {}

/// Turn an action's `Err` into the WIT record: [`Error`] as built, anything
/// else by its type.
pub(crate) fn to_action_error<E: ActionFailure>(err: E, action_module: &str) -> ActionError {
    into_error(err).into_action_error(action_module)
}

/// Turn any action or dependency failure into an [`Error`]: an [`Error`] as
/// built, a [`crate::DependencyError`] as its own `Error` (type
/// `DependencyError`), anything else described by its Rust type (type name and
/// module from `type_name`, message its alternate `Display`, not retryable).
pub(crate) fn into_error<E: ActionFailure>(err: E) -> Error {
    let mut slot = Some(err);
    let any = &mut slot as &mut dyn Any;
    if let Some(err) = any.downcast_mut::<Option<Error>>().and_then(Option::take) {
        return err;
    }
    if let Some(err) = any
        .downcast_mut::<Option<crate::DependencyError>>()
        .and_then(Option::take)
    {
        return err.into();
    }
    let Some(err) = slot else {
        unreachable!("the slot is only emptied when `E` is `Error` or `DependencyError`")
    };
    let (module, type_name) = split_type_name(std::any::type_name::<E>());
    Error::new(format!("{err:#}"))
        .with_type(type_name)
        .with_module(module)
}

/// An error the SDK raises on the action's behalf (bad arguments, unknown
/// action...), never retryable: the same input would fail the same way.
pub(crate) fn sdk_error(type_name: &str, message: impl Into<String>) -> ActionError {
    ActionError {
        type_name: type_name.to_owned(),
        module: SDK_MODULE.to_owned(),
        message: message.into(),
        retryable: false,
        details: None,
    }
}

#[cfg(test)]
mod tests {
    use super::split_type_name;

    #[test]
    fn type_names_split_at_last_segment_without_generics() {
        assert_eq!(
            split_type_name("std::io::error::Error"),
            ("std::io::error", "Error")
        );
        assert_eq!(
            split_type_name("alloc::boxed::Box<dyn core::error::Error>"),
            ("alloc::boxed", "Box")
        );
        assert_eq!(split_type_name("&str"), ("", "&str"));
    }
}
