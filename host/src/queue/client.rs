//! Enqueueing and reading results from Rust.
//!
//! The same operations exist in SQL (`cairn.enqueue`, `cairn.enqueue_many`,
//! `cairn.result`, `cairn.cancel`); the client calls those functions, so
//! there is one implementation of the idempotency rule, in the database.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::time::Instant;

use cairn_payload::WorkflowArguments;

use super::notify::{self, RESULTS_CHANNEL};
use super::{count_column, defaults, millis, optional_count_column, ActionStatus};
use crate::key::ActionKey;

/// One action to enqueue. Start with [`EnqueueRequest::new`] and chain the
/// options; every option left unset takes the action's declared default.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EnqueueRequest {
    /// The plugin's module.
    pub module: String,
    /// The action's name.
    pub name: String,
    /// Protobuf `WorkflowArguments`, stored and handed to the guest
    /// unchanged (empty: no arguments).
    pub args: Vec<u8>,
    /// Not before this time (database clock; default now).
    pub run_at: Option<DateTime<Utc>>,
    /// Not before this long after `run_at` (or now).
    pub delay: Option<Duration>,
    /// Lower runs first (default 0; negative is allowed).
    pub priority: i32,
    /// Total attempts, including the first.
    pub max_attempts: Option<u32>,
    /// At most one live (queued or running) row per key: enqueueing a key
    /// that is live returns that row's id instead of adding one.
    pub idempotency_key: Option<String>,
    /// Wall-clock budget of one attempt.
    pub timeout: Option<Duration>,
    /// Delay before the second attempt.
    pub initial_backoff: Option<Duration>,
    /// Cap on any one retry delay.
    pub max_backoff: Option<Duration>,
}

impl EnqueueRequest {
    /// A request to run `module:name` with no arguments and the defaults.
    pub fn new(module: impl Into<String>, name: impl Into<String>) -> Self {
        EnqueueRequest {
            module: module.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// A request to run the action `key` with no arguments and the
    /// defaults.
    pub fn for_action(key: &ActionKey) -> Self {
        Self::new(key.module.clone(), key.name.clone())
    }

    /// Sets the arguments, encoding them to protobuf.
    pub fn args(mut self, args: &WorkflowArguments) -> Self {
        self.args = cairn_payload::encode_arguments(args);
        self
    }

    /// Sets already-encoded protobuf arguments.
    pub fn args_bytes(mut self, args: Vec<u8>) -> Self {
        self.args = args;
        self
    }

    /// Runs not before `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs not before `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the priority (lower first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Overrides the total attempts.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Overrides the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Overrides the retry backoff.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = Some(initial);
        self.max_backoff = Some(max);
        self
    }
}

/// A row as its enqueuer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionResult {
    /// The row's id.
    pub id: i64,
    /// The plugin's module.
    pub module: String,
    /// The action's name.
    pub name: String,
    /// Where the row is.
    pub status: ActionStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The effective attempt limit (`None` until the first claim when the
    /// row has no override).
    pub max_attempts: Option<u32>,
    /// The result payload (protobuf, key `result`) once succeeded.
    pub result: Option<Vec<u8>>,
    /// The error payload (protobuf, key `error`): the final error once
    /// failed, else the last attempt's error while retrying.
    pub error: Option<Vec<u8>>,
    /// When the row is (or was) due.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

impl ActionResult {
    /// The row's action, `module:name`.
    pub fn key(&self) -> ActionKey {
        ActionKey::new(self.module.clone(), self.name.clone())
    }

    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(ActionResult {
            id: r.try_get("id")?,
            module: r.try_get("module")?,
            name: r.try_get("name")?,
            status: r.try_get("status")?,
            attempts: count_column(r, "attempts")?,
            max_attempts: optional_count_column(r, "max_attempts")?,
            result: r.try_get("result")?,
            error: r.try_get("error")?,
            run_at: r.try_get("run_at")?,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    }
}

/// Enqueues actions and reads their results. Cheap to clone (it holds a
/// pool).
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use std::time::Duration;
/// use cairn::db::{Database, DbConfig};
/// use cairn::queue::{Client, EnqueueRequest};
///
/// let db = Database::connect(DbConfig::from_env()?).await?;
/// let client = Client::new(db.pool().clone());
/// let args = cairn_payload::json::json_to_arguments(&serde_json::json!({"name": "Ada"}))?;
/// let id = client
///     .enqueue(&EnqueueRequest::new("greet", "hello").args(&args).priority(-1))
///     .await?;
/// let row = client.wait(id, Duration::from_secs(30)).await?;
/// if let Some(result) = &row.result {
///     println!("{}", cairn_payload::json::payload_to_json(result)?);
/// }
/// db.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    pool: PgPool,
}

impl Client {
    /// A client on `pool` (e.g. [`Database::pool`](crate::db::Database::pool)).
    pub fn new(pool: PgPool) -> Self {
        Client { pool }
    }

    /// Enqueues one action and returns its id (or, with an idempotency key
    /// that is live, the id of that row).
    ///
    /// # Errors
    ///
    /// Invalid request (empty module or name, `max_attempts` 0) or a failed
    /// statement (`enqueue failed: ...`).
    pub async fn enqueue(&self, request: &EnqueueRequest) -> Result<i64> {
        check(request)?;
        sqlx::query_scalar(
            "SELECT cairn.enqueue($1, $2, $3::bytea, $4, $5 * interval '1 millisecond', $6, $7, $8, $9, $10, $11)",
        )
        .bind(&request.module)
        .bind(&request.name)
        .bind(&request.args)
        .bind(request.run_at)
        .bind(request.delay.map(millis))
        .bind(request.priority)
        .bind(request.max_attempts.map(to_i32))
        .bind(&request.idempotency_key)
        .bind(request.timeout.map(millis))
        .bind(request.initial_backoff.map(millis))
        .bind(request.max_backoff.map(millis))
        .fetch_one(&self.pool)
        .await
        .context("enqueue failed")
    }

    /// Enqueues many actions in one statement (one transaction) and returns
    /// their ids in order. All or nothing.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue), for any request.
    pub async fn enqueue_many(&self, requests: &[EnqueueRequest]) -> Result<Vec<i64>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        for r in requests {
            check(r)?;
        }
        let col = |f: &dyn Fn(&EnqueueRequest) -> Option<i64>| -> Vec<Option<i64>> {
            requests.iter().map(f).collect()
        };
        let ids: Vec<Option<i64>> = sqlx::query_scalar(
            r#"
            SELECT cairn.enqueue_many(
                $1::text[], $2::text[], $3::bytea[], $4::timestamptz[],
                (SELECT array_agg(d * interval '1 millisecond' ORDER BY o)
                 FROM unnest($5::bigint[]) WITH ORDINALITY AS u(d, o)),
                $6::integer[], $7::integer[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[])
            "#,
        )
        .bind(requests.iter().map(|r| r.module.as_str()).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| r.args.as_slice()).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| r.run_at).collect::<Vec<_>>())
        .bind(col(&|r| r.delay.map(millis)))
        .bind(requests.iter().map(|r| r.priority).collect::<Vec<_>>())
        .bind(
            requests
                .iter()
                .map(|r| r.max_attempts.map(to_i32))
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| r.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(col(&|r| r.timeout.map(millis)))
        .bind(col(&|r| r.initial_backoff.map(millis)))
        .bind(col(&|r| r.max_backoff.map(millis)))
        .fetch_one(&self.pool)
        .await
        .context("enqueue failed")?;
        ids.into_iter()
            .map(|id| id.ok_or_else(|| anyhow!("enqueue failed: the database returned no id")))
            .collect()
    }

    /// The row `id` as it is now; `None` if there is no such row.
    ///
    /// # Errors
    ///
    /// When the statement fails (`result failed: ...`).
    pub async fn result(&self, id: i64) -> Result<Option<ActionResult>> {
        Ok(self.results(&[id]).await?.pop())
    }

    /// Waits until row `id` is finished (succeeded, failed or cancelled), or
    /// `timeout` passes, and returns the row as it is then: check
    /// [`ActionStatus::is_terminal`] to tell which.
    ///
    /// Listens on `cairn_results` (one pooled connection for the duration)
    /// and re-reads the row on its notification, or every
    /// [`defaults::POLL_INTERVAL`] in case notifications are lost (a dropped
    /// connection, or a pooler that does not pass them on). Never busy-loops.
    ///
    /// # Errors
    ///
    /// No such row, or a failed statement (`wait failed: ...`).
    pub async fn wait(&self, id: i64, timeout: Duration) -> Result<ActionResult> {
        let mut rows = self.wait_many(&[id], timeout).await?;
        rows.pop()
            .ok_or_else(|| anyhow!("wait failed: no row for id {id}"))
    }

    /// [`wait`](Self::wait) for many rows at once, on one listening
    /// connection: returns when every row is finished or `timeout` passes,
    /// with the rows in the order of `ids` (each as it is then). Use this
    /// rather than many concurrent `wait`s, which hold a pooled connection
    /// each.
    ///
    /// # Errors
    ///
    /// An id with no row, or a failed statement (`wait failed: ...`).
    pub async fn wait_many(&self, ids: &[i64], timeout: Duration) -> Result<Vec<ActionResult>> {
        let deadline = Instant::now() + timeout;
        let mut listener = notify::listen(&self.pool, RESULTS_CHANNEL)
            .await
            .context("wait failed: listening")?;
        let mut latest: HashMap<i64, ActionResult> = HashMap::with_capacity(ids.len());
        // Not yet known to be finished.
        let mut pending: HashSet<i64> = ids.iter().copied().collect();
        // Announced finished by a notification, not re-read yet. A finished
        // row never changes again, so each is read once, at the end: a wait
        // for n rows reads O(n) rows, not O(n) per notification.
        let mut announced: Vec<i64> = Vec::new();
        // Read after LISTEN, so a completion in between is not missed.
        let mut wanted: Vec<i64> = pending.iter().copied().collect();
        loop {
            let rows = if wanted.is_empty() {
                Vec::new()
            } else {
                self.results(&wanted).await.context("wait failed")?
            };
            for row in rows {
                if row.status.is_terminal() {
                    pending.remove(&row.id);
                }
                latest.insert(row.id, row);
            }
            if let Some(missing) = ids.iter().find(|id| !latest.contains_key(id)) {
                bail!("wait failed: no action with id {missing}");
            }
            let now = Instant::now();
            if (pending.is_empty() && announced.is_empty()) || now >= deadline {
                if !announced.is_empty() {
                    for row in self.results(&announced).await.context("wait failed")? {
                        latest.insert(row.id, row);
                    }
                }
                return Ok(ids.iter().map(|id| latest[id].clone()).collect());
            }
            if pending.is_empty() {
                // Everything was announced: read those rows, once.
                wanted = std::mem::take(&mut announced);
                continue;
            }
            let poll_at = (now + defaults::POLL_INTERVAL).min(deadline);
            // Collect announcements until every pending row was announced
            // (then read them), the poll (re-read what is still pending) or
            // the end.
            wanted = loop {
                match tokio::time::timeout_at(poll_at, listener.try_recv()).await {
                    // Poll interval over, or the connection was lost (its
                    // notifications with it): re-read what is pending.
                    Err(_) | Ok(Ok(None)) => break pending.iter().copied().collect(),
                    Ok(Ok(Some(n))) => {
                        // The ids one statement finished, comma-separated.
                        for id in notify::finished_ids(n.payload()) {
                            if pending.remove(&id) {
                                announced.push(id);
                            }
                        }
                        if pending.is_empty() {
                            break Vec::new();
                        }
                    }
                    Ok(Err(e)) => return Err(e).context("wait failed: receiving"),
                }
            };
        }
    }

    /// The rows among `ids` that exist, in no particular order.
    async fn results(&self, ids: &[i64]) -> Result<Vec<ActionResult>> {
        let rows = sqlx::query(
            r#"
            SELECT id, module, name, status, attempts, max_attempts, result, error,
                   run_at, created_at, started_at, finished_at
            FROM cairn.actions WHERE id = ANY($1)
            "#,
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .context("result failed")?;
        rows.iter()
            .map(ActionResult::from_row)
            .collect::<Result<Vec<_>, _>>()
            .context("result failed: reading a row")
    }

    /// Cancels row `id` if it is queued or running (see `cairn.cancel`).
    /// Returns whether it was.
    ///
    /// # Errors
    ///
    /// When the statement fails (`cancel failed: ...`).
    pub async fn cancel(&self, id: i64) -> Result<bool> {
        sqlx::query_scalar("SELECT cairn.cancel($1)")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .context("cancel failed")
    }
}

fn check(r: &EnqueueRequest) -> Result<()> {
    if r.module.is_empty() || r.name.is_empty() {
        bail!("enqueue failed: module and name must be non-empty");
    }
    if r.max_attempts == Some(0) {
        bail!(
            "enqueue failed: max_attempts of `{}:{}` must be at least 1",
            r.module,
            r.name
        );
    }
    Ok(())
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
