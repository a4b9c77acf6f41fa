//! A bad plugin: besides exporting the cairn `plugin` interface it imports
//! `evil:extra/telepathy`, which no host provides. The host must refuse to
//! load it, naming that interface.
//!
//! Built with `wit-bindgen` directly (not cairn-sdk) because its world is its
//! own: `wit/telepathy.wit`, with the cairn contract as a dependency. The
//! action really calls `read-mind`, so the import survives the component
//! toolchain's removal of unused imports.

mod bindings {
    wit_bindgen::generate!({
        world: "evil:extra/stranger",
        path: ["../../../wit", "wit"],
        generate_all,
    });
}

use bindings::cairn::plugin::types::{ActionError, ActionInfo, PluginInfo};
use bindings::evil::extra::telepathy;
use bindings::exports::cairn::plugin::plugin::Guest;

struct Stranger;

impl Guest for Stranger {
    fn describe() -> PluginInfo {
        PluginInfo {
            module: "stranger".to_owned(),
            actions: vec![ActionInfo {
                name: "read_mind".to_owned(),
                description: "Read the host's mind.".to_owned(),
                timeout_ms: None,
                retry: None,
            }],
        }
    }

    fn invoke(name: String, _args: Vec<u8>) -> Result<Vec<u8>, ActionError> {
        if name != "read_mind" {
            return Err(ActionError {
                type_name: "UnknownAction".to_owned(),
                module: "stranger".to_owned(),
                message: format!("plugin `stranger` has no action `{name}`"),
                retryable: false,
                details: None,
            });
        }
        let thought = telepathy::read_mind();
        Ok(cairn_payload::serialize_result_payload(
            cairn_payload::WorkflowArgumentValue::string(thought),
        ))
    }
}

// Only the component exports (see `cairn_sdk::plugin!` for why).
#[cfg(target_arch = "wasm32")]
bindings::export!(Stranger with_types_in bindings);
