//! Binding keyword arguments to parameters.

use cairn_payload::WorkflowArgumentValue as V;
use cairn_sdk::action;
use serde::{Deserialize, Serialize};

use crate::{assert_error, assert_error_starts, call, call_err, call_raw};

#[action]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

#[action]
fn scale(point: Point, factor: f64) -> Point {
    Point {
        x: point.x * factor,
        y: point.y * factor,
    }
}

#[action]
fn greeting(name: String, punctuation: Option<String>) -> String {
    format!("Hello, {name}{}", punctuation.unwrap_or_else(|| ".".into()))
}

#[action]
fn label(r#type: String) -> String {
    format!("type={type}", type = r#type)
}

#[action]
fn nothing() {}

#[action(name = "renamed")]
fn original_name() -> &'static str {
    "renamed"
}

/// A parameter named like its function must not shadow the call.
#[action]
fn echo(echo: String) -> String {
    echo
}

struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to serialize"))
    }
}

#[action]
fn unserializable() -> Unserializable {
    Unserializable
}

fn point(x: f64, y: f64) -> V {
    V::dict([
        ("x".to_owned(), V::double(x)),
        ("y".to_owned(), V::double(y)),
    ])
}

#[test]
fn typed_arguments_are_bound_by_name() {
    let result = call("add", vec![("b", V::int(2)), ("a", V::int(40))]).unwrap();
    assert_eq!(result, V::int(42));
}

#[test]
fn struct_argument_is_read_from_a_plain_dict() {
    let result = call(
        "scale",
        vec![("point", point(1.0, -2.0)), ("factor", V::double(3.0))],
    )
    .unwrap();
    let scaled: Point = cairn_payload::from_value(&result).unwrap();
    assert_eq!(scaled, Point { x: 3.0, y: -6.0 });
}

#[test]
fn struct_argument_is_read_from_a_basemodel() {
    // What a Python caller sends for a Pydantic model, and what `to_value`
    // writes for a Rust struct.
    let model = cairn_payload::to_value(&Point { x: 0.5, y: 4.0 }).unwrap();
    assert_eq!(model.kind_name(), "basemodel");
    let result = call("scale", vec![("point", model), ("factor", V::int(2))]).unwrap();
    let scaled: Point = cairn_payload::from_value(&result).unwrap();
    assert_eq!(scaled, Point { x: 1.0, y: 8.0 });
}

#[test]
fn missing_option_argument_is_none() {
    let result = call("greeting", vec![("name", V::string("Ada"))]).unwrap();
    assert_eq!(result, V::string("Hello, Ada."));
    let result = call(
        "greeting",
        vec![("name", V::string("Ada")), ("punctuation", V::string("!"))],
    )
    .unwrap();
    assert_eq!(result, V::string("Hello, Ada!"));
}

#[test]
fn missing_unexpected_or_repeated_argument_is_error_naming_it() {
    let cases = [
        (vec![("a", V::int(1))], "missing required argument `b`"),
        (
            vec![("a", V::int(1)), ("b", V::int(2)), ("c", V::int(3))],
            "unexpected argument `c`",
        ),
        (
            vec![("a", V::int(1)), ("a", V::int(2)), ("b", V::int(3))],
            "argument `a` given more than once",
        ),
    ];
    for (kwargs, message) in cases {
        let err = call_err("add", kwargs);
        assert_error(&err, "ArgumentError", message);
        assert_eq!(err.module, "cairn_sdk", "{message}");
        assert!(!err.retryable, "{message}");
    }
}

#[test]
fn wrong_type_is_error_naming_parameter() {
    let err = call_err("add", vec![("a", V::int(1)), ("b", V::string("two"))]);
    assert_error_starts(&err, "ArgumentError", "argument `b`: ");
    assert!(err.message.contains("string"), "message: {}", err.message);
}

#[test]
fn wrong_field_type_inside_struct_names_parameter() {
    let bad = V::dict([
        ("x".to_owned(), V::string("left")),
        ("y".to_owned(), V::double(0.0)),
    ]);
    let err = call_err("scale", vec![("point", bad), ("factor", V::double(1.0))]);
    assert_error_starts(&err, "ArgumentError", "argument `point`: ");
}

#[test]
fn unknown_action_is_error_naming_module_and_action() {
    let err = call_err("subtract", vec![]);
    assert_error(
        &err,
        "UnknownAction",
        "plugin `sdk_tests` has no action `subtract`",
    );
    assert!(!err.retryable);
}

#[test]
fn garbage_argument_bytes_are_argument_error() {
    let err = call_raw("add", &[0xff, 0xff, 0xff, 0x01]).unwrap_err();
    assert_error_starts(
        &err,
        "ArgumentError",
        "arguments are not a valid WorkflowArguments payload: ",
    );
}

#[test]
fn empty_argument_bytes_are_no_arguments() {
    // Zero bytes are a valid, empty protobuf message.
    assert_eq!(call_raw("nothing", &[]).unwrap(), V::null());
}

#[test]
fn raw_identifier_parameter_is_the_unraw_name() {
    let result = call("label", vec![("type", V::string("circle"))]).unwrap();
    assert_eq!(result, V::string("type=circle"));
}

#[test]
fn unit_return_is_null() {
    assert_eq!(call("nothing", vec![]).unwrap(), V::null());
}

#[test]
fn renamed_action_is_invoked_by_its_new_name() {
    assert_eq!(call("renamed", vec![]).unwrap(), V::string("renamed"));
    assert_eq!(call_err("original_name", vec![]).type_name, "UnknownAction");
}

#[test]
fn parameter_named_like_its_function_does_not_shadow_it() {
    assert_eq!(
        call("echo", vec![("echo", V::string("hi"))]).unwrap(),
        V::string("hi")
    );
}

#[test]
fn result_that_fails_to_serialize_is_serialization_error() {
    let err = call_err("unserializable", vec![]);
    assert_eq!(err.type_name, "SerializationError");
    assert!(
        err.message.contains("unserializable"),
        "message: {}",
        err.message
    );
    assert!(
        err.message.contains("refuses to serialize"),
        "message: {}",
        err.message
    );
}

#[test]
fn actions_stay_plain_functions() {
    assert_eq!(add(1, 2), 3);
    assert_eq!(original_name(), "renamed");
}

#[test]
fn call_takes_keyword_arguments_as_typed_parameters() {
    let resolver = cairn_sdk::Resolver::new();
    assert_eq!(add::call(&resolver, 40, 2).unwrap(), 42);
    // A parameter named like the function does not shadow it, and raw
    // identifiers keep working.
    assert_eq!(echo::call(&resolver, "hi".into()).unwrap(), "hi");
    assert_eq!(label::call(&resolver, "x".into()).unwrap(), "type=x");
    assert_eq!(original_name::call(&resolver).unwrap(), "renamed");
}
