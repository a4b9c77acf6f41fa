//! Connections of the data path's own, and how it retries when the database
//! goes away.
//!
//! # Strategy
//!
//! The worker's claim loop and completion writer each keep one connection
//! ([`Session`]) instead of borrowing from the pool: they run a statement
//! every few milliseconds under load, and each may carry its own settings
//! (claims commit with `synchronous_commit = off`). A session is opened with
//! a **single** connection attempt. That matters when PostgreSQL restarts:
//! the pool's own connect loop retries a refused or "starting up"
//! connection with a backoff that doubles up to a fifth of the acquire
//! timeout (6 s with cairn's 30 s), so a caller stuck in it resumes seconds
//! after the server is back. A session fails at once instead, and its
//! caller decides when to try again ([`Retry`]).
//!
//! [`Retry`] paces those attempts: while the failure looks like a lost or
//! refused connection ([`is_connection_lost`]) it retries every
//! [`RECONNECT_EVERY`] — a refused connection costs microseconds, so this is
//! no load, and it bounds how late the data path resumes after the server
//! accepts connections again; other failures (a statement the server
//! rejects) back off exponentially up to [`MAX_BACKOFF`] so that a bug does
//! not spin. It logs the first failure of an outage, then at most every
//! [`LOG_EVERY`], and the recovery with the outage's length.
//!
//! # Failure modes
//!
//! A broken session is dropped on the first error and reopened on the next
//! use; a connection attempt that hangs (an unreachable host) gives up after
//! [`CONNECT_TIMEOUT`].

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, PgPool};

use crate::error::one_line;

/// How often the data path retries while the database is unreachable: the
/// longest it may resume late once the server accepts connections again.
pub const RECONNECT_EVERY: Duration = Duration::from_millis(100);

/// Longest pause between retries of a statement the server rejected.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First pause after a rejected statement (then doubling).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// While an outage lasts, log it again this often (not on every retry).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest one connection attempt may take (a host that drops packets
/// would otherwise hold the attempt for the kernel's TCP timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection, opened on first use with the pool's connect options plus
/// session `settings`, dropped after any error. See the module docs.
pub struct Session {
    label: &'static str,
    options: PgConnectOptions,
    conn: Option<PgConnection>,
}

impl Session {
    /// A session on `pool`'s server, as `label` (for errors), with extra
    /// run-time `settings` (e.g. `("synchronous_commit", "off")`).
    pub fn new(pool: &PgPool, label: &'static str, settings: &[(&str, &str)]) -> Self {
        let options = (*pool.connect_options())
            .clone()
            .options(settings.iter().copied());
        Session {
            label,
            options,
            conn: None,
        }
    }

    /// The connection, opened with one attempt if there is none.
    ///
    /// # Errors
    /// The attempt failed or timed out (`<label>: connecting: ...`).
    pub async fn conn(&mut self) -> Result<&mut PgConnection> {
        if self.conn.is_none() {
            let label = self.label;
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)
                .and_then(|c| c)
                .with_context(|| format!("{label}: connecting"))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Forget the connection (after an error: it may be broken or in an
    /// unknown state); the next [`conn`](Self::conn) opens a new one.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

/// Whether `err` says the connection was lost or refused, or the server is
/// shutting down or starting up — the database is away, not refusing the
/// statement.
pub fn is_connection_lost(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // Class 08: connection exception; 57P01-03: admin shutdown,
                // crash shutdown, cannot connect now; 53300: too many
                // connections (the server is still reaping dead ones).
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => cause.downcast_ref::<std::io::Error>().is_some(),
        })
}

/// Pacing and logging of one loop's retries. See the module docs.
pub struct Retry {
    what: &'static str,
    failing_since: Option<Instant>,
    failures: u32,
    logged_at: Option<Instant>,
}

impl Retry {
    /// Retries of `what` (e.g. "completing rows"), for the log lines.
    pub fn new(what: &'static str) -> Self {
        Retry {
            what,
            failing_since: None,
            failures: 0,
            logged_at: None,
        }
    }

    /// Record a failed attempt; returns how long to wait before the next.
    pub fn failed(&mut self, err: &anyhow::Error) -> Duration {
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let lost = is_connection_lost(err);
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            self.logged_at = Some(now);
            let retry = if lost {
                format!("retrying every {RECONNECT_EVERY:?}")
            } else {
                "retrying with backoff".to_owned()
            };
            tracing::error!(
                failing_for = ?now.duration_since(since),
                attempts = self.failures,
                "{}: {}; {retry}",
                self.what,
                one_line(err)
            );
        }
        if lost {
            RECONNECT_EVERY
        } else {
            let doublings = self.failures.saturating_sub(1).min(16);
            (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
        }
    }

    /// Record a successful attempt; logs the recovery after a failure.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                after = ?since.elapsed(),
                attempts = self.failures,
                "{}: the database answers again",
                self.what
            );
        }
        self.failures = 0;
        self.logged_at = None;
    }
}
