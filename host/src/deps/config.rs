//! `cairn:plugin/config`: the calling plugin's own config values and
//! secrets, from its `[plugins.<module>]` table in `cairn.toml` (see
//! [`crate::settings`]). Each store carries only its own plugin's settings, so
//! another plugin's secrets are not even reachable. Values are never logged.

use super::Dependency;
use crate::bindings::cairn::plugin::config;
use crate::store::HostState;
use wasmtime::component::HasSelf;

pub(crate) const DEPENDENCY: Dependency = Dependency {
    name: "config",
    interfaces: &["cairn:plugin/config"],
    version_prefix: super::PACKAGE_VERSION_PREFIX,
    add_to_linker: |linker| config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s),
};

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.deps.settings.get(&key).map(str::to_owned)
    }
}
