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

/// Set in the child process [`native_log_prints_level_message_and_fields_to_stderr`]
/// starts: it then only logs.
const LOG_CHILD: &str = "CAIRN_SDK_NATIVE_LOG_CHILD";

/// Natively, `log` writes `[LEVEL] message key=value ...` lines to stderr.
/// Stderr belongs to the process, so the test runs itself again as a child
/// (this test only, output not captured) and reads the child's stderr.
#[test]
fn native_log_prints_level_message_and_fields_to_stderr() {
    if std::env::var_os(LOG_CHILD).is_some() {
        cairn_sdk::log::info("hello", &[("k", "v"), ("n", "2")]);
        cairn_sdk::log::error("oops", &[]);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "native::native_log_prints_level_message_and_fields_to_stderr",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOG_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed: {stderr}");
    let records: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        records,
        ["[INFO] hello k=v n=2", "[ERROR] oops"],
        "child stderr: {stderr}"
    );
}
