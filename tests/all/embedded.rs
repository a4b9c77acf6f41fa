//! The embedded PostgreSQL server's lifecycle, each test on a state
//! directory of its own: users share one server, the last one out stops it,
//! dead users do not count, and `keep_running` leaves it up.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use cairn::db::{Database, DbConfig, EmbeddedOptions, EmbeddedPostgres};

use crate::pg::StateDir;
use crate::support::lookup;

fn config(state_dir: &Path, keep_running: bool) -> DbConfig {
    DbConfig {
        url: None,
        state_dir: state_dir.to_owned(),
        keep_running,
        server_user: "postgres".into(),
        max_connections: 2,
    }
}

fn server_pid(state_dir: &Path) -> Option<String> {
    std::fs::read_to_string(state_dir.join("postgres/data/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
}

async fn start_time(db: &Database) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(sqlx::query_scalar("SELECT pg_postmaster_start_time()")
        .fetch_one(db.pool())
        .await?)
}

#[tokio::test]
async fn second_connect_reuses_the_server_and_the_last_user_stops_it() -> Result<()> {
    let state = StateDir::new("reuse");
    let dir = state.path().to_owned();
    let first = Database::connect(config(&dir, false)).await?;
    let second = Database::connect(config(&dir, false)).await?;
    ensure!(
        start_time(&first).await? == start_time(&second).await?,
        "two servers started"
    );
    let embedded = first.embedded().context("not embedded")?;
    ensure!(embedded.socket_dir().starts_with(&dir));
    // Only on the unix socket: no TCP listener configured.
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(first.pool())
        .await?;
    ensure!(listen.is_empty(), "listen_addresses = {listen:?}");
    // The schema is there.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.actions")
        .fetch_one(first.pool())
        .await?;
    ensure!(n == 0);

    first.close().await;
    ensure!(server_pid(&dir).is_some(), "stopped while a user remained");
    sqlx::query("SELECT 1").execute(second.pool()).await?;
    second.close().await;
    ensure!(
        server_pid(&dir).is_none(),
        "still running after the last user left"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_users_lease_does_not_keep_the_server_running() -> Result<()> {
    let state = StateDir::new("stale");
    let dir = state.path().to_owned();
    let db = Database::connect(config(&dir, false)).await?;
    // A lease file nobody holds a lock on: what a crashed user leaves.
    std::fs::write(dir.join("postgres/users/999999-0"), b"")?;
    db.close().await;
    ensure!(
        server_pid(&dir).is_none(),
        "a dead user's lease kept the server up"
    );
    ensure!(
        !dir.join("postgres/users/999999-0").exists(),
        "stale lease not cleaned"
    );
    Ok(())
}

#[tokio::test]
async fn keep_running_leaves_the_server_up_for_the_next_user() -> Result<()> {
    let state = StateDir::new("keep");
    let dir = state.path().to_owned();
    let db = Database::connect(config(&dir, true)).await?;
    let started = start_time(&db).await?;
    db.close().await;
    ensure!(server_pid(&dir).is_some(), "stopped despite keep_running");
    // The next user adopts it, and (not keeping it) stops it on the way out.
    let db = Database::connect(config(&dir, false)).await?;
    ensure!(
        start_time(&db).await? == started,
        "restarted instead of reused"
    );
    db.close().await;
    ensure!(server_pid(&dir).is_none());
    Ok(())
}

#[tokio::test]
async fn concurrent_starts_share_one_server() -> Result<()> {
    let state = StateDir::new("race");
    let dir = state.path().to_owned();
    let options = EmbeddedOptions {
        state_dir: dir.clone(),
        keep_running: false,
        server_user: "postgres".into(),
    };
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let options = options.clone();
            std::thread::spawn(move || EmbeddedPostgres::start(&options))
        })
        .collect();
    let servers = starts
        .into_iter()
        .map(|t| t.join().expect("start thread panicked"))
        .collect::<Result<Vec<_>>>()?;
    let pid = server_pid(&dir).context("no server")?;
    ensure!(servers.iter().all(|s| s.is_running()));
    drop(servers);
    ensure!(
        server_pid(&dir).as_deref() != Some(pid.as_str()),
        "server left running"
    );
    Ok(())
}

#[test]
fn config_reads_the_environment_and_rejects_bad_values() -> Result<()> {
    let default = DbConfig::from_lookup(lookup(&[]))?;
    ensure!(default.url.is_none() && default.state_dir == Path::new(".cairn"));
    ensure!(!default.keep_running && default.server_user == "postgres");
    let set = DbConfig::from_lookup(lookup(&[
        ("CAIRN_DATABASE_URL", "postgres://u@h/db"),
        ("CAIRN_STATE_DIR", "/var/lib/cairn"),
        ("CAIRN_KEEP_POSTGRES", "1"),
        ("CAIRN_DB_MAX_CONNECTIONS", "3"),
    ]))?;
    ensure!(set.url.as_deref() == Some("postgres://u@h/db") && set.keep_running);
    ensure!(set.state_dir == Path::new("/var/lib/cairn") && set.max_connections == 3);
    let bad = DbConfig::from_lookup(lookup(&[("CAIRN_KEEP_POSTGRES", "maybe")]));
    ensure!(format!("{:#}", bad.err().context("accepted")?).contains("CAIRN_KEEP_POSTGRES"));
    ensure!(DbConfig::from_lookup(lookup(&[("CAIRN_DB_MAX_CONNECTIONS", "0")])).is_err());
    Ok(())
}

#[tokio::test]
async fn an_unreachable_state_dir_is_a_clear_error() -> Result<()> {
    // Only meaningful as root, where the server runs as `postgres`.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    let state = StateDir::new("private");
    let dir = state.path().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let err = Database::connect(config(&dir.join("inner"), false))
        .await
        .err()
        .context("started under a directory postgres cannot enter")?;
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("cannot enter") && msg.contains("CAIRN_STATE_DIR"),
        "{msg}"
    );
    Ok(())
}
