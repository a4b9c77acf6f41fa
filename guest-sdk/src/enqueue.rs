//! Dependency `cairn:plugin/enqueue`: enqueue follow-up actions in the same
//! queue, which is how actions chain.
//!
//! Take a `Dep<Enqueue>` parameter to use it; only then does the component
//! import `cairn:plugin/enqueue`.
//!
//! ```
//! use cairn_sdk::enqueue::EnqueueOptions;
//! use cairn_sdk::{Dep, Enqueue, Error};
//! use std::time::Duration;
//!
//! #[derive(serde::Serialize)]
//! struct Receipt {
//!     order: u64,
//! }
//!
//! #[cairn_sdk::action]
//! fn checkout(order: u64, enqueue: Dep<Enqueue>) -> Result<i64, Error> {
//!     // `mail:receipt` runs later with the keyword argument `order`.
//!     enqueue.enqueue(
//!         "mail:receipt",
//!         &Receipt { order },
//!         EnqueueOptions::new()
//!             .delay(Duration::from_secs(60))
//!             .idempotency_key(format!("receipt-{order}")),
//!     )
//! }
//! ```
//!
//! # Errors
//!
//! A target that is not `module:name` or arguments that are not a struct or
//! map are non-retryable `EnqueueError`s, raised before the host is asked.
//! The host's own failures (one-line messages; typically the database is
//! away) are retryable `EnqueueError`s.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use cairn_payload::workflow_argument_value::Kind;
use cairn_payload::WorkflowArguments;
use serde::Serialize;

use crate::deps::builtin_dependency;
use crate::error::SDK_MODULE;
use crate::Error;

/// Enqueues follow-up actions.
#[derive(Clone)]
pub struct Enqueue {
    backend: Rc<dyn EnqueueBackend>,
}

/// How to enqueue; every field optional (the host's and the action's
/// defaults apply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    /// Not claimed before this much time from now (millisecond precision).
    pub delay: Option<Duration>,
    /// Lower runs first (the host's default is 0).
    pub priority: Option<i32>,
    /// Total attempts, overriding the action's retry policy.
    pub max_attempts: Option<u32>,
    /// At most one live row per key: enqueueing again with a live key returns
    /// that row's id instead of a new one.
    pub idempotency_key: Option<String>,
}

impl EnqueueOptions {
    /// No options: run as soon as possible with the action's defaults.
    pub fn new() -> Self {
        EnqueueOptions::default()
    }

    /// Set [`EnqueueOptions::delay`].
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Set [`EnqueueOptions::priority`].
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Set [`EnqueueOptions::max_attempts`].
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Set [`EnqueueOptions::idempotency_key`].
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// Where an [`Enqueue`] sends rows: the host's queue (in a component) or a
/// test double such as
/// [`testing::RecordingEnqueue`](crate::testing::RecordingEnqueue).
pub trait EnqueueBackend {
    /// Enqueue `module:name` with the keyword arguments `args`; return the
    /// row's id.
    ///
    /// # Errors
    ///
    /// When the queue cannot be reached or refuses the row.
    fn enqueue(
        &self,
        module: &str,
        name: &str,
        args: &WorkflowArguments,
        options: &EnqueueOptions,
    ) -> Result<i64, Error>;
}

impl Enqueue {
    /// An `Enqueue` over any backend, e.g. to call a function that takes
    /// `&Enqueue` in a test.
    pub fn new(backend: impl EnqueueBackend + 'static) -> Self {
        Enqueue {
            backend: Rc::new(backend),
        }
    }

    /// Enqueue the action `action` (`"module:name"`) with the keyword
    /// arguments `kwargs`: a `#[derive(Serialize)]` struct (its fields), a
    /// map with string keys, or `()` for none. Returns the new row's id (or,
    /// with a live idempotency key, the existing row's).
    ///
    /// # Errors
    ///
    /// An `EnqueueError`: see the module docs.
    pub fn enqueue<A: Serialize + ?Sized>(
        &self,
        action: &str,
        kwargs: &A,
        options: EnqueueOptions,
    ) -> Result<i64, Error> {
        let (module, name) = split_action(action)?;
        let args = to_arguments(kwargs)?;
        self.backend.enqueue(module, name, &args, &options)
    }
}

fn enqueue_error(message: String) -> Error {
    Error::new(message)
        .with_type("EnqueueError")
        .with_module(SDK_MODULE)
}

/// `"module:name"` into its parts, each a valid name by the rule the host
/// applies (`cairn_contract::is_valid_name`).
fn split_action(action: &str) -> Result<(&str, &str), Error> {
    match action.split_once(':') {
        Some((module, name))
            if cairn_contract::is_valid_name(module) && cairn_contract::is_valid_name(name) =>
        {
            Ok((module, name))
        }
        _ => Err(enqueue_error(format!(
            "cannot enqueue `{action}`: name the action as `module:name`"
        ))),
    }
}

/// Keyword arguments from a struct, a map or `()`.
fn to_arguments<A: Serialize + ?Sized>(kwargs: &A) -> Result<WorkflowArguments, Error> {
    let value = cairn_payload::to_value(kwargs)
        .map_err(|err| enqueue_error(format!("arguments do not serialize: {err}")))?;
    if value.is_null() {
        return Ok(WorkflowArguments::default());
    }
    let kind = value.kind_name();
    let entries = match value.kind {
        Some(Kind::DictValue(dict)) => dict.entries,
        Some(Kind::Basemodel(model)) => model.data.unwrap_or_default().entries,
        _ => {
            return Err(enqueue_error(format!(
                "keyword arguments must serialize to a struct or a map, not a {kind}"
            )))
        }
    };
    Ok(WorkflowArguments { arguments: entries })
}

impl fmt::Debug for Enqueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Enqueue { .. }")
    }
}

builtin_dependency!(
    Enqueue,
    enqueue,
    import "cairn:plugin/enqueue",
    double "cairn_sdk::testing::RecordingEnqueue::new()"
);

#[cfg(target_arch = "wasm32")]
fn host_backend() -> Result<Rc<dyn EnqueueBackend>, crate::deps::DependencyError> {
    use crate::bindings::cairn::plugin::enqueue as wit;

    struct Host;

    impl EnqueueBackend for Host {
        fn enqueue(
            &self,
            module: &str,
            name: &str,
            args: &WorkflowArguments,
            options: &EnqueueOptions,
        ) -> Result<i64, Error> {
            let wit_options = wit::Options {
                delay_ms: options
                    .delay
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                priority: options.priority,
                max_attempts: options.max_attempts,
                idempotency_key: options.idempotency_key.clone(),
            };
            let bytes = cairn_payload::encode_arguments(args);
            wit::enqueue(module, name, &bytes, &wit_options).map_err(|message| {
                enqueue_error(format!("enqueue `{module}:{name}`: {message}")).with_retryable(true)
            })
        }
    }

    Ok(Rc::new(Host))
}
