//! The one shared harness of the integration tests:
//!
//! * the example plugins, built once per test binary to real wasm32-wasip2
//!   components, and fresh plugin directories holding a chosen few;
//! * engines, and [`call`] to run one action in the sandbox;
//! * [`InProcess`]: a real host ([`cairn::serve::Host`], the same type
//!   `cairn serve` runs) in this process, on a test database;
//! * [`Serve`]: a real `cairn serve` child process, for tests about
//!   processes (signals, kills, several hosts) or the binary itself —
//!   with `--http` ([`Serve::start_http`]) for the operations surface, and
//!   [`http_request`], a raw HTTP/1.1 client whose every header the test
//!   controls (`Host`, `Authorization`, `Cookie`);
//! * [`request`] and [`finished`]: a row to enqueue, and waiting for its end;
//!   [`row_state`]: its status and attempts as the database has them;
//! * [`assert_clean_failure`] and [`assert_usage_error`]: how a command that
//!   fails must look (one `error:` line; exit 2 for bad input);
//! * the queries tests make of what hosts publish: [`host_registered`],
//!   [`host_keys`], [`host_ids`], and [`last_finished_claim`] (when a host
//!   last looked at the queue);
//! * [`until`], the one way tests wait, and [`SOON`], the one bound for
//!   "should happen promptly".

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn::engine::Engine;
use cairn::key::ActionKey;
use cairn::limits::Limits;
use cairn::plugin::Plugin;
use cairn::queue::{ActionResult, ActionStatus, Client, EnqueueRequest};
use cairn::reload::{PluginDir, ReloadConfig};
use cairn::sandbox::{Failure, Invocation};
use cairn::serve::{Host, ServeOptions};
use cairn::worker::WorkerConfig;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// A request for `module:name` with JSON keyword arguments.
pub fn request(key: &str, args: Value) -> Result<EnqueueRequest> {
    let args = cairn_payload::json::json_to_arguments(&args)
        .map_err(|e| anyhow!("arguments {args}: {e}"))?;
    Ok(EnqueueRequest::for_action(&ActionKey::parse(key)?).args(&args))
}

/// An environment for `from_lookup` constructors: `pairs` and nothing else.
pub fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |key| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// The output of `cairn ARGS`, run in a fresh working directory whose
/// `cairn.toml` is `toml` (so the command finds it as a user's would), with
/// the extra environment `env`.
pub fn cairn_with_config(toml: &str, env: &[(&str, &str)], args: &[&str]) -> Result<Output> {
    let cwd = tempfile::tempdir()?;
    std::fs::write(cwd.path().join("cairn.toml"), toml)?;
    Ok(cairn()
        .current_dir(cwd.path())
        .envs(env.iter().copied())
        .args(args)
        .output()?)
}

/// `cairn ARGS` run on a terminal: script(1) gives it a pty, so what it
/// draws only for a person (progress bars) shows; its stdout is the screen.
/// Arguments are single-quoted for the shell script(1) runs.
pub fn on_a_terminal(args: &[&str]) -> Result<Output> {
    let mut line = cairn().get_program().to_string_lossy().into_owned();
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    Ok(Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("CAIRN_DATABASE_URL")
        .output()?)
}

/// Enqueues `key` with JSON `args`; returns its id.
pub async fn enqueue(client: &Client, key: &str, args: Value) -> Result<i64> {
    client.enqueue(&request(key, args)?).await
}

/// Enqueues `key` due in an hour (so it stays queued); returns its id.
pub async fn enqueue_later(client: &Client, key: &str) -> Result<i64> {
    client
        .enqueue(&request(key, serde_json::json!({}))?.delay(Duration::from_secs(3600)))
        .await
}

/// Waits (at most `limit`) until row `id` is finished.
pub async fn finished(client: &Client, id: i64, limit: Duration) -> Result<ActionResult> {
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

/// Row `id`'s status and attempts, as the database has them now.
pub async fn row_state(pool: &PgPool, id: i64) -> Result<(ActionStatus, i32)> {
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM cairn.actions WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    Ok((status.parse()?, attempts))
}

/// Waits until `claims` claims, one after the other, have started after
/// `since` (database clock) and finished: see [`last_finished_claim`].
pub async fn claimed_since(pool: &PgPool, since: DateTime<Utc>, claims: usize) -> Result<()> {
    let mut after = since;
    for n in 1..=claims {
        after = until(
            &format!("claim {n} after the rows arrived"),
            SOON,
            || async { Ok(last_finished_claim(pool).await?.filter(|at| *at > after)) },
        )
        .await?;
    }
    Ok(())
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
    plugins: tempfile::TempDir,
    /// Where its `--http` server listens, if it has one.
    http: Option<SocketAddr>,
    /// Its working directory, so that whatever it keeps under `./.cairn`
    /// goes away with it.
    _cwd: tempfile::TempDir,
}

/// How a [`Serve`] child starts, beyond its plugin directory.
#[derive(Debug, Clone)]
pub struct ServeArgs<'a> {
    /// Extra `cairn serve` arguments.
    pub extra: &'a [&'a str],
    /// A `cairn.toml` to pass with `--config`.
    pub config: Option<&'a str>,
    /// How long loading the plugins and registering may take: compiling
    /// components in a debug build on a busy machine (an 18 MB Python
    /// component takes tens of seconds).
    pub load_limit: Duration,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl Default for ServeArgs<'_> {
    fn default() -> Self {
        ServeArgs {
            extra: &[],
            config: None,
            load_limit: Duration::from_secs(30),
            env: &[],
        }
    }
}

/// A directory `name` of this repository's tests under the target dir,
/// kept between runs: the target dir may be shared by several checkouts
/// (worktrees), so the name carries a hash of the repository path.
pub fn scratch(name: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    repo().hash(&mut hasher);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{:016x}", hasher.finish()))
}

/// The artifact cache every [`Serve`] child of the tests shares: each
/// component is compiled once instead of once per child (an entry is keyed
/// by the file's digest and the engine, so sharing is safe).
pub fn artifact_cache() -> PathBuf {
    scratch("cairn-test-artifacts")
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
        let args = ServeArgs {
            extra,
            ..ServeArgs::default()
        };
        Self::start_with(db, plugins, args).await
    }

    /// Starts `cairn serve --http 127.0.0.1:0` with the named example
    /// plugins and the extra environment `env` (no token, text logs and
    /// queue depth refreshed every 200 ms unless `env` says otherwise), with
    /// a 5 s shutdown grace; returns once its `/healthz` says ok.
    pub async fn start_http(db: &TestDb, plugins: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let mut all = vec![("CAIRN_METRICS_DEPTH_MS", "200")];
        all.extend_from_slice(env);
        let args = ServeArgs {
            extra: &["--http", "127.0.0.1:0", "--shutdown-grace", "5s"],
            env: &all,
            ..ServeArgs::default()
        };
        let mut serve = Self::start_with(db, plugin_dir(plugins), args).await?;
        let addr = until("cairn serve to say where its dashboard is", SOON, || {
            let log = serve.stderr_text();
            async move { Ok(dashboard_addr(&log)) }
        })
        .await
        .with_context(|| serve.stderr_text())?;
        serve.http = Some(addr);
        until("/healthz to say ok", SOON, || async {
            Ok((http_get(addr, "/healthz").await?.status == 200).then_some(()))
        })
        .await
        .with_context(|| serve.stderr_text())?;
        Ok(serve)
    }

    /// Starts `cairn serve` on the plugin directory `plugins` with `--lease
    /// 2s`, `--shutdown-grace 1s` (unless `args.extra` gives one) and
    /// `args`, in a working directory of its own and with the binary's
    /// shared [`artifact_cache`] (`CAIRN_HTTP_TOKEN` and `CAIRN_LOG_FORMAT`
    /// are not inherited); returns once the host has registered itself.
    pub async fn start_with(
        db: &TestDb,
        plugins: tempfile::TempDir,
        args: ServeArgs<'_>,
    ) -> Result<Self> {
        let cwd = tempfile::tempdir()?;
        let mut cmd = cairn();
        cmd.current_dir(cwd.path())
            .env("CAIRN_CACHE_DIR", artifact_cache())
            .arg("serve")
            .arg("--plugins")
            .arg(plugins.path())
            .args(["--database-url", &db.url]);
        for (flag, value) in [("--lease", "2s"), ("--shutdown-grace", "1s")] {
            if !args.extra.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args(args.extra)
            .env_remove("CAIRN_HTTP_TOKEN")
            .env_remove("CAIRN_LOG_FORMAT")
            .envs(args.env.iter().copied());
        if let Some(toml) = args.config {
            let file = cwd.path().join("cairn.toml");
            std::fs::write(&file, toml)?;
            cmd.arg("--config").arg(&file);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning cairn serve")?;
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
            plugins,
            http: None,
            _cwd: cwd,
        };
        let tag = format!("-{}-", serve.child.id());
        let registered = until("cairn serve to register", args.load_limit, || {
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

    /// Its plugin directory (tests drop files into it).
    pub fn plugins(&self) -> &Path {
        self.plugins.path()
    }

    /// Where its HTTP server listens (only after [`start_http`](Self::start_http)).
    pub fn addr(&self) -> SocketAddr {
        self.http.expect("started with start_http")
    }

    /// `http://ADDR` + `path`, for a browser.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
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

/// A failing command prints exactly one `error:` line and nothing that
/// looks like a panic.
pub fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line, got: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line should mention {needle:?}: {}",
        errors[0]
    );
    // The host itself never panics (a guest's own abort note may appear in
    // its captured stderr, tagged `cairn::guest`).
    let host_lines: Vec<_> = stderr
        .lines()
        .filter(|l| !l.contains("cairn::guest"))
        .collect();
    assert!(
        !host_lines
            .iter()
            .any(|l| l.contains("panicked at") || l.contains("stack backtrace")),
        "no host panic: {stderr}"
    );
}

/// A usage error: clap refused an argument, or the command found the input
/// wrong (an unknown id) before changing anything. One `error:` line, exit
/// status 2.
pub fn assert_usage_error(out: &Output, needle: &str) {
    assert_clean_failure(out, needle);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error exits 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of `wasm` with a custom section appended: the same component
/// behaviour under a different digest (a "new version" of a plugin).
pub fn with_custom_section(wasm: &[u8], payload: &str) -> Vec<u8> {
    let name = b"cairn-test";
    let mut content = Vec::new();
    // Unsigned LEB128, which is exactly protobuf's varint.
    prost::encoding::encode_varint(name.len() as u64, &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    prost::encoding::encode_varint(content.len() as u64, &mut out);
    out.extend_from_slice(&content);
    out
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

/// The address in a host's "dashboard at http://ADDR/" log line.
fn dashboard_addr(log: &str) -> Option<SocketAddr> {
    let rest = &log[log.find("dashboard at http://")? + "dashboard at http://".len()..];
    rest[..rest.find('/')?].parse().ok()
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) with exactly `headers`
/// besides `Connection` and `Content-Length`; a `Host` header naming `addr`
/// is added unless given.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<HttpResponse> {
    let mut stream = tokio::time::timeout(SOON, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out"))??;
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await?;
    let raw = tokio::time::timeout(SOON, read_response(&mut stream))
        .await
        .map_err(|_| anyhow!("{method} {path}: no complete answer within {SOON:?}"))??;
    parse_response(&raw).with_context(|| format!("{method} {path}"))
}

/// GET `path`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    http_request(addr, "GET", path, &[], None).await
}

/// Reads one response: up to its `Content-Length`, the end of its chunks,
/// or the end of the connection (some servers, chromedriver among them,
/// keep it open despite `Connection: close`).
async fn read_response(stream: &mut tokio::net::TcpStream) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        let body = raw.len() - (end + 4);
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if let Some(length) = length {
            if body >= length {
                return Ok(raw);
            }
        } else if head.contains("transfer-encoding: chunked") && text.ends_with("0\r\n\r\n") {
            return Ok(raw);
        }
    }
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).ok_or_else(|| anyhow!("short chunk"))?;
    }
}
