//! Leases: renewing ours, rescuing a dead host's.

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{PgPool, Row};

use super::{count_column, millis, ActionStatus};

/// Extends the leases of `ids` that `owner` still holds (to `now() +
/// lease`), in one statement, and returns those ids (ascending). An id
/// missing from the result is no longer ours — rescued by another host after
/// its lease expired, or cancelled — and the worker should stop running it:
/// its completion would not be written anyway.
///
/// # Errors
///
/// When the statement fails (`queue renew failed: ...`).
pub async fn renew(pool: &PgPool, owner: &str, ids: &[i64], lease: Duration) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut owned: Vec<i64> = sqlx::query_scalar(
        r#"
        WITH locked AS (
            -- `lease_owner = $1` implies running (the table's CHECK); not
            -- saying `status = 'running'` keeps the planner on the primary
            -- key (see complete.rs).
            SELECT id FROM cairn.actions
            WHERE id = ANY($2) AND lease_owner = $1
            ORDER BY id
            FOR UPDATE
        )
        UPDATE cairn.actions a
        SET lease_expires_at = now() + $3 * interval '1 millisecond'
        FROM locked l
        WHERE a.id = l.id
        RETURNING a.id
        "#,
    )
    .bind(owner)
    .bind(ids)
    .bind(millis(lease))
    .fetch_all(pool)
    .await
    .context("queue renew failed")?;
    owned.sort_unstable();
    Ok(owned)
}

/// A row taken back from a host whose lease expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescued {
    /// The row's id.
    pub id: i64,
    /// The host that held the expired lease.
    pub previous_owner: String,
    /// `Queued` (attempts remain) or `Failed` (that was the last one).
    pub status: ActionStatus,
    /// Attempts used so far, the lost one included.
    pub attempts: u32,
}

/// Rescues every running row whose lease expired (its host died or lost the
/// database), in one statement; any host may call this. The lost attempt
/// counts: a row with attempts left goes back to `queued` (due at once, at
/// its old place in line), otherwise it is `failed`. Either way `error` is
/// set to `lease_expired_error`, the error payload to show for the lost
/// attempt.
///
/// Rows another transaction holds locked are skipped and picked up next
/// time.
///
/// # Errors
///
/// When the statement fails (`queue requeue_expired failed: ...`).
pub async fn requeue_expired(pool: &PgPool, lease_expired_error: &[u8]) -> Result<Vec<Rescued>> {
    let rows = sqlx::query(
        r#"
        WITH expired AS (
            SELECT id, lease_owner FROM cairn.actions
            WHERE status = 'running' AND lease_expires_at < now()
            ORDER BY id
            FOR UPDATE SKIP LOCKED
        )
        UPDATE cairn.actions a
        SET status = CASE WHEN a.attempts < coalesce(a.max_attempts, 1) THEN 'queued' ELSE 'failed' END,
            finished_at = CASE WHEN a.attempts < coalesce(a.max_attempts, 1) THEN NULL ELSE now() END,
            error = $1,
            lease_owner = NULL,
            lease_expires_at = NULL
        FROM expired e
        WHERE a.id = e.id
        RETURNING a.id, e.lease_owner AS previous_owner, a.status, a.attempts
        "#,
    )
    .bind(lease_expired_error)
    .fetch_all(pool)
    .await
    .context("queue requeue_expired failed")?;
    let mut rescued = rows
        .into_iter()
        .map(|r| {
            Ok(Rescued {
                id: r.try_get("id")?,
                previous_owner: r.try_get("previous_owner")?,
                status: r.try_get("status")?,
                attempts: count_column(&r, "attempts")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("queue requeue_expired failed: reading a rescued row")?;
    rescued.sort_by_key(|r| r.id);
    Ok(rescued)
}
