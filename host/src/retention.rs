//! Retention: how long finished rows are kept, and the pruning that enforces
//! it, from `cairn serve` (in the background) and `cairn prune` (by hand).
//!
//! # Strategy
//!
//! Finished rows (succeeded, failed, cancelled) keep their result or error
//! for readers; after [`Retention`] (default [`DEFAULT_RETENTION`], `0`
//! keeps them forever) they are deleted by [`queue::prune`] in statements of
//! at most [`PRUNE_BATCH`] rows, each its own short transaction:
//!
//! * **Never a long lock.** A statement locks at most a thousand finished
//!   rows, for milliseconds, with `SKIP LOCKED`: nobody waits on a pruner,
//!   and a pruner waits on nobody.
//! * **Never a live row.** Only rows whose status is finished are
//!   candidates; a queued row delayed for a month stays.
//! * **Never in the way of the queue.** The background pruner
//!   ([`spawn_pruner`]) paces itself: after each full batch it pauses
//!   [`PACE_FACTOR`] times as long as the batch took, so it holds one
//!   connection at most a fiftieth of the time, and slows down by itself
//!   when the server is busy (its statements take longer). Its deletes
//!   commit without waiting for the WAL flush (`synchronous_commit = off`):
//!   a delete lost in a crash is simply made again, and the queue's own
//!   commits do not queue behind the pruner's flushes. `cairn prune` runs
//!   unpaced and commits synchronously: the operator asked for it now, and
//!   the count it prints is durable.
//! * **Several hosts at once** take disjoint batches (`SKIP LOCKED`), so
//!   pruning speeds up with the fleet and never conflicts.
//!
//! The cutoff is by the database's clock (`finished_at < now() -
//! retention`), so hosts' clock skew does not matter.
//!
//! # Failure modes
//!
//! A failed batch is logged and the pruner tries again at its next period;
//! nothing is half-deleted (each batch is one statement). A host that stops
//! in the middle of a backlog leaves the rest to the next period or another
//! host.

use crate::error::one_line;
use crate::queue::{self, ActionStatus, PRUNE_BATCH};
use anyhow::Context;
use cairn_contract::{format_duration, parse_duration, DurationError};
use sqlx::PgPool;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Finished rows are kept a week unless configured: long enough to read a
/// result after a long weekend, short enough that a busy queue's table
/// stays a manageable size.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often `cairn serve` looks for rows past the retention: a minute is
/// nothing against days of retention, and a look that finds nothing costs
/// one index probe.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// After a full batch the background pruner pauses this many times as long
/// as the batch took: pruning holds one connection at most a fiftieth of
/// the time. (At a tenth, and at a twentieth with asynchronous commits,
/// pruning a 5-million-row backlog ran at ~10,000 rows/s and cost the
/// saturated queue of a 2-core machine a noisy 10–30% of its throughput;
/// see docs/benchmarks.md, "Retention".)
pub const PACE_FACTOR: u32 = 49;

/// How long finished rows are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Never pruned.
    Forever,
    /// Pruned once finished for longer than this.
    For(Duration),
}

impl Default for Retention {
    fn default() -> Self {
        Retention::For(DEFAULT_RETENTION)
    }
}

impl FromStr for Retention {
    type Err = DurationError;

    /// A duration of the shared grammar (`168h`, `30m`, ...), or `0` (also
    /// `0s`, ...) for forever.
    fn from_str(text: &str) -> Result<Self, DurationError> {
        if text.trim() == "0" {
            return Ok(Retention::Forever);
        }
        Ok(match parse_duration(text)? {
            d if d.is_zero() => Retention::Forever,
            d => Retention::For(d),
        })
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Forever => f.write_str("0 (forever)"),
            Retention::For(d) => f.write_str(&format_duration(*d)),
        }
    }
}

/// The background pruner's settings. [`Default`]: keep
/// [`DEFAULT_RETENTION`], look every [`PRUNE_EVERY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How long finished rows are kept.
    pub keep: Retention,
    /// How often to look for rows past it.
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: Retention::default(),
            every: PRUNE_EVERY,
        }
    }
}

/// Deletes every row in one of `statuses` (finished ones) that finished more
/// than `older_than` ago, batch after batch, and returns how many. With
/// `paced` (the background pruner), pauses [`PACE_FACTOR`] times each
/// batch's duration after it and commits each batch asynchronously (see the
/// module docs). `on_batch` hears how many rows each batch deleted (`cairn
/// prune`'s progress bar).
///
/// # Errors
///
/// The first failed batch (the rows deleted before it stay deleted).
pub async fn prune_all(
    pool: &PgPool,
    older_than: Duration,
    statuses: &[ActionStatus],
    paced: bool,
    mut on_batch: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let started = Instant::now();
        let deleted = if paced {
            let mut tx = pool.begin().await.context("queue prune failed")?;
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .context("queue prune failed")?;
            let deleted = queue::prune(&mut *tx, older_than, statuses, PRUNE_BATCH).await?;
            tx.commit().await.context("queue prune failed")?;
            deleted
        } else {
            queue::prune(pool, older_than, statuses, PRUNE_BATCH).await?
        };
        total += deleted;
        on_batch(deleted);
        if deleted < u64::from(PRUNE_BATCH) {
            return Ok(total);
        }
        if paced {
            tokio::time::sleep(started.elapsed() * PACE_FACTOR).await;
        }
    }
}

/// Spawns the background pruner of `cairn serve` on `pool`: at once and
/// then every [`RetentionConfig::every`], [`prune_all`] (paced) the rows
/// finished longer ago than the retention. Runs until aborted (its host
/// stopping; a batch cut short is simply rolled back). `None` when the
/// retention is forever: nothing to do.
pub fn spawn_pruner(pool: PgPool, config: RetentionConfig) -> Option<tokio::task::JoinHandle<()>> {
    let Retention::For(keep) = config.keep else {
        return None;
    };
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(config.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match prune_all(&pool, keep, &queue::FINISHED, true, |_| {}).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    pruned = n,
                    retention = %format_duration(keep),
                    "pruned finished rows past the retention"
                ),
                Err(err) => tracing::error!("retention: {}", one_line(&err)),
            }
        }
    }))
}
