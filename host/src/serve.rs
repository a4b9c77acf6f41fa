//! `cairn serve`: where the data path starts.
//!
//! A [`Host`] is one running cairn host. Reading top to bottom:
//!
//! 1. [`Host::start`] builds the wasm [`Engine`] (sized so that every permit
//!    of the worker can hold an instance), a [`Loader`] with the artifact
//!    cache, the operator's [`Settings`] and the database for `kv` and
//!    `enqueue`; then a [`Reloader`] loads the plugin directory into the
//!    [`Registry`] and (unless told not to) keeps watching it.
//! 2. [`Host::run`] runs the [`Worker`]: claim → instantiate → invoke →
//!    complete (see [`crate::worker`]), until the shutdown future resolves;
//!    then the reloader stops and the worker drains (see its docs).
//!
//! Side concerns hang off this path without weaving into it: reload swaps
//! plugins in the registry; the worker, the only writer of this host's row in
//! `cairn.hosts`, hears of every registry change and announces it; the
//! pruner ([`crate::retention`]) deletes finished rows past the retention,
//! in its own task, for as long as the host runs.
//!
//! `cairn plugins` and `cairn invoke` load a directory with
//! [`load_plugins`]: the same loader and reloader, without watching and
//! without a database, so the three commands cannot disagree about which
//! file owns an action.
//!
//! Failure modes: a missing plugin directory, an unusable engine
//! configuration or a worker that cannot start (no database) are errors from
//! [`Host::start`]/[`Host::run`]; a bad plugin file never is (it is rejected,
//! logged and listed, see [`crate::reload`]).

use crate::engine::Engine;
use crate::limits::Limits;
use crate::plugin::Loader;
use crate::registry::Registry;
use crate::reload::{PluginDir, ReloadConfig, Reloader};
use crate::retention::{self, RetentionConfig};
use crate::settings::Settings;
use crate::worker::{Worker, WorkerConfig};
use anyhow::Result;
use sqlx::PgPool;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a host is configured with. [`ServeOptions::new`] gives the
/// defaults; `cairn serve` fills it from its flags and the environment.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The plugin directory.
    pub plugins: PathBuf,
    /// Grants and per-plugin settings (`cairn.toml`).
    pub settings: Arc<Settings>,
    /// Sandbox limits. The instance pool is widened to the worker's
    /// concurrency if it is smaller.
    pub limits: Limits,
    /// Watching and the artifact cache.
    pub reload: ReloadConfig,
    /// The claim loop and the queue's timings.
    pub worker: WorkerConfig,
    /// How long finished rows are kept, and how often to prune.
    pub retention: RetentionConfig,
    /// The lease owner and `cairn.hosts` key; `None`: [`generate_host_id`].
    pub host_id: Option<String>,
}

impl ServeOptions {
    /// Serve `plugins` with default settings, limits and timings, watching
    /// the directory, without an artifact cache.
    pub fn new(plugins: impl Into<PathBuf>) -> Self {
        ServeOptions {
            plugins: plugins.into(),
            settings: Arc::default(),
            limits: Limits::default(),
            reload: ReloadConfig::default(),
            worker: WorkerConfig::default(),
            retention: RetentionConfig::default(),
            host_id: None,
        }
    }
}

/// One running cairn host. See the module docs.
pub struct Host {
    engine: Engine,
    registry: Arc<Registry>,
    reloader: Reloader,
    worker: Worker,
    host_id: String,
    pool: PgPool,
    retention: RetentionConfig,
}

impl Host {
    /// Build the engine, load the plugin directory (watching it if
    /// `options.reload.watch`) and prepare the worker on `pool`. Nothing is
    /// claimed before [`run`](Self::run).
    ///
    /// # Errors
    /// The engine cannot be built, or the plugin directory does not exist or
    /// cannot be watched. Bad plugin files are not errors.
    pub async fn start(options: ServeOptions, pool: PgPool) -> Result<Host> {
        let ServeOptions {
            plugins,
            settings,
            mut limits,
            reload,
            worker,
            retention,
            host_id,
        } = options;
        let concurrency = u32::try_from(worker.concurrency).unwrap_or(u32::MAX);
        limits.pool_instances = limits.pool_instances.max(concurrency);
        let engine = Engine::new(limits)?;
        let loader = Loader::new(engine.clone())
            .with_cache_dir(reload.cache_dir.as_deref())
            .with_settings(settings)
            .with_pool(pool.clone());
        let registry = Arc::new(Registry::new());
        let reloader = Reloader::start(loader, registry.clone(), &plugins, reload).await?;
        if reloader.files().is_empty() {
            tracing::warn!(
                "no plugins in `{}`: serving nothing until some are added",
                plugins.display()
            );
        }
        let host_id = host_id.unwrap_or_else(generate_host_id);
        let worker = Worker::new(
            engine.clone(),
            registry.clone(),
            pool.clone(),
            host_id.clone(),
            worker,
        );
        Ok(Host {
            engine,
            registry,
            reloader,
            worker,
            host_id,
            pool,
            retention,
        })
    }

    /// This host's id: its lease owner name and its key in `cairn.hosts`.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// What it serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The plugin directory as it keeps it (files, rejections, loader
    /// counts, events); stays valid while the host runs.
    pub fn plugin_dir(&self) -> PluginDir {
        self.reloader.dir()
    }

    /// The wasm engine every call runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serve until `shutdown` resolves, then stop watching and pruning and
    /// shut the worker down gracefully (see [`Worker::run`]).
    ///
    /// # Errors
    /// Only when the worker cannot start (the database is unreachable).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Host {
            reloader,
            worker,
            pool,
            retention,
            ..
        } = self;
        let pruner = retention::spawn_pruner(pool, retention);
        let served = worker
            .run(async move {
                shutdown.await;
                reloader.stop().await;
            })
            .await;
        if let Some(pruner) = pruner {
            pruner.abort();
        }
        served
    }
}

/// A plugin directory loaded the way `cairn serve` loads it, for the
/// one-shot commands.
pub struct LoadedPlugins {
    /// The engine the plugins were compiled for.
    pub engine: Engine,
    /// The files, what each serves and why any was rejected.
    pub reloader: Reloader,
}

impl LoadedPlugins {
    /// What the directory serves.
    pub fn registry(&self) -> &Arc<Registry> {
        self.reloader.registry()
    }
}

/// Load `dir` with the same loader and ownership rules as [`Host::start`],
/// without watching it and without a database (`kv` and `enqueue` then fail
/// with a message saying so).
///
/// # Errors
/// As [`Host::start`].
pub async fn load_plugins(
    dir: &Path,
    settings: Arc<Settings>,
    limits: Limits,
    reload: ReloadConfig,
) -> Result<LoadedPlugins> {
    let engine = Engine::new(limits)?;
    let loader = Loader::new(engine.clone())
        .with_cache_dir(reload.cache_dir.as_deref())
        .with_settings(settings);
    let reload = ReloadConfig {
        watch: false,
        ..reload
    };
    let reloader = Reloader::start(loader, Arc::new(Registry::new()), dir, reload).await?;
    Ok(LoadedPlugins { engine, reloader })
}

/// A host id that is unique in practice: hostname, pid and a time-based
/// suffix.
pub fn generate_host_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{:08x}", host.trim(), std::process::id(), nanos)
}
