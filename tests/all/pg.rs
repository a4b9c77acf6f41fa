//! The PostgreSQL fixture: one embedded server for the whole test binary,
//! started through the same mechanism `cairn serve` uses (so the tests
//! exercise it, root and all), and a fresh, migrated database per test.
//!
//! The server is stopped when the test binary exits: an `atexit` hook drops
//! the binary's lease (the last one, so the server stops) and removes the
//! state directory. Rust never drops statics; `atexit` runs on every normal
//! exit, failed tests included. A binary killed outright leaves the server
//! behind (`pg_ctl stop -D /tmp/cairn-test-pg-*/postgres/data` cleans up).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use cairn::db::{EmbeddedOptions, EmbeddedPostgres};
use sqlx::{Connection, PgConnection, PgPool};

struct Shared {
    state_dir: PathBuf,
    server: Mutex<Option<EmbeddedPostgres>>,
    connect: sqlx::postgres::PgConnectOptions,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        let state_dir = StateDir::new("shared").keep();
        let server = EmbeddedPostgres::start(&EmbeddedOptions {
            state_dir: state_dir.clone(),
            keep_running: false,
            server_user: "postgres".into(),
        })
        .unwrap_or_else(|e| panic!("starting the test PostgreSQL server: {e:#}"));
        let connect = server.connect_options("postgres");
        // SAFETY: registers a plain `extern "C" fn` that takes no arguments.
        unsafe { libc::atexit(stop_shared_server) };
        Shared {
            state_dir,
            server: Mutex::new(Some(server)),
            connect,
        }
    })
}

/// At exit: release the binary's lease (stopping the server) and remove its
/// state directory.
extern "C" fn stop_shared_server() {
    let Some(shared) = SHARED.get() else { return };
    let server = match shared.server.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    drop(server);
    let _ = std::fs::remove_dir_all(&shared.state_dir);
}

/// A fresh state directory under the temp dir, searchable by the `postgres`
/// user (the server runs as it when the tests run as root). Removed when
/// dropped.
pub struct StateDir(PathBuf);

impl StateDir {
    /// Creates one; `tag` goes into its name, for whoever finds it.
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairn-test-pg-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a state dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("opening the state dir to the server user");
        StateDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Keeps the directory (the shared server removes its own at exit).
    fn keep(self) -> PathBuf {
        let dir = self.0.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database of its own for one test, migrated, on the shared server.
pub struct TestDb {
    /// A pool on the database.
    pub pool: PgPool,
    /// Its libpq URL, for child processes (`cairn serve --database-url`).
    pub url: String,
}

/// Creates and migrates a fresh database on the shared server.
pub async fn fresh_db() -> Result<TestDb> {
    static N: AtomicU64 = AtomicU64::new(0);
    let shared = shared();
    let name = format!("test_{}", N.fetch_add(1, Ordering::Relaxed));
    let mut admin = PgConnection::connect_with(&shared.connect)
        .await
        .context("connecting to the test server")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating database {name}"))?;
    admin.close().await.ok();
    let pool = cairn::db::pool(shared.connect.clone().database(&name), 8).await?;
    cairn::db::migrate(&pool).await?;
    let url = shared
        .server
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .context("the test server was stopped")?
        .url(&name);
    Ok(TestDb { pool, url })
}
