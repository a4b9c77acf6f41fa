//! cairn's one integration-test binary (as wasmtime does it): one compile,
//! shared fixtures (built example plugins, one PostgreSQL server), a module
//! per area.

mod cli;
mod dashboard;
mod deps;
mod embedded;
mod ops;
mod pg;
mod python;
mod queue;
mod registry;
mod reload;
mod restart;
mod retention;
mod sandbox;
mod sql_api;
mod support;
mod worker;
