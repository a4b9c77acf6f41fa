//! `cairn bench`: the host's throughput and latency, measured the way a user
//! runs it.
//!
//! Setup: this process connects to the database exactly as every command
//! does (the embedded server by default), starts `--hosts` `cairn serve`
//! child processes (one by default) on the same database and plugin
//! directory, as an operator scales out, and waits until all of them have
//! registered. Then two phases:
//!
//! 1. **Throughput.** Bulk-enqueue `actions` rows of a no-op action (5,000
//!    per statement) and wait until all are finished. Actions per second is
//!    `actions / (last finished_at − first started_at)`: from the first claim
//!    to the last committed completion, by the database's clock.
//! 2. **Latency.** Enqueue `trickle` single actions one at a time; for each,
//!    the time from calling enqueue to receiving the row's completion
//!    notification (sent on commit). Reported as p50/p99/max.
//!
//! Before each measured phase the bench vacuums `cairn.actions`, as pgbench
//! does (see [`vacuum`](super::vacuum)).
//!
//! With `--floor`, the pure-SQL floor of the same storage model runs first
//! ([`floor`](super::floor)), and the report gives the host's share of it.
//!
//! Each phase also reports where the CPU went ([`cpu`](super::cpu)): the
//! serve child, the PostgreSQL server and this process, per action, with the
//! write commits and WAL bytes per action.
//!
//! Waiting for the throughput phase to end costs the database next to
//! nothing: this process listens on `cairn_results` and counts the finished
//! ids the notifications carry, and re-reads only the rows it has not seen
//! finish, once a second, in case a notification was lost. (It used to
//! count all 50,000 rows every 50 ms: a good share of the server's CPU.)
//!
//! The report also says how the throughput phase's rows split between the
//! hosts (by each row's `last_host`).
//!
//! Failure modes: a child exiting early, a row failing, or a phase not
//! finishing within its time limit is an error naming what happened. The
//! children are always stopped (SIGTERM, then killed) when the bench ends.

use super::{cpu, floor, ServeChild};
use crate::db::Database;
use crate::key::ActionKey;
use crate::queue::notify::{self, RESULTS_CHANNEL};
use crate::queue::{Client, EnqueueRequest};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Rows per bulk-enqueue statement in the throughput phase.
const ENQUEUE_CHUNK: usize = 5_000;
/// Longest the throughput phase may take before the bench gives up.
const THROUGHPUT_LIMIT: Duration = Duration::from_secs(900);
/// Longest one trickled action may take.
const TRICKLE_LIMIT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plugin directory for the `cairn serve` child.
    pub plugins: PathBuf,
    /// The no-op action.
    pub action: ActionKey,
    /// Rows in the throughput phase.
    pub actions: usize,
    /// Single actions in the latency phase.
    pub trickle: usize,
    /// Each child's `--concurrency`.
    pub concurrency: usize,
    /// How many `cairn serve` children share the queue.
    pub hosts: NonZeroUsize,
    /// Each child's `--threads` (`None`: its default).
    pub host_threads: Option<NonZeroUsize>,
    /// Passed to the child as `--database-url` (otherwise it finds the same
    /// embedded server through the environment).
    pub database_url: Option<String>,
    /// Passed to the child as `--http` (`CAIRN_HTTP`), to measure what
    /// serving metrics and the dashboard costs (docs/benchmarks.md).
    pub http: Option<std::net::SocketAddr>,
    /// Also measure the pure-SQL floor (pgbench clients; 0 = don't).
    pub floor_clients: usize,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Rows in the throughput phase.
    pub actions: usize,
    /// Time to enqueue them all.
    pub enqueue_time: Duration,
    /// First claim to last committed completion.
    pub run_time: Duration,
    /// `actions / run_time`.
    pub actions_per_second: f64,
    /// Latency samples (enqueue → completion committed), sorted.
    pub latencies: Vec<Duration>,
    /// Each server's concurrency.
    pub concurrency: usize,
    /// Each server's `--threads` (`None`: its default).
    pub host_threads: Option<NonZeroUsize>,
    /// Rows of the throughput phase each host ran (its last attempt), one
    /// entry per host, largest first.
    pub rows_per_host: Vec<i64>,
    /// Where the CPU went during the throughput phase (enqueue included).
    pub budget: cpu::Budget,
    /// The floor, when measured.
    pub floor: Option<floor::FloorReport>,
}

impl Report {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if let Some(floor) = &self.floor {
            writeln!(f, "{floor}")?;
        }
        let threads = self
            .host_threads
            .map_or("default threads".to_string(), |n| format!("{n} thread(s)"));
        let split: Vec<String> = self.rows_per_host.iter().map(i64::to_string).collect();
        writeln!(
            f,
            "throughput: {} no-op actions, {} host(s) ({}), concurrency {} each, rows per host {}",
            self.actions,
            self.rows_per_host.len(),
            threads,
            self.concurrency,
            split.join(" / ")
        )?;
        writeln!(
            f,
            "  enqueue: {:.2}s ({:.0} rows/s, bulk)",
            self.enqueue_time.as_secs_f64(),
            self.actions as f64 / self.enqueue_time.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "  first claim -> last completion committed: {:.2}s = {:.0} actions/s",
            self.run_time.as_secs_f64(),
            self.actions_per_second
        )?;
        writeln!(f, "  {} (enqueue included)", self.budget)?;
        if let Some(floor) = &self.floor {
            writeln!(
                f,
                "  host / floor: {:.0} / {:.0} = {:.2}x",
                self.actions_per_second,
                floor.rows_per_second,
                self.actions_per_second / floor.rows_per_second.max(1e-9)
            )?;
        }
        write!(
            f,
            "latency (enqueue -> result committed), {} trickled single actions: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.latencies.len(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies.last().copied().unwrap_or_default())
        )
    }
}

/// Run the benchmark against `db`. See the module docs.
///
/// # Errors
/// The child fails to start or exits early, an action fails, or a phase
/// exceeds its time limit.
pub async fn run(db: &Database, options: &Options) -> Result<Report> {
    if let Some(addr) = options
        .http
        .filter(|a| a.port() != 0 && options.hosts.get() > 1)
    {
        bail!("bench: --http {addr} with --hosts > 1: give port 0, so each host picks its own");
    }
    // The floor first, on a quiet server: no host is running yet.
    let floor = if options.floor_clients > 0 {
        super::vacuum(db.pool()).await?;
        let url = match (&options.database_url, db.embedded()) {
            (Some(url), _) => url.clone(),
            (None, Some(server)) => server.url(crate::db::EMBEDDED_DATABASE),
            (None, None) => bail!("bench: --floor needs the database URL for pgbench"),
        };
        let floor_options = floor::FloorOptions {
            clients: options.floor_clients,
            rows: options.actions,
            url,
        };
        Some(floor::run(db.pool(), &floor_options).await?)
    } else {
        None
    };
    // Hosts that registered before this moment (by the database's clock)
    // are not this bench's children.
    let since: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(db.pool())
        .await?;
    let mut env = Vec::new();
    if let Some(addr) = options.http {
        env.push(("CAIRN_HTTP", addr.to_string()));
    }
    if let Some(threads) = options.host_threads {
        env.push(("CAIRN_THREADS", threads.to_string()));
    }
    let mut children = Vec::with_capacity(options.hosts.get());
    for _ in 0..options.hosts.get() {
        // On an error the children started so far are killed as they drop.
        children.push(ServeChild::start(
            &options.plugins,
            options.concurrency,
            options.database_url.as_deref(),
            env.iter().cloned(),
        )?);
    }
    let outcome = measure(db, options, &mut children, since)
        .await
        .map(|report| Report { floor, ..report });
    for child in children {
        child.stop().await;
    }
    outcome
}

async fn measure(
    db: &Database,
    options: &Options,
    children: &mut [ServeChild],
    since: DateTime<Utc>,
) -> Result<Report> {
    let pool = db.pool();
    let key = options.action.to_string();
    // Wait for every child to register as a live host serving the action.
    let ready_by = Instant::now() + Duration::from_secs(120);
    let hosts: Vec<String> = loop {
        for child in children.iter_mut() {
            child.check_running()?;
        }
        let serving: Vec<String> = sqlx::query_scalar(
            "SELECT host_id FROM cairn.hosts WHERE $1 = ANY (actions) AND started_at >= $2",
        )
        .bind(&key)
        .bind(since)
        .fetch_all(pool)
        .await?;
        if serving.len() >= children.len() {
            break serving;
        }
        if Instant::now() > ready_by {
            bail!(
                "bench: {} of {} `cairn serve` children did not start serving `{key}` (is its plugin in `{}`?)",
                children.len() - serving.len(),
                children.len(),
                options.plugins.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Phase 1: throughput, on a vacuumed table. Listen first, so no
    // completion is missed.
    super::vacuum(pool).await?;
    let mut results = notify::listen(pool, RESULTS_CHANNEL).await?;
    let pids = children.iter().filter_map(ServeChild::pid).collect();
    let watch = cpu::Watch::new(pool, pids).await?;
    let before = watch.sample(pool).await?;
    let client = Client::new(pool.clone());
    let request = EnqueueRequest::for_action(&options.action);
    let started = Instant::now();
    let mut ids: Vec<i64> = Vec::with_capacity(options.actions);
    let mut left = options.actions;
    while left > 0 {
        let n = left.min(ENQUEUE_CHUNK);
        ids.extend(client.enqueue_many(&vec![request.clone(); n]).await?);
        left -= n;
    }
    let enqueue_time = started.elapsed();
    let bar = crate::progress::bar(ids.len() as u64, "throughput", "actions");
    wait_finished(pool, &mut results, &ids, children, started, &bar).await?;
    bar.finish_and_clear();
    let wall = started.elapsed();
    let after = watch.sample(pool).await?;
    drop(results);
    let budget = cpu::Budget::between(&before, &after, ids.len() as u64, wall);
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.actions WHERE id = ANY ($1) AND status <> 'succeeded'",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    if failed > 0 {
        bail!("bench: {failed} actions did not succeed (see `cairn result ID`)");
    }
    let run_seconds: f64 = sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM max(finished_at) - min(started_at))::float8, 0)
         FROM cairn.actions WHERE id = ANY ($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    let run_time = Duration::from_secs_f64(run_seconds.max(1e-6));
    let ran: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT last_host, count(*) FROM cairn.actions WHERE id = ANY ($1) GROUP BY last_host",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut rows_per_host: Vec<i64> = hosts
        .iter()
        .map(|host| {
            ran.iter()
                .find(|(h, _)| h.as_ref() == Some(host))
                .map_or(0, |(_, n)| *n)
        })
        .collect();
    rows_per_host.sort_unstable_by(|a, b| b.cmp(a));

    // Phase 2: latency of trickled single actions.
    let mut listener = notify::listen(pool, RESULTS_CHANNEL).await?;
    let mut latencies = Vec::with_capacity(options.trickle);
    let bar = crate::progress::bar(options.trickle as u64, "latency", "actions");
    for _ in 0..options.trickle {
        let t0 = Instant::now();
        let id = client.enqueue(&request).await?;
        loop {
            let note = tokio::time::timeout(TRICKLE_LIMIT, listener.recv())
                .await
                .map_err(|_| {
                    anyhow!("bench: action {id} did not finish within {TRICKLE_LIMIT:?}")
                })??;
            if notify::finished_ids(note.payload()).any(|done| done == id) {
                break;
            }
        }
        latencies.push(t0.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    latencies.sort();
    Ok(Report {
        actions: options.actions,
        enqueue_time,
        run_time,
        actions_per_second: options.actions as f64 / run_time.as_secs_f64(),
        latencies,
        concurrency: options.concurrency,
        host_threads: options.host_threads,
        rows_per_host,
        budget,
        floor: None,
    })
}

/// Waits until every row of `ids` is finished: counts the ids that
/// `cairn_results` notifications carry (one id or a comma-separated list),
/// and once a second re-reads only the rows not yet seen finished (a lost
/// notification, a dropped connection).
async fn wait_finished(
    pool: &sqlx::PgPool,
    results: &mut PgListener,
    ids: &[i64],
    children: &mut [ServeChild],
    started: Instant,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let mut pending: HashSet<i64> = ids.iter().copied().collect();
    let mut next_poll = tokio::time::Instant::now() + Duration::from_secs(1);
    while !pending.is_empty() {
        match tokio::time::timeout_at(next_poll, results.try_recv()).await {
            Ok(Ok(Some(note))) => {
                for id in notify::finished_ids(note.payload()) {
                    pending.remove(&id);
                }
                continue;
            }
            Ok(Ok(None)) | Err(_) => {} // connection lost, or poll time
            Ok(Err(e)) => return Err(e).context("bench: receiving notifications"),
        }
        for child in children.iter_mut() {
            child.check_running()?;
        }
        let wanted: Vec<i64> = pending.iter().copied().collect();
        let (lo, hi) = (
            wanted.iter().min().copied().unwrap_or(0),
            wanted.iter().max().copied().unwrap_or(0),
        );
        // A range scan of the primary key, in this process's connection
        // only: no parallel workers (each would be a fork).
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
            .execute(&mut *tx)
            .await?;
        let done: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM cairn.actions
             WHERE id BETWEEN $2 AND $3 AND id = ANY ($1)
               AND status IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(&wanted)
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for id in done {
            pending.remove(&id);
        }
        bar.set_position((ids.len() - pending.len()) as u64);
        if started.elapsed() > THROUGHPUT_LIMIT {
            bail!(
                "bench: {} of {} actions not finished within {THROUGHPUT_LIMIT:?}",
                pending.len(),
                ids.len()
            );
        }
        next_poll = tokio::time::Instant::now() + Duration::from_secs(1);
    }
    Ok(())
}
