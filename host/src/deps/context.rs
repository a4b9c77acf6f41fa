//! `cairn:plugin/context`: facts about the current invocation (action id,
//! attempt, deadline), read from the call the sandbox set up. Pure reads; no
//! failure modes.

use crate::bindings::cairn::plugin::context;
use crate::store::HostState;
use std::time::UNIX_EPOCH;

super::cairn_interface!("context", context);

impl context::Host for HostState {
    fn action_id(&mut self) -> String {
        self.call.action_id.clone()
    }

    fn attempt(&mut self) -> u32 {
        self.call.attempt
    }

    fn deadline_unix_ms(&mut self) -> u64 {
        self.call
            .deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
