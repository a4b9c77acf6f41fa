//! The `cairn` command line.
//!
//! Every failure is one line on stderr (`error: ...`) and a non-zero exit:
//! 1 for a failed command or action, 2 for a usage error (clap's, which
//! includes a malformed action key, duration or status, or a
//! [`UsageError`], such as an unknown row id). Never a panic or a
//! backtrace. Logs (including guest output and `log` records) go to stderr,
//! as text or JSON lines ([`crate::logging`]); command results go to stdout
//! as JSON, or as tables for the operator commands on a terminal.
//!
//! This module parses and dispatches; each command is a few lines calling
//! the library: `serve` is [`crate::serve::Host`], `plugins` and `invoke`
//! load through [`crate::serve::load_plugins`] ([`plugins`]), `enqueue` and
//! `result` use [`crate::queue::Client`] ([`queue`]), `ls`, `retry`,
//! `cancel` and `stats` use [`crate::queue::admin`] ([`admin`]), `prune` is
//! [`crate::retention::prune_all`], the benchmarks are in [`crate::bench`].

mod admin;
mod plugins;
mod queue;

use crate::db::{Database, DbConfig};
use crate::error::one_line;
use crate::key::ActionKey;
use crate::limits::Limits;
use crate::logging;
use crate::ops::HttpConfig;
use crate::queue::ActionStatus;
use crate::reload::ReloadConfig;
use crate::retention::{Retention, RetentionConfig};
use crate::serve::{Host, ServeOptions};
use crate::settings::Settings;
use crate::worker::WorkerConfig;
use anyhow::Result;
use cairn_contract::{parse_duration, parse_positive_duration};
use clap::{Parser, Subcommand};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
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

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// List every action (module:name) with its file, digest and imports,
    /// and every plugin file that was rejected, with the reason; then what
    /// the hosts running on the database have loaded (which host, which
    /// digest), if a database is there to ask.
    Plugins {
        /// The plugin directory.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// Only the local directory listing: do not ask the database.
        #[arg(long)]
        dir: bool,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List queue rows, newest first (see docs/operations.md).
    Ls(admin::LsArgs),
    /// Put failed rows back in the queue for one more attempt.
    Retry(admin::RetryArgs),
    /// Cancel queued or running rows.
    Cancel(admin::CancelArgs),
    /// Queue depth per action and status, and rows finished per minute.
    Stats(admin::StatsArgs),
    /// Run one action in the sandbox, without a database, and print its
    /// result or error payload as JSON.
    Invoke {
        /// The action, as MODULE:NAME.
        action: ActionKey,
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
        /// Override the action's timeout, e.g. `500ms`, `10s` (the
        /// plugin's `timeout` in cairn.toml still caps it).
        #[arg(long, value_parser = parse_positive_duration)]
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
        #[arg(long, value_parser = parse_positive_duration, default_value = "30s")]
        lease: Duration,
        /// Fail due rows whose action no live host serves after this long.
        #[arg(long, value_parser = parse_positive_duration, default_value = "5m")]
        unknown_after: Duration,
        /// Load the plugin directory once; do not watch it for added,
        /// replaced or removed files (see docs/reload.md).
        #[arg(long)]
        no_watch: bool,
        /// Serve /healthz, /metrics and the dashboard on this address, e.g.
        /// 127.0.0.1:9090. Off unless given. Any address other than
        /// loopback requires CAIRN_HTTP_TOKEN (see docs/operations.md).
        #[arg(long, env = "CAIRN_HTTP")]
        http: Option<SocketAddr>,
        /// Delete finished rows (succeeded, failed, cancelled) this long
        /// after they finished, e.g. `168h` (a week, the default); `0` keeps
        /// them forever. Pruned in small paced batches (docs/queue.md).
        #[arg(long, env = "CAIRN_RETENTION", default_value_t = Retention::default(), value_parser = Retention::from_str)]
        retention: Retention,
        #[command(flatten)]
        threads: ThreadsArg,
    },
    /// Delete finished rows now: those that finished more than
    /// --older-than ago (all three finished statuses, or only --status).
    /// Prints how many rows were removed, as JSON.
    Prune {
        /// Rows finished at least this long ago go, e.g. `24h`; `0s`: every
        /// finished row.
        #[arg(long, value_parser = parse_duration)]
        older_than: Duration,
        /// Only rows with this status (repeatable): succeeded, failed or
        /// cancelled; default: all three.
        #[arg(long, value_parser = admin::parse_finished_status)]
        status: Vec<ActionStatus>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Enqueue one action and print its id (with --wait, also its result).
    Enqueue {
        /// The action, as MODULE:NAME.
        action: ActionKey,
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
        #[arg(long, value_parser = parse_positive_duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print an action's status and its decoded result or error as JSON.
    Result {
        /// The action's id.
        id: i64,
        #[command(flatten)]
        wait: WaitArgs,
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
    /// Measure what one call costs the host alone: no database, no queue,
    /// `--calls` calls of one action, `--concurrency` at a time (see
    /// docs/benchmarks.md).
    BenchSandbox {
        /// The plugin file.
        #[arg(long)]
        plugin: PathBuf,
        /// The action to call, with no arguments.
        #[arg(long, default_value = "noop:noop")]
        action: ActionKey,
        /// Calls per round (two rounds run).
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// Calls in flight at once.
        #[arg(long, default_value_t = WorkerConfig::default().concurrency)]
        concurrency: usize,
        /// Load (and store) the compiled plugin in this artifact cache, as
        /// `cairn serve` does; without it the plugin is compiled every run.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        threads: ThreadsArg,
    },
    /// Measure throughput and latency: a `cairn serve` child runs a no-op
    /// action while this process enqueues (see docs/benchmarks.md).
    Bench {
        /// Plugin directory holding the benchmark action's plugin.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// The no-op action to run.
        #[arg(long, default_value = "noop:noop")]
        action: ActionKey,
        /// Rows for the throughput phase.
        #[arg(long, default_value_t = 50_000)]
        actions: usize,
        /// Single actions for the latency phase, one at a time.
        #[arg(long, default_value_t = 500)]
        trickle: usize,
        /// Each server's concurrency.
        #[arg(long, default_value_t = WorkerConfig::default().concurrency)]
        concurrency: usize,
        /// How many `cairn serve` processes share the queue (the way hosts
        /// scale out: docs/scaling.md).
        #[arg(long, default_value = "1")]
        hosts: NonZeroUsize,
        /// Each server's `--threads` (default: its own default, one per
        /// core).
        #[arg(long)]
        host_threads: Option<NonZeroUsize>,
        /// Run the server with `--http ADDR` (metrics and dashboard on), to
        /// measure what they cost.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// First measure the pure-SQL floor of the same storage model
        /// (pgbench, no host) and report the host's share of it.
        #[arg(long)]
        floor: bool,
        /// pgbench clients for `--floor`.
        #[arg(long, default_value_t = 8)]
        floor_clients: usize,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `--threads`: the size of the process's async runtime, for the commands
/// that run actions in it (`serve`, `bench-sandbox`).
#[derive(Debug, Clone, Copy, clap::Args)]
struct ThreadsArg {
    /// Threads that run actions (and this process's I/O); default: one per
    /// core. Guests with large copy-on-write memories (Python) do more work
    /// per core as one single-threaded host process per core than as one
    /// host with a thread per core (docs/scaling.md).
    #[arg(long, env = "CAIRN_THREADS")]
    threads: Option<NonZeroUsize>,
}

impl Command {
    /// The `--threads` of the commands that take it.
    fn threads(&self) -> Option<NonZeroUsize> {
        match self {
            Command::Serve { threads, .. } | Command::BenchSandbox { threads, .. } => {
                threads.threads
            }
            _ => None,
        }
    }
}

/// `--wait` and for how long, for the commands that can wait for a row to
/// finish (`enqueue`, `result`).
#[derive(Debug, clap::Args)]
struct WaitArgs {
    /// Wait until the action is finished, and print its result.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = parse_positive_duration, default_value = "60s")]
    wait_timeout: Duration,
}

impl WaitArgs {
    /// How long to wait; `None`: do not wait.
    fn limit(&self) -> Option<Duration> {
        self.wait.then_some(self.wait_timeout)
    }
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
    fn config(self) -> Result<DbConfig> {
        let mut config = DbConfig::from_env()?;
        if self.database_url.is_some() {
            config.url = self.database_url;
        }
        Ok(config)
    }

    async fn connect(self) -> Result<Database> {
        Database::connect(self.config()?).await
    }

    /// [`connect`](Self::connect), run `work`, and close the database
    /// whatever `work` returned, so an embedded server stops cleanly after an
    /// error too; then `work`'s outcome.
    async fn with<T>(self, work: impl AsyncFnOnce(&Database) -> Result<T>) -> Result<T> {
        let db = self.connect().await?;
        let outcome = work(&db).await;
        db.close().await;
        outcome
    }

    /// [`connect`](Self::connect), but never start an embedded server: with
    /// no URL, join one only if it is running (else `None`). For commands
    /// that only look, where starting a server would be a surprise.
    async fn connect_if_running(self) -> Result<Option<Database>> {
        let config = self.config()?;
        if config.url.is_none()
            && !crate::db::EmbeddedPostgres::seems_running(&config.embedded_options())
        {
            return Ok(None);
        }
        Database::connect(config).await.map(Some)
    }
}

/// Bad input the command line could only judge by looking (an unknown row
/// id): one `error:` line and exit code 2, as for clap's usage errors, and
/// nothing changed.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit code for a failed command: 2 for a [`UsageError`], else 1.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// Entry point for the binary: parse, run, report. Returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match logging::Format::from_env() {
        Ok(format) => logging::init(format),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            return ExitCode::from(2);
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.command.threads() {
        runtime.worker_threads(threads.get());
    }
    let executor = match runtime.enable_all().build() {
        Ok(executor) => executor,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match executor.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            exit_code(&err)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = || -> Result<Arc<Settings>> {
        let grantable = crate::deps::names();
        Ok(Arc::new(Settings::load(cli.config.as_deref(), &grantable)?))
    };
    match cli.command {
        Command::Plugins {
            plugins,
            dir,
            json,
            db,
        } => {
            let hosts = if dir { None } else { Some(db) };
            plugins::list(&plugins, settings()?, hosts, json).await
        }
        Command::Ls(args) => admin::ls(args).await,
        Command::Retry(args) => admin::retry(args).await,
        Command::Cancel(args) => admin::cancel(args).await,
        Command::Stats(args) => admin::stats(args).await,
        Command::Invoke {
            action,
            args,
            plugins,
            attempt,
            timeout,
        } => plugins::invoke(&action, &args, &plugins, settings()?, attempt, timeout).await,
        Command::Serve {
            plugins,
            db,
            concurrency,
            shutdown_grace,
            lease,
            unknown_after,
            no_watch,
            http,
            retention,
            threads: _, // sized the runtime in `main`
        } => {
            let shutdown = shutdown_signal()?;
            // Checked before anything starts: a non-loopback address
            // without a token refuses to serve at all.
            let http = http.map(HttpConfig::from_env).transpose()?;
            // First, so that every log line of this host carries its id.
            let host_id = crate::serve::generate_host_id();
            logging::set_host(&host_id);
            let options = ServeOptions {
                settings: settings()?,
                limits: Limits::from_env()?,
                reload: ReloadConfig {
                    watch: !no_watch,
                    ..ReloadConfig::from_env(&DbConfig::from_env()?.state_dir)?
                },
                worker: WorkerConfig {
                    concurrency,
                    shutdown_grace,
                    unknown_after,
                    lease,
                    renew_every: lease / 3,
                    ..WorkerConfig::default()
                },
                host_id: Some(host_id),
                http,
                retention: RetentionConfig {
                    keep: retention,
                    ..RetentionConfig::default()
                },
                ..ServeOptions::new(plugins)
            };
            db.with(async |db| {
                let host = Host::start(options, db.pool().clone()).await?;
                host.run(shutdown).await
            })
            .await?;
            Ok(ExitCode::SUCCESS)
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
            db,
        } => {
            let mut request =
                crate::queue::EnqueueRequest::for_action(&action).args(&queue::parse_args(&args)?);
            request.delay = delay;
            request.max_attempts = max_attempts;
            request.idempotency_key = idempotency_key;
            request.timeout = timeout;
            if let Some(priority) = priority {
                request.priority = priority;
            }
            db.with(async |db| queue::enqueue(db, &request, wait.limit()).await)
                .await
        }
        Command::Result { id, wait, db } => {
            db.with(async |db| queue::result(db, id, wait.limit()).await)
                .await
        }
        Command::Prune {
            older_than,
            status,
            db,
        } => {
            let statuses = if status.is_empty() {
                crate::queue::FINISHED.to_vec()
            } else {
                status
            };
            let pruned = db
                .with(async |db| {
                    // Counting costs a query: only for a bar someone sees.
                    let bar = crate::progress::bar(0, "prune", "rows");
                    if !bar.is_hidden() {
                        let total =
                            crate::queue::prunable(db.pool(), older_than, &statuses).await?;
                        bar.set_length(total);
                    }
                    let pruned =
                        crate::retention::prune_all(db.pool(), older_than, &statuses, false, |n| {
                            bar.inc(n)
                        })
                        .await;
                    bar.finish_and_clear();
                    pruned
                })
                .await?;
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            println!(
                "{}",
                serde_json::json!({
                    "pruned": pruned,
                    "older_than": cairn_contract::format_duration(older_than),
                    "statuses": names,
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { db } => {
            let db = db.connect().await?;
            println!("migrations applied");
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchReload { plugin, rounds, db } => {
            let options = crate::bench::reload::Options {
                plugin,
                rounds,
                state_dir: DbConfig::from_env()?.state_dir,
                database_url: db.database_url.clone(),
            };
            let report = db
                .with(async |db| crate::bench::reload::run(db, &options).await)
                .await?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchSandbox {
            plugin,
            action,
            calls,
            concurrency,
            cache_dir,
            threads: _, // sized the runtime in `main`
        } => {
            let options = crate::bench::sandbox::Options {
                plugin,
                action,
                calls,
                concurrency,
                cache_dir,
            };
            println!("{}", crate::bench::sandbox::run(&options).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            plugins,
            action,
            actions,
            trickle,
            concurrency,
            hosts,
            host_threads,
            http,
            floor,
            floor_clients,
            db,
        } => {
            let options = crate::bench::throughput::Options {
                plugins,
                action,
                actions,
                trickle,
                concurrency,
                hosts,
                host_threads,
                database_url: db.database_url.clone(),
                http,
                floor_clients: if floor { floor_clients } else { 0 },
            };
            let report = db
                .with(async |db| crate::bench::throughput::run(db, &options).await)
                .await?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is called, and returns
/// a future that resolves on the first of them. `serve` calls it before
/// anything starts: a signal that arrives while the host connects, loads
/// or registers is then a graceful shutdown once it runs, not the default
/// action (death without deregistering). (Listening lazily, when the worker
/// first polled the future, left that window open.)
///
/// # Errors
/// The signal handlers cannot be installed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}
