//! Retention against a real PostgreSQL: pruning deletes old finished rows
//! and nothing else (however old a queued or running row is), `--status`
//! narrows it, several pruners at once share the work, `cairn serve` prunes
//! by itself, and a retention of `0` keeps everything.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn::queue::{self, ActionStatus, Client};
use cairn::retention::{self, Retention, RetentionConfig};
use cairn::serve::Host;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::pg::fresh_db;
use crate::support::{
    assert_usage_error, cairn, enqueue, fast_worker, finished, on_a_terminal, serve_options, until,
    InProcess, SOON,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Inserts one row as if it had lived for a while: `status`, finished
/// `finished_days_ago` days ago (`None`: not finished), created a month ago.
/// Rows that are not finished get an absurd old `finished_at` too when
/// `adversarial`: pruning must go by status, not by the timestamp alone.
async fn row(
    pool: &PgPool,
    status: &str,
    finished_days_ago: Option<i32>,
    adversarial: bool,
) -> Result<i64> {
    let running = status == "running";
    let id = sqlx::query_scalar(
        r#"
        INSERT INTO cairn.actions
            (module, name, status, created_at, run_at, finished_at, lease_owner, lease_expires_at)
        VALUES ('old', 'row', $1, now() - interval '30 days',
                CASE WHEN $1 = 'queued' THEN now() + interval '30 days' ELSE now() - interval '30 days' END,
                CASE WHEN $2::int IS NOT NULL THEN now() - $2::int * interval '1 day'
                     WHEN $3 THEN now() - interval '30 days' END,
                CASE WHEN $4 THEN 'some-host' END,
                CASE WHEN $4 THEN now() + interval '1 hour' END)
        RETURNING id
        "#,
    )
    .bind(status)
    .bind(finished_days_ago)
    .bind(adversarial)
    .bind(running)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

async fn ids(pool: &PgPool) -> Result<BTreeSet<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM cairn.actions")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect())
}

/// The rows of every kind a retention test needs; returns `(old finished
/// by status, everything that must survive a 7-day retention)`.
async fn population(pool: &PgPool) -> Result<(Vec<(ActionStatus, i64)>, BTreeSet<i64>)> {
    let mut old = Vec::new();
    for status in queue::FINISHED {
        for _ in 0..3 {
            old.push((status, row(pool, status.as_str(), Some(10), false).await?));
        }
    }
    let mut keep = BTreeSet::new();
    for status in queue::FINISHED {
        keep.insert(row(pool, status.as_str(), Some(1), false).await?);
    }
    // A queued row delayed by a month, created a month ago, and a running
    // row: live, whatever their timestamps say.
    keep.insert(row(pool, "queued", None, false).await?);
    keep.insert(row(pool, "queued", None, true).await?);
    keep.insert(row(pool, "running", None, true).await?);
    Ok((old, keep))
}

#[tokio::test]
async fn prune_deletes_old_finished_rows_and_never_a_live_or_recent_one() -> Result<()> {
    let db = fresh_db().await?;
    let (old, keep) = population(&db.pool).await?;
    // More than one batch: the loop must go on while batches are full.
    sqlx::query(
        "INSERT INTO cairn.actions (module, name, status, finished_at)
         SELECT 'bulk', 'row', 'succeeded', now() - interval '8 days'
         FROM generate_series(1, $1)",
    )
    .bind(i64::from(queue::PRUNE_BATCH) * 2 + 17)
    .execute(&db.pool)
    .await?;

    let pruned = retention::prune_all(&db.pool, 7 * DAY, &queue::FINISHED, false, |_| {}).await?;
    ensure!(
        pruned == old.len() as u64 + u64::from(queue::PRUNE_BATCH) * 2 + 17,
        "pruned {pruned}"
    );
    ensure!(
        ids(&db.pool).await? == keep,
        "left {:?}",
        ids(&db.pool).await?
    );
    // Nothing left to do.
    ensure!(retention::prune_all(&db.pool, 7 * DAY, &queue::FINISHED, false, |_| {}).await? == 0);
    Ok(())
}

#[tokio::test]
async fn prune_by_status_deletes_only_that_status() -> Result<()> {
    let db = fresh_db().await?;
    let (old, keep) = population(&db.pool).await?;
    let pruned =
        retention::prune_all(&db.pool, 7 * DAY, &[ActionStatus::Failed], false, |_| {}).await?;
    ensure!(pruned == 3, "pruned {pruned}");
    let expected: BTreeSet<i64> = old
        .iter()
        .filter(|(s, _)| *s != ActionStatus::Failed)
        .map(|(_, id)| *id)
        .chain(keep.iter().copied())
        .collect();
    ensure!(ids(&db.pool).await? == expected);
    // Asking to prune a live status is a caller's bug, refused.
    let err = queue::prune(&db.pool, DAY, &[ActionStatus::Queued], 10)
        .await
        .err()
        .context("pruned queued rows")?;
    ensure!(format!("{err:#}").contains("only finished rows"), "{err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_pruners_at_once_share_the_backlog_without_conflict() -> Result<()> {
    let db = fresh_db().await?;
    let n: i64 = 20_000;
    sqlx::query(
        "INSERT INTO cairn.actions (module, name, status, finished_at)
         SELECT 'bulk', 'row', 'succeeded', now() - interval '8 days'
         FROM generate_series(1, $1)",
    )
    .bind(n)
    .execute(&db.pool)
    .await?;
    let pruners: Vec<_> = (0..4)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                retention::prune_all(&pool, 7 * DAY, &queue::FINISHED, false, |_| {}).await
            })
        })
        .collect();
    let mut total = 0;
    for p in pruners {
        total += p.await??;
    }
    // Each row deleted exactly once, none left, no pruner failed.
    ensure!(total == n as u64, "the pruners deleted {total} of {n}");
    ensure!(ids(&db.pool).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prunes_past_its_retention_and_retention_zero_keeps_everything() -> Result<()> {
    // "0" is forever, in every spelling; other durations are the grammar's.
    ensure!("0".parse::<Retention>()? == Retention::Forever);
    ensure!("0s".parse::<Retention>()? == Retention::Forever);
    ensure!("168h".parse::<Retention>()? == Retention::For(7 * DAY));
    ensure!(Retention::default() == Retention::For(7 * DAY));
    ensure!("7".parse::<Retention>().is_err() && "1d".parse::<Retention>().is_err());

    let db = fresh_db().await?;
    let (_, keep) = population(&db.pool).await?;
    let before = ids(&db.pool).await?;

    // Retention 0: no pruner at all. The host runs an action (its pruner,
    // were there one, starts before its worker); every row is still there.
    let forever = RetentionConfig {
        keep: Retention::Forever,
        every: Duration::from_millis(10),
    };
    ensure!(retention::spawn_pruner(db.pool.clone(), forever).is_none());
    let (mut options, dir) = serve_options(&["noop"], fast_worker());
    options.retention = forever;
    let host = InProcess::run(
        &db.pool,
        Host::start(options, db.pool.clone()).await?,
        Some(dir),
    )
    .await?;
    let client = Client::new(db.pool.clone());
    let noop = enqueue(&client, "noop:noop", json!({})).await?;
    let done = finished(&client, noop, SOON).await?;
    ensure!(done.status == ActionStatus::Succeeded, "{done:?}");
    let mut expected = before.clone();
    expected.insert(noop);
    ensure!(ids(&db.pool).await? == expected, "retention 0 deleted rows");
    host.stop(SOON).await?;

    // A week: the old finished rows go, by themselves; the rest stay.
    let (mut options, dir) = serve_options(&["noop"], fast_worker());
    options.retention = RetentionConfig {
        keep: Retention::For(7 * DAY),
        every: Duration::from_millis(50),
    };
    let host = InProcess::run(
        &db.pool,
        Host::start(options, db.pool.clone()).await?,
        Some(dir),
    )
    .await?;
    let mut expected = keep.clone();
    expected.insert(noop); // finished just now
    until("the host to prune the old finished rows", SOON, || async {
        Ok((ids(&db.pool).await? == expected).then_some(()))
    })
    .await?;
    host.stop(SOON).await?;
    Ok(())
}

#[tokio::test]
async fn cairn_prune_reports_what_it_removed_and_refuses_bad_input() -> Result<()> {
    let db = fresh_db().await?;
    let (old, _) = population(&db.pool).await?;
    let prune = |args: &[&str]| {
        cairn()
            .arg("prune")
            .args(args)
            .args(["--database-url", &db.url])
            .output()
    };
    let out = prune(&[
        "--older-than",
        "168h",
        "--status",
        "failed",
        "--status",
        "cancelled",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        printed["pruned"] == 6 && printed["older_than"] == "168h",
        "{printed}"
    );
    ensure!(printed["statuses"] == json!(["failed", "cancelled"]));
    let out = prune(&["--older-than", "168h"])?;
    let printed: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(printed["pruned"] == old.len() - 6, "{printed}");

    // A bad duration, an unknown or live status: one `error:` line, exit 2.
    for (args, needle) in [
        (&["--older-than", "7"][..], "--older-than"),
        (&["--older-than", "1d"][..], "--older-than"),
        (
            &["--older-than", "1h", "--status", "running"][..],
            "running",
        ),
        (&["--older-than", "1h", "--status", "bogus"][..], "bogus"),
    ] {
        assert_usage_error(&prune(args)?, needle);
    }
    // `serve --retention` takes the same grammar.
    let out = cairn()
        .args(["serve", "--plugins", "nowhere", "--retention", "7"])
        .output()?;
    ensure!(
        out.status.code() == Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn prune_draws_a_progress_bar_only_on_a_terminal() -> Result<()> {
    let db = fresh_db().await?;
    let (old, _) = population(&db.pool).await?;
    // Piped: the JSON line and nothing else.
    let out = cairn()
        .args(["prune", "--older-than", "168h", "--status", "failed"])
        .args(["--database-url", &db.url])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{err}");
    ensure!(
        !err.contains("prune [") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    // On a terminal (script(1) gives the command a pty): a bar, then the
    // same JSON line.
    let out = on_a_terminal(&["prune", "--older-than", "168h", "--database-url", &db.url])?;
    let screen = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{screen}");
    ensure!(screen.contains("prune ["), "a progress bar: {screen:?}");
    ensure!(
        screen.contains(&format!("\"pruned\":{}", old.len() - 3)),
        "{screen:?}"
    );
    Ok(())
}
