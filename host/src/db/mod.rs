//! The database: which PostgreSQL server cairn uses, and its schema.
//!
//! # Strategy
//!
//! PostgreSQL is both the queue and the way cairn scales out: every host that
//! points at the same server shares one queue. [`Database::connect`] picks
//! the server from [`DbConfig`]:
//!
//! * `CAIRN_DATABASE_URL` (or the CLI's `--database-url`) set: that server.
//! * Otherwise a private server under the state directory, started or joined
//!   through [`embedded`] and reached only on its unix socket, with database
//!   `cairn`. It stops when its last user exits (see [`embedded`]).
//!
//! Either way the migrations in `migrations/` run before the pool is handed
//! out ([`migrate`]); sqlx serializes concurrent migrators with an advisory
//! lock, so many hosts may start at once.
//!
//! # Failure modes
//!
//! Every error names its phase: `database config`, `embedded postgres
//! start`, `database connect`, `database migrate`. A bad environment value is
//! an error, never silently ignored.

pub mod embedded;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use embedded::{EmbeddedOptions, EmbeddedPostgres};

/// The schema migrations, embedded in the binary at build time so that a
/// `cairn` binary can set up any database by itself.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The database the embedded server's users connect to.
pub const EMBEDDED_DATABASE: &str = "cairn";

/// Pool size when not configured: a host's worker needs a few connections
/// (claim, complete, renew, listen) plus one per concurrent `wait`; ten covers
/// that without crowding a shared server (PostgreSQL's default limit is 100).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// How long acquiring a pooled connection may wait before it is an error: a
/// stuck pool should surface, not hang a worker forever.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the database is and how to reach it. Every knob with its
/// environment override is here, read by [`DbConfig::from_env`].
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// An external server (`CAIRN_DATABASE_URL`). `None`: the embedded one.
    pub url: Option<String>,
    /// cairn's state directory (`CAIRN_STATE_DIR`, default `./.cairn`): the
    /// embedded server lives in its `postgres/`.
    pub state_dir: PathBuf,
    /// Leave the embedded server running after the last user exits
    /// (`CAIRN_KEEP_POSTGRES=1`).
    pub keep_running: bool,
    /// The user that runs the embedded server when cairn runs as root
    /// (`CAIRN_POSTGRES_USER`, default `postgres`).
    pub server_user: String,
    /// Pool size (`CAIRN_DB_MAX_CONNECTIONS`, default
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: u32,
}

impl DbConfig {
    /// Reads the configuration from the environment (see the fields for the
    /// variables and defaults). The CLI overrides `url` from
    /// `--database-url` afterwards.
    ///
    /// # Errors
    ///
    /// A variable that is set but not valid (e.g. `CAIRN_KEEP_POSTGRES=maybe`).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables, so that
    /// the parsing is testable without touching the process environment.
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let non_empty = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        let keep_running = match non_empty("CAIRN_KEEP_POSTGRES").as_deref().map(str::trim) {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => bail!(
                "database config: CAIRN_KEEP_POSTGRES must be 1/true/yes or 0/false/no, got {other:?}"
            ),
        };
        let max_connections = match non_empty("CAIRN_DB_MAX_CONNECTIONS") {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => bail!(
                    "database config: CAIRN_DB_MAX_CONNECTIONS must be a positive integer, got {v:?}"
                ),
            },
        };
        Ok(DbConfig {
            url: non_empty("CAIRN_DATABASE_URL"),
            state_dir: non_empty("CAIRN_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".cairn")),
            keep_running,
            server_user: non_empty("CAIRN_POSTGRES_USER").unwrap_or_else(|| "postgres".to_owned()),
            max_connections,
        })
    }

    /// The options for the embedded server this configuration describes.
    pub fn embedded_options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            state_dir: self.state_dir.clone(),
            keep_running: self.keep_running,
            server_user: self.server_user.clone(),
        }
    }
}

/// A migrated connection pool, plus the lease that keeps an embedded server
/// running while this value lives.
#[derive(Debug)]
pub struct Database {
    // Field order is drop order: connections go before the lease may stop
    // the server.
    pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to the configured server (starting or joining the embedded
    /// one when no URL is set) and runs the migrations.
    ///
    /// # Errors
    ///
    /// The embedded server fails to start, the server is unreachable, or a
    /// migration fails; the message names which.
    pub async fn connect(config: DbConfig) -> Result<Self> {
        let (options, embedded) = match &config.url {
            Some(url) => {
                let options: PgConnectOptions = url
                    .parse()
                    .context("database config: CAIRN_DATABASE_URL is not a valid PostgreSQL URL")?;
                (options, None)
            }
            None => {
                let server = EmbeddedPostgres::start_async(config.embedded_options()).await?;
                create_database(&server, EMBEDDED_DATABASE).await?;
                (server.connect_options(EMBEDDED_DATABASE), Some(server))
            }
        };
        let pool = pool(options, config.max_connections).await?;
        migrate(&pool).await?;
        Ok(Database { pool, embedded })
    }

    /// The pool; clone it freely (clones share the connections).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The embedded server, if this database is one.
    pub fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.embedded.as_ref()
    }

    /// Closes the connections gracefully, then releases the embedded
    /// server's lease (stopping it if this was its last user). Dropping does
    /// the same, minus the graceful close.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(server) = self.embedded {
            // Stopping waits for the server: keep it off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
    }
}

/// Opens a pool with cairn's settings.
///
/// # Errors
///
/// When the first connection fails.
pub async fn pool(options: PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("database connect failed")
}

/// Brings the schema up to date (idempotent; safe to run from many hosts at
/// once).
///
/// sqlx records applied migrations in an unqualified `_sqlx_migrations`
/// table, which lands in the first schema of the `search_path` — by default
/// the schema named after the user, so a role named `cairn` would find a
/// different table once schema `cairn` exists, and re-run everything. So the
/// migrations run on a connection of their own with `search_path = cairn`:
/// the bookkeeping lives with the rest of cairn, wherever the role's name.
///
/// # Errors
///
/// When a migration fails or the database has migrations this binary does
/// not know (a newer cairn migrated it).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let fail = "database migrate failed";
    // Detached: the changed search_path must not go back into the pool.
    let mut conn = pool.acquire().await.context(fail)?.detach();
    let mut tx = sqlx::Connection::begin(&mut conn).await.context(fail)?;
    // Serializes concurrent first migrations: CREATE SCHEMA IF NOT EXISTS
    // can still collide on the catalog. The key is an arbitrary constant.
    sqlx::query("SELECT pg_advisory_xact_lock(7240313925612711)")
        .execute(&mut *tx)
        .await
        .context(fail)?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS cairn")
        .execute(&mut *tx)
        .await
        .context(fail)?;
    tx.commit().await.context(fail)?;
    sqlx::query("SET search_path TO cairn")
        .execute(&mut conn)
        .await
        .context(fail)?;
    MIGRATOR.run(&mut conn).await.context(fail)?;
    sqlx::Connection::close(conn).await.ok();
    Ok(())
}

/// Creates `name` on the embedded server unless it exists. Two processes may
/// race here; the loser's "already exists" is success.
async fn create_database(server: &EmbeddedPostgres, name: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&server.connect_options("postgres"))
        .await
        .context("database connect failed: embedded server, database `postgres`")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .context("database connect failed: looking up the embedded database")?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
            // 42P04 duplicate_database; 23505 when the race hits the catalog.
            let raced = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !raced {
                return Err(e).context("database connect failed: creating the embedded database");
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}
