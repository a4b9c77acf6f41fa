//! Operating the queue: listing and reading rows, retrying failed ones,
//! cancelling live ones, counting, and the live hosts with what they serve.
//! The CLI (`cairn ls/retry/cancel/stats/plugins`) and the dashboard call
//! these, and only these, so both show and do the same thing.
//!
//! # Strategy
//!
//! Each operation is one statement (two for [`cancel`]) over a batch of ids,
//! like the rest of the queue. Writes lock their rows in id order, as
//! `complete` and `renew` do, so they cannot deadlock with a worker.
//!
//! * **Retry** puts a `failed` row back to `queued`, due now. Its `attempts`
//!   keep counting (the history stays honest) and its `max_attempts` becomes
//!   `attempts + 1`, so the row gets exactly one more attempt whatever its
//!   policy said (a retryable failure of that attempt is then final, as the
//!   policy's last attempt would be). Its last error stays in `error` until
//!   the new attempt writes its outcome. A row that is not `failed` is left
//!   alone and reported; so is a row whose idempotency key a live row holds
//!   now (putting it back would give the key two live rows). The requeue
//!   fires the `cairn_actions` notification (the statement trigger of
//!   migrations/0005), so idle hosts claim it at once. It also gives a row
//!   that finished before 0005 its action kind, which the claim reads by.
//! * **Cancel** calls `cairn.cancel` per id: one implementation of cancelling,
//!   in the database. A running row's host drops it at its next lease renewal.
//! * **Reads** are bounded: [`list`] pages by id (newest first, `before` an id,
//!   so a page does not shift while rows are added) and caps the page size;
//!   [`depth`] counts only live rows (`queued`, `running`), each status through
//!   its partial index; [`stats`] counts the rows finished in the last five
//!   minutes, which is a sequential scan of `cairn.actions` (there is no index
//!   on `finished_at`, on purpose: every completion would pay for one) — fine
//!   for a command or a page view, which is why nothing calls it periodically.
//!
//! # Failure modes
//!
//! Unknown ids are reported, never an error: the caller decides (the CLI turns
//! them into a usage error before changing anything). Errors name the
//! operation (`queue retry failed: ...`).

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::LoadedPlugin;
use super::{action_column, count_column, millis, optional_count_column, ActionStatus};
use crate::key::ActionKey;

/// Largest page [`list`] returns, whatever the caller asks: a page is for a
/// person or a script that pages on, not an export.
pub const MAX_PAGE: u32 = 1000;

/// Rows per page when the caller does not say: `cairn ls`, the dashboard.
pub const DEFAULT_PAGE: u32 = 50;

/// Which rows [`list`] and [`failed_ids`] return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    /// Only rows in this status.
    pub status: Option<ActionStatus>,
    /// Only rows of this action.
    pub action: Option<ActionKey>,
    /// Only rows with activity (enqueued, started or finished) this recently.
    pub since: Option<Duration>,
    /// Only rows with an id below this (the next page after a page whose last
    /// id this was).
    pub before: Option<i64>,
    /// At most this many rows (capped at [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`]).
    pub limit: u32,
}

/// The error type and message of a failed attempt, as shown in listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorSummary {
    /// The error's type name (`ZeroDivisionError`, `TimeoutError`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Its message.
    pub message: String,
}

/// `type: message`, as the dashboard and `cairn ls` show it.
impl std::fmt::Display for ErrorSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

/// `attempts/max` (or `attempts` when the row has no maximum yet), as the
/// dashboard and `cairn ls` show it.
pub fn attempts_text(attempts: u32, max: Option<u32>) -> String {
    match max {
        Some(max) => format!("{attempts}/{max}"),
        None => attempts.to_string(),
    }
}

/// A timestamp as the dashboard and `cairn ls` show it (UTC, to the second).
pub fn time_text(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One row as a listing shows it: everything but the payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowSummary {
    /// The row's id.
    pub id: i64,
    /// The row's action (`module:name` in JSON).
    #[serde(serialize_with = "key_str")]
    pub action: ActionKey,
    /// Where the row is.
    #[serde(serialize_with = "status_str")]
    pub status: ActionStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The effective attempt limit (`None` before the first claim when the
    /// row has no override).
    pub max_attempts: Option<u32>,
    /// Lower runs first.
    pub priority: i32,
    /// When it was enqueued.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it is (or was) due.
    #[serde(serialize_with = "rfc3339")]
    pub run_at: DateTime<Utc>,
    /// When its latest attempt started.
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The host running it now (only while `running`).
    pub lease_owner: Option<String>,
    /// The host that ran (or runs) its latest attempt.
    pub host: Option<String>,
    /// The error of a failed row, or the last failed attempt's of a row
    /// being retried (`None` when there is none or it cannot be read).
    pub error: Option<ErrorSummary>,
}

fn key_str<S: serde::Serializer>(k: &ActionKey, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(k)
}

fn status_str<S: serde::Serializer>(s: &ActionStatus, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// Timestamps as RFC 3339 in UTC with microseconds (what PostgreSQL keeps).
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<DateTime<Utc>>, ser: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, ser),
        None => ser.serialize_none(),
    }
}

/// One row with everything, for a detail view.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RowDetail {
    /// What a listing shows.
    #[sqlx(flatten)]
    pub summary: RowSummary,
    /// Protobuf `WorkflowArguments`, as enqueued.
    pub args: Vec<u8>,
    /// The result payload, once succeeded.
    pub result: Option<Vec<u8>>,
    /// The error payload: the final one once failed, else the last attempt's.
    pub error: Option<Vec<u8>>,
    /// Until when its host's lease runs (only while `running`).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Its idempotency key, if any.
    pub idempotency_key: Option<String>,
}

const SUMMARY_COLUMNS: &str = "id, module, name, status, attempts, max_attempts, priority, \
     created_at, run_at, started_at, finished_at, lease_owner, last_host, error";

/// Decoded from the [`SUMMARY_COLUMNS`] of a row.
impl sqlx::FromRow<'_, PgRow> for RowSummary {
    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        let error: Option<Vec<u8>> = r.try_get("error")?;
        Ok(RowSummary {
            id: r.try_get("id")?,
            action: action_column(r)?,
            status: r.try_get("status")?,
            attempts: count_column(r, "attempts")?,
            max_attempts: optional_count_column(r, "max_attempts")?,
            priority: r.try_get("priority")?,
            created_at: r.try_get("created_at")?,
            run_at: r.try_get("run_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            lease_owner: r.try_get("lease_owner")?,
            host: r.try_get("last_host")?,
            error: error.as_deref().and_then(error_summary),
        })
    }
}

/// The type and message of an error payload (`None` if it is not one).
pub fn error_summary(payload: &[u8]) -> Option<ErrorSummary> {
    let json = cairn_payload::json::payload_to_json(payload).ok()?;
    let error = json.get("error")?;
    Some(ErrorSummary {
        type_name: error.get("type")?.as_str()?.to_owned(),
        message: error
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Rows matching `filter`, newest (highest id) first.
///
/// # Errors
///
/// When the statement fails (`queue list failed: ...`).
pub async fn list(pool: &PgPool, filter: &RowFilter) -> Result<Vec<RowSummary>> {
    let limit = match filter.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let (module, name) = filter
        .action
        .as_ref()
        .map(|k| (Some(k.module.as_str()), Some(k.name.as_str())))
        .unwrap_or((None, None));
    sqlx::query_as(&format!(
        r#"
        SELECT {SUMMARY_COLUMNS} FROM cairn.actions
        WHERE ($1::text IS NULL OR status = $1)
          AND ($2::text IS NULL OR (module = $2 AND name = $3))
          AND ($4::bigint IS NULL
               OR greatest(created_at, started_at, finished_at) >= now() - $4 * interval '1 millisecond')
          AND ($5::bigint IS NULL OR id < $5)
        ORDER BY id DESC
        LIMIT $6
        "#
    ))
    .bind(filter.status.map(ActionStatus::as_str))
    .bind(module)
    .bind(name)
    .bind(filter.since.map(millis))
    .bind(filter.before)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .context("queue list failed")
}

/// Row `id` with its payloads; `None` if there is no such row.
///
/// # Errors
///
/// When the statement fails (`queue get failed: ...`).
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<RowDetail>> {
    sqlx::query_as(&format!(
        "SELECT {SUMMARY_COLUMNS}, args, result, lease_expires_at, idempotency_key \
         FROM cairn.actions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .context("queue get failed")
}

/// Which of the given ids exist.
///
/// # Errors
///
/// When the statement fails (`queue lookup failed: ...`).
pub async fn existing(pool: &PgPool, ids: &[i64]) -> Result<Vec<i64>> {
    let mut found: Vec<i64> = sqlx::query_scalar("SELECT id FROM cairn.actions WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
        .context("queue lookup failed")?;
    found.sort_unstable();
    Ok(found)
}

/// A row an operation left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The row's id.
    pub id: i64,
    /// Its status at the time.
    #[serde(serialize_with = "status_str")]
    pub status: ActionStatus,
    /// Why, in a few words (`succeeded, not failed`).
    pub reason: String,
}

/// What [`retry`] or [`cancel`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The ids it changed, ascending.
    pub done: Vec<i64>,
    /// The rows it left alone, by id.
    pub skipped: Vec<Skipped>,
    /// Ids with no row.
    pub missing: Vec<i64>,
}

impl Report {
    fn missing_from(mut self, ids: &[i64]) -> Self {
        let seen: std::collections::HashSet<i64> = self
            .done
            .iter()
            .copied()
            .chain(self.skipped.iter().map(|s| s.id))
            .collect();
        let mut missing: Vec<i64> = ids.iter().copied().filter(|i| !seen.contains(i)).collect();
        missing.sort_unstable();
        missing.dedup();
        self.missing = missing;
        self.done.sort_unstable();
        self.skipped.sort_by_key(|s| s.id);
        self
    }
}

/// Puts the `failed` rows among `ids` back in the queue for one more attempt
/// (see the module docs); reports the others.
///
/// # Errors
///
/// When the statement fails (`queue retry failed: ...`); then nothing changed.
pub async fn retry(pool: &PgPool, ids: &[i64]) -> Result<Report> {
    if ids.is_empty() {
        return Ok(Report::default());
    }
    // `chosen`: failed rows whose idempotency key (if any) no live row holds,
    // one per key (the newest) in case several failed rows share one.
    let rows = sqlx::query(
        r#"
        WITH wanted AS (
            SELECT id, status, idempotency_key FROM cairn.actions
            WHERE id = ANY($1)
            ORDER BY id
            FOR UPDATE
        ), holders AS (
            SELECT w.id, (SELECT b.id FROM cairn.actions b
                          WHERE b.idempotency_key = w.idempotency_key
                            AND b.status IN ('queued', 'running')
                          LIMIT 1) AS holder
            FROM wanted w
            WHERE w.idempotency_key IS NOT NULL
        ), chosen AS (
            -- A keyless row is a group of its own (by its id; a key is any
            -- string, so the two must not share one column).
            SELECT DISTINCT ON (w.idempotency_key, w.key_group) w.id
            FROM (SELECT *, CASE WHEN idempotency_key IS NULL THEN id END AS key_group
                  FROM wanted) w
            LEFT JOIN holders h ON h.id = w.id
            WHERE w.status = 'failed' AND h.holder IS NULL
            ORDER BY w.idempotency_key, w.key_group, w.id DESC
        ), requeued AS (
            UPDATE cairn.actions a
            SET status = 'queued',
                -- Rows that finished before migration 0005 have no kind,
                -- and the claim reads queued rows by kind.
                kind = coalesce(a.kind, cairn._kind(a.module, a.name)),
                run_at = now(),
                max_attempts = a.attempts + 1,
                finished_at = NULL,
                result = NULL
            FROM chosen c
            WHERE a.id = c.id
            RETURNING a.id
        )
        SELECT w.id, w.status, (r.id IS NOT NULL) AS retried, h.holder
        FROM wanted w
        LEFT JOIN requeued r ON r.id = w.id
        LEFT JOIN holders h ON h.id = w.id
        "#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .context("queue retry failed")?;
    let mut report = Report::default();
    for r in rows {
        let id: i64 = r.try_get("id")?;
        let status: ActionStatus = r.try_get("status")?;
        if r.try_get("retried")? {
            report.done.push(id);
            continue;
        }
        let holder: Option<i64> = r.try_get("holder")?;
        let reason = match (status, holder) {
            (ActionStatus::Failed, Some(h)) => {
                format!("its idempotency key is held by live row {h}")
            }
            (ActionStatus::Failed, None) => {
                "another failed row with its idempotency key was retried".to_owned()
            }
            (status, _) => format!("{status}, not failed"),
        };
        report.skipped.push(Skipped { id, status, reason });
    }
    Ok(report.missing_from(ids))
}

/// Ids of failed rows matching `action` and `since` (activity within), oldest
/// first: what `cairn retry --failed` retries.
///
/// # Errors
///
/// When the statement fails (`queue list failed: ...`).
pub async fn failed_ids(
    pool: &PgPool,
    action: Option<&ActionKey>,
    since: Option<Duration>,
) -> Result<Vec<i64>> {
    let (module, name) = action
        .map(|k| (Some(k.module.as_str()), Some(k.name.as_str())))
        .unwrap_or((None, None));
    sqlx::query_scalar(
        r#"
        SELECT id FROM cairn.actions
        WHERE status = 'failed'
          AND ($1::text IS NULL OR (module = $1 AND name = $2))
          AND ($3::bigint IS NULL
               OR greatest(created_at, started_at, finished_at) >= now() - $3 * interval '1 millisecond')
        ORDER BY id
        "#,
    )
    .bind(module)
    .bind(name)
    .bind(since.map(millis))
    .fetch_all(pool)
    .await
    .context("queue list failed")
}

/// Cancels the queued or running rows among `ids` (`cairn.cancel`); reports
/// the others.
///
/// # Errors
///
/// When a statement fails (`queue cancel failed: ...`).
pub async fn cancel(pool: &PgPool, ids: &[i64]) -> Result<Report> {
    if ids.is_empty() {
        return Ok(Report::default());
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut done: Vec<i64> = sqlx::query_scalar(
        "SELECT i FROM unnest($1::bigint[]) WITH ORDINALITY AS u(i, o) WHERE cairn.cancel(i) ORDER BY o",
    )
    .bind(&sorted)
    .fetch_all(pool)
    .await
    .context("queue cancel failed")?;
    done.sort_unstable();
    let others: Vec<i64> = sorted
        .iter()
        .copied()
        .filter(|i| done.binary_search(i).is_err())
        .collect();
    let rows = sqlx::query("SELECT id, status FROM cairn.actions WHERE id = ANY($1)")
        .bind(&others)
        .fetch_all(pool)
        .await
        .context("queue cancel failed")?;
    let mut report = Report {
        done,
        ..Report::default()
    };
    for r in rows {
        let status: ActionStatus = r.try_get("status")?;
        report.skipped.push(Skipped {
            id: r.try_get("id")?,
            status,
            reason: format!("{status}, not queued or running"),
        });
    }
    Ok(report.missing_from(ids))
}

/// How many live rows one action has in one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// The action (`module:name` in JSON).
    #[serde(serialize_with = "key_str")]
    pub action: ActionKey,
    /// `queued` or `running`.
    #[serde(serialize_with = "status_str")]
    pub status: ActionStatus,
    /// How many rows.
    pub rows: i64,
}

/// Live rows (queued, running) per action and status, sorted by action.
///
/// # Errors
///
/// When the statement fails (`queue depth failed: ...`).
pub async fn depth(pool: &PgPool) -> Result<Vec<Depth>> {
    // One branch per status, each matching one partial index's predicate
    // (`status IN (...)` would match neither).
    let rows = sqlx::query(
        r#"
        SELECT module, name, 'queued' AS status, count(*) AS n
        FROM cairn.actions WHERE status = 'queued' GROUP BY module, name
        UNION ALL
        SELECT module, name, 'running', count(*)
        FROM cairn.actions WHERE status = 'running' GROUP BY module, name
        "#,
    )
    .fetch_all(pool)
    .await
    .context("queue depth failed")?;
    let mut depth = rows
        .iter()
        .map(|r| {
            Ok(Depth {
                action: action_column(r)?,
                status: r.try_get("status")?,
                rows: r.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("queue depth failed: reading a row")?;
    depth.sort_by(|a, b| (&a.action, a.status.as_str()).cmp(&(&b.action, b.status.as_str())));
    Ok(depth)
}

/// Rows that finished in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// The minute's start (database clock).
    #[serde(serialize_with = "rfc3339")]
    pub start: DateTime<Utc>,
    /// Rows that succeeded in it.
    pub succeeded: i64,
    /// Rows that failed for good in it (retried attempts are not counted).
    pub failed: i64,
}

impl Minute {
    /// Failed over finished, 0 when nothing finished.
    pub fn error_rate(&self) -> f64 {
        error_rate(self.succeeded, self.failed)
    }
}

/// `failed` over `succeeded + failed`, 0 when nothing finished.
pub fn error_rate(succeeded: i64, failed: i64) -> f64 {
    let total = succeeded + failed;
    if total == 0 {
        0.0
    } else {
        failed as f64 / total as f64
    }
}

/// What `cairn stats` and the dashboard's overview show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Live rows per action and status.
    pub depth: Vec<Depth>,
    /// The last [`STATS_MINUTES`] minutes, oldest first, the current
    /// (partial) minute last.
    pub minutes: Vec<Minute>,
}

/// How many minutes of completions [`stats`] reports.
pub const STATS_MINUTES: i32 = 5;

/// Depth and the recent per-minute completions (see the module docs for the
/// cost).
///
/// # Errors
///
/// When a statement fails (`queue stats failed: ...`).
pub async fn stats(pool: &PgPool) -> Result<Stats> {
    let depth = depth(pool).await?;
    let rows = sqlx::query(
        r#"
        WITH minutes AS (
            SELECT generate_series(date_trunc('minute', now()) - ($1 - 1) * interval '1 minute',
                                   date_trunc('minute', now()), interval '1 minute') AS start
        ), finished AS (
            SELECT date_trunc('minute', finished_at) AS start,
                   count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM cairn.actions
            WHERE finished_at >= date_trunc('minute', now()) - ($1 - 1) * interval '1 minute'
              AND status IN ('succeeded', 'failed')
            GROUP BY 1
        )
        SELECT m.start, coalesce(f.succeeded, 0) AS succeeded, coalesce(f.failed, 0) AS failed
        FROM minutes m LEFT JOIN finished f ON f.start = m.start
        ORDER BY m.start
        "#,
    )
    .bind(STATS_MINUTES)
    .fetch_all(pool)
    .await
    .context("queue stats failed")?;
    let minutes = rows
        .iter()
        .map(|r| {
            Ok(Minute {
                start: r.try_get("start")?,
                succeeded: r.try_get("succeeded")?,
                failed: r.try_get("failed")?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("queue stats failed: reading a row")?;
    Ok(Stats { depth, minutes })
}

/// A host in `cairn.hosts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostInfo {
    /// Its id (hostname-pid-random); the lease owner of the rows it runs.
    pub host_id: String,
    /// Whether its heartbeat is recent (younger than the `host_ttl` asked for).
    pub live: bool,
    /// When it started.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// Its latest heartbeat.
    #[serde(serialize_with = "rfc3339")]
    pub heartbeat_at: DateTime<Utc>,
    /// Seconds since its latest heartbeat (database clock).
    pub heartbeat_age_seconds: f64,
    /// The `module:name` keys it serves.
    pub actions: Vec<String>,
    /// Its plugin files as it last published them.
    pub plugins: Vec<LoadedPlugin>,
}

/// Every host in `cairn.hosts`, live ones (heartbeat younger than
/// `host_ttl`) first, then by id.
///
/// # Errors
///
/// When the statement fails (`queue hosts failed: ...`).
pub async fn hosts(pool: &PgPool, host_ttl: Duration) -> Result<Vec<HostInfo>> {
    let rows = sqlx::query(
        r#"
        SELECT host_id, actions, started_at, heartbeat_at, plugins,
               heartbeat_at > now() - $1 * interval '1 millisecond' AS live,
               extract(epoch FROM now() - heartbeat_at)::float8 AS age
        FROM cairn.hosts
        ORDER BY live DESC, host_id
        "#,
    )
    .bind(millis(host_ttl))
    .fetch_all(pool)
    .await
    .context("queue hosts failed")?;
    rows.iter()
        .map(|r| {
            let plugins: serde_json::Value = r.try_get("plugins")?;
            Ok(HostInfo {
                host_id: r.try_get("host_id")?,
                live: r.try_get("live")?,
                started_at: r.try_get("started_at")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
                heartbeat_age_seconds: r.try_get::<f64, _>("age")?.max(0.0),
                actions: r.try_get("actions")?,
                // A newer host's richer objects still read; an unreadable
                // list reads as empty rather than hiding the host.
                plugins: serde_json::from_value(plugins).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("queue hosts failed: reading a row")
}
