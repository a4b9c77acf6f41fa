#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
pub mod context;
mod deps;
pub mod enqueue;
mod error;
pub mod http;
pub mod kv;
pub mod log;
pub mod panic;
mod runtime;
pub mod testing;

pub use config::Config;
pub use context::Context;
pub use deps::{Dep, Dependency, DependencyError, Inject, Resolver};
pub use enqueue::Enqueue;
pub use error::{ActionFailure, Error};
pub use http::Http;
pub use kv::Kv;
pub use log::Log;

// The dependency guide's examples are doctests too, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../docs/dependencies.md")]
mod dependencies_guide {}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Turn a plain function into a cairn action.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
///
/// /// Multiply both coordinates by `factor`.
/// #[cairn_sdk::action(timeout = "5s", retries = 3, backoff = "500ms")]
/// fn scale(point: Point, factor: f64) -> Point {
///     Point { x: point.x * factor, y: point.y * factor }
/// }
///
/// // Still a plain Rust function:
/// let p = scale(Point { x: 1.0, y: 2.0 }, 2.0);
/// assert_eq!((p.x, p.y), (2.0, 4.0));
/// ```
///
/// # Parameters
///
/// Each parameter is one keyword argument, matched by the parameter's name
/// (`r#type` is the argument `type`) and deserialized with serde from the
/// payload value. A missing argument is deserialized from `null`, so
/// `Option<T>` parameters are optional and all others required. An argument
/// the function has no parameter for is an error, as in a Python call.
/// Parameters must be plain identifiers with owned types (`String`, not
/// `&str`).
///
/// A parameter whose type is spelled `Dep<T>` (the last path segment is
/// `Dep`, so `cairn_sdk::Dep<T>` counts; a type alias does not) is a
/// dependency instead: not a keyword argument, not decoded, but resolved for
/// the invocation by a [`Resolver`] (see [`Dep`], [`Dependency`] and
/// [`dependency`]). Keyword arguments are bound before any dependency is
/// built; a dependency that fails to resolve fails the invocation with a
/// `DependencyError`, without calling the function.
///
/// # Calling an action directly
///
/// The function is unchanged, so tests can call it with dependencies built
/// by hand ([`Dep::new`]). The macro also defines, next to it, a type of the
/// same name (types and functions live in different namespaces) with one
/// associated function:
///
/// ```text
/// <action>::call(resolver: &Resolver, <keyword arguments in order>) -> Result<T, cairn_sdk::Error>
/// ```
///
/// which runs the action as one invocation: a fresh [`Resolver::scope`] of
/// `resolver` builds its dependencies (typically from test doubles, see
/// [`testing`]), and any failure comes back as the host would see it
/// (`DependencyError` for a dependency, the action's own error described as
/// an [`Error`]). `T` is the action's return type, or its `Ok` type. `call`
/// has the function's visibility, and is `async` if the function is.
///
/// That type takes the function's name in its module, so a type or module
/// of the same name there (say `use cairn_sdk::log;` next to `fn log`)
/// collides with it: rename the function and keep the action's name with
/// `#[action(name = "log")]`.
///
/// ```
/// use cairn_sdk::testing::FixedConfig;
/// use cairn_sdk::{Config, Dep, Resolver};
///
/// #[cairn_sdk::action]
/// fn greet(name: String, config: Dep<Config>) -> String {
///     let greeting = config.get("greeting").unwrap_or_else(|| "Hello".into());
///     format!("{greeting}, {name}!")
/// }
///
/// let resolver = Resolver::new().config(FixedConfig::new([("greeting", "Hi")]));
/// assert_eq!(greet::call(&resolver, "Ada".into()).unwrap(), "Hi, Ada!");
/// ```
///
/// # Return value
///
/// Any `T: Serialize` becomes the result payload (`()` is `null`). A
/// `Result<T, E>` (any type whose last path segment is `Result`, so
/// `anyhow::Result<T>` and [`cairn_sdk::Result<T>`](Result) count) fails the
/// action with its `Err`: see [`Error`] for how `E` is described to the host.
///
/// # `async`
///
/// An `async fn` is polled to completion on the spot. There is no reactor in
/// a plugin, so it may await other futures that complete by being polled
/// (including ones that wake themselves), but one that waits for an external
/// wake-up fails with `StalledFuture` instead of hanging until the timeout.
///
/// # Attributes
///
/// | key | value | meaning |
/// | --- | --- | --- |
/// | `name` | `"other_name"` | the action's name; default: the fn's name |
/// | `timeout` | `"30s"` | default budget per attempt (`ms`, `s`, `m`, `h`) |
/// | `retries` | `3` | default total attempts, including the first |
/// | `backoff` | `"500ms"` | delay before the 2nd attempt (default `1s`; needs `retries`) |
/// | `max_backoff` | `"60s"` | cap on any delay (default `60s`; needs `retries`) |
///
/// Without `timeout` or `retries` the host's defaults apply. The description
/// the host shows is the fn's doc comment.
pub use cairn_sdk_macros::action;

/// Turn a function into a dependency: `#[dependency]` on
/// `fn name(deps...) -> T` (or `-> Result<T, E>`) implements [`Dependency`]
/// for `T`, so any `#[action]` or other dependency can take a `Dep<T>`.
///
/// ```
/// use cairn_sdk::http::Request;
/// use cairn_sdk::{dependency, Config, Dep, Error, Http};
///
/// /// The weather API, configured from the plugin's config.
/// pub struct ApiClient {
///     base_url: String,
///     api_key: String,
///     http: Dep<Http>,
/// }
///
/// #[dependency]
/// fn api_client(config: Dep<Config>, http: Dep<Http>) -> Result<ApiClient, Error> {
///     Ok(ApiClient {
///         base_url: config.require("api_url")?,
///         api_key: config.require("api_key")?,
///         http,
///     })
/// }
///
/// impl ApiClient {
///     fn get(&self, path: &str) -> Result<Vec<u8>, Error> {
///         let request = Request::get(format!("{}{path}", self.base_url))
///             .with_header("authorization", format!("Bearer {}", self.api_key));
///         Ok(self.http.send(&request)?.error_for_status()?.into_body())
///     }
/// }
///
/// #[cairn_sdk::action]
/// fn raw(path: String, api: Dep<ApiClient>) -> Result<Vec<u8>, Error> {
///     api.get(&path)
/// }
/// ```
///
/// # Parameters
///
/// Every parameter must be injectable (`Dep<T>`): dependencies take no
/// keyword arguments. They are resolved from the same [`Resolver`] as the
/// action, so what they share is shared.
///
/// # Return value
///
/// `T`, or a `Result<T, E>` (by the last path segment, as for actions) whose
/// `Err` (any `Display + 'static` type) fails resolution with a
/// `DependencyError` naming this dependency. `T` must be a type of this crate
/// (the orphan rule): wrap a foreign type in a newtype.
///
/// # Attributes
///
/// | key | value | meaning |
/// | --- | --- | --- |
/// | `use_cache` | `true` (default) / `false` | build once per invocation and share, or build afresh for every `Dep<T>` that asks |
///
/// The dependency is named after `T` as written (`ApiClient`) in errors.
pub use cairn_sdk_macros::dependency;

/// The WIT bindings of `plugin-world` (`wit/plugin.wit`), generated by
/// `wit-bindgen`. Used by [`plugin!`]; authors should not need them.
#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        world: "plugin-world",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "cairn_sdk::bindings",
        // So tests (the SDK's and plugin authors') can compare what
        // `describe` and `invoke` return.
        additional_derives: [PartialEq, Eq],
    });
}

/// Support for the macros, and a way for tests to drive a plugin exactly as
/// the host does. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::cairn::plugin::types::{
        ActionError, ActionInfo, PluginInfo, RetryPolicy,
    };
    pub use crate::panic::panic_record;
    pub use crate::runtime::{
        block_on, call_result, dependency_failure, describe, finish_result, finish_value, inject,
        inject_for_call, invoke, invoke_with, ActionEntry, IsResult, Kwargs,
    };
    pub use cairn_payload::WorkflowArguments;
    pub use inventory;
}

/// Declare the crate a cairn plugin: export `describe` and `invoke` for every
/// [`action`] in it.
///
/// Write it once, anywhere in the crate (usually `lib.rs`):
///
/// ```
/// cairn_sdk::plugin!(); // module = the crate's package name
/// ```
///
/// or name the module the actions live in explicitly:
///
/// ```
/// cairn_sdk::plugin!(module = "math");
/// ```
///
/// The host registers each action as `module:name`; two plugins may not
/// provide the same key.
#[macro_export]
macro_rules! plugin {
    () => {
        $crate::plugin!(module = ::core::env!("CARGO_PKG_NAME"));
    };
    (module = $module:expr $(,)?) => {
        const _: () = {
            struct CairnPlugin;

            impl $crate::bindings::exports::cairn::plugin::plugin::Guest for CairnPlugin {
                fn describe() -> $crate::__private::PluginInfo {
                    $crate::__private::describe($module)
                }

                fn invoke(
                    name: ::std::string::String,
                    args: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::__private::ActionError>
                {
                    $crate::__private::invoke($module, &name, &args)
                }
            }

            // Only components export: natively the symbol names (which
            // contain `:` and `/`) would break a cdylib's linker script, and
            // native builds exist for unit tests, which call actions directly.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::export!(CairnPlugin with_types_in $crate::bindings);
        };
    };
}
