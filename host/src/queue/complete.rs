//! Writing outcomes, many rows per statement.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgExecutor;

use super::millis;

/// What became of one attempt of a row the caller owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The action returned; `result` (a result payload) is stored unchanged.
    Succeeded {
        /// Protobuf result payload (key `result`).
        result: Vec<u8>,
    },
    /// The action failed for good (non-retryable, or the last attempt).
    Failed {
        /// Protobuf error payload (key `error`).
        error: Vec<u8>,
    },
    /// The attempt failed and another is allowed: the row goes back to
    /// `queued` with `run_at = now() + backoff` (database clock, so hosts'
    /// clock skew does not matter), lease cleared, `error` kept as the last
    /// error.
    Retry {
        /// Protobuf error payload of this attempt.
        error: Vec<u8>,
        /// Delay before the row is claimable again (see
        /// [`backoff`](super::backoff)).
        backoff: Duration,
    },
    /// The host is shutting down and did not finish the attempt: the row goes
    /// back to `queued` at its old place in line, and the attempt is **not
    /// counted** (`attempts` is decremented), since the action did not fail.
    Requeue,
}

impl AttemptOutcome {
    /// Whether the row is finished for good (succeeded or failed), rather
    /// than queued again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::Succeeded { .. } | AttemptOutcome::Failed { .. }
        )
    }
}

/// One row's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The row's id.
    pub id: i64,
    /// What happened.
    pub outcome: AttemptOutcome,
}

impl Completion {
    /// The row succeeded with `result`.
    pub fn succeeded(id: i64, result: Vec<u8>) -> Self {
        Completion {
            id,
            outcome: AttemptOutcome::Succeeded { result },
        }
    }

    /// The row failed for good with `error`.
    pub fn failed(id: i64, error: Vec<u8>) -> Self {
        Completion {
            id,
            outcome: AttemptOutcome::Failed { error },
        }
    }

    /// The attempt failed with `error`; retry after `backoff`.
    pub fn retry(id: i64, error: Vec<u8>, backoff: Duration) -> Self {
        Completion {
            id,
            outcome: AttemptOutcome::Retry { error, backoff },
        }
    }

    /// Give the row back without counting the attempt (shutdown).
    pub fn requeue(id: i64) -> Self {
        Completion {
            id,
            outcome: AttemptOutcome::Requeue,
        }
    }
}

/// Writes `completions` for rows `owner` holds, in one statement, and returns
/// the ids actually written (ascending).
///
/// A row is written only while it is `running` under `owner`'s lease: a row
/// that was rescued after its lease expired, or cancelled, is left alone, and
/// its id is missing from the result. (A lease that expired but was not yet
/// rescued still counts as held.) If an id appears twice, its first
/// completion is used.
///
/// `db` is a pool or a connection (the worker writes on a connection of its
/// own, see `worker.rs`).
///
/// # Errors
///
/// When the statement fails (`queue complete failed: ...`); then nothing was
/// written.
pub async fn complete<'c, 'a>(
    db: impl PgExecutor<'c>,
    owner: &str,
    completions: impl IntoIterator<Item = &'a Completion>,
) -> Result<Vec<i64>> {
    let mut seen = HashSet::new();
    let mut sorted: Vec<&Completion> = completions.into_iter().collect();
    let n = sorted.len();
    let (mut ids, mut kinds, mut payloads, mut backoffs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    sorted.sort_by_key(|c| c.id); // stable: the first of a duplicated id stays first
    for c in sorted {
        if !seen.insert(c.id) {
            continue;
        }
        let (kind, payload, backoff): (&str, &[u8], i64) = match &c.outcome {
            AttemptOutcome::Succeeded { result } => ("succeeded", result, 0),
            AttemptOutcome::Failed { error } => ("failed", error, 0),
            AttemptOutcome::Retry { error, backoff } => ("retry", error, millis(*backoff)),
            AttemptOutcome::Requeue => ("requeue", &[], 0),
        };
        ids.push(c.id);
        kinds.push(kind);
        payloads.push(payload);
        backoffs.push(backoff);
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One statement: `cairn.complete` (migrations/0005), PL/pgSQL so its
    // plan is prepared once per connection. Its plan does not depend on
    // statistics, which lag far behind a busy queue: each id is looked up by
    // primary key (locks in id order: no deadlocks), and the lease is
    // checked as `lease_owner = $1` alone — which implies `running` by the
    // table's CHECK.
    let mut written: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM cairn.complete($1, $2::bigint[], $3::text[], $4::bytea[], $5::bigint[]) AS c(id)",
    )
    .bind(owner)
    .bind(&ids)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&backoffs)
    .fetch_all(db)
    .await
    .context("queue complete failed")?;
    written.sort_unstable();
    Ok(written)
}
