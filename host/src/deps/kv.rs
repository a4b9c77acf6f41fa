//! `cairn:plugin/kv`: durable key-value storage in the `cairn.kv` table.
//!
//! Every statement filters on the calling plugin's namespace (its module, or
//! the operator's `kv_namespace`), taken from the store, never from the
//! guest: one plugin cannot name another's keys. `increment` and
//! `compare-and-swap` are single statements (`INSERT .. ON CONFLICT DO
//! UPDATE`, conditional `UPDATE`), so they are atomic across hosts.
//!
//! Failure modes are `Err(String)` to the guest, one line each: no database
//! (`cairn invoke` runs without one), a failed statement, a stored value that
//! is not an integer for `increment`, an integer overflow.

use crate::bindings::cairn::plugin::kv;
use crate::store::HostState;
use sqlx::PgPool;

super::cairn_interface!("kv", kv);

impl HostState {
    fn kv(&self) -> Result<(PgPool, String), String> {
        let pool = self.deps.pool.clone().ok_or_else(|| {
            "kv is unavailable: this host has no database (`cairn invoke` runs without one; use `cairn serve`)".to_owned()
        })?;
        let namespace = self
            .deps
            .settings
            .kv_namespace(&self.call.module)
            .to_owned();
        Ok((pool, namespace))
    }
}

fn failed(op: &str, err: sqlx::Error) -> String {
    crate::error::one_line(&format!("kv {op} failed: {err}"))
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let (pool, ns) = self.kv()?;
        sqlx::query_scalar("SELECT value FROM cairn.kv WHERE namespace = $1 AND key = $2")
            .bind(ns)
            .bind(key)
            .fetch_optional(&pool)
            .await
            .map_err(|e| failed("get", e))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let (pool, ns) = self.kv()?;
        sqlx::query(
            "INSERT INTO cairn.kv (namespace, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(ns)
        .bind(key)
        .bind(value)
        .execute(&pool)
        .await
        .map(drop)
        .map_err(|e| failed("set", e))
    }

    async fn delete(&mut self, key: String) -> Result<bool, String> {
        let (pool, ns) = self.kv()?;
        sqlx::query("DELETE FROM cairn.kv WHERE namespace = $1 AND key = $2")
            .bind(ns)
            .bind(key)
            .execute(&pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(|e| failed("delete", e))
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, String> {
        let (pool, ns) = self.kv()?;
        sqlx::query_scalar(
            "INSERT INTO cairn.kv (namespace, key, value)
             VALUES ($1, $2, convert_to($3::bigint::text, 'UTF8'))
             ON CONFLICT (namespace, key) DO UPDATE
               SET value = convert_to((convert_from(cairn.kv.value, 'UTF8')::bigint + $3::bigint)::text, 'UTF8'),
                   updated_at = now()
             RETURNING convert_from(value, 'UTF8')::bigint",
        )
        .bind(ns)
        .bind(&key)
        .bind(delta)
        .fetch_one(&pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22P02") => {
                format!("kv increment failed: the value under `{key}` is not an integer")
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22003") => {
                format!("kv increment failed: `{key}` would overflow a 64-bit integer")
            }
            _ => failed("increment", e),
        })
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, String> {
        let (pool, ns) = self.kv()?;
        let done = match expected {
            None => {
                sqlx::query(
                    "INSERT INTO cairn.kv (namespace, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (namespace, key) DO NOTHING",
                )
                .bind(ns)
                .bind(key)
                .bind(new)
                .execute(&pool)
                .await
            }
            Some(expected) => {
                sqlx::query(
                    "UPDATE cairn.kv SET value = $3, updated_at = now()
                     WHERE namespace = $1 AND key = $2 AND value = $4",
                )
                .bind(ns)
                .bind(key)
                .bind(new)
                .bind(expected)
                .execute(&pool)
                .await
            }
        };
        done.map(|r| r.rows_affected() == 1)
            .map_err(|e| failed("compare-and-swap", e))
    }
}
