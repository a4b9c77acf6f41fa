//! Host-side bindings for the `cairn:plugin@0.1.0` WIT package (`wit/`).
//!
//! Exports are async so a long-running guest yields to the executor at every
//! epoch tick; the dependency imports are plain sync functions (they never
//! block).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin-world",
    exports: { default: async },
});

pub use self::cairn::plugin::types::{ActionError, ActionInfo, PluginInfo, RetryPolicy};
