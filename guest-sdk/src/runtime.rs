//! What `#[action]` and `plugin!` expand to call: the action registry,
//! argument binding, result encoding and the `describe`/`invoke` entry points.
//!
//! Everything here is reachable as `cairn_sdk::__private::*` so that macro
//! output can name it, and so that tests can drive a plugin natively exactly
//! as the host would through the component boundary. It is not a stable API.
//!
//! # Guarantees
//!
//! * `invoke` never traps for anything the SDK can see: an unknown action,
//!   argument bytes that do not decode, a missing, extra or ill-typed argument,
//!   a result that does not serialize and an async action that stalls are all
//!   `action-error`s. Only the author's own code can trap (a panic, an
//!   out-of-bounds access, running out of memory), and panics are reported
//!   through the protocol in [`crate::panic`].
//! * Neither entry point calls a dependency (`log`, `context`, ...), so a
//!   plugin's import list names exactly the dependencies its author's code
//!   uses. `invoke` makes a [`Resolver`] for the call, but a resolver only
//!   reaches an import when an action's `Dep<T>` parameter asks for it.
//! * A dependency that fails to resolve is an `action-error` of type
//!   `DependencyError`, and the action is not called. Keyword arguments are
//!   bound first, so bad arguments fail before any dependency is built.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use cairn_payload::{WorkflowArgumentValue, WorkflowArguments};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::cairn::plugin::types::{ActionError, ActionInfo, PluginInfo, RetryPolicy};
use crate::deps::{DependencyError, Inject, Resolver};
use crate::error::{into_error, sdk_error, to_action_error, ActionFailure, SDK_MODULE};
use crate::Error;

/// One `#[action]` function, as registered by the macro.
pub struct ActionEntry {
    /// The action's name within the plugin's module.
    pub name: &'static str,
    /// The function's doc comment.
    pub description: &'static str,
    /// `#[action(timeout = ...)]`, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `#[action(retries = ..., backoff = ..., max_backoff = ...)]`.
    pub retry: Option<RetryPolicy>,
    /// Bind the arguments, resolve the dependencies from the resolver (a
    /// fresh scope for this invocation), run the function, encode its
    /// outcome.
    pub invoke: fn(&WorkflowArguments, &Resolver) -> Result<Vec<u8>, ActionError>,
}

inventory::collect!(ActionEntry);

/// Every registered action, sorted by name so `describe` is deterministic
/// (link order is not).
fn entries() -> Vec<&'static ActionEntry> {
    let mut entries: Vec<&'static ActionEntry> = inventory::iter::<ActionEntry>().collect();
    entries.sort_by(|a, b| a.name.cmp(b.name));
    entries
}

/// The plugin's `describe`: its module and every action, sorted by name.
///
/// # Panics
///
/// If two actions share a name (e.g. through `#[action(name = ...)]`). That is
/// a build mistake no caller can recover from; in a component the panic
/// becomes a trap whose message the host reports when loading the plugin.
pub fn describe(module: &str) -> PluginInfo {
    crate::panic::install_hook();
    let entries = entries();
    for pair in entries.windows(2) {
        if pair[0].name == pair[1].name {
            panic!(
                "plugin `{module}` defines action `{}` more than once",
                pair[0].name
            );
        }
    }
    PluginInfo {
        module: module.to_owned(),
        actions: entries
            .into_iter()
            .map(|entry| ActionInfo {
                name: entry.name.to_owned(),
                description: entry.description.to_owned(),
                timeout_ms: entry.timeout_ms,
                retry: entry.retry,
            })
            .collect(),
    }
}

/// The plugin's `invoke`: run action `name` with the protobuf-encoded keyword
/// arguments `args`, returning the encoded result payload.
///
/// # Errors
///
/// `UnknownAction` if the plugin has no action `name`; `ArgumentError` if
/// `args` does not decode or does not fit the action's parameters;
/// `DependencyError` if a `Dep<T>` parameter cannot be resolved;
/// `SerializationError` if the result does not serialize; `StalledFuture` if
/// an async action waits on something that can never wake it; otherwise
/// whatever the action itself returned as its `Err`.
///
/// Dependencies come from the host's imports in a component. Natively they
/// come from the resolver installed on this thread with
/// [`crate::testing::install`], or from an empty one, which resolves `log`
/// and `context` (stderr, the thread's context) and fails the others with a
/// `DependencyError` naming the missing test double.
pub fn invoke(module: &str, name: &str, args: &[u8]) -> Result<Vec<u8>, ActionError> {
    invoke_with(module, name, args, &crate::deps::for_invocation())
}

/// [`invoke`] with dependencies resolved from a scope of `resolver`.
///
/// # Errors
///
/// As [`invoke`].
pub fn invoke_with(
    module: &str,
    name: &str,
    args: &[u8],
    resolver: &Resolver,
) -> Result<Vec<u8>, ActionError> {
    crate::panic::install_hook();
    let entry = inventory::iter::<ActionEntry>()
        .find(|entry| entry.name == name)
        .ok_or_else(|| {
            sdk_error(
                "UnknownAction",
                format!("plugin `{module}` has no action `{name}`"),
            )
        })?;
    let args = cairn_payload::decode_arguments(args).map_err(|err| {
        sdk_error(
            "ArgumentError",
            format!("arguments are not a valid WorkflowArguments payload: {err}"),
        )
    })?;
    (entry.invoke)(&args, &resolver.scope())
}

/// Resolve one `Dep<T>` parameter of an action, as an `action-error` if it
/// fails.
pub fn inject<I: Inject>(resolver: &Resolver) -> Result<I, ActionError> {
    I::inject(resolver).map_err(|err| Error::from(err).into_action_error(SDK_MODULE))
}

/// Resolve one `Dep<T>` parameter for an action's generated `call`.
pub fn inject_for_call<I: Inject>(resolver: &Resolver) -> Result<I, Error> {
    I::inject(resolver).map_err(Error::from)
}

/// A `#[dependency]` fn's `Err`, described as the host would see it;
/// `module` is the fn's module path.
pub fn dependency_failure<E: ActionFailure>(err: E, module: &str) -> DependencyError {
    DependencyError::from_failure(err, module)
}

/// An action's `Result` as its generated `call` returns it: the `Err`
/// described as the host would see it.
pub fn call_result<T, E: ActionFailure>(result: Result<T, E>) -> Result<T, Error> {
    result.map_err(into_error)
}

/// Names the `Ok` type of any `Result` (including aliases such as
/// `anyhow::Result<T>`), so the generated `call` can spell its return type
/// without parsing the author's.
pub trait IsResult {
    /// The `Ok` type.
    type Ok;
}

impl<T, E> IsResult for Result<T, E> {
    type Ok = T;
}

/// The keyword arguments of one call, checked against the action's
/// parameters.
pub struct Kwargs<'a> {
    args: &'a WorkflowArguments,
}

impl<'a> Kwargs<'a> {
    /// Reject keys that are not parameters (`unexpected argument`) and keys
    /// given twice, as a Python call would.
    pub fn new(args: &'a WorkflowArguments, params: &[&str]) -> Result<Self, ActionError> {
        let mut seen: Vec<&str> = Vec::with_capacity(args.arguments.len());
        for argument in &args.arguments {
            let key = argument.key.as_str();
            if !params.contains(&key) {
                return Err(sdk_error(
                    "ArgumentError",
                    format!("unexpected argument `{key}`"),
                ));
            }
            if seen.contains(&key) {
                return Err(sdk_error(
                    "ArgumentError",
                    format!("argument `{key}` given more than once"),
                ));
            }
            seen.push(key);
        }
        Ok(Kwargs { args })
    }

    /// The parameter `param`, deserialized. A missing argument counts as
    /// `null`, so `Option<T>` (and `()`) parameters are optional and every
    /// other type is required.
    pub fn take<T: DeserializeOwned>(&self, param: &str) -> Result<T, ActionError> {
        match self.args.get(param) {
            Some(value) => cairn_payload::from_value(value)
                .map_err(|err| sdk_error("ArgumentError", format!("argument `{param}`: {err}"))),
            None => cairn_payload::from_value(&WorkflowArgumentValue::null()).map_err(|_| {
                sdk_error(
                    "ArgumentError",
                    format!("missing required argument `{param}`"),
                )
            }),
        }
    }
}

/// Encode a plain return value as the result payload.
pub fn finish_value<T: Serialize + ?Sized>(
    action: &str,
    value: &T,
) -> Result<Vec<u8>, ActionError> {
    let value = cairn_payload::to_value(value).map_err(|err| {
        sdk_error(
            "SerializationError",
            format!("result of action `{action}` does not serialize: {err}"),
        )
    })?;
    Ok(cairn_payload::serialize_result_payload(value))
}

/// Encode a `Result` return value: `Ok` as the result payload, `Err` as an
/// `action-error` (see [`crate::Error`] for how it is described).
pub fn finish_result<T: Serialize, E: ActionFailure>(
    action: &str,
    action_module: &str,
    result: Result<T, E>,
) -> Result<Vec<u8>, ActionError> {
    match result {
        Ok(value) => finish_value(action, &value),
        Err(err) => Err(to_action_error(err, action_module)),
    }
}

/// Records whether anything woke the future since the last poll.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Run an async action to completion on the calling thread.
///
/// There is no reactor inside a plugin: a future can only make progress by
/// being polled again, which happens when it wakes itself (as a cooperative
/// `yield_now` does). A future that returns `Pending` without waking is
/// waiting for something that will never come, so instead of spinning until
/// the host's timeout this returns a `StalledFuture` error at once.
///
/// # Errors
///
/// `StalledFuture` as described above.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, ActionError> {
    let mut future = pin!(future);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Ok(output);
        }
        if !flag.0.swap(false, Ordering::AcqRel) {
            return Err(sdk_error(
                "StalledFuture",
                "action future was pending with nothing to wake it",
            ));
        }
    }
}
