//! The worker end to end: real PostgreSQL (a fresh database per test), real
//! example components, and hosts run either in this process
//! ([`support::InProcess`](crate::support::InProcess), a real
//! [`cairn::serve::Host`] with short intervals) or as real `cairn serve`
//! children ([`Serve`]) when the test is about processes (killing one,
//! signalling one, two hosts sharing a database).
//!
//! Every wait is bounded: a test that would hang fails with what it was
//! waiting for instead. Children are killed (SIGKILL) when their handle is
//! dropped, so a failing test leaves no host behind; in-process hosts are
//! aborted likewise.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use cairn::queue::{ActionResult, ActionStatus, Client, EnqueueRequest};
use cairn::worker::WorkerConfig;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::pg::fresh_db;
use crate::support::{
    claimed_since, db_now, enqueue, fast_worker, finished, host_registered, last_finished_claim,
    request, until, InProcess, Serve, SOON,
};

/// A row as the database holds it, with the database's clock at reading.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Snap {
    status: ActionStatus,
    attempts: i32,
    run_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    result: Option<Vec<u8>>,
    error: Option<Vec<u8>>,
    now: DateTime<Utc>,
}

async fn snap(pool: &PgPool, id: i64) -> Result<Snap> {
    sqlx::query_as(
        r#"
        SELECT status, attempts, run_at, started_at, finished_at,
               lease_owner, lease_expires_at, result, error, clock_timestamp() AS now
        FROM cairn.actions WHERE id = $1
        "#,
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .with_context(|| format!("no row {id}"))
}

/// Fails unless `row` succeeded, showing its error if it has one.
fn ensure_succeeded(row: &ActionResult) -> Result<()> {
    ensure!(
        row.status == ActionStatus::Succeeded,
        "row {} ({}:{}) is {} after {} attempt(s); error {}",
        row.id,
        row.module,
        row.name,
        row.status,
        row.attempts,
        error_json(row.error.as_ref()).unwrap_or(Value::Null)
    );
    Ok(())
}

/// The value a result payload holds (`{"result": v}` → `v`).
fn result_json(payload: Option<&Vec<u8>>) -> Result<Value> {
    let bytes = payload.context("no result payload")?;
    let json = cairn_payload::json::payload_to_json(bytes).map_err(|e| anyhow!("{e}"))?;
    json.get("result")
        .cloned()
        .with_context(|| format!("not a result payload: {json}"))
}

/// The error an error payload holds (`{"error": {...}}` → `{...}`).
fn error_json(payload: Option<&Vec<u8>>) -> Result<Value> {
    let bytes = payload.context("no error payload")?;
    let json = cairn_payload::json::payload_to_json(bytes).map_err(|e| anyhow!("{e}"))?;
    json.get("error")
        .cloned()
        .with_context(|| format!("not an error payload: {json}"))
}

fn error_type(payload: Option<&Vec<u8>>) -> Result<String> {
    let error = error_json(payload)?;
    error["type"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("error without a type: {error}"))
}

fn millis(d: chrono::TimeDelta) -> i64 {
    d.num_milliseconds()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_from_enqueue_to_result() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let worker = InProcess::start(
        &db.pool,
        &["greet", "math", "flaky", "chatty"],
        fast_worker(),
    )
    .await?;
    let cases = [
        ("greet:hello", json!({"name": "Ada"}), json!("Hello, Ada!")),
        ("math:add", json!({"a": 2, "b": 40}), json!(42)),
        (
            "math:scale",
            json!({"point": {"x": 1.5, "y": -2.0}, "factor": 2.0}),
            json!({"x": 3.0, "y": -4.0}),
        ),
        (
            "math:stats",
            json!({"values": [1.0, 2.0, 6.0]}),
            json!({"count": 3, "mean": 3.0, "min": 1.0, "max": 6.0}),
        ),
        (
            "flaky:succeed_after",
            json!({"attempts": 1}),
            json!("succeeded on attempt 1"),
        ),
        ("chatty:chat", json!({"message": "hi"}), json!(3)),
    ];
    let mut ids = Vec::new();
    for (key, args, _) in &cases {
        ids.push(enqueue(&client, key, args.clone()).await?);
    }
    for ((key, _, expected), id) in cases.iter().zip(ids) {
        let row = finished(&client, id, SOON).await?;
        ensure_succeeded(&row)?;
        ensure!(row.attempts == 1, "{key}: {} attempts", row.attempts);
        let got = result_json(row.result.as_ref())?;
        ensure!(&got == expected, "{key}: got {got}, expected {expected}");
    }
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_payload_is_stored_for_failed_rows() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let worker = InProcess::start(&db.pool, &["math", "panicker"], fast_worker()).await?;
    // math:divide declares retries = 3, but ZeroDivisionError is not
    // retryable; a guest panic is not either.
    let divide = enqueue(&client, "math:divide", json!({"a": 1.0, "b": 0.0})).await?;
    let boom = enqueue(&client, "panicker:boom", json!({"message": "kaboom"})).await?;

    let row = finished(&client, divide, SOON).await?;
    ensure!(row.status == ActionStatus::Failed, "divide: {}", row.status);
    ensure!(row.attempts == 1, "divide: {} attempts", row.attempts);
    ensure!(row.result.is_none(), "divide has a result");
    let error = error_json(row.error.as_ref())?;
    ensure!(
        error["type"] == "ZeroDivisionError" && error["message"] == "division by zero",
        "divide: {error}"
    );

    let row = finished(&client, boom, SOON).await?;
    ensure!(row.status == ActionStatus::Failed, "boom: {}", row.status);
    ensure!(row.attempts == 1, "boom: {} attempts", row.attempts);
    let error = error_json(row.error.as_ref())?;
    ensure!(error["type"] == "Panic", "boom: {error}");
    ensure!(
        error["message"].as_str().unwrap_or("").contains("kaboom"),
        "boom: the panic message is lost: {error}"
    );
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_is_not_a_payload_fails_the_row_and_cairn_result_reads_it() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let worker = InProcess::start(&db.pool, &["liar"], fast_worker()).await?;
    let lies = [
        ("liar:garbage", "not a protobuf WorkflowArguments"),
        ("liar:wrong_key", "its one entry is `answer`, not `result`"),
        ("liar:error_as_result", "an error payload (entry `error`)"),
    ];
    let mut ids = Vec::new();
    for (key, _) in &lies {
        ids.push(enqueue(&client, key, json!({})).await?);
    }
    let honest = enqueue(&client, "liar:honest", json!({})).await?;

    for ((key, why), id) in lies.iter().zip(&ids) {
        let row = finished(&client, *id, SOON).await?;
        // Failed for good on the first attempt (not retryable), the guest's
        // bytes not stored as a result.
        ensure!(row.status == ActionStatus::Failed, "{key}: {}", row.status);
        ensure!(row.attempts == 1, "{key}: {} attempts", row.attempts);
        ensure!(row.result.is_none(), "{key}: a result was stored");
        let error = error_json(row.error.as_ref())?;
        ensure!(error["type"] == "InvalidResultPayload", "{key}: {error}");
        let message = error["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains(&format!("action `{key}`")) && message.contains(why),
            "{key}: the message should name the action and what was wrong: {message}"
        );
        // `cairn result` reads the row: JSON on stdout, exit 1 (failed).
        let out = crate::support::cairn()
            .args(["result", &id.to_string(), "--database-url", &db.url])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "{key}: cairn result: {stderr}"
        );
        let printed: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{key}: cairn result printed no JSON; stderr {stderr}"))?;
        ensure!(
            printed["status"] == "failed" && printed["error"]["type"] == "InvalidResultPayload",
            "{key}: {printed}"
        );
    }
    let row = finished(&client, honest, SOON).await?;
    ensure_succeeded(&row)?;
    ensure!(result_json(row.result.as_ref())? == json!("truth"));
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_is_enforced_through_run_at() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let backoff = Duration::from_secs(1);
    // Equal jitter (queue/backoff.rs): a delay d is drawn from [d/2, d]. With
    // initial = max = 1 s, every retry waits between 500 ms and 1 s.
    let least = chrono::TimeDelta::milliseconds(500);
    let most = chrono::TimeDelta::milliseconds(1000);
    let worker = InProcess::start(&db.pool, &["flaky"], fast_worker()).await?;
    let id = client
        .enqueue(&request("flaky:succeed_after", json!({"attempts": 3}))?.backoff(backoff, backoff))
        .await?;

    // Watch the row: for each attempt n, when it started, and the run_at it
    // was requeued with after failing.
    #[derive(Default)]
    struct Seen {
        started: [Option<DateTime<Utc>>; 4],
        requeued: [Option<(DateTime<Utc>, DateTime<Utc>)>; 4],
    }
    let seen = RefCell::new(Seen::default());
    let last = until("the row to finish", SOON, || {
        let (seen, pool) = (&seen, &db.pool);
        async move {
            let s = snap(pool, id).await?;
            let n = usize::try_from(s.attempts)?;
            ensure!(n <= 3, "attempt {n} of a row that succeeds on the third");
            let mut seen = seen.borrow_mut();
            if n >= 1 {
                seen.started[n] = s.started_at.or(seen.started[n]);
            }
            if s.status == ActionStatus::Queued && n >= 1 && seen.requeued[n].is_none() {
                seen.requeued[n] = Some((s.run_at, s.now));
            }
            Ok(s.status.is_terminal().then_some(s))
        }
    })
    .await?;
    let Seen { started, requeued } = seen.into_inner();
    ensure!(
        last.status == ActionStatus::Succeeded,
        "final status {}",
        last.status
    );
    ensure!(last.attempts == 3, "{} attempts", last.attempts);
    ensure!(result_json(last.result.as_ref())? == json!("succeeded on attempt 3"));
    // The last failed attempt's error is kept.
    ensure!(error_type(last.error.as_ref())? == "FlakyError");

    for n in 1..=2 {
        let began = started[n].with_context(|| format!("attempt {n} never seen running"))?;
        let (run_at, seen_at) =
            requeued[n].with_context(|| format!("never saw the row queued after attempt {n}"))?;
        let next = started[n + 1].with_context(|| format!("attempt {} never seen", n + 1))?;
        // It failed after it started and before we saw it queued.
        ensure!(
            run_at >= began + least,
            "after attempt {n} (started {began}) run_at is {run_at}: only {} ms later, \
             less than the jitter's minimum of {} ms",
            millis(run_at - began),
            millis(least)
        );
        ensure!(
            run_at <= seen_at + most,
            "after attempt {n} run_at {run_at} is more than {} ms after {seen_at}",
            millis(most)
        );
        ensure!(
            next >= run_at,
            "attempt {} started at {next}, before run_at {run_at}",
            n + 1
        );
    }
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_exhausted_fails_the_row() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let worker = InProcess::start(&db.pool, &["flaky"], fast_worker()).await?;
    // flaky declares retries = 5; the row's override of 2 wins.
    let id = client
        .enqueue(
            &request("flaky:succeed_after", json!({"attempts": 10}))?
                .max_attempts(2)
                .backoff(Duration::from_millis(50), Duration::from_millis(50)),
        )
        .await?;
    let row = finished(&client, id, SOON).await?;
    ensure!(row.status == ActionStatus::Failed, "status {}", row.status);
    ensure!(row.attempts == 2, "{} attempts", row.attempts);
    ensure!(
        row.max_attempts == Some(2),
        "max_attempts {:?}",
        row.max_attempts
    );
    let error = error_json(row.error.as_ref())?;
    ensure!(
        error["type"] == "FlakyError" && error["message"] == "attempt 2 of 10 failed",
        "error {error}"
    );
    ensure!(row.result.is_none());
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_action_stays_queued_until_unknown_after_then_fails() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let unknown_after = Duration::from_secs(1);
    let (host, dir) = InProcess::load(
        &db.pool,
        &["greet"],
        WorkerConfig {
            unknown_after,
            ..fast_worker()
        },
    )
    .await?;
    let ghost = client
        .enqueue(&EnqueueRequest::new("ghost", "nothing"))
        .await?;
    let enqueued = db_now(&db.pool).await?;
    let worker = InProcess::run(&db.pool, host, Some(dir)).await?;

    // The worker looked at the queue five times after the row arrived and
    // left it.
    claimed_since(&db.pool, enqueued, 5).await?;
    let s = snap(&db.pool, ghost).await?;
    ensure!(
        s.status == ActionStatus::Queued && s.attempts == 0,
        "an unserved row is {} with {} attempts after a claim",
        s.status,
        s.attempts
    );

    let failed = until("the unknown action to be failed", SOON, || async {
        let s = snap(&db.pool, ghost).await?;
        Ok(s.status.is_terminal().then_some(s))
    })
    .await?;
    ensure!(failed.status == ActionStatus::Failed, "{}", failed.status);
    ensure!(failed.attempts == 0, "claimed {} times", failed.attempts);
    let waited = failed.finished_at.context("no finished_at")? - failed.run_at;
    ensure!(
        waited >= chrono::TimeDelta::from_std(unknown_after)?,
        "failed after {} ms, before unknown_after",
        millis(waited)
    );
    let error = error_json(failed.error.as_ref())?;
    ensure!(error["type"] == "UnknownActionError", "error {error}");
    ensure!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("ghost:nothing"),
        "the error does not name the action: {error}"
    );
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_another_live_host_serves_is_not_failed_as_unknown() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let unknown_after = Duration::from_secs(1);
    // Another live host serves `other:thing` (its heartbeat is fresh for the
    // whole test: host_ttl is 30 s).
    cairn::queue::heartbeat(&db.pool, "other-host", &["other:thing".into()]).await?;
    // Both rows have been due for an hour; `other:thing` a second longer.
    // The witness, which nobody serves, is failed by the first judgement
    // (once a host has been up for `unknown_after`); the statement that
    // fails it considers `other:thing` too.
    let hour_ago = Utc::now() - chrono::TimeDelta::hours(1);
    let other = client
        .enqueue(
            &EnqueueRequest::new("other", "thing").run_at(hour_ago - chrono::TimeDelta::seconds(1)),
        )
        .await?;
    let witness = client
        .enqueue(&EnqueueRequest::new("ghost", "nothing").run_at(hour_ago))
        .await?;
    let worker = InProcess::start(
        &db.pool,
        &["greet"],
        WorkerConfig {
            unknown_after,
            ..fast_worker()
        },
    )
    .await?;
    let judged = until("the witness to be failed as unknown", SOON, || async {
        let s = snap(&db.pool, witness).await?;
        Ok(s.status.is_terminal().then_some(s))
    })
    .await?;
    ensure!(judged.status == ActionStatus::Failed, "witness: {judged:?}");
    let s = snap(&db.pool, other).await?;
    ensure!(
        s.status == ActionStatus::Queued && s.attempts == 0,
        "other:thing is {} with {} attempts",
        s.status,
        s.attempts
    );
    ensure!(
        s.run_at < judged.run_at,
        "other:thing was not due for longer than the failed witness"
    );
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_runs_the_action_once_and_is_free_again_once_finished() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let req = request("greet:hello", json!({"name": "once"}))?.idempotency_key("greet-once");
    let first = client.enqueue(&req).await?;
    let second = client.enqueue(&req).await?;
    ensure!(first == second, "same key, ids {first} and {second}");
    let worker = InProcess::start(&db.pool, &["greet"], fast_worker()).await?;
    let row = finished(&client, first, SOON).await?;
    ensure_succeeded(&row)?;
    ensure!(row.attempts == 1, "{} attempts", row.attempts);
    ensure!(result_json(row.result.as_ref())? == json!("Hello, once!"));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.actions")
        .fetch_one(&db.pool)
        .await?;
    ensure!(rows == 1, "{rows} rows for one key");
    // Once the row is finished the key is free again: a new run.
    let third = client.enqueue(&req).await?;
    ensure!(
        third != first,
        "a finished row's key still returned {first}"
    );
    let row = finished(&client, third, SOON).await?;
    ensure_succeeded(&row)?;
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_row_does_not_start_before_its_delay() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let delay = Duration::from_millis(1500);
    let (host, dir) = InProcess::load(&db.pool, &["greet"], fast_worker()).await?;
    // The delayed row has the best priority of all, and a row that is due
    // now keeps the worker busy claiming: it still waits.
    let delayed = client
        .enqueue(
            &request("greet:hello", json!({"name": "later"}))?
                .delay(delay)
                .priority(-100),
        )
        .await?;
    let now = enqueue(&client, "greet:hello", json!({"name": "now"})).await?;
    let worker = InProcess::run(&db.pool, host, Some(dir)).await?;
    ensure_succeeded(&finished(&client, now, SOON).await?)?;
    let row = finished(&client, delayed, SOON).await?;
    ensure_succeeded(&row)?;
    let started = row.started_at.context("no started_at")?;
    let due = row.created_at + chrono::TimeDelta::from_std(delay)?;
    ensure!(
        started >= due,
        "delayed row started {} ms after enqueue, before its delay of {delay:?}",
        millis(started - row.created_at)
    );
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_rows_start_in_priority_order() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let (host, dir) = InProcess::load(
        &db.pool,
        &["greet"],
        WorkerConfig {
            concurrency: 1,
            ..fast_worker()
        },
    )
    .await?;
    // Enqueued worst first, all queued before the one-permit worker starts.
    let mut by_priority = Vec::new();
    for priority in [5, -1, 2] {
        let id = client
            .enqueue(
                &request("greet:hello", json!({"name": format!("p{priority}")}))?
                    .priority(priority),
            )
            .await?;
        by_priority.push((priority, id));
    }
    let worker = InProcess::run(&db.pool, host, Some(dir)).await?;

    let mut starts = Vec::new();
    for (priority, id) in &by_priority {
        let row = finished(&client, *id, SOON).await?;
        ensure_succeeded(&row)?;
        starts.push((row.started_at.context("no started_at")?, *priority));
    }
    starts.sort();
    let order: Vec<i32> = starts.iter().map(|(_, p)| *p).collect();
    ensure!(
        order == vec![-1, 2, 5],
        "started in priority order {order:?}"
    );
    worker.stop(SOON).await?;
    Ok(())
}

/// A `sleepy:nap` row running on a `cairn serve` child (timeout well above
/// the nap), with the row as it was once seen running there.
async fn row_running_on(serve: &Serve, client: &Client, pool: &PgPool) -> Result<(i64, Snap)> {
    let id = client
        .enqueue(&request("sleepy:nap", json!({"ms": 60_000}))?.timeout(Duration::from_secs(90)))
        .await?;
    let running = until("the child to run the row", SOON, || async {
        let s = snap(pool, id).await?;
        Ok((s.status == ActionStatus::Running).then_some(s))
    })
    .await?;
    let owner = running.lease_owner.clone().unwrap_or_default();
    ensure!(serve.is(&owner), "leased by {owner}, not the child");
    Ok((id, running))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_host_renews_its_lease_and_keeps_its_row() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let first = Serve::start(&db, &["sleepy"]).await?;
    let (id, running) = row_running_on(&first, &client, &db.pool).await?;
    let first_lease = running.lease_expires_at.context("no lease")?;

    // A second host that rescues every 200 ms comes up. Until the first
    // lease (2 s) would have expired, and for two of its rescue cycles more,
    // the row stays with the first host, which renews it.
    let second = InProcess::start(&db.pool, &["sleepy"], fast_worker()).await?;
    let past = first_lease + chrono::TimeDelta::from_std(fast_worker().rescue_every * 2)?;
    let held = until("the first lease to be long expired", SOON, || async {
        let s = snap(&db.pool, id).await?;
        ensure!(
            s.status == ActionStatus::Running
                && s.attempts == 1
                && s.lease_owner.as_deref().is_some_and(|o| first.is(o)),
            "a live host's row changed hands: {s:?}"
        );
        Ok((s.now > past).then_some(s))
    })
    .await?;
    ensure!(
        held.lease_expires_at.is_some_and(|e| e > held.now),
        "the lease was not renewed: {held:?}"
    );
    second.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_host_lease_expires_and_another_host_rescues_the_row() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let mut first = Serve::start(&db, &["sleepy"]).await?;
    let (id, _) = row_running_on(&first, &client, &db.pool).await?;
    let second = InProcess::start(&db.pool, &["sleepy"], fast_worker()).await?;

    first.signal(libc::SIGKILL)?;
    let killed_at = db_now(&db.pool).await?;
    first.exit_within(SOON).await?;
    // The lease as the dead host left it (it renews no more).
    let lease_expired = snap(&db.pool, id)
        .await?
        .lease_expires_at
        .context("no lease")?;

    let row = finished(&client, id, SOON).await?;
    ensure_succeeded(&row)?;
    ensure!(row.attempts == 2, "{} attempts", row.attempts);
    ensure!(
        result_json(row.result.as_ref())? == json!(2),
        "not finished by attempt 2"
    );
    ensure!(
        error_type(row.error.as_ref())? == "LeaseExpired",
        "the lost attempt's error is not recorded"
    );
    let restarted = row.started_at.context("no started_at")?;
    ensure!(
        restarted >= lease_expired && restarted > killed_at,
        "attempt 2 started at {restarted}, before the lease expired at {lease_expired}"
    );
    second.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_unfinished_rows_uncounted_and_exits_zero() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let mut host = Serve::start(&db, &["sleepy"]).await?;
    let timeout = Duration::from_secs(90);
    // The short one outlasts the time it takes to see both running, and ends
    // well within the 1 s grace period.
    let ids = client
        .enqueue_many(&[
            request("sleepy:nap_always", json!({"ms": 60_000}))?.timeout(timeout),
            request("sleepy:nap_always", json!({"ms": 600}))?.timeout(timeout),
        ])
        .await?;
    let (long, short) = (ids[0], ids[1]);
    until("both rows to run", SOON, || async {
        let (a, b) = (snap(&db.pool, long).await?, snap(&db.pool, short).await?);
        Ok((a.status == ActionStatus::Running && b.status == ActionStatus::Running).then_some(()))
    })
    .await?;

    let term_at = db_now(&db.pool).await?;
    let began = Instant::now();
    host.signal(libc::SIGTERM)?;
    let status = host.exit_within(SOON).await?;
    let took = began.elapsed();
    ensure!(status.success(), "exit {status}:\n{}", host.stderr_text());
    ensure!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, without waiting out the grace period for the long row"
    );

    let s = snap(&db.pool, short).await?;
    ensure!(s.status == ActionStatus::Succeeded, "short: {s:?}");
    ensure!(result_json(s.result.as_ref())? == json!(1));
    ensure!(
        s.finished_at.is_some_and(|f| f > term_at),
        "short finished at {:?}, before SIGTERM at {term_at}: the test proves nothing",
        s.finished_at
    );

    let l = snap(&db.pool, long).await?;
    ensure!(l.status == ActionStatus::Queued, "long: {l:?}");
    ensure!(
        l.attempts == 0,
        "long: the interrupted attempt counted: {l:?}"
    );
    ensure!(
        l.lease_owner.is_none() && l.lease_expires_at.is_none(),
        "long: lease left behind: {l:?}"
    );
    ensure!(l.error.is_none(), "long: an error was recorded: {l:?}");
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.hosts")
        .fetch_one(&db.pool)
        .await?;
    ensure!(hosts == 0, "the host did not deregister");
    Ok(())
}

/// `completed=N` from a worker's last log line.
fn completed_count(log: &str) -> Result<u64> {
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("no log output")?;
    ensure!(
        last.contains("worker stopped"),
        "last log line is not `worker stopped`: {last}"
    );
    let n = last
        .split_whitespace()
        .find_map(|w| w.strip_prefix("completed="))
        .with_context(|| format!("no completed= in {last}"))?;
    Ok(n.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_complete_2000_rows_exactly_once() -> Result<()> {
    const ROWS: usize = 2000;
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    // Both hosts up before the rows arrive, so both are woken for them.
    let mut a = Serve::start(&db, &["noop"]).await?;
    let mut b = Serve::start(&db, &["noop"]).await?;
    let requests = vec![EnqueueRequest::new("noop", "noop"); ROWS];
    let ids = client.enqueue_many(&requests).await?;
    ensure!(ids.len() == ROWS);

    until("every row to succeed", Duration::from_secs(60), || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM cairn.actions WHERE status IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&db.pool)
        .await?;
        Ok((done == ROWS as i64).then_some(()))
    })
    .await?;
    let (succeeded, once): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded' AND result IS NOT NULL),
                count(*) FILTER (WHERE attempts = 1)
         FROM cairn.actions",
    )
    .fetch_one(&db.pool)
    .await?;
    ensure!(succeeded == ROWS as i64, "{succeeded} of {ROWS} succeeded");
    ensure!(
        once == ROWS as i64,
        "{} rows ran more than once",
        ROWS as i64 - once
    );

    a.signal(libc::SIGTERM)?;
    b.signal(libc::SIGTERM)?;
    let mut counts = Vec::new();
    for host in [&mut a, &mut b] {
        let status = host.exit_within(SOON).await?;
        let log = host.stderr_text();
        ensure!(status.success(), "exit {status}:\n{log}");
        counts.push(completed_count(&log)?);
    }
    ensure!(
        counts.iter().sum::<u64>() == ROWS as u64,
        "the hosts completed {counts:?}, not {ROWS} in all"
    );
    ensure!(
        counts.iter().all(|&n| n > 0),
        "one host did all the work: {counts:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_the_enqueue_notification() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let poll_interval = Duration::from_secs(30);
    let worker = InProcess::start(
        &db.pool,
        &["greet"],
        WorkerConfig {
            poll_interval,
            ..fast_worker()
        },
    )
    .await?;
    // Enqueue only once the worker LISTENs and its first claim (at start)
    // has come and gone: the loop is then asleep, and only a notification
    // can wake it before the 30 s poll.
    until("the worker to LISTEN", SOON, || async {
        let listening: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND query ILIKE 'LISTEN%cairn_actions%')",
        )
        .fetch_one(&db.pool)
        .await?;
        Ok(listening.then_some(()))
    })
    .await?;
    until("the worker's first claim", SOON, || async {
        Ok(last_finished_claim(&db.pool).await?.map(|_| ()))
    })
    .await?;

    let began = Instant::now();
    let id = enqueue(&client, "greet:hello", json!({"name": "now"})).await?;
    let row = finished(&client, id, SOON).await?;
    let took = began.elapsed();
    ensure_succeeded(&row)?;
    ensure!(
        took < Duration::from_millis(1500),
        "took {took:?} from enqueue to result with a {poll_interval:?} poll interval"
    );
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_a_running_row_back_uncounted_after_the_grace_period() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let grace = Duration::from_millis(300);
    let worker = InProcess::start(
        &db.pool,
        &["sleepy"],
        WorkerConfig {
            shutdown_grace: grace,
            ..fast_worker()
        },
    )
    .await?;
    let long = client
        .enqueue(
            &request("sleepy:nap_always", json!({"ms": 60_000}))?.timeout(Duration::from_secs(90)),
        )
        .await?;
    until("the long action to run", SOON, || async {
        let s = snap(&db.pool, long).await?;
        Ok((s.status == ActionStatus::Running).then_some(()))
    })
    .await?;
    let host_id = worker.host_id.clone();
    let took = worker.stop(SOON).await?;
    ensure!(
        took >= grace - Duration::from_millis(50),
        "stopped after {took:?}, without the grace period of {grace:?}"
    );
    let s = snap(&db.pool, long).await?;
    ensure!(
        s.status == ActionStatus::Queued && s.attempts == 0 && s.lease_owner.is_none(),
        "after shutdown: {s:?}"
    );
    ensure!(
        !host_registered(&db.pool, &host_id).await?,
        "the worker did not deregister"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_abandons_the_attempt_and_frees_capacity() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let long = client
        .enqueue(
            &request("sleepy:nap_always", json!({"ms": 60_000}))?.timeout(Duration::from_secs(90)),
        )
        .await?;
    // One permit, and a poll far longer than the test: only the abort of the
    // lost attempt can free the worker for the next row.
    let config = WorkerConfig {
        concurrency: 1,
        poll_interval: Duration::from_secs(60),
        ..fast_worker()
    };
    let worker = InProcess::start(&db.pool, &["sleepy", "greet"], config).await?;
    until("the long row to run", SOON, || async {
        Ok((snap(&db.pool, long).await?.status == ActionStatus::Running).then_some(()))
    })
    .await?;
    // Another host takes the row over (as a rescue after an expired lease
    // would): the next renewal tells this worker it lost the lease.
    sqlx::query("UPDATE cairn.actions SET lease_owner = 'thief' WHERE id = $1")
        .bind(long)
        .execute(&db.pool)
        .await?;
    let next = enqueue(&client, "greet:hello", json!({"name": "next"})).await?;
    let row = finished(&client, next, SOON).await?;
    ensure_succeeded(&row)?;
    // The abandoned attempt wrote nothing: the row is still the thief's.
    let long_row = snap(&db.pool, long).await?;
    ensure!(
        long_row.status == ActionStatus::Running
            && long_row.lease_owner.as_deref() == Some("thief"),
        "the lost row was touched: {:?} owned by {:?}",
        long_row.status,
        long_row.lease_owner
    );
    worker.stop(SOON).await?;
    Ok(())
}

/// `cairn.claim` as another host might re-implement it, wrongly: it ignores
/// `max_rows` and claims up to 1,000 due rows it serves. It wraps the real
/// claim (moved to `honest.claim`: PL/pgSQL qualifies parameters with the
/// function's name, so it keeps its name), so it claims exactly as the
/// current migrations do, and logs what it was asked for and what it returned in
/// `claim_log`, so a test can see the over-claim happened.
const GREEDY_CLAIM: &str = r#"
CREATE TABLE claim_log (asked integer NOT NULL, returned bigint NOT NULL);
CREATE SCHEMA honest;
ALTER FUNCTION cairn.claim(text, integer, bigint, text[], text[], integer[])
    SET SCHEMA honest;
CREATE FUNCTION cairn.claim(text, integer, bigint, text[], text[], integer[])
RETURNS SETOF cairn.actions
LANGUAGE plpgsql
AS $$
DECLARE
    returned bigint;
BEGIN
    -- $2, max_rows, is what it should have claimed at most.
    RETURN QUERY SELECT * FROM honest.claim($1, 1000, $3, $4, $5, $6);
    GET DIAGNOSTICS returned = ROW_COUNT;
    INSERT INTO claim_log VALUES ($2, returned);
END
$$;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_claimed_again_while_still_running_here_completes_from_the_newest_claim() -> Result<()>
{
    // A claim commits asynchronously: a server crash can lose it, and the
    // row is queued again while this host still runs it. If this host then
    // claims it again, the earlier attempt has lost its lease: only the
    // newest claim's attempt may complete the row.
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let worker = InProcess::start(&db.pool, &["sleepy"], fast_worker()).await?;
    let timeout = Duration::from_secs(10);
    let mut req = request("sleepy:nap_and_say", json!({"ms": 1500}))?;
    req.timeout = Some(timeout);
    let id = client.enqueue(&req).await?;
    until("the row to run", SOON, || async {
        Ok((snap(&db.pool, id).await?.status == ActionStatus::Running).then_some(()))
    })
    .await?;
    // What a lost claim leaves behind: the row queued, attempt not counted.
    let lost_at = db_now(&db.pool).await?;
    sqlx::query(
        "UPDATE cairn.actions SET status = 'queued', lease_owner = NULL,
                lease_expires_at = NULL, attempts = attempts - 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await?;
    let row = finished(&client, id, SOON).await?;
    ensure_succeeded(&row)?;
    ensure!(row.attempts == 1 && row.error.is_none(), "{row:?}");
    // The stored result is the newest attempt's: its deadline is past the
    // moment the claim was lost, plus the timeout.
    let deadline = result_json(row.result.as_ref())?
        .as_i64()
        .context("deadline")?;
    let earliest = (lost_at + chrono::TimeDelta::from_std(timeout)?).timestamp_millis();
    ensure!(
        deadline >= earliest,
        "the earlier attempt completed the row (deadline {deadline} < {earliest})"
    );
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_claim_returns_beyond_the_free_permits_are_given_back_uncounted() -> Result<()> {
    const ROWS: usize = 10;
    const PERMITS: usize = 2;
    let nap = Duration::from_millis(300);
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    sqlx::raw_sql(GREEDY_CLAIM).execute(&db.pool).await?;
    let (host, dir) = InProcess::load(
        &db.pool,
        &["sleepy"],
        WorkerConfig {
            concurrency: PERMITS,
            ..fast_worker()
        },
    )
    .await?;
    let requests: Vec<_> = (0..ROWS)
        .map(|_| {
            Ok(
                request("sleepy:nap_always", json!({"ms": nap.as_millis() as u64}))?
                    .timeout(Duration::from_secs(60)),
            )
        })
        .collect::<Result<_>>()?;
    let ids = client.enqueue_many(&requests).await?;
    let worker = InProcess::run(&db.pool, host, Some(dir)).await?;
    let rows = client.wait_many(&ids, SOON).await?;
    worker.stop(SOON).await?;

    let (asked, returned): (i32, i64) =
        sqlx::query_as("SELECT asked, returned FROM claim_log ORDER BY returned DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .context("the worker never claimed")?;
    ensure!(
        returned > i64::from(asked),
        "no claim returned more rows than asked for (at most {returned} for {asked}): the test proves nothing"
    );
    // None is lost, and the attempts the extra rows were given back with
    // did not count: every row ran once, on its first attempt.
    for row in &rows {
        ensure_succeeded(row)?;
        ensure!(
            row.attempts == 1,
            "row {} took {} attempts",
            row.id,
            row.attempts
        );
        ensure!(
            result_json(row.result.as_ref())? == json!(1),
            "row {}",
            row.id
        );
    }
    // None ran without a permit: with two at a time, ten naps take at least
    // five naps' time from the first claim to the last completion.
    let (first_start, last_finish): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT min(started_at), max(finished_at) FROM cairn.actions WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&db.pool)
    .await?;
    let least = chrono::TimeDelta::from_std(nap * (ROWS / PERMITS) as u32)?;
    ensure!(
        last_finish - first_start >= least,
        "{ROWS} naps of {nap:?} on {PERMITS} permits took {} ms: some ran without a permit",
        millis(last_finish - first_start)
    );
    Ok(())
}
