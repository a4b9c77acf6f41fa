//! Dependency `cairn:plugin/config`: the plugin's own configuration values
//! and secrets, as the operator set them for this plugin.
//!
//! Take a `Dep<Config>` parameter to use it; only then does the component
//! import `cairn:plugin/config`. Values and secrets are read the same way;
//! the host never logs or lists secrets, and this type never prints values
//! (its `Debug` is opaque), so keep it that way in your own logging.
//!
//! ```
//! use cairn_sdk::{Config, Dep, Error};
//!
//! #[cairn_sdk::action]
//! fn endpoint(config: Dep<Config>) -> Result<String, Error> {
//!     let region = config.get("region").unwrap_or_else(|| "eu".to_owned());
//!     Ok(format!("{}/{region}", config.require("api_url")?))
//! }
//! ```
//!
//! A missing key is `None` from [`Config::get`] and a non-retryable
//! `ConfigError` from [`Config::require`]: the operator has to set it, so
//! running the action again would not help.

use std::fmt;
use std::rc::Rc;

use crate::deps::builtin_dependency;
use crate::Error;

/// The plugin's configuration values and secrets.
#[derive(Clone)]
pub struct Config {
    backend: Rc<dyn ConfigBackend>,
}

/// Where a [`Config`] reads from: the host (in a component) or a test double
/// such as [`testing::FixedConfig`](crate::testing::FixedConfig).
pub trait ConfigBackend {
    /// The value of `key`, or `None` if it is not set.
    fn get(&self, key: &str) -> Option<String>;
}

impl Config {
    /// A `Config` over any backend, e.g. to call a function that takes
    /// `&Config` in a test.
    pub fn new(backend: impl ConfigBackend + 'static) -> Self {
        Config {
            backend: Rc::new(backend),
        }
    }

    /// The value (or secret) `key`, or `None` if the operator set no such key
    /// for this plugin.
    pub fn get(&self, key: &str) -> Option<String> {
        self.backend.get(key)
    }

    /// The value (or secret) `key`.
    ///
    /// # Errors
    ///
    /// A non-retryable `ConfigError` naming the key if it is not set.
    pub fn require(&self, key: &str) -> Result<String, Error> {
        self.get(key).ok_or_else(|| {
            Error::new(format!("config key `{key}` is not set for this plugin"))
                .with_type("ConfigError")
                .with_module(crate::error::SDK_MODULE)
        })
    }
}

impl fmt::Debug for Config {
    /// Opaque: a `Config` holds secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Config { .. }")
    }
}

builtin_dependency!(
    Config,
    config,
    import "cairn:plugin/config",
    double "cairn_sdk::testing::FixedConfig::new([(\"key\", \"value\")])"
);

#[cfg(target_arch = "wasm32")]
fn host_backend() -> Result<Rc<dyn ConfigBackend>, crate::deps::DependencyError> {
    struct Host;

    impl ConfigBackend for Host {
        fn get(&self, key: &str) -> Option<String> {
            crate::bindings::cairn::plugin::config::get(key)
        }
    }

    Ok(Rc::new(Host))
}
