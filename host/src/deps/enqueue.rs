//! `cairn:plugin/enqueue`: enqueue follow-up actions in the same queue, via
//! [`crate::queue::Client::enqueue`], which is how actions chain. The row is
//! an ordinary row: any host serving the action runs it.
//!
//! Failure modes are `Err(String)` to the guest: no database (`cairn
//! invoke`), an invalid request (empty module/name, `max-attempts` 0), a
//! failed statement.

use crate::bindings::cairn::plugin::enqueue::{self, Options};
use crate::queue::{Client, EnqueueRequest};
use crate::store::HostState;
use std::time::Duration;

super::cairn_interface!("enqueue", enqueue);

impl enqueue::Host for HostState {
    async fn enqueue(
        &mut self,
        module: String,
        name: String,
        args: Vec<u8>,
        options: Options,
    ) -> Result<i64, String> {
        let pool = self.deps.pool.clone().ok_or_else(|| {
            "enqueue is unavailable: this host has no database (`cairn invoke` runs without one; use `cairn serve`)".to_owned()
        })?;
        let mut request = EnqueueRequest::new(module, name).args_bytes(args);
        if let Some(ms) = options.delay_ms {
            request = request.delay(Duration::from_millis(ms));
        }
        if let Some(p) = options.priority {
            request = request.priority(p);
        }
        if let Some(n) = options.max_attempts {
            request = request.max_attempts(n);
        }
        if let Some(key) = options.idempotency_key {
            request = request.idempotency_key(key);
        }
        Client::new(pool)
            .enqueue(&request)
            .await
            .map_err(|e| crate::error::one_line(&format!("{e:#}")))
    }
}
