//! Checking that bytes are a result payload, without decoding them.
//!
//! # Strategy
//!
//! The host stores what a guest returns byte for byte, so it must not
//! transcode it; but a row marked `succeeded` whose bytes no reader can
//! decode is a lie (`cairn result` fails on it, and so would every other
//! language's reader). [`check_result_payload`] walks the protobuf wire
//! format of `proto/messages.proto` once, allocating nothing, and accepts
//! exactly what `WorkflowArguments::decode` (prost) accepts — same varint,
//! key, wire-type, length, UTF-8 and recursion-limit rules; unknown fields
//! are skipped as prost skips them — and then asks for the outcome's shape:
//! exactly one entry, keyed `result`.
//!
//! The differential test in `tests/all/check.rs` holds the scanner to prost
//! over generated and mutated payloads, so the two cannot drift.
//!
//! # Failure modes
//!
//! The error says what was wrong and, for malformed bytes, at which byte
//! offset and inside which message, e.g. `not a protobuf WorkflowArguments:
//! string is not UTF-8 (WorkflowErrorValue.message at byte 17)`.

use crate::{Error, ERROR_KEY, RESULT_KEY};

/// prost's recursion limit (`prost::RECURSION_LIMIT`, not public): a message
/// nested deeper than this fails to decode, so it must fail the check too.
const RECURSION_LIMIT: u32 = 100;

/// Checks that `bytes` is a result payload every reader can decode: a
/// protobuf `WorkflowArguments` that decodes in full (every nested value,
/// strings valid UTF-8, nesting within prost's limit) and holds exactly one
/// entry, keyed `result`. Costs one pass over the bytes and no allocation;
/// the bytes are not changed or copied.
///
/// An error payload (key `error`) is refused too: a guest that failed
/// returns an `action-error`, which the host records as a failure.
///
/// # Errors
///
/// When the bytes do not decode as `WorkflowArguments` (naming what and
/// where), or when the entries are not exactly one `result`.
pub fn check_result_payload(bytes: &[u8]) -> Result<(), Error> {
    let mut top = Scanner::new(bytes, 0, bytes.len());
    top.fields(Msg::Arguments, RECURSION_LIMIT)
        .map_err(|e| Error::msg(format_args!("not a protobuf WorkflowArguments: {e}")))?;
    let (entries, key) = (top.entries, top.entry_key);
    match (entries, key) {
        (0, _) => Err(Error::msg(
            "a WorkflowArguments with no entries, not a result payload (one entry, `result`)",
        )),
        (1, Some(k)) if k == RESULT_KEY.as_bytes() => Ok(()),
        (1, Some(k)) if k == ERROR_KEY.as_bytes() => Err(Error::msg(
            "an error payload (entry `error`) returned as a success; a failing action returns an action-error",
        )),
        (1, k) => Err(Error::msg(format_args!(
            "its one entry is {}, not `result`",
            describe_key(k)
        ))),
        (n, _) => Err(Error::msg(format_args!(
            "a WorkflowArguments with {n} entries, not a result payload (one entry, `result`)"
        ))),
    }
}

fn describe_key(key: Option<&[u8]>) -> String {
    match key.map(std::str::from_utf8) {
        None => "unnamed".to_owned(),
        Some(Ok(k)) if k.len() <= 40 => format!("`{k}`"),
        Some(Ok(k)) => format!("`{}...`", k.chars().take(40).collect::<String>()),
        // Cannot happen: the scan refused non-UTF-8 keys.
        Some(Err(_)) => "not UTF-8".to_owned(),
    }
}

/// The messages of `proto/messages.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    Arguments,
    Argument,
    Value,
    Primitive,
    BaseModel,
    ErrorValue,
    List,
    Tuple,
    Dict,
}

/// What a known field holds.
#[derive(Clone, Copy)]
enum Field {
    Message(Msg),
    String,
    Double,
    Varint,
}

impl Msg {
    fn name(self) -> &'static str {
        match self {
            Msg::Arguments => "WorkflowArguments",
            Msg::Argument => "WorkflowArgument",
            Msg::Value => "WorkflowArgumentValue",
            Msg::Primitive => "PrimitiveWorkflowArgument",
            Msg::BaseModel => "BaseModelWorkflowArgument",
            Msg::ErrorValue => "WorkflowErrorValue",
            Msg::List => "WorkflowListArgument",
            Msg::Tuple => "WorkflowTupleArgument",
            Msg::Dict => "WorkflowDictArgument",
        }
    }

    /// The schema: what field `tag` of this message holds (`None`: unknown,
    /// skipped). Repeated and singular fields check alike on the wire.
    fn field(self, tag: u32) -> Option<Field> {
        use Field::*;
        Some(match (self, tag) {
            (Msg::Arguments, 1) => Message(Msg::Argument),
            (Msg::Argument, 1) => String,
            (Msg::Argument, 2) => Message(Msg::Value),
            (Msg::Value, 1) => Message(Msg::Primitive),
            (Msg::Value, 2) => Message(Msg::BaseModel),
            (Msg::Value, 3) => Message(Msg::ErrorValue),
            (Msg::Value, 4) => Message(Msg::List),
            (Msg::Value, 5) => Message(Msg::Tuple),
            (Msg::Value, 6) => Message(Msg::Dict),
            (Msg::Primitive, 1) => String,
            (Msg::Primitive, 2) => Double,
            (Msg::Primitive, 3..=5) => Varint, // sint64, bool, enum
            (Msg::BaseModel, 1 | 2) => String,
            (Msg::BaseModel, 3) => Message(Msg::Dict),
            (Msg::ErrorValue, 1..=4 | 6) => String,
            (Msg::ErrorValue, 5) => Message(Msg::Dict),
            (Msg::List | Msg::Tuple, 1) => Message(Msg::Value),
            (Msg::Dict, 1) => Message(Msg::Argument),
            _ => return None,
        })
    }

    fn field_name(self, tag: u32) -> &'static str {
        match (self, tag) {
            (Msg::Arguments, _) => "arguments",
            (Msg::Argument, 1) => "key",
            (Msg::Argument, _) => "value",
            (Msg::Value, _) => "kind",
            (Msg::Primitive, _) => "kind",
            (Msg::BaseModel, 1) => "module",
            (Msg::BaseModel, 2) => "name",
            (Msg::BaseModel, _) => "data",
            (Msg::ErrorValue, 1) => "type",
            (Msg::ErrorValue, 2) => "module",
            (Msg::ErrorValue, 3) => "message",
            (Msg::ErrorValue, 4) => "traceback",
            (Msg::ErrorValue, 5) => "values",
            (Msg::ErrorValue, _) => "type_hierarchy",
            (Msg::List | Msg::Tuple, _) => "items",
            (Msg::Dict, _) => "entries",
        }
    }
}

/// Wire types, as prost numbers them.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

/// A scan failure: what, at which byte, and inside which field.
struct Malformed {
    what: &'static str,
    at: usize,
    within: Option<(Msg, u32)>,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.at;
        match self.within {
            Some((msg, tag)) if msg.field(tag).is_some() => write!(
                f,
                "{} ({}.{} at byte {at})",
                self.what,
                msg.name(),
                msg.field_name(tag)
            ),
            Some((msg, tag)) => write!(
                f,
                "{} (unknown field {tag} of {} at byte {at})",
                self.what,
                msg.name()
            ),
            None => write!(f, "{} (at byte {at})", self.what),
        }
    }
}

/// One message's bytes, `bytes[pos..end]`, being walked. Offsets stay
/// absolute, so errors point into the whole payload.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
    /// For a `WorkflowArgument`: its key (the last occurrence, as prost
    /// keeps it).
    key: Option<&'a [u8]>,
    /// For the top-level `WorkflowArguments`: its entries, and the key of
    /// the last one.
    entries: usize,
    entry_key: Option<&'a [u8]>,
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8], pos: usize, end: usize) -> Self {
        Scanner {
            bytes,
            pos,
            end,
            key: None,
            entries: 0,
            entry_key: None,
        }
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, Malformed> {
        Err(Malformed {
            what,
            at: self.pos,
            within: None,
        })
    }

    /// A varint, as prost reads it: at most ten bytes, the tenth below 2.
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            if self.pos >= self.end {
                return self.fail("truncated varint");
            }
            let b = self.bytes[self.pos];
            if i == 9 && b >= 0x02 {
                return self.fail("varint longer than 64 bits");
            }
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        unreachable!("the tenth byte ends the varint or fails")
    }

    /// A field key: `(tag, wire type)`.
    fn key(&mut self) -> Result<(u32, u64), Malformed> {
        let at = self.pos;
        let key = self.varint()?;
        let fail = |what| {
            Err(Malformed {
                what,
                at,
                within: None,
            })
        };
        if key > u64::from(u32::MAX) {
            return fail("field key out of range");
        }
        let wire = key & 0x07;
        if wire > FIXED32 {
            return fail("invalid wire type");
        }
        let tag = (key as u32) >> 3;
        if tag == 0 {
            return fail("field number 0");
        }
        Ok((tag, wire))
    }

    /// A length prefix; returns the range it covers and moves past it.
    fn delimited(&mut self) -> Result<(usize, usize), Malformed> {
        let len = self.varint()?;
        if len > (self.end - self.pos) as u64 {
            return self.fail("length runs past the end");
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok((start, self.pos))
    }

    fn advance(&mut self, n: usize) -> Result<(), Malformed> {
        if self.end - self.pos < n {
            return self.fail("truncated fixed-width value");
        }
        self.pos += n;
        Ok(())
    }

    /// Every field of one `msg` up to `end`; `budget` is prost's recursion
    /// count for this message's fields.
    fn fields(&mut self, msg: Msg, budget: u32) -> Result<(), Malformed> {
        while self.pos < self.end {
            let (tag, wire) = self.key()?;
            self.field(msg, tag, wire, budget).map_err(|mut e| {
                // Name the innermost field the error happened in.
                e.within.get_or_insert((msg, tag));
                e
            })?;
        }
        Ok(())
    }

    fn field(&mut self, msg: Msg, tag: u32, wire: u64, budget: u32) -> Result<(), Malformed> {
        let Some(kind) = msg.field(tag) else {
            return self.skip(tag, wire, budget);
        };
        let expected = match kind {
            Field::Message(_) | Field::String => LEN,
            Field::Double => FIXED64,
            Field::Varint => VARINT,
        };
        if wire != expected {
            return self.fail("wrong wire type for the field");
        }
        match kind {
            Field::Varint => self.varint().map(drop),
            Field::Double => self.advance(8),
            Field::String => {
                let (start, end) = self.delimited()?;
                let text = &self.bytes[start..end];
                if std::str::from_utf8(text).is_err() {
                    return Err(Malformed {
                        what: "string is not UTF-8",
                        at: start,
                        within: None,
                    });
                }
                if msg == Msg::Argument {
                    self.key = Some(text);
                }
                Ok(())
            }
            Field::Message(inner) => {
                if budget == 0 {
                    return self.fail("nested deeper than the decoder's recursion limit");
                }
                let (start, end) = self.delimited()?;
                let mut nested = Scanner::new(self.bytes, start, end);
                nested.fields(inner, budget - 1)?;
                if msg == Msg::Arguments {
                    self.entries += 1;
                    self.entry_key = nested.key;
                }
                Ok(())
            }
        }
    }

    /// An unknown field, skipped as prost skips it (groups included).
    fn skip(&mut self, tag: u32, wire: u64, budget: u32) -> Result<(), Malformed> {
        if budget == 0 {
            return self.fail("nested deeper than the decoder's recursion limit");
        }
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8),
            FIXED32 => self.advance(4),
            LEN => self.delimited().map(drop),
            START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner != tag {
                        return self.fail("group ends with another field's number");
                    }
                    return Ok(());
                }
                self.skip(inner, inner_wire, budget - 1)?;
            },
            _ => self.fail("unexpected end of group"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_result_payload;
    use crate::{serialize_error_payload, serialize_result_payload, WorkflowArgumentValue};

    fn message(bytes: &[u8]) -> String {
        check_result_payload(bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_result_payload_passes() {
        let value = WorkflowArgumentValue::dict([
            ("a".to_owned(), WorkflowArgumentValue::int(-3)),
            (
                "b".to_owned(),
                WorkflowArgumentValue::list([
                    WorkflowArgumentValue::double(1.5),
                    WorkflowArgumentValue::null(),
                    WorkflowArgumentValue::bool(true),
                    WorkflowArgumentValue::string("ü"),
                ]),
            ),
        ]);
        check_result_payload(&serialize_result_payload(value)).unwrap();
        check_result_payload(&serialize_result_payload(WorkflowArgumentValue::null())).unwrap();
    }

    #[test]
    fn bytes_that_are_not_protobuf_fail_naming_what_and_where() {
        assert_eq!(
            message(b"\xff\xff"),
            "not a protobuf WorkflowArguments: truncated varint (at byte 2)"
        );
        // Field 1 (arguments), length 5, but only 1 byte follows.
        assert!(message(b"\x0a\x05\x0a").contains("length runs past the end"));
        // Wire type 7.
        assert!(message(b"\x0f").contains("invalid wire type"));
    }

    #[test]
    fn a_payload_that_is_not_one_result_entry_fails() {
        assert!(message(b"").contains("no entries"));
        let error = serialize_error_payload(crate::WorkflowErrorValue::default());
        assert!(message(&error).contains("an error payload"));
        let mut two = serialize_result_payload(WorkflowArgumentValue::int(1));
        two.extend(serialize_result_payload(WorkflowArgumentValue::int(2)));
        assert!(message(&two).contains("2 entries"));
        let other = crate::encode_arguments(&crate::WorkflowArguments::from_pairs([(
            "answer".to_owned(),
            WorkflowArgumentValue::int(42),
        )]));
        assert!(message(&other).contains("its one entry is `answer`, not `result`"));
    }

    #[test]
    fn invalid_utf8_deep_inside_fails_naming_the_field() {
        // result = list[ string "\xff" ]
        let value = WorkflowArgumentValue::list([WorkflowArgumentValue::string("x")]);
        let mut bytes = serialize_result_payload(value);
        let at = bytes.iter().rposition(|&b| b == b'x').unwrap();
        bytes[at] = 0xff;
        let text = message(&bytes);
        assert!(
            text.contains("string is not UTF-8 (PrimitiveWorkflowArgument.kind at byte"),
            "{text}"
        );
    }
}
