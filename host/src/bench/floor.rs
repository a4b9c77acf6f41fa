//! `cairn bench --floor`: the pure-SQL floor of cairn's storage model.
//!
//! What the queue could do with no host at all: `pgbench` clients
//! (`floor.pgbench`, next to this file) each claim up to 100 rows with the
//! host's own claim (`cairn.claim`, one commit) and mark them succeeded with
//! a small result payload, with the host's own completion statement (one
//! commit). Same server, same settings (fsync and synchronous_commit on),
//! same table, measured the same way as the host: rows / (last `finished_at`
//! − first `started_at`), by the database's clock. The host's throughput
//! divided by this is the share of the storage model's limit that the host
//! reaches.
//!
//! The rows belong to the module `cairn-floor`, which no host serves, so a
//! running host does not take them; they are all finished before the
//! measurement ends (any left over is an error), so they never sit at the
//! head of the queue.
//!
//! Failure modes: no `pgbench` binary (on `PATH` or next to Debian's server
//! binaries) is an error saying so; pgbench failing is an error with its
//! output.

use super::cpu::{self, Budget, Watch};
use anyhow::{anyhow, bail, Context, Result};
use sqlx::PgPool;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The pgbench script (see the module docs).
const SCRIPT: &str = include_str!("floor.pgbench");
/// The module of the floor's rows (served by no host).
pub const FLOOR_MODULE: &str = "cairn-floor";
/// Rows per claim in the script.
const BATCH: usize = 100;

/// What to run.
#[derive(Debug, Clone)]
pub struct FloorOptions {
    /// pgbench clients (connections).
    pub clients: usize,
    /// Rows to push through (rounded up to a multiple of clients × 100).
    pub rows: usize,
    /// libpq URL of the server.
    pub url: String,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct FloorReport {
    /// Rows claimed and completed.
    pub rows: usize,
    /// pgbench clients.
    pub clients: usize,
    /// First claim to last completion, by the database's clock.
    pub run_time: Duration,
    /// `rows / run_time`.
    pub rows_per_second: f64,
    /// CPU and database work per row.
    pub budget: Budget,
    /// pgbench's own CPU per row.
    pub pgbench_cpu: Duration,
}

impl fmt::Display for FloorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "floor (pgbench, {} clients, claim {BATCH} + complete {BATCH} with a result, no host): {} rows",
            self.clients, self.rows
        )?;
        writeln!(
            f,
            "  first claim -> last completion committed: {:.2}s = {:.0} rows/s",
            self.run_time.as_secs_f64(),
            self.rows_per_second
        )?;
        write!(
            f,
            "  {} (host = none; pgbench client {:.1} µs per row)",
            self.budget,
            self.pgbench_cpu.as_secs_f64() * 1e6 / self.rows.max(1) as f64
        )
    }
}

/// Run the floor against `pool`'s database (reached by pgbench at
/// `options.url`).
///
/// # Errors
/// pgbench missing or failing, or a row not finished by the end.
pub async fn run(pool: &PgPool, options: &FloorOptions) -> Result<FloorReport> {
    let pgbench = find_pgbench()?;
    let clients = options.clients.max(1);
    let per_round = clients * BATCH;
    let transactions = options.rows.div_ceil(per_round).max(1);
    let rows = transactions * per_round;

    // Enqueue in SQL, in chunks of 50,000 rows.
    let mut ids: Vec<i64> = Vec::with_capacity(rows);
    let mut left = rows;
    while left > 0 {
        let n = left.min(50_000);
        let chunk: Vec<i64> = sqlx::query_scalar(
            "SELECT unnest(cairn.enqueue_many(array_fill($1::text, array[$2]),
                                              array_fill('noop'::text, array[$2]),
                                              array_fill('\\x'::bytea, array[$2])))",
        )
        .bind(FLOOR_MODULE)
        .bind(i32::try_from(n)?)
        .fetch_all(pool)
        .await
        .context("bench floor: enqueue")?;
        ids.extend(chunk);
        left -= n;
    }

    let watch = Watch::new(pool, Vec::new()).await?;
    let before = watch.sample(pool).await?;
    let children_before = cpu::children_cpu();
    let started = Instant::now();
    // The script goes in on stdin (`-f -`).
    let mut child = tokio::process::Command::new(&pgbench)
        .args(["-n", "-M", "prepared", "-j", "2", "-f", "-"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-t")
        .arg(transactions.to_string())
        .arg(&options.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("bench floor: running `{}`", pgbench.display()))?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("bench floor: pgbench stdin")?;
        stdin
            .write_all(SCRIPT.as_bytes())
            .await
            .context("bench floor: writing the script to pgbench")?;
    }
    let output = child
        .wait_with_output()
        .await
        .context("bench floor: waiting for pgbench")?;
    let wall = started.elapsed();
    let after = watch.sample(pool).await?;
    let pgbench_cpu = cpu::children_cpu().saturating_sub(children_before);
    if !output.status.success() {
        bail!(
            "bench floor: pgbench failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    let (finished, run_seconds): (i64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                coalesce(extract(epoch FROM max(finished_at) - min(started_at))::float8, 0)
         FROM cairn.actions WHERE id = ANY ($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await
    .context("bench floor: reading the result")?;
    if finished as usize != rows {
        return Err(anyhow!(
            "bench floor: only {finished} of {rows} rows succeeded; pgbench said: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        ));
    }
    let run_time = Duration::from_secs_f64(run_seconds.max(1e-6));
    Ok(FloorReport {
        rows,
        clients,
        run_time,
        rows_per_second: rows as f64 / run_time.as_secs_f64(),
        budget: Budget::between(&before, &after, rows as u64, wall),
        pgbench_cpu,
    })
}

/// `pgbench` on `PATH`, else from the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian, Ubuntu).
fn find_pgbench() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("pgbench");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin/pgbench");
            bin.is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!("bench floor: no `pgbench` on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    })
}
