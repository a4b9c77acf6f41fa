//! Host-provided dependencies: the `cairn:plugin` interfaces a plugin may
//! import. One file per WIT interface; [`ALL`] is the one place they are
//! registered, so adding a dependency is one file plus one line.
//!
//! Strategy: deny by default. The loader reads a component's imports and
//! links exactly the dependencies it imports *and* the operator granted to
//! it in `cairn.toml` (see [`crate::settings`]; `log` and `context` are
//! granted to all). WASI is always linked, with a context that denies
//! everything. An import this host does not know, or one not granted, is
//! refused at load with an error naming it.
//!
//! Each store carries its plugin's [`PluginDeps`] (defined with the rest of
//! the store's data in [`crate::store`]): that plugin's settings and, when
//! the host has a database, the pool `kv` and `enqueue` use. Each file here
//! implements its interface on [`HostState`]; the store's data knows nothing
//! of them, so the two modules do not depend on each other in a circle.

use crate::store::HostState;
use wasmtime::component::Linker;

pub use crate::store::PluginDeps;

pub mod config;
pub mod context;
pub mod enqueue;
pub mod http;
pub mod kv;
pub mod log;

/// One host-provided interface.
pub struct Dependency {
    /// Short name used in configuration and listings, e.g. `log`.
    pub name: &'static str,
    /// The WIT interfaces it provides, without versions, e.g.
    /// `cairn:plugin/log` (`http` provides two `wasi:http` ones).
    pub interfaces: &'static [&'static str],
    /// Versions of those interfaces this host implements, e.g. `0.1.`:
    /// semver-compatible imports resolve to them.
    pub version_prefix: &'static str,
    /// Adds this interface's functions to a plugin's linker.
    pub add_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
}

/// The [`Dependency`] for a `cairn:plugin/<name>` interface whose bindings
/// `HostState` implements (every one but `http`, which is `wasi:http`'s own
/// linker): `cairn_interface!("kv", kv)` in `deps/kv.rs`.
macro_rules! cairn_interface {
    ($name:literal, $bindings:ident) => {
        pub(crate) const DEPENDENCY: super::Dependency = super::Dependency {
            name: $name,
            interfaces: &[concat!("cairn:plugin/", $name)],
            version_prefix: super::PACKAGE_VERSION_PREFIX,
            add_to_linker: |linker| {
                $bindings::add_to_linker::<
                    crate::store::HostState,
                    wasmtime::component::HasSelf<crate::store::HostState>,
                >(linker, |s| s)
            },
        };
    };
}
pub(crate) use cairn_interface;

/// Every dependency this host provides.
pub const ALL: &[Dependency] = &[
    log::DEPENDENCY,
    context::DEPENDENCY,
    config::DEPENDENCY,
    kv::DEPENDENCY,
    enqueue::DEPENDENCY,
    http::DEPENDENCY,
];

/// The `cairn:plugin` package version this host implements. Imports of any
/// semver-compatible `0.1.x` resolve to it.
pub const PACKAGE_VERSION_PREFIX: &str = "0.1.";

/// Every dependency's short name: what `grants` in `cairn.toml` may list
/// (the settings check them against this, see
/// [`Settings::parse`](crate::settings::Settings::parse)).
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|d| d.name).collect()
}

/// The dependency a component import name refers to, e.g.
/// `cairn:plugin/log@0.1.0` → `log`, `wasi:http/types@0.2.3` → `http`.
pub fn find(import: &str) -> Option<&'static Dependency> {
    let (interface, version) = import.split_once('@')?;
    ALL.iter()
        .find(|d| d.interfaces.contains(&interface) && version.starts_with(d.version_prefix))
}
