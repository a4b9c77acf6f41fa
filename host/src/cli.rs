//! The `cairn` command line.
//!
//! Every failure is one line on stderr (`error: ...`) and a non-zero exit:
//! 1 for a failed command or action, 2 for a usage error (clap's). Never a
//! panic or a backtrace. Logs (including guest output and `log` records) go
//! to stderr; command results go to stdout as JSON.

use crate::config::HostConfig;
use crate::db::{Database, DbConfig};
use crate::limits::Limits;
use crate::plugin::{self, DirLoad};
use crate::queue::{ActionResult, ActionStatus, Client, EnqueueRequest};
use crate::registry::Registry;
use crate::reload::{self, Announcer, ReloadConfig, Reloader};
use crate::runtime::Runtime;
use crate::sandbox::{self, Invocation};
use crate::worker::{Worker, WorkerConfig};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Runs durable actions as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
pub struct Cli {
    /// The grants and per-plugin settings file (see docs/dependencies.md).
    /// Without it, `./cairn.toml` if it exists; otherwise only `log` and
    /// `context` are granted.
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every action (module:name) with its file, digest and imports,
    /// and every plugin file that was rejected, with the reason.
    Plugins {
        /// The plugin directory.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
    },
    /// Run one action in the sandbox, without a database, and print its
    /// result or error payload as JSON.
    Invoke {
        /// The action, as MODULE:NAME.
        action: String,
        /// Keyword arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The plugin directory.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// Attempt number the action sees through `context` (for testing
        /// retry behaviour by hand).
        #[arg(long, default_value_t = 1)]
        attempt: u32,
        /// Override the action's timeout, e.g. `500ms`, `10s`.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
    /// Run the host: serve the plugin directory's actions from the queue
    /// until SIGINT/SIGTERM, then shut down gracefully.
    Serve {
        /// The plugin directory.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        #[command(flatten)]
        db: DbArgs,
        /// Actions running at once on this host.
        #[arg(long, env = "CAIRN_CONCURRENCY", default_value_t = WorkerConfig::default().concurrency)]
        concurrency: usize,
        /// On shutdown, how long running actions may take to finish before
        /// they are requeued.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        shutdown_grace: Duration,
        /// How long a claimed row stays owned without renewal; another host
        /// rescues it after that (renewed every third of it).
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        lease: Duration,
        /// Fail due rows whose action no live host serves after this long.
        #[arg(long, value_parser = parse_duration, default_value = "5m")]
        unknown_after: Duration,
        /// Load the plugin directory once; do not watch it for added,
        /// replaced or removed files (see docs/reload.md).
        #[arg(long)]
        no_watch: bool,
    },
    /// Enqueue one action and print its id (with --wait, also its result).
    Enqueue {
        /// The action, as MODULE:NAME.
        action: String,
        /// Keyword arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Run no sooner than this from now, e.g. `30s`.
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
        /// Lower runs first.
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// Total attempts, overriding the action's retry policy.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// At most one live row per key; enqueueing it again returns the
        /// existing row's id.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Per-attempt timeout, overriding the action's.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Wait for the result and print it.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        wait_timeout: Duration,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print an action's status and its decoded result or error as JSON.
    Result {
        /// The action's id.
        id: i64,
        /// Wait until it is finished.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        wait_timeout: Duration,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Apply the schema migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Measure hot reload: the time from a plugin file landing in the
    /// watched directory to its new version serving, cold and from the
    /// artifact cache (see docs/benchmarks.md).
    BenchReload {
        /// The `versioned` example plugin (built by
        /// `cargo build --target wasm32-wasip2 --release` in examples/plugins).
        #[arg(
            long,
            default_value = "examples/plugins/target/wasm32-wasip2/release/versioned.wasm"
        )]
        plugin: PathBuf,
        /// Cold landings per phase (as many warm ones follow).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Measure throughput and latency: a `cairn serve` child runs a no-op
    /// action while this process enqueues (see docs/benchmarks.md).
    Bench {
        /// Plugin directory holding the benchmark action's plugin.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// The no-op action to run.
        #[arg(long, default_value = "noop:noop")]
        action: String,
        /// Rows for the throughput phase.
        #[arg(long, default_value_t = 50_000)]
        actions: usize,
        /// Single actions for the latency phase, one at a time.
        #[arg(long, default_value_t = 500)]
        trickle: usize,
        /// The server's concurrency.
        #[arg(long, default_value_t = WorkerConfig::default().concurrency)]
        concurrency: usize,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the database is (everything else comes from `CAIRN_*` variables,
/// see [`DbConfig`]).
#[derive(Debug, clap::Args)]
struct DbArgs {
    /// PostgreSQL URL. Without it, cairn runs a private PostgreSQL under
    /// `CAIRN_STATE_DIR` (default `./.cairn`).
    #[arg(long, env = "CAIRN_DATABASE_URL")]
    database_url: Option<String>,
}

impl DbArgs {
    async fn connect(self) -> Result<Database> {
        let mut config = DbConfig::from_env()?;
        if self.database_url.is_some() {
            config.url = self.database_url;
        }
        Database::connect(config).await
    }
}

/// Entry point for the binary: parse, run, report. Returns the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", sandbox::one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .init();
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let host_config =
        || -> Result<Arc<HostConfig>> { Ok(Arc::new(HostConfig::load(cli.config.as_deref())?)) };
    match cli.command {
        Command::Plugins { plugins } => {
            let (_, load, registry) = load(&plugins, host_config()?).await?;
            print_plugins(&load, &registry);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Invoke {
            action,
            args,
            plugins,
            attempt,
            timeout,
        } => invoke(&action, &args, &plugins, host_config()?, attempt, timeout).await,
        Command::Serve {
            plugins,
            db,
            concurrency,
            shutdown_grace,
            lease,
            unknown_after,
            no_watch,
        } => {
            let mut limits = Limits::from_env()?;
            limits.pool_instances = limits
                .pool_instances
                .max(u32::try_from(concurrency).unwrap_or(u32::MAX));
            let reload_config = ReloadConfig {
                watch: !no_watch,
                ..ReloadConfig::from_env(&DbConfig::from_env()?.state_dir)?
            };
            let host_config = host_config()?;
            let db = db.connect().await?;
            let loader = reload::loader_for(Runtime::new(limits)?, &reload_config)
                .with_config(host_config)
                .with_pool(db.pool().clone());
            let runtime = loader.runtime().clone();
            let registry = Arc::new(Registry::new());
            let reloader =
                Reloader::start(loader, registry.clone(), &plugins, reload_config).await?;
            if reloader.files().is_empty() {
                tracing::warn!(
                    "no plugins in `{}`: serving nothing until some are added",
                    plugins.display()
                );
            }
            let config = WorkerConfig {
                concurrency,
                shutdown_grace,
                unknown_after,
                lease,
                renew_every: lease / 3,
                ..WorkerConfig::default()
            };
            let host_id = Worker::generate_host_id();
            // Reloads refresh the heartbeat and wake workers at once.
            let announcer = Announcer::start(&reloader, db.pool().clone(), host_id.clone());
            let worker = Worker::new(runtime, registry, db.pool().clone(), host_id, config);
            worker
                .run(async move {
                    shutdown_signal().await;
                    reloader.stop().await;
                    announcer.stop().await;
                })
                .await?;
            db.close().await;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Enqueue {
            action,
            args,
            delay,
            priority,
            max_attempts,
            idempotency_key,
            timeout,
            wait,
            wait_timeout,
            db,
        } => {
            let arguments = parse_args(&args)?;
            let mut request = EnqueueRequest::for_key(&action)?.args(&arguments);
            if let Some(delay) = delay {
                request = request.delay(delay);
            }
            if let Some(priority) = priority {
                request = request.priority(priority);
            }
            if let Some(max) = max_attempts {
                request = request.max_attempts(max);
            }
            if let Some(key) = idempotency_key {
                request = request.idempotency_key(key);
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            let db = db.connect().await?;
            let client = Client::new(db.pool().clone());
            let id = client.enqueue(&request).await?;
            println!("{id}");
            let code = if wait {
                print_result(&client.wait(id, wait_timeout).await?)?
            } else {
                std::process::ExitCode::SUCCESS
            };
            db.close().await;
            Ok(code)
        }
        Command::Result {
            id,
            wait,
            wait_timeout,
            db,
        } => {
            let db = db.connect().await?;
            let client = Client::new(db.pool().clone());
            let row = if wait {
                client.wait(id, wait_timeout).await?
            } else {
                client
                    .result(id)
                    .await?
                    .ok_or_else(|| anyhow!("no action with id {id}"))?
            };
            let code = print_result(&row)?;
            db.close().await;
            Ok(code)
        }
        Command::Migrate { db } => {
            let db = db.connect().await?;
            println!("migrations applied");
            db.close().await;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::BenchReload { plugin, rounds, db } => {
            let database_url = db.database_url.clone();
            let state_dir = DbConfig::from_env()?.state_dir;
            let db = db.connect().await?;
            let options = reload::bench::BenchOptions {
                plugin,
                rounds,
                state_dir,
                database_url,
            };
            let report = reload::bench::run(&db, &options).await;
            db.close().await;
            println!("{}", report?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            plugins,
            action,
            actions,
            trickle,
            concurrency,
            db,
        } => {
            let database_url = db.database_url.clone();
            let db = db.connect().await?;
            let options = crate::bench::BenchOptions {
                plugins,
                action,
                actions,
                trickle,
                concurrency,
                database_url,
            };
            let report = crate::bench::run(&db, &options).await;
            db.close().await;
            println!("{}", report?);
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!("cannot listen for SIGTERM ({err}); only SIGINT stops the host");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}

/// Parse `--args` (a JSON object of keyword arguments).
fn parse_args(args: &str) -> Result<cairn_payload::WorkflowArguments> {
    let json: serde_json::Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    cairn_payload::json::json_to_arguments(&json).map_err(|e| anyhow!("--args: {e}"))
}

/// Print a row as JSON: id, action, status, attempts and the decoded result
/// or error. Exit code 1 when it failed or was cancelled.
fn print_result(row: &ActionResult) -> Result<std::process::ExitCode> {
    let mut out = serde_json::json!({
        "id": row.id,
        "action": format!("{}:{}", row.module, row.name),
        "status": row.status.as_str(),
        "attempts": row.attempts,
    });
    let decode = |bytes: &[u8]| {
        cairn_payload::json::payload_to_json(bytes)
            .map_err(|e| anyhow!("action {} has an unreadable payload: {e}", row.id))
    };
    if let Some(result) = &row.result {
        out["result"] = decode(result)?["result"].clone();
    }
    if let Some(error) = &row.error {
        // A failed row's error is the error; otherwise it is the last failed
        // attempt's (the row is being retried, or succeeded on a retry).
        let key = match row.status {
            ActionStatus::Failed | ActionStatus::Cancelled => "error",
            _ => "last_error",
        };
        out[key] = decode(error)?["error"].clone();
    }
    println!("{out}");
    Ok(match row.status {
        ActionStatus::Failed | ActionStatus::Cancelled => std::process::ExitCode::FAILURE,
        _ => std::process::ExitCode::SUCCESS,
    })
}

/// Load a directory and register what loaded (the registry then owns the
/// plugins); conflicts become rejections.
async fn load(
    dir: &std::path::Path,
    config: Arc<HostConfig>,
) -> Result<(Runtime, DirLoad, Registry)> {
    let limits = Limits::from_env()?;
    if !dir.is_dir() {
        bail!(
            "plugin directory `{}` does not exist (pass --plugins DIR)",
            dir.display()
        );
    }
    let runtime = Runtime::new(limits)?;
    let mut load = plugin::Loader::new(runtime.clone())
        .with_config(config)
        .load_dir(dir)
        .await?;
    let registry = Registry::new();
    for plugin in std::mem::take(&mut load.plugins) {
        let file = plugin.file.clone();
        if let Err(conflict) = registry.register_plugin(Arc::new(plugin)) {
            load.rejected.push(plugin::LoadError::new(
                &file,
                plugin::Phase::Register,
                conflict.to_string(),
            ));
        }
    }
    for rejected in &load.rejected {
        tracing::error!("{rejected}");
    }
    Ok((runtime, load, registry))
}

fn print_plugins(load: &DirLoad, registry: &Registry) {
    println!("{:<28} {:<22} {:<14} IMPORTS", "ACTION", "FILE", "DIGEST");
    for (key, handler) in registry.entries() {
        // The cairn dependencies by name, each marked granted (✓) or not
        // (✗), then how many WASI interfaces (always linked, denying) the
        // component imports. Never config values or secrets.
        let plugin = &handler.plugin;
        let mut imports: Vec<String> = plugin
            .grants()
            .iter()
            .map(|(d, granted)| format!("{d}{}", if *granted { "✓" } else { "✗" }))
            .collect();
        let wasi = plugin
            .imports
            .iter()
            .filter(|i| i.starts_with("wasi:"))
            .count();
        if wasi > 0 {
            imports.push(format!("+{wasi} wasi"));
        }
        let imports = if imports.is_empty() {
            "-".to_owned()
        } else {
            imports.join(",")
        };
        println!(
            "{:<28} {:<22} {:<14} {}",
            key,
            handler.plugin.file_name(),
            handler.plugin.short_digest(),
            imports
        );
    }
    for rejected in &load.rejected {
        println!(
            "REJECTED {}: ({}) {}",
            plugin::display_name(&rejected.file),
            rejected.phase,
            rejected.message
        );
    }
}

async fn invoke(
    action: &str,
    args: &str,
    plugins: &std::path::Path,
    host_config: Arc<HostConfig>,
    attempt: u32,
    timeout: Option<Duration>,
) -> Result<std::process::ExitCode> {
    let (module, name) = action
        .split_once(':')
        .filter(|(m, n)| !m.is_empty() && !n.is_empty())
        .ok_or_else(|| anyhow!("action `{action}` is not of the form MODULE:NAME"))?;
    let arguments = parse_args(args)?;

    let (runtime, load, registry) = load(plugins, host_config).await?;
    let handler = registry.get(module, name).ok_or_else(|| {
        let mut msg = format!(
            "unknown action `{module}:{name}` in `{}`",
            plugins.display()
        );
        if !load.rejected.is_empty() {
            let files: Vec<_> = load
                .rejected
                .iter()
                .map(|r| plugin::display_name(&r.file))
                .collect();
            msg.push_str(&format!(
                " ({} plugin file(s) rejected: {})",
                files.len(),
                files.join(", ")
            ));
        }
        anyhow!(msg)
    })?;

    let invocation = Invocation {
        action_id: format!("invoke-{}", std::process::id()),
        attempt,
        timeout: timeout
            .or_else(|| handler.info.timeout_ms.map(Duration::from_millis))
            .unwrap_or(runtime.limits().default_timeout),
    };
    let bytes = cairn_payload::encode_arguments(&arguments);
    match handler
        .plugin
        .invoke(&runtime, name, bytes, &invocation)
        .await
    {
        Ok(result) => {
            let json = cairn_payload::json::payload_to_json(&result).map_err(|e| {
                anyhow!("action `{module}:{name}` returned an unreadable payload: {e}")
            })?;
            println!("{json}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(failure) => {
            let json = cairn_payload::json::payload_to_json(&failure.payload())
                .map_err(|e| anyhow!("encoding the error payload: {e}"))?;
            println!("{json}");
            eprintln!("error: action `{module}:{name}` failed: {failure}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// Parse `250ms`, `10s`, `5m`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "ms"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "`{text}` has unknown unit `{unit}` (use ms, s, m or h)"
        )),
    }
}
