//! Live hosts, and the unknown-action rule they make possible.
//!
//! A row whose `module:name` this host does not serve stays queued: another
//! host may serve it. It is failed only when **no live host serves it** and
//! it has been due for longer than `after` — and only once some live host
//! has itself been up for `after`, so that after an outage (every host
//! restarting at once) the hosts that serve it get time to come up and
//! register before anyone judges its rows.
//!
//! A host's row also carries the plugin files it has loaded
//! ([`LoadedPlugin`]), so that operators can see whether a reload took effect
//! on every host. Each host's worker is the one writer of its row.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use super::millis;

/// Rows of hosts silent for this long are deleted by any heartbeat: a host
/// that crashed never removes itself, and the table should not grow forever.
const FORGET_HOSTS_AFTER: &str = "1 day";

/// Registers `host_id` as live and serving `keys` (`module:name`), or
/// refreshes it. Call at start (before the first [`fail_unknown`]) and every
/// [`defaults::HEARTBEAT_EVERY`](super::defaults::HEARTBEAT_EVERY), and again
/// when the served set changes (plugin reload). Leaves the host's published
/// plugin list as it is (see [`heartbeat_with_plugins`]).
///
/// # Errors
///
/// When the statement fails (`queue heartbeat failed: ...`).
pub async fn heartbeat(pool: &PgPool, host_id: &str, keys: &[String]) -> Result<()> {
    write_heartbeat(pool, host_id, keys, None).await
}

/// [`heartbeat`], also recording `plugins` as the plugin files this host
/// has loaded (`cairn.hosts.plugins`, migrations/0006), in the same
/// statement: what `cairn plugins` and the dashboard show of every running
/// host.
///
/// # Errors
///
/// When the statement fails (`queue heartbeat failed: ...`).
pub async fn heartbeat_with_plugins(
    pool: &PgPool,
    host_id: &str,
    keys: &[String],
    plugins: &[LoadedPlugin],
) -> Result<()> {
    let json = serde_json::to_value(plugins).context("queue heartbeat failed")?;
    write_heartbeat(pool, host_id, keys, Some(json)).await
}

async fn write_heartbeat(
    pool: &PgPool,
    host_id: &str,
    keys: &[String],
    plugins: Option<serde_json::Value>,
) -> Result<()> {
    sqlx::query(&format!(
        r#"
        WITH forget AS (
            DELETE FROM cairn.hosts
            WHERE heartbeat_at < now() - interval '{FORGET_HOSTS_AFTER}' AND host_id <> $1
        )
        INSERT INTO cairn.hosts (host_id, actions, started_at, heartbeat_at, plugins)
        VALUES ($1, $2, now(), now(), coalesce($3, '[]'::jsonb))
        ON CONFLICT (host_id) DO UPDATE
        SET actions = EXCLUDED.actions, heartbeat_at = now(),
            plugins = coalesce($3, cairn.hosts.plugins)
        "#
    ))
    .bind(host_id)
    .bind(keys)
    .bind(plugins)
    .execute(pool)
    .await
    .context("queue heartbeat failed")?;
    Ok(())
}

/// One plugin file as a host has it loaded: an element of
/// `cairn.hosts.plugins` (migrations/0006). Never holds config values or
/// secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedPlugin {
    /// The file name.
    pub file: String,
    /// The SHA-256 (hex) of the version that serves, if one does.
    pub digest: Option<String>,
    /// Its module, if a version serves.
    pub module: Option<String>,
    /// Its action names, if a version serves.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Why the file's latest content was refused, if it was.
    pub rejected: Option<RejectedVersion>,
}

impl LoadedPlugin {
    /// The short form of the serving version's digest, as listings show it.
    pub fn short_digest(&self) -> Option<String> {
        let digest = self.digest.as_deref()?;
        Some(digest.chars().take(crate::key::Digest::SHORT_LEN).collect())
    }
}

/// A refused version of a plugin file, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedVersion {
    /// Its SHA-256 (hex), `None` if the file could not be read.
    pub digest: Option<String>,
    /// `(<phase>) <why>`.
    pub reason: String,
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
