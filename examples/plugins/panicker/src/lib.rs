//! A bad plugin: its action panics. On wasm32-wasip2 a panic aborts, so the
//! instance traps; the SDK's panic hook writes `cairn:panic: <message> (at
//! <file>:<line>:<col>)` to stderr first, for the host to report.

cairn_sdk::plugin!(module = "panicker");

/// Panic with `message`.
#[cairn_sdk::action]
pub fn boom(message: String) -> String {
    panic!("{message}");
}
