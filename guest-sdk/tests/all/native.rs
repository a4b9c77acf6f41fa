//! Dependencies called natively, as in a plugin author's unit tests.

use std::time::{Duration, SystemTime};

use cairn_sdk::context::{self, NativeContext};

#[test]
fn native_context_defaults_to_a_first_attempt() {
    std::thread::spawn(|| {
        assert_eq!(context::attempt(), 1);
        assert_eq!(context::action_id(), "native");
        assert!(context::deadline() > SystemTime::now());
    })
    .join()
    .unwrap();
}

#[test]
fn native_context_can_be_set_per_thread() {
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    context::set_native(NativeContext {
        action_id: "row-7".into(),
        attempt: 4,
        deadline,
    });
    assert_eq!(context::action_id(), "row-7");
    assert_eq!(context::attempt(), 4);
    assert_eq!(context::deadline(), deadline);
}

#[test]
fn native_log_does_not_panic() {
    cairn_sdk::log::info("hello", &[("k", "v")]);
    cairn_sdk::log::error("oops", &[]);
}
