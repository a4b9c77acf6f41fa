//! The one shared harness of the integration tests:
//!
//! * the example plugins, built once per test binary to real wasm32-wasip2
//!   components, and fresh plugin directories holding a chosen few;
//! * engines, and [`call`] to run one action in the sandbox;
//! * [`InProcess`]: a real host ([`cairn::serve::Host`], the same type
//!   `cairn serve` runs) in this process, on a test database;
//! * [`Serve`]: a real `cairn serve` child process, for tests about
//!   processes (signals, kills, several hosts) or the binary itself;
//! * the queries tests make of what hosts publish: [`host_registered`],
//!   [`host_keys`], [`host_ids`], and [`last_finished_claim`] (when a host
//!   last looked at the queue);
//! * [`until`], the one way tests wait, and [`SOON`], the one bound for
//!   "should happen promptly".

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn::engine::Engine;
use cairn::limits::Limits;
use cairn::plugin::Plugin;
use cairn::reload::{PluginDir, ReloadConfig};
use cairn::sandbox::{Failure, Invocation};
use cairn::serve::{Host, ServeOptions};
use cairn::worker::WorkerConfig;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pg::TestDb;

/// Generous bound for anything that should take well under a second: the
/// machine may be busy with other tests (2 cores, debug build). Every test
/// uses this one value.
pub const SOON: Duration = Duration::from_secs(20);

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// Build every example plugin (once per test binary) exactly as an author
/// would: `cargo build --target wasm32-wasip2 --release`. Returns the
/// directory holding the `.wasm` files.
pub fn built_examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let examples = repo().join("examples/plugins");
        let target = examples.join("target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--release",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(&examples)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the example plugins");
        assert!(status.success(), "building the example plugins failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The built component of example plugin `name` (crate name).
pub fn wasm(name: &str) -> PathBuf {
    let path = built_examples().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "example plugin `{name}` was not built at {}",
        path.display()
    );
    path
}

/// A fresh plugin directory holding copies of the named example plugins.
pub fn plugin_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    for name in names {
        std::fs::copy(wasm(name), dir.path().join(format!("{name}.wasm")))
            .expect("copying a plugin");
    }
    dir
}

/// An engine with default limits.
pub fn engine() -> Engine {
    Engine::new(Limits::default()).expect("creating the engine")
}

/// An engine with custom limits.
pub fn engine_with(limits: Limits) -> Engine {
    Engine::new(limits).expect("creating the engine")
}

/// An invocation of attempt 1 asking for `timeout` (`None`: the action's).
pub fn invocation(timeout: Option<Duration>) -> Invocation {
    Invocation {
        action_id: "test-1".into(),
        attempt: 1,
        timeout,
    }
}

/// Call `action` of `plugin` with JSON keyword arguments, as the worker
/// would (the action's own timeout, capped by the plugin's settings).
/// `Ok(result)` is the decoded `result`, `Err` the failure.
pub async fn call(
    engine: &Engine,
    plugin: &Plugin,
    action: &str,
    args: Value,
) -> Result<Result<Value, Failure>> {
    call_with(engine, plugin, action, args, invocation(None)).await
}

/// [`call`] with a chosen invocation.
pub async fn call_with(
    engine: &Engine,
    plugin: &Plugin,
    action: &str,
    args: Value,
    invocation: Invocation,
) -> Result<Result<Value, Failure>> {
    let arguments = cairn_payload::json::json_to_arguments(&args).map_err(|e| anyhow!("{e}"))?;
    let bytes = cairn_payload::encode_arguments(&arguments);
    Ok(
        match plugin.invoke(engine, action, bytes, &invocation).await {
            Ok(payload) => {
                let json =
                    cairn_payload::json::payload_to_json(&payload).map_err(|e| anyhow!("{e}"))?;
                Ok(json
                    .get("result")
                    .cloned()
                    .ok_or_else(|| anyhow!("no result key in {json}"))?)
            }
            Err(failure) => Err(failure),
        },
    )
}

/// Whether a host with this id is registered in `cairn.hosts`.
pub async fn host_registered(pool: &PgPool, host_id: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cairn.hosts WHERE host_id = $1)")
            .bind(host_id)
            .fetch_one(pool)
            .await?,
    )
}

/// The actions host `host_id` lists in `cairn.hosts` (none if it is not
/// registered).
pub async fn host_keys(pool: &PgPool, host_id: &str) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT actions FROM cairn.hosts WHERE host_id = $1")
            .bind(host_id)
            .fetch_optional(pool)
            .await?
            .unwrap_or_default(),
    )
}

/// Every host id in `cairn.hosts`.
pub async fn host_ids(pool: &PgPool) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT host_id FROM cairn.hosts ORDER BY host_id")
            .fetch_all(pool)
            .await?,
    )
}

/// When (database clock) the latest claim statement that has *finished* on
/// this database started, as `pg_stat_activity` shows it: a host looked at
/// the queue then and took what it serves. `None` if no connection's last
/// statement is a finished claim.
///
/// Tests that check that a row is *not* claimed wait for a claim that
/// started after the row was enqueued (an observable event) instead of
/// sleeping for a few poll intervals.
pub async fn last_finished_claim(pool: &PgPool) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT max(query_start) FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'idle'
           AND query LIKE '%FROM cairn.claim(%'",
    )
    .fetch_one(pool)
    .await?)
}

/// The database's clock now.
pub async fn db_now(pool: &PgPool) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?)
}

/// Waits until a claim that started after `since` (database clock) has
/// finished: see [`last_finished_claim`].
pub async fn claimed_since(pool: &PgPool, since: DateTime<Utc>) -> Result<()> {
    until("a claim after the rows arrived", SOON, || async {
        Ok(last_finished_claim(pool)
            .await?
            .filter(|at| *at > since)
            .map(|_| ()))
    })
    .await
}

/// Worker timings short enough that a test sees its behaviour within a
/// second or two, long enough not to busy-loop the database.
pub fn fast_worker() -> WorkerConfig {
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

/// Options for an in-process host serving a fresh directory holding the
/// named example plugins (returned too: it must outlive the host), not
/// watching it, without an artifact cache, with `worker` timings.
pub fn serve_options(plugins: &[&str], worker: WorkerConfig) -> (ServeOptions, tempfile::TempDir) {
    let dir = plugin_dir(plugins);
    static N: AtomicU64 = AtomicU64::new(0);
    let options = ServeOptions {
        reload: ReloadConfig {
            watch: false,
            ..ReloadConfig::default()
        },
        worker,
        host_id: Some(format!("in-process-{}", N.fetch_add(1, Ordering::Relaxed))),
        ..ServeOptions::new(dir.path())
    };
    (options, dir)
}

/// A real host ([`Host`]) running in this process until
/// [`stop`](Self::stop)ped or dropped (then aborted).
pub struct InProcess {
    /// Its id (lease owner, `cairn.hosts` key).
    pub host_id: String,
    /// Its plugin directory as the reloader keeps it: files, loader (and
    /// its engine), registry, events.
    pub plugins: PluginDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl InProcess {
    /// Loads the named example plugins and serves them from `pool` with
    /// `worker` timings; returns once the host has registered its heartbeat.
    pub async fn start(pool: &PgPool, plugins: &[&str], worker: WorkerConfig) -> Result<Self> {
        let (host, dir) = Self::load(pool, plugins, worker).await?;
        Self::run(pool, host, Some(dir)).await
    }

    /// A host that has loaded the named example plugins (every one of them:
    /// a rejection is an error) with `worker` timings, not yet running:
    /// loading compiles the components, which can take seconds, so tests
    /// whose timing matters load, then enqueue, then [`run`](Self::run).
    pub async fn load(
        pool: &PgPool,
        plugins: &[&str],
        worker: WorkerConfig,
    ) -> Result<(Host, tempfile::TempDir)> {
        let (options, dir) = serve_options(plugins, worker);
        let host = Host::start(options, pool.clone()).await?;
        let rejected: Vec<_> = host
            .plugin_dir()
            .files()
            .into_iter()
            .filter_map(|f| f.rejected)
            .collect();
        ensure!(rejected.is_empty(), "plugins rejected: {rejected:?}");
        Ok((host, dir))
    }

    /// Runs an already started `host` (loading first, then enqueueing, then
    /// running is how tests whose timing matters begin); returns once it has
    /// registered its heartbeat. `dir` is kept alive with it.
    pub async fn run(pool: &PgPool, host: Host, dir: Option<tempfile::TempDir>) -> Result<Self> {
        let (stop, stopped) = oneshot::channel::<()>();
        let host_id = host.host_id().to_owned();
        let plugins = host.plugin_dir();
        let task = tokio::spawn(host.run(async move {
            let _ = stopped.await;
        }));
        let started = InProcess {
            host_id,
            plugins,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        until("the in-process host's heartbeat", SOON, || async {
            Ok(host_registered(pool, &started.host_id).await?.then_some(()))
        })
        .await?;
        Ok(started)
    }

    /// Signals shutdown and waits (at most `within`) for the host to
    /// return; returns how long that took.
    pub async fn stop(mut self, within: Duration) -> Result<Duration> {
        let began = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().context("host already stopped")?;
        tokio::time::timeout(within, task)
            .await
            .map_err(|_| anyhow!("the host did not stop within {within:?}"))?
            .context("the host task panicked")??;
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

/// A `cairn serve` child on a test database. Killed (SIGKILL) when dropped,
/// so a failing test leaves no host behind. Its stderr (the logs) is
/// collected as it comes.
pub struct Serve {
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
    pub async fn start(db: &TestDb, plugins: &[&str]) -> Result<Self> {
        Self::start_in(db, plugin_dir(plugins), &[]).await
    }

    /// Starts `cairn serve` on the plugin directory `plugins` with `--lease
    /// 2s --shutdown-grace 1s` (unless `extra` sets them) and `extra`
    /// arguments; returns once the host has registered itself.
    pub async fn start_in(db: &TestDb, plugins: tempfile::TempDir, extra: &[&str]) -> Result<Self> {
        let cwd = tempfile::tempdir()?;
        let mut defaults = Vec::new();
        for (flag, value) in [("--lease", "2s"), ("--shutdown-grace", "1s")] {
            if !extra.contains(&flag) {
                defaults.extend([flag, value]);
            }
        }
        let mut child = cairn()
            .current_dir(cwd.path())
            .arg("serve")
            .arg("--plugins")
            .arg(plugins.path())
            .args(["--database-url", &db.url])
            .args(&defaults)
            .args(extra)
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
            _plugins: plugins,
            _cwd: cwd,
        };
        // Loading compiles the components: slow in a debug build on a busy
        // machine.
        let limit = Duration::from_secs(30);
        let tag = format!("-{}-", serve.child.id());
        let registered = until("cairn serve to register", limit, || {
            let exited = serve.child.try_wait();
            let (tag, pool) = (&tag, &db.pool);
            async move {
                if let Some(status) = exited? {
                    bail!("cairn serve exited early ({status})");
                }
                let ids = host_ids(pool).await?;
                Ok(ids.iter().any(|id| id.contains(tag)).then_some(()))
            }
        })
        .await;
        registered.with_context(|| serve.stderr_text())?;
        Ok(serve)
    }

    /// Whether `owner` (a lease owner or host id, `hostname-PID-...`) is
    /// this child.
    pub fn is(&self, owner: &str) -> bool {
        owner.contains(&format!("-{}-", self.child.id()))
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: plain kill(2) on our own child, which we have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        ensure!(rc == 0, "kill({pid}, {signal}) failed");
        Ok(())
    }

    /// Waits (at most `limit`) for the child to exit.
    pub async fn exit_within(&mut self, limit: Duration) -> Result<ExitStatus> {
        let exited = until("cairn serve to exit", limit, || {
            let status = self.child.try_wait();
            async move { Ok(status?) }
        })
        .await;
        let status = exited.with_context(|| self.stderr_text())?;
        // The pipe closes at exit: let the reader take the last lines.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    /// Everything the child logged so far.
    pub fn stderr_text(&self) -> String {
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

/// The `cairn` binary under test.
pub fn cairn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.env_remove("CAIRN_LOG")
        .env_remove("RUST_LOG")
        .env_remove("CAIRN_PLUGINS");
    cmd
}

/// A copy of `wasm` with a custom section appended: the same component
/// behaviour under a different digest (a "new version" of a plugin).
pub fn with_custom_section(wasm: &[u8], payload: &str) -> Vec<u8> {
    let name = b"cairn-test";
    let mut content = Vec::new();
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name);
    content.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// How often [`until`] probes: often enough that tests react within a few
/// tens of milliseconds, rarely enough not to load the database.
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Polls `probe` every [`PROBE_EVERY`] until it yields a value, or fails
/// after `limit` naming `what` it waited for.
pub async fn until<T, F, Fut>(what: &str, limit: std::time::Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if std::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
