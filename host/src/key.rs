//! The two identities the host passes around: which action ([`ActionKey`],
//! `module:name`) and which build of a plugin ([`Digest`], the SHA-256 of its
//! file).
//!
//! Both used to be strings formatted and split by hand in a dozen places, with
//! as many spellings of "the first 12 hex digits". Here each has one parser,
//! one `Display` and one short form, so a log line, an error, a CLI listing
//! and a metric label always agree.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// The registry key of an action: the plugin's module and the action's name,
/// written `module:name`.
///
/// Both parts obey the name rule shared with the guest SDKs
/// ([`cairn_contract::is_valid_name`]): non-empty, no `:`, no whitespace, so
/// `module:name` splits back unambiguously. [`ActionKey::new`] does not check
/// the rule, because keys also come from queue rows, which the SQL API lets
/// anyone write; [`ActionKey::parse`] (user input) does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionKey {
    /// The plugin's module, as its `describe` says.
    pub module: String,
    /// The action's name within the module.
    pub name: String,
}

impl ActionKey {
    /// The key of `module`'s action `name`, unchecked (see the type docs).
    pub fn new(module: impl Into<String>, name: impl Into<String>) -> Self {
        ActionKey {
            module: module.into(),
            name: name.into(),
        }
    }

    /// Parse user input of the form `MODULE:NAME`.
    ///
    /// # Errors
    ///
    /// When `text` is not two valid names joined by one `:`; the message
    /// quotes the input and the expected form.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text.split_once(':') {
            Some((module, name))
                if cairn_contract::is_valid_name(module) && cairn_contract::is_valid_name(name) =>
            {
                Ok(ActionKey::new(module, name))
            }
            _ => anyhow::bail!("action `{text}` is not of the form MODULE:NAME"),
        }
    }
}

impl fmt::Display for ActionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.module, self.name)
    }
}

/// `key == "module:name"`, without formatting the key.
impl PartialEq<&str> for ActionKey {
    fn eq(&self, other: &&str) -> bool {
        other.split_once(':') == Some((self.module.as_str(), self.name.as_str()))
    }
}

impl FromStr for ActionKey {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        ActionKey::parse(s)
    }
}

/// The SHA-256 digest of a plugin file's bytes: the identity of one build of
/// a plugin. The registry compares digests to tell a copy from a conflicting
/// implementation, the reloader to tell a touch from a new version, the
/// artifact cache to name entries.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Hex digits shown by [`Digest::short`]: 48 bits, enough to tell apart
    /// every version an operator will ever deploy, short enough for a log line.
    pub const SHORT_LEN: usize = 12;

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// All 64 hex digits (what [`Display`](fmt::Display) prints).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first [`SHORT_LEN`](Self::SHORT_LEN) hex digits, for logs and
    /// listings.
    pub fn short(&self) -> String {
        let mut hex = self.hex();
        hex.truncate(Self::SHORT_LEN);
        hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// The short form of an optional digest, `-` for none: for logs of changes
/// where one side may be missing.
pub fn short_or_dash(digest: Option<&Digest>) -> String {
    digest.map_or_else(|| "-".to_owned(), Digest::short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_as_module_colon_name() {
        let key = ActionKey::parse("greet:hello").unwrap();
        assert_eq!(key, ActionKey::new("greet", "hello"));
        assert_eq!(key.to_string(), "greet:hello");
        assert!(key == "greet:hello" && key != "greet:bye" && key != "greet");
    }

    #[test]
    fn malformed_keys_are_refused_quoting_the_input() {
        for bad in ["greet", ":hello", "greet:", "a:b:c", "a b:c", ""] {
            let err = ActionKey::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("MODULE:NAME"), "{err}");
        }
    }

    #[test]
    fn digests_print_in_full_and_short() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(short_or_dash(None), "-");
    }
}
