//! `cairn:plugin/log`: structured logging into the host's `tracing` output.
//!
//! Every record is a `tracing` event with target `cairn::guest` and the
//! fields `module`, `action`, `action_id` and `attempt` taken from the call
//! — the guest cannot forge them. Guest fields are rendered as `key=value` pairs in one
//! `fields` field (tracing's field names are static). Messages longer than
//! [`MAX_MESSAGE`] are truncated so one record cannot flood the logs.

use crate::bindings::cairn::plugin::log::{self, Level};
use crate::store::HostState;

/// Longest message or fields text kept per record, in bytes.
const MAX_MESSAGE: usize = 16 * 1024;

super::cairn_interface!("log", log);

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let call = &self.call;
        let message = truncate(message);
        let fields = truncate(
            fields
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        let (module, action, action_id, attempt) =
            (&call.module, &call.action, &call.action_id, call.attempt);
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "cairn::guest", module = %module, action = %action, action_id = %action_id, attempt, fields = %fields, "{message}")
            };
        }
        match level {
            Level::Trace => emit!(trace),
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error => emit!(error),
        }
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("…(truncated)");
    }
    text
}
