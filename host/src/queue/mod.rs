//! The queue: action rows in PostgreSQL, and every operation on them.
//!
//! # Strategy
//!
//! One table, `cairn.actions` (schema in `migrations/`, prose in
//! `docs/queue.md`), is the queue. A row's life:
//!
//! ```text
//!   enqueue ──► queued ──claim──► running ──complete──► succeeded | failed
//!                 ▲  ▲               │
//!                 │  └── retry (run_at = now + backoff), requeue (shutdown;
//!                 │      attempt given back), rescue (lease expired)
//!                 └── cancel ──► cancelled (from queued or running)
//! ```
//!
//! Every operation is **one SQL statement over a batch of rows**, because one
//! commit per action caps any PostgreSQL queue at a few thousand actions per
//! second:
//!
//! * [`claim`] takes up to `n` due rows of the actions this host serves,
//!   ordered by `(priority, run_at, id)`, with `FOR UPDATE SKIP LOCKED` so
//!   concurrent claimers never wait on or double-claim a row. It stamps the
//!   lease (owner, expiry), counts the attempt and fixes the row's effective
//!   `max_attempts`.
//! * [`complete`] writes many outcomes at once, **guarded by the lease
//!   owner**: a row rescued from this host (or cancelled) is not written,
//!   and the caller learns which ids were.
//! * [`renew`] extends the leases of rows still running here and reports
//!   which ones are not (rescued, cancelled) so the worker can stop them.
//! * [`requeue_expired`] lets any host rescue the rows of a dead host.
//! * [`prune`] deletes finished rows past their retention, a small batch
//!   per statement (the policy: [`crate::retention`]).
//! * [`heartbeat`], [`remove_host`] and [`fail_unknown`] implement the
//!   unknown-action rule: a row nobody serves stays queued (another host may
//!   serve it) until no live host has served it for a while.
//! * [`admin`] lists, retries, cancels and counts rows for operators (the
//!   CLI and the dashboard), and reads the live hosts with what they loaded.
//! * [`Client`] enqueues and reads results (also available in SQL, see
//!   `docs/queue.md`); [`backoff`] computes retry delays; [`notify`] names
//!   the notification channels and sends on them.
//!
//! # Failure modes
//!
//! * **A host dies** mid-action: its leases expire and any host's
//!   [`requeue_expired`] puts the rows back (or fails them, when that was the
//!   last attempt). The dead host's attempt counts.
//! * **A host is slow, not dead** (a long GC-like pause, a network
//!   partition): its lease may expire and the row run elsewhere; when it
//!   comes back, [`renew`] and [`complete`] no longer list that row, so it
//!   cannot overwrite the other run's outcome. Actions are thus run *at
//!   least once*; make them idempotent.
//! * **Lock contention** between statements that wait for row locks
//!   ([`complete`], [`renew`]) is deadlock-free: both lock in id order. The
//!   statements run by every host in the background ([`claim`],
//!   [`requeue_expired`], [`fail_unknown`], [`prune`]) skip locked rows instead of
//!   waiting, and pick them up on their next run.
//! * **Errors** name the operation (`queue claim failed: ...`).

pub mod admin;
pub mod backoff;
mod claim;
mod client;
mod complete;
mod hosts;
mod lease;
pub mod notify;
mod prune;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::key::ActionKey;

pub use claim::{claim, ClaimedAction, ServedAction};
pub use client::{ActionResult, Client, EnqueueRequest};
pub use complete::{complete, AttemptOutcome, Completion};
pub use hosts::{
    fail_unknown, heartbeat, heartbeat_with_plugins, remove_host, LoadedPlugin, RejectedVersion,
};
pub use lease::{renew, requeue_expired, Rescued};
pub use prune::{prunable, prune, FINISHED, PRUNE_BATCH};

/// The queue's timing defaults, in one place. The worker may override them
/// (e.g. from its own configuration); each carries why it has its value.
pub mod defaults {
    use std::time::Duration;

    /// How long a claimed row stays owned without renewal. Long enough that a
    /// busy host renews comfortably, short enough that a dead host's rows
    /// run again within about half a minute.
    pub const LEASE: Duration = Duration::from_secs(30);
    /// How often a worker renews its leases: a third of [`LEASE`], so two
    /// renewals in a row may fail (a database hiccup) before one expires.
    pub const RENEW_EVERY: Duration = Duration::from_secs(10);
    /// How often a host runs [`requeue_expired`](super::requeue_expired).
    /// Every host runs it, so a dead host's work is picked up about this
    /// long after its lease expires.
    pub const RESCUE_EVERY: Duration = Duration::from_secs(5);
    /// How often a host refreshes its row in `cairn.hosts`.
    pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
    /// A host is live while its heartbeat is younger than this: three
    /// missed heartbeats.
    pub const HOST_TTL: Duration = Duration::from_secs(30);
    /// How long a due row may wait for a host that serves its action before
    /// [`fail_unknown`](super::fail_unknown) fails it. Generous, so that a
    /// rolling deploy (old hosts gone, new ones starting) does not fail rows.
    pub const UNKNOWN_AFTER: Duration = Duration::from_secs(300);
    /// How often an idle worker looks for due rows when no notification
    /// arrives (delayed rows and retries become due silently; a lost
    /// connection drops notifications).
    pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
}

/// Where a row is in its life (the `status` column).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ActionStatus {
    /// Waiting for `run_at` and a host.
    Queued,
    /// Claimed by a host, under lease.
    Running,
    /// Finished; `result` holds the result payload.
    Succeeded,
    /// Finished; `error` holds the error payload.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl ActionStatus {
    /// The value in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Queued => "queued",
            ActionStatus::Running => "running",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the row is done for good (nothing will change it again).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded | ActionStatus::Failed | ActionStatus::Cancelled
        )
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionStatus {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "queued" => ActionStatus::Queued,
            "running" => ActionStatus::Running,
            "succeeded" => ActionStatus::Succeeded,
            "failed" => ActionStatus::Failed,
            "cancelled" => ActionStatus::Cancelled,
            other => anyhow::bail!("unknown action status {other:?}"),
        })
    }
}

/// Read straight from the `status` column (`row.try_get::<ActionStatus, _>`),
/// so every statement that returns it decodes it the same way; a value that
/// is not one of the five is a decode error naming it.
impl sqlx::Type<sqlx::Postgres> for ActionStatus {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for ActionStatus {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
    }
}

/// The row's action, from its `module` and `name` columns.
fn action_column(r: &PgRow) -> Result<ActionKey, sqlx::Error> {
    Ok(ActionKey::new(
        r.try_get::<String, _>("module")?,
        r.try_get::<String, _>("name")?,
    ))
}

/// An attempt count (an `integer` column) as `u32`, clamping nonsense to
/// zero.
fn count_column(r: &PgRow, column: &str) -> Result<u32, sqlx::Error> {
    Ok(u32::try_from(r.try_get::<i32, _>(column)?).unwrap_or(0))
}

/// [`count_column`] for a nullable column (`max_attempts` before a claim
/// fixes it).
fn optional_count_column(r: &PgRow, column: &str) -> Result<Option<u32>, sqlx::Error> {
    Ok(r.try_get::<Option<i32>, _>(column)?
        .map(|n| u32::try_from(n).unwrap_or(0)))
}

/// Milliseconds for SQL (`$n * interval '1 millisecond'`), saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A non-negative column value as `u32`/`u64`, clamping nonsense to zero.
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
