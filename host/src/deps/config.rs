//! `cairn:plugin/config`: the calling plugin's own config values and
//! secrets, from its `[plugins.<module>]` table in `cairn.toml` (see
//! [`crate::settings`]). Each store carries only its own plugin's settings, so
//! another plugin's secrets are not even reachable. Values are never logged.

use crate::bindings::cairn::plugin::config;
use crate::store::HostState;

super::cairn_interface!("config", config);

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.deps.settings.get(&key).map(str::to_owned)
    }
}
