//! The one wasm engine a host runs every plugin on: [`Engine`], a wasmtime
//! [`wasmtime::Engine`] with cairn's configuration and its epoch ticker.
//!
//! Strategy: a single engine configured once — pooling allocator (instances
//! are created per call, so allocation must be cheap), epoch interruption
//! (CPU deadlines without fuel's per-instruction cost), the memory ceiling in
//! the pool — and **one** ticker thread per engine that bumps the epoch every
//! [`Limits::epoch_tick`]. Each call's store turns ticks into "yield to the
//! executor" or, past its deadline, a trap (see [`crate::sandbox`]).
//!
//! Failure modes: creating the engine fails only on an impossible config
//! (e.g. the pool cannot reserve address space), reported as one error. The
//! ticker stops when the [`Engine`] is dropped. Pool sizes are derived from
//! [`Limits::pool_instances`] with checked arithmetic: a value too large for
//! the pool is an error naming `CAIRN_POOL_INSTANCES`, not a wrapped count.

use crate::limits::Limits;
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The wasmtime engine plus the limits it was built with. Cheap to clone
/// (clones share the engine and its ticker).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: wasmtime::Engine,
    limits: Limits,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Engine {
    /// Build the engine and start its epoch ticker.
    ///
    /// # Errors
    /// When the pool sizes derived from the limits overflow, or wasmtime
    /// rejects the configuration (for example, the pooling allocator cannot
    /// reserve its address space).
    pub fn new(limits: Limits) -> Result<Self> {
        let slots = limits.pool_instances;
        // Per component instance: its core instances (a Rust guest has a
        // handful, the WASI adapter among them), memories and tables.
        let times = |n: u32| {
            slots.checked_mul(n).ok_or_else(|| {
                anyhow!("CAIRN_POOL_INSTANCES={slots} is too large for the instance pool")
            })
        };
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(times(8)?)
            .total_memories(times(2)?)
            .total_tables(times(4)?)
            .total_stacks(slots)
            .max_memory_size(usize::try_from(limits.memory_bytes).context("memory cap too large")?)
            .linear_memory_keep_resident(limits.memory_keep_resident)
            .table_keep_resident(limits.table_keep_resident)
            .decommit_batch_size(limits.decommit_batch_size.max(1))
            .pagemap_scan(if limits.pagemap_scan {
                wasmtime::Enabled::Auto
            } else {
                wasmtime::Enabled::No
            });

        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(limits.max_wasm_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| anyhow!("creating the wasmtime engine: {e}"))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            let tick = limits.epoch_tick;
            std::thread::Builder::new()
                .name("cairn-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .context("starting the epoch ticker thread")?;
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                engine,
                limits,
                stop_ticker,
            }),
        })
    }

    /// The wasmtime engine, for compiling and instantiating.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_too_large_to_count_is_an_error_naming_the_variable() {
        let limits = Limits {
            pool_instances: u32::MAX,
            ..Limits::default()
        };
        let err = Engine::new(limits)
            .err()
            .expect("an overflowing pool is refused");
        assert!(
            format!("{err:#}").contains("CAIRN_POOL_INSTANCES"),
            "{err:#}"
        );
    }
}
