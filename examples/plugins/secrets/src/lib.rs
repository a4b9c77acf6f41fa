//! A plugin that reads its own config values and secrets through the
//! `Config` dependency, to show that a plugin sees only what the operator set
//! for it.
//!
//! Imports `cairn:plugin/config` and nothing else of cairn's.

use cairn_sdk::{action, Config, Dep};

cairn_sdk::plugin!(module = "secrets");

/// The value (or secret) `key` as this plugin sees it, `None` if unset.
#[action]
pub fn reveal(key: String, config: Dep<Config>) -> Option<String> {
    config.get(&key)
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::FixedConfig;
    use cairn_sdk::Resolver;

    use super::reveal;

    #[test]
    fn reveals_set_keys_and_none_for_others() {
        let resolver = Resolver::new().config(FixedConfig::new([("token", "t0k3n")]));

        assert_eq!(
            reveal::call(&resolver, "token".into()).unwrap().as_deref(),
            Some("t0k3n")
        );
        assert_eq!(reveal::call(&resolver, "missing".into()).unwrap(), None);
    }
}
