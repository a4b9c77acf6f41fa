//! Host-side bindings for the `cairn:plugin@0.1.0` WIT package (`wit/`).
//!
//! Exports are async so a long-running guest yields to the executor at every
//! epoch tick. Dependency imports are plain sync functions, except those that
//! talk to PostgreSQL (`kv`, `enqueue`), which are async so a database round
//! trip never blocks an executor thread.

// The items are generated from `wit/plugin.wit`, where every one is
// documented; bindgen does not carry those docs over to all of them.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin-world",
    exports: { default: async },
    imports: {
        "cairn:plugin/kv.get": async,
        "cairn:plugin/kv.set": async,
        "cairn:plugin/kv.delete": async,
        "cairn:plugin/kv.increment": async,
        "cairn:plugin/kv.compare-and-swap": async,
        "cairn:plugin/enqueue.enqueue": async,
    },
});

pub use self::cairn::plugin::types::{ActionError, ActionInfo, PluginInfo, RetryPolicy};
