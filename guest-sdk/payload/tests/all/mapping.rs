//! One test per rule of the serde mapping (the table in the crate docs).

use std::collections::{BTreeMap, HashMap};

use cairn_payload::{from_value, to_value, WorkflowArgumentValue as V};
use serde::{Deserialize, Serialize};

use crate::support::*;

pub mod geo {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Point {
        pub x: i64,
        pub y: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Wrapper<T> {
        pub inner: T,
    }
}
use geo::{Point, Wrapper};

const GEO: &str = concat!(module_path!(), "::geo");

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Shape {
    Empty,
    Circle(f64),
    Pair(i32, String),
    Rect { w: u32, h: u32 },
}

#[test]
fn bool_string_char_become_primitives() -> TestResult {
    assert_eq!(to_value(&true)?, V::bool(true));
    assert_eq!(to_value("hi")?, V::string("hi"));
    assert_eq!(to_value(&'é')?, V::string("é"));
    assert!(!from_value::<bool>(&V::bool(false))?);
    assert_eq!(from_value::<char>(&V::string("é"))?, 'é');
    assert!(from_value::<char>(&V::string("ab")).is_err());
    Ok(())
}

#[test]
fn small_integers_become_int_value() -> TestResult {
    assert_eq!(to_value(&-5i8)?, V::int(-5));
    assert_eq!(to_value(&u32::MAX)?, V::int(u32::MAX.into()));
    assert_eq!(to_value(&i64::MIN)?, V::int(i64::MIN));
    assert_eq!(to_value(&(i64::MAX as u64))?, V::int(i64::MAX));
    assert_eq!(from_value::<u16>(&V::int(65535))?, 65535);
    Ok(())
}

#[test]
fn u64_above_i64_max_becomes_decimal_string() -> TestResult {
    let big = i64::MAX as u64 + 1;
    assert_eq!(to_value(&big)?, V::string(big.to_string()));
    assert_eq!(to_value(&u64::MAX)?, V::string("18446744073709551615"));
    assert_eq!(from_value::<u64>(&to_value(&u64::MAX)?)?, u64::MAX);
    Ok(())
}

#[test]
fn wide_integers_use_int_value_inside_i64_and_strings_outside() -> TestResult {
    assert_eq!(to_value(&-3i128)?, V::int(-3));
    assert_eq!(to_value(&3u128)?, V::int(3));
    assert_eq!(to_value(&i128::MIN)?, V::string(i128::MIN.to_string()));
    assert_eq!(to_value(&u128::MAX)?, V::string(u128::MAX.to_string()));
    assert_eq!(from_value::<i128>(&to_value(&i128::MIN)?)?, i128::MIN);
    assert_eq!(from_value::<u128>(&to_value(&u128::MAX)?)?, u128::MAX);
    Ok(())
}

#[test]
fn integer_targets_read_decimal_strings() -> TestResult {
    assert_eq!(from_value::<i32>(&V::string("-42"))?, -42);
    assert_eq!(from_value::<u8>(&V::string("255"))?, 255);
    let err = from_value::<i64>(&V::string("4x")).unwrap_err();
    assert_eq!(err.to_string(), "invalid type: string \"4x\", expected i64");
    let err = from_value::<i64>(&V::string("")).unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
    Ok(())
}

#[test]
fn integer_out_of_range_names_value_and_type() {
    let err = from_value::<u8>(&V::int(300)).unwrap_err();
    assert_eq!(err.to_string(), "integer 300 is out of range for u8");
    let err = from_value::<i64>(&V::string(u64::MAX.to_string())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "integer 18446744073709551615 is out of range for i64"
    );
    let err = from_value::<u32>(&V::int(-1)).unwrap_err();
    assert_eq!(err.to_string(), "integer -1 is out of range for u32");
}

#[test]
fn invalid_type_error_names_found_and_expected() {
    let err = from_value::<i64>(&V::string("a")).unwrap_err();
    assert_eq!(err.to_string(), "invalid type: string \"a\", expected i64");
    let err = from_value::<String>(&V::null()).unwrap_err();
    assert_eq!(err.to_string(), "invalid type: null, expected a string");
}

#[test]
fn floats_become_double_including_nan_and_infinity() -> TestResult {
    assert_eq!(to_value(&1.5f64)?, V::double(1.5));
    assert_eq!(to_value(&0.25f32)?, V::double(0.25));
    assert!(double(&to_value(&f64::NAN)?)?.is_nan());
    assert_eq!(double(&to_value(&f64::INFINITY)?)?, f64::INFINITY);
    assert_eq!(double(&to_value(&f64::NEG_INFINITY)?)?, f64::NEG_INFINITY);
    assert!(from_value::<f64>(&to_value(&f64::NAN)?)?.is_nan());
    assert!(from_value::<f32>(&to_value(&f32::NAN)?)?.is_nan());
    Ok(())
}

#[test]
fn float_targets_read_ints_and_non_finite_strings() -> TestResult {
    assert_eq!(from_value::<f64>(&V::int(3))?, 3.0);
    assert!(from_value::<f64>(&V::string("NaN"))?.is_nan());
    assert_eq!(from_value::<f64>(&V::string("Infinity"))?, f64::INFINITY);
    assert_eq!(
        from_value::<f32>(&V::string("-Infinity"))?,
        f32::NEG_INFINITY
    );
    assert!(from_value::<f64>(&V::string("1.5")).is_err());
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Marker;

#[test]
fn unit_unit_struct_and_none_become_null() -> TestResult {
    assert_eq!(to_value(&())?, V::null());
    assert_eq!(to_value(&Marker)?, V::null());
    assert_eq!(to_value(&None::<i32>)?, V::null());
    assert_eq!(from_value::<Option<i32>>(&V::null())?, None);
    assert_eq!(from_value::<Marker>(&V::null())?, Marker);
    // An unset kind reads as null too.
    assert_eq!(from_value::<Option<i32>>(&V::default())?, None);
    from_value::<()>(&V::default())?;
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct UserId(u64);

#[test]
fn some_and_newtype_struct_are_transparent() -> TestResult {
    assert_eq!(to_value(&Some(7))?, V::int(7));
    assert_eq!(to_value(&UserId(9))?, V::int(9));
    assert_eq!(from_value::<Option<UserId>>(&V::int(9))?, Some(UserId(9)));
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Rgb(u8, u8, u8);

#[test]
fn seq_becomes_list_and_tuple_becomes_tuple() -> TestResult {
    assert_eq!(to_value(&vec![1, 2])?, V::list([V::int(1), V::int(2)]));
    assert_eq!(to_value(&[true])?, V::tuple([V::bool(true)]));
    assert_eq!(
        to_value(&std::collections::BTreeSet::from([3]))?,
        V::list([V::int(3)])
    );
    assert_eq!(to_value(&(1, "a"))?, V::tuple([V::int(1), V::string("a")]));
    assert_eq!(
        to_value(&Rgb(1, 2, 3))?,
        V::tuple([V::int(1), V::int(2), V::int(3)])
    );
    Ok(())
}

#[test]
fn seq_and_tuple_targets_read_list_or_tuple() -> TestResult {
    let list = V::list([V::int(1), V::int(2), V::int(3)]);
    let tuple = V::tuple([V::int(1), V::int(2), V::int(3)]);
    assert_eq!(from_value::<Vec<i32>>(&tuple)?, vec![1, 2, 3]);
    assert_eq!(from_value::<(i32, i32, i32)>(&list)?, (1, 2, 3));
    assert_eq!(from_value::<Rgb>(&list)?, Rgb(1, 2, 3));
    Ok(())
}

#[test]
fn leftover_items_are_an_error() {
    let list = V::list([V::int(1), V::int(2), V::int(3)]);
    let err = from_value::<(i32, i32)>(&list).unwrap_err();
    assert_eq!(err.to_string(), "invalid length 3, expected 2 items");
}

#[test]
fn bytes_become_list_of_ints() -> TestResult {
    let expected = V::list([V::int(0), V::int(255)]);
    assert_eq!(to_value(&Bytes(vec![0, 255]))?, expected);
    assert_eq!(to_value(&vec![0u8, 255])?, expected);
    Ok(())
}

#[test]
fn byte_targets_read_int_list_or_string() -> TestResult {
    let list = V::list([V::int(104), V::int(105)]);
    assert_eq!(from_value::<Bytes>(&list)?, Bytes(b"hi".to_vec()));
    assert_eq!(
        from_value::<Bytes>(&V::string("hi"))?,
        Bytes(b"hi".to_vec())
    );
    let err = from_value::<Bytes>(&V::list([V::int(256)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "at field `[0]`: integer 256 is out of range for u8"
    );
    Ok(())
}

#[test]
fn map_with_string_keys_becomes_dict() -> TestResult {
    let map = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]);
    let v = to_value(&map)?;
    assert_eq!(
        v,
        V::dict([("a".to_owned(), V::int(1)), ("b".to_owned(), V::int(2))])
    );
    assert_eq!(from_value::<BTreeMap<String, i32>>(&v)?, map);
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Color {
    Red,
    Blue,
}

#[test]
fn integer_bool_char_and_unit_variant_keys_round_trip_as_strings() -> TestResult {
    let ints = BTreeMap::from([(-1i32, "m"), (10, "t")]);
    let v = to_value(&ints)?;
    assert_eq!(
        dict(&v)?.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        ["-1", "10"]
    );
    assert_eq!(from_value::<BTreeMap<i32, String>>(&v)?.len(), 2);
    let bools = HashMap::from([(true, 1u64 << 63)]);
    assert_eq!(from_value::<HashMap<bool, u64>>(&to_value(&bools)?)?, bools);
    let chars = BTreeMap::from([('x', 1)]);
    assert_eq!(
        from_value::<BTreeMap<char, i32>>(&to_value(&chars)?)?,
        chars
    );
    let colors = BTreeMap::from([(Color::Red, 1), (Color::Blue, 2)]);
    assert_eq!(
        from_value::<BTreeMap<Color, i32>>(&to_value(&colors)?)?,
        colors
    );
    let err =
        from_value::<BTreeMap<u8, i32>>(&V::dict([("300".to_owned(), V::int(1))])).unwrap_err();
    assert!(
        err.to_string().starts_with("at field `300`: invalid value"),
        "{err}"
    );
    Ok(())
}

#[test]
fn unsupported_map_keys_are_an_error() {
    let map = BTreeMap::from([((1, 2), 3)]);
    let err = to_value(&map).unwrap_err();
    assert_eq!(
        err.to_string(),
        "map keys must be strings, numbers, bools or chars"
    );
}

#[test]
fn struct_becomes_basemodel_with_module_path() -> TestResult {
    let v = to_value(&Point { x: 1, y: -2 })?;
    let model = basemodel(&v)?;
    assert_eq!(model.name, "Point");
    assert_eq!(model.module, GEO);
    let data = V {
        kind: Some(
            cairn_payload::messages::workflow_argument_value::Kind::DictValue(
                model.data.clone().unwrap_or_default(),
            ),
        ),
    };
    assert_eq!(
        dict(&data)?,
        [("x".to_owned(), V::int(1)), ("y".to_owned(), V::int(-2))]
    );
    Ok(())
}

#[test]
fn module_path_is_found_through_box_refs_generics_and_containers() -> TestResult {
    let p = Point { x: 0, y: 0 };
    assert_eq!(basemodel(&to_value(&Box::new(p.clone()))?)?.module, GEO);
    assert_eq!(basemodel(&to_value(&&p)?)?.module, GEO);
    let w = Wrapper { inner: 5u8 };
    assert_eq!(basemodel(&to_value(&w)?)?.module, GEO);
    assert_eq!(basemodel(&to_value(&w)?)?.name, "Wrapper");
    // Nested: a Wrapper<Point> holds a Point whose module is found too.
    let nested = to_value(&Wrapper { inner: p.clone() })?;
    let inner = basemodel(&nested)?.data.clone().unwrap_or_default().entries;
    assert_eq!(basemodel(inner[0].value.as_ref().unwrap())?.module, GEO);
    // Through Vec and Option elements.
    let list = to_value(&vec![Some(p)])?;
    let cairn_payload::messages::workflow_argument_value::Kind::ListValue(l) =
        list.kind.as_ref().unwrap()
    else {
        return Err("expected a list".into());
    };
    assert_eq!(basemodel(&l.items[0])?.module, GEO);
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename = "Renamed")]
struct Original {
    a: i32,
}

#[test]
fn renamed_struct_has_empty_module() -> TestResult {
    let v = to_value(&Original { a: 1 })?;
    assert_eq!(basemodel(&v)?.name, "Renamed");
    assert_eq!(basemodel(&v)?.module, "");
    assert_eq!(from_value::<Original>(&v)?, Original { a: 1 });
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
struct WithSkipped {
    kept: i32,
    #[serde(skip)]
    skipped: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    maybe: Option<i32>,
}

#[test]
fn skipped_fields_are_omitted() -> TestResult {
    let v = to_value(&WithSkipped {
        kept: 1,
        skipped: 2,
        maybe: None,
    })?;
    let keys: Vec<String> = basemodel(&v)?
        .data
        .clone()
        .unwrap_or_default()
        .entries
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["kept"]);
    assert_eq!(
        from_value::<WithSkipped>(&v)?,
        WithSkipped {
            kept: 1,
            ..Default::default()
        }
    );
    Ok(())
}

#[test]
fn struct_deserializes_from_plain_dict() -> TestResult {
    let v = V::dict([("y".to_owned(), V::int(4)), ("x".to_owned(), V::int(3))]);
    assert_eq!(from_value::<Point>(&v)?, Point { x: 3, y: 4 });
    Ok(())
}

#[test]
fn map_target_reads_basemodel_data() -> TestResult {
    let v = to_value(&Point { x: 1, y: 2 })?;
    let map: BTreeMap<String, i64> = from_value(&v)?;
    assert_eq!(map, BTreeMap::from([("x".into(), 1), ("y".into(), 2)]));
    Ok(())
}

#[test]
fn unit_enum_variant_is_string() -> TestResult {
    assert_eq!(to_value(&Shape::Empty)?, V::string("Empty"));
    assert_eq!(from_value::<Shape>(&V::string("Empty"))?, Shape::Empty);
    assert_eq!(
        from_value::<Shape>(&V::dict([("Empty".to_owned(), V::null())]))?,
        Shape::Empty
    );
    Ok(())
}

#[test]
fn data_variants_are_single_entry_dicts() -> TestResult {
    let circle = to_value(&Shape::Circle(1.5))?;
    assert_eq!(circle, V::dict([("Circle".to_owned(), V::double(1.5))]));
    let pair = to_value(&Shape::Pair(1, "a".into()))?;
    assert_eq!(
        pair,
        V::dict([("Pair".to_owned(), V::tuple([V::int(1), V::string("a")]))])
    );
    let rect = to_value(&Shape::Rect { w: 2, h: 3 })?;
    assert_eq!(
        rect,
        V::dict([(
            "Rect".to_owned(),
            V::dict([("w".to_owned(), V::int(2)), ("h".to_owned(), V::int(3))])
        )])
    );
    assert_eq!(from_value::<Shape>(&circle)?, Shape::Circle(1.5));
    assert_eq!(from_value::<Shape>(&pair)?, Shape::Pair(1, "a".into()));
    assert_eq!(from_value::<Shape>(&rect)?, Shape::Rect { w: 2, h: 3 });
    Ok(())
}

#[test]
fn enum_of_wrong_shape_is_an_error() {
    let err = from_value::<Shape>(&V::int(1)).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid type: integer `1`"),
        "{err}"
    );
    let err = from_value::<Shape>(&V::string("Hexagon")).unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `Hexagon`"),
        "{err}"
    );
    let two = V::dict([
        ("Circle".to_owned(), V::double(1.0)),
        ("Empty".to_owned(), V::null()),
    ]);
    assert!(from_value::<Shape>(&two).is_err());
}

#[test]
fn exception_deserializes_as_map() -> TestResult {
    #[derive(Deserialize, Debug, PartialEq)]
    struct Exc {
        r#type: String,
        module: String,
        message: String,
        traceback: String,
        values: BTreeMap<String, i64>,
        type_hierarchy: Vec<String>,
    }
    let exc: Exc = from_value(&exception(sample_error()))?;
    assert_eq!(
        exc,
        Exc {
            r#type: "ValueError".into(),
            module: "builtins".into(),
            message: "bad value".into(),
            traceback: "line 1\nline 2".into(),
            values: BTreeMap::from([("code".into(), 7)]),
            type_hierarchy: vec!["ValueError".into(), "Exception".into()],
        }
    );
    let any: serde_json::Value = from_value(&exception(sample_error()))?;
    assert_eq!(any["values"]["code"], 7);
    assert_eq!(any["type_hierarchy"][1], "Exception");
    Ok(())
}

#[test]
fn deserialize_any_maps_kinds_to_natural_visitor_calls() -> TestResult {
    let v = V::dict([
        ("n".to_owned(), V::null()),
        ("i".to_owned(), V::int(-1)),
        ("f".to_owned(), V::double(0.5)),
        ("s".to_owned(), V::string("x")),
        ("b".to_owned(), V::bool(true)),
        ("l".to_owned(), V::list([V::int(1)])),
        ("t".to_owned(), V::tuple([V::int(2)])),
        ("m".to_owned(), to_value(&Point { x: 1, y: 2 })?),
    ]);
    let json: serde_json::Value = from_value(&v)?;
    assert_eq!(
        json,
        serde_json::json!({
            "n": null, "i": -1, "f": 0.5, "s": "x", "b": true,
            "l": [1], "t": [2], "m": {"x": 1, "y": 2}
        })
    );
    Ok(())
}

#[test]
fn untagged_and_flattened_types_work_through_deserialize_any() -> TestResult {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Either {
        Num(i64),
        Text(String),
        Pt(Point),
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Outer {
        id: i32,
        #[serde(flatten)]
        point: Point,
    }
    for e in [
        Either::Num(1),
        Either::Text("a".into()),
        Either::Pt(Point { x: 1, y: 2 }),
    ] {
        assert_eq!(from_value::<Either>(&to_value(&e)?)?, e);
    }
    let outer = Outer {
        id: 1,
        point: Point { x: 2, y: 3 },
    };
    assert_eq!(from_value::<Outer>(&to_value(&outer)?)?, outer);
    Ok(())
}

#[test]
fn errors_name_their_location() {
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Line {
        points: Vec<Point>,
    }
    let v = V::dict([(
        "points".to_owned(),
        V::list([
            V::dict([("x".to_owned(), V::int(1)), ("y".to_owned(), V::int(1))]),
            V::dict([
                ("x".to_owned(), V::string("a")),
                ("y".to_owned(), V::int(1)),
            ]),
        ]),
    )]);
    let err = from_value::<Line>(&v).unwrap_err();
    assert_eq!(
        err.to_string(),
        "at field `points[1].x`: invalid type: string \"a\", expected i64"
    );
    assert_eq!(err.path().as_deref(), Some("points[1].x"));
}

#[test]
fn error_display_is_one_line() {
    #[derive(Debug)]
    struct Multi;
    impl Serialize for Multi {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("first line\nsecond line"))
        }
    }
    let err = to_value(&vec![Multi]).unwrap_err();
    assert_eq!(err.to_string(), "at field `[0]`: first line second line");
    let err = from_value::<Point>(&V::dict([("x".to_owned(), V::int(1))])).unwrap_err();
    assert_eq!(err.to_string(), "missing field `y`");
}

#[test]
fn internally_and_adjacently_tagged_enums_round_trip() -> TestResult {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "kind")]
    enum Internal {
        Circle { r: f64 },
        Dot,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "t", content = "c")]
    enum Adjacent {
        Num(i64),
        Pair(u8, u8),
        Dot,
    }
    for e in [Internal::Circle { r: 1.5 }, Internal::Dot] {
        assert_eq!(from_value::<Internal>(&to_value(&e)?)?, e);
    }
    for e in [Adjacent::Num(-1), Adjacent::Pair(1, 2), Adjacent::Dot] {
        assert_eq!(from_value::<Adjacent>(&to_value(&e)?)?, e);
    }
    Ok(())
}
