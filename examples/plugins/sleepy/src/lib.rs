//! A plugin that takes its time: it sleeps in a WASI poll (not a busy loop),
//! so a test can hold a row `running` on a host for as long as it likes —
//! to kill that host, or to shut it down mid-action. Imports
//! `cairn:plugin/context` (for the attempt number).
//!
//! `std::thread::sleep` on wasm32-wasip2 blocks in `wasi:io/poll`, which the
//! host serves asynchronously: the guest uses no CPU while it sleeps, and
//! only the action's wall-clock timeout (which must exceed the sleep) ends it
//! early.

use cairn_sdk::context;
use std::time::Duration;

cairn_sdk::plugin!(module = "sleepy");

/// Sleep `ms` milliseconds on the first attempt, return at once on later
/// ones; returns the attempt number. A rescued or retried row thus finishes
/// quickly and tells which attempt finished it.
#[cairn_sdk::action]
pub fn nap(ms: u64) -> u32 {
    let attempt = context::attempt();
    if attempt <= 1 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    attempt
}

/// Sleep `ms` milliseconds on every attempt; returns the attempt number.
#[cairn_sdk::action]
pub fn nap_always(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    context::attempt()
}

/// Say `ran action <id>` on stdout (which the host logs), then sleep `ms`
/// milliseconds; returns this attempt's deadline in milliseconds since the
/// Unix epoch, which tells two runs of one row apart (the later claim has
/// the later deadline). Tests count from the hosts' logs how many times
/// each row really ran — across hosts, and across database restarts that
/// the database's own records do not survive.
#[cairn_sdk::action]
pub fn nap_and_say(ms: u64) -> u64 {
    println!("ran action {}", context::action_id());
    std::thread::sleep(Duration::from_millis(ms));
    context::deadline()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use cairn_sdk::context::{self, NativeContext};
    use std::time::{Duration, Instant};

    #[test]
    fn nap_sleeps_on_the_first_attempt_only() {
        context::set_native(NativeContext {
            attempt: 1,
            ..NativeContext::default()
        });
        let start = Instant::now();
        assert_eq!(super::nap(50), 1);
        assert!(start.elapsed() >= Duration::from_millis(50));

        context::set_native(NativeContext {
            attempt: 2,
            ..NativeContext::default()
        });
        let start = Instant::now();
        assert_eq!(super::nap(60_000), 2);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn nap_always_sleeps_on_every_attempt() {
        context::set_native(NativeContext {
            attempt: 3,
            ..NativeContext::default()
        });
        let start = Instant::now();
        assert_eq!(super::nap_always(30), 3);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
