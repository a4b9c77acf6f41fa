//! The one wasmtime [`Engine`] a host runs every plugin on.
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
//! ticker stops when the [`Runtime`] is dropped.

use crate::limits::Limits;
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The engine plus the limits it was built with. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    limits: Limits,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine and start its epoch ticker.
    ///
    /// # Errors
    /// When wasmtime rejects the configuration (for example, the pooling
    /// allocator cannot reserve its address space).
    pub fn new(limits: Limits) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(limits.pool_instances)
            .total_core_instances(limits.pool_instances * 8)
            .total_memories(limits.pool_instances * 2)
            .total_tables(limits.pool_instances * 4)
            .total_stacks(limits.pool_instances)
            .max_memory_size(usize::try_from(limits.memory_bytes).context("memory cap too large")?);

        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(limits.max_wasm_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&config).map_err(|e| anyhow!("creating the wasmtime engine: {e}"))?;

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
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                limits,
                stop_ticker,
            }),
        })
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}
