//! JSON <-> payload conversion: **the one place in cairn where it exists**.
//! The CLI (arguments typed by a person, results shown to one) and tools use
//! this module; nothing else converts, and the host never transcodes payloads
//! on the hot path.
//!
//! # Strategy
//!
//! JSON has fewer kinds than payloads, so payload -> JSON forgets some
//! distinctions and JSON -> payload picks the plainest kind:
//!
//! | payload | JSON | back to payload |
//! |---|---|---|
//! | null | `null` | null |
//! | bool, string | same | same |
//! | int | number | int |
//! | double, finite | number (`1.0` stays a float) | double |
//! | double NaN / +inf / -inf | `"NaN"` / `"Infinity"` / `"-Infinity"` (protobuf's canonical JSON spelling) | string (which float targets of [`from_value`](crate::from_value) read back) |
//! | list, tuple | array | list (sequence targets read both) |
//! | dict | object | dict |
//! | basemodel | object of its `data` (module and name are dropped) | dict (struct targets read both) |
//! | exception | [`error_to_json`] object | dict |
//! | — | number above i64::MAX | string of its decimal digits (integer targets read it) |
//!
//! So `json_to_value(value_to_json(v)) == v` for values built only from null,
//! bool, string, int, finite double, list and dict (with unique keys, in the
//! order serde_json's `Map` keeps: sorted, unless its `preserve_order` feature
//! is on).
//!
//! # Failure modes
//!
//! Conversions of values never fail. [`json_to_arguments`] fails unless given
//! a JSON object (arguments are keyword arguments), and [`payload_to_json`]
//! fails on bytes that are not a result payload.

use serde_json::{Map, Number, Value as Json};

use crate::messages::primitive_workflow_argument::Kind as P;
use crate::messages::workflow_argument_value::Kind as K;
use crate::{
    deserialize_result_payload, Error, ResultPayload, WorkflowArgument, WorkflowArgumentValue,
    WorkflowArguments, WorkflowDictArgument, WorkflowErrorValue, ERROR_KEY, RESULT_KEY,
};

/// Converts a payload value to JSON, for showing it to a person or a tool.
/// Lossy where JSON has no equivalent (see the module docs).
pub fn value_to_json(v: &WorkflowArgumentValue) -> Json {
    match &v.kind {
        None => Json::Null,
        Some(K::Primitive(p)) => match &p.kind {
            None | Some(P::NullValue(_)) => Json::Null,
            Some(P::StringValue(s)) => Json::String(s.clone()),
            Some(P::DoubleValue(f)) => double_to_json(*f),
            Some(P::IntValue(i)) => Json::Number((*i).into()),
            Some(P::BoolValue(b)) => Json::Bool(*b),
        },
        Some(K::Basemodel(m)) => dict_to_json(m.data.as_ref()),
        Some(K::Exception(e)) => error_to_json(e),
        Some(K::ListValue(l)) => Json::Array(l.items.iter().map(value_to_json).collect()),
        Some(K::TupleValue(t)) => Json::Array(t.items.iter().map(value_to_json).collect()),
        Some(K::DictValue(d)) => entries_to_json(&d.entries),
    }
}

/// Finite doubles are numbers; the others are the strings protobuf's JSON
/// mapping uses, since JSON numbers cannot express them.
fn double_to_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".to_owned()),
        None if f > 0.0 => Json::String("Infinity".to_owned()),
        None => Json::String("-Infinity".to_owned()),
    }
}

fn dict_to_json(dict: Option<&WorkflowDictArgument>) -> Json {
    entries_to_json(dict.map_or(&[], |d| &d.entries))
}

/// The first entry of a key wins, as in [`WorkflowArguments::get`].
fn entries_to_json(entries: &[WorkflowArgument]) -> Json {
    let mut map = Map::new();
    for entry in entries {
        map.entry(entry.key.clone())
            .or_insert_with(|| entry.value.as_ref().map_or(Json::Null, value_to_json));
    }
    Json::Object(map)
}

/// Converts JSON to a payload value, for arguments typed by a person or a
/// tool. Never fails (see the module docs for the mapping).
pub fn json_to_value(j: &Json) -> WorkflowArgumentValue {
    match j {
        Json::Null => WorkflowArgumentValue::null(),
        Json::Bool(b) => WorkflowArgumentValue::bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                WorkflowArgumentValue::int(i)
            } else if let Some(u) = n.as_u64() {
                // Above i64::MAX: a decimal string, as the serializer writes it.
                WorkflowArgumentValue::string(u.to_string())
            } else {
                WorkflowArgumentValue::double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => WorkflowArgumentValue::string(s.clone()),
        Json::Array(items) => WorkflowArgumentValue::list(items.iter().map(json_to_value)),
        Json::Object(map) => {
            WorkflowArgumentValue::dict(map.iter().map(|(k, v)| (k.clone(), json_to_value(v))))
        }
    }
}

/// Converts a JSON object of keyword arguments to [`WorkflowArguments`].
///
/// # Errors
///
/// When `j` is not an object: arguments are always keyword arguments, so a
/// bare value or array is a mistake worth reporting rather than guessing a
/// name for.
pub fn json_to_arguments(j: &Json) -> Result<WorkflowArguments, Error> {
    match j {
        Json::Object(map) => Ok(WorkflowArguments::from_pairs(
            map.iter().map(|(k, v)| (k.clone(), json_to_value(v))),
        )),
        other => Err(Error::msg(format_args!(
            "arguments must be a JSON object of keyword arguments, got {}",
            json_kind(other)
        ))),
    }
}

fn json_kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Converts arguments to a JSON object (first entry of a duplicated key wins).
pub fn arguments_to_json(a: &WorkflowArguments) -> Json {
    entries_to_json(&a.arguments)
}

/// Converts a result payload to `{"result": ...}` or `{"error": ...}` (the
/// latter as [`error_to_json`]), for showing an outcome.
///
/// # Errors
///
/// As [`deserialize_result_payload`].
pub fn payload_to_json(bytes: &[u8]) -> Result<Json, Error> {
    let (key, json) = match deserialize_result_payload(bytes)? {
        ResultPayload::Result(v) => (RESULT_KEY, value_to_json(&v)),
        ResultPayload::Error(e) => (ERROR_KEY, error_to_json(&e)),
    };
    let mut map = Map::new();
    map.insert(key.to_owned(), json);
    Ok(Json::Object(map))
}

/// Converts an error to an object with every field of the message: `type`,
/// `module`, `message`, `traceback`, `values` (an object, `{}` when absent)
/// and `type_hierarchy` (an array of strings).
pub fn error_to_json(e: &WorkflowErrorValue) -> Json {
    let mut map = Map::new();
    map.insert("type".to_owned(), Json::String(e.r#type.clone()));
    map.insert("module".to_owned(), Json::String(e.module.clone()));
    map.insert("message".to_owned(), Json::String(e.message.clone()));
    map.insert("traceback".to_owned(), Json::String(e.traceback.clone()));
    map.insert("values".to_owned(), dict_to_json(e.values.as_ref()));
    map.insert(
        "type_hierarchy".to_owned(),
        Json::Array(
            e.type_hierarchy
                .iter()
                .map(|t| Json::String(t.clone()))
                .collect(),
        ),
    );
    Json::Object(map)
}
