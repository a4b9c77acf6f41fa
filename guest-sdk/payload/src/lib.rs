//! cairn's payload format: the protobuf messages that carry action arguments
//! and results, and the mapping between them and any serde type.
//!
//! # Strategy
//!
//! Payloads cross the host/guest boundary and sit in storage as protobuf bytes
//! of the messages in `proto/messages.proto` (Rust types in [`messages`],
//! generated from that file). A payload is a [`WorkflowArguments`]: keyword
//! arguments on the way in; on the way out a single entry, `result` or
//! `error` ([`serialize_result_payload`], [`serialize_error_payload`],
//! [`deserialize_result_payload`]).
//!
//! Rust values become a [`WorkflowArgumentValue`] through a real serde
//! `Serializer` ([`to_value`]) and come back through a real `Deserializer`
//! ([`from_value`]), so every `#[derive(Serialize, Deserialize)]` type works
//! without cairn-specific code. JSON (for the CLI and tools) converts in
//! `json` (feature `json`), the one place such a conversion exists.
//!
//! # Failure modes
//!
//! * Serializing fails only for map keys that are not strings, integers,
//!   bools, chars or unit enum variants, or when a user `Serialize` impl fails.
//! * Deserializing fails when a value's kind does not fit the target
//!   (`invalid type: string "a", expected i64`), an integer does not fit the
//!   target type, or a user `Deserialize` impl fails. Errors name where in the
//!   value they happened (``at field `point.x`: ...``).
//! * Decoding bytes fails when they are not a protobuf `WorkflowArguments`, and
//!   result payloads must hold exactly one of `result` and `error`.
//! * [`check_result_payload`] tells, without decoding or copying, whether
//!   bytes a guest returned as its success are a result payload every reader
//!   can decode (the host checks this before storing them).
//!
//! Every [`Error`] displays on one line.
//!
//! # The serde mapping
//!
//! Writing is deterministic; reading is lenient where a value may have been
//! written by another language or have come from JSON.
//!
//! | Rust (serde data model) | written as | also read from |
//! |---|---|---|
//! | `bool` | `bool_value` | |
//! | `i8`..`i64`, `u8`..`u32` | `int_value` | a string of decimal digits |
//! | `u64`, `i128`, `u128` | `int_value` when inside the i64 range, else `string_value` of the decimal digits (lossless) | same |
//! | `f32`, `f64` (also NaN, ±infinity) | `double_value` | `int_value`; the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `char` | `string_value` of one char | |
//! | `String`, `&str` | `string_value` | |
//! | bytes (`serialize_bytes`) | `list_value` of `int_value` 0..=255, like a `Vec<u8>` | a `string_value` (its UTF-8 bytes) |
//! | `()`, unit struct, `None` | `null_value` | an unset value or kind |
//! | `Some(x)` | `x` | |
//! | newtype struct `W(x)` | `x` (transparent) | |
//! | sequence (`Vec`, sets, arrays) | `list_value` | `tuple_value` |
//! | tuple, tuple struct | `tuple_value` | `list_value` |
//! | map | `dict_value`; integer, bool, char and unit-variant keys as their string form | `basemodel` (its `data`); exceptions (see below) |
//! | struct | `basemodel`: `name` = the serde name, `module` = the Rust module path, `data` = the fields (skipped fields omitted) | `dict_value`; a list or tuple of the fields in order |
//! | unit variant | `string_value` of the variant name | `{variant: null}` |
//! | newtype variant | `dict_value` `{variant: value}` | |
//! | tuple variant | `dict_value` `{variant: tuple_value}` | `{variant: list_value}` |
//! | struct variant | `dict_value` `{variant: dict_value of the fields}` | `{variant: basemodel}` |
//!
//! Integers past i64 are strings because protobuf's `sint64` cannot hold them
//! and a `double` would round them; any integer target reads such a string
//! back, and a value out of range for the target is an error naming the value
//! and the type. Map keys are strings in protobuf; integer, bool and char keys
//! are parsed back (as serde_json does); float, sequence, map and struct keys
//! are an error: "map keys must be strings, numbers, bools or chars".
//!
//! Struct module paths: serde only passes a struct's bare name, so the
//! serializer carries `std::any::type_name` of each value it serializes and
//! takes the path before the segment equal to the struct's name:
//! `alloc::boxed::Box<my_crate::geo::Point>` gives `my_crate::geo`. When the
//! name is not found (e.g. `#[serde(rename)]` or `#[serde(transparent)]`
//! around another struct), `module` is `""`.
//!
//! Self-describing targets (`serde_json::Value`, `#[serde(untagged)]`,
//! `#[serde(flatten)]`) see null as unit, `int_value` as `i64`, `double_value`
//! as `f64`, strings as strings (so a `u64` above i64::MAX arrives as its
//! decimal string), lists and tuples as sequences, and dicts and basemodels
//! (their data) as maps. An `exception` reads as a map with the keys `type`,
//! `module`, `message`, `traceback`, `values` (a map) and `type_hierarchy` (a
//! list of strings).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Point { x: i64, y: f64 }
//!
//! let value = cairn_payload::to_value(&Point { x: 1, y: 2.5 })?;
//! let payload = cairn_payload::serialize_result_payload(value);
//! match cairn_payload::deserialize_result_payload(&payload)? {
//!     cairn_payload::ResultPayload::Result(v) => {
//!         assert_eq!(cairn_payload::from_value::<Point>(&v)?, Point { x: 1, y: 2.5 });
//!     }
//!     cairn_payload::ResultPayload::Error(e) => panic!("unexpected error {e:?}"),
//! }
//! # Ok::<(), cairn_payload::Error>(())
//! ```

#![warn(missing_docs)]

mod check;
mod de;
mod error;
#[cfg(feature = "json")]
pub mod json;
/// The protobuf messages, generated from `proto/messages.proto` (see
/// `tests/all/generated.rs` for how to regenerate).
#[rustfmt::skip]
#[allow(clippy::all)]
pub mod messages;
mod ser;

use prost::Message;

pub use check::check_result_payload;
pub use error::Error;
pub use messages::*;

use messages::primitive_workflow_argument::Kind as P;
use messages::workflow_argument_value::Kind as K;

/// The key of a successful outcome in a result payload.
pub const RESULT_KEY: &str = "result";
/// The key of a failed outcome in a result payload.
pub const ERROR_KEY: &str = "error";

/// Converts any serde value into a payload value, following the table in the
/// crate docs.
///
/// # Errors
///
/// When a map key is not a string, integer, bool, char or unit variant, or the
/// value's `Serialize` impl fails.
pub fn to_value<T: ?Sized + serde::Serialize>(value: &T) -> Result<WorkflowArgumentValue, Error> {
    value.serialize(ser::Serializer::of::<T>())
}

/// Converts a payload value into any serde type, following the table in the
/// crate docs (leniently: structs read dicts, sequences read tuples, ...).
///
/// # Errors
///
/// When the value's shape does not fit `T` or an integer is out of `T`'s
/// range; the error names the location in the value.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: &WorkflowArgumentValue,
) -> Result<T, Error> {
    T::deserialize(de::Deserializer { value })
}

/// Encodes arguments (or any payload) as protobuf bytes, the form in which
/// they cross the host/guest boundary and are stored.
pub fn encode_arguments(args: &WorkflowArguments) -> Vec<u8> {
    args.encode_to_vec()
}

/// Decodes protobuf bytes into arguments.
///
/// # Errors
///
/// When the bytes are not a protobuf `WorkflowArguments`.
pub fn decode_arguments(bytes: &[u8]) -> Result<WorkflowArguments, Error> {
    WorkflowArguments::decode(bytes).map_err(|e| {
        Error::msg(format_args!(
            "payload is not a protobuf WorkflowArguments: {e}"
        ))
    })
}

/// Encodes a successful outcome: a `WorkflowArguments` with the single key
/// `result`. This is what a guest's `invoke` returns on success.
pub fn serialize_result_payload(value: WorkflowArgumentValue) -> Vec<u8> {
    encode_arguments(&WorkflowArguments::from_pairs([(
        RESULT_KEY.to_owned(),
        value,
    )]))
}

/// Encodes a failed outcome: a `WorkflowArguments` with the single key
/// `error` whose value is the exception. The host stores this for errors the
/// guest reported and for traps and timeouts it observed itself.
pub fn serialize_error_payload(err: WorkflowErrorValue) -> Vec<u8> {
    let value = WorkflowArgumentValue {
        kind: Some(K::Exception(err)),
    };
    encode_arguments(&WorkflowArguments::from_pairs([(
        ERROR_KEY.to_owned(),
        value,
    )]))
}

/// The outcome held by a result payload.
#[derive(Clone, PartialEq, Debug)]
pub enum ResultPayload {
    /// The action returned this value.
    Result(WorkflowArgumentValue),
    /// The action failed with this error.
    Error(WorkflowErrorValue),
}

/// Decodes a result payload written by [`serialize_result_payload`] or
/// [`serialize_error_payload`] (or another language's equivalent).
///
/// Entries other than `result` and `error` are ignored, so that writers may
/// add metadata later.
///
/// # Errors
///
/// When the bytes are not protobuf, when the payload has neither or both of
/// `result` and `error`, or when `error` is not an exception.
pub fn deserialize_result_payload(bytes: &[u8]) -> Result<ResultPayload, Error> {
    let args = decode_arguments(bytes)
        .map_err(|e| Error::msg(format_args!("result payload: {}", e.message())))?;
    match (args.get(RESULT_KEY), args.get(ERROR_KEY)) {
        (Some(value), None) => Ok(ResultPayload::Result(value.clone())),
        (None, Some(value)) => match &value.kind {
            Some(K::Exception(e)) => Ok(ResultPayload::Error(e.clone())),
            _ => Err(Error::msg(format_args!(
                "result payload's `error` entry is not an exception but {}",
                value.kind_name()
            ))),
        },
        (Some(_), Some(_)) => Err(Error::msg(
            "result payload has both `result` and `error` entries",
        )),
        (None, None) => {
            let keys: Vec<&str> = args.arguments.iter().map(|a| a.key.as_str()).collect();
            Err(Error::msg(format_args!(
                "result payload has neither a `result` nor an `error` entry (keys: {keys:?})"
            )))
        }
    }
}

impl WorkflowArgumentValue {
    /// Null (`None`, `()`). Written explicitly as `null_value` so that other
    /// readers see null rather than an unset value.
    pub fn null() -> Self {
        Self::primitive(P::NullValue(prost_types::NullValue::NullValue as i32))
    }

    /// A string.
    pub fn string(s: impl Into<String>) -> Self {
        Self::primitive(P::StringValue(s.into()))
    }

    /// A signed 64-bit integer.
    pub fn int(i: i64) -> Self {
        Self::primitive(P::IntValue(i))
    }

    /// A double (NaN and the infinities included).
    pub fn double(f: f64) -> Self {
        Self::primitive(P::DoubleValue(f))
    }

    /// A boolean.
    pub fn bool(b: bool) -> Self {
        Self::primitive(P::BoolValue(b))
    }

    /// A list (variable length; what sequences serialize to).
    pub fn list(items: impl IntoIterator<Item = Self>) -> Self {
        WorkflowArgumentValue {
            kind: Some(K::ListValue(WorkflowListArgument {
                items: items.into_iter().collect(),
            })),
        }
    }

    /// A tuple (fixed length; what Rust tuples serialize to).
    pub fn tuple(items: impl IntoIterator<Item = Self>) -> Self {
        WorkflowArgumentValue {
            kind: Some(K::TupleValue(WorkflowTupleArgument {
                items: items.into_iter().collect(),
            })),
        }
    }

    /// A dict, entries in the given order.
    pub fn dict(entries: impl IntoIterator<Item = (String, Self)>) -> Self {
        WorkflowArgumentValue {
            kind: Some(K::DictValue(WorkflowDictArgument {
                entries: entries_of(entries),
            })),
        }
    }

    /// Whether this is null: an explicit `null_value`, or no kind at all
    /// (which readers treat the same).
    pub fn is_null(&self) -> bool {
        matches!(
            &self.kind,
            None | Some(K::Primitive(PrimitiveWorkflowArgument {
                kind: None | Some(P::NullValue(_))
            }))
        )
    }

    /// A short name of the value's kind ("string", "int", "list", ...), for
    /// error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            None => "null",
            Some(K::Primitive(p)) => match &p.kind {
                None | Some(P::NullValue(_)) => "null",
                Some(P::StringValue(_)) => "string",
                Some(P::DoubleValue(_)) => "double",
                Some(P::IntValue(_)) => "int",
                Some(P::BoolValue(_)) => "bool",
            },
            Some(K::Basemodel(_)) => "basemodel",
            Some(K::Exception(_)) => "exception",
            Some(K::ListValue(_)) => "list",
            Some(K::TupleValue(_)) => "tuple",
            Some(K::DictValue(_)) => "dict",
        }
    }

    fn primitive(kind: P) -> Self {
        WorkflowArgumentValue {
            kind: Some(K::Primitive(PrimitiveWorkflowArgument { kind: Some(kind) })),
        }
    }
}

impl WorkflowArguments {
    /// The value of the first argument named `key`. An argument present
    /// without a value reads as null, so that it is not mistaken for a
    /// missing one.
    pub fn get(&self, key: &str) -> Option<&WorkflowArgumentValue> {
        self.arguments
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.value.as_ref().unwrap_or(&de::NULL))
    }

    /// Arguments from `(key, value)` pairs, in the given order.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, WorkflowArgumentValue)>) -> Self {
        WorkflowArguments {
            arguments: entries_of(pairs),
        }
    }
}

/// `(key, value)` pairs as entries, in the given order: the contents of a
/// dict and of keyword arguments alike.
fn entries_of(
    pairs: impl IntoIterator<Item = (String, WorkflowArgumentValue)>,
) -> Vec<WorkflowArgument> {
    pairs
        .into_iter()
        .map(|(key, value)| ser::entry(key, value))
        .collect()
}
