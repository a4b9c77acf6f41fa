//! Property tests: arbitrary values survive every path through the format.

use std::collections::{BTreeMap, HashMap};

use cairn_payload::messages::workflow_argument_value::Kind as K;
use cairn_payload::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::{dict_of, exception, Bytes};

/// An f64 compared bit for bit, so that NaN equals itself and 0.0 != -0.0:
/// the format must keep every double exactly.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
#[serde(transparent)]
struct Exact(f64);

impl PartialEq for Exact {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// An f32 compared bit for bit, except that any NaN equals any NaN (widening
/// to f64 and back may quiet a signalling NaN).
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
#[serde(transparent)]
struct Exact32(f32);

impl PartialEq for Exact32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits() || (self.0.is_nan() && other.0.is_nan())
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Inner {
    label: String,
    score: Exact,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Pair(i16, Option<String>);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Id(u64);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Nothing;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Empty,
    Circle(Exact),
    Pair(i32, String),
    Rect { w: u32, inner: Box<Inner> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Rich {
    signed: i64,
    unsigned: u64,
    small: i8,
    byte: u8,
    wide: i128,
    uwide: u128,
    real: Exact,
    real32: Exact32,
    flag: bool,
    text: String,
    letter: char,
    bytes: Bytes,
    unit: (),
    nothing: Nothing,
    id: Id,
    maybe: Option<Inner>,
    items: Vec<Inner>,
    triple: (u32, String, bool),
    pair: Pair,
    shapes: Vec<Shape>,
    by_name: HashMap<String, Shape>,
    by_number: BTreeMap<i32, Option<Exact32>>,
    array: [u16; 3],
}

fn exact() -> impl Strategy<Value = Exact> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
    .prop_map(Exact)
}

fn exact32() -> impl Strategy<Value = Exact32> {
    prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY)].prop_map(Exact32)
}

fn inner() -> impl Strategy<Value = Inner> {
    (
        any::<String>(),
        exact(),
        prop::collection::vec(any::<String>(), 0..3),
    )
        .prop_map(|(label, score, tags)| Inner { label, score, tags })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        exact().prop_map(Shape::Circle),
        (any::<i32>(), any::<String>()).prop_map(|(a, b)| Shape::Pair(a, b)),
        (any::<u32>(), inner()).prop_map(|(w, i)| Shape::Rect {
            w,
            inner: Box::new(i)
        }),
    ]
}

/// u64s biased towards the edges, including past i64::MAX.
fn wide_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (i64::MAX as u64 - 2)..=(i64::MAX as u64 + 2),
        Just(u64::MAX),
        Just(0),
    ]
}

fn rich() -> impl Strategy<Value = Rich> {
    let scalars = (
        any::<i64>(),
        wide_u64(),
        any::<i8>(),
        any::<u8>(),
        any::<i128>(),
        any::<u128>(),
        exact(),
        exact32(),
        any::<bool>(),
        any::<String>(),
        any::<char>(),
        prop::collection::vec(any::<u8>(), 0..8),
    );
    let compounds = (
        wide_u64(),
        prop::option::of(inner()),
        prop::collection::vec(inner(), 0..3),
        (any::<u32>(), any::<String>(), any::<bool>()),
        (any::<i16>(), prop::option::of(any::<String>())),
        prop::collection::vec(shape(), 0..4),
        prop::collection::hash_map(any::<String>(), shape(), 0..4),
        prop::collection::btree_map(any::<i32>(), prop::option::of(exact32()), 0..4),
        any::<[u16; 3]>(),
    );
    (scalars, compounds).prop_map(
        |(
            (signed, unsigned, small, byte, wide, uwide, real, real32, flag, text, letter, bytes),
            (id, maybe, items, triple, (p0, p1), shapes, by_name, by_number, array),
        )| Rich {
            signed,
            unsigned,
            small,
            byte,
            wide,
            uwide,
            real,
            real32,
            flag,
            text,
            letter,
            bytes: Bytes(bytes),
            unit: (),
            nothing: Nothing,
            id: Id(id),
            maybe,
            items,
            triple,
            pair: Pair(p0, p1),
            shapes,
            by_name,
            by_number,
            array,
        },
    )
}

/// Any payload value, of every kind, nested a few levels.
pub fn any_value() -> impl Strategy<Value = WorkflowArgumentValue> {
    let leaf = prop_oneof![
        Just(WorkflowArgumentValue::null()),
        Just(WorkflowArgumentValue::default()),
        any::<bool>().prop_map(WorkflowArgumentValue::bool),
        any::<i64>().prop_map(WorkflowArgumentValue::int),
        exact().prop_map(|f| WorkflowArgumentValue::double(f.0)),
        any::<String>().prop_map(WorkflowArgumentValue::string),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let entries = prop::collection::vec((any::<String>(), inner.clone()), 0..4);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(WorkflowArgumentValue::list),
            prop::collection::vec(inner.clone(), 0..4).prop_map(WorkflowArgumentValue::tuple),
            entries.clone().prop_map(WorkflowArgumentValue::dict),
            (any::<String>(), any::<String>(), entries.clone()).prop_map(|(module, name, e)| {
                WorkflowArgumentValue {
                    kind: Some(K::Basemodel(BaseModelWorkflowArgument {
                        module,
                        name,
                        data: Some(dict_of(e)),
                    })),
                }
            }),
            (
                prop::collection::vec(any::<String>(), 4),
                entries,
                prop::collection::vec(any::<String>(), 0..3)
            )
                .prop_map(|(s, e, type_hierarchy)| exception(WorkflowErrorValue {
                    r#type: s[0].clone(),
                    module: s[1].clone(),
                    message: s[2].clone(),
                    traceback: s[3].clone(),
                    values: Some(dict_of(e)),
                    type_hierarchy,
                })),
        ]
    })
}

/// Debug output compares NaN equal to NaN and tells every other double apart,
/// so it stands in for equality of values that may hold NaN.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rich_values_round_trip_through_value(x in rich()) {
        let value = to_value(&x)?;
        prop_assert_eq!(from_value::<Rich>(&value)?, x);
    }

    #[test]
    fn rich_values_round_trip_through_result_payload(x in rich()) {
        let bytes = serialize_result_payload(to_value(&x)?);
        let ResultPayload::Result(value) = deserialize_result_payload(&bytes)? else {
            return Err(TestCaseError::fail("expected a result payload"));
        };
        prop_assert_eq!(from_value::<Rich>(&value)?, x);
        // Encoding is a function of the value: decoding loses nothing.
        prop_assert_eq!(serialize_result_payload(value), bytes);
    }

    #[test]
    fn arbitrary_arguments_survive_encode_decode(
        pairs in prop::collection::vec((any::<String>(), any_value()), 0..5)
    ) {
        let args = WorkflowArguments::from_pairs(pairs);
        let decoded = decode_arguments(&encode_arguments(&args))?;
        prop_assert!(same(&decoded, &args), "{:?} != {:?}", decoded, args);
    }

    #[test]
    fn arbitrary_values_survive_result_payload(value in any_value()) {
        let bytes = serialize_result_payload(value.clone());
        let ResultPayload::Result(back) = deserialize_result_payload(&bytes)? else {
            return Err(TestCaseError::fail("expected a result payload"));
        };
        prop_assert!(same(&back, &value), "{:?} != {:?}", back, value);
    }

    #[test]
    fn arbitrary_values_deserialize_into_dynamic_targets(value in any_value()) {
        // serde_json::Value reads every kind through deserialize_any
        // (non-finite doubles become null there, as serde_json has no NaN).
        let json = from_value::<serde_json::Value>(&value);
        prop_assert!(json.is_ok(), "{:?}", json);
    }
}

#[cfg(feature = "json")]
mod json {
    use super::*;
    use cairn_payload::json::{json_to_value, value_to_json};

    /// Values JSON can represent exactly: null, bool, string, int, finite
    /// double, list, and dicts with unique keys in serde_json's (sorted) order.
    fn json_value() -> impl Strategy<Value = WorkflowArgumentValue> {
        let leaf = prop_oneof![
            Just(WorkflowArgumentValue::null()),
            any::<bool>().prop_map(WorkflowArgumentValue::bool),
            any::<i64>().prop_map(WorkflowArgumentValue::int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(WorkflowArgumentValue::double),
            any::<String>().prop_map(WorkflowArgumentValue::string),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(WorkflowArgumentValue::list),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(WorkflowArgumentValue::dict),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn json_representable_values_round_trip_through_json(v in json_value()) {
            prop_assert_eq!(json_to_value(&value_to_json(&v)), v);
        }

        #[test]
        fn rich_values_survive_json(x in rich()) {
            // Tuples become lists, basemodels dicts, non-finite doubles and
            // wide integers strings: the lenient reader takes them all back.
            let j = value_to_json(&to_value(&x)?);
            prop_assert_eq!(from_value::<Rich>(&json_to_value(&j))?, x);
        }
    }
}
