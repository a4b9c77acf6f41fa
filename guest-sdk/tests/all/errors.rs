//! Turning an action's `Err` into the WIT `action-error`.

use std::fmt;

use cairn_payload::WorkflowArgumentValue as V;
use cairn_payload::WorkflowDictArgument;
use cairn_sdk::{action, Error};
use prost::Message;
use serde::Serialize;

use crate::{assert_error, call_err};

/// A plain `Display` type, not a `std::error::Error`.
#[derive(Debug)]
pub struct Overdrawn {
    missing: u32,
}

impl fmt::Display for Overdrawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "balance short by {}", self.missing)
    }
}

#[action]
fn withdraw(amount: u32) -> Result<u32, Overdrawn> {
    Err(Overdrawn { missing: amount })
}

#[action]
fn parse_number(text: String) -> Result<i64, std::num::ParseIntError> {
    text.parse()
}

#[derive(Serialize)]
struct Limits {
    limit: u32,
    requested: u32,
}

#[action]
fn reserve(requested: u32) -> cairn_sdk::Result<u32> {
    Err(
        Error::retryable(format!("only 10 left, {requested} requested"))
            .with_type("CapacityError")
            .with_details(Limits {
                limit: 10,
                requested,
            }),
    )
}

#[action]
fn plain_error() -> cairn_sdk::Result<()> {
    Err(Error::new("something went wrong"))
}

#[action]
fn elsewhere_error() -> cairn_sdk::Result<()> {
    Err(Error::new("custom module")
        .with_type("QuotaError")
        .with_module("billing.errors"))
}

#[action]
fn list_details() -> cairn_sdk::Result<()> {
    Err(Error::new("bad details").with_details(vec![1, 2, 3]))
}

#[action]
fn read_missing_file() -> cairn_sdk::Result<String> {
    Ok(std::fs::read_to_string("/definitely/not/a/file/cairn")?)
}

#[action]
fn with_anyhow() -> anyhow::Result<()> {
    let inner: Result<(), std::io::Error> = Err(std::io::Error::other("disk on fire"));
    anyhow::Context::context(inner, "saving report")?;
    Ok(())
}

#[test]
fn result_err_of_display_type_is_described_by_its_type() {
    let err = call_err("withdraw", vec![("amount", V::int(5))]);
    assert_error(&err, "Overdrawn", "balance short by 5");
    assert_eq!(err.module, "all::errors");
    assert!(!err.retryable);
    assert_eq!(err.details, None);
}

#[test]
fn result_err_of_std_error_keeps_its_rust_path() {
    let err = call_err("parse_number", vec![("text", V::string("x1"))]);
    assert_error(&err, "ParseIntError", "invalid digit found in string");
    assert_eq!(err.module, "core::num::error");
}

#[test]
fn custom_error_carries_type_retryable_and_details() {
    let err = call_err("reserve", vec![("requested", V::int(12))]);
    assert_error(&err, "CapacityError", "only 10 left, 12 requested");
    // A custom type name lives where the action does.
    assert_eq!(err.module, "all::errors");
    assert!(err.retryable);
    let details = WorkflowDictArgument::decode(err.details.expect("details").as_slice()).unwrap();
    let details = V {
        kind: Some(cairn_payload::workflow_argument_value::Kind::DictValue(
            details,
        )),
    };
    assert_eq!(
        details,
        V::dict([
            ("limit".to_owned(), V::int(10)),
            ("requested".to_owned(), V::int(12)),
        ])
    );
}

#[test]
fn error_without_type_is_cairn_sdk_error() {
    let err = call_err("plain_error", vec![]);
    assert_error(&err, "Error", "something went wrong");
    assert_eq!(err.module, "cairn_sdk");
    assert!(!err.retryable);
}

#[test]
fn error_module_can_be_set_explicitly() {
    let err = call_err("elsewhere_error", vec![]);
    assert_eq!(
        (err.type_name.as_str(), err.module.as_str()),
        ("QuotaError", "billing.errors")
    );
}

#[test]
fn details_that_are_not_a_dict_are_dropped_with_a_note() {
    let err = call_err("list_details", vec![]);
    assert_eq!(err.details, None);
    assert!(
        err.message
            .starts_with("bad details (error details dropped: "),
        "message: {}",
        err.message
    );
}

#[test]
fn question_mark_converts_std_errors_keeping_their_type() {
    let err = call_err("read_missing_file", vec![]);
    assert_eq!(err.type_name, "Error");
    assert_eq!(err.module, "std::io::error");
    assert!(!err.message.is_empty());
}

#[test]
fn anyhow_error_keeps_its_context_chain() {
    let err = call_err("with_anyhow", vec![]);
    assert_error(&err, "Error", "saving report: disk on fire");
    assert_eq!(err.module, "anyhow");
}
