//! Live hosts, and the unknown-action rule they make possible.
//!
//! A row whose `module:name` this host does not serve stays queued: another
//! host may serve it. It is failed only when **no live host serves it** and
//! it has been due for longer than `after` — and only once some live host
//! has itself been up for `after`, so that after an outage (every host
//! restarting at once) the hosts that serve it get time to come up and
//! register before anyone judges its rows.

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{PgPool, Row};

use super::millis;

/// Rows of hosts silent for this long are deleted by any heartbeat: a host
/// that crashed never removes itself, and the table should not grow forever.
const FORGET_HOSTS_AFTER: &str = "1 day";

/// Registers `host_id` as live and serving `keys` (`module:name`), or
/// refreshes it. Call at start (before the first [`fail_unknown`]) and every
/// [`defaults::HEARTBEAT_EVERY`](super::defaults::HEARTBEAT_EVERY), and again
/// when the served set changes (plugin reload).
///
/// # Errors
///
/// When the statement fails (`queue heartbeat failed: ...`).
pub async fn heartbeat(pool: &PgPool, host_id: &str, keys: &[String]) -> Result<()> {
    sqlx::query(&format!(
        r#"
        WITH forget AS (
            DELETE FROM cairn.hosts
            WHERE heartbeat_at < now() - interval '{FORGET_HOSTS_AFTER}' AND host_id <> $1
        )
        INSERT INTO cairn.hosts (host_id, actions, started_at, heartbeat_at)
        VALUES ($1, $2, now(), now())
        ON CONFLICT (host_id) DO UPDATE
        SET actions = EXCLUDED.actions, heartbeat_at = now()
        "#
    ))
    .bind(host_id)
    .bind(keys)
    .execute(pool)
    .await
    .context("queue heartbeat failed")?;
    Ok(())
}

/// Removes `host_id` from the live hosts (graceful shutdown), so the rule
/// stops counting it at once instead of after
/// [`defaults::HOST_TTL`](super::defaults::HOST_TTL).
///
/// # Errors
///
/// When the statement fails (`queue remove_host failed: ...`).
pub async fn remove_host(pool: &PgPool, host_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM cairn.hosts WHERE host_id = $1")
        .bind(host_id)
        .execute(pool)
        .await
        .context("queue remove_host failed")?;
    Ok(())
}

/// Fails queued rows that no live host serves (see the module docs): due for
/// longer than `after`, and no host with a heartbeat younger than `host_ttl`
/// lists their `module:name`. Each gets the error payload
/// `error_for(module, name)` (say "no host serves action `m:n`"). Returns the
/// failed ids (ascending).
///
/// Two statements: one finds the keys concerned (so `error_for` runs once
/// per key), one fails their rows, re-checking every condition.
///
/// # Errors
///
/// When a statement fails (`queue fail_unknown failed: ...`).
pub async fn fail_unknown(
    pool: &PgPool,
    after: Duration,
    host_ttl: Duration,
    error_for: impl Fn(&str, &str) -> Vec<u8>,
) -> Result<Vec<i64>> {
    let keys = sqlx::query(
        r#"
        SELECT DISTINCT a.module, a.name
        FROM cairn.actions a
        WHERE a.status = 'queued'
          AND a.run_at <= now() - $1 * interval '1 millisecond'
          AND EXISTS (SELECT 1 FROM cairn.hosts h
                      WHERE h.heartbeat_at > now() - $2 * interval '1 millisecond'
                        AND h.started_at <= now() - $1 * interval '1 millisecond')
          AND NOT EXISTS (SELECT 1 FROM cairn.hosts h
                          WHERE h.heartbeat_at > now() - $2 * interval '1 millisecond'
                            AND a.module || ':' || a.name = ANY (h.actions))
        "#,
    )
    .bind(millis(after))
    .bind(millis(host_ttl))
    .fetch_all(pool)
    .await
    .context("queue fail_unknown failed")?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (mut modules, mut names, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for row in keys {
        let module: String = row.try_get("module").context("queue fail_unknown failed")?;
        let name: String = row.try_get("name").context("queue fail_unknown failed")?;
        errors.push(error_for(&module, &name));
        modules.push(module);
        names.push(name);
    }
    let mut failed: Vec<i64> = sqlx::query_scalar(
        r#"
        WITH errors AS (
            SELECT * FROM unnest($3::text[], $4::text[], $5::bytea[]) AS e(module, name, error)
        ), victims AS (
            SELECT a.id, e.error
            FROM cairn.actions a
            JOIN errors e ON e.module = a.module AND e.name = a.name
            WHERE a.status = 'queued'
              AND a.run_at <= now() - $1 * interval '1 millisecond'
              AND NOT EXISTS (SELECT 1 FROM cairn.hosts h
                              WHERE h.heartbeat_at > now() - $2 * interval '1 millisecond'
                                AND a.module || ':' || a.name = ANY (h.actions))
            FOR UPDATE OF a SKIP LOCKED
        )
        UPDATE cairn.actions a
        SET status = 'failed', error = v.error, finished_at = now()
        FROM victims v
        WHERE a.id = v.id
        RETURNING a.id
        "#,
    )
    .bind(millis(after))
    .bind(millis(host_ttl))
    .bind(&modules)
    .bind(&names)
    .bind(&errors)
    .fetch_all(pool)
    .await
    .context("queue fail_unknown failed")?;
    failed.sort_unstable();
    Ok(failed)
}
