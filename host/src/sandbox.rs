//! Run one action call in a fresh, sandboxed instance.
//!
//! Strategy: every call gets a new [`Store`] (its data: [`crate::store`])
//! and a new instance from the plugin's pre-linked `InstancePre` (tens of
//! microseconds with the pooling allocator), so nothing leaks between calls
//! and a trapped instance — which cannot be re-entered — is simply dropped
//! with its store. One generic runner makes every export call (`describe`,
//! `invoke`), so both get the same limits and the same failure table.
//!
//! The sandbox, enforced here:
//! * WASI is linked but denies: no preopened directories, no network, no
//!   environment variables, no arguments, empty stdin. Stdout and stderr are
//!   captured into the host's logs ([`crate::stdio`]).
//! * Linear memory is capped per instance by a resource limiter (and, as a
//!   ceiling, by the pooling allocator).
//! * CPU: the engine's epoch ticker fires every few milliseconds; each tick
//!   yields to the executor, and the first tick past the call's deadline
//!   traps the guest. A host-side timer backs this up for time spent in host
//!   calls.
//!
//! Failure modes — each becomes a [`Failure`] with an error payload, never a
//! panic of the host:
//!
//! | what happened                  | type name         | retryable |
//! |--------------------------------|-------------------|-----------|
//! | guest returned `action-error`  | the guest's       | the guest's flag |
//! | guest panicked (SDK report)    | `Panic`           | no        |
//! | deadline passed                | `TimeoutError`    | yes       |
//! | memory cap hit                 | `MemoryError`     | yes       |
//! | any other trap                 | `Trap`            | yes       |
//! | instantiation failed           | `InstantiationError` | yes    |
//! | result is not a result payload | `InvalidResultPayload` | no    |
//!
//! Traps, timeouts and memory exhaustion are retryable because the host
//! cannot tell a deterministic bug from a transient condition; a panic is
//! the guest reporting its own bug, like a non-retryable error. So is a
//! returned value that is not a result payload (bytes that do not decode as
//! `WorkflowArguments`, or not exactly one entry `result`): the same code
//! returns the same bytes next time, and storing them as a success would
//! leave a `succeeded` row no reader can decode. The check
//! ([`cairn_payload::check_result_payload`]) walks the bytes once without
//! decoding or copying them; what is stored is still exactly what the guest
//! returned.

use crate::bindings::exports::cairn::plugin::plugin::Guest;
use crate::bindings::{ActionError, PluginInfo, PluginWorldPre};
use crate::engine::Engine;
use crate::error::one_line;
use crate::stdio::{GuestOutput, Stream};
use crate::store::PluginDeps;
use crate::store::{CallContext, HostState};
use cairn_contract::format_duration;
use cairn_payload::{from_value, WorkflowDictArgument, WorkflowErrorValue};
use prost::Message;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

/// Extra wall-clock time the host-side timer allows beyond a call's
/// deadline, so the epoch trap (which reports better) normally wins.
const HOST_TIMER_GRACE: Duration = Duration::from_millis(500);

/// The error a store's epoch callback raises once the deadline has passed.
#[derive(Debug)]
struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Why a call failed, for logging, metrics and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest returned an `action-error`.
    Action,
    /// The guest panicked; the SDK reported the message.
    Panic,
    /// The call ran past its deadline.
    Timeout,
    /// The guest hit the memory cap.
    OutOfMemory,
    /// Any other trap.
    Trap,
    /// The instance could not be created.
    Instantiate,
    /// The guest returned bytes that are not a result payload.
    InvalidResult,
}

/// A failed call: what happened, the error value that goes into the error
/// payload, and whether another attempt may succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind of failure this is.
    pub kind: FailureKind,
    /// The error as stored in the error payload.
    pub error: WorkflowErrorValue,
    /// Whether the queue should retry.
    pub retryable: bool,
}

impl Failure {
    fn host(
        kind: FailureKind,
        type_name: &str,
        message: String,
        traceback: String,
        retryable: bool,
    ) -> Self {
        Failure {
            kind,
            error: WorkflowErrorValue {
                r#type: type_name.to_owned(),
                module: "cairn".to_owned(),
                message,
                traceback,
                values: None,
                type_hierarchy: vec![type_name.to_owned()],
            },
            retryable,
        }
    }

    /// A guest's `action-error`. Its `details` become the payload's
    /// `values`, except the two entries the WIT record has no field for
    /// ([`cairn_contract::ERROR_TRACEBACK_KEY`],
    /// [`cairn_contract::ERROR_TYPE_HIERARCHY_KEY`]), which become the
    /// payload's `traceback` and `type_hierarchy`; a malformed one stays in
    /// `values`.
    fn from_guest(error: ActionError) -> Self {
        let mut values = error
            .details
            .as_deref()
            .and_then(|bytes| WorkflowDictArgument::decode(bytes).ok());
        let mut traceback = String::new();
        let mut type_hierarchy = vec![error.type_name.clone()];
        if let Some(dict) = values.as_mut() {
            dict.entries.retain(|entry| {
                // A value of the wrong shape stays in `values`, as the
                // guest sent it.
                let Some(value) = entry.value.as_ref() else {
                    return true;
                };
                match entry.key.as_str() {
                    cairn_contract::ERROR_TRACEBACK_KEY => match from_value::<String>(value) {
                        Ok(text) => {
                            traceback = text;
                            false
                        }
                        Err(_) => true,
                    },
                    cairn_contract::ERROR_TYPE_HIERARCHY_KEY => {
                        match from_value::<Vec<String>>(value) {
                            Ok(names) if !names.is_empty() => {
                                type_hierarchy = names;
                                false
                            }
                            _ => true,
                        }
                    }
                    _ => true,
                }
            });
            if dict.entries.is_empty() {
                values = None;
            }
        }
        Failure {
            kind: FailureKind::Action,
            error: WorkflowErrorValue {
                r#type: error.type_name,
                module: error.module,
                message: error.message,
                traceback,
                values,
                type_hierarchy,
            },
            retryable: error.retryable,
        }
    }

    /// The protobuf error payload (key `error`) to store for this failure.
    pub fn payload(&self) -> Vec<u8> {
        cairn_payload::serialize_error_payload(self.error.clone())
    }
}

impl fmt::Display for Failure {
    /// One line: `TypeName: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.error.message.replace('\n', " ");
        write!(f, "{}: {}", self.error.r#type, message)
    }
}

/// One attempt of one action.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The queue row's id (or a one-off id).
    pub action_id: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// The timeout the row (or the caller) asks for; `None`: the action's
    /// declared one. See [`budget`] for what the attempt actually gets.
    pub timeout: Option<Duration>,
}

/// The time budget of one attempt — the one place it is decided: the row's
/// (or caller's) `requested` timeout, else the action's `declared` one, else
/// the host's `default`; then narrowed, never widened, by the plugin's
/// `cap` (`timeout` in `cairn.toml`).
pub fn budget(
    requested: Option<Duration>,
    declared: Option<Duration>,
    cap: Option<Duration>,
    default: Duration,
) -> Duration {
    let asked = requested.or(declared).unwrap_or(default);
    cap.map_or(asked, |cap| asked.min(cap))
}

/// Run `action` of the plugin behind `pre` with `args` (a protobuf
/// `WorkflowArguments`, passed through unchanged), within the [`budget`]
/// made of `invocation.timeout`, `declared` (the action's own timeout) and
/// the plugin's settings. Returns the guest's result payload bytes
/// unchanged (once checked to be a result payload), or the failure.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn invoke(
    engine: &Engine,
    pre: &PluginWorldPre<HostState>,
    deps: &Arc<PluginDeps>,
    module: &str,
    action: &str,
    declared: Option<Duration>,
    args: Vec<u8>,
    invocation: &Invocation,
) -> Result<Vec<u8>, Failure> {
    let timeout = budget(
        invocation.timeout,
        declared,
        deps.settings.timeout,
        engine.limits().default_timeout,
    );
    let name = action.to_owned();
    let returned = run(
        engine,
        pre,
        deps,
        module,
        action,
        invocation,
        timeout,
        |plugin, store| Box::pin(async move { plugin.call_invoke(store, &name, &args).await }),
    )
    .await?;
    let result = returned.map_err(Failure::from_guest)?;
    if let Err(why) = cairn_payload::check_result_payload(&result) {
        return Err(Failure::host(
            FailureKind::InvalidResult,
            "InvalidResultPayload",
            format!(
                "action `{module}:{action}` returned {} bytes that are not a result payload: {why}",
                result.len()
            ),
            String::new(),
            false,
        ));
    }
    Ok(result)
}

/// Call `describe` in a throwaway instance under the sandbox limits (and
/// the describe timeout), with inert dependencies (no settings, no
/// database).
pub(crate) async fn describe(
    engine: &Engine,
    pre: &PluginWorldPre<HostState>,
    label: &str,
) -> Result<PluginInfo, Failure> {
    let deps = Arc::new(PluginDeps::default());
    let invocation = Invocation {
        action_id: "describe".into(),
        attempt: 1,
        timeout: None,
    };
    let timeout = engine.limits().describe_timeout;
    run(
        engine,
        pre,
        &deps,
        label,
        "describe",
        &invocation,
        timeout,
        |plugin, store| Box::pin(plugin.call_describe(store)),
    )
    .await
}

/// A call of one export of the `plugin` interface, made by [`run`] once the
/// instance exists. Boxed: the future borrows the store for its lifetime.
type ExportCall<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// Instantiate in a fresh store, make the export call `call` within
/// `timeout` and under the memory cap, and classify any trap.
#[allow(clippy::too_many_arguments)]
async fn run<T>(
    engine: &Engine,
    pre: &PluginWorldPre<HostState>,
    deps: &Arc<PluginDeps>,
    module: &str,
    action: &str,
    invocation: &Invocation,
    timeout: Duration,
    call: impl for<'a> FnOnce(&'a Guest, &'a mut Store<HostState>) -> ExportCall<'a, T>,
) -> Result<T, Failure> {
    let limits = engine.limits();
    let budget = limits.max_output_bytes;
    let started = Instant::now();
    let deadline = started + timeout;
    let context = Arc::new(CallContext {
        module: module.to_owned(),
        action: action.to_owned(),
        action_id: invocation.action_id.clone(),
        attempt: invocation.attempt,
        deadline: SystemTime::now() + timeout,
    });
    let stdout = GuestOutput::new(Stream::Stdout, context.clone(), budget);
    let stderr = GuestOutput::new(Stream::Stderr, context.clone(), budget);
    // Deny by default: no preopens, no env, no args, no network (the
    // builder's defaults), stdin closed.
    let wasi = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();

    // The plugin's own `memory_mib` narrows the host-wide cap; it never
    // widens it (settings refuse a value whose bytes overflow).
    let memory_bytes = deps
        .settings
        .memory_mib
        .and_then(crate::limits::mib_to_bytes)
        .map_or(limits.memory_bytes, |bytes| bytes.min(limits.memory_bytes));
    let memory_cap = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
    let mut store = Store::new(
        engine.wasmtime(),
        HostState::new(wasi, context, deps.clone(), memory_cap),
    );
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });

    let outcome = tokio::time::timeout(timeout + HOST_TIMER_GRACE, async {
        let world = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|err| (Stage::Instantiate, err))?;
        call(world.cairn_plugin_plugin(), &mut store)
            .await
            .map_err(|err| (Stage::Call, err))
    })
    .await;

    stdout.finish();
    let panic = stderr.finish();
    let what = format!("action `{module}:{action}`");
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Err(_elapsed) => Err(timeout_failure(&what, timeout)),
        Ok(Err((Stage::Instantiate, err))) => Err(Failure::host(
            FailureKind::Instantiate,
            "InstantiationError",
            format!("{what}: instantiate failed: {}", one_line(&err)),
            String::new(),
            true,
        )),
        Ok(Err((Stage::Call, err))) => {
            let traceback = err
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .map(|bt| bt.to_string())
                .unwrap_or_default();
            if err.downcast_ref::<DeadlineExceeded>().is_some() {
                Err(timeout_failure(&what, timeout))
            } else if store.data().limiter.exceeded {
                Err(Failure::host(
                    FailureKind::OutOfMemory,
                    "MemoryError",
                    format!(
                        "{what} exceeded the memory limit of {} MiB",
                        memory_bytes >> 20
                    ),
                    traceback,
                    true,
                ))
            } else if let Some(report) = panic {
                Err(Failure::host(
                    FailureKind::Panic,
                    "Panic",
                    format!("{what} panicked: {report}"),
                    traceback,
                    false,
                ))
            } else {
                Err(Failure::host(
                    FailureKind::Trap,
                    "Trap",
                    format!("{what} trapped: {}", trap_message(&err)),
                    traceback,
                    true,
                ))
            }
        }
    }
}

/// Where a call failed: creating the instance, or in the export itself.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Instantiate,
    Call,
}

/// An error payload for a failure the host itself reports (lease expired,
/// unknown action, ...), with module `cairn`.
pub fn host_error_payload(type_name: &str, message: &str) -> Vec<u8> {
    Failure::host(
        FailureKind::Trap,
        type_name,
        message.to_owned(),
        String::new(),
        false,
    )
    .payload()
}

fn timeout_failure(what: &str, timeout: Duration) -> Failure {
    Failure::host(
        FailureKind::Timeout,
        "TimeoutError",
        format!(
            "{what} exceeded its timeout of {}",
            format_duration(timeout)
        ),
        String::new(),
        true,
    )
}

/// A trap's reason in one line (the wasm backtrace goes to `traceback`).
fn trap_message(err: &wasmtime::Error) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    one_line(&err.root_cause().to_string())
}

#[cfg(test)]
mod tests {
    use super::{budget, ActionError, Failure};
    use cairn_payload::messages::{WorkflowArgument, WorkflowArgumentValue, WorkflowDictArgument};
    use prost::Message;
    use std::time::Duration;

    fn text(s: &str) -> WorkflowArgumentValue {
        WorkflowArgumentValue::string(s)
    }

    fn entry(key: &str, value: WorkflowArgumentValue) -> WorkflowArgument {
        WorkflowArgument {
            key: key.to_owned(),
            value: Some(value),
        }
    }

    fn guest_error(entries: Vec<WorkflowArgument>) -> ActionError {
        ActionError {
            type_name: "ZeroDivisionError".into(),
            module: "builtins".into(),
            message: "division by zero".into(),
            retryable: false,
            details: Some(WorkflowDictArgument { entries }.encode_to_vec()),
        }
    }

    #[test]
    fn a_guests_traceback_and_type_hierarchy_leave_values_for_their_own_fields() {
        let hierarchy =
            WorkflowArgumentValue::list([text("ZeroDivisionError"), text("ArithmeticError")]);
        let failure = Failure::from_guest(guest_error(vec![
            entry(
                cairn_contract::ERROR_TRACEBACK_KEY,
                text("File \"app.py\", line 3"),
            ),
            entry(cairn_contract::ERROR_TYPE_HIERARCHY_KEY, hierarchy),
            entry("divisor", text("0")),
        ]));
        assert_eq!(failure.error.traceback, "File \"app.py\", line 3");
        assert_eq!(
            failure.error.type_hierarchy,
            ["ZeroDivisionError", "ArithmeticError"]
        );
        let values = failure.error.values.expect("the guest's own entry stays");
        assert_eq!(values.entries.len(), 1);
        assert_eq!(values.entries[0].key, "divisor");
    }

    #[test]
    fn a_malformed_traceback_entry_stays_in_values() {
        let not_text = WorkflowArgumentValue::int(3);
        let failure = Failure::from_guest(guest_error(vec![entry(
            cairn_contract::ERROR_TRACEBACK_KEY,
            not_text,
        )]));
        assert_eq!(failure.error.traceback, "");
        assert_eq!(failure.error.type_hierarchy, ["ZeroDivisionError"]);
        assert_eq!(failure.error.values.map(|v| v.entries.len()), Some(1));
    }

    #[test]
    fn the_row_beats_the_action_which_beats_the_default_and_the_cap_only_narrows() {
        let s = Duration::from_secs;
        assert_eq!(budget(Some(s(5)), Some(s(9)), None, s(30)), s(5));
        assert_eq!(budget(None, Some(s(9)), None, s(30)), s(9));
        assert_eq!(budget(None, None, None, s(30)), s(30));
        assert_eq!(budget(Some(s(5)), None, Some(s(2)), s(30)), s(2));
        assert_eq!(budget(Some(s(5)), None, Some(s(60)), s(30)), s(5));
        assert_eq!(budget(None, None, Some(s(60)), s(30)), s(30));
    }
}
