//! Hot reload: add, replace and remove plugin files while the host serves.
//!
//! # Strategy
//!
//! A [`Reloader`] owns the plugin directory's per-file state and is the only
//! writer of the [`Registry`] while `cairn serve` runs. It loads every
//! `*.wasm` file once at start, then (unless told not to) watches the
//! directory with `notify` (inotify on Linux, not recursive) and handles
//! each file on its own:
//!
//! 1. **Debounce.** Events are collected per path; a path is handled once it
//!    has been quiet for [`ReloadConfig::quiet`] (100 ms) after a write, or
//!    [`ReloadConfig::rename_quiet`] (20 ms) after it arrived by `rename`. A
//!    burst of writes is one reload.
//! 2. **Stable content only.** The file is read, then its size, mtime and
//!    inode are checked again after [`ReloadConfig::settle`] (50 ms); if they
//!    changed it is read again. A file that arrived by `rename` is complete
//!    by construction (the rename is atomic), so it is only checked across
//!    the read. Operators should write elsewhere and `rename` into the
//!    directory; a file written in place is picked up once it is stable.
//! 3. **Content, not touches.** The SHA-256 of the bytes decides: the same
//!    digest as last time is a no-op ([`FileOutcome::Unchanged`]), so `touch`,
//!    `chmod` or rewriting identical bytes reloads nothing.
//! 4. **Load off the hot path.** A new digest is validated, compiled (or
//!    fetched from the [`ArtifactCache`](crate::plugin::ArtifactCache)), linked and described by the
//!    [`Loader`] — compilation runs on a blocking thread — while the previous
//!    version keeps serving.
//! 5. **Swap atomically.** [`Registry::replace_file`] replaces all of the
//!    file's keys under one write lock. The worker claims with one registry
//!    snapshot and runs each row on the handler from that snapshot, so rows
//!    claimed before the swap finish on the old version and rows claimed
//!    after it run on the new one. A removed file's keys are unregistered;
//!    their queued rows stay queued (the worker only claims keys it serves).
//!
//! # Ownership rule (moving an action between files)
//!
//! A `module:name` belongs to the file that registered it first. A file whose
//! new version declares a key another file owns (with another digest) is
//! rejected — its previous version, if any, keeps serving — and **retried
//! automatically whenever any other file is removed or changes**. So moving
//! `m:x` from `a.wasm` to `b.wasm` converges in either order: remove `a` then
//! add `b` (`b` registers at once), or add `b` then remove `a` (`b` waits,
//! rejected, until `a` is gone). When several waiting files want the same
//! key, the one the reloader saw first gets it. An identical copy (same
//! digest) is not a conflict: the first file keeps the keys and the copy
//! takes them over if the first goes away (e.g. `mv a.wasm b.wasm`).
//!
//! # Failure modes
//!
//! * A bad file (unreadable, not a component, wrong world, refused import,
//!   failing `describe`, conflicting key) is rejected with one `ERROR` log
//!   line naming the file, the phase and why; the file's previous version
//!   keeps serving; [`Reloader::files`] reports it, and `cairn plugins`
//!   (which loads the directory itself) lists it as `REJECTED`.
//! * A file still being written in place when the quiet period and settle
//!   interval pass (a writer pausing longer than both) is read partially: it
//!   fails validation, is rejected, and is loaded when the writer's next
//!   events settle. That is why operators should `rename` files in.
//! * Lost events: an inotify queue overflow triggers a rescan of the
//!   directory, and a rescan every [`ReloadConfig::rescan_every`] (30 s)
//!   catches anything else (size/mtime/inode against what was loaded; the
//!   digest still decides). A watcher that cannot start is an error at
//!   start; one that fails later is logged and the rescans carry on.
//! * The artifact cache cannot be opened (e.g. it is readable by others):
//!   logged, and the host compiles without it.
//!
//! Every registry change is logged by the registry (file, keys, old and new
//! digest); every rejection by the reloader. See `docs/reload.md`.

mod watch;

use crate::key::{short_or_dash, Digest};
use crate::plugin::{display_name, LoadError, LoadPhase, Loader, Plugin};
use crate::registry::{Change, Registry};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use watch::{Arrival, Read};

/// Events kept for slow subscribers before they start missing some.
const EVENT_BACKLOG: usize = 1024;

/// How the reloader behaves. [`ReloadConfig::from_env`] reads every knob,
/// with its default and environment override, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the directory (`cairn serve --no-watch` turns it off).
    pub watch: bool,
    /// Quiet time after a write before a file is read
    /// (`CAIRN_RELOAD_QUIET_MS`, default 100): long enough to merge a
    /// burst of writes (a `cp` writes in 128 KiB chunks microseconds apart),
    /// short against the compile that follows.
    pub quiet: Duration,
    /// Quiet time after a file arrived by `rename`
    /// (`CAIRN_RELOAD_RENAME_QUIET_MS`, default 20): its content is already
    /// complete; this only merges a burst of renames onto one name.
    pub rename_quiet: Duration,
    /// After reading a file that was written in place, wait this long and
    /// check it did not change (`CAIRN_RELOAD_SETTLE_MS`, default 50).
    pub settle: Duration,
    /// Full rescan of the directory, in case events were lost
    /// (`CAIRN_RELOAD_RESCAN_MS`, default 30000; 0 = never).
    pub rescan_every: Option<Duration>,
    /// Root of the compiled-artifact cache (`CAIRN_CACHE_DIR`, default
    /// `<state dir>/cache`; `off` = no cache).
    pub cache_dir: Option<PathBuf>,
}

impl Default for ReloadConfig {
    /// The defaults, without an artifact cache.
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            quiet: Duration::from_millis(100),
            rename_quiet: Duration::from_millis(20),
            settle: Duration::from_millis(50),
            rescan_every: Some(Duration::from_secs(30)),
            cache_dir: None,
        }
    }
}

impl ReloadConfig {
    /// The defaults, with the cache under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        ReloadConfig {
            cache_dir: Some(state_dir.join("cache")),
            ..Self::default()
        }
    }

    /// The defaults overridden by the `CAIRN_*` variables listed on the
    /// fields.
    ///
    /// # Errors
    /// A variable that is set but not valid.
    pub fn from_env(state_dir: &Path) -> Result<Self> {
        Self::from_lookup(state_dir, |key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(state_dir: &Path, get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::new(state_dir);
        let get = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let ms = |key: &str| -> Result<Option<Duration>> {
            get(key)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "reload config: {key} must be a number of milliseconds, got {v:?}"
                            )
                        })
                })
                .transpose()
        };
        if let Some(d) = ms("CAIRN_RELOAD_QUIET_MS")? {
            config.quiet = d;
        }
        if let Some(d) = ms("CAIRN_RELOAD_RENAME_QUIET_MS")? {
            config.rename_quiet = d;
        }
        if let Some(d) = ms("CAIRN_RELOAD_SETTLE_MS")? {
            config.settle = d;
        }
        if let Some(d) = ms("CAIRN_RELOAD_RESCAN_MS")? {
            config.rescan_every = (!d.is_zero()).then_some(d);
        }
        match get("CAIRN_CACHE_DIR").as_deref().map(str::trim) {
            None => {}
            Some("off") => config.cache_dir = None,
            Some(dir) => config.cache_dir = Some(PathBuf::from(dir)),
        }
        Ok(config)
    }
}

/// What happened to one file. Sent to [`Reloader::subscribe`]rs.
#[derive(Debug, Clone)]
pub struct ReloadEvent {
    /// The file.
    pub file: PathBuf,
    /// What came of it.
    pub outcome: FileOutcome,
}

/// The outcome of handling one file.
#[derive(Debug, Clone)]
pub enum FileOutcome {
    /// The registry changed (or, for a file whose keys are all shared with
    /// an identical copy, was confirmed): added, replaced or removed.
    Applied(Change),
    /// The content was refused; `serving` is the digest of the file's
    /// previous version, which keeps serving (if any).
    Rejected {
        /// The digest of the refused content (`None` if it could not be read).
        digest: Option<Digest>,
        /// Why, naming the file and the phase.
        error: LoadError,
        /// The digest of the version that keeps serving from this file.
        serving: Option<Digest>,
    },
    /// The content's digest is the one already handled: nothing to do (a
    /// touch, or identical bytes written again).
    Unchanged {
        /// The digest.
        digest: Digest,
    },
}

/// One plugin file as the reloader knows it: what it serves and whether its
/// latest content was refused.
#[derive(Debug, Clone)]
pub struct FileStatus {
    /// The file.
    pub file: PathBuf,
    /// The version this file has in the registry, if any.
    pub serving: Option<Arc<Plugin>>,
    /// Why the latest content was refused, if it was (the `serving` version,
    /// if any, is the previous one).
    pub rejected: Option<Rejection>,
}

/// A refused version of a file.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Its digest (`None` if it could not be read).
    pub digest: Option<Digest>,
    /// Why.
    pub error: LoadError,
    /// It loaded but conflicts with another file's keys: it is retried
    /// whenever another file is removed or changes.
    pub waiting: bool,
}

/// Per-file state (see [`FileStatus`]).
#[derive(Debug)]
struct FileState {
    /// Order of first sight: waiting files are retried oldest first.
    seq: u64,
    /// The version `replace_file` accepted for this file.
    serving: Option<Arc<Plugin>>,
    /// Some keys of `serving` are held by an identical copy in another file.
    incomplete: bool,
    /// Digest of the latest content handled (serving or refused).
    latest: Option<Digest>,
    /// The latest content was refused.
    rejected: Option<LoadError>,
    /// The latest content loaded but conflicts: retried on others' changes.
    waiting: Option<Arc<Plugin>>,
    /// Size, mtime and inode when last read, for rescans.
    stat: Option<watch::Stat>,
}

impl FileState {
    fn new(next_seq: &AtomicU64) -> Self {
        FileState {
            seq: next_seq.fetch_add(1, Ordering::Relaxed),
            serving: None,
            incomplete: false,
            latest: None,
            rejected: None,
            waiting: None,
            stat: None,
        }
    }
}

/// What the reloader's tasks share.
struct Inner {
    dir: PathBuf,
    loader: Loader,
    registry: Arc<Registry>,
    config: ReloadConfig,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    next_seq: AtomicU64,
    events: broadcast::Sender<ReloadEvent>,
}

/// Loads a plugin directory into a [`Registry`] and keeps it in step with
/// the directory. See the module docs. Stop it with [`Reloader::stop`]
/// (dropping it stops watching too, without waiting).
pub struct Reloader {
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Reloader {
    /// Start watching `dir` (if `config.watch`), then load every `*.wasm`
    /// file in it into `registry` (in file-name order: the first file wins a
    /// contested key), and return. Watching starts before the initial scan,
    /// so a file that lands meanwhile is not missed.
    ///
    /// # Errors
    /// The directory does not exist or cannot be read, or the watcher cannot
    /// start. Bad plugin files are not errors: see [`Reloader::files`].
    pub async fn start(
        loader: Loader,
        registry: Arc<Registry>,
        dir: &Path,
        config: ReloadConfig,
    ) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "plugin directory `{}` does not exist (pass --plugins DIR)",
                dir.display()
            );
        }
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            loader,
            registry,
            config,
            files: Mutex::new(BTreeMap::new()),
            next_seq: Default::default(),
            events,
        });
        let watcher = if inner.config.watch {
            Some(
                watch::Watcher::start(dir)
                    .with_context(|| format!("watching plugin directory `{}`", dir.display()))?,
            )
        } else {
            None
        };
        let started = Instant::now();
        let unsettled = inner.scan().await?;
        let counts = inner.loader.counts();
        let files = inner.files.lock().unwrap_or_else(|p| p.into_inner()).len();
        tracing::info!(
            dir = %dir.display(),
            files,
            actions = inner.registry.names().len(),
            compiled = counts.compiled,
            from_cache = counts.cache_hits,
            watching = inner.config.watch,
            "plugin directory loaded in {} ms",
            started.elapsed().as_millis()
        );
        let (task, stop) = match watcher {
            Some(watcher) => {
                let (stop_tx, stop_rx) = oneshot::channel();
                let task = tokio::spawn(watch::run(inner.clone(), watcher, unsettled, stop_rx));
                (Some(task), Some(stop_tx))
            }
            None => (None, None),
        };
        Ok(Reloader { inner, task, stop })
    }

    /// A view of the directory that stays valid while the reloader runs on
    /// elsewhere (e.g. after the host that started it took it to run).
    pub fn dir(&self) -> PluginDir {
        PluginDir {
            inner: self.inner.clone(),
        }
    }

    /// Events for every file handled from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.dir().subscribe()
    }

    /// Every file the reloader knows, by name: what it serves and why its
    /// latest content was refused, if it was.
    pub fn files(&self) -> Vec<FileStatus> {
        self.dir().files()
    }

    /// The loader (for its [`counts`](Loader::counts)).
    pub fn loader(&self) -> &Loader {
        &self.inner.loader
    }

    /// The registry it maintains.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Stop watching, after the file being handled (if any) is done. The
    /// registry keeps what it serves.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The plugin directory as a [`Reloader`] keeps it: its files, its loader,
/// its registry and its events. Cheap to clone; it observes, it cannot stop
/// the reloader.
#[derive(Clone)]
pub struct PluginDir {
    inner: Arc<Inner>,
}

impl PluginDir {
    /// Events for every file handled from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.inner.events.subscribe()
    }

    /// Every file the reloader knows, by name: what it serves and why its
    /// latest content was refused, if it was.
    pub fn files(&self) -> Vec<FileStatus> {
        let files = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
        files
            .iter()
            .map(|(file, state)| FileStatus {
                file: file.clone(),
                serving: state.serving.clone(),
                rejected: state.rejected.clone().map(|error| Rejection {
                    digest: state.latest,
                    error,
                    waiting: state.waiting.is_some(),
                }),
            })
            .collect()
    }

    /// The loader (for its [`counts`](Loader::counts)).
    pub fn loader(&self) -> &Loader {
        &self.inner.loader
    }

    /// The registry it maintains.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Inner {
    /// Load every plugin file now. Returns the files that were still
    /// changing, for the watch loop to handle once they settle.
    async fn scan(&self) -> Result<Vec<PathBuf>> {
        let mut unsettled = Vec::new();
        for file in crate::plugin::wasm_files(&self.dir).await? {
            if !self.handle(&file, Arrival::Startup).await {
                unsettled.push(file);
            }
        }
        Ok(unsettled)
    }

    /// Handle one path whose quiet period is over: read it once stable and
    /// add, replace, remove or reject. Returns `false` if the content did not
    /// settle (still being written): the caller tries again later.
    async fn handle(&self, path: &Path, arrival: Arrival) -> bool {
        match watch::read_stable(path, arrival, self.config.settle).await {
            Read::Unsettled => false,
            Read::Gone => {
                self.remove(path);
                true
            }
            Read::Failed(message) => {
                let error = LoadError::new(path, LoadPhase::Read, message);
                self.reject(path, None, error, None);
                true
            }
            Read::Bytes(bytes, stat) => {
                self.update(path, bytes, stat).await;
                true
            }
        }
    }

    fn remove(&self, path: &Path) {
        let known = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
        if known.is_none() {
            return;
        }
        let change = self.registry.remove_file(path);
        if change.is_empty() {
            tracing::info!(file = %display_name(path), "plugin file removed (it served nothing)");
        }
        self.emit(path, FileOutcome::Applied(change));
        self.retry_waiting();
    }

    async fn update(&self, path: &Path, bytes: Vec<u8>, stat: watch::Stat) {
        let digest = Digest::of(&bytes);
        {
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let state = files
                .entry(path.to_owned())
                .or_insert_with(|| FileState::new(&self.next_seq));
            state.stat = Some(stat);
            let serving = state.serving.as_ref().map(|p| p.digest);
            if state.latest == Some(digest) {
                drop(files);
                tracing::debug!(file = %display_name(path), digest = %digest.short(), "plugin unchanged");
                self.emit(path, FileOutcome::Unchanged { digest });
                return;
            }
            if serving == Some(digest) {
                // Back to the version that serves (after a refused one).
                state.latest = Some(digest);
                state.rejected = None;
                state.waiting = None;
                drop(files);
                tracing::info!(file = %display_name(path), digest = %digest.short(), "plugin back to the version it serves");
                self.emit(path, FileOutcome::Unchanged { digest });
                return;
            }
        }

        let started = Instant::now();
        let before = self.loader.counts();
        match self.loader.load_bytes(path, bytes).await {
            Err(error) => self.reject(path, Some(digest), error, None),
            Ok(plugin) => {
                let after = self.loader.counts();
                tracing::debug!(
                    file = %display_name(path),
                    digest = %digest.short(),
                    load_ms = started.elapsed().as_millis() as u64,
                    compiled = after.compiled > before.compiled,
                    "plugin loaded"
                );
                self.apply(path, Arc::new(plugin));
            }
        }
    }

    /// Swap `plugin` in for its file, or park it as waiting on a conflict.
    /// Returns whether the registry took it.
    fn apply(&self, path: &Path, plugin: Arc<Plugin>) -> bool {
        let digest = plugin.digest;
        match self.registry.replace_file(path, plugin.clone()) {
            Ok(change) => {
                if let Some(state) = self
                    .files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(path)
                {
                    state.serving = Some(plugin);
                    state.incomplete = !change.shared.is_empty();
                    state.latest = Some(digest);
                    state.rejected = None;
                    state.waiting = None;
                }
                let changed = !change.is_empty();
                self.emit(path, FileOutcome::Applied(change));
                if changed {
                    self.retry_waiting();
                }
                true
            }
            Err(conflict) => {
                let error = LoadError::new(path, LoadPhase::Register, conflict.to_string());
                self.reject(path, Some(digest), error, Some(plugin));
                false
            }
        }
    }

    /// Record and report a refused version; the previous one keeps serving.
    fn reject(
        &self,
        path: &Path,
        digest: Option<Digest>,
        error: LoadError,
        waiting: Option<Arc<Plugin>>,
    ) {
        let serving = {
            let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
            let state = files
                .entry(path.to_owned())
                .or_insert_with(|| FileState::new(&self.next_seq));
            let already = state.rejected.as_ref().map(ToString::to_string)
                == Some(error.to_string())
                && state.latest == digest;
            state.latest = digest;
            state.rejected = Some(error.clone());
            state.waiting = waiting;
            let serving = state.serving.as_ref().map(|p| p.digest);
            if already {
                // A retry that failed the same way: no new news.
                return;
            }
            serving
        };
        tracing::error!(
            file = %display_name(path),
            phase = %error.phase,
            digest = %short_or_dash(digest.as_ref()),
            serving = %short_or_dash(serving.as_ref()),
            "{error}; {}",
            match &serving {
                Some(d) => format!("the previous version ({}) keeps serving", d.short()),
                None => "the file serves nothing".to_owned(),
            }
        );
        self.emit(
            path,
            FileOutcome::Rejected {
                digest,
                error,
                serving,
            },
        );
    }

    /// Retry every file that waits for keys (a conflicting version, or keys
    /// held by an identical copy), oldest first, until none makes progress.
    fn retry_waiting(&self) {
        loop {
            let mut candidates: Vec<(u64, PathBuf, Arc<Plugin>)> = {
                let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
                files
                    .iter()
                    .filter_map(|(file, state)| {
                        let plugin = match (&state.waiting, &state.serving) {
                            (Some(waiting), _) => waiting.clone(),
                            (None, Some(serving)) if state.incomplete => serving.clone(),
                            _ => return None,
                        };
                        Some((state.seq, file.clone(), plugin))
                    })
                    .collect()
            };
            candidates.sort_by_key(|(seq, ..)| *seq);
            let mut progress = false;
            for (_, file, plugin) in candidates {
                if self.registry_owns_all(&file, &plugin) {
                    continue;
                }
                // On a conflict it stays waiting.
                if let Ok(change) = self.registry.replace_file(&file, plugin.clone()) {
                    let changed = !change.is_empty();
                    if let Some(state) = self
                        .files
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&file)
                    {
                        state.latest = Some(plugin.digest);
                        state.serving = Some(plugin);
                        state.incomplete = !change.shared.is_empty();
                        state.rejected = None;
                        state.waiting = None;
                    }
                    if changed {
                        tracing::info!(file = %display_name(&file), "plugin that waited for its keys now serves them");
                        progress = true;
                        self.emit(&file, FileOutcome::Applied(change));
                    }
                }
            }
            if !progress {
                return;
            }
        }
    }

    /// Whether every key of `plugin` is registered from `file`.
    fn registry_owns_all(&self, file: &Path, plugin: &Plugin) -> bool {
        plugin.actions.iter().all(|a| {
            self.registry
                .get(&plugin.module, &a.name)
                .is_some_and(|h| h.plugin.file == file && h.plugin.digest == plugin.digest)
        })
    }

    fn emit(&self, path: &Path, outcome: FileOutcome) {
        // No subscriber is fine.
        let _ = self.events.send(ReloadEvent {
            file: path.to_owned(),
            outcome,
        });
    }

    /// The stat of every known file, for rescans.
    fn known_stats(&self) -> BTreeMap<PathBuf, Option<watch::Stat>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(f, s)| (f.clone(), s.stat))
            .collect()
    }
}
