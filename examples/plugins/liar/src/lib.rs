//! A bad plugin: its actions "succeed" with bytes that are not a result
//! payload. The host must not store such a row as `succeeded` (no reader
//! could decode it) but fail it, non-retryably, with `InvalidResultPayload`.
//!
//! Built with `wit-bindgen` directly against cairn's `plugin-world` (not
//! cairn-sdk, which always returns a proper payload), so `invoke` returns
//! whatever bytes it likes. Imports nothing of cairn's.

mod bindings {
    wit_bindgen::generate!({
        world: "cairn:plugin/plugin-world",
        path: "../../../wit",
        generate_all,
    });
}

use bindings::cairn::plugin::types::{ActionError, ActionInfo, PluginInfo};
use bindings::exports::cairn::plugin::plugin::Guest;
use cairn_payload::{WorkflowArgumentValue, WorkflowArguments, WorkflowErrorValue};

struct Liar;

/// The actions, and the bytes each returns as its "result".
const ACTIONS: [(&str, &str); 4] = [
    ("garbage", "bytes that are not protobuf at all"),
    (
        "wrong_key",
        "a WorkflowArguments whose one entry is `answer`, not `result`",
    ),
    ("error_as_result", "an error payload, returned as a success"),
    ("honest", "a proper result payload: the string `truth`"),
];

/// What action `name` returns, or `None` if there is no such action.
pub fn returned(name: &str) -> Option<Vec<u8>> {
    Some(match name {
        "garbage" => b"\xff\xfenot protobuf".to_vec(),
        "wrong_key" => cairn_payload::encode_arguments(&WorkflowArguments::from_pairs([(
            "answer".to_owned(),
            WorkflowArgumentValue::int(42),
        )])),
        "error_as_result" => cairn_payload::serialize_error_payload(WorkflowErrorValue {
            r#type: "Fib".to_owned(),
            message: "all is well".to_owned(),
            ..WorkflowErrorValue::default()
        }),
        "honest" => cairn_payload::serialize_result_payload(WorkflowArgumentValue::string("truth")),
        _ => return None,
    })
}

impl Guest for Liar {
    fn describe() -> PluginInfo {
        PluginInfo {
            module: "liar".to_owned(),
            actions: ACTIONS
                .iter()
                .map(|(name, description)| ActionInfo {
                    name: (*name).to_owned(),
                    description: format!("Returns {description}."),
                    timeout_ms: None,
                    retry: None,
                })
                .collect(),
        }
    }

    fn invoke(name: String, _args: Vec<u8>) -> Result<Vec<u8>, ActionError> {
        returned(&name).ok_or_else(|| ActionError {
            type_name: "UnknownAction".to_owned(),
            module: "liar".to_owned(),
            message: format!("plugin `liar` has no action `{name}`"),
            retryable: false,
            details: None,
        })
    }
}

// Only the component exports (see `cairn_sdk::plugin!` for why).
#[cfg(target_arch = "wasm32")]
bindings::export!(Liar with_types_in bindings);

#[cfg(test)]
mod tests {
    #[test]
    fn only_honest_returns_a_result_payload() {
        for (name, _) in super::ACTIONS {
            let bytes = super::returned(name).unwrap();
            let ok = cairn_payload::check_result_payload(&bytes).is_ok();
            assert_eq!(ok, name == "honest", "{name}");
        }
    }
}
