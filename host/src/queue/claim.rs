//! Claiming due rows, in one statement.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};

use super::{action_column, count_column, millis, unsigned};
use crate::key::ActionKey;

/// An action this host serves, as the claim needs it: its key, and the
/// `max_attempts` of its declared (or the host's default) retry policy, which
/// the claim writes into rows that do not override it. From then on the row
/// carries its effective limit, so any host can decide a rescue without
/// knowing the action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServedAction {
    /// The action.
    pub key: ActionKey,
    /// Total attempts allowed when the row does not say (at least 1).
    pub max_attempts: u32,
}

/// A row this host now owns: everything the worker needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedAction {
    /// The row's id.
    pub id: i64,
    /// The row's action.
    pub key: ActionKey,
    /// Protobuf `WorkflowArguments`, exactly as enqueued.
    pub args: Vec<u8>,
    /// This attempt's number, starting at 1.
    pub attempt: u32,
    /// Total attempts allowed (the row's override, else the action's
    /// default as given to [`claim`]).
    pub max_attempts: u32,
    /// The row's priority (lower runs first).
    pub priority: i32,
    /// The row's timeout override; `None`: the action's default.
    pub timeout: Option<Duration>,
    /// The row's initial-backoff override; `None`: the action's default.
    pub initial_backoff: Option<Duration>,
    /// The row's max-backoff override; `None`: the action's default.
    pub max_backoff: Option<Duration>,
    /// When the row became due.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued (for latency measurements).
    pub created_at: DateTime<Utc>,
    /// When the lease runs out unless [`renew`](super::renew)ed (database
    /// clock).
    pub lease_expires_at: DateTime<Utc>,
}

/// Claims up to `limit` due rows of the `served` actions for `owner`, with a
/// lease of `lease`, in one statement. Rows of other actions stay queued for
/// hosts that serve them.
///
/// Returned in claim order: `(priority, run_at, id)`, lower first. Pass the
/// worker's free capacity as `limit`, never more, so that rows are not held
/// by a host that cannot start them.
///
/// `db` is a pool or a connection. The worker claims on a connection of its
/// own with `synchronous_commit = off` (see `worker.rs`): a claim lost in a
/// server crash only puts its rows back in the queue, and the completion
/// that follows it commits synchronously, flushing the claim with it.
///
/// # Errors
///
/// When the statement fails (`queue claim failed: ...`).
pub async fn claim<'c>(
    db: impl PgExecutor<'c>,
    owner: &str,
    limit: u32,
    lease: Duration,
    served: &[ServedAction],
) -> Result<Vec<ClaimedAction>> {
    if limit == 0 || served.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let (mut modules, mut names, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    for s in served {
        if seen.insert(&s.key) {
            modules.push(s.key.module.as_str());
            names.push(s.key.name.as_str());
            maxes.push(i32::try_from(s.max_attempts.max(1)).unwrap_or(i32::MAX));
        }
    }
    // One statement: `cairn.claim` (migrations/0005) is the UPDATE ...
    // FOR UPDATE SKIP LOCKED LIMIT n per served action kind, in PL/pgSQL so
    // that its plan is prepared once per connection and pinned.
    let rows = sqlx::query(
        r#"
        SELECT id, module, name, args, attempts, max_attempts, priority,
               timeout_ms, initial_backoff_ms, max_backoff_ms,
               run_at, created_at, lease_expires_at
        FROM cairn.claim($1, $2, $6, $3, $4, $5)
        "#,
    )
    .bind(owner)
    .bind(i32::try_from(limit).unwrap_or(i32::MAX))
    .bind(&modules)
    .bind(&names)
    .bind(&maxes)
    .bind(millis(lease))
    .fetch_all(db)
    .await
    .context("queue claim failed")?;

    let ms = |v: Option<i64>| v.map(|v| Duration::from_millis(unsigned(v)));
    let mut claimed = rows
        .into_iter()
        .map(|r| {
            Ok(ClaimedAction {
                id: r.try_get("id")?,
                key: action_column(&r)?,
                args: r.try_get("args")?,
                attempt: count_column(&r, "attempts")?,
                max_attempts: count_column(&r, "max_attempts")?,
                priority: r.try_get("priority")?,
                timeout: ms(r.try_get("timeout_ms")?),
                initial_backoff: ms(r.try_get("initial_backoff_ms")?),
                max_backoff: ms(r.try_get("max_backoff_ms")?),
                run_at: r.try_get("run_at")?,
                created_at: r.try_get("created_at")?,
                lease_expires_at: r.try_get("lease_expires_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .context("queue claim failed: reading a claimed row")?;
    // UPDATE ... RETURNING does not keep the picked order.
    claimed.sort_by_key(|c| (c.priority, c.run_at, c.id));
    Ok(claimed)
}
