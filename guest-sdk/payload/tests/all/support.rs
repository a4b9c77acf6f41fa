//! Helpers shared by the test modules.

use cairn_payload::messages::primitive_workflow_argument::Kind as P;
use cairn_payload::messages::workflow_argument_value::Kind as K;
use cairn_payload::*;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The basemodel inside `v`, or an error naming what `v` is instead.
pub fn basemodel(v: &WorkflowArgumentValue) -> Result<&BaseModelWorkflowArgument, String> {
    match &v.kind {
        Some(K::Basemodel(m)) => Ok(m),
        _ => Err(format!("expected a basemodel, got {v:?}")),
    }
}

/// The dict entries inside `v`.
pub fn dict(v: &WorkflowArgumentValue) -> Result<Vec<(String, WorkflowArgumentValue)>, String> {
    match &v.kind {
        Some(K::DictValue(d)) => Ok(d
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
            .collect()),
        _ => Err(format!("expected a dict, got {v:?}")),
    }
}

/// The double inside `v`.
pub fn double(v: &WorkflowArgumentValue) -> Result<f64, String> {
    match &v.kind {
        Some(K::Primitive(PrimitiveWorkflowArgument {
            kind: Some(P::DoubleValue(f)),
        })) => Ok(*f),
        _ => Err(format!("expected a double, got {v:?}")),
    }
}

/// The dict message holding `entries`, in order: the `data` of a basemodel,
/// the `values` of an exception.
pub fn dict_of(
    entries: impl IntoIterator<Item = (String, WorkflowArgumentValue)>,
) -> WorkflowDictArgument {
    WorkflowDictArgument {
        entries: WorkflowArguments::from_pairs(entries).arguments,
    }
}

/// An exception value.
pub fn exception(e: WorkflowErrorValue) -> WorkflowArgumentValue {
    WorkflowArgumentValue {
        kind: Some(K::Exception(e)),
    }
}

/// A sample error with every field set.
pub fn sample_error() -> WorkflowErrorValue {
    WorkflowErrorValue {
        r#type: "ValueError".into(),
        module: "builtins".into(),
        message: "bad value".into(),
        traceback: "line 1\nline 2".into(),
        values: Some(WorkflowDictArgument {
            entries: vec![WorkflowArgument {
                key: "code".into(),
                value: Some(WorkflowArgumentValue::int(7)),
            }],
        }),
        type_hierarchy: vec!["ValueError".into(), "Exception".into()],
    }
}

/// Bytes that serialize through `serialize_bytes` (like `serde_bytes`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bytes(pub Vec<u8>);

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}
