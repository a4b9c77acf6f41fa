//! The SDK's tests, in one binary: actions defined here with `#[action]` are
//! driven through `cairn_sdk::__private::{describe, invoke}` with real
//! protobuf payloads, exactly as the host drives a plugin through the
//! component boundary.

mod arguments;
mod asynchronous;
mod builtins;
mod dependencies;
mod describe;
mod errors;
mod native;
mod panic;

use cairn_payload::{ResultPayload, WorkflowArgumentValue, WorkflowArguments};
use cairn_sdk::__private::ActionError;

/// The module these tests register their actions under.
pub const MODULE: &str = "sdk_tests";

// The one-line plugin declaration must compile natively too (authors' unit
// tests build the plugin crate for the machine).
cairn_sdk::plugin!(module = "sdk_tests");

/// Invoke `action` with keyword arguments, as the host would: encode, call,
/// decode the result payload.
pub fn call(
    action: &str,
    kwargs: Vec<(&str, WorkflowArgumentValue)>,
) -> Result<WorkflowArgumentValue, ActionError> {
    let args = WorkflowArguments::from_pairs(kwargs.into_iter().map(|(k, v)| (k.to_owned(), v)));
    call_raw(action, &cairn_payload::encode_arguments(&args))
}

/// Invoke `action` with raw argument bytes.
pub fn call_raw(action: &str, bytes: &[u8]) -> Result<WorkflowArgumentValue, ActionError> {
    let payload = cairn_sdk::__private::invoke(MODULE, action, bytes)?;
    match cairn_payload::deserialize_result_payload(&payload).expect("a valid result payload") {
        ResultPayload::Result(value) => Ok(value),
        ResultPayload::Error(err) => panic!("invoke returned an error payload as success: {err:?}"),
    }
}

/// The error of a call that must fail.
pub fn call_err(action: &str, kwargs: Vec<(&str, WorkflowArgumentValue)>) -> ActionError {
    match call(action, kwargs) {
        Ok(value) => panic!("`{action}` succeeded with {value:?}, expected an error"),
        Err(err) => err,
    }
}

/// Assert that `err` is of type `type_name` with exactly `message`, both in
/// one comparison so that a failure shows the two together.
#[track_caller]
pub fn assert_error(err: &ActionError, type_name: &str, message: &str) {
    assert_eq!(
        (err.type_name.as_str(), err.message.as_str()),
        (type_name, message)
    );
}

/// Assert that `err` is of type `type_name` with a message that starts with
/// `prefix` (the rest names details outside the SDK, such as serde's wording).
#[track_caller]
pub fn assert_error_starts(err: &ActionError, type_name: &str, prefix: &str) {
    assert_eq!(err.type_name, type_name, "message: {}", err.message);
    assert!(err.message.starts_with(prefix), "message: {}", err.message);
}
