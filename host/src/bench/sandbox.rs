//! `cairn bench-sandbox`: what one call costs the host on its own — load a
//! plugin, then run `calls` calls of one action, `concurrency` at a time as
//! tokio tasks (what the worker does), with no database and no queue.
//!
//! Reported per call: wall-clock throughput, this process's CPU time
//! (`getrusage`: user + system), minor page faults and context switches.
//! Two rounds run back to back; the second is the steady state (the first
//! also warms the instance pool's slots). It is how the pool's settings
//! (`CAIRN_POOL_*`, [`Limits`]) were measured, and how a guest language's
//! instantiation cost is compared with Rust's.
//!
//! Failure modes: a plugin that does not load is an error; calls that fail
//! are counted and reported, not fatal (a no-op should not fail).

use crate::engine::Engine;
use crate::key::ActionKey;
use crate::limits::Limits;
use crate::plugin::Loader;
use crate::sandbox::Invocation;
use anyhow::{Context, Result};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin file.
    pub plugin: PathBuf,
    /// The action (its module must be the plugin's).
    pub action: ActionKey,
    /// Calls per round.
    pub calls: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// The artifact cache to load the compiled plugin from (and store it
    /// in); `None`: compile.
    pub cache_dir: Option<PathBuf>,
}

/// One round's per-call costs.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Calls that returned a result.
    pub ok: usize,
    /// Calls made.
    pub calls: usize,
    /// Calls per second of wall-clock time.
    pub calls_per_second: f64,
    /// This process's CPU time per call.
    pub cpu_per_call: Duration,
    /// Minor page faults per call.
    pub faults_per_call: f64,
    /// Context switches (voluntary and not) per call.
    pub switches_per_call: f64,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ok, {:.0} calls/s, {:.1} µs CPU/call, {:.1} minor faults/call, {:.2} context switches/call",
            self.ok,
            self.calls,
            self.calls_per_second,
            self.cpu_per_call.as_secs_f64() * 1e6,
            self.faults_per_call,
            self.switches_per_call
        )
    }
}

/// Both rounds.
#[derive(Debug, Clone)]
pub struct Report {
    /// The action measured.
    pub action: ActionKey,
    /// How long loading the plugin took (compiling it, or loading it from
    /// the artifact cache), `describe` included.
    pub load: Duration,
    /// Whether the load was a cache hit.
    pub cache_hit: bool,
    /// Warm-up, then steady state.
    pub rounds: [Round; 2],
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sandbox only (no database), `{}`:", self.action)?;
        writeln!(
            f,
            "  load: {:.1} ms ({})",
            self.load.as_secs_f64() * 1e3,
            if self.cache_hit {
                "artifact cache"
            } else {
                "compiled"
            }
        )?;
        writeln!(f, "  round 1 (warm-up): {}", self.rounds[0])?;
        write!(f, "  round 2:           {}", self.rounds[1])
    }
}

/// This process's resource usage: CPU time, minor faults, context switches.
fn usage() -> (Duration, i64, i64) {
    let u = super::cpu::rusage(libc::RUSAGE_SELF);
    (super::cpu::cpu(&u), u.ru_minflt, u.ru_nvcsw + u.ru_nivcsw)
}

/// Run the benchmark. See the module docs.
///
/// # Errors
/// The plugin does not load, or a task panics.
pub async fn run(options: &Options) -> Result<Report> {
    let concurrency = options.concurrency.max(1);
    let mut limits = Limits::from_env()?;
    limits.pool_instances = limits
        .pool_instances
        .max(u32::try_from(concurrency).unwrap_or(u32::MAX));
    let engine = Engine::new(limits)?;
    let loader = Loader::new(engine.clone()).with_cache_dir(options.cache_dir.as_deref());
    let loading = Instant::now();
    let plugin = Arc::new(
        loader
            .load_file(&options.plugin)
            .await
            .context("bench-sandbox")?,
    );
    let load = loading.elapsed();
    anyhow::ensure!(
        plugin.module == options.action.module,
        "bench-sandbox: `{}` is plugin `{}`, not module `{}`",
        options.plugin.display(),
        plugin.module,
        options.action.module
    );
    let cache_hit = loader.counts().cache_hits > 0;
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut rounds = Vec::with_capacity(2);
    for _ in 0..2 {
        let (t0, (c0, f0, s0)) = (Instant::now(), usage());
        let mut handles = Vec::with_capacity(options.calls);
        for i in 0..options.calls {
            let slot = slots.clone().acquire_owned().await?;
            let (plugin, engine) = (plugin.clone(), engine.clone());
            let name = options.action.name.clone();
            handles.push(tokio::spawn(async move {
                let invocation = Invocation {
                    action_id: i.to_string(),
                    attempt: 1,
                    timeout: None,
                };
                let outcome = plugin.invoke(&engine, &name, Vec::new(), &invocation).await;
                drop(slot);
                outcome.is_ok()
            }));
        }
        let mut ok = 0;
        for handle in handles {
            ok += usize::from(handle.await?);
        }
        let (wall, (c1, f1, s1)) = (t0.elapsed(), usage());
        let n = options.calls.max(1) as f64;
        rounds.push(Round {
            ok,
            calls: options.calls,
            calls_per_second: options.calls as f64 / wall.as_secs_f64().max(1e-9),
            cpu_per_call: (c1.saturating_sub(c0)).div_f64(n),
            faults_per_call: (f1 - f0) as f64 / n,
            switches_per_call: (s1 - s0) as f64 / n,
        });
    }
    Ok(Report {
        action: options.action.clone(),
        load,
        cache_hit,
        rounds: [rounds[0], rounds[1]],
    })
}
