//! `cairn:plugin/context`: facts about the current invocation (action id,
//! attempt, deadline), read from the call the sandbox set up. Pure reads; no
//! failure modes.

use super::Dependency;
use crate::bindings::cairn::plugin::context;
use crate::store::HostState;
use std::time::UNIX_EPOCH;
use wasmtime::component::HasSelf;

pub(crate) const DEPENDENCY: Dependency = Dependency {
    name: "context",
    interfaces: &["cairn:plugin/context"],
    version_prefix: super::PACKAGE_VERSION_PREFIX,
    add_to_linker: |linker| context::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s),
};

impl context::Host for HostState {
    fn action_id(&mut self) -> String {
        self.call.action_id.clone()
    }

    fn attempt(&mut self) -> u32 {
        self.call.attempt
    }

    fn deadline_unix_ms(&mut self) -> u64 {
        self.call
            .deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
