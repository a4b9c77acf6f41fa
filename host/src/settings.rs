//! The operator's settings file, `cairn.toml`: which dependencies the operator grants to which plugin, and
//! each plugin's settings (config values, secrets, kv namespace, allowed
//! outbound hosts, memory cap, timeout).
//!
//! Strategy: settings are keyed by the plugin's *module* (what `describe`
//! returns), so a plugin keeps its grants across file renames and new
//! versions. The file is parsed once at startup with
//! `#[serde(deny_unknown_fields)]`: a misspelt key is an error naming it,
//! never silently ignored. Environment variables override the file (see
//! [`Settings::apply_env`]); a malformed one is an error naming the
//! variable.
//!
//! Failure modes: a missing file given explicitly, a parse error, an unknown
//! key, an unknown grant name or a bad duration all stop the command with one
//! line naming the file and the key. Secrets never reach a log or the CLI:
//! [`Secret`]'s `Debug` prints `<redacted>` and the CLI lists only the
//! *names* of config keys, never values.
//!
//! `log` and `context` are granted to every plugin ([`DEFAULT_GRANTS`]):
//! they expose nothing outside the call itself (its own id, attempt and
//! deadline; writing to the host's log with fields the guest cannot forge).

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file read when neither `--config` nor `CAIRN_CONFIG` names one, if
/// it exists.
pub const DEFAULT_PATH: &str = "cairn.toml";

/// Dependencies every plugin gets without a grant: they reveal nothing
/// beyond the call itself.
pub const DEFAULT_GRANTS: &[&str] = &["log", "context"];

/// Prefix of the per-plugin environment overrides.
pub const ENV_PREFIX: &str = "CAIRN_PLUGIN_";

/// The whole `cairn.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Per-plugin settings, keyed by module.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSettings>,
}

/// One `[plugins.<module>]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Dependencies granted beyond [`DEFAULT_GRANTS`], by short name
    /// (`kv`, `config`, `http`, `enqueue`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Linear-memory cap per instance, in MiB. Never above the host-wide
    /// cap (the pooling allocator's ceiling); `None` = the host-wide cap.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Upper bound on any one call's budget, e.g. `"10s"`. `None` = the
    /// action's or the row's timeout alone.
    #[serde(default, deserialize_with = "de_duration")]
    pub timeout: Option<Duration>,
    /// The kv namespace; `None` = the module. Two plugins given the same
    /// namespace share keys (on purpose, by the operator).
    #[serde(default)]
    pub kv_namespace: Option<String>,
    /// `host:port` authorities outbound HTTP may reach.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Plain config values the plugin reads through `config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the plugin reads through `config`; never logged or listed.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
}

/// A secret value. `Debug` and `Display` print `<redacted>`; only
/// [`Secret::expose`] gives the value, and only `deps::config` calls it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for handing to the plugin it belongs to.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A timeout in the grammar shared with the guest SDKs: a unit is required
/// and zero is refused (a zero budget would time out every call at once).
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    cairn_contract::parse_positive_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl PluginSettings {
    /// Whether dependency `name` is granted (explicitly or by default).
    pub fn grants(&self, name: &str) -> bool {
        DEFAULT_GRANTS.contains(&name) || self.grants.iter().any(|g| g == name)
    }

    /// The value of config key or secret `key`. A config value wins over a
    /// secret of the same name (the file cannot hold both: see `check`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.config
            .get(key)
            .map(String::as_str)
            .or_else(|| self.secrets.get(key).map(Secret::expose))
    }

    /// The kv namespace of `module`.
    pub fn kv_namespace<'a>(&'a self, module: &'a str) -> &'a str {
        self.kv_namespace.as_deref().unwrap_or(module)
    }

    fn check(&self, module: &str, grantable: &[&str]) -> Result<()> {
        for grant in &self.grants {
            if !grantable.contains(&grant.as_str()) {
                bail!(
                    "plugins.{module}.grants: unknown dependency `{grant}` (known: {})",
                    grantable.join(", ")
                );
            }
        }
        if let Some(key) = self.config.keys().find(|k| self.secrets.contains_key(*k)) {
            bail!("plugins.{module}: `{key}` is both a config value and a secret");
        }
        match self.memory_mib {
            Some(0) => bail!("plugins.{module}.memory_mib must be at least 1"),
            Some(mib) if crate::limits::mib_to_bytes(mib).is_none() => {
                bail!("plugins.{module}.memory_mib = {mib} is too large")
            }
            _ => {}
        }
        Ok(())
    }
}

impl Settings {
    /// Parse `text` (the contents of `path`, used in messages) and check it;
    /// `grants` may name only `grantable` dependencies (pass
    /// `cairn::deps::names()`: the settings are data and do not know the
    /// dependencies themselves).
    ///
    /// # Errors
    /// A parse error or unknown key (named), an unknown grant, a bad value.
    pub fn parse(text: &str, path: &Path, grantable: &[&str]) -> Result<Self> {
        let config: Settings = toml::from_str(text).map_err(|e| {
            anyhow!(
                "{}: {}",
                path.display(),
                crate::error::one_line(&e.message())
            )
        })?;
        config
            .check(grantable)
            .with_context(|| path.display().to_string())?;
        Ok(config)
    }

    /// Read the config file: `explicit` (from `--config`/`CAIRN_CONFIG`),
    /// which must exist, or else `./cairn.toml` if it exists, or else an
    /// empty config. Then apply the environment overrides. `grantable` as
    /// for [`Settings::parse`].
    ///
    /// # Errors
    /// As [`Settings::parse`]; a missing explicit file; a bad override.
    pub fn load(explicit: Option<&Path>, grantable: &[&str]) -> Result<Self> {
        let path = match explicit {
            Some(p) => Some(p.to_owned()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.is_file()),
        };
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow!("config file `{}` cannot be read: {e}", path.display()))?;
                Self::parse(&text, &path, grantable)?
            }
            None => Settings::default(),
        };
        config.apply_env(std::env::vars(), grantable)?;
        Ok(config)
    }

    /// Apply overrides from environment variables (module upper-cased, `-`
    /// as `_`; keys lower-cased):
    ///
    /// * `CAIRN_PLUGIN_<MODULE>_GRANTS=kv,config` replaces the grants;
    /// * `CAIRN_PLUGIN_<MODULE>_CONFIG_<KEY>=value` sets a config value;
    /// * `CAIRN_PLUGIN_<MODULE>_SECRET_<KEY>=value` sets a secret;
    /// * `CAIRN_PLUGIN_<MODULE>_KV_NAMESPACE`, `_MEMORY_MIB`, `_TIMEOUT`,
    ///   `_ALLOWED_HOSTS` (comma-separated) set those keys.
    ///
    /// Then check the result, `grantable` as for [`Settings::parse`].
    ///
    /// # Errors
    /// A `CAIRN_PLUGIN_*` variable that matches none of these, or a bad value.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
        grantable: &[&str],
    ) -> Result<()> {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            self.apply_one(&name, rest, value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        self.check(grantable)
    }

    fn apply_one(&mut self, name: &str, rest: &str, value: String) -> Result<()> {
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for sep in ["_CONFIG_", "_SECRET_"] {
            if let Some(i) = rest.find(sep) {
                let (module, key) = (&rest[..i], &rest[i + sep.len()..]);
                if module.is_empty() || key.is_empty() {
                    break;
                }
                let s = self.plugin_mut(module);
                let key = key.to_ascii_lowercase();
                if sep == "_CONFIG_" {
                    s.config.insert(key, value);
                } else {
                    s.secrets.insert(key, Secret(value));
                }
                return Ok(());
            }
        }
        for field in [
            "_GRANTS",
            "_KV_NAMESPACE",
            "_MEMORY_MIB",
            "_TIMEOUT",
            "_ALLOWED_HOSTS",
        ] {
            if let Some(module) = rest.strip_suffix(field).filter(|m| !m.is_empty()) {
                let s = self.plugin_mut(module);
                match field {
                    "_GRANTS" => s.grants = list(&value),
                    "_KV_NAMESPACE" => s.kv_namespace = Some(value),
                    "_MEMORY_MIB" => {
                        s.memory_mib = Some(
                            value
                                .trim()
                                .parse()
                                .map_err(|_| anyhow!("`{value}` is not a whole number of MiB"))?,
                        )
                    }
                    "_TIMEOUT" => {
                        s.timeout = Some(
                            cairn_contract::parse_positive_duration(&value)
                                .map_err(|e| anyhow!(e))?,
                        )
                    }
                    _ => s.allowed_hosts = list(&value),
                }
                return Ok(());
            }
        }
        bail!("unknown override `{name}` (expected {ENV_PREFIX}<MODULE>_GRANTS, _CONFIG_<KEY>, _SECRET_<KEY>, _KV_NAMESPACE, _MEMORY_MIB, _TIMEOUT or _ALLOWED_HOSTS)")
    }

    fn plugin_mut(&mut self, env_module: &str) -> &mut PluginSettings {
        // Match an existing module whose env spelling is this one, so
        // `CAIRN_PLUGIN_DEPS_CACHE_...` finds `[plugins.deps_cache]` and
        // `[plugins.deps-cache]` alike.
        let existing = self
            .plugins
            .keys()
            .find(|m| env_spelling(m) == env_module)
            .cloned();
        let module = existing.unwrap_or_else(|| env_module.to_ascii_lowercase());
        self.plugins.entry(module).or_default()
    }

    fn check(&self, grantable: &[&str]) -> Result<()> {
        for (module, settings) in &self.plugins {
            settings.check(module, grantable)?;
        }
        Ok(())
    }

    /// The settings of `module` (empty settings if the file has none).
    pub fn plugin(&self, module: &str) -> PluginSettings {
        self.plugins.get(module).cloned().unwrap_or_default()
    }
}

/// How a module is spelt in an environment variable name.
pub fn env_spelling(module: &str) -> String {
    module
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host grants.
    fn grantable() -> Vec<&'static str> {
        crate::deps::names()
    }

    /// `text` as `cairn.toml`, granting what the host grants.
    fn parse(text: &str) -> Result<Settings> {
        Settings::parse(text, Path::new("cairn.toml"), &grantable())
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse("[plugins.counter]\ngrants = [\"kv\"]\ngrant = [\"x\"]\n").unwrap_err();
        assert!(format!("{err:#}").contains("grant"), "{err:#}");
    }

    #[test]
    fn secrets_are_redacted_and_env_overrides_apply() -> Result<()> {
        let mut c =
            parse("[plugins.deps_cache]\n[plugins.deps_cache.secrets]\ntoken = \"s3cr3t\"\n")?;
        assert!(!format!("{c:?}").contains("s3cr3t"));
        c.apply_env(
            [
                ("CAIRN_PLUGIN_DEPS_CACHE_GRANTS".into(), "kv, config".into()),
                ("CAIRN_PLUGIN_DEPS_CACHE_SECRET_API_KEY".into(), "k".into()),
                ("CAIRN_PLUGIN_WEATHER_TIMEOUT".into(), "2s".into()),
                ("CAIRN_PLUGINS".into(), "ignored".into()),
            ],
            &grantable(),
        )?;
        let s = c.plugin("deps_cache");
        assert_eq!(s.grants, ["kv", "config"]);
        assert_eq!(s.get("api_key"), Some("k"));
        assert_eq!(s.get("token"), Some("s3cr3t"));
        assert_eq!(c.plugin("weather").timeout, Some(Duration::from_secs(2)));
        assert!(c
            .apply_env([("CAIRN_PLUGIN_X_BOGUS".into(), "1".into())], &grantable())
            .is_err());
        Ok(())
    }

    #[test]
    fn a_zero_timeout_is_refused_with_one_line_naming_the_file() {
        let err = parse("[plugins.sleepy]\ntimeout = \"0s\"\n").unwrap_err();
        let line = crate::error::one_line(&err);
        assert!(line.starts_with("cairn.toml: "), "{line}");
        assert!(line.contains("greater than zero"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_timeout_without_a_unit_is_refused_from_the_file_and_the_environment() {
        let err = parse("[plugins.sleepy]\ntimeout = \"500\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("has no unit"), "{err:#}");
        let mut c = Settings::default();
        let err = c
            .apply_env(
                [("CAIRN_PLUGIN_SLEEPY_TIMEOUT".into(), "0ms".into())],
                &grantable(),
            )
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("CAIRN_PLUGIN_SLEEPY_TIMEOUT"),
            "{err:#}"
        );
    }

    #[test]
    fn a_memory_cap_that_overflows_is_refused() {
        let err = parse("[plugins.hog]\nmemory_mib = 17592186044416\n").unwrap_err();
        assert!(format!("{err:#}").contains("too large"), "{err:#}");
    }
}
