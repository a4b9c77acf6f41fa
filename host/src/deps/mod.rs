//! Host-provided dependencies: the `cairn:plugin` interfaces a plugin may
//! import. One file per WIT interface; [`ALL`] is the one place they are
//! registered, so adding a dependency is one file plus one line.
//!
//! Strategy: deny by default. The loader reads a component's imports and
//! links exactly the dependencies it imports (WASI is always linked, with a
//! context that denies everything). An import this host does not know is
//! refused at load with an error naming it.

use crate::sandbox::HostState;
use wasmtime::component::Linker;

pub mod context;
pub mod log;

/// One host-provided interface.
pub struct Dependency {
    /// Short name used in configuration and listings, e.g. `log`.
    pub name: &'static str,
    /// The WIT interface without its version, e.g. `cairn:plugin/log`.
    pub interface: &'static str,
    /// Adds this interface's functions to a plugin's linker.
    pub add_to_linker: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
}

/// Every dependency this host provides.
pub const ALL: &[Dependency] = &[log::DEPENDENCY, context::DEPENDENCY];

/// The `cairn:plugin` package version this host implements. Imports of any
/// semver-compatible `0.1.x` resolve to it.
pub const PACKAGE_VERSION_PREFIX: &str = "0.1.";

/// The dependency a component import name refers to, e.g.
/// `cairn:plugin/log@0.1.0` → `log`.
pub fn find(import: &str) -> Option<&'static Dependency> {
    let (interface, version) = import.split_once('@')?;
    if !version.starts_with(PACKAGE_VERSION_PREFIX) {
        return None;
    }
    ALL.iter().find(|d| d.interface == interface)
}
