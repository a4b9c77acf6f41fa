//! Retention: deleting finished rows, one small batch per statement.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sqlx::PgExecutor;

use super::{millis, ActionStatus};

/// Rows one [`prune`] statement deletes at most: small enough that a
/// statement holds its row locks for milliseconds and writes a few hundred
/// kilobytes of WAL, large enough that the per-statement overhead (one
/// commit) is amortised.
pub const PRUNE_BATCH: u32 = 1_000;

/// The statuses a row can be pruned in: finished for good.
pub const FINISHED: [ActionStatus; 3] = [
    ActionStatus::Succeeded,
    ActionStatus::Failed,
    ActionStatus::Cancelled,
];

/// Deletes up to `limit` rows in one of `statuses` (finished ones only)
/// whose `finished_at` is more than `older_than` ago by the database's
/// clock, in one statement, and returns how many it deleted. Fewer than
/// `limit` means there were no more (or the rest are locked by another
/// pruner, which will delete them).
///
/// Never touches a queued or running row, whatever its age: only rows whose
/// status is finished *and* listed are candidates, and a finished row never
/// changes again. Candidates are locked `FOR UPDATE SKIP LOCKED`, so hosts
/// pruning at once take disjoint batches and never wait on each other, and
/// found through `actions_finished_idx (status, finished_at)` (migration
/// 0007), so a batch costs the same whether the table holds a thousand or
/// ten million finished rows.
///
/// # Errors
///
/// A status in `statuses` that is not finished (a bug in the caller), or
/// the statement fails (`queue prune failed: ...`).
pub async fn prune<'c>(
    db: impl PgExecutor<'c>,
    older_than: Duration,
    statuses: &[ActionStatus],
    limit: u32,
) -> Result<u64> {
    ensure!(
        statuses.iter().all(|s| s.is_terminal()),
        "queue prune: only finished rows can be pruned, not {statuses:?}"
    );
    if statuses.is_empty() || limit == 0 {
        return Ok(0);
    }
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    // The literal IN list is the index's predicate, so the planner may use
    // the partial index even for a generic plan (where `= ANY($1)` alone
    // proves nothing). The rows are then deleted by tuple id: no second
    // index lookup, and nothing can have changed them since they were
    // locked.
    let deleted = sqlx::query(
        r#"
        DELETE FROM cairn.actions
        WHERE ctid = ANY (ARRAY (
            SELECT ctid FROM cairn.actions
            WHERE status IN ('succeeded', 'failed', 'cancelled')
              AND status = ANY ($1)
              AND finished_at < now() - $2 * interval '1 millisecond'
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        ))
        "#,
    )
    .bind(&statuses)
    .bind(millis(older_than))
    .bind(i64::from(limit))
    .execute(db)
    .await
    .context("queue prune failed")?
    .rows_affected();
    Ok(deleted)
}

/// How many rows [`prune`] would delete now, over all batches: the finished
/// rows in `statuses` that finished more than `older_than` ago. One count
/// over the same partial index, for a progress bar's length.
///
/// # Errors
///
/// The statement fails (`queue prune failed: ...`).
pub async fn prunable<'c>(
    db: impl PgExecutor<'c>,
    older_than: Duration,
    statuses: &[ActionStatus],
) -> Result<u64> {
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let count: i64 = sqlx::query_scalar(
        r#"
        SELECT count(*) FROM cairn.actions
        WHERE status IN ('succeeded', 'failed', 'cancelled')
          AND status = ANY ($1)
          AND finished_at < now() - $2 * interval '1 millisecond'
        "#,
    )
    .bind(&statuses)
    .bind(millis(older_than))
    .fetch_one(db)
    .await
    .context("queue prune failed")?;
    Ok(u64::try_from(count).unwrap_or(0))
}
