//! cairn: runs durable *actions* as sandboxed WebAssembly components.
//!
//! An action is a function that a workflow calls and some worker, somewhere,
//! runs. Authors write actions in Rust with the guest SDK (`cairn-sdk`) and
//! build a WebAssembly component; operators drop the `.wasm` into a plugin
//! directory; the host validates it, registers each action under
//! `module:name`, and runs every call in a fresh, sandboxed instance.
//!
//! The data path, top to bottom:
//!
//! * [`runtime`] — one wasmtime [`Engine`](wasmtime::Engine) with the pooling
//!   allocator, epoch interruption and the sandbox [`limits`].
//! * [`plugin`] — load a file: validate, compile once, link only what the
//!   plugin imports, keep an `InstancePre`, ask it to `describe` itself.
//! * [`registry`] — `module:name` → the plugin that serves it, with conflict
//!   rules.
//! * [`reload`] — hangs off the registry: watches the plugin directory and
//!   swaps plugins in and out while the host serves, with a compiled-artifact
//!   cache.
//! * [`sandbox`] — run one action call in a fresh `Store` and instance under
//!   the memory cap and CPU deadline, and turn every failure (error, trap,
//!   timeout, memory exhaustion, panic) into an error payload.
//! * [`deps`] — the host-provided dependencies a plugin may import, one file
//!   per WIT interface.
//!
//! Payloads are opaque protobuf bytes (see `cairn-payload`) on the hot path:
//! the host never transcodes a successful call's arguments or result.

pub mod bench;
pub mod bindings;
pub mod cli;
pub mod config;
pub mod db;
pub mod deps;
pub mod limits;
pub mod plugin;
pub mod queue;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod sandbox;
mod stdio;
pub mod worker;
