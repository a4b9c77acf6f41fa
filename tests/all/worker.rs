//! The worker end to end: real PostgreSQL (a fresh database per test), real
//! example components, and workers run either in this process
//! ([`Worker::run`] with short intervals) or as real `cairn serve` children
//! when the test is about processes (killing one, signalling one, two hosts
//! sharing a database).
//!
//! Every wait is bounded: a test that would hang fails with what it was
//! waiting for instead. Children are killed (SIGKILL) when their handle is
//! dropped, so a failing test leaves no host behind; in-process workers are
//! aborted likewise.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn::queue::{ActionResult, ActionStatus, Client, EnqueueRequest};
use cairn::registry::Registry;
use cairn::worker::{Worker, WorkerConfig};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pg::{fresh_db, TestDb};
use crate::support::{cairn, plugin_dir, runtime, until, PROBE_EVERY};

/// Generous bound for anything that should take well under a second: the
/// machine may be busy with other tests (2 cores).
const SOON: Duration = Duration::from_secs(10);

/// Intervals short enough that a test sees the worker's behaviour within a
/// second or two, long enough not to busy-loop the database.
fn fast_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        lease: Duration::from_secs(2),
        renew_every: Duration::from_millis(500),
        rescue_every: Duration::from_millis(200),
        heartbeat_every: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(1),
        ..WorkerConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A worker running in this process until [`stop`](Self::stop)ped or
/// dropped (aborted).
struct InProcess {
    host_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
    _plugins: tempfile::TempDir,
}

/// Example plugins loaded and registered, ready for a worker. Loading
/// (building the examples on a cold run, compiling components) can take
/// seconds: tests whose timing matters load first, then enqueue, then start.
struct Loaded {
    dir: tempfile::TempDir,
    runtime: cairn::runtime::Runtime,
    registry: Registry,
}

impl Loaded {
    async fn new(plugins: &[&str]) -> Result<Self> {
        let dir = plugin_dir(plugins);
        let runtime = runtime();
        let load = cairn::plugin::load_dir(&runtime, dir.path()).await?;
        ensure!(
            load.rejected.is_empty(),
            "plugins rejected: {:?}",
            load.rejected
        );
        let registry = Registry::new();
        for plugin in load.plugins {
            registry.register_plugin(Arc::new(plugin))?;
        }
        Ok(Loaded {
            dir,
            runtime,
            registry,
        })
    }
}

impl InProcess {
    /// Loads the named example plugins and starts a worker serving them from
    /// `pool`; returns once the worker has registered its heartbeat.
    async fn start(pool: &PgPool, plugins: &[&str], config: WorkerConfig) -> Result<Self> {
        Self::serve(pool, Loaded::new(plugins).await?, config).await
    }

    /// Starts a worker serving already `loaded` plugins; returns once it has
    /// registered its heartbeat.
    async fn serve(pool: &PgPool, loaded: Loaded, config: WorkerConfig) -> Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let host_id = format!("in-process-{}", N.fetch_add(1, Ordering::Relaxed));
        let worker = Worker::new(
            loaded.runtime,
            Arc::new(loaded.registry),
            pool.clone(),
            host_id.clone(),
            config,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        let started = InProcess {
            host_id,
            stop: Some(stop),
            task: Some(task),
            _plugins: loaded.dir,
        };
        until("the in-process worker's heartbeat", SOON, || async {
            Ok(host_registered(pool, &started.host_id).await?.then_some(()))
        })
        .await?;
        Ok(started)
    }

    /// Signals shutdown and waits (at most `within`) for `run` to return;
    /// returns how long that took.
    async fn stop(mut self, within: Duration) -> Result<Duration> {
        let began = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().context("worker already stopped")?;
        tokio::time::timeout(within, task)
            .await
            .map_err(|_| anyhow!("the worker did not stop within {within:?}"))?
            .context("the worker task panicked")??;
        Ok(began.elapsed())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A `cairn serve` child on a test database. Killed (SIGKILL) when dropped.
/// Its stderr (the logs) is collected as it comes.
struct Serve {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _plugins: tempfile::TempDir,
    /// Its working directory, so that whatever it keeps under `./.cairn`
    /// goes away with it.
    _cwd: tempfile::TempDir,
}

impl Serve {
    /// Starts `cairn serve` with the named example plugins, `--lease 2s
    /// --shutdown-grace 1s`; returns once the host has registered itself.
    async fn start(db: &TestDb, plugins: &[&str]) -> Result<Self> {
        let dir = plugin_dir(plugins);
        let cwd = tempfile::tempdir()?;
        let mut child = cairn()
            .current_dir(cwd.path())
            .arg("serve")
            .arg("--plugins")
            .arg(dir.path())
            .args(["--database-url", &db.url])
            .args(["--lease", "2s", "--shutdown-grace", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning cairn serve")?;
        let pipe = child.stderr.take().context("no stderr pipe")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut serve = Serve {
            child,
            stderr,
            reader: Some(reader),
            _plugins: dir,
            _cwd: cwd,
        };
        let pattern = serve.host_pattern();
        // Loading compiles the components: slow in a debug build on a busy
        // machine.
        let limit = Duration::from_secs(30);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = serve.child.try_wait()? {
                bail!(
                    "cairn serve exited early ({status}):\n{}",
                    serve.stderr_text()
                );
            }
            let up: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM cairn.hosts WHERE host_id LIKE $1)",
            )
            .bind(&pattern)
            .fetch_one(&db.pool)
            .await?;
            if up {
                return Ok(serve);
            }
            if Instant::now() >= deadline {
                bail!(
                    "cairn serve did not register within {limit:?}:\n{}",
                    serve.stderr_text()
                );
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// A `LIKE` pattern matching this child's host id (`hostname-PID-...`).
    fn host_pattern(&self) -> String {
        format!("%-{}-%", self.child.id())
    }

    /// Whether `owner` (a lease owner or host id) is this child.
    fn is(&self, owner: &str) -> bool {
        owner.contains(&format!("-{}-", self.child.id()))
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: plain kill(2) on our own child, which we have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        ensure!(rc == 0, "kill({pid}, {signal}) failed");
        Ok(())
    }

    /// Waits (at most `limit`) for the child to exit.
    async fn exit_within(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // The pipe closes at exit: let the reader take the last lines.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "cairn serve did not exit within {limit:?}:\n{}",
                    self.stderr_text()
                );
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A row as the database holds it, with the database's clock at reading.
#[derive(Debug, Clone)]
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
    let r = sqlx::query(
        r#"
        SELECT status, attempts, run_at, started_at, finished_at,
               lease_owner, lease_expires_at, result, error, clock_timestamp() AS now
        FROM cairn.actions WHERE id = $1
        "#,
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .with_context(|| format!("no row {id}"))?;
    Ok(Snap {
        status: r.try_get::<String, _>("status")?.parse()?,
        attempts: r.try_get("attempts")?,
        run_at: r.try_get("run_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        result: r.try_get("result")?,
        error: r.try_get("error")?,
        now: r.try_get("now")?,
    })
}

async fn db_now(pool: &PgPool) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?)
}

async fn host_registered(pool: &PgPool, host_id: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cairn.hosts WHERE host_id = $1)")
            .bind(host_id)
            .fetch_one(pool)
            .await?,
    )
}

/// A request for `module:name` with JSON keyword arguments.
fn request(key: &str, args: Value) -> Result<EnqueueRequest> {
    let args = cairn_payload::json::json_to_arguments(&args)
        .map_err(|e| anyhow!("arguments {args}: {e}"))?;
    Ok(EnqueueRequest::for_key(key)?.args(&args))
}

/// Waits (at most `limit`) until row `id` is finished.
async fn finished(client: &Client, id: i64, limit: Duration) -> Result<ActionResult> {
    let row = client.wait(id, limit).await?;
    ensure!(
        row.status.is_terminal(),
        "row {id} ({}:{}) still {} after {limit:?}",
        row.module,
        row.name,
        row.status
    );
    Ok(row)
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
        fast_config(),
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
        ids.push(client.enqueue(&request(key, args.clone())?).await?);
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
    let worker = InProcess::start(&db.pool, &["math", "panicker"], fast_config()).await?;
    // math:divide declares retries = 3, but ZeroDivisionError is not
    // retryable; a guest panic is not either.
    let divide = client
        .enqueue(&request("math:divide", json!({"a": 1.0, "b": 0.0}))?)
        .await?;
    let boom = client
        .enqueue(&request("panicker:boom", json!({"message": "kaboom"}))?)
        .await?;

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
async fn retry_backoff_is_enforced_through_run_at() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let backoff = Duration::from_secs(1);
    // Equal jitter (queue/backoff.rs): a delay d is drawn from [d/2, d]. With
    // initial = max = 1 s, every retry waits between 500 ms and 1 s.
    let least = chrono::TimeDelta::milliseconds(500);
    let most = chrono::TimeDelta::milliseconds(1000);
    let worker = InProcess::start(&db.pool, &["flaky"], fast_config()).await?;
    let id = client
        .enqueue(&request("flaky:succeed_after", json!({"attempts": 3}))?.backoff(backoff, backoff))
        .await?;

    // Watch the row: for each attempt n, when it started, and the run_at it
    // was requeued with after failing.
    let mut started: [Option<DateTime<Utc>>; 4] = [None; 4];
    let mut requeued: [Option<(DateTime<Utc>, DateTime<Utc>)>; 4] = [None; 4];
    let deadline = Instant::now() + SOON;
    let last = loop {
        let s = snap(&db.pool, id).await?;
        let n = usize::try_from(s.attempts)?;
        ensure!(n <= 3, "attempt {n} of a row that succeeds on the third");
        if n >= 1 {
            started[n] = s.started_at.or(started[n]);
        }
        if s.status == ActionStatus::Queued && n >= 1 && requeued[n].is_none() {
            requeued[n] = Some((s.run_at, s.now));
        }
        if s.status.is_terminal() {
            break s;
        }
        ensure!(
            Instant::now() < deadline,
            "not finished within {SOON:?}: {s:?}"
        );
        tokio::time::sleep(PROBE_EVERY).await;
    };
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
    let worker = InProcess::start(&db.pool, &["flaky"], fast_config()).await?;
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
async fn unknown_action_stays_queued_then_fails() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let unknown_after = Duration::from_secs(1);
    // Another live host serves `other:thing` (its heartbeat is fresh for the
    // whole test: host_ttl is 30 s).
    cairn::queue::heartbeat(&db.pool, "other-host", &["other:thing".into()]).await?;
    let loaded = Loaded::new(&["greet"]).await?;
    let ghost = client
        .enqueue(&EnqueueRequest::new("ghost", "nothing"))
        .await?;
    let other = client
        .enqueue(&EnqueueRequest::new("other", "thing"))
        .await?;
    let worker = InProcess::serve(
        &db.pool,
        loaded,
        WorkerConfig {
            unknown_after,
            ..fast_config()
        },
    )
    .await?;

    // Several poll cycles (50 ms) and rescue cycles (200 ms): nobody claims
    // the rows, nobody fails them yet.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for id in [ghost, other] {
            let s = snap(&db.pool, id).await?;
            let waited = s.now - s.run_at;
            if waited < chrono::TimeDelta::from_std(unknown_after)? {
                ensure!(
                    s.status == ActionStatus::Queued && s.attempts == 0,
                    "row {id} is {} with {} attempts after {} ms",
                    s.status,
                    s.attempts,
                    millis(waited)
                );
            }
        }
    }

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

    // Two more rescue cycles: the row another live host serves, due for as
    // long, is left alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = snap(&db.pool, other).await?;
    ensure!(
        s.status == ActionStatus::Queued && s.attempts == 0,
        "other:thing is {} with {} attempts after {} ms",
        s.status,
        s.attempts,
        millis(s.now - s.run_at)
    );
    ensure!(s.now - s.run_at > chrono::TimeDelta::from_std(unknown_after)?);
    worker.stop(SOON).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_enqueues_once() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let req = request("greet:hello", json!({"name": "once"}))?.idempotency_key("greet-once");
    let first = client.enqueue(&req).await?;
    let second = client.enqueue(&req).await?;
    ensure!(first == second, "same key, ids {first} and {second}");
    let worker = InProcess::start(&db.pool, &["greet"], fast_config()).await?;
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
async fn delayed_row_waits_and_priority_orders_claims() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let delay = Duration::from_millis(1500);
    let loaded = Loaded::new(&["greet"]).await?;
    // The delayed row has the best priority of all: it still waits.
    let delayed = client
        .enqueue(
            &request("greet:hello", json!({"name": "later"}))?
                .delay(delay)
                .priority(-100),
        )
        .await?;
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
    let worker = InProcess::serve(
        &db.pool,
        loaded,
        WorkerConfig {
            concurrency: 1,
            ..fast_config()
        },
    )
    .await?;

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
async fn killed_host_lease_expires_and_another_host_rescues() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let mut first = Serve::start(&db, &["sleepy"]).await?;
    let id = client
        .enqueue(&request("sleepy:nap", json!({"ms": 60_000}))?.timeout(Duration::from_secs(90)))
        .await?;
    until("the child to run the row", SOON, || async {
        let s = snap(&db.pool, id).await?;
        Ok((s.status == ActionStatus::Running).then_some(s))
    })
    .await
    .and_then(|s| {
        let owner = s.lease_owner.unwrap_or_default();
        ensure!(first.is(&owner), "leased by {owner}, not the child");
        Ok(())
    })?;

    // A second host comes up while the first is alive: for longer than one
    // lease, the first keeps renewing and the second does not take the row.
    let second = InProcess::start(&db.pool, &["sleepy"], fast_config()).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let held = snap(&db.pool, id).await?;
    ensure!(
        held.status == ActionStatus::Running
            && held.attempts == 1
            && held.lease_owner.as_deref().is_some_and(|o| first.is(o)),
        "a live host's row changed hands: {held:?}"
    );
    ensure!(
        held.lease_expires_at.is_some_and(|e| e > held.now),
        "the lease was not renewed: {held:?}"
    );

    first.signal(libc::SIGKILL)?;
    let killed_at = db_now(&db.pool).await?;
    first.exit_within(SOON).await?;
    let lease_expired = held.lease_expires_at.context("no lease")?;

    let row = finished(&client, id, Duration::from_secs(20)).await?;
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
async fn graceful_shutdown_in_process_and_wakeup_by_notify() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let worker = InProcess::start(
        &db.pool,
        &["greet", "sleepy"],
        WorkerConfig {
            poll_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_millis(300),
            ..fast_config()
        },
    )
    .await?;
    // Enqueue only once the worker is LISTENing, so that only a
    // notification can wake it before the 30 s poll.
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
    // Let the first claim (at start) come and go: the loop is now asleep.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let began = Instant::now();
    let id = client
        .enqueue(&request("greet:hello", json!({"name": "now"}))?)
        .await?;
    let row = finished(&client, id, Duration::from_secs(5)).await?;
    let took = began.elapsed();
    ensure_succeeded(&row)?;
    ensure!(
        took < Duration::from_millis(1500),
        "took {took:?} from enqueue to result with a 30 s poll interval"
    );

    // The same wake-up runs a long action; shutdown gives it back.
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
    let took = worker.stop(Duration::from_secs(5)).await?;
    ensure!(
        took >= Duration::from_millis(250),
        "stopped after {took:?}, without the grace period"
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
        ..fast_config()
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
    let next = client
        .enqueue(&request("greet:hello", json!({"name": "next"}))?)
        .await?;
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
