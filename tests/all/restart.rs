//! PostgreSQL restarting under load: two `cairn serve` hosts work through
//! thousands of rows on a server of the test's own (a private embedded
//! PostgreSQL, not the shared test server), which the test crashes with
//! `pg_ctl stop -m immediate` and starts again, three times, mid-run.
//!
//! Every row must finish, none may fail, and a row may run twice only where
//! a host lost its lease on it (here: its claim, committed asynchronously,
//! was lost in the crash — see `worker.rs`); no lease may expire (the
//! outage is far shorter than the lease), and no host may die.
//!
//! The test also prints, per restart, how long after the server accepted
//! connections again each host claimed and completed rows (`--nocapture`
//! shows it; the numbers are in docs/benchmarks.md). It asserts the issue's
//! bound: each host claims again within [`RESUME_WITHIN`] of the server
//! accepting connections. That is a behaviour, not a speed target: a host
//! retries every 100 ms while the server is away (`db/session.rs`), so the
//! bound has a twentyfold margin on a loaded machine; before that retry,
//! a host waited out the pool's connect backoff and resumed 1.8–6.2 s late.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn::db::{Database, DbConfig};
use cairn::queue::Client;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::pg::{StateDir, TestDb};
use crate::support::{plugin_dir, request, until, Serve, SOON};

/// Rows, per-row sleep and per-host concurrency: about four seconds of
/// work for two hosts, so that three restarts fall well inside the run.
const ROWS: usize = 3_000;
const NAP_MS: u64 = 20;
const CONCURRENCY: &str = "8";

/// When to crash the server: after this share of the rows has finished.
const CRASH_AT: [f64; 3] = [0.2, 0.5, 0.8];

/// Each host must claim again within this of the server accepting
/// connections (issue 9).
const RESUME_WITHIN_MS: i64 = 2_000;
const RESUME_WITHIN: Duration = Duration::from_millis(RESUME_WITHIN_MS as u64);

async fn finished_count(pool: &PgPool) -> Result<usize> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cairn.actions WHERE status IN ('succeeded', 'failed', 'cancelled')",
    )
    .fetch_one(pool)
    .await?;
    Ok(n as usize)
}

/// What one restart looked like, by the database's clock.
#[derive(Debug)]
struct Resumption {
    /// The server accepted connections again (first successful probe).
    ready: DateTime<Utc>,
    /// Per host: its first claim after `ready`, and the first completion of
    /// a row it held across the crash, in ms after `ready`.
    claim_ms: BTreeMap<String, i64>,
    complete_ms: BTreeMap<String, i64>,
}

/// Crash the server, start it again, and watch both hosts resume.
async fn crash_and_watch(
    db: &Database,
    connect: &sqlx::postgres::PgConnectOptions,
    hosts: &[&str],
) -> Result<Resumption> {
    let server = db.embedded().context("not embedded")?;
    // pg_ctl blocks: block_in_place lets the runtime's other thread run the
    // probe meanwhile.
    tokio::task::block_in_place(|| server.crash())?;
    // Start it again while a probe finds the first moment it accepts
    // connections.
    let probe = {
        let connect = connect.clone();
        tokio::spawn(async move {
            // Polls more often than `until`: this instant is what the
            // resumption times are measured from.
            let deadline = std::time::Instant::now() + SOON;
            loop {
                if let Ok(mut conn) = PgConnection::connect_with(&connect).await {
                    let now: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT clock_timestamp()")
                        .fetch_one(&mut conn)
                        .await
                        .ok();
                    conn.close().await.ok();
                    if let Some(now) = now {
                        return Ok(now);
                    }
                }
                ensure!(
                    std::time::Instant::now() < deadline,
                    "the server did not accept connections within {SOON:?}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::task::block_in_place(|| server.restart())?;
    let ready: DateTime<Utc> = probe.await??;

    let pool = db.pool();
    // Rows each host held (committed claims) across the crash: its writer
    // completes them once the server is back.
    let mut held: HashMap<String, Vec<i64>> = HashMap::new();
    for r in sqlx::query(
        "SELECT lease_owner, id FROM cairn.actions WHERE status = 'running' AND started_at < $1",
    )
    .bind(ready)
    .fetch_all(pool)
    .await?
    {
        held.entry(r.try_get("lease_owner")?)
            .or_default()
            .push(r.try_get("id")?);
    }
    let seen = std::cell::RefCell::new(Resumption {
        ready,
        claim_ms: BTreeMap::new(),
        complete_ms: BTreeMap::new(),
    });
    let owner_of = |owner: &str| {
        hosts
            .iter()
            .find(|h| owner.contains(*h))
            .map(|h| h.to_string())
    };
    until("both hosts to claim again after the restart", SOON, || {
        let (seen, held, owner_of) = (&seen, &held, &owner_of);
        async move {
            // `last_host` (migration 0006) stays set once the row
            // finishes: a claim is seen even if its rows are done by now.
            let claims = sqlx::query(
                "SELECT last_host AS lease_owner, min(started_at) AS first FROM cairn.actions
                 WHERE started_at >= $1 AND last_host IS NOT NULL GROUP BY last_host",
            )
            .bind(ready)
            .fetch_all(pool)
            .await?;
            let mut completions = Vec::new();
            for (owner, ids) in held {
                let first: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT min(finished_at) FROM cairn.actions WHERE id = ANY ($1)",
                )
                .bind(ids)
                .fetch_one(pool)
                .await?;
                completions.extend(first.map(|f| (owner.clone(), f)));
            }
            let mut seen = seen.borrow_mut();
            for r in claims {
                let owner: String = r.try_get("lease_owner")?;
                let first: DateTime<Utc> = r.try_get("first")?;
                if let Some(host) = owner_of(&owner) {
                    seen.claim_ms
                        .entry(host)
                        .or_insert((first - ready).num_milliseconds());
                }
            }
            for (owner, first) in completions {
                if let Some(host) = owner_of(&owner) {
                    seen.complete_ms
                        .entry(host)
                        .or_insert((first - ready).num_milliseconds());
                }
            }
            Ok((seen.claim_ms.len() == hosts.len()).then_some(()))
        }
    })
    .await?;
    let seen = seen.into_inner();
    Ok(seen)
}

/// `ran action <id>` lines in a host's log: how many times it ran each row.
fn runs(log: &str, into: &mut BTreeMap<i64, u32>) {
    for line in log.lines() {
        if let Some(rest) = line.split("ran action ").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(id) = digits.parse() {
                *into.entry(id).or_default() += 1;
            }
        }
    }
}

/// Rows a host says it lost its lease on: completions it was refused
/// (`lost=[...]`) and attempts it abandoned or whose outcome it dropped
/// (`action_id=N` on a line saying it lost its lease).
fn lost_leases(log: &str, into: &mut BTreeSet<i64>) {
    for line in log.lines() {
        if let Some(list) = line.split("lost=[").nth(1) {
            let list = list.split(']').next().unwrap_or_default();
            into.extend(
                list.split(',')
                    .filter_map(|id| id.trim().parse::<i64>().ok()),
            );
        }
        if line.contains("lost the lease") || line.contains("lost its lease") {
            if let Some(rest) = line.split("action_id=").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                into.extend(digits.parse::<i64>().ok());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_finish_every_row_across_postgres_crashes() -> Result<()> {
    let state = StateDir::new("restart");
    let db = Database::connect(DbConfig {
        url: None,
        state_dir: state.path().to_owned(),
        keep_running: false,
        server_user: "postgres".into(),
        max_connections: 4,
    })
    .await?;
    let server = db.embedded().context("not embedded")?;
    let connect = server.connect_options("cairn");
    let test_db = TestDb {
        pool: db.pool().clone(),
        url: server.url("cairn"),
    };
    // A lease far longer than any outage here: no lease may expire.
    let extra = ["--lease", "30s", "--concurrency", CONCURRENCY];
    let mut hosts = [
        Serve::start_in(&test_db, plugin_dir(&["sleepy"]), &extra).await?,
        Serve::start_in(&test_db, plugin_dir(&["sleepy"]), &extra).await?,
    ];
    let ids_of_hosts: Vec<String> = crate::support::host_ids(db.pool()).await?;
    let names: Vec<String> = ids_of_hosts
        .iter()
        .filter(|id| hosts.iter().any(|h| h.is(id)))
        .cloned()
        .collect();
    ensure!(names.len() == 2, "hosts {ids_of_hosts:?}");
    let host_refs: Vec<&str> = names.iter().map(String::as_str).collect();

    let client = Client::new(db.pool().clone());
    let nap = request("sleepy:nap_and_say", serde_json::json!({"ms": NAP_MS}))?;
    let ids = client.enqueue_many(&vec![nap; ROWS]).await?;

    let mut report = Vec::new();
    for share in CRASH_AT {
        let at = (ROWS as f64 * share) as usize;
        until(
            "enough rows to finish before the crash",
            Duration::from_secs(120),
            || async { Ok((finished_count(db.pool()).await? >= at).then_some(())) },
        )
        .await?;
        let left = ROWS - finished_count(db.pool()).await?;
        ensure!(
            left > ROWS / 20,
            "only {left} rows left at the crash: the hosts ran faster than this test assumes"
        );
        let seen = crash_and_watch(&db, &connect, &host_refs).await?;
        report.push(seen);
        for host in &mut hosts {
            ensure!(host.running()?, "a host died: {}", host.stderr_text());
        }
    }
    until("every row to finish", Duration::from_secs(120), || async {
        Ok((finished_count(db.pool()).await? == ROWS).then_some(()))
    })
    .await?;

    for (k, seen) in report.iter().enumerate() {
        eprintln!(
            "restart {}: ready at {:?}; first claim after ready (ms) {:?}; first completion of a row held across the crash (ms) {:?}",
            k + 1,
            seen.ready,
            seen.claim_ms,
            seen.complete_ms
        );
    }

    // Every row succeeded on its first counted attempt: none failed, none
    // was retried, none was rescued (its lease never expired).
    let bad: Vec<(i64, String, i32, bool)> = sqlx::query(
        "SELECT id, status, attempts, error IS NOT NULL AS has_error FROM cairn.actions
         WHERE status <> 'succeeded' OR attempts <> 1 OR error IS NOT NULL ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?
    .into_iter()
    .map(|r| -> Result<_> {
        Ok((
            r.try_get("id")?,
            r.try_get("status")?,
            r.try_get("attempts")?,
            r.try_get("has_error")?,
        ))
    })
    .collect::<Result<_>>()?;
    ensure!(bad.is_empty(), "rows not cleanly succeeded: {bad:?}");

    // Stop the hosts gracefully so that their logs are complete.
    for host in &mut hosts {
        host.signal(libc::SIGTERM)?;
        host.exit_within(SOON).await?;
    }
    let (mut ran, mut lost) = (BTreeMap::new(), BTreeSet::new());
    for host in &hosts {
        let log = host.stderr_text();
        runs(&log, &mut ran);
        lost_leases(&log, &mut lost);
    }
    let never: Vec<&i64> = ids.iter().filter(|id| !ran.contains_key(id)).collect();
    ensure!(never.is_empty(), "rows that never ran: {never:?}");
    let twice: Vec<(i64, u32)> = ran
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, n)| (*i, *n))
        .collect();
    let unexplained: Vec<&(i64, u32)> = twice.iter().filter(|(id, _)| !lost.contains(id)).collect();
    eprintln!(
        "{} rows ran more than once, each where its host lost its lease (a claim lost in a crash)",
        twice.len()
    );
    ensure!(
        unexplained.is_empty(),
        "rows that ran more than once though no host lost its lease on them: {unexplained:?}"
    );
    for seen in &report {
        for (host, ms) in &seen.claim_ms {
            ensure!(
                *ms <= RESUME_WITHIN_MS,
                "{host} claimed again only {ms} ms after the server accepted connections \
                 (more than {RESUME_WITHIN:?}): {seen:?}"
            );
        }
    }
    drop(db);
    Ok(())
}
