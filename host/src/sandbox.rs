//! Run one action call in a fresh, sandboxed instance.
//!
//! Strategy: every call gets a new [`Store`] and a new instance from the
//! plugin's pre-linked `InstancePre` (tens of microseconds with the pooling
//! allocator), so nothing leaks between calls and a trapped instance — which
//! cannot be re-entered — is simply dropped with its store.
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
//!
//! Traps, timeouts and memory exhaustion are retryable because the host
//! cannot tell a deterministic bug from a transient condition; a panic is
//! the guest reporting its own bug, like a non-retryable error.

use crate::bindings::{ActionError, PluginInfo, PluginWorldPre};
use crate::deps::PluginDeps;
use crate::runtime::Runtime;
use crate::stdio::{GuestOutput, Stream};
use cairn_payload::{WorkflowDictArgument, WorkflowErrorValue};
use prost::Message;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Extra wall-clock time the host-side timer allows beyond a call's
/// deadline, so the epoch trap (which reports better) normally wins.
const HOST_TIMER_GRACE: Duration = Duration::from_millis(500);

/// Who is being called, as the dependencies (`context`, `log`) see it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The plugin's module.
    pub module: String,
    /// The action's name (or `describe` at load time).
    pub action: String,
    /// The queue row's id, or a one-off id for `cairn invoke`.
    pub action_id: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// When this attempt's budget runs out.
    pub deadline: SystemTime,
}

/// The data every store carries.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) call: CallContext,
    /// The calling plugin's settings and database, for the dependencies.
    pub(crate) deps: Arc<PluginDeps>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_policy: crate::deps::http::HttpPolicy,
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers that it said no, so the trap that
/// follows (the guest's allocator aborts) is reported as memory exhaustion.
struct MemoryLimiter {
    cap: usize,
    exceeded: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

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

    fn from_guest(error: ActionError) -> Self {
        let values = error
            .details
            .as_deref()
            .and_then(|bytes| WorkflowDictArgument::decode(bytes).ok());
        Failure {
            kind: FailureKind::Action,
            error: WorkflowErrorValue {
                r#type: error.type_name.clone(),
                module: error.module,
                message: error.message,
                traceback: String::new(),
                values,
                type_hierarchy: vec![error.type_name],
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
    /// Budget for this attempt.
    pub timeout: Duration,
}

/// Run `action` of the plugin behind `pre` with `args` (a protobuf
/// `WorkflowArguments`, passed through unchanged). Returns the guest's
/// result payload bytes unchanged, or the failure.
pub(crate) async fn invoke(
    runtime: &Runtime,
    pre: &PluginWorldPre<HostState>,
    deps: &Arc<PluginDeps>,
    module: &str,
    action: &str,
    args: Vec<u8>,
    invocation: &Invocation,
) -> Result<Vec<u8>, Failure> {
    let call = Call::Invoke {
        name: action.to_owned(),
        args,
    };
    match run(runtime, pre, deps, module, action, invocation, call).await? {
        Returned::Invoke(result) => result.map_err(Failure::from_guest),
        Returned::Describe(_) => unreachable!("invoke returns Returned::Invoke"),
    }
}

/// Call `describe` in a throwaway instance under the sandbox limits.
pub(crate) async fn describe(
    runtime: &Runtime,
    pre: &PluginWorldPre<HostState>,
    label: &str,
    invocation: &Invocation,
) -> Result<PluginInfo, Failure> {
    let deps = Arc::new(PluginDeps::default());
    match run(
        runtime,
        pre,
        &deps,
        label,
        "describe",
        invocation,
        Call::Describe,
    )
    .await?
    {
        Returned::Describe(info) => Ok(info),
        Returned::Invoke(_) => unreachable!("describe returns Returned::Describe"),
    }
}

/// Which export to call.
enum Call {
    Describe,
    Invoke { name: String, args: Vec<u8> },
}

/// What the export returned.
enum Returned {
    Describe(PluginInfo),
    Invoke(Result<Vec<u8>, ActionError>),
}

/// Instantiate in a fresh store, make `call` under the deadline and the
/// memory cap, and classify any trap.
async fn run(
    runtime: &Runtime,
    pre: &PluginWorldPre<HostState>,
    deps: &Arc<PluginDeps>,
    module: &str,
    action: &str,
    invocation: &Invocation,
    call: Call,
) -> Result<Returned, Failure> {
    let limits = runtime.limits();
    let budget = limits.max_output_bytes;
    let stdout = GuestOutput::new(Stream::Stdout, module, action, invocation.attempt, budget);
    let stderr = GuestOutput::new(Stream::Stderr, module, action, invocation.attempt, budget);
    // Deny by default: no preopens, no env, no args, no network (the
    // builder's defaults), stdin closed.
    let wasi = WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();

    // The plugin's own `timeout` and `memory_mib` narrow the call's budget
    // and the host-wide memory cap; they never widen them.
    let invocation = &Invocation {
        timeout: deps
            .settings
            .timeout
            .map_or(invocation.timeout, |t| t.min(invocation.timeout)),
        ..invocation.clone()
    };
    let started = Instant::now();
    let deadline = started + invocation.timeout;
    let context = CallContext {
        module: module.to_owned(),
        action: action.to_owned(),
        action_id: invocation.action_id.clone(),
        attempt: invocation.attempt,
        deadline: SystemTime::now() + invocation.timeout,
    };
    let memory_bytes = deps.settings.memory_mib.map_or(limits.memory_bytes, |mib| {
        mib.saturating_mul(1 << 20).min(limits.memory_bytes)
    });
    let memory_cap = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
    let state = HostState {
        wasi,
        table: ResourceTable::new(),
        limiter: MemoryLimiter {
            cap: memory_cap,
            exceeded: false,
        },
        call: context,
        deps: deps.clone(),
        http: wasmtime_wasi_http::WasiHttpCtx::new(),
        http_policy: crate::deps::http::HttpPolicy {
            allowed_hosts: deps.settings.allowed_hosts.clone().into(),
        },
    };
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });

    let outcome = tokio::time::timeout(invocation.timeout + HOST_TIMER_GRACE, async {
        let world = match pre.instantiate_async(&mut store).await {
            Ok(world) => world,
            Err(err) => return Err((true, err)),
        };
        let plugin = world.cairn_plugin_plugin();
        let returned = match call {
            Call::Describe => plugin
                .call_describe(&mut store)
                .await
                .map(Returned::Describe),
            Call::Invoke { name, args } => plugin
                .call_invoke(&mut store, &name, &args)
                .await
                .map(Returned::Invoke),
        };
        returned.map_err(|err| (false, err))
    })
    .await;

    stdout.finish();
    let panic = stderr.finish();
    let what = format!("action `{module}:{action}`");
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Err(_elapsed) => Err(timeout_failure(&what, invocation.timeout)),
        Ok(Err((true, err))) => Err(Failure::host(
            FailureKind::Instantiate,
            "InstantiationError",
            format!("{what}: instantiate failed: {}", one_line(&err)),
            String::new(),
            true,
        )),
        Ok(Err((false, err))) => {
            let traceback = err
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .map(|bt| bt.to_string())
                .unwrap_or_default();
            if err.downcast_ref::<DeadlineExceeded>().is_some() {
                Err(timeout_failure(&what, invocation.timeout))
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
        format!("{what} exceeded its timeout of {}", humanize(timeout)),
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

pub(crate) fn one_line(err: &impl fmt::Display) -> String {
    let text = format!("{err:#}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1.5s`, `250ms`, `30s`.
pub(crate) fn humanize(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
