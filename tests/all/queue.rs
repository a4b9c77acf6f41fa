//! The queue operations against a real PostgreSQL (one fresh database per
//! test): claim order and limits, SKIP LOCKED, lease-guarded completion,
//! retries, rescues, idempotency, delays, the unknown-action rule, NOTIFY and
//! `wait`.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn::key::ActionKey;
use cairn::queue::{
    self, ActionStatus, ClaimedAction, Client, Completion, EnqueueRequest, ServedAction,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::pg::{fresh_db, TestDb};
use crate::support::{until, SOON};

const LEASE: Duration = Duration::from_secs(30);

fn served(keys: &[(&str, &str)]) -> Vec<ServedAction> {
    keys.iter()
        .map(|(m, n)| ServedAction {
            key: ActionKey::new(*m, *n),
            max_attempts: 3,
        })
        .collect()
}

async fn claim_all(
    pool: &PgPool,
    owner: &str,
    keys: &[(&str, &str)],
) -> Result<Vec<ClaimedAction>> {
    queue::claim(pool, owner, 1000, LEASE, &served(keys)).await
}

/// Waits until a rescue (`requeue_expired`) takes back some row, as it does
/// once a lease the test made expire at once is in the past by the
/// database's clock; returns what it rescued.
async fn rescued(pool: &PgPool, error: &[u8]) -> Result<Vec<queue::Rescued>> {
    until("a rescue of the expired lease", SOON, || async {
        let rescued = queue::requeue_expired(pool, error).await?;
        Ok((!rescued.is_empty()).then_some(rescued))
    })
    .await
}

/// Waits until a claim for `keys` takes some row (once it is due); returns
/// the rows claimed.
async fn claimed(pool: &PgPool, owner: &str, keys: &[(&str, &str)]) -> Result<Vec<ClaimedAction>> {
    until("a due row to be claimed", SOON, || async {
        let claimed = claim_all(pool, owner, keys).await?;
        Ok((!claimed.is_empty()).then_some(claimed))
    })
    .await
}

async fn status(pool: &PgPool, id: i64) -> Result<ActionStatus> {
    Ok(Client::new(pool.clone())
        .result(id)
        .await?
        .context("row vanished")?
        .status)
}

#[tokio::test]
async fn claim_takes_rows_by_priority_then_run_at_then_id() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let past = Utc::now() - chrono::Duration::seconds(60);
    let earlier = Utc::now() - chrono::Duration::seconds(120);
    let a = client
        .enqueue(&EnqueueRequest::new("m", "a").priority(5))
        .await?;
    let b = client
        .enqueue(&EnqueueRequest::new("m", "a").priority(1).run_at(past))
        .await?;
    let c = client
        .enqueue(&EnqueueRequest::new("m", "a").priority(1).run_at(earlier))
        .await?;
    let d = client
        .enqueue(&EnqueueRequest::new("m", "a").priority(1).run_at(past))
        .await?;
    let e = client
        .enqueue(&EnqueueRequest::new("m", "a").priority(-3))
        .await?;
    let order: Vec<i64> = claim_all(&db.pool, "h", &[("m", "a")])
        .await?
        .iter()
        .map(|c| c.id)
        .collect();
    ensure!(order == vec![e, c, b, d, a], "claimed in order {order:?}");
    Ok(())
}

#[tokio::test]
async fn claim_returns_at_most_limit_rows() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    for _ in 0..10 {
        client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    }
    let first = queue::claim(&db.pool, "host-1", 4, LEASE, &served(&[("m", "a")])).await?;
    ensure!(first.len() == 4, "claimed {}", first.len());
    let rest = queue::claim(&db.pool, "host-2", 100, LEASE, &served(&[("m", "a")])).await?;
    ensure!(rest.len() == 6, "then claimed {}", rest.len());
    ensure!(
        queue::claim(&db.pool, "host-2", 0, LEASE, &served(&[("m", "a")]))
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn claim_stamps_the_lease_and_counts_the_attempt() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    for _ in 0..10 {
        client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    }
    let first = queue::claim(&db.pool, "host-1", 4, LEASE, &served(&[("m", "a")])).await?;
    let c = &first[0];
    ensure!(c.attempt == 1 && c.max_attempts == 3, "{c:?}");
    ensure!(
        c.lease_expires_at > Utc::now() + chrono::Duration::seconds(25),
        "{c:?}"
    );
    let (owner, running): (Option<String>, i64) = sqlx::query_as(
        "SELECT max(lease_owner), count(*) FROM cairn.actions WHERE status = 'running'",
    )
    .fetch_one(&db.pool)
    .await?;
    ensure!(owner.as_deref() == Some("host-1") && running == 4);
    Ok(())
}

#[tokio::test]
async fn claim_leaves_rows_of_actions_the_host_does_not_serve() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let mine = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    let other_name = client.enqueue(&EnqueueRequest::new("m", "b")).await?;
    // `m:a` vs `ma:` style confusion must not match either.
    let other_module = client.enqueue(&EnqueueRequest::new("m:a", "x")).await?;
    let claimed = claim_all(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(claimed.iter().map(|c| c.id).collect::<Vec<_>>() == vec![mine]);
    ensure!(status(&db.pool, other_name).await? == ActionStatus::Queued);
    ensure!(status(&db.pool, other_module).await? == ActionStatus::Queued);
    Ok(())
}

#[tokio::test]
async fn row_overrides_of_max_attempts_win_over_the_served_default() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client
        .enqueue(&EnqueueRequest::new("m", "a").max_attempts(7))
        .await?;
    let claimed = claim_all(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(
        claimed[0].id == id && claimed[0].max_attempts == 7,
        "{:?}",
        claimed[0]
    );
    Ok(())
}

#[tokio::test]
async fn two_concurrent_claimers_never_claim_the_same_row() -> Result<()> {
    const ROWS: usize = 2000;
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let requests: Vec<_> = (0..ROWS).map(|_| EnqueueRequest::new("m", "a")).collect();
    client.enqueue_many(&requests).await?;
    let worker = |owner: &'static str| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = queue::claim(&pool, owner, 25, LEASE, &served(&[("m", "a")])).await?;
                if batch.is_empty() {
                    return anyhow::Ok(mine);
                }
                let done: Vec<_> = batch
                    .iter()
                    .map(|c| Completion::succeeded(c.id, vec![]))
                    .collect();
                let written = queue::complete(&pool, owner, &done).await?;
                ensure!(written.len() == batch.len(), "{owner} lost rows it owned");
                mine.extend(batch.iter().map(|c| c.id));
            }
        })
    };
    let (a, b) = (worker("host-a"), worker("host-b"));
    let (a, b) = (a.await??, b.await??);
    let all: HashSet<i64> = a.iter().chain(&b).copied().collect();
    ensure!(
        a.len() + b.len() == ROWS,
        "claimed {} + {} rows",
        a.len(),
        b.len()
    );
    ensure!(all.len() == ROWS, "some row was claimed twice");
    ensure!(
        !a.is_empty() && !b.is_empty(),
        "one claimer got nothing: {} / {}",
        a.len(),
        b.len()
    );
    Ok(())
}

/// 30 due rows of each of two actions, enqueued alternately (so the best
/// rows in claim order, lowest id first, alternate between the two); the
/// ids in claim order.
async fn two_kinds_interleaved(client: &Client) -> Result<Vec<i64>> {
    let requests: Vec<_> = (0..60)
        .map(|i| EnqueueRequest::new("k", if i % 2 == 0 { "x" } else { "y" }))
        .collect();
    client.enqueue_many(&requests).await
}

#[tokio::test]
async fn a_claim_over_several_actions_locks_only_the_rows_it_takes() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let ids = two_kinds_interleaved(&client).await?;
    let keys = served(&[("k", "x"), ("k", "y")]);
    // A claim whose transaction stays open: its row locks stay held.
    let mut first = db.pool.begin().await?;
    let took = queue::claim(&mut *first, "host-1", 10, LEASE, &keys).await?;
    ensure!(
        took.iter().map(|c| c.id).collect::<Vec<_>>() == ids[..10],
        "not the 10 best rows over both actions: {took:?}"
    );
    // Meanwhile another host sees every other due row: the first claim did
    // not lock rows it did not take (0005 locked 10 per action).
    let rest = queue::claim(&db.pool, "host-2", 100, LEASE, &keys).await?;
    ensure!(
        rest.len() == 50,
        "{} due rows hidden by the first claim's locks",
        50 - rest.len()
    );
    first.commit().await?;
    Ok(())
}

#[tokio::test]
async fn a_claim_racing_another_over_several_actions_still_fills_up() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let ids = two_kinds_interleaved(&client).await?;
    let keys = served(&[("k", "x"), ("k", "y")]);
    // The first claim has taken the 10 best rows but not committed: the
    // second sees them still queued, finds them locked, and must take the
    // next 10 instead of returning short.
    let mut first = db.pool.begin().await?;
    let took = queue::claim(&mut *first, "host-1", 10, LEASE, &keys).await?;
    let second = queue::claim(&db.pool, "host-2", 10, LEASE, &keys).await?;
    first.commit().await?;
    ensure!(took.len() == 10);
    ensure!(
        second.iter().map(|c| c.id).collect::<Vec<_>>() == ids[10..20],
        "the racing claim took {:?}",
        second.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn complete_stores_payloads_unchanged_and_reports_written_ids() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let ok = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    let bad = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    claim_all(&db.pool, "h", &[("m", "a")]).await?;
    let result =
        cairn_payload::serialize_result_payload(cairn_payload::WorkflowArgumentValue::int(42));
    let error = vec![0, 1, 2, 255];
    let written = queue::complete(
        &db.pool,
        "h",
        &[
            Completion::succeeded(ok, result.clone()),
            Completion::failed(bad, error.clone()),
            Completion::succeeded(999_999, vec![]),
        ],
    )
    .await?;
    ensure!(written == vec![ok, bad], "written {written:?}");
    let ok_row = client.result(ok).await?.context("no row")?;
    ensure!(ok_row.status == ActionStatus::Succeeded && ok_row.result == Some(result));
    ensure!(ok_row.finished_at.is_some());
    let bad_row = client.result(bad).await?.context("no row")?;
    ensure!(bad_row.status == ActionStatus::Failed && bad_row.error == Some(error));
    // A second completion of a finished row writes nothing.
    ensure!(
        queue::complete(&db.pool, "h", &[Completion::failed(ok, vec![])])
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn a_rescued_row_cannot_be_completed_by_its_old_owner() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    queue::claim(&db.pool, "old", 10, Duration::ZERO, &served(&[("m", "a")])).await?;
    let rescued = rescued(&db.pool, b"lost").await?;
    ensure!(
        rescued.len() == 1 && rescued[0].previous_owner == "old",
        "{rescued:?}"
    );
    let again = claim_all(&db.pool, "new", &[("m", "a")]).await?;
    ensure!(again.len() == 1 && again[0].attempt == 2, "{again:?}");
    let stale = queue::complete(
        &db.pool,
        "old",
        &[Completion::succeeded(id, b"old".to_vec())],
    )
    .await?;
    ensure!(stale.is_empty(), "old owner wrote {stale:?}");
    ensure!(queue::renew(&db.pool, "old", &[id], LEASE)
        .await?
        .is_empty());
    let fresh = queue::complete(
        &db.pool,
        "new",
        &[Completion::succeeded(id, b"new".to_vec())],
    )
    .await?;
    ensure!(fresh == vec![id]);
    let row = client.result(id).await?.context("no row")?;
    ensure!(row.result.as_deref() == Some(&b"new"[..]));
    Ok(())
}

#[tokio::test]
async fn retry_sets_run_at_to_the_backoff_and_hides_the_row_until_then() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    claim_all(&db.pool, "h", &[("m", "a")]).await?;
    let before = Utc::now();
    let backoff = Duration::from_millis(700);
    let written = queue::complete(
        &db.pool,
        "h",
        &[Completion::retry(id, b"boom".to_vec(), backoff)],
    )
    .await?;
    ensure!(written == vec![id]);
    let row = client.result(id).await?.context("no row")?;
    ensure!(
        row.status == ActionStatus::Queued && row.attempts == 1,
        "{row:?}"
    );
    ensure!(
        row.error.as_deref() == Some(&b"boom"[..]),
        "last error kept"
    );
    let wait = row.run_at - before;
    ensure!(
        wait >= chrono::Duration::milliseconds(600) && wait <= chrono::Duration::milliseconds(2000),
        "run_at is {wait} after the retry"
    );
    ensure!(
        claim_all(&db.pool, "h", &[("m", "a")]).await?.is_empty(),
        "claimed during backoff"
    );
    let again = claimed(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(again.len() == 1 && again[0].attempt == 2, "{again:?}");
    let claimed_at = started_at(&db.pool, id).await?;
    ensure!(
        claimed_at >= row.run_at,
        "claimed at {claimed_at}, before the backoff ended at {}",
        row.run_at
    );
    Ok(())
}

#[tokio::test]
async fn a_rescue_of_the_last_attempt_fails_the_row() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client
        .enqueue(&EnqueueRequest::new("m", "a").max_attempts(2))
        .await?;
    for attempt in 1..=2 {
        let claimed =
            queue::claim(&db.pool, "h", 10, Duration::ZERO, &served(&[("m", "a")])).await?;
        ensure!(
            claimed.len() == 1 && claimed[0].attempt == attempt,
            "{claimed:?}"
        );
        let rescued = rescued(&db.pool, b"lease expired").await?;
        let expected = if attempt == 1 {
            ActionStatus::Queued
        } else {
            ActionStatus::Failed
        };
        ensure!(
            rescued.len() == 1 && rescued[0].status == expected && rescued[0].attempts == attempt,
            "{rescued:?}"
        );
    }
    let row = client.result(id).await?.context("no row")?;
    ensure!(
        row.status == ActionStatus::Failed && row.attempts == 2,
        "{row:?}"
    );
    ensure!(row.error.as_deref() == Some(&b"lease expired"[..]) && row.finished_at.is_some());
    ensure!(claim_all(&db.pool, "h", &[("m", "a")]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn requeue_expired_rescues_only_expired_leases_and_counts_the_attempt() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let dead = client.enqueue(&EnqueueRequest::new("m", "dead")).await?;
    let alive = client.enqueue(&EnqueueRequest::new("m", "alive")).await?;
    queue::claim(
        &db.pool,
        "dead-host",
        10,
        Duration::ZERO,
        &served(&[("m", "dead")]),
    )
    .await?;
    queue::claim(&db.pool, "live-host", 10, LEASE, &served(&[("m", "alive")])).await?;
    let rescued = rescued(&db.pool, b"lost").await?;
    ensure!(
        rescued.iter().map(|r| r.id).collect::<Vec<_>>() == vec![dead],
        "{rescued:?}"
    );
    let row = client.result(dead).await?.context("no row")?;
    ensure!(
        row.status == ActionStatus::Queued && row.attempts == 1,
        "attempt counted: {row:?}"
    );
    ensure!(status(&db.pool, alive).await? == ActionStatus::Running);
    Ok(())
}

#[tokio::test]
async fn requeue_on_shutdown_gives_the_attempt_back() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    claim_all(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(queue::complete(&db.pool, "h", &[Completion::requeue(id)]).await? == vec![id]);
    let row = client.result(id).await?.context("no row")?;
    ensure!(
        row.status == ActionStatus::Queued && row.attempts == 0,
        "{row:?}"
    );
    let again = claim_all(&db.pool, "other", &[("m", "a")]).await?;
    ensure!(again.len() == 1 && again[0].attempt == 1, "{again:?}");
    Ok(())
}

#[tokio::test]
async fn renew_extends_owned_leases_and_omits_lost_ones() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let kept = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    let cancelled = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    queue::claim(
        &db.pool,
        "h",
        10,
        Duration::from_secs(1),
        &served(&[("m", "a")]),
    )
    .await?;
    ensure!(client.cancel(cancelled).await?);
    let owned = queue::renew(
        &db.pool,
        "h",
        &[kept, cancelled, 12345],
        Duration::from_secs(600),
    )
    .await?;
    ensure!(owned == vec![kept], "renewed {owned:?}");
    let (expires,): (chrono::DateTime<Utc>,) =
        sqlx::query_as("SELECT lease_expires_at FROM cairn.actions WHERE id = $1")
            .bind(kept)
            .fetch_one(&db.pool)
            .await?;
    ensure!(
        expires > Utc::now() + chrono::Duration::seconds(500),
        "lease not extended: {expires}"
    );
    // The cancelled row's completion is not written either.
    ensure!(
        queue::complete(&db.pool, "h", &[Completion::succeeded(cancelled, vec![])])
            .await?
            .is_empty()
    );
    ensure!(status(&db.pool, cancelled).await? == ActionStatus::Cancelled);
    Ok(())
}

#[tokio::test]
async fn idempotency_key_returns_the_live_row_and_is_reusable_once_it_finished() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let req = EnqueueRequest::new("m", "a").idempotency_key("order-17");
    let first = client.enqueue(&req).await?;
    ensure!(
        client.enqueue(&req).await? == first,
        "queued row not reused"
    );
    claim_all(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(
        client.enqueue(&req).await? == first,
        "running row not reused"
    );
    queue::complete(&db.pool, "h", &[Completion::succeeded(first, vec![])]).await?;
    let second = client.enqueue(&req).await?;
    ensure!(second != first, "finished row's key not released");
    // In a batch: a live key and a key repeated within the batch.
    let ids = client
        .enqueue_many(&[
            EnqueueRequest::new("m", "a"),
            req.clone(),
            EnqueueRequest::new("m", "a").idempotency_key("new"),
            EnqueueRequest::new("m", "a").idempotency_key("new"),
        ])
        .await?;
    ensure!(
        ids[1] == second && ids[2] == ids[3] && ids[0] != ids[2],
        "{ids:?}"
    );
    Ok(())
}

#[tokio::test]
async fn enqueue_many_returns_ids_in_input_order() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let requests: Vec<_> = (0..50)
        .map(|i| EnqueueRequest::new("m", format!("a{i}")).priority(i))
        .collect();
    let ids = client.enqueue_many(&requests).await?;
    ensure!(ids.len() == 50);
    for (i, id) in ids.iter().enumerate() {
        let row = client.result(*id).await?.context("no row")?;
        ensure!(row.name == format!("a{i}"), "id {id} is {}", row.name);
    }
    ensure!(client.enqueue_many(&[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn delayed_rows_are_not_claimed_before_they_are_due() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let later = client
        .enqueue(&EnqueueRequest::new("m", "a").delay(Duration::from_millis(600)))
        .await?;
    let future = client
        .enqueue(&EnqueueRequest::new("m", "a").run_at(Utc::now() + chrono::Duration::hours(1)))
        .await?;
    ensure!(
        claim_all(&db.pool, "h", &[("m", "a")]).await?.is_empty(),
        "claimed early"
    );
    let claimed = claimed(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(claimed.iter().map(|c| c.id).collect::<Vec<_>>() == vec![later]);
    let due = claimed[0].run_at;
    let claimed_at = started_at(&db.pool, later).await?;
    ensure!(
        claimed_at >= due,
        "claimed at {claimed_at}, before it was due at {due}"
    );
    ensure!(status(&db.pool, future).await? == ActionStatus::Queued);
    Ok(())
}

/// When row `id` was last claimed (database clock).
async fn started_at(pool: &PgPool, id: i64) -> Result<DateTime<Utc>> {
    sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
        "SELECT started_at FROM cairn.actions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?
    .context("never claimed")
}

/// Makes host `id` look up for a long time already.
async fn backdate_host(pool: &PgPool, id: &str) -> Result<()> {
    sqlx::query("UPDATE cairn.hosts SET started_at = now() - interval '1 hour' WHERE host_id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

fn no_host_error(module: &str, name: &str) -> Vec<u8> {
    format!("no host serves action `{module}:{name}`").into_bytes()
}

#[tokio::test]
async fn unknown_action_stays_queued_while_a_live_host_serves_it() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client
        .enqueue(&EnqueueRequest::new("m", "rare").run_at(Utc::now() - chrono::Duration::hours(1)))
        .await?;
    queue::heartbeat(&db.pool, "this-host", &["m:common".into()]).await?;
    queue::heartbeat(&db.pool, "other-host", &["m:rare".into()]).await?;
    backdate_host(&db.pool, "this-host").await?;
    // This host does not serve it, so it does not claim it...
    ensure!(claim_all(&db.pool, "this-host", &[("m", "common")])
        .await?
        .is_empty());
    // ...but another live host does, so it is not failed.
    let failed = queue::fail_unknown(
        &db.pool,
        Duration::from_secs(1),
        Duration::from_secs(30),
        no_host_error,
    )
    .await?;
    ensure!(failed.is_empty(), "failed {failed:?}");
    ensure!(status(&db.pool, id).await? == ActionStatus::Queued);
    Ok(())
}

#[tokio::test]
async fn unknown_action_is_failed_once_no_live_host_serves_it() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    let id = client
        .enqueue(&EnqueueRequest::new("m", "rare").run_at(hour_ago))
        .await?;
    let recent = client.enqueue(&EnqueueRequest::new("m", "rare")).await?;
    queue::heartbeat(&db.pool, "this-host", &["m:common".into()]).await?;
    queue::heartbeat(&db.pool, "dead-host", &["m:rare".into()]).await?;
    // While every live host is new, nobody judges (they may still be coming up).
    let failed = queue::fail_unknown(
        &db.pool,
        Duration::from_secs(60),
        Duration::from_secs(30),
        no_host_error,
    )
    .await?;
    ensure!(
        failed.is_empty(),
        "failed while the fleet was starting: {failed:?}"
    );
    backdate_host(&db.pool, "this-host").await?;
    sqlx::query("UPDATE cairn.hosts SET heartbeat_at = now() - interval '5 minutes' WHERE host_id = 'dead-host'")
        .execute(&db.pool)
        .await?;
    let failed = queue::fail_unknown(
        &db.pool,
        Duration::from_secs(60),
        Duration::from_secs(30),
        no_host_error,
    )
    .await?;
    ensure!(failed == vec![id], "failed {failed:?}");
    let row = client.result(id).await?.context("no row")?;
    ensure!(row.status == ActionStatus::Failed);
    ensure!(row.error == Some(no_host_error("m", "rare")));
    ensure!(
        status(&db.pool, recent).await? == ActionStatus::Queued,
        "a row due for less than `after` was failed"
    );
    Ok(())
}

#[tokio::test]
async fn a_removed_host_stops_serving_its_actions_at_once() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client
        .enqueue(&EnqueueRequest::new("m", "rare").run_at(Utc::now() - chrono::Duration::hours(1)))
        .await?;
    queue::heartbeat(&db.pool, "this-host", &["m:common".into()]).await?;
    backdate_host(&db.pool, "this-host").await?;
    queue::heartbeat(&db.pool, "leaving-host", &["m:rare".into()]).await?;
    let judge = || {
        queue::fail_unknown(
            &db.pool,
            Duration::from_secs(60),
            Duration::from_secs(30),
            no_host_error,
        )
    };
    // While its heartbeat is fresh, the leaving host keeps the row alive...
    ensure!(
        judge().await?.is_empty(),
        "failed while a live host served it"
    );
    // ...and once it deregisters, without waiting for its heartbeat to age.
    queue::remove_host(&db.pool, "leaving-host").await?;
    ensure!(crate::support::host_ids(&db.pool).await? == ["this-host"]);
    ensure!(
        judge().await? == vec![id],
        "not failed once its host was removed"
    );
    Ok(())
}

#[tokio::test]
async fn enqueue_notifies_idle_hosts_on_cairn_actions() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await?;
    listener.listen("cairn_actions").await?;
    client.enqueue(&EnqueueRequest::new("mod", "act")).await?;
    let n = tokio::time::timeout(SOON, listener.recv())
        .await
        .context("no notification for the enqueue")??;
    ensure!(n.payload() == "mod:act", "payload {:?}", n.payload());
    Ok(())
}

#[tokio::test]
async fn requeue_notifies_idle_hosts_on_cairn_actions() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    client.enqueue(&EnqueueRequest::new("mod", "act")).await?;
    let claimed = claim_all(&db.pool, "h", &[("mod", "act")]).await?;
    // Listening from here on: what arrives is the requeue's.
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await?;
    listener.listen("cairn_actions").await?;
    queue::complete(&db.pool, "h", &[Completion::requeue(claimed[0].id)]).await?;
    let n = tokio::time::timeout(SOON, listener.recv())
        .await
        .context("no notification for the requeue")??;
    ensure!(n.payload() == "mod:act", "payload {:?}", n.payload());
    Ok(())
}

/// A client on a pool of its own whose connections name themselves
/// `application_name`, so that `pg_stat_activity` shows what its `wait` is
/// doing: [`last_read`] tells when it last read the rows it waits for.
async fn observed_client(db: &TestDb, application_name: &str) -> Result<Client> {
    let options = (*db.pool.connect_options())
        .clone()
        .application_name(application_name);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    Ok(Client::new(pool))
}

/// When (database clock) the latest *finished* read of rows by the client
/// named `application_name` started: `wait` reads once after it LISTENs,
/// then again on each notification for its rows and on each poll.
async fn last_read(pool: &PgPool, application_name: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT max(query_start) FROM pg_stat_activity
         WHERE application_name = $1 AND state = 'idle'
           AND query LIKE '%FROM cairn.actions WHERE id = ANY%'",
    )
    .bind(application_name)
    .fetch_one(pool)
    .await?)
}

/// Starts `wait` for row `id` on a client named `name` and returns it once
/// that wait has read the row for the first time (still unfinished, as the
/// caller has not finished it), with when that read started.
async fn waiting_on(
    db: &TestDb,
    name: &str,
    id: i64,
) -> Result<(
    tokio::task::JoinHandle<Result<queue::ActionResult>>,
    DateTime<Utc>,
)> {
    let client = observed_client(db, name).await?;
    let waiter = tokio::spawn(async move { client.wait(id, SOON).await });
    let read = until("the waiter's first read", SOON, || async {
        last_read(&db.pool, name).await
    })
    .await?;
    Ok((waiter, read))
}

#[tokio::test]
async fn wait_is_woken_by_the_completion_notification_before_its_poll() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    let (waiter, first_read) = waiting_on(&db, "wait-notified", id).await?;
    claim_all(&db.pool, "h", &[("m", "a")]).await?;
    queue::complete(
        &db.pool,
        "h",
        &[Completion::succeeded(id, b"done".to_vec())],
    )
    .await?;
    let row = waiter.await??;
    let returned = Utc::now();
    ensure!(row.status == ActionStatus::Succeeded && row.result.as_deref() == Some(&b"done"[..]));
    // Without the notification the next read is the poll, a whole poll
    // interval after the first read ended; only the notification can
    // bring the row back sooner (the companion test below shows it).
    let poll = chrono::TimeDelta::from_std(queue::defaults::POLL_INTERVAL)?;
    ensure!(
        returned < first_read + poll,
        "wait returned {} ms after its first read, not before its {} ms poll: \
         the completion's notification did not wake it",
        (returned - first_read).num_milliseconds(),
        poll.num_milliseconds()
    );
    Ok(())
}

#[tokio::test]
async fn wait_without_the_notification_still_returns_at_its_poll() -> Result<()> {
    let db = fresh_db().await?;
    // Break the notification: no `cairn_results` when a row finishes (the
    // statement trigger of migrations/0005 sends it).
    sqlx::query("DROP TRIGGER actions_notify_status ON cairn.actions")
        .execute(&db.pool)
        .await?;
    let client = Client::new(db.pool.clone());
    let id = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    let (waiter, first_read) = waiting_on(&db, "wait-polling", id).await?;
    claim_all(&db.pool, "h", &[("m", "a")]).await?;
    queue::complete(
        &db.pool,
        "h",
        &[Completion::succeeded(id, b"done".to_vec())],
    )
    .await?;
    let row = waiter.await??;
    let returned = Utc::now();
    ensure!(row.status == ActionStatus::Succeeded && row.result.as_deref() == Some(&b"done"[..]));
    let poll = chrono::TimeDelta::from_std(queue::defaults::POLL_INTERVAL)?;
    ensure!(
        returned >= first_read + poll,
        "wait returned {} ms after its first read, before its {} ms poll, with no notification",
        (returned - first_read).num_milliseconds(),
        poll.num_milliseconds()
    );
    Ok(())
}

#[tokio::test]
async fn wait_gives_back_the_unfinished_row_at_its_timeout() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let id = client.enqueue(&EnqueueRequest::new("m", "a")).await?;
    let row = client.wait(id, Duration::from_millis(300)).await?;
    ensure!(
        row.status == ActionStatus::Queued && row.id == id,
        "{row:?}"
    );
    Ok(())
}

#[tokio::test]
async fn wait_for_a_row_that_does_not_exist_is_an_error() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let err = client
        .wait(987_654, Duration::from_millis(10))
        .await
        .err()
        .context("waited for a row that does not exist")?;
    ensure!(format!("{err:#}").contains("987654"), "{err:#}");
    Ok(())
}

#[tokio::test]
async fn wait_many_returns_every_row_once_all_are_finished() -> Result<()> {
    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    let requests: Vec<_> = (0..5).map(|_| EnqueueRequest::new("m", "a")).collect();
    let ids = client.enqueue_many(&requests).await?;
    let name = "wait-many";
    let waiter = {
        let (client, ids) = (observed_client(&db, name).await?, ids.clone());
        tokio::spawn(async move { client.wait_many(&ids, SOON).await })
    };
    until("the waiter's first read", SOON, || async {
        last_read(&db.pool, name).await
    })
    .await?;
    let claimed = claim_all(&db.pool, "h", &[("m", "a")]).await?;
    ensure!(claimed.len() == 5, "{claimed:?}");
    // One row at a time; the waiter reads again after each and keeps
    // waiting while any is unfinished.
    for (i, c) in claimed.iter().enumerate() {
        queue::complete(&db.pool, "h", &[Completion::failed(c.id, vec![c.id as u8])]).await?;
        if i + 1 == claimed.len() {
            break;
        }
        let completed = crate::support::db_now(&db.pool).await?;
        until("the waiter to read the completion", SOON, || async {
            Ok(last_read(&db.pool, name)
                .await?
                .filter(|at| *at > completed)
                .map(|_| ()))
        })
        .await?;
        ensure!(
            !waiter.is_finished(),
            "wait_many returned with {} of 5 rows finished",
            i + 1
        );
    }
    let rows = waiter.await??;
    ensure!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>() == ids,
        "order kept"
    );
    ensure!(rows
        .iter()
        .all(|r| r.status == ActionStatus::Failed && r.error == Some(vec![r.id as u8])));
    Ok(())
}
