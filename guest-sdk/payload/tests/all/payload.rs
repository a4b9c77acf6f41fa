//! The payload envelope: arguments, result and error payloads as bytes.

use cairn_payload::*;

use crate::support::*;

#[test]
fn result_payload_round_trips() -> TestResult {
    let value = to_value(&vec![(1, "a".to_owned())])?;
    let bytes = serialize_result_payload(value.clone());
    let args = decode_arguments(&bytes)?;
    assert_eq!(args.arguments.len(), 1);
    assert_eq!(args.get("result"), Some(&value));
    assert_eq!(
        deserialize_result_payload(&bytes)?,
        ResultPayload::Result(value)
    );
    Ok(())
}

#[test]
fn error_payload_round_trips() -> TestResult {
    let bytes = serialize_error_payload(sample_error());
    let args = decode_arguments(&bytes)?;
    assert_eq!(args.arguments.len(), 1);
    assert_eq!(args.get("error"), Some(&exception(sample_error())));
    assert_eq!(
        deserialize_result_payload(&bytes)?,
        ResultPayload::Error(sample_error())
    );
    Ok(())
}

#[test]
fn deserialize_result_payload_rejects_garbage() {
    // A truncated length-delimited field: not protobuf.
    let err = deserialize_result_payload(&[0x0a, 0xff, 0x01]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("result payload: payload is not a protobuf WorkflowArguments"),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'));
    // Valid protobuf of the wrong shape (empty): neither key.
    let err = deserialize_result_payload(&[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "result payload has neither a `result` nor an `error` entry (keys: [])"
    );
}

#[test]
fn result_payload_with_both_keys_is_rejected() {
    let args = WorkflowArguments::from_pairs([
        ("result".to_owned(), WorkflowArgumentValue::int(1)),
        ("error".to_owned(), exception(sample_error())),
    ]);
    let err = deserialize_result_payload(&encode_arguments(&args)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "result payload has both `result` and `error` entries"
    );
}

#[test]
fn result_payload_error_must_be_an_exception() {
    let args = WorkflowArguments::from_pairs([(
        "error".to_owned(),
        WorkflowArgumentValue::string("boom"),
    )]);
    let err = deserialize_result_payload(&encode_arguments(&args)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "result payload's `error` entry is not an exception but string"
    );
}

#[test]
fn result_payload_ignores_extra_keys() -> TestResult {
    let args = WorkflowArguments::from_pairs([
        ("meta".to_owned(), WorkflowArgumentValue::int(1)),
        ("result".to_owned(), WorkflowArgumentValue::bool(true)),
    ]);
    assert_eq!(
        deserialize_result_payload(&encode_arguments(&args))?,
        ResultPayload::Result(WorkflowArgumentValue::bool(true))
    );
    Ok(())
}

#[test]
fn arguments_get_returns_first_entry_and_null_for_valueless() {
    let mut args = WorkflowArguments::from_pairs([
        ("a".to_owned(), WorkflowArgumentValue::int(1)),
        ("a".to_owned(), WorkflowArgumentValue::int(2)),
    ]);
    args.arguments.push(WorkflowArgument {
        key: "empty".into(),
        value: None,
    });
    assert_eq!(args.get("a"), Some(&WorkflowArgumentValue::int(1)));
    assert!(args
        .get("empty")
        .is_some_and(WorkflowArgumentValue::is_null));
    assert_eq!(args.get("missing"), None);
}

#[test]
fn arguments_survive_encoding() -> TestResult {
    let args = WorkflowArguments::from_pairs([
        ("x".to_owned(), to_value(&[1.5, f64::NAN])?),
        ("y".to_owned(), WorkflowArgumentValue::null()),
    ]);
    let decoded = decode_arguments(&encode_arguments(&args))?;
    assert_eq!(format!("{decoded:?}"), format!("{args:?}"));
    Ok(())
}
