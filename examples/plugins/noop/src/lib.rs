//! The benchmark's action: does nothing, so `cairn bench` measures the queue
//! and the sandbox (claim, fresh instance, invoke, batched completion), not
//! the work.

cairn_sdk::plugin!(module = "noop");

/// Return at once.
#[cairn_sdk::action]
pub fn noop() {}
