//! Dependency `cairn:plugin/context`: facts about the current invocation.
//!
//! Calling any function here makes the plugin import `cairn:plugin/context`;
//! a plugin that never asks does not import it.
//!
//! ```no_run
//! if cairn_sdk::context::attempt() > 1 {
//!     // a retry: maybe check whether the first attempt got further
//! }
//! ```
//!
//! On native targets (a plugin's unit tests) the values come from a
//! thread-local [`NativeContext`], attempt 1 by default, which a test sets
//! with [`set_native`] to exercise retry paths by calling actions directly.
//!
//! The same dependency can be injected as a value, `Dep<Context>`, which a
//! test can point at a [`testing::FixedContext`](crate::testing::FixedContext)
//! instead of setting the thread's context:
//!
//! ```
//! use cairn_sdk::{Context, Dep};
//!
//! #[cairn_sdk::action]
//! fn which_attempt(context: Dep<Context>) -> u32 {
//!     context.attempt()
//! }
//! ```

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use crate::deps::builtin_dependency;

/// The id of the action row being run (or of the one-off `cairn invoke`).
pub fn action_id() -> String {
    imp::action_id()
}

/// Which attempt this is, starting at 1.
pub fn attempt() -> u32 {
    imp::attempt()
}

/// When this attempt's budget runs out. The host stops the guest at about
/// that time, so long work should check it and stop (with a retryable error)
/// before then.
pub fn deadline() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(imp::deadline_unix_ms())
}

/// The `context` dependency as an injectable value.
#[derive(Clone)]
pub struct Context {
    backend: Rc<dyn ContextBackend>,
}

/// Where a [`Context`] reads from: the host import in a component, the
/// thread's [`NativeContext`] natively (both through this module's
/// functions), or a test double such as
/// [`testing::FixedContext`](crate::testing::FixedContext).
pub trait ContextBackend {
    /// The id of the action row being run.
    fn action_id(&self) -> String;
    /// Which attempt this is, starting at 1.
    fn attempt(&self) -> u32;
    /// When this attempt's budget runs out.
    fn deadline(&self) -> SystemTime;
}

impl Context {
    /// A `Context` over any backend.
    pub fn new(backend: impl ContextBackend + 'static) -> Self {
        Context {
            backend: Rc::new(backend),
        }
    }

    /// The id of the action row being run (or of the one-off `cairn invoke`).
    pub fn action_id(&self) -> String {
        self.backend.action_id()
    }

    /// Which attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.backend.attempt()
    }

    /// When this attempt's budget runs out (see [`deadline`]).
    pub fn deadline(&self) -> SystemTime {
        self.backend.deadline()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Context { .. }")
    }
}

/// This module's functions as a backend.
struct Global;

impl ContextBackend for Global {
    fn action_id(&self) -> String {
        action_id()
    }

    fn attempt(&self) -> u32 {
        attempt()
    }

    fn deadline(&self) -> SystemTime {
        deadline()
    }
}

builtin_dependency!(Context, context, Rc::new(Global));

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::cairn::plugin::context as wit;

    pub(super) fn action_id() -> String {
        wit::action_id()
    }

    pub(super) fn attempt() -> u32 {
        wit::attempt()
    }

    pub(super) fn deadline_unix_ms() -> u64 {
        wit::deadline_unix_ms()
    }
}

/// What [`action_id`], [`attempt`] and [`deadline`] return on native targets.
/// Only exists there.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug)]
pub struct NativeContext {
    /// Returned by [`action_id`].
    pub action_id: String,
    /// Returned by [`attempt`].
    pub attempt: u32,
    /// Returned by [`deadline`].
    pub deadline: SystemTime,
}

#[cfg(not(target_arch = "wasm32"))]
impl Default for NativeContext {
    /// Action id `native`, attempt 1, deadline an hour from now: what a first
    /// attempt with plenty of time looks like.
    fn default() -> Self {
        NativeContext {
            action_id: "native".to_owned(),
            attempt: 1,
            deadline: SystemTime::now() + Duration::from_secs(3600),
        }
    }
}

/// Set the context this thread's actions see when called natively, e.g. a
/// later attempt in a test of retry behaviour. Only exists on native targets.
///
/// ```
/// use cairn_sdk::context::{self, NativeContext};
///
/// context::set_native(NativeContext { attempt: 3, ..NativeContext::default() });
/// assert_eq!(context::attempt(), 3);
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub fn set_native(context: NativeContext) {
    imp::CURRENT.with(|current| *current.borrow_mut() = Some(context));
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;

    use super::NativeContext;

    thread_local! {
        pub(super) static CURRENT: RefCell<Option<NativeContext>> = const { RefCell::new(None) };
    }

    fn with<R>(f: impl FnOnce(&NativeContext) -> R) -> R {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            f(current.get_or_insert_with(NativeContext::default))
        })
    }

    pub(super) fn action_id() -> String {
        with(|c| c.action_id.clone())
    }

    pub(super) fn attempt() -> u32 {
        with(|c| c.attempt)
    }

    pub(super) fn deadline_unix_ms() -> u64 {
        with(|c| {
            c.deadline
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        })
    }
}
