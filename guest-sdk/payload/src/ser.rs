//! `serde::Serializer` producing a [`WorkflowArgumentValue`].
//!
//! Strategy: a tree walk that builds the value bottom-up; the rules are the
//! table in the crate docs. The one non-obvious part is the module path of
//! structs: serde only passes a struct's bare name, so every serializer carries
//! `std::any::type_name::<T>()` of the value it was created for, and
//! `serialize_struct` finds the struct's name inside it (see
//! [`module_of`]).
//!
//! Failure modes: a map key that is not a string, integer, bool, char or unit
//! enum variant, or an error from a user `Serialize` impl. Errors from inside a
//! field, item or map value carry its path.

use std::any::type_name;

use serde::ser::{self, Serialize};

use crate::messages::workflow_argument_value::Kind;
use crate::{Error, WorkflowArgument, WorkflowArgumentValue};

/// Serializes one value. `type_name` is `std::any::type_name` of the Rust type
/// being serialized, the source of struct module paths.
pub(crate) struct Serializer {
    pub(crate) type_name: &'static str,
}

impl Serializer {
    pub(crate) fn of<T: ?Sized>() -> Self {
        Serializer {
            type_name: type_name::<T>(),
        }
    }
}

/// Serializes a child value with a serializer that knows its type.
fn child<T: ?Sized + Serialize>(value: &T) -> Result<WorkflowArgumentValue, Error> {
    value.serialize(Serializer::of::<T>())
}

/// Finds the module path of the struct `name` inside `type_name`.
///
/// `type_name` may wrap the struct (`alloc::boxed::Box<my_crate::geo::Point>`,
/// `&my_crate::geo::Point`) or be generic (`my_crate::Wrapper<u8>`). The first
/// path segment equal to `name` wins and the path before it is the module.
/// Returns `""` when `name` does not occur as a segment, e.g. after
/// `#[serde(rename)]`.
pub(crate) fn module_of(type_name: &str, name: &str) -> String {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    if name.is_empty() {
        return String::new();
    }
    let mut search_from = 0;
    while let Some(found) = type_name[search_from..].find(name) {
        let start = search_from + found;
        let end = start + name.len();
        search_from = start + 1;
        let segment_ends = type_name[end..].chars().next().is_none_or(|c| !is_ident(c));
        if !segment_ends || !type_name[..start].ends_with("::") {
            continue;
        }
        let prefix = &type_name[..start - 2];
        let path_start = prefix
            .rfind(|c: char| !(is_ident(c) || c == ':'))
            .map_or(0, |i| i + 1);
        return prefix[path_start..].to_owned();
    }
    String::new()
}

fn dict(entries: Vec<WorkflowArgument>) -> WorkflowArgumentValue {
    WorkflowArgumentValue {
        kind: Some(Kind::DictValue(crate::WorkflowDictArgument { entries })),
    }
}

pub(crate) fn entry(key: impl Into<String>, value: WorkflowArgumentValue) -> WorkflowArgument {
    WorkflowArgument {
        key: key.into(),
        value: Some(value),
    }
}

/// Integers that do not fit in i64 become decimal strings (lossless).
fn wide_int<T: TryInto<i64> + ToString + Copy>(v: T) -> WorkflowArgumentValue {
    match v.try_into() {
        Ok(i) => WorkflowArgumentValue::int(i),
        Err(_) => WorkflowArgumentValue::string(v.to_string()),
    }
}

/// Integers that always fit in i64.
fn narrow_int<T: Into<i64>>(v: T) -> WorkflowArgumentValue {
    WorkflowArgumentValue::int(v.into())
}

/// `serialize_*` methods for scalars that always succeed: each returns
/// `Ok($convert(v))`.
macro_rules! serialize_with {
    ($($method:ident($ty:ty) => $convert:ident,)*) => {$(
        fn $method(self, v: $ty) -> Result<Self::Ok, Error> {
            Ok($convert(v))
        }
    )*};
}

impl ser::Serializer for Serializer {
    type Ok = WorkflowArgumentValue;
    type Error = Error;
    type SerializeSeq = SeqSerializer;
    type SerializeTuple = SeqSerializer;
    type SerializeTupleStruct = SeqSerializer;
    type SerializeTupleVariant = VariantSerializer<SeqSerializer>;
    type SerializeMap = MapSerializer;
    type SerializeStruct = StructSerializer;
    type SerializeStructVariant = VariantSerializer<StructSerializer>;

    fn serialize_bool(self, v: bool) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::bool(v))
    }
    serialize_with! {
        serialize_i8(i8) => narrow_int,
        serialize_i16(i16) => narrow_int,
        serialize_i32(i32) => narrow_int,
        serialize_i64(i64) => narrow_int,
        serialize_i128(i128) => wide_int,
        serialize_u8(u8) => narrow_int,
        serialize_u16(u16) => narrow_int,
        serialize_u32(u32) => narrow_int,
        serialize_u64(u64) => wide_int,
        serialize_u128(u128) => wide_int,
    }
    fn serialize_f32(self, v: f32) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::double(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::double(v))
    }
    fn serialize_char(self, v: char) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::string(v))
    }
    fn serialize_str(self, v: &str) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::string(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::list(
            v.iter().map(|&b| WorkflowArgumentValue::int(b.into())),
        ))
    }
    fn serialize_none(self) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::null())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Self::Ok, Error> {
        child(value)
    }
    fn serialize_unit(self) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::null())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::null())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, Error> {
        Ok(WorkflowArgumentValue::string(variant))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Error> {
        child(value)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Error> {
        let inner = child(value).map_err(|e| e.in_key(variant))?;
        Ok(dict(vec![entry(variant, inner)]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSerializer, Error> {
        Ok(SeqSerializer::new(false, len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSerializer, Error> {
        Ok(SeqSerializer::new(true, len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSerializer, Error> {
        Ok(SeqSerializer::new(true, len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Ok(VariantSerializer {
            variant,
            inner: SeqSerializer::new(true, len),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSerializer, Error> {
        Ok(MapSerializer {
            entries: Vec::with_capacity(len.unwrap_or(0)),
            next_key: None,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructSerializer, Error> {
        Ok(StructSerializer {
            model: Some((module_of(self.type_name, name), name)),
            entries: Vec::with_capacity(len),
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Ok(VariantSerializer {
            variant,
            inner: StructSerializer {
                model: None,
                entries: Vec::with_capacity(len),
            },
        })
    }
}

/// Lists (`tuple == false`) and tuples (`tuple == true`).
pub(crate) struct SeqSerializer {
    tuple: bool,
    items: Vec<WorkflowArgumentValue>,
}

impl SeqSerializer {
    fn new(tuple: bool, len: usize) -> Self {
        SeqSerializer {
            tuple,
            items: Vec::with_capacity(len),
        }
    }

    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let index = self.items.len();
        self.items
            .push(child(value).map_err(|e| e.in_index(index))?);
        Ok(())
    }

    fn finish(self) -> WorkflowArgumentValue {
        if self.tuple {
            WorkflowArgumentValue::tuple(self.items)
        } else {
            WorkflowArgumentValue::list(self.items)
        }
    }
}

/// `SerializeSeq`, `SerializeTuple` and `SerializeTupleStruct` are the same
/// for a [`SeqSerializer`] but for the name of the method that adds an item.
macro_rules! impl_seq_serializer {
    ($($trait:ident :: $method:ident,)*) => {$(
        impl ser::$trait for SeqSerializer {
            type Ok = WorkflowArgumentValue;
            type Error = Error;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
                self.push(value)
            }
            fn end(self) -> Result<Self::Ok, Error> {
                Ok(self.finish())
            }
        }
    )*};
}

impl_seq_serializer! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
}

/// Maps: keys become strings (see [`KeySerializer`]).
pub(crate) struct MapSerializer {
    entries: Vec<WorkflowArgument>,
    next_key: Option<String>,
}

impl ser::SerializeMap for MapSerializer {
    type Ok = WorkflowArgumentValue;
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        self.next_key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .next_key
            .take()
            .ok_or_else(|| Error::msg("serialize_value called before serialize_key"))?;
        let value = child(value).map_err(|e| e.in_key(&key))?;
        self.entries.push(entry(key, value));
        Ok(())
    }
    fn end(self) -> Result<Self::Ok, Error> {
        Ok(dict(self.entries))
    }
}

/// Structs (`model` is `Some((module, name))`, giving a basemodel) and struct
/// variants (`model` is `None`, giving a plain dict).
pub(crate) struct StructSerializer {
    model: Option<(String, &'static str)>,
    entries: Vec<WorkflowArgument>,
}

impl StructSerializer {
    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        let value = child(value).map_err(|e| e.in_key(key))?;
        self.entries.push(entry(key, value));
        Ok(())
    }

    fn finish(self) -> WorkflowArgumentValue {
        let data = crate::WorkflowDictArgument {
            entries: self.entries,
        };
        match self.model {
            Some((module, name)) => WorkflowArgumentValue {
                kind: Some(Kind::Basemodel(crate::BaseModelWorkflowArgument {
                    module,
                    name: name.to_owned(),
                    data: Some(data),
                })),
            },
            None => WorkflowArgumentValue {
                kind: Some(Kind::DictValue(data)),
            },
        }
    }
}

impl ser::SerializeStruct for StructSerializer {
    type Ok = WorkflowArgumentValue;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.finish())
    }
}

/// Tuple and struct variants: `{variant: inner}`.
pub(crate) struct VariantSerializer<S> {
    variant: &'static str,
    inner: S,
}

impl<S> VariantSerializer<S> {
    fn wrap(variant: &'static str, inner: WorkflowArgumentValue) -> WorkflowArgumentValue {
        dict(vec![entry(variant, inner)])
    }
}

impl ser::SerializeTupleVariant for VariantSerializer<SeqSerializer> {
    type Ok = WorkflowArgumentValue;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.inner.push(value).map_err(|e| e.in_key(self.variant))
    }
    fn end(self) -> Result<Self::Ok, Error> {
        Ok(Self::wrap(self.variant, self.inner.finish()))
    }
}

impl ser::SerializeStructVariant for VariantSerializer<StructSerializer> {
    type Ok = WorkflowArgumentValue;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.inner
            .field(key, value)
            .map_err(|e| e.in_key(self.variant))
    }
    fn end(self) -> Result<Self::Ok, Error> {
        Ok(Self::wrap(self.variant, self.inner.finish()))
    }
}

/// Serializes map keys to strings: strings and chars as they are, integers
/// and bools in their `Display` form, unit enum variants as their name, and
/// newtype structs as their inner key (all as serde_json does). Anything else
/// is an error.
struct KeySerializer;

/// Bools, integers and chars as keys: their `Display` form.
fn display_key<T: ToString>(v: T) -> String {
    v.to_string()
}

fn key_error() -> Error {
    Error::msg("map keys must be strings, numbers, bools or chars")
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = ser::Impossible<String, Error>;
    type SerializeTuple = ser::Impossible<String, Error>;
    type SerializeTupleStruct = ser::Impossible<String, Error>;
    type SerializeTupleVariant = ser::Impossible<String, Error>;
    type SerializeMap = ser::Impossible<String, Error>;
    type SerializeStruct = ser::Impossible<String, Error>;
    type SerializeStructVariant = ser::Impossible<String, Error>;

    serialize_with! {
        serialize_bool(bool) => display_key,
        serialize_i8(i8) => display_key,
        serialize_i16(i16) => display_key,
        serialize_i32(i32) => display_key,
        serialize_i64(i64) => display_key,
        serialize_i128(i128) => display_key,
        serialize_u8(u8) => display_key,
        serialize_u16(u16) => display_key,
        serialize_u32(u32) => display_key,
        serialize_u64(u64) => display_key,
        serialize_u128(u128) => display_key,
        serialize_char(char) => display_key,
    }
    fn serialize_f32(self, _v: f32) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_f64(self, _v: f64) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, Error> {
        Err(key_error())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_error())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_error())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_error())
    }
}
