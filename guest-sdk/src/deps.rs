//! Dependency injection: `Dep<T>` parameters, user-defined dependencies and
//! the per-invocation [`Resolver`], in the model of FastAPI's `Depends`.
//!
//! # Strategy
//!
//! An `#[action]` parameter written `Dep<T>` is not a keyword argument: the
//! action's shim asks the invocation's [`Resolver`] for a `T`. `T` is any
//! type that implements [`Dependency`]: the SDK's built-ins ([`Kv`](crate::Kv),
//! [`Config`](crate::Config), [`Http`](crate::Http),
//! [`Enqueue`](crate::Enqueue), [`Log`](crate::Log),
//! [`Context`](crate::Context)) and the author's own, usually written as a
//! `#[dependency]` fn that may itself take `Dep<..>` parameters.
//!
//! * **One resolver per invocation.** `invoke` makes a fresh [`Resolver`]
//!   scope for every call, so nothing a dependency built survives into the
//!   next invocation (the host runs each in a fresh instance anyway).
//! * **Built once per invocation by default.** A dependency with
//!   [`Dependency::USE_CACHE`] (the default) is built the first time it is
//!   needed and the same value (an `Rc`) is handed to everything else that
//!   needs it in that invocation. `#[dependency(use_cache = false)]` builds a
//!   fresh value for every parameter that asks.
//! * **Backends are swappable.** Each built-in type talks to its WIT import
//!   through a backend trait object. In a component the backend is the host
//!   import; anywhere (natively in tests, or in a component for a fake) a
//!   test double given to [`Resolver::kv`] and friends replaces it.
//! * **Imports stay declarations.** Nothing here calls an import. The host
//!   backend of a built-in type is only named inside that type's
//!   [`Dependency::construct`], so a plugin whose code never asks for
//!   `Dep<Kv>` never links the kv import, and its component does not import
//!   `cairn:plugin/kv`.
//!
//! # Failure modes
//!
//! Resolution never traps and never recurses without bound:
//!
//! * a dependency whose constructor returns `Err` fails resolution with a
//!   [`DependencyError`] naming it and the chain of dependencies that needed
//!   it; the action is not called and the host receives an `action-error` of
//!   type `DependencyError` (retryable if the cause was);
//! * a dependency that (directly or not) needs itself is a
//!   [`DependencyError`] listing the cycle, detected before the second
//!   construction starts;
//! * natively, a built-in whose resolver has no test double (kv, config, http,
//!   enqueue) fails with a message saying which double to give it. `log` and
//!   `context` fall back to [`crate::log`] (stderr) and [`crate::context`]
//!   (the thread's [`NativeContext`](crate::context::NativeContext)).

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use serde::Serialize;

use crate::config::ConfigBackend;
use crate::context::ContextBackend;
use crate::enqueue::EnqueueBackend;
use crate::error::{into_error, ActionFailure, SDK_MODULE};
use crate::http::HttpBackend;
use crate::kv::KvBackend;
use crate::log::LogBackend;
use crate::Error;

/// An injected dependency: a parameter of type `Dep<T>` in an `#[action]` or
/// `#[dependency]` fn is resolved from the invocation instead of being read
/// from the keyword arguments.
///
/// It dereferences to `T`. Values are shared: with `use_cache` (the default)
/// every `Dep<T>` of one invocation points at the same `T`, so a dependency
/// that needs to change state does it through interior mutability (`Cell`,
/// `RefCell`).
///
/// ```
/// use cairn_sdk::{Config, Dep};
/// use cairn_sdk::testing::FixedConfig;
///
/// // Outside resolution (e.g. calling an action by hand in a test):
/// let config = Dep::new(Config::new(FixedConfig::new([("region", "eu")])));
/// assert_eq!(config.get("region").as_deref(), Some("eu"));
/// ```
pub struct Dep<T>(Rc<T>);

impl<T> Dep<T> {
    /// Wrap a value built by hand, e.g. to call an action directly in a test
    /// without a [`Resolver`].
    pub fn new(value: T) -> Self {
        Dep(Rc::new(value))
    }

    /// The shared value, to keep it beyond the `Dep` (e.g. in a struct a
    /// dependency builds).
    pub fn into_rc(self) -> Rc<T> {
        self.0
    }
}

impl<T> Deref for Dep<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AsRef<T> for Dep<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for Dep<T> {
    /// Another handle on the same value (not a copy of it).
    fn clone(&self) -> Self {
        Dep(Rc::clone(&self.0))
    }
}

impl<T> fmt::Debug for Dep<T> {
    /// `Dep<path::to::T>`: the type, not the value, so that every `Dep` (and
    /// every `Result` holding one) can be debug-printed and none leaks a
    /// secret it holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dep<{}>", std::any::type_name::<T>())
    }
}

/// A type a [`Resolver`] can build for a `Dep<Self>` parameter.
///
/// Usually generated: `#[cairn_sdk::dependency]` on a fn returning `T` (or
/// `Result<T, E>`) implements `Dependency` for `T`, resolving the fn's own
/// `Dep<..>` parameters first. Implement it by hand for anything the
/// attribute does not cover:
///
/// ```
/// use cairn_sdk::{Config, Dependency, DependencyError, Resolver};
///
/// struct Region(String);
///
/// impl Dependency for Region {
///     const NAME: &'static str = "Region";
///
///     fn construct(resolver: &Resolver) -> Result<Self, DependencyError> {
///         let config = resolver.resolve::<Config>()?;
///         Ok(Region(config.require("region")?))
///     }
/// }
/// ```
///
/// The orphan rule applies: implement it for your own types (wrap a foreign
/// type in a newtype).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a dependency",
    label = "`Dep<{Self}>` needs `{Self}: cairn_sdk::Dependency`",
    note = "write a `#[cairn_sdk::dependency]` fn that returns `{Self}`, or implement `cairn_sdk::Dependency` for it"
)]
pub trait Dependency: Sized + 'static {
    /// How errors and cycle reports name this dependency (the attribute uses
    /// the type as written, e.g. `ApiClient`).
    const NAME: &'static str;

    /// Whether one value serves the whole invocation (`true`, the default)
    /// or every `Dep<Self>` gets a freshly built one (`false`: for values
    /// that must not be shared, such as a per-use buffer or a builder).
    const USE_CACHE: bool = true;

    /// Build one value, resolving whatever it needs from `resolver`.
    ///
    /// # Errors
    ///
    /// Whatever building failed with. `?` converts a [`crate::Error`] or any
    /// `std::error::Error`; the resolver names this dependency in the
    /// error it reports.
    fn construct(resolver: &Resolver) -> Result<Self, DependencyError>;
}

/// A parameter type a `#[dependency]` fn can take: `Dep<T>` for any
/// [`Dependency`] `T`. (Action parameters are recognised by their spelling,
/// `Dep<..>`; a dependency fn has no keyword arguments, so every one of its
/// parameters must be injectable.)
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected",
    label = "parameters of a `#[dependency]` fn must be `Dep<T>`",
    note = "a dependency takes no keyword arguments: write `Dep<T>` for a `T` that implements `cairn_sdk::Dependency`"
)]
pub trait Inject: Sized {
    /// Get a value for one parameter from `resolver`.
    ///
    /// # Errors
    ///
    /// When the dependency cannot be resolved.
    fn inject(resolver: &Resolver) -> Result<Self, DependencyError>;
}

impl<T: Dependency> Inject for Dep<T> {
    fn inject(resolver: &Resolver) -> Result<Self, DependencyError> {
        resolver.resolve::<T>()
    }
}

/// What a [`Resolver`] builds built-in dependencies from: one optional
/// backend per WIT interface (none: the host import in a component, an error
/// or the stderr/thread-local fallback natively), plus values provided
/// outright. Shared by every scope made from the same resolver.
#[derive(Clone, Default)]
pub(crate) struct Backends {
    pub(crate) kv: Option<Rc<dyn KvBackend>>,
    pub(crate) config: Option<Rc<dyn ConfigBackend>>,
    pub(crate) http: Option<Rc<dyn HttpBackend>>,
    pub(crate) enqueue: Option<Rc<dyn EnqueueBackend>>,
    pub(crate) log: Option<Rc<dyn LogBackend>>,
    pub(crate) context: Option<Rc<dyn ContextBackend>>,
    provided: Vec<(TypeId, Rc<dyn Any>)>,
}

/// The [`Resolver`] builder methods that install a test double: one per
/// [`Backends`] slot, each storing `backend` in the slot of the same name.
macro_rules! backend_setters {
    ($($(#[$doc:meta])* $slot:ident: $backend:ident;)*) => {$(
        $(#[$doc])*
        pub fn $slot(mut self, backend: impl $backend + 'static) -> Self {
            self.backends.$slot = Some(Rc::new(backend));
            self
        }
    )*};
}

/// `impl Dependency` for a built-in dependency `$ty { backend }`: the test
/// double in the [`Backends`] slot `$slot` if the resolver has one, else the
/// fallback.
///
/// With `import`, the fallback is the host import: `host_backend()` in a
/// component; natively, where there is no host, a `MissingBackend` error
/// naming the import and suggesting `double`. Otherwise the fallback is the
/// expression given (the stderr/thread-local backends of `Log` and
/// `Context`).
macro_rules! builtin_dependency {
    ($ty:ident, $slot:ident, import $import:literal, double $double:literal) => {
        $crate::deps::builtin_dependency!($ty, $slot, {
            #[cfg(target_arch = "wasm32")]
            let backend = host_backend();
            #[cfg(not(target_arch = "wasm32"))]
            let backend = Err($crate::deps::DependencyError::no_backend(
                $import,
                stringify!($slot),
                $double,
            ));
            backend?
        });
    };
    ($ty:ident, $slot:ident, $fallback:expr) => {
        impl $crate::deps::Dependency for $ty {
            const NAME: &'static str = stringify!($ty);

            fn construct(
                resolver: &$crate::deps::Resolver,
            ) -> Result<Self, $crate::deps::DependencyError> {
                let backend = match &resolver.backends().$slot {
                    Some(backend) => ::std::rc::Rc::clone(backend),
                    None => $fallback,
                };
                Ok($ty { backend })
            }
        }
    };
}
pub(crate) use builtin_dependency;

/// Resolves `Dep<T>` parameters for one invocation: the backends built-in
/// dependencies use, and the cache of values built so far.
///
/// `invoke` makes one for every call. Tests make their own, with test
/// doubles, to resolve dependencies or call actions directly:
///
/// ```
/// use cairn_sdk::testing::{FixedConfig, MemoryKv};
/// use cairn_sdk::{Config, Kv, Resolver};
///
/// let kv = MemoryKv::new();
/// let resolver = Resolver::new()
///     .kv(kv.clone())
///     .config(FixedConfig::new([("greeting", "hi")]));
///
/// let config = resolver.resolve::<Config>().unwrap();
/// assert_eq!(config.get("greeting").as_deref(), Some("hi"));
/// resolver.resolve::<Kv>().unwrap().set("k", b"v").unwrap();
/// assert_eq!(kv.value("k").as_deref(), Some(&b"v"[..]));
/// ```
///
/// Every `#[action]` also gets `<action>::call(&resolver, kwargs...)`, which
/// runs the action as one invocation: see [`action`](crate::action).
///
/// A resolver is one scope: values it cached stay cached for as long as it
/// lives. [`Resolver::scope`] starts a new one with the same backends, which
/// is what each `call` and `invoke` does.
#[derive(Default)]
pub struct Resolver {
    backends: Backends,
    cache: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
    resolving: RefCell<Vec<(TypeId, &'static str)>>,
}

impl Resolver {
    /// A resolver without test doubles: in a component the built-in
    /// dependencies use the host's imports; natively kv, config, http and
    /// enqueue fail to resolve until given a double.
    pub fn new() -> Self {
        Resolver::default()
    }

    backend_setters! {
        /// Use `backend` for [`Kv`](crate::Kv), e.g.
        /// [`testing::MemoryKv`](crate::testing::MemoryKv).
        kv: KvBackend;
        /// Use `backend` for [`Config`](crate::Config), e.g.
        /// [`testing::FixedConfig`](crate::testing::FixedConfig).
        config: ConfigBackend;
        /// Use `backend` for [`Http`](crate::Http), e.g.
        /// [`testing::ScriptedHttp`](crate::testing::ScriptedHttp).
        http: HttpBackend;
        /// Use `backend` for [`Enqueue`](crate::Enqueue), e.g.
        /// [`testing::RecordingEnqueue`](crate::testing::RecordingEnqueue).
        enqueue: EnqueueBackend;
        /// Use `backend` for [`Log`](crate::Log), e.g.
        /// [`testing::RecordingLog`](crate::testing::RecordingLog).
        log: LogBackend;
        /// Use `backend` for [`Context`](crate::Context), e.g.
        /// [`testing::FixedContext`](crate::testing::FixedContext).
        context: ContextBackend;
    }

    /// Skip building `T` altogether: every `Dep<T>` resolved from this
    /// resolver (and its scopes) gets `value`. FastAPI's
    /// `dependency_overrides`, for replacing a whole user-defined dependency
    /// in a test rather than the backends it is built from.
    pub fn provide<T: Dependency>(mut self, value: T) -> Self {
        let id = TypeId::of::<T>();
        self.backends.provided.retain(|(t, _)| *t != id);
        self.backends.provided.push((id, Rc::new(value)));
        self
    }

    /// A new scope (one invocation): the same backends and provided values,
    /// nothing cached yet.
    pub fn scope(&self) -> Resolver {
        Resolver {
            backends: self.backends.clone(),
            cache: RefCell::default(),
            resolving: RefCell::default(),
        }
    }

    /// Resolve a `T`: the cached value if `T` uses the cache and was built
    /// in this scope already, otherwise a newly built one.
    ///
    /// # Errors
    ///
    /// If `T` or anything it needs fails to build, or needs itself.
    pub fn resolve<T: Dependency>(&self) -> Result<Dep<T>, DependencyError> {
        let id = TypeId::of::<T>();
        if let Some(value) = lookup::<T>(&self.backends.provided) {
            return Ok(value);
        }
        if T::USE_CACHE {
            if let Some(value) = lookup::<T>(&self.cache.borrow()) {
                return Ok(value);
            }
        }
        {
            let mut resolving = self.resolving.borrow_mut();
            if let Some(at) = resolving.iter().position(|(t, _)| *t == id) {
                let mut cycle: Vec<&'static str> =
                    resolving[at..].iter().map(|(_, name)| *name).collect();
                cycle.push(T::NAME);
                let path = resolving.iter().map(|(_, name)| *name).collect();
                return Err(DependencyError {
                    path,
                    kind: Box::new(Kind::Cycle(cycle)),
                });
            }
            resolving.push((id, T::NAME));
        }
        let built = T::construct(self);
        let path: Vec<&'static str> = {
            let mut resolving = self.resolving.borrow_mut();
            let path = match &built {
                Err(err) if err.path.is_empty() => {
                    resolving.iter().map(|(_, name)| *name).collect()
                }
                _ => Vec::new(),
            };
            resolving.pop();
            path
        };
        match built {
            Ok(value) => {
                let value = Rc::new(value);
                if T::USE_CACHE {
                    self.cache
                        .borrow_mut()
                        .push((id, Rc::clone(&value) as Rc<dyn Any>));
                }
                Ok(Dep(value))
            }
            Err(mut err) => {
                // The innermost failure names itself; outer levels pass it on.
                if err.path.is_empty() {
                    err.path = path;
                }
                Err(err)
            }
        }
    }

    /// Resolve one parameter of any injectable type (what generated code
    /// calls).
    ///
    /// # Errors
    ///
    /// As [`Resolver::resolve`].
    pub fn inject<I: Inject>(&self) -> Result<I, DependencyError> {
        I::inject(self)
    }

    pub(crate) fn backends(&self) -> &Backends {
        &self.backends
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.backends;
        f.debug_struct("Resolver")
            .field("kv", &b.kv.is_some())
            .field("config", &b.config.is_some())
            .field("http", &b.http.is_some())
            .field("enqueue", &b.enqueue.is_some())
            .field("log", &b.log.is_some())
            .field("context", &b.context.is_some())
            .field("provided", &b.provided.len())
            .field("cached", &self.cache.borrow().len())
            .finish()
    }
}

fn lookup<T: 'static>(values: &[(TypeId, Rc<dyn Any>)]) -> Option<Dep<T>> {
    let id = TypeId::of::<T>();
    values
        .iter()
        .find(|(t, _)| *t == id)
        .and_then(|(_, value)| Rc::clone(value).downcast::<T>().ok())
        .map(Dep)
}

/// Resolving a dependency failed: its constructor returned an error, it
/// needs itself, or (natively) a built-in has no test double.
///
/// The host sees it as an `action-error` of type `DependencyError` (module
/// `cairn_sdk`) whose message names the dependency and the chain that needed
/// it, retryable if the underlying error was, with details `dependency`,
/// `path`, `cause_type` and `cause_module`.
///
/// Like [`Error`] it is not a `std::error::Error`, so that `?` can convert
/// any `std::error::Error` (and any [`Error`]) into it inside a
/// [`Dependency::construct`]; it converts into an [`Error`] with `?` too.
pub struct DependencyError {
    /// The dependencies being resolved when it failed, outermost first,
    /// ending with the one that failed. Empty until the resolver fills it in.
    path: Vec<&'static str>,
    /// Boxed so that `Result<T, DependencyError>` stays small.
    kind: Box<Kind>,
}

enum Kind {
    Failed(Error),
    Cycle(Vec<&'static str>),
}

impl DependencyError {
    /// The name of the dependency that failed (for a cycle, the one that
    /// was asked for a second time).
    pub fn dependency(&self) -> &str {
        match &*self.kind {
            Kind::Cycle(cycle) => cycle.last().copied().unwrap_or(""),
            Kind::Failed(_) => self.path.last().copied().unwrap_or(""),
        }
    }

    /// The dependencies that were being resolved, outermost first, ending
    /// with the one that failed.
    pub fn path(&self) -> &[&'static str] {
        &self.path
    }

    /// The error the dependency's constructor returned; `None` for a cycle.
    pub fn cause(&self) -> Option<&Error> {
        match &*self.kind {
            Kind::Failed(err) => Some(err),
            Kind::Cycle(_) => None,
        }
    }

    /// Whether this is a dependency cycle.
    pub fn is_cycle(&self) -> bool {
        matches!(*self.kind, Kind::Cycle(_))
    }

    /// Whether running the action again may succeed: a cycle never, a failed
    /// constructor if its error is retryable.
    pub fn is_retryable(&self) -> bool {
        self.cause().is_some_and(Error::is_retryable)
    }

    /// The backend for `import` is missing: natively, where there is no
    /// host. `method` is the [`Resolver`] method that sets one and `double`
    /// an example of what to give it.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn no_backend(import: &str, method: &str, double: &str) -> Self {
        DependencyError::from(
            Error::new(format!(
                "no `{import}` outside a component: give the resolver a test double, \
                 e.g. `Resolver::new().{method}({double})`, or install one for \
                 `cairn_sdk::__private::invoke` with `cairn_sdk::testing::install`"
            ))
            .with_type("MissingBackend")
            .with_module(SDK_MODULE),
        )
    }

    /// A dependency constructor's `Err`, `module` being where the
    /// constructor lives (the default module of a custom error type).
    pub(crate) fn from_failure<E: ActionFailure>(err: E, module: &str) -> Self {
        let mut slot = Some(err);
        if let Some(err) = (&mut slot as &mut dyn Any)
            .downcast_mut::<Option<DependencyError>>()
            .and_then(Option::take)
        {
            return err;
        }
        let Some(err) = slot else {
            unreachable!("the slot is only emptied when `E` is `DependencyError`")
        };
        DependencyError::from(into_error(err).with_default_module(module))
    }
}

impl fmt::Display for DependencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            Kind::Cycle(cycle) => {
                f.write_str("dependency cycle: ")?;
                write_chain(f, cycle)
            }
            Kind::Failed(cause) => {
                write!(f, "dependency `{}` failed", self.dependency())?;
                if self.path.len() > 1 {
                    f.write_str(" (via ")?;
                    write_chain(f, &self.path)?;
                    f.write_str(")")?;
                }
                write!(f, ": {}", cause.message())
            }
        }
    }
}

fn write_chain(f: &mut fmt::Formatter<'_>, names: &[&str]) -> fmt::Result {
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            f.write_str(" -> ")?;
        }
        write!(f, "`{name}`")?;
    }
    Ok(())
}

impl fmt::Debug for DependencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("DependencyError");
        s.field("path", &self.path);
        match &*self.kind {
            Kind::Failed(cause) => s.field("cause", cause),
            Kind::Cycle(cycle) => s.field("cycle", cycle),
        };
        s.finish()
    }
}

impl From<Error> for DependencyError {
    fn from(err: Error) -> Self {
        DependencyError {
            path: Vec::new(),
            kind: Box::new(Kind::Failed(err)),
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for DependencyError {
    /// As `Error::from`: the error's type name, module and message.
    fn from(err: E) -> Self {
        DependencyError::from(Error::from(err))
    }
}

/// The `values` of a `DependencyError` payload.
#[derive(Serialize)]
struct Details<'a> {
    dependency: &'a str,
    path: &'a [&'static str],
    cause_type: &'a str,
    cause_module: &'a str,
}

impl From<DependencyError> for Error {
    /// Type `DependencyError`, module `cairn_sdk`, the message of its
    /// `Display`, retryable if the cause is.
    fn from(err: DependencyError) -> Self {
        let (cause_type, cause_module) = match &*err.kind {
            Kind::Failed(cause) => (cause.type_name(), cause.module_if_set().unwrap_or("")),
            Kind::Cycle(_) => ("DependencyCycle", SDK_MODULE),
        };
        let details = Details {
            dependency: err.dependency(),
            path: &err.path,
            cause_type,
            cause_module,
        };
        Error::new(err.to_string())
            .with_type("DependencyError")
            .with_module(SDK_MODULE)
            .with_retryable(err.is_retryable())
            .with_details(details)
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// The resolver `invoke` uses on this thread (see `testing::install`).
    static INSTALLED: RefCell<Option<Resolver>> = const { RefCell::new(None) };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn install(resolver: Resolver) {
    INSTALLED.with(|installed| *installed.borrow_mut() = Some(resolver));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn uninstall() {
    INSTALLED.with(|installed| *installed.borrow_mut() = None);
}

/// The resolver for one invocation through `invoke`: in a component the
/// host's imports; natively a scope of the thread's installed resolver, or an
/// empty one.
pub(crate) fn for_invocation() -> Resolver {
    #[cfg(not(target_arch = "wasm32"))]
    {
        INSTALLED
            .with(|installed| installed.borrow().as_ref().map(Resolver::scope))
            .unwrap_or_default()
    }
    #[cfg(target_arch = "wasm32")]
    {
        Resolver::new()
    }
}
