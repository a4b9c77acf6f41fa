//! `check_result_payload` against prost: the scanner must accept exactly
//! the bytes `WorkflowArguments::decode` accepts (generated payloads, then
//! the same bytes mutated, truncated, padded with unknown fields or nested
//! past the recursion limit), and on top of that only one `result` entry.

use cairn_payload::*;
use proptest::prelude::*;
use prost::Message;

use crate::roundtrip::any_value;
use crate::support::{dict_of, exception};

/// What the checker says, reduced to the property under test: `Ok`,
/// "does not decode", or "decodes but is not one `result` entry".
#[derive(Debug, PartialEq)]
enum Verdict {
    Ok,
    Malformed,
    NotOneResult,
}

fn verdict(bytes: &[u8]) -> Verdict {
    match check_result_payload(bytes) {
        Ok(()) => Verdict::Ok,
        Err(e)
            if e.to_string()
                .starts_with("not a protobuf WorkflowArguments") =>
        {
            Verdict::Malformed
        }
        Err(_) => Verdict::NotOneResult,
    }
}

/// What prost says about the same bytes.
fn prost_verdict(bytes: &[u8]) -> Verdict {
    match WorkflowArguments::decode(bytes) {
        Err(_) => Verdict::Malformed,
        Ok(args) if args.arguments.len() == 1 && args.arguments[0].key == RESULT_KEY => Verdict::Ok,
        Ok(_) => Verdict::NotOneResult,
    }
}

fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = verdict(bytes);
    prop_assert_eq!(&ours, &prost_verdict(bytes), "bytes {:02x?}", bytes);
    if ours == Verdict::Ok {
        // What passes, `cairn result` reads.
        let read = deserialize_result_payload(bytes);
        prop_assert!(matches!(read, Ok(ResultPayload::Result(_))), "{:?}", read);
    }
    Ok(())
}

fn varint(v: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(v, out);
}

/// A value nested `depth` lists deep, as a result payload.
fn nested(depth: usize) -> Vec<u8> {
    let mut value = WorkflowArgumentValue::int(7);
    for _ in 0..depth {
        value = WorkflowArgumentValue::list([value]);
    }
    serialize_result_payload(value)
}

#[test]
fn nesting_is_refused_exactly_where_prost_stops() {
    let mut saw = (false, false);
    for depth in 40..60 {
        let bytes = nested(depth);
        assert_eq!(verdict(&bytes), prost_verdict(&bytes), "depth {depth}");
        match verdict(&bytes) {
            Verdict::Ok => saw.0 = true,
            _ => saw.1 = true,
        }
    }
    // The range straddles the limit: both answers were seen.
    assert!(saw.0 && saw.1, "{saw:?}");
    let deep = check_result_payload(&nested(80)).unwrap_err().to_string();
    assert!(deep.contains("recursion limit"), "{deep}");
}

/// A result payload holding a value of every kind (and every primitive).
fn every_kind() -> Vec<u8> {
    use cairn_payload::messages::workflow_argument_value::Kind as K;
    let dict = |entries: Vec<(&str, WorkflowArgumentValue)>| {
        WorkflowArgumentValue::dict(entries.into_iter().map(|(k, v)| (k.to_owned(), v)))
    };
    let data = dict_of([("x".to_owned(), WorkflowArgumentValue::int(-1))]);
    serialize_result_payload(WorkflowArgumentValue::list([
        WorkflowArgumentValue::null(),
        WorkflowArgumentValue::default(),
        WorkflowArgumentValue::bool(true),
        WorkflowArgumentValue::int(300),
        WorkflowArgumentValue::double(2.5),
        WorkflowArgumentValue::string("s"),
        WorkflowArgumentValue::tuple([WorkflowArgumentValue::int(1)]),
        dict(vec![("k", WorkflowArgumentValue::string("v"))]),
        WorkflowArgumentValue {
            kind: Some(K::Basemodel(BaseModelWorkflowArgument {
                module: "m".into(),
                name: "N".into(),
                data: Some(data.clone()),
            })),
        },
        exception(WorkflowErrorValue {
            r#type: "E".into(),
            module: "m".into(),
            message: "msg".into(),
            traceback: "tb".into(),
            values: Some(data),
            type_hierarchy: vec!["E".into(), "Base".into()],
        }),
    ]))
}

#[test]
fn every_field_with_every_wire_type_gets_prosts_verdict() -> Result<(), TestCaseError> {
    // Rewrite the low three bits (the wire type, where the byte is a key) of
    // each byte in turn to every value: every known field of every message
    // is seen with every wire type.
    let good = every_kind();
    agree(&good)?;
    for i in 0..good.len() {
        for wire in 0..8u8 {
            let mut bytes = good.clone();
            bytes[i] = (bytes[i] & !0x07) | wire;
            agree(&bytes)?;
        }
    }
    Ok(())
}

#[test]
fn groups_in_unknown_fields_are_skipped_only_when_closed_by_their_own_number() {
    let good = serialize_result_payload(WorkflowArgumentValue::int(1));
    // Field 9 as a group holding a varint field 3, closed by field 9 (valid)
    // or by field 10 (invalid), or never closed; at the top and inside the
    // entry.
    let group = |end: Option<u32>| {
        let mut g = Vec::new();
        varint(u64::from(9u32 << 3 | 3), &mut g);
        varint(u64::from(3u32 << 3), &mut g);
        varint(150, &mut g);
        if let Some(end) = end {
            varint(u64::from(end << 3 | 4), &mut g);
        }
        g
    };
    for end in [Some(9), Some(10), None] {
        let mut top = group(end);
        top.extend_from_slice(&good);
        assert_eq!(verdict(&top), prost_verdict(&top), "top, end {end:?}");
        // Inside the entry: its length grows by the group's.
        let inner = group(end);
        let mut entry = good.clone();
        entry[1] += inner.len() as u8;
        entry.splice(2..2, inner);
        assert_eq!(verdict(&entry), prost_verdict(&entry), "entry, end {end:?}");
    }
    let mut closed = group(Some(9));
    closed.extend_from_slice(&good);
    assert_eq!(verdict(&closed), Verdict::Ok);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_result_payload_passes(value in any_value()) {
        prop_assert_eq!(verdict(&serialize_result_payload(value)), Verdict::Ok);
    }

    #[test]
    fn mutated_payloads_get_prosts_verdict(
        value in any_value(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let good = serialize_result_payload(value);
        let i = at.index(good.len());
        let mut flipped = good.clone();
        flipped[i] = byte;
        agree(&flipped)?;
        let mut inserted = good.clone();
        inserted.insert(i, byte);
        agree(&inserted)?;
        agree(&good[..cut.index(good.len() + 1)])?;
    }

    #[test]
    fn unknown_fields_are_skipped_as_prost_skips_them(
        value in any_value(),
        tag in 7u32..40,
        wire in 0u8..8,
        body in prop::collection::vec(any::<u8>(), 0..12),
        at in any::<prop::sample::Index>(),
    ) {
        // An unknown field (any wire type, even invalid ones), at a random
        // place: at the top, or inside some nested message when the place
        // happens to fall on a field boundary there.
        let good = serialize_result_payload(value);
        let mut field = Vec::new();
        varint(u64::from(tag << 3 | u32::from(wire)), &mut field);
        if wire == 2 {
            varint(body.len() as u64, &mut field);
        }
        field.extend_from_slice(&body);
        let mut bytes = good.clone();
        bytes.extend_from_slice(&field);
        agree(&bytes)?;
        let i = at.index(good.len() + 1);
        let mut bytes = good[..i].to_vec();
        bytes.extend_from_slice(&field);
        bytes.extend_from_slice(&good[i..]);
        agree(&bytes)?;
    }

    #[test]
    fn random_bytes_get_prosts_verdict(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes)?;
    }
}
