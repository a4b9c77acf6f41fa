//! The JSON module (feature `json`).

use cairn_payload::json::*;
use cairn_payload::*;
use serde_json::json;

use crate::support::*;

#[test]
fn nan_survives_payload_and_becomes_string_in_json() -> TestResult {
    let bytes = serialize_result_payload(to_value(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])?);
    let ResultPayload::Result(v) = deserialize_result_payload(&bytes)? else {
        return Err("expected a result".into());
    };
    let floats: Vec<f64> = from_value(&v)?;
    assert!(floats[0].is_nan());
    assert_eq!(&floats[1..], [f64::INFINITY, f64::NEG_INFINITY]);
    assert_eq!(
        payload_to_json(&bytes)?,
        json!({"result": ["NaN", "Infinity", "-Infinity"]})
    );
    // And back: float targets read those strings.
    let back: Vec<f64> = from_value(&json_to_value(&json!(["NaN", "Infinity", "-Infinity"])))?;
    assert!(back[0].is_nan());
    assert_eq!(&back[1..], [f64::INFINITY, f64::NEG_INFINITY]);
    Ok(())
}

#[test]
fn json_numbers_keep_int_and_float_apart() {
    assert_eq!(json_to_value(&json!(1)), WorkflowArgumentValue::int(1));
    assert_eq!(
        json_to_value(&json!(1.0)),
        WorkflowArgumentValue::double(1.0)
    );
    assert_eq!(
        value_to_json(&WorkflowArgumentValue::double(1.0)),
        json!(1.0)
    );
    assert_eq!(
        json_to_value(&json!(u64::MAX)),
        WorkflowArgumentValue::string(u64::MAX.to_string())
    );
}

#[test]
fn json_to_arguments_takes_objects_only() -> TestResult {
    let args = json_to_arguments(&json!({"name": "x", "n": [1, 2]}))?;
    assert_eq!(args.get("name"), Some(&WorkflowArgumentValue::string("x")));
    assert_eq!(arguments_to_json(&args), json!({"name": "x", "n": [1, 2]}));
    for (j, kind) in [
        (json!([1]), "an array"),
        (json!(null), "null"),
        (json!(3), "a number"),
        (json!("s"), "a string"),
        (json!(true), "a boolean"),
    ] {
        let err = json_to_arguments(&j).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("arguments must be a JSON object of keyword arguments, got {kind}")
        );
    }
    Ok(())
}

#[test]
fn error_payload_becomes_error_object_with_every_field() -> TestResult {
    let expected = json!({
        "type": "ValueError",
        "module": "builtins",
        "message": "bad value",
        "traceback": "line 1\nline 2",
        "values": {"code": 7},
        "type_hierarchy": ["ValueError", "Exception"],
    });
    assert_eq!(error_to_json(&sample_error()), expected);
    assert_eq!(
        payload_to_json(&serialize_error_payload(sample_error()))?,
        json!({"error": expected})
    );
    assert_eq!(value_to_json(&exception(sample_error())), expected);
    assert!(payload_to_json(b"\x0a\xff").is_err());
    Ok(())
}

#[test]
fn basemodel_and_tuple_become_plain_object_and_array() -> TestResult {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct P {
        a: (i32, bool),
    }
    let v = to_value(&P { a: (1, true) })?;
    let j = value_to_json(&v);
    assert_eq!(j, json!({"a": [1, true]}));
    // And the JSON form still deserializes into the struct.
    assert_eq!(from_value::<P>(&json_to_value(&j))?, P { a: (1, true) });
    Ok(())
}
