//! The benchmarks behind `cairn bench` ([`throughput`], with the pure-SQL
//! [`floor`] and the per-action CPU budget from [`cpu`]), `cairn
//! bench-reload` ([`reload`]) and `cairn bench-sandbox` ([`sandbox`]), and
//! what they share: a real `cairn serve` child process ([`ServeChild`]), run
//! the way an operator runs it.
//!
//! Benchmarks measure; they never assert a speed (numbers, method and machine
//! load go in `docs/benchmarks.md`). Failure modes: the child exiting early,
//! a row failing or a phase exceeding its limit is an error naming what
//! happened; the child is always stopped (SIGTERM, then killed).

pub mod cpu;
pub mod floor;
pub mod reload;
pub mod sandbox;
pub mod throughput;

use anyhow::{Context, Result};
use sqlx::PgPool;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

/// `VACUUM (ANALYZE) cairn.actions`, before a measured phase, as pgbench
/// vacuums its tables before a run: the rows earlier runs finished are then
/// a steady-state table, not a pile of dead index entries. The embedded
/// server lives only as long as the bench, and autovacuum first looks after
/// a minute, so without this every run would inherit all earlier runs'
/// dead tuples (measured: PostgreSQL CPU per action grew from 40 to 220 µs
/// over ten back-to-back runs).
///
/// # Errors
/// The statement fails (`bench: vacuum failed`).
pub async fn vacuum(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql("VACUUM (ANALYZE) cairn.actions")
        .execute(pool)
        .await
        .context("bench: vacuum failed")?;
    Ok(())
}

/// How long a stopping child gets to shut down gracefully before it is
/// killed: its shutdown grace (10 s by default) plus a margin.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// A `cairn serve` child of this process (the same binary), logging at
/// `warn` unless `CAIRN_LOG` says otherwise, serving no HTTP unless `env`
/// sets `CAIRN_HTTP` (an inherited one would skew a measurement). Killed if
/// dropped; stop it with [`ServeChild::stop`] to let it shut down
/// gracefully.
pub struct ServeChild {
    child: tokio::process::Child,
}

impl ServeChild {
    /// Start `cairn serve --plugins plugins --concurrency concurrency`, on
    /// `database_url` if given (otherwise the embedded server found through
    /// the environment, like this process), with the extra environment `env`.
    ///
    /// # Errors
    /// When this binary cannot be found or started.
    pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        plugins: &Path,
        concurrency: usize,
        database_url: Option<&str>,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("bench: locating the cairn binary")?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("serve")
            .arg("--plugins")
            .arg(plugins)
            .arg("--concurrency")
            .arg(concurrency.to_string());
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.env(
            "CAIRN_LOG",
            std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("CAIRN_HTTP")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
        let child = cmd.spawn().context("bench: starting `cairn serve`")?;
        Ok(ServeChild { child })
    }

    /// The child's pid (for measuring its CPU time), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// An error if the child has exited (it should serve until stopped).
    ///
    /// # Errors
    /// The child exited, with its status.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("bench: `cairn serve` exited early with {status}"),
            None => Ok(()),
        }
    }

    /// SIGTERM, then kill after [`STOP_GRACE`].
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: signalling our own child's pid has no memory-safety
            // preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if tokio::time::timeout(STOP_GRACE, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}
