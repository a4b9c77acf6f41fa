//! cairn: runs durable *actions* as sandboxed WebAssembly components.
//!
//! An action is a function that a workflow calls and some worker, somewhere,
//! runs. Authors write actions with a guest SDK (`cairn-sdk`) and build a
//! WebAssembly component; operators drop the `.wasm` into a plugin
//! directory; the host validates it, registers each action under
//! `module:name`, and runs every call in a fresh, sandboxed instance.
//!
//! The data path, top to bottom (`docs/architecture.md` has the map):
//!
//! * [`serve`] — where it starts: a [`serve::Host`] builds everything below
//!   and runs the worker until shutdown.
//! * [`engine`] — one wasmtime engine with the pooling allocator, epoch
//!   interruption and the sandbox [`limits`].
//! * [`plugin`] — load a file: validate, compile once (or take the
//!   compiled artifact from its cache), link only what the plugin imports
//!   and the operator granted ([`settings`]), ask it to `describe` itself.
//! * [`registry`] — `module:name` ([`key::ActionKey`]) → the plugin that
//!   serves it, as immutable snapshots, with conflict rules.
//! * [`worker`] — claim rows from the [`queue`], run each, complete them.
//! * [`sandbox`] — run one call in a fresh store ([`store`]) under the
//!   memory cap and CPU deadline, and turn every failure into an error
//!   payload.
//! * [`deps`] — the host-provided dependencies a plugin may import, one file
//!   per WIT interface.
//!
//! Side concerns hang off it: [`reload`] (watch the plugin directory, swap
//! plugins while serving), [`retention`] (prune finished rows), [`metrics`]
//! (what the worker and the reloader count), [`ops`] (`--http`: `/healthz`,
//! `/metrics` and the dashboard), [`logging`] (text or JSON lines with stable
//! field names), [`db`] (which PostgreSQL, the embedded one by default),
//! [`bench`], [`cli`] (including the queue-control commands over
//! [`queue::admin`]). Shared helpers have homes of their own: [`error`]
//! (one-line errors), [`key`] (action keys and digests); the duration
//! grammar, name rule and panic marker that host and guests share live in the
//! `cairn-contract` crate.
//!
//! Payloads are opaque protobuf bytes (see `cairn-payload`) on the hot path:
//! the host never transcodes a successful call's arguments or result.

#![warn(missing_docs)]

pub mod bench;
pub mod bindings;
pub mod cli;
pub mod db;
pub mod deps;
pub mod engine;
pub mod error;
pub mod key;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod plugin;
mod progress;
pub mod queue;
pub mod registry;
pub mod reload;
pub mod retention;
pub mod sandbox;
pub mod serve;
pub mod settings;
mod stdio;
pub mod store;
pub mod worker;
