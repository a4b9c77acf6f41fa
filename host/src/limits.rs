//! Every sandbox limit and tuning knob, with its default and its environment
//! override, in one place.
//!
//! Strategy: [`Limits::from_env`] starts from [`Limits::default`] and applies
//! `CAIRN_*` variables. A variable that is set but does not parse is an error
//! naming the variable and the expected form — never silently ignored, because
//! a typo in a memory cap is a security bug.

use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Sandbox limits shared by every plugin the host runs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear-memory cap per instance. 64 MiB fits every example with room to
    /// spare while keeping a thousand pooled slots affordable.
    pub memory_bytes: u64,
    /// Budget for one attempt of an action that declares no timeout. 30 s is
    /// long enough for real work and short enough that a stuck guest is
    /// noticed within one lease period.
    pub default_timeout: Duration,
    /// Budget for `describe` at load time: it must be pure and fast.
    pub describe_timeout: Duration,
    /// How often the engine's single ticker thread bumps the epoch. Each tick
    /// lets a running guest yield to other tasks and checks its deadline, so
    /// this is the granularity of timeouts; 10 ms costs nothing measurable.
    pub epoch_tick: Duration,
    /// Pooled instance slots: the most instances alive at once, which bounds
    /// concurrency. Each slot reserves address space, not memory.
    pub pool_instances: u32,
    /// Most bytes of one call's stdout/stderr forwarded to the logs; the rest
    /// is counted and dropped so a chatty guest cannot flood the host.
    pub max_output_bytes: usize,
    /// Wasm stack limit per instance.
    pub max_wasm_stack: usize,
    /// Pooling allocator: how much of a linear memory is reset in place
    /// (dirty pages copied back from the image or zeroed) when its instance
    /// is dropped, instead of being given back to the kernel with `madvise`.
    /// A fresh instance per call makes this the hot path: `madvise` costs a
    /// TLB shootdown on every core running the host, and the next instance
    /// in the slot page-faults the memory back in.
    pub memory_keep_resident: usize,
    /// The same for tables.
    pub table_keep_resident: usize,
    /// Pooling allocator: find the dirty pages with Linux's `PAGEMAP_SCAN`
    /// (kernel 6.7+) so only those are reset; without it the first
    /// `memory_keep_resident` bytes are reset whether touched or not.
    /// Falls back by itself where the kernel lacks it.
    pub pagemap_scan: bool,
    /// Pooling allocator: decommits (what is left to `madvise` after the
    /// keep-resident part) gathered into one `process_madvise` call.
    pub decommit_batch_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            default_timeout: Duration::from_secs(30),
            describe_timeout: Duration::from_secs(5),
            epoch_tick: Duration::from_millis(10),
            pool_instances: 256,
            max_output_bytes: 1 << 20,
            max_wasm_stack: 1 << 20,
            // Measured (docs/benchmarks.md, "Per-action budget"): a no-op
            // call went from ~65 to ~16 µs of host CPU with these three.
            // Resident memory is at most this much per pooled slot that
            // was used, and only what a guest dirtied.
            memory_keep_resident: 4 << 20,
            table_keep_resident: 64 << 10,
            pagemap_scan: true,
            // Batching what is left to madvise made no measurable
            // difference once the above keep no-op calls off madvise.
            decommit_batch_size: 1,
        }
    }
}

impl Limits {
    /// Defaults with `CAIRN_MEMORY_MIB`, `CAIRN_TIMEOUT_MS`,
    /// `CAIRN_POOL_INSTANCES`, `CAIRN_MAX_OUTPUT_BYTES` and the pool knobs
    /// `CAIRN_POOL_MEMORY_KEEP_RESIDENT_KIB`, `CAIRN_POOL_TABLE_KEEP_RESIDENT_KIB`,
    /// `CAIRN_POOL_PAGEMAP_SCAN` (0/1) and `CAIRN_POOL_DECOMMIT_BATCH` applied.
    ///
    /// # Errors
    /// A variable that is set but is not a positive integer.
    pub fn from_env() -> Result<Self> {
        let mut limits = Limits::default();
        if let Some(mib) = env_u64("CAIRN_MEMORY_MIB")? {
            limits.memory_bytes = mib_to_bytes(mib)
                .with_context(|| format!("CAIRN_MEMORY_MIB={mib} is too large"))?;
        }
        if let Some(ms) = env_u64("CAIRN_TIMEOUT_MS")? {
            limits.default_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = env_u64("CAIRN_POOL_INSTANCES")? {
            limits.pool_instances =
                u32::try_from(n).context("CAIRN_POOL_INSTANCES is too large")?;
        }
        if let Some(n) = env_u64("CAIRN_MAX_OUTPUT_BYTES")? {
            limits.max_output_bytes =
                usize::try_from(n).context("CAIRN_MAX_OUTPUT_BYTES is too large")?;
        }
        let kib = |name: &str, kib: u64| -> Result<usize> {
            kib.checked_mul(1 << 10)
                .and_then(|bytes| usize::try_from(bytes).ok())
                .with_context(|| format!("{name}={kib} is too large"))
        };
        if let Some(n) = env_u64_or_zero("CAIRN_POOL_MEMORY_KEEP_RESIDENT_KIB")? {
            limits.memory_keep_resident = kib("CAIRN_POOL_MEMORY_KEEP_RESIDENT_KIB", n)?;
        }
        if let Some(n) = env_u64_or_zero("CAIRN_POOL_TABLE_KEEP_RESIDENT_KIB")? {
            limits.table_keep_resident = kib("CAIRN_POOL_TABLE_KEEP_RESIDENT_KIB", n)?;
        }
        if let Some(flag) = env_u64_or_zero("CAIRN_POOL_PAGEMAP_SCAN")? {
            limits.pagemap_scan = match flag {
                0 => false,
                1 => true,
                _ => bail!("CAIRN_POOL_PAGEMAP_SCAN={flag} is not 0 or 1"),
            };
        }
        if let Some(n) = env_u64("CAIRN_POOL_DECOMMIT_BATCH")? {
            limits.decommit_batch_size =
                usize::try_from(n).context("CAIRN_POOL_DECOMMIT_BATCH is too large")?;
        }
        Ok(limits)
    }
}

/// `name` as an integer of at least 1, if set.
fn env_u64(name: &str) -> Result<Option<u64>> {
    env_at_least(name, 1)
}

/// `name` as a non-negative integer, if set (0 turns a pool knob off).
fn env_u64_or_zero(name: &str) -> Result<Option<u64>> {
    env_at_least(name, 0)
}

fn env_at_least(name: &str, min: u64) -> Result<Option<u64>> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n >= min => Ok(Some(n)),
            _ if min == 0 => bail!("{name}={text:?} is not a non-negative integer"),
            _ => bail!("{name}={text:?} is not a positive integer"),
        },
    }
}

/// `mib` MiB in bytes, or `None` if that does not fit a `u64` (a shift would
/// silently drop the high bits: `CAIRN_MEMORY_MIB=17592186044416` would be 0).
pub fn mib_to_bytes(mib: u64) -> Option<u64> {
    mib.checked_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::mib_to_bytes;

    #[test]
    fn mib_that_overflow_bytes_are_refused_not_wrapped() {
        assert_eq!(mib_to_bytes(64), Some(64 << 20));
        assert_eq!(mib_to_bytes(1 << 44), None);
        assert_eq!(mib_to_bytes(u64::MAX), None);
    }
}
