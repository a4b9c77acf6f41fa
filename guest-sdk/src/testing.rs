//! Test doubles for the built-in dependencies, so actions and dependencies
//! run in a plain `cargo test` of the plugin crate: no wasm build, no host.
//!
//! Give the doubles to a [`Resolver`], then either resolve dependencies from
//! it or call an action through the `call` function `#[action]` generates
//! (one invocation per call, dependencies built from the doubles):
//!
//! ```
//! use cairn_sdk::http::Response;
//! use cairn_sdk::testing::{FixedConfig, MemoryKv, ScriptedHttp};
//! use cairn_sdk::{Config, Dep, Error, Http, Kv, Resolver};
//!
//! #[cairn_sdk::action]
//! fn fetch(path: String, config: Dep<Config>, http: Dep<Http>, kv: Dep<Kv>) -> Result<String, Error> {
//!     let url = format!("{}/{path}", config.require("base_url")?);
//!     let text = http.get(url)?.error_for_status()?.text()?.to_owned();
//!     kv.set(&path, text.as_bytes())?;
//!     Ok(text)
//! }
//!
//! let kv = MemoryKv::new();
//! let http = ScriptedHttp::new().on("GET", "https://api.test/a", Response::new(200).with_body("hello"));
//! let resolver = Resolver::new()
//!     .kv(kv.clone())
//!     .config(FixedConfig::new([("base_url", "https://api.test")]))
//!     .http(http.clone());
//!
//! assert_eq!(fetch::call(&resolver, "a".into()).unwrap(), "hello");
//! assert_eq!(kv.value("a").as_deref(), Some(&b"hello"[..]));
//! assert_eq!(http.requests()[0].url(), "https://api.test/a");
//! ```
//!
//! Doubles are cheap handles on shared state: keep a clone to inspect what
//! the action did after giving one to the resolver.
//!
//! The host-shaped entry point `cairn_sdk::__private::invoke` (what the
//! component's `invoke` runs) resolves from the resolver [`install`]ed on
//! the calling thread, or from an empty one, where kv, config, http and
//! enqueue fail with a `DependencyError` that says which double is missing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use cairn_payload::{WorkflowArgumentValue, WorkflowArguments};
use serde::de::DeserializeOwned;

use crate::config::ConfigBackend;
use crate::context::ContextBackend;
use crate::enqueue::{EnqueueBackend, EnqueueOptions};
use crate::error::SDK_MODULE;
use crate::http::{HttpBackend, Request, Response};
use crate::kv::{kv_error, KvBackend};
use crate::log::{Level, LogBackend};
use crate::Error;

pub use crate::deps::Resolver;

/// Make `resolver` the one `cairn_sdk::__private::invoke` resolves
/// dependencies from on this thread (each invocation in a fresh
/// [`Resolver::scope`]). Only exists natively; in a component the host's
/// imports are always used.
#[cfg(not(target_arch = "wasm32"))]
pub fn install(resolver: Resolver) {
    crate::deps::install(resolver);
}

/// Undo [`install`]: `invoke` on this thread resolves from an empty
/// resolver again.
#[cfg(not(target_arch = "wasm32"))]
pub fn uninstall() {
    crate::deps::uninstall();
}

/// An in-memory [`Kv`](crate::Kv) backend.
///
/// Counters written by `increment` are stored as ASCII decimal (`b"42"`).
/// [`MemoryKv::set_unavailable`] makes every call fail the way the host
/// fails when its database is away (a retryable `KvError`).
#[derive(Clone, Default)]
pub struct MemoryKv {
    state: Rc<RefCell<KvState>>,
}

#[derive(Default)]
struct KvState {
    values: BTreeMap<String, Vec<u8>>,
    unavailable: bool,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        MemoryKv::default()
    }

    /// A store holding `entries`.
    pub fn with<K, V, I>(entries: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Vec<u8>>,
    {
        let kv = MemoryKv::new();
        kv.state.borrow_mut().values.extend(
            entries
                .into_iter()
                .map(|(key, value)| (key.into(), value.into())),
        );
        kv
    }

    /// The value under `key`, bypassing any simulated outage.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.state.borrow().values.get(key).cloned()
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.state.borrow().values.keys().cloned().collect()
    }

    /// Make every call fail (`true`) or work again (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state.borrow_mut().unavailable = unavailable;
    }

    fn with_state<R>(
        &self,
        operation: &str,
        key: &str,
        f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut state = self.state.borrow_mut();
        if state.unavailable {
            return Err(kv_error(
                operation,
                key,
                "store unavailable (MemoryKv::set_unavailable)",
            ));
        }
        f(&mut state.values)
    }
}

impl fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKv")
            .field("keys", &self.keys())
            .finish()
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with_state("get", key, |values| Ok(values.get(key).cloned()))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.with_state("set", key, |values| {
            values.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    fn delete(&self, key: &str) -> Result<bool, Error> {
        self.with_state("delete", key, |values| Ok(values.remove(key).is_some()))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        self.with_state("increment", key, |values| {
            let current = match values.get(key) {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| {
                        kv_error("increment", key, "the value is not a counter")
                            .with_retryable(false)
                    })?,
            };
            let next = current.checked_add(delta).ok_or_else(|| {
                kv_error("increment", key, "counter overflow").with_retryable(false)
            })?;
            values.insert(key.to_owned(), next.to_string().into_bytes());
            Ok(next)
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        self.with_state("compare-and-swap", key, |values| {
            if values.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            values.insert(key.to_owned(), new.to_vec());
            Ok(true)
        })
    }
}

/// A [`Config`](crate::Config) backend with fixed values (and secrets).
#[derive(Clone, Default)]
pub struct FixedConfig {
    values: Rc<BTreeMap<String, String>>,
}

impl FixedConfig {
    /// Exactly these keys and values:
    /// `FixedConfig::new([("api_url", "https://api.test")])`.
    pub fn new<K, V, I>(values: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        FixedConfig {
            values: Rc::new(
                values
                    .into_iter()
                    .map(|(key, value)| (key.into(), value.into()))
                    .collect(),
            ),
        }
    }

    /// No keys at all.
    pub fn empty() -> Self {
        FixedConfig::default()
    }
}

impl fmt::Debug for FixedConfig {
    /// Keys only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedConfig")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConfigBackend for FixedConfig {
    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }
}

/// An [`Http`](crate::Http) backend that answers from a script, matched by
/// method and exact URL, and records every request it was sent.
///
/// ```
/// use cairn_sdk::http::{Request, Response};
/// use cairn_sdk::testing::ScriptedHttp;
/// use cairn_sdk::{Error, Http};
///
/// let scripted = ScriptedHttp::new()
///     .on("GET", "https://api.test/ok", Response::new(200).with_body("fine"))
///     .on_error("GET", "https://api.test/down", Error::retryable("connection refused"));
/// let http = Http::new(scripted.clone());
///
/// assert_eq!(http.get("https://api.test/ok").unwrap().body(), b"fine");
/// assert!(http.get("https://api.test/down").unwrap_err().is_retryable());
/// assert_eq!(scripted.requests().len(), 2);
/// ```
///
/// A request nothing in the script matches fails with a non-retryable
/// `HttpError` naming it.
#[derive(Clone, Default)]
pub struct ScriptedHttp {
    state: Rc<RefCell<HttpState>>,
}

#[derive(Default)]
struct HttpState {
    script: Vec<(String, String, Result<Response, Error>)>,
    requests: Vec<Request>,
}

impl ScriptedHttp {
    /// An empty script.
    pub fn new() -> Self {
        ScriptedHttp::default()
    }

    /// Answer `method url` with `response` (every time). A later entry for
    /// the same method and URL replaces an earlier one.
    pub fn on(self, method: &str, url: &str, response: Response) -> Self {
        self.script(method, url, Ok(response))
    }

    /// Fail `method url` with `error`, as a transport failure (no response)
    /// would.
    pub fn on_error(self, method: &str, url: &str, error: Error) -> Self {
        self.script(method, url, Err(error))
    }

    fn script(self, method: &str, url: &str, outcome: Result<Response, Error>) -> Self {
        {
            let mut state = self.state.borrow_mut();
            let method = method.to_ascii_uppercase();
            state.script.retain(|(m, u, _)| !(*m == method && u == url));
            state.script.push((method, url.to_owned(), outcome));
        }
        self
    }

    /// Every request sent so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.borrow().requests.clone()
    }
}

impl fmt::Debug for ScriptedHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("ScriptedHttp")
            .field(
                "script",
                &state
                    .script
                    .iter()
                    .map(|(m, u, _)| format!("{m} {u}"))
                    .collect::<Vec<_>>(),
            )
            .field("requests", &state.requests.len())
            .finish()
    }
}

impl HttpBackend for ScriptedHttp {
    fn send(&self, request: &Request) -> Result<Response, Error> {
        let mut state = self.state.borrow_mut();
        state.requests.push(request.clone());
        state
            .script
            .iter()
            .find(|(method, url, _)| method == request.method() && url == request.url())
            .map(|(_, _, outcome)| outcome.clone())
            .unwrap_or_else(|| {
                Err(Error::new(format!(
                    "ScriptedHttp has no answer for {} {}",
                    request.method(),
                    request.url()
                ))
                .with_type("HttpError")
                .with_module(SDK_MODULE))
            })
    }
}

/// One row a [`RecordingEnqueue`] was asked to enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueued {
    /// The id the double returned for it (1, 2, 3...).
    pub id: i64,
    /// The target action's module.
    pub module: String,
    /// The target action's name.
    pub name: String,
    /// The keyword arguments, as the host would store them.
    pub args: WorkflowArguments,
    /// The options it was enqueued with.
    pub options: EnqueueOptions,
}

impl Enqueued {
    /// The keyword arguments read back into `T` (a struct with the
    /// arguments as fields, or a map), as the target action would bind them.
    ///
    /// # Errors
    ///
    /// A `SerializationError` when they do not fit `T`.
    pub fn kwargs<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let dict = WorkflowArgumentValue::dict(
            self.args
                .arguments
                .iter()
                .map(|a| (a.key.clone(), a.value.clone().unwrap_or_default())),
        );
        cairn_payload::from_value(&dict).map_err(|err| {
            Error::new(format!(
                "enqueued arguments of `{}:{}`: {err}",
                self.module, self.name
            ))
            .with_type("SerializationError")
            .with_module(SDK_MODULE)
        })
    }
}

/// An [`Enqueue`](crate::Enqueue) backend that records rows instead of
/// enqueueing them. Honours idempotency keys as the host does: enqueueing
/// again with a recorded key returns the recorded row's id and records
/// nothing new.
#[derive(Clone, Default, Debug)]
pub struct RecordingEnqueue {
    rows: Rc<RefCell<Vec<Enqueued>>>,
}

impl RecordingEnqueue {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        RecordingEnqueue::default()
    }

    /// Every row recorded so far, in order.
    pub fn enqueued(&self) -> Vec<Enqueued> {
        self.rows.borrow().clone()
    }
}

impl EnqueueBackend for RecordingEnqueue {
    fn enqueue(
        &self,
        module: &str,
        name: &str,
        args: &WorkflowArguments,
        options: &EnqueueOptions,
    ) -> Result<i64, Error> {
        let mut rows = self.rows.borrow_mut();
        if let Some(key) = &options.idempotency_key {
            if let Some(row) = rows
                .iter()
                .find(|row| row.options.idempotency_key.as_ref() == Some(key))
            {
                return Ok(row.id);
            }
        }
        let id = i64::try_from(rows.len()).map_or(i64::MAX, |n| n + 1);
        rows.push(Enqueued {
            id,
            module: module.to_owned(),
            name: name.to_owned(),
            args: args.clone(),
            options: options.clone(),
        });
        Ok(id)
    }
}

/// One record a [`RecordingLog`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its severity.
    pub level: Level,
    /// Its message.
    pub message: String,
    /// Its extra fields, in order.
    pub fields: Vec<(String, String)>,
}

/// A [`Log`](crate::Log) backend that keeps every record.
#[derive(Clone, Default, Debug)]
pub struct RecordingLog {
    records: Rc<RefCell<Vec<LogRecord>>>,
}

impl RecordingLog {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        RecordingLog::default()
    }

    /// Every record so far, in order.
    pub fn records(&self) -> Vec<LogRecord> {
        self.records.borrow().clone()
    }
}

impl LogBackend for RecordingLog {
    fn log(&self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.records.borrow_mut().push(LogRecord {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
    }
}

/// A [`Context`](crate::Context) backend with fixed answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedContext {
    /// Returned by `action_id`.
    pub action_id: String,
    /// Returned by `attempt`.
    pub attempt: u32,
    /// Returned by `deadline`.
    pub deadline: SystemTime,
}

impl FixedContext {
    /// Attempt `attempt` of action row `action_id`, with an hour left.
    pub fn new(action_id: impl Into<String>, attempt: u32) -> Self {
        /// Plenty of time: tests of deadline handling set their own.
        const BUDGET: Duration = Duration::from_secs(3600);
        FixedContext {
            action_id: action_id.into(),
            attempt,
            deadline: SystemTime::now() + BUDGET,
        }
    }
}

impl ContextBackend for FixedContext {
    fn action_id(&self) -> String {
        self.action_id.clone()
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn deadline(&self) -> SystemTime {
        self.deadline
    }
}
