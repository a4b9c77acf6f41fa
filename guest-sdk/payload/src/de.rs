//! `serde::Deserializer` reading a [`WorkflowArgumentValue`].
//!
//! Strategy: the deserializer borrows the value (strings are handed to
//! visitors borrowed) and is lenient where the payload's origin makes shapes
//! ambiguous, so that one Rust type reads what Python, JSON and Rust writers
//! produce: structs read basemodels *or* dicts, sequences read lists *or*
//! tuples, integers read `int_value` *or* decimal strings, floats read
//! doubles, ints or the strings `NaN`/`Infinity`/`-Infinity`. The rules are
//! the table in the crate docs.
//!
//! Failure modes: a kind the target cannot read is an `invalid type` error; an
//! integer outside the target's range names the value and the type; leftover
//! list items are an `invalid length` error. Errors from inside a field, item
//! or map value carry its path.

use serde::de::{self, value::BorrowedStrDeserializer, DeserializeSeed, Unexpected, Visitor};

use crate::messages::primitive_workflow_argument::Kind as P;
use crate::messages::workflow_argument_value::Kind as K;
use crate::{
    Error, WorkflowArgument, WorkflowArgumentValue, WorkflowDictArgument, WorkflowErrorValue,
};

/// What an absent value (`kind` unset, or a `WorkflowArgument` without a
/// value) reads as: null.
pub(crate) static NULL: WorkflowArgumentValue = WorkflowArgumentValue { kind: None };

/// A view of a value that spells out the cases the deserializer distinguishes.
enum View<'de> {
    Null,
    Str(&'de str),
    Double(f64),
    Int(i64),
    Bool(bool),
    Seq(&'de [WorkflowArgumentValue], bool),
    Dict(&'de [WorkflowArgument]),
    Model(&'de crate::BaseModelWorkflowArgument),
    Exception(&'de WorkflowErrorValue),
}

fn view(value: &WorkflowArgumentValue) -> View<'_> {
    match &value.kind {
        None => View::Null,
        Some(K::Primitive(p)) => match &p.kind {
            None | Some(P::NullValue(_)) => View::Null,
            Some(P::StringValue(s)) => View::Str(s),
            Some(P::DoubleValue(f)) => View::Double(*f),
            Some(P::IntValue(i)) => View::Int(*i),
            Some(P::BoolValue(b)) => View::Bool(*b),
        },
        Some(K::Basemodel(m)) => View::Model(m),
        Some(K::Exception(e)) => View::Exception(e),
        Some(K::ListValue(l)) => View::Seq(&l.items, false),
        Some(K::TupleValue(t)) => View::Seq(&t.items, true),
        Some(K::DictValue(d)) => View::Dict(&d.entries),
    }
}

fn dict_entries(dict: Option<&WorkflowDictArgument>) -> &[WorkflowArgument] {
    dict.map_or(&[], |d| &d.entries)
}

/// Deserializes from a borrowed value.
pub(crate) struct Deserializer<'de> {
    pub(crate) value: &'de WorkflowArgumentValue,
}

/// An integer read from `int_value` or a decimal string.
#[derive(Clone, Copy)]
enum Int {
    Signed(i128),
    Unsigned(u128),
}

impl Int {
    fn parse(s: &str) -> Option<Int> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if let Ok(i) = s.parse::<i128>() {
            return Some(Int::Signed(i));
        }
        s.parse::<u128>().ok().map(Int::Unsigned)
    }

    fn convert<T: TryFrom<i128> + TryFrom<u128>>(self, target: &str) -> Result<T, Error> {
        let converted = match self {
            Int::Signed(i) => T::try_from(i).ok(),
            Int::Unsigned(u) => T::try_from(u).ok(),
        };
        converted.ok_or_else(|| {
            let shown = match self {
                Int::Signed(i) => i.to_string(),
                Int::Unsigned(u) => u.to_string(),
            };
            Error::msg(format_args!("integer {shown} is out of range for {target}"))
        })
    }
}

impl<'de> Deserializer<'de> {
    fn view(&self) -> View<'de> {
        view(self.value)
    }

    /// The `Unexpected` describing this value, for `invalid type` errors.
    fn invalid_type(&self, expected: &dyn de::Expected) -> Error {
        let described;
        let unexpected = match self.view() {
            View::Null => Unexpected::Other("null"),
            View::Str(s) => Unexpected::Str(s),
            View::Double(f) => Unexpected::Float(f),
            View::Int(i) => Unexpected::Signed(i),
            View::Bool(b) => Unexpected::Bool(b),
            View::Seq(_, false) => Unexpected::Other("list"),
            View::Seq(_, true) => Unexpected::Other("tuple"),
            View::Dict(_) => Unexpected::Other("dict"),
            View::Model(m) => {
                described = format!("basemodel `{}`", m.name);
                Unexpected::Other(&described)
            }
            View::Exception(_) => Unexpected::Other("exception"),
        };
        de::Error::invalid_type(unexpected, expected)
    }

    fn int(&self, target: &'static str) -> Result<Int, Error> {
        match self.view() {
            View::Int(i) => Ok(Int::Signed(i.into())),
            View::Str(s) => Int::parse(s).ok_or_else(|| self.invalid_type(&target)),
            _ => Err(self.invalid_type(&target)),
        }
    }

    fn float(&self, target: &'static str) -> Result<f64, Error> {
        match self.view() {
            View::Double(f) => Ok(f),
            View::Int(i) => Ok(i as f64),
            View::Str("NaN") => Ok(f64::NAN),
            View::Str("Infinity") => Ok(f64::INFINITY),
            View::Str("-Infinity") => Ok(f64::NEG_INFINITY),
            _ => Err(self.invalid_type(&target)),
        }
    }

    fn visit_seq<V: Visitor<'de>>(
        &self,
        items: &'de [WorkflowArgumentValue],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut access = SeqAccess {
            items: items.iter(),
            index: 0,
        };
        let out = visitor.visit_seq(&mut access)?;
        if access.items.len() == 0 {
            Ok(out)
        } else {
            Err(de::Error::invalid_length(
                items.len(),
                &format!("{} items", access.index).as_str(),
            ))
        }
    }

    /// Dicts, basemodel data and exceptions read as maps.
    fn visit_map_like<V: Visitor<'de>>(
        &self,
        visitor: V,
        expected: &dyn de::Expected,
    ) -> Result<V::Value, Error> {
        match self.view() {
            View::Dict(entries) => visitor.visit_map(MapAccess::new(entries)),
            View::Model(m) => visitor.visit_map(MapAccess::new(dict_entries(m.data.as_ref()))),
            View::Exception(e) => visitor.visit_map(ExceptionAccess { error: e, next: 0 }),
            _ => Err(self.invalid_type(expected)),
        }
    }
}

macro_rules! deserialize_int {
    ($($method:ident => $visit:ident: $ty:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let v: $ty = self.int(stringify!($ty))?.convert(stringify!($ty))?;
            visitor.$visit(v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Null => visitor.visit_unit(),
            View::Str(s) => visitor.visit_borrowed_str(s),
            View::Double(f) => visitor.visit_f64(f),
            View::Int(i) => visitor.visit_i64(i),
            View::Bool(b) => visitor.visit_bool(b),
            View::Seq(items, _) => self.visit_seq(items, visitor),
            View::Dict(_) | View::Model(_) | View::Exception(_) => {
                self.visit_map_like(visitor, &"a map")
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Bool(b) => visitor.visit_bool(b),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    deserialize_int! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f32(self.float("f32")? as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(self.float("f64")?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let View::Str(s) = self.view() {
            let mut chars = s.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                return visitor.visit_char(c);
            }
        }
        Err(self.invalid_type(&"a string of one char"))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Str(s) => visitor.visit_borrowed_str(s),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Str(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            View::Seq(items, _) => {
                let mut bytes = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let byte: u8 = Deserializer { value: item }
                        .int("u8")
                        .and_then(|i| i.convert("u8"))
                        .map_err(|e| e.in_index(index))?;
                    bytes.push(byte);
                }
                visitor.visit_byte_buf(bytes)
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Null => visitor.visit_unit(),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Seq(items, _) => self.visit_seq(items, visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_map_like(visitor, &"a dict")
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.view() {
            View::Seq(items, _) => self.visit_seq(items, visitor),
            _ => self.visit_map_like(visitor, &format!("struct {name}").as_str()),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.view() {
            View::Str(variant) => visitor.visit_enum(EnumAccess {
                variant,
                value: None,
            }),
            View::Dict([only]) => visitor
                .visit_enum(EnumAccess {
                    variant: &only.key,
                    value: Some(only.value.as_ref().unwrap_or(&NULL)),
                })
                .map_err(|e| e.in_key(&only.key)),
            _ => Err(self.invalid_type(
                &format!("enum {name} (a variant name or a dict with one entry)").as_str(),
            )),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.view() {
            View::Str(s) => visitor.visit_borrowed_str(s),
            View::Int(i) if i >= 0 => visitor.visit_u64(i as u64),
            _ => Err(self.invalid_type(&"an identifier")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'de> {
    items: std::slice::Iter<'de, WorkflowArgumentValue>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(value) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Deserializer { value })
            .map(Some)
            .map_err(|e| e.in_index(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de> {
    entries: std::slice::Iter<'de, WorkflowArgument>,
    current: Option<&'de WorkflowArgument>,
}

impl<'de> MapAccess<'de> {
    fn new(entries: &'de [WorkflowArgument]) -> Self {
        MapAccess {
            entries: entries.iter(),
            current: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        seed.deserialize(KeyDeserializer { key: &entry.key })
            .map(Some)
            .map_err(|e| e.in_key(&entry.key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let entry = self
            .current
            .take()
            .ok_or_else(|| Error::msg("next_value called before next_key"))?;
        let value = entry.value.as_ref().unwrap_or(&NULL);
        seed.deserialize(Deserializer { value })
            .map_err(|e| e.in_key(&entry.key))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The keys an exception reads as, in this order.
const EXCEPTION_KEYS: [&str; 6] = [
    "type",
    "module",
    "message",
    "traceback",
    "values",
    "type_hierarchy",
];

/// An exception read as a map with [`EXCEPTION_KEYS`].
struct ExceptionAccess<'de> {
    error: &'de WorkflowErrorValue,
    next: usize,
}

impl<'de> de::MapAccess<'de> for ExceptionAccess<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match EXCEPTION_KEYS.get(self.next) {
            Some(key) => seed
                .deserialize(BorrowedStrDeserializer::new(key))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let index = self.next;
        self.next += 1;
        let e = self.error;
        let key = EXCEPTION_KEYS.get(index).copied().unwrap_or("");
        let text = |s: &'de String| seed_str(s);
        match index {
            0 => seed.deserialize(text(&e.r#type)),
            1 => seed.deserialize(text(&e.module)),
            2 => seed.deserialize(text(&e.message)),
            3 => seed.deserialize(text(&e.traceback)),
            4 => seed.deserialize(DictDeserializer {
                entries: dict_entries(e.values.as_ref()),
            }),
            5 => seed.deserialize(de::value::SeqDeserializer::new(
                e.type_hierarchy.iter().map(|s| seed_str(s)),
            )),
            _ => Err(Error::msg("next_value called before next_key")),
        }
        .map_err(|err| err.in_key(key))
    }
}

fn seed_str(s: &str) -> BorrowedStrDeserializer<'_, Error> {
    BorrowedStrDeserializer::new(s)
}

/// A bare list of entries read as a map (an exception's `values`).
struct DictDeserializer<'de> {
    entries: &'de [WorkflowArgument],
}

impl<'de> de::Deserializer<'de> for DictDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(MapAccess::new(self.entries))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Map keys are strings; integer, bool and char targets parse them back (as
/// serde_json does), enum targets read them as unit variants.
struct KeyDeserializer<'de> {
    key: &'de str,
}

impl KeyDeserializer<'_> {
    fn parse<T: std::str::FromStr>(&self, what: &'static str) -> Result<T, Error> {
        self.key
            .parse()
            .map_err(|_| de::Error::invalid_value(Unexpected::Str(self.key), &what))
    }
}

macro_rules! deserialize_key_parse {
    ($($method:ident => $visit:ident: $ty:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.$visit(self.parse::<$ty>(concat!("a map key holding ", stringify!($ty)))?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.key)
    }

    deserialize_key_parse! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_char => visit_char: char,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(EnumAccess {
            variant: self.key,
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        f32 f64 str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// An externally tagged enum: the variant name, and for newtype, tuple and
/// struct variants the value under it.
struct EnumAccess<'de> {
    variant: &'de str,
    value: Option<&'de WorkflowArgumentValue>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = Error;
    type Variant = VariantAccess<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantAccess<'de>), Error> {
        let variant = seed.deserialize(BorrowedStrDeserializer::<Error>::new(self.variant))?;
        Ok((variant, VariantAccess { value: self.value }))
    }
}

struct VariantAccess<'de> {
    value: Option<&'de WorkflowArgumentValue>,
}

impl<'de> VariantAccess<'de> {
    fn value(&self, expected: &str) -> Result<Deserializer<'de>, Error> {
        self.value
            .map(|value| Deserializer { value })
            .ok_or_else(|| de::Error::invalid_type(Unexpected::UnitVariant, &expected))
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(value) => de::Deserialize::deserialize(Deserializer { value }),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.value("newtype variant")?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self.value("tuple variant")?, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(
            self.value("struct variant")?,
            "variant",
            fields,
            visitor,
        )
    }
}
