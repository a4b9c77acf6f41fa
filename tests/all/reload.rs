//! Hot reload end to end: a [`Reloader`] watching a real directory (inotify),
//! real components (the `versioned` example, whose version number the tests
//! patch into its data section), the artifact cache on disk, and — when the
//! test serves — a real [`cairn::serve::Host`] (the type `cairn serve` runs)
//! on a fresh PostgreSQL database, observed through its plugin directory.
//!
//! Every wait is bounded: a test that would hang fails naming what it
//! waited for. Files land the way operators should land them (written in a
//! staging directory, then renamed in) unless the test is about in-place
//! writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, ensure, Context, Result};
use cairn::bench::reload::{result_version, with_version};
use cairn::engine::Engine;
use cairn::key::{ActionKey, Digest};
use cairn::plugin::{ArtifactCache, LoadCounts, LoadPhase, Loader};
use cairn::queue::{ActionStatus, Client, EnqueueRequest};
use cairn::registry::{Change, ChangeKind, Registry};
use cairn::reload::{FileOutcome, PluginDir, ReloadConfig, ReloadEvent, Reloader};
use cairn::serve::{Host as ServeHost, ServeOptions};
use cairn::worker::WorkerConfig;
use chrono::{DateTime, Utc};
use sqlx::Row;
use tokio::sync::broadcast;

use crate::pg::{fresh_db, TestDb};
use crate::support::{
    cairn, claimed_since, db_now, engine, host_keys, invocation, lookup, plugin_dir, until, wasm,
    InProcess, SOON,
};

/// Bound on a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// The `versioned` plugin carrying `version`.
fn versioned(version: u32) -> Result<Vec<u8>> {
    with_version(&std::fs::read(wasm("versioned"))?, version)
}

fn digest(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

/// Reload settings for tests: the defaults, a cache of the test's own.
fn config(state: &Path) -> ReloadConfig {
    ReloadConfig::new(state)
}

/// A loader for `config`, as a host builds it: with its artifact cache.
fn loader_for(config: &ReloadConfig) -> Loader {
    Loader::new(engine()).with_cache_dir(config.cache_dir.as_deref())
}

/// A worker whose intervals let a test see its behaviour within a second;
/// the periodic heartbeat is slow on purpose, so that a test seeing the
/// served keys change quickly shows the worker announced the reload itself.
fn worker_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 16,
        poll_interval: Duration::from_millis(50),
        heartbeat_every: Duration::from_secs(120),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// Run `body` with the test time limit.
async fn bounded<F: std::future::Future<Output = Result<()>>>(body: F) -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .map_err(|_| anyhow!("test did not finish within {TEST_LIMIT:?}"))?
}

/// A watched plugin directory: either a [`Reloader`] on its own (tests of
/// the reloader), or a whole host serving it on a fresh database.
struct Host {
    dir: tempfile::TempDir,
    staging: tempfile::TempDir,
    _state: tempfile::TempDir,
    /// The directory as the reloader keeps it.
    plugins: PluginDir,
    events: broadcast::Receiver<ReloadEvent>,
    running: Running,
}

enum Running {
    /// A reloader on its own; `None` once stopped.
    Reloader(Option<Reloader>),
    /// A real host ([`cairn::serve::Host`]) serving the directory.
    Served(Served),
}

/// The database side of a serving [`Host`].
struct Served {
    db: TestDb,
    client: Client,
    host: Option<InProcess>,
}

impl Host {
    /// Start watching a directory holding `files`, with the reload settings
    /// adjusted by `tune`: a reloader alone, or (with `worker`) a host that
    /// serves it with those worker timings.
    async fn start_with(
        files: &[(&str, Vec<u8>)],
        worker: Option<WorkerConfig>,
        tune: impl FnOnce(&mut ReloadConfig),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let staging = tempfile::tempdir()?;
        let state = tempfile::tempdir()?;
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes)?;
        }
        let mut config = config(state.path());
        tune(&mut config);
        let (plugins, running) = match worker {
            None => {
                let loader = loader_for(&config);
                let registry = Arc::new(Registry::new());
                let reloader = Reloader::start(loader, registry, dir.path(), config).await?;
                (reloader.dir(), Running::Reloader(Some(reloader)))
            }
            Some(worker) => {
                static N: AtomicU64 = AtomicU64::new(0);
                let db = fresh_db().await?;
                let options = ServeOptions {
                    reload: config,
                    worker,
                    host_id: Some(format!("reload-test-{}", N.fetch_add(1, Ordering::Relaxed))),
                    ..ServeOptions::new(dir.path())
                };
                let host = ServeHost::start(options, db.pool.clone()).await?;
                let host = InProcess::run(&db.pool, host, None).await?;
                let client = Client::new(db.pool.clone());
                (
                    host.plugins.clone(),
                    Running::Served(Served {
                        db,
                        client,
                        host: Some(host),
                    }),
                )
            }
        };
        ensure!(
            plugins.loader().cache().is_some(),
            "the test cache did not open"
        );
        let events = plugins.subscribe();
        Ok(Host {
            dir,
            staging,
            _state: state,
            plugins,
            events,
            running,
        })
    }

    /// A reloader alone, or a serving host (`serve`) with [`worker_config`].
    async fn start(files: &[(&str, Vec<u8>)], serve: bool) -> Result<Self> {
        Self::start_with(files, serve.then(worker_config), |_| {}).await
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn registry(&self) -> &Arc<Registry> {
        self.plugins.registry()
    }

    fn served(&self) -> &Served {
        match &self.running {
            Running::Served(served) => served,
            Running::Reloader(_) => panic!("started without serving"),
        }
    }

    /// Write `bytes` in the staging directory, then rename them in as
    /// `name` (atomic: the recommended way).
    fn land(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let staged = self.staging.path().join(name);
        std::fs::write(&staged, bytes)?;
        std::fs::rename(&staged, self.path(name))?;
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        Ok(std::fs::remove_file(self.path(name))?)
    }

    /// The next event for file `name` that `pick` accepts (others are
    /// skipped), within [`SOON`].
    async fn next<T>(
        &mut self,
        name: &str,
        what: &str,
        mut pick: impl FnMut(&FileOutcome) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + SOON;
        let path = self.path(name);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| anyhow!("no {what} event for `{name}` within {SOON:?}"))??;
            if event.file == path {
                if let Some(found) = pick(&event.outcome) {
                    return Ok(found);
                }
            }
        }
    }

    /// Wait until `name` serves the content with `digest`.
    async fn applied(&mut self, name: &str, digest: &Digest) -> Result<Change> {
        self.next(name, "applied", |o| match o {
            FileOutcome::Applied(c) if c.new_digest.as_ref() == Some(digest) => Some(c.clone()),
            _ => None,
        })
        .await
    }

    /// Wait until `name` is removed from the registry.
    async fn removed(&mut self, name: &str) -> Result<Change> {
        self.next(name, "removal", |o| match o {
            FileOutcome::Applied(c) if c.new_digest.is_none() => Some(c.clone()),
            _ => None,
        })
        .await
    }

    /// Wait until `name`'s latest content is refused; returns the phase, the
    /// message and the digest that keeps serving.
    async fn rejected(&mut self, name: &str) -> Result<(LoadPhase, String, Option<Digest>)> {
        self.next(name, "rejection", |o| match o {
            FileOutcome::Rejected { error, serving, .. } => {
                Some((error.phase, error.to_string(), *serving))
            }
            FileOutcome::Applied(c) => panic!("expected a rejection, got {c:?}"),
            _ => None,
        })
        .await
    }

    /// The digest and file serving `module:name`, if any.
    fn serving(&self, key: &str) -> Option<(Digest, String)> {
        let key = ActionKey::parse(key).expect("module:name");
        self.registry()
            .get(&key.module, &key.name)
            .map(|h| (h.plugin.digest, h.plugin.file_name()))
    }

    /// Run `versioned:version` on whatever the registry serves now, without
    /// the queue.
    async fn invoke_version(&self) -> Result<u32> {
        let handler = self
            .registry()
            .get("versioned", "version")
            .context("versioned:version is not served")?;
        invoke_version(self.plugins.loader().engine(), &handler.plugin).await
    }

    async fn stop(mut self) -> Result<()> {
        match &mut self.running {
            Running::Reloader(reloader) => {
                if let Some(reloader) = reloader.take() {
                    reloader.stop().await;
                }
            }
            Running::Served(served) => {
                if let Some(host) = served.host.take() {
                    host.stop(SOON).await?;
                }
            }
        }
        Ok(())
    }
}

/// Run `versioned:version` of `plugin` directly, returning its version.
async fn invoke_version(engine: &Engine, plugin: &cairn::plugin::Plugin) -> Result<u32> {
    let out = plugin
        .invoke(engine, "version", Vec::new(), &invocation(None))
        .await
        .map_err(|f| anyhow!("invoke failed: {f}"))?;
    result_version(&out)
}

impl Served {
    /// Enqueue `versioned:<action>` with JSON keyword arguments.
    async fn enqueue(&self, action: &str, args: serde_json::Value) -> Result<i64> {
        let args = cairn_payload::json::json_to_arguments(&args).map_err(|e| anyhow!("{e}"))?;
        self.client
            .enqueue(&EnqueueRequest::new("versioned", action).args(&args))
            .await
    }

    /// Wait (within [`SOON`]) for row `id` to succeed; returns (version,
    /// attempts).
    async fn version_of(&self, id: i64) -> Result<(u32, u32)> {
        self.version_within(id, SOON).await
    }

    /// [`version_of`](Self::version_of), waiting at most `limit`.
    async fn version_within(&self, id: i64, limit: Duration) -> Result<(u32, u32)> {
        let row = self.client.wait(id, limit).await?;
        ensure!(
            row.status == ActionStatus::Succeeded,
            "row {id} is {} after {} attempt(s)",
            row.status,
            row.attempts
        );
        Ok((
            result_version(row.result.as_deref().unwrap_or_default())?,
            row.attempts,
        ))
    }

    async fn status(&self, id: i64) -> Result<(ActionStatus, u32)> {
        let row = self.client.result(id).await?.context("row vanished")?;
        Ok((row.status, row.attempts))
    }

    /// The keys this host's heartbeat row lists.
    async fn host_keys(&self) -> Result<Vec<String>> {
        let host = self.host.as_ref().context("the host stopped")?;
        host_keys(&self.db.pool, &host.host_id).await
    }
}

// ---------------------------------------------------------------------------
// The versioned fixture
// ---------------------------------------------------------------------------

#[tokio::test]
async fn patched_versioned_plugin_returns_the_patched_version() -> Result<()> {
    bounded(async {
        let template = std::fs::read(wasm("versioned"))?;
        let v7 = with_version(&template, 7)?;
        ensure!(v7.len() == template.len() && digest(&v7) != digest(&template));
        ensure!(
            with_version(&v7, 1)? == template,
            "patching is not reversible"
        );
        ensure!(with_version(b"no marker here", 1).is_err());
        let host = Host::start(&[("versioned.wasm", v7)], false).await?;
        ensure!(
            host.invoke_version().await? == 7,
            "the patch did not change the result"
        );
        host.stop().await
    })
    .await
}

// ---------------------------------------------------------------------------
// Adding, replacing, removing while serving
// ---------------------------------------------------------------------------

#[tokio::test]
async fn plugin_added_while_serving_runs_its_waiting_action() -> Result<()> {
    bounded(async {
        // greet gives the worker something to claim, so that it looks at
        // the queue (an event the test can see) and leaves the row.
        let mut host = Host::start(&[("greet.wasm", std::fs::read(wasm("greet"))?)], true).await?;
        let served = host.served();
        let id = served.enqueue("version", serde_json::json!({})).await?;
        claimed_since(&served.db.pool, db_now(&served.db.pool).await?, 5).await?;
        ensure!(
            served.status(id).await? == (ActionStatus::Queued, 0),
            "a row for an action nobody serves must stay queued"
        );

        let v3 = versioned(3)?;
        host.land("versioned.wasm", &v3)?;
        let change = host.applied("versioned.wasm", &digest(&v3)).await?;
        ensure!(
            change.added == ["versioned:slow_version", "versioned:version"]
                && change.old_digest.is_none(),
            "{change:?}"
        );
        ensure!(host.served().version_of(id).await? == (3, 1));
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn the_worker_announces_a_reload_at_once_by_heartbeat_and_notification() -> Result<()> {
    bounded(async {
        // The periodic heartbeat and the poll are both far longer than the
        // test waits: only the worker's own announcement of the reload can
        // list the new keys and wake a claim loop in time.
        let slow = WorkerConfig {
            poll_interval: Duration::from_secs(120),
            heartbeat_every: Duration::from_secs(120),
            ..worker_config()
        };
        let mut host = Host::start_with(&[], Some(slow), |_| {}).await?;
        let served = host.served();
        // Enqueued (and its trigger's notification sent) before the test
        // listens: what the listener hears next is the announcement.
        let id = served.enqueue("version", serde_json::json!({})).await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&served.db.pool).await?;
        listener
            .listen(cairn::queue::notify::ACTIONS_CHANNEL)
            .await?;

        let v3 = versioned(3)?;
        host.land("versioned.wasm", &v3)?;
        host.applied("versioned.wasm", &digest(&v3)).await?;
        let served = host.served();
        let keys = ["versioned:slow_version", "versioned:version"];
        until("the heartbeat to list the new keys", SOON, || async {
            let listed = served.host_keys().await?;
            Ok(keys
                .iter()
                .all(|k| listed.iter().any(|l| l == k))
                .then_some(()))
        })
        .await?;
        let notification = tokio::time::timeout(SOON, listener.recv())
            .await
            .context("no notification of the reload")??;
        let mut announced: Vec<&str> = notification.payload().split(',').collect();
        announced.sort_unstable();
        ensure!(announced == keys, "notified {:?}", notification.payload());
        // The same notification woke this host's claim loop.
        ensure!(served.version_of(id).await? == (3, 1));
        host.stop().await
    })
    .await
}

/// The load test: 2,000 actions enqueued while the file is replaced
/// 20 times. Every action completes exactly once, on its first attempt, and
/// returns a version that was live when its row was claimed.
#[tokio::test]
async fn replacing_under_load_runs_every_action_once_on_a_version_live_at_claim() -> Result<()> {
    const ACTIONS: usize = 2_000;
    const BATCH: usize = 20;
    const REPLACEMENTS: u32 = 20;
    bounded(async {
        let mut host = Host::start(&[("versioned.wasm", versioned(1)?)], true).await?;
        let pool = host.served().db.pool.clone();

        // Enqueue in small paced batches while the swaps happen, keeping
        // pace with them (an equal share of the rows per version) so that
        // every version meets load, whatever the machine's compile speed.
        let client = host.served().client.clone();
        let (swapped, mut swaps) = tokio::sync::watch::channel(0usize);
        let enqueuer = tokio::spawn(async move {
            let versions = REPLACEMENTS as usize + 1;
            let mut ids = Vec::with_capacity(ACTIONS);
            while ids.len() < ACTIONS {
                let quota = ACTIONS * (*swaps.borrow() + 1) / versions;
                if ids.len() >= quota {
                    swaps.changed().await?;
                    continue;
                }
                let batch: Vec<_> = (0..BATCH)
                    .map(|_| EnqueueRequest::new("versioned", "version"))
                    .collect();
                ids.extend(client.enqueue_many(&batch).await?);
                // Pacing, not synchronisation: the load arrives as a stream
                // of small batches, as it would from clients.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(ids)
        });

        // Version 1 has served since before the test's clock started.
        let mut live_from: BTreeMap<u32, SystemTime> = BTreeMap::new();
        live_from.insert(1, SystemTime::UNIX_EPOCH);
        for version in 2..=REPLACEMENTS + 1 {
            let bytes = versioned(version)?;
            host.land("versioned.wasm", &bytes)?;
            let change = host.applied("versioned.wasm", &digest(&bytes)).await?;
            ensure!(
                change.replaced == ["versioned:slow_version", "versioned:version"],
                "{change:?}"
            );
            live_from.insert(version, change.at);
            swapped.send_replace(version as usize - 1);
        }
        let ids = enqueuer.await??;
        ensure!(ids.len() == ACTIONS);

        until("every row to finish", Duration::from_secs(120), || async {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM cairn.actions WHERE status IN ('succeeded', 'failed', 'cancelled')",
            )
            .fetch_one(&pool)
            .await?;
            Ok((done as usize >= ACTIONS).then_some(()))
        })
        .await?;

        let rows = sqlx::query(
            "SELECT id, status, attempts, started_at, result FROM cairn.actions ORDER BY id",
        )
        .fetch_all(&pool)
        .await?;
        ensure!(rows.len() == ACTIONS, "{} rows", rows.len());
        let until_of = |v: u32| live_from.get(&(v + 1)).copied();
        // The worker snapshots the registry, then claims; the claim's
        // transaction stamps `started_at`. So `started_at` is never before
        // the version went live (checked exactly), and trails the snapshot
        // by the pool wait plus a round trip, which a loaded machine can
        // stretch: allow that much after a version was replaced.
        let slack = chrono::Duration::milliseconds(1000);
        let mut per_version: BTreeMap<u32, usize> = BTreeMap::new();
        let mut worst_gap: Option<chrono::Duration> = None;
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            let attempts: i32 = row.try_get("attempts")?;
            ensure!(
                status == "succeeded" && attempts == 1,
                "row {id}: {status} after {attempts} attempts"
            );
            let started: DateTime<Utc> = row.try_get("started_at")?;
            let result: Vec<u8> = row.try_get("result")?;
            let version = result_version(&result)?;
            let from: DateTime<Utc> = (*live_from
                .get(&version)
                .with_context(|| format!("row {id} ran unknown version {version}"))?)
            .into();
            ensure!(
                started >= from - chrono::Duration::milliseconds(1),
                "row {id} was claimed at {started} but returned version {version}, live only from {from}"
            );
            if let Some(to) = until_of(version) {
                let to: DateTime<Utc> = to.into();
                worst_gap = worst_gap.max(Some(started - to));
                ensure!(
                    started <= to + slack,
                    "row {id} was claimed at {started} but returned version {version}, replaced at {to}"
                );
            }
            *per_version.entry(version).or_default() += 1;
        }
        ensure!(
            per_version.len() >= 10,
            "the swaps did not overlap the load: rows per version {per_version:?}"
        );
        eprintln!(
            "rows per version: {per_version:?}; latest claim relative to its version's replacement: {:?} ms",
            worst_gap.map(|g| g.num_milliseconds())
        );
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn bad_replacement_is_rejected_and_the_previous_version_keeps_serving() -> Result<()> {
    bounded(async {
        let v1 = versioned(1)?;
        let mut host = Host::start(&[("versioned.wasm", v1.clone())], true).await?;
        let good = digest(&v1);
        let stranger = std::fs::read(wasm("stranger"))?;
        // An empty component: valid, but not the cairn world.
        let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
        let core_module = b"\0asm\x01\0\0\0".to_vec();
        let cases: [(&str, Vec<u8>, LoadPhase, &str); 4] = [
            (
                "not wasm",
                b"#!/bin/sh\necho hi\n".to_vec(),
                LoadPhase::Validate,
                "not a WebAssembly file",
            ),
            (
                "core module",
                core_module,
                LoadPhase::Validate,
                "not a component",
            ),
            (
                "wrong world",
                empty_component,
                LoadPhase::Validate,
                "does not export `cairn:plugin/plugin",
            ),
            (
                "refused import",
                stranger,
                LoadPhase::Validate,
                "evil:extra/telepathy",
            ),
        ];
        for (what, bytes, phase, why) in cases {
            host.land("versioned.wasm", &bytes)?;
            let (got_phase, message, serving) = host.rejected("versioned.wasm").await?;
            ensure!(
                got_phase == phase && message.contains(why) && message.contains("versioned.wasm"),
                "{what}: {got_phase}: {message}"
            );
            ensure!(serving == Some(good), "{what}: serving {serving:?}");
            ensure!(
                host.serving("versioned:version").map(|s| s.0) == Some(good),
                "{what}: the registry changed"
            );
            let status = host.plugins.files();
            let file = status
                .iter()
                .find(|f| f.file == host.path("versioned.wasm"))
                .context("no status")?;
            let rejection = file.rejected.as_ref().context("rejection not reported")?;
            ensure!(
                rejection.error.message.contains(why) && !rejection.waiting,
                "{what}: {rejection:?}"
            );
            ensure!(file.serving.as_ref().map(|p| p.digest) == Some(good));
            let id = host
                .served()
                .enqueue("version", serde_json::json!({}))
                .await?;
            ensure!(
                host.served().version_of(id).await? == (1, 1),
                "{what}: old version not serving"
            );

            // `cairn plugins` loads the directory itself and shows why.
            let out = cairn()
                .arg("plugins")
                .arg("--plugins")
                .arg(host.dir.path())
                .output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            ensure!(
                stdout.contains("REJECTED versioned.wasm: (validate)") && stdout.contains(why),
                "{what}: cairn plugins printed:\n{stdout}"
            );
        }

        // A good version after the bad ones swaps in and clears the report.
        let v2 = versioned(2)?;
        host.land("versioned.wasm", &v2)?;
        let change = host.applied("versioned.wasm", &digest(&v2)).await?;
        ensure!(change.old_digest == Some(good), "{change:?}");
        ensure!(host.plugins.files().iter().all(|f| f.rejected.is_none()));
        let id = host
            .served()
            .enqueue("version", serde_json::json!({}))
            .await?;
        ensure!(host.served().version_of(id).await? == (2, 1));
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn removed_plugin_leaves_its_rows_queued_until_it_is_added_again() -> Result<()> {
    bounded(async {
        // greet stays, so the worker keeps claiming (an event the test can
        // see) after versioned is gone.
        let greet = std::fs::read(wasm("greet"))?;
        let mut host = Host::start(
            &[("versioned.wasm", versioned(1)?), ("greet.wasm", greet)],
            true,
        )
        .await?;
        host.remove("versioned.wasm")?;
        let change = host.removed("versioned.wasm").await?;
        ensure!(
            change.removed == ["versioned:slow_version", "versioned:version"],
            "{change:?}"
        );
        ensure!(host.registry().names() == ["greet:hello"]);
        ensure!(
            host.plugins
                .files()
                .iter()
                .all(|f| f.file != host.path("versioned.wasm")),
            "a removed file is forgotten"
        );
        let served = host.served();
        until("the heartbeat to drop versioned:version", SOON, || async {
            Ok((served.host_keys().await? == ["greet:hello"]).then_some(()))
        })
        .await?;

        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(served.enqueue("version", serde_json::json!({})).await?);
        }
        // The worker looks at the queue five times after they arrived: it
        // claims none of them, and nothing fails them.
        claimed_since(&served.db.pool, db_now(&served.db.pool).await?, 5).await?;
        for &id in &ids {
            ensure!(
                served.status(id).await? == (ActionStatus::Queued, 0),
                "row {id}"
            );
        }

        let v2 = versioned(2)?;
        host.land("versioned.wasm", &v2)?;
        host.applied("versioned.wasm", &digest(&v2)).await?;
        for &id in &ids {
            ensure!(host.served().version_of(id).await? == (2, 1), "row {id}");
        }
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn in_flight_action_finishes_on_the_version_it_started_on() -> Result<()> {
    bounded(async {
        let mut host = Host::start(&[("versioned.wasm", versioned(1)?)], true).await?;
        // Slow enough to outlast the swap and a fresh row even when a busy
        // machine takes many seconds to compile v2 (8 s was not, once).
        let nap = Duration::from_secs(25);
        let args = cairn_payload::json::json_to_arguments(&serde_json::json!({
            "ms": nap.as_millis() as u64
        }))
        .map_err(|e| anyhow!("{e}"))?;
        let slow = host
            .served()
            .client
            .enqueue(
                &EnqueueRequest::new("versioned", "slow_version")
                    .args(&args)
                    .timeout(nap * 2),
            )
            .await?;
        let served = host.served();
        until("the slow row to run", SOON, || async {
            Ok((served.status(slow).await?.0 == ActionStatus::Running).then_some(()))
        })
        .await?;

        let v2 = versioned(2)?;
        host.land("versioned.wasm", &v2)?;
        host.applied("versioned.wasm", &digest(&v2)).await?;
        let fresh = host
            .served()
            .enqueue("version", serde_json::json!({}))
            .await?;
        ensure!(
            host.served().version_of(fresh).await? == (2, 1),
            "new claims run v2"
        );
        ensure!(
            host.served().status(slow).await?.0 == ActionStatus::Running,
            "the slow row should still be running on v1 (make it slower?)"
        );
        ensure!(
            host.served().version_within(slow, nap + SOON).await? == (1, 1),
            "the in-flight row must finish on v1"
        );
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn touching_a_plugin_does_not_reload_it() -> Result<()> {
    bounded(async {
        let v1 = versioned(1)?;
        let mut host = Host::start(&[("versioned.wasm", v1.clone())], false).await?;
        let before = host
            .registry()
            .get("versioned", "version")
            .context("not served")?;
        let compiled = host.plugins.loader().counts().compiled;

        let file = std::fs::File::options()
            .write(true)
            .open(host.path("versioned.wasm"))?;
        file.set_modified(SystemTime::now() + Duration::from_secs(5))?;
        drop(file);
        let unchanged = host
            .next("versioned.wasm", "unchanged", |o| match o {
                FileOutcome::Unchanged { digest } => Some(*digest),
                FileOutcome::Applied(c) => panic!("a touch reloaded: {c:?}"),
                _ => None,
            })
            .await?;
        ensure!(unchanged == digest(&v1));
        // Identical bytes renamed in: also no reload.
        host.land("versioned.wasm", &v1)?;
        host.next("versioned.wasm", "unchanged", |o| match o {
            FileOutcome::Unchanged { .. } => Some(()),
            FileOutcome::Applied(c) => panic!("identical bytes reloaded: {c:?}"),
            _ => None,
        })
        .await?;

        let after = host
            .registry()
            .get("versioned", "version")
            .context("not served")?;
        ensure!(Arc::ptr_eq(&before, &after), "the handler was replaced");
        ensure!(host.plugins.loader().counts().compiled == compiled);
        host.stop().await
    })
    .await
}

// ---------------------------------------------------------------------------
// Partial files
// ---------------------------------------------------------------------------

/// Write `bytes` into `path` in place, in `chunks` pieces with `pause`
/// between them (a slow writer), on a blocking thread. The pauses are the
/// behaviour under test, not synchronisation.
async fn write_slowly(path: PathBuf, bytes: Vec<u8>, chunks: usize, pause: Duration) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        let size = bytes.len().div_ceil(chunks);
        for chunk in bytes.chunks(size) {
            file.write_all(chunk)?;
            file.flush()?;
            std::thread::sleep(pause);
        }
        anyhow::Ok(())
    })
    .await?
}

/// Collect the events for `name` until it serves `digest`; fail if any of
/// them was a rejection (a partial file was loaded).
async fn applied_without_rejection(host: &mut Host, name: &str, digest: &Digest) -> Result<()> {
    let mut rejections = Vec::new();
    host.next(name, "applied", |o| match o {
        FileOutcome::Applied(c) if c.new_digest.as_ref() == Some(digest) => Some(()),
        FileOutcome::Rejected { error, .. } => {
            rejections.push(error.to_string());
            None
        }
        _ => None,
    })
    .await?;
    ensure!(
        rejections.is_empty(),
        "a partial file was loaded: {rejections:?}"
    );
    Ok(())
}

#[tokio::test]
async fn file_written_in_place_in_bursts_is_loaded_once_complete() -> Result<()> {
    bounded(async {
        // Pauses well inside the quiet period: one load, of the whole file.
        let mut host =
            Host::start_with(&[], None, |c| c.quiet = Duration::from_millis(400)).await?;
        let v5 = versioned(5)?;
        write_slowly(
            host.path("versioned.wasm"),
            v5.clone(),
            10,
            Duration::from_millis(10),
        )
        .await?;
        applied_without_rejection(&mut host, "versioned.wasm", &digest(&v5)).await?;
        ensure!(
            host.plugins.loader().counts().compiled == 1,
            "loaded more than once"
        );
        ensure!(host.invoke_version().await? == 5);
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn file_that_changes_during_the_settle_interval_is_read_again() -> Result<()> {
    bounded(async {
        // The writer pauses longer than the quiet period but shorter than
        // the settle interval: the first read is partial, the stat check
        // after settling sees the change, and the file is read again.
        let mut host = Host::start_with(&[], None, |c| {
            c.quiet = Duration::from_millis(30);
            c.settle = Duration::from_millis(600);
        })
        .await?;
        let v6 = versioned(6)?;
        write_slowly(
            host.path("versioned.wasm"),
            v6.clone(),
            2,
            Duration::from_millis(200),
        )
        .await?;
        applied_without_rejection(&mut host, "versioned.wasm", &digest(&v6)).await?;
        ensure!(host.invoke_version().await? == 6);
        host.stop().await
    })
    .await
}

// ---------------------------------------------------------------------------
// Moving an action between files
// ---------------------------------------------------------------------------

#[tokio::test]
async fn moving_an_action_by_remove_then_add_serves_it_from_the_new_file() -> Result<()> {
    bounded(async {
        let mut host = Host::start(&[("a.wasm", versioned(1)?)], false).await?;
        host.remove("a.wasm")?;
        host.removed("a.wasm").await?;
        ensure!(host.serving("versioned:version").is_none());
        let v2 = versioned(2)?;
        host.land("b.wasm", &v2)?;
        let change = host.applied("b.wasm", &digest(&v2)).await?;
        ensure!(change.added.len() == 2, "{change:?}");
        ensure!(host.serving("versioned:version") == Some((digest(&v2), "b.wasm".into())));
        ensure!(host.invoke_version().await? == 2);
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn moving_an_action_by_add_then_remove_waits_then_serves_it_from_the_new_file() -> Result<()>
{
    bounded(async {
        let v1 = versioned(1)?;
        let mut host = Host::start(&[("a.wasm", v1.clone())], false).await?;
        let v2 = versioned(2)?;
        host.land("b.wasm", &v2)?;
        let (phase, message, _) = host.rejected("b.wasm").await?;
        ensure!(
            phase == LoadPhase::Register
                && message.contains("a.wasm")
                && message.contains("`versioned:"),
            "{phase}: {message}"
        );
        ensure!(host.serving("versioned:version") == Some((digest(&v1), "a.wasm".into())));
        let waiting = host.plugins.files();
        let b = waiting
            .iter()
            .find(|f| f.file == host.path("b.wasm"))
            .context("b unknown")?;
        ensure!(b.rejected.as_ref().is_some_and(|r| r.waiting), "{b:?}");

        host.remove("a.wasm")?;
        host.removed("a.wasm").await?;
        // b is retried because another file went away.
        host.applied("b.wasm", &digest(&v2)).await?;
        ensure!(host.serving("versioned:version") == Some((digest(&v2), "b.wasm".into())));
        ensure!(host.plugins.files().iter().all(|f| f.rejected.is_none()));
        ensure!(host.invoke_version().await? == 2);
        host.stop().await
    })
    .await
}

#[tokio::test]
async fn renaming_a_plugin_file_moves_its_actions_to_the_new_name() -> Result<()> {
    bounded(async {
        let v1 = versioned(1)?;
        let host = Host::start(&[("a.wasm", v1.clone())], false).await?;
        std::fs::rename(host.path("a.wasm"), host.path("b.wasm"))?;
        until("b.wasm to own the actions", SOON, || async {
            Ok(
                (host.serving("versioned:version") == Some((digest(&v1), "b.wasm".into())))
                    .then_some(()),
            )
        })
        .await?;
        ensure!(host.registry().names().len() == 2);
        // Same digest: the artifact came from the cache.
        ensure!(
            host.plugins.loader().counts().compiled == 1,
            "{:?}",
            host.plugins.loader().counts()
        );
        host.stop().await
    })
    .await
}

// ---------------------------------------------------------------------------
// The artifact cache
// ---------------------------------------------------------------------------

/// Load `dir` once without watching, with the cache under `state`; return
/// the counts and the registry.
async fn load_once(dir: &Path, state: &Path) -> Result<(LoadCounts, Arc<Registry>, Loader)> {
    let config = ReloadConfig {
        watch: false,
        ..config(state)
    };
    let loader = loader_for(&config);
    ensure!(loader.cache().is_some(), "the cache did not open");
    let registry = Arc::new(Registry::new());
    let reloader = Reloader::start(loader.clone(), registry.clone(), dir, config).await?;
    ensure!(
        reloader.files().iter().all(|f| f.rejected.is_none()),
        "rejected: {:?}",
        reloader.files()
    );
    reloader.stop().await;
    Ok((loader.counts(), registry, loader))
}

#[tokio::test]
async fn restart_with_a_warm_cache_loads_without_compiling() -> Result<()> {
    bounded(async {
        let plugins = plugin_dir(&["greet", "math", "noop"]);
        std::fs::write(plugins.path().join("versioned.wasm"), versioned(4)?)?;
        let state = tempfile::tempdir()?;

        let (cold, first, _) = load_once(plugins.path(), state.path()).await?;
        ensure!(
            cold == LoadCounts {
                compiled: 4,
                cache_hits: 0,
                cache_discarded: 0
            },
            "first start: {cold:?}"
        );
        // A new engine and loader: what a restarted host has.
        let (warm, second, loader) = load_once(plugins.path(), state.path()).await?;
        ensure!(
            warm == LoadCounts {
                compiled: 0,
                cache_hits: 4,
                cache_discarded: 0
            },
            "restart: {warm:?}"
        );
        ensure!(first.names() == second.names());
        let handler = second.get("versioned", "version").context("not served")?;
        ensure!(
            invoke_version(loader.engine(), &handler.plugin).await? == 4,
            "the cached artifact runs the right code"
        );

        // The layout: <state>/cache/<engine hash>/<digest>.cwasm, private.
        use std::os::unix::fs::PermissionsExt;
        let cache = loader.cache().context("no cache")?;
        ensure!(cache.dir().parent() == Some(state.path().join("cache").as_path()));
        for dir in [state.path().join("cache"), cache.dir().to_owned()] {
            let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
            ensure!(mode == 0o700, "{} has mode {mode:o}", dir.display());
        }
        let entry = cache.entry(&handler.plugin.digest);
        ensure!(entry.is_file(), "no {}", entry.display());
        let entries = std::fs::read_dir(cache.dir())?.count();
        ensure!(
            entries == 4,
            "{entries} entries (temporary files left behind?)"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn corrupt_cache_entry_is_deleted_and_recompiled() -> Result<()> {
    bounded(async {
        let plugins = plugin_dir(&["greet"]);
        let state = tempfile::tempdir()?;
        let (_, registry, loader) = load_once(plugins.path(), state.path()).await?;
        let digest = registry
            .get("greet", "hello")
            .context("not served")?
            .plugin
            .digest;
        let entry = loader.cache().context("no cache")?.entry(&digest);
        std::fs::write(&entry, b"not an artifact")?;

        let (counts, registry, _) = load_once(plugins.path(), state.path()).await?;
        ensure!(
            counts
                == LoadCounts {
                    compiled: 1,
                    cache_hits: 0,
                    cache_discarded: 1
                },
            "{counts:?}"
        );
        ensure!(registry.get("greet", "hello").is_some());
        // Rewritten: the next start hits it.
        let (counts, ..) = load_once(plugins.path(), state.path()).await?;
        ensure!(counts.cache_hits == 1 && counts.compiled == 0, "{counts:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn cache_directory_other_users_can_reach_is_not_used() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir()?;
    let root = state.path().join("cache");
    std::fs::create_dir(&root)?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    let engine = engine();
    let err = ArtifactCache::open(&root, engine.wasmtime())
        .err()
        .context("a cache others can reach was opened")?;
    ensure!(
        format!("{err:#}").contains("accessible to other users"),
        "{err:#}"
    );
    let loader = Loader::new(engine).with_cache_dir(config(state.path()).cache_dir.as_deref());
    ensure!(
        loader.cache().is_none(),
        "the host must fall back to compiling"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The registry's per-file operation
// ---------------------------------------------------------------------------

/// The `versioned` plugin carrying `version`, loaded as if from file `name`.
async fn load_versioned(
    engine: &Engine,
    name: &str,
    version: u32,
) -> Result<Arc<cairn::plugin::Plugin>> {
    Ok(Arc::new(
        cairn::plugin::load_bytes(engine, Path::new(name), versioned(version)?).await?,
    ))
}

#[tokio::test]
async fn replace_file_refuses_another_files_key_and_changes_nothing() -> Result<()> {
    bounded(async {
        let engine = engine();
        let registry = Registry::new();
        let a1 = load_versioned(&engine, "a.wasm", 1).await?;
        registry.replace_file(Path::new("a.wasm"), a1.clone())?;
        let before = registry.snapshot();

        let b2 = load_versioned(&engine, "b.wasm", 2).await?;
        let conflict = registry
            .replace_file(Path::new("b.wasm"), b2.clone())
            .err()
            .context("b.wasm took a.wasm's key")?;
        ensure!(conflict.existing_file == "a.wasm" && conflict.new_file == "b.wasm");
        ensure!(
            registry.snapshot().generation() == before.generation(),
            "a refused replacement changed the registry"
        );
        ensure!(
            registry
                .get("versioned", "version")
                .context("gone")?
                .plugin
                .digest
                == a1.digest
        );

        // Keys registered through the static API are owned the same way.
        let registry = Registry::new();
        registry.register_plugin(a1)?;
        ensure!(registry.replace_file(Path::new("b.wasm"), b2).is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_identical_copy_in_another_file_shares_the_keys_instead_of_conflicting() -> Result<()> {
    bounded(async {
        let engine = engine();
        let registry = Registry::new();
        registry.replace_file(
            Path::new("a.wasm"),
            load_versioned(&engine, "a.wasm", 1).await?,
        )?;
        let b1 = load_versioned(&engine, "b.wasm", 1).await?;
        let change = registry.replace_file(Path::new("b.wasm"), b1)?;
        ensure!(change.is_empty() && change.shared.len() == 2, "{change:?}");
        ensure!(
            registry
                .get("versioned", "version")
                .context("gone")?
                .plugin
                .file
                == Path::new("a.wasm"),
            "the first file keeps the keys"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn replace_file_and_remove_file_report_what_changed() -> Result<()> {
    bounded(async {
        let engine = engine();
        let registry = Registry::new();
        let a1 = load_versioned(&engine, "a.wasm", 1).await?;
        let change = registry.replace_file(Path::new("a.wasm"), a1.clone())?;
        ensure!(
            change.kind() == ChangeKind::Added && change.added.len() == 2,
            "{change:?}"
        );
        let a3 = load_versioned(&engine, "a.wasm", 3).await?;
        let change = registry.replace_file(Path::new("a.wasm"), a3.clone())?;
        ensure!(
            change.kind() == ChangeKind::Replaced
                && change.replaced.len() == 2
                && change.old_digest == Some(a1.digest)
                && change.new_digest == Some(a3.digest),
            "{change:?}"
        );
        let change = registry.remove_file(Path::new("a.wasm"));
        ensure!(
            change.kind() == ChangeKind::Removed
                && change.removed.len() == 2
                && change.old_digest == Some(a3.digest),
            "{change:?}"
        );
        ensure!(registry.names().is_empty());
        Ok(())
    })
    .await
}

#[test]
fn reload_config_reads_its_variables_and_refuses_bad_values() -> Result<()> {
    let state = Path::new("/state");
    let default = ReloadConfig::from_lookup(state, lookup(&[]))?;
    ensure!(default == ReloadConfig::new(state));
    ensure!(default.cache_dir.as_deref() == Some(Path::new("/state/cache")));
    let tuned = ReloadConfig::from_lookup(
        state,
        lookup(&[
            ("CAIRN_RELOAD_QUIET_MS", "250"),
            ("CAIRN_RELOAD_SETTLE_MS", "10"),
            ("CAIRN_RELOAD_RESCAN_MS", "0"),
            ("CAIRN_CACHE_DIR", "off"),
        ]),
    )?;
    ensure!(tuned.quiet == Duration::from_millis(250) && tuned.settle == Duration::from_millis(10));
    ensure!(tuned.rescan_every.is_none() && tuned.cache_dir.is_none());
    let bad = ReloadConfig::from_lookup(state, lookup(&[("CAIRN_RELOAD_QUIET_MS", "soon")]));
    ensure!(
        bad.as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("CAIRN_RELOAD_QUIET_MS")),
        "{bad:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// cairn serve and the benchmark
// ---------------------------------------------------------------------------

/// `cairn bench-reload` end to end, small: it runs a `cairn serve` child
/// (which watches by default) and lands versions into its directory.
#[tokio::test]
async fn bench_reload_measures_landing_to_serving_cold_and_warm() -> Result<()> {
    bounded(async {
        let db = fresh_db().await?;
        let state = tempfile::tempdir()?;
        let out = tokio::task::spawn_blocking({
            let url = db.url.clone();
            let state = state.path().to_owned();
            move || {
                cairn()
                    .arg("bench-reload")
                    .arg("--plugin")
                    .arg(wasm("versioned"))
                    .args(["--rounds", "2", "--database-url", &url])
                    .env("CAIRN_STATE_DIR", state)
                    .output()
            }
        })
        .await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "bench-reload failed:\n{stdout}\n{stderr}"
        );
        ensure!(
            stdout.contains("warm (cache hit)") && stdout.contains("— 0 compilations"),
            "{stdout}"
        );
        ensure!(
            stdout.matches("(2 landings)").count() == 4,
            "every phase reports its landings:\n{stdout}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(state.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("bench-reload"))
            .collect();
        ensure!(
            leftovers.is_empty(),
            "work directory left behind: {leftovers:?}"
        );
        Ok(())
    })
    .await
}
