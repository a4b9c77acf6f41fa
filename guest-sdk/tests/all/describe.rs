//! `describe`: the module and the registered actions.

use cairn_sdk::__private::RetryPolicy;
use cairn_sdk::action;

/// Ship an order.
///
///   Picks the cheapest carrier.
#[action(timeout = "30s", retries = 3, backoff = "500ms", max_backoff = "1m")]
fn ship(order: u64) -> u64 {
    order
}

#[action(retries = 2)]
fn retry_defaults() {}

#[action(timeout = "250ms")]
fn quick() {}

#[test]
fn describe_reports_module_and_sorted_actions() {
    let info = cairn_sdk::__private::describe(crate::MODULE);
    assert_eq!(info.module, "sdk_tests");
    let names: Vec<&str> = info.actions.iter().map(|a| a.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for expected in [
        "add",
        "ship",
        "quick",
        "renamed",
        "double_later",
        "withdraw",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn describe_takes_description_from_doc_comment() {
    let info = cairn_sdk::__private::describe(crate::MODULE);
    let ship = info.actions.iter().find(|a| a.name == "ship").unwrap();
    assert_eq!(
        ship.description,
        "Ship an order.\n\nPicks the cheapest carrier."
    );
    let quick = info.actions.iter().find(|a| a.name == "quick").unwrap();
    assert_eq!(quick.description, "");
}

#[test]
fn describe_reports_timeout_and_retry_attributes() {
    let info = cairn_sdk::__private::describe(crate::MODULE);
    let find = |name: &str| info.actions.iter().find(|a| a.name == name).unwrap();

    let ship = find("ship");
    assert_eq!(ship.timeout_ms, Some(30_000));
    assert_eq!(
        ship.retry,
        Some(RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
        })
    );

    let defaults = find("retry_defaults");
    assert_eq!(defaults.timeout_ms, None);
    assert_eq!(
        defaults.retry,
        Some(RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        })
    );

    let quick = find("quick");
    assert_eq!((quick.timeout_ms, quick.retry), (Some(250), None));
}
