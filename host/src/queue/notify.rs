//! The queue's two notification channels, and the one way the host sends on
//! them.
//!
//! PostgreSQL `NOTIFY` is how the queue wakes its users without polling hard:
//!
//! * [`ACTIONS_CHANNEL`] (`cairn_actions`): rows became claimable. The
//!   triggers in `migrations/` send it when rows are inserted, requeued or
//!   rescued; a host sends it itself ([`actions_available`]) when it starts
//!   serving new actions, so rows that waited for them are claimed at once.
//!   Payload: the `module:name` keys concerned, comma-separated, or `''` when
//!   they would not fit a notification. Listeners treat any notification as
//!   "look again": the payload is for people reading `pg_stat_activity`.
//! * [`RESULTS_CHANNEL`] (`cairn_results`): rows finished; payload: the ids
//!   of the rows one statement finished, ascending and comma-separated (one
//!   id when it finished one row; at most 350 per notification, a larger
//!   batch sends several). [`Client::wait`](super::Client::wait) listens
//!   here.
//!
//! Failure modes: a notification is best effort — sent on commit, lost if a
//! listener's connection drops. Every listener therefore also polls (the
//! worker every [`POLL_INTERVAL`](super::defaults::POLL_INTERVAL), `wait`
//! every second), and a failed [`actions_available`] only delays claims
//! until then.

use anyhow::{Context, Result};
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// Rows became claimable (see the module docs).
pub const ACTIONS_CHANNEL: &str = "cairn_actions";

/// Rows finished (see the module docs).
pub const RESULTS_CHANNEL: &str = "cairn_results";

/// The row ids a [`RESULTS_CHANNEL`] notification's payload carries (see
/// the module docs); anything that is not an id is skipped.
pub fn finished_ids(payload: &str) -> impl Iterator<Item = i64> + '_ {
    payload.split(',').filter_map(|id| id.trim().parse().ok())
}

/// Longest payload sent: PostgreSQL refuses 8000 bytes or more, and the
/// triggers use the same limit.
const MAX_PAYLOAD: usize = 7000;

/// Tell every host that rows of `keys` (`module:name`) may be claimable now.
///
/// # Errors
///
/// When the statement fails (`queue notify failed: ...`).
pub async fn actions_available(pool: &PgPool, keys: &[String]) -> Result<()> {
    let mut payload = keys.join(",");
    if payload.len() >= MAX_PAYLOAD {
        payload.clear();
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ACTIONS_CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .context("queue notify failed")?;
    Ok(())
}

/// A connection of its own, listening on `channel`. Listen before doing
/// what should be notified: a notification sent before this returns is
/// not received.
///
/// # Errors
///
/// When the connection or the `LISTEN` fails.
pub async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}
