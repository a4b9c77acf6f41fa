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
//! `cairn.hosts`, hears of every registry change and announces it, and
//! publishes the plugin files with its heartbeat; [`Metrics`] count what the
//! worker does and what the reloader loads; with [`ServeOptions::http`] an
//! [`HttpServer`] serves `/healthz`, `/metrics` and the dashboard
//! ([`crate::ops`]) until the worker has drained, its health turning 503 as
//! soon as shutdown begins; the pruner ([`crate::retention`]) deletes
//! finished rows past the retention, in its own task, for as long as the
//! host runs.
//!
//! `cairn plugins` and `cairn invoke` load a directory with
//! [`load_plugins`]: the same loader and reloader, without watching and
//! without a database, so the three commands cannot disagree about which
//! file owns an action.
//!
//! Failure modes: a missing plugin directory, an unusable engine
//! configuration, an HTTP address that cannot be bound or a worker that
//! cannot start (no database) are errors from [`Host::start`]/[`Host::run`];
//! a bad plugin file never is (it is rejected, logged and listed, see
//! [`crate::reload`]).

use crate::engine::Engine;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::ops::{HttpConfig, HttpServer, OpsContext};
use crate::plugin::Loader;
use crate::registry::Registry;
use crate::reload::{PluginDir, ReloadConfig, Reloader};
use crate::retention::{self, RetentionConfig};
use crate::settings::Settings;
use crate::worker::{Worker, WorkerConfig};
use anyhow::Result;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

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
    /// Serve `/healthz`, `/metrics` and the dashboard (`cairn serve
    /// --http`); `None`: no HTTP at all.
    pub http: Option<HttpConfig>,
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
            http: None,
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
    metrics: Arc<Metrics>,
    /// Counts the reloader's events into `metrics`.
    plugin_counter: JoinHandle<()>,
    http: Option<HttpServer>,
    pool: PgPool,
    retention: RetentionConfig,
}

impl Host {
    /// Build the engine, load the plugin directory (watching it if
    /// `options.reload.watch`) and prepare the worker on `pool`. Nothing is
    /// claimed before [`run`](Self::run).
    ///
    /// # Errors
    /// The engine cannot be built, the plugin directory does not exist or
    /// cannot be watched, or the HTTP address cannot be bound. Bad plugin
    /// files are not errors.
    pub async fn start(options: ServeOptions, pool: PgPool) -> Result<Host> {
        let ServeOptions {
            plugins,
            settings,
            mut limits,
            reload,
            worker,
            retention,
            host_id,
            http,
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
        let metrics = Arc::new(Metrics::new());
        let plugin_counter = crate::metrics::follow_plugins(&reloader.dir(), metrics.clone());
        let host_ttl = worker.host_ttl;
        let worker = Worker::new(
            engine.clone(),
            registry.clone(),
            pool.clone(),
            host_id.clone(),
            worker,
        )
        .with_metrics(metrics.clone())
        .with_plugin_dir(reloader.dir());
        let http = match http {
            Some(config) => {
                let context = OpsContext {
                    pool: pool.clone(),
                    plugins: reloader.dir(),
                    host_id: host_id.clone(),
                    metrics: metrics.clone(),
                    host_ttl,
                };
                Some(HttpServer::start(config, context).await?)
            }
            None => None,
        };
        Ok(Host {
            engine,
            registry,
            reloader,
            worker,
            host_id,
            metrics,
            plugin_counter,
            http,
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

    /// What it counts (what `/metrics` shows).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where `/healthz`, `/metrics` and the dashboard are served, if they
    /// are (the real port when asked for port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Serve until `shutdown` resolves, then turn `/healthz` to 503, stop
    /// watching and pruning, shut the worker down gracefully (see
    /// [`Worker::run`]) and only then stop the HTTP server, so operators see
    /// the drain.
    ///
    /// # Errors
    /// Only when the worker cannot start (the database is unreachable).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Host {
            reloader,
            worker,
            plugin_counter,
            http,
            pool,
            retention,
            ..
        } = self;
        let drain = http.as_ref().map(HttpServer::drain_handle);
        let pruner = retention::spawn_pruner(pool, retention);
        let served = worker
            .run(async move {
                shutdown.await;
                if let Some(drain) = &drain {
                    drain.start();
                }
                reloader.stop().await;
            })
            .await;
        plugin_counter.abort();
        if let Some(pruner) = pruner {
            pruner.abort();
        }
        if let Some(http) = http {
            http.stop().await;
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
