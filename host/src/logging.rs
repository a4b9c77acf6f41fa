//! Logs: human-readable text by default, one JSON object per line with
//! `CAIRN_LOG_FORMAT=json`. Both go to stderr; `CAIRN_LOG` filters (tracing
//! `EnvFilter` syntax, default `info,sqlx=warn`).
//!
//! # JSON lines
//!
//! Every line is one object with `timestamp` (RFC 3339, UTC), `level`,
//! `target` and `message`, then the event's fields. The fields that locate
//! an event have **stable names**, whatever the code that logged spelt them:
//!
//! | field | meaning |
//! |---|---|
//! | `action` | the action, always `module:name` (guest output and `log` records carry it too) |
//! | `action_id` | the queue row's id (a number; `cairn invoke` uses a string) |
//! | `attempt` | the attempt number, from 1 |
//! | `host` | the host id (every line of `cairn serve` once the host has one) |
//! | `plugin` | the plugin file name (`greet.wasm`) |
//! | `digest` | a plugin version's SHA-256 (prefix), the new one for a swap |
//! | `phase` | where loading a plugin failed (read, validate, compile, link, describe, register) |
//!
//! This module maps the spellings in use onto those names (`file` →
//! `plugin`; the guest's `module` + `action` → `action`; `new_digest` →
//! `digest`), so call sites keep their natural wording and the contract is
//! kept in one place. Other fields pass through unchanged.
//!
//! # Failure modes
//!
//! An unknown `CAIRN_LOG_FORMAT` is an error at start naming the variable; a
//! bad `CAIRN_LOG` filter falls back to the default (as before).

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// tracing's human-readable lines (the default).
    Text,
    /// One JSON object per line (see the module docs).
    Json,
}

impl Format {
    /// From `CAIRN_LOG_FORMAT` (`text` or `json`; unset or empty = text).
    ///
    /// # Errors
    ///
    /// Any other value.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::parse(std::env::var("CAIRN_LOG_FORMAT").ok().as_deref())
    }

    fn parse(value: Option<&str>) -> anyhow::Result<Self> {
        match value.map(str::trim) {
            None | Some("" | "text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => {
                anyhow::bail!("CAIRN_LOG_FORMAT must be `text` or `json`, got {other:?}")
            }
        }
    }
}

static HOST: OnceLock<String> = OnceLock::new();

/// From now on every JSON line carries `host` = `id` (first call wins: one
/// process is one host).
pub fn set_host(id: &str) {
    let _ = HOST.set(id.to_owned());
}

/// Install the global subscriber: `format` on stderr, filtered by
/// `CAIRN_LOG`.
pub fn init(format: Format) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(true)
            .init(),
        Format::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
}

/// The JSON event format (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let line = json_line(
            chrono::Utc::now(),
            meta.level().as_str(),
            meta.target(),
            fields.0,
            HOST.get().map(String::as_str),
        );
        writeln!(writer, "{line}")
    }
}

/// One line's object: the fixed keys, then the normalised fields.
fn json_line(
    now: chrono::DateTime<chrono::Utc>,
    level: &str,
    target: &str,
    mut fields: Map<String, Value>,
    host: Option<&str>,
) -> Value {
    let mut out = Map::new();
    out.insert(
        "timestamp".into(),
        now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    out.insert("level".into(), level.into());
    out.insert("target".into(), target.into());
    out.insert(
        "message".into(),
        fields.remove("message").unwrap_or(Value::from("")),
    );
    normalise(&mut fields);
    if let (Some(host), false) = (host, fields.contains_key("host")) {
        fields.insert("host".into(), host.into());
    }
    for (k, v) in fields {
        out.entry(k).or_insert(v);
    }
    Value::Object(out)
}

/// Map the spellings in use onto the stable field names.
fn normalise(fields: &mut Map<String, Value>) {
    // The guest's output and log records: module + action name.
    if let (Some(Value::String(module)), Some(Value::String(action))) =
        (fields.get("module"), fields.get("action"))
    {
        if !action.contains(':') {
            let key = format!("{module}:{action}");
            fields.insert("action".into(), key.into());
            fields.remove("module");
        }
    }
    if let Some(file) = fields.remove("file") {
        fields.entry("plugin").or_insert(file);
    }
    if let Some(digest) = fields.remove("new_digest") {
        fields.entry("digest").or_insert(digest);
    }
    if let Some(Value::String(id)) = fields.get("action_id") {
        if let Ok(n) = id.parse::<i64>() {
            fields.insert("action_id".into(), n.into());
        }
    }
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(fields: Value, host: Option<&str>) -> Value {
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let mut out = json_line(chrono::Utc::now(), "INFO", "cairn::x", fields, host);
        out.as_object_mut().unwrap().remove("timestamp");
        out
    }

    #[test]
    fn guest_fields_become_the_stable_action_key() {
        let out = line(
            json!({"message": "hi", "module": "chatty", "action": "chat", "attempt": 1, "action_id": "42"}),
            Some("h-1"),
        );
        assert_eq!(
            out,
            json!({"level": "INFO", "target": "cairn::x", "message": "hi",
                   "action": "chatty:chat", "attempt": 1, "action_id": 42, "host": "h-1"})
        );
    }

    #[test]
    fn file_and_new_digest_become_plugin_and_digest() {
        let out = line(
            json!({"message": "m", "file": "a.wasm", "new_digest": "abc", "old_digest": "def", "phase": "link"}),
            None,
        );
        assert_eq!(out["plugin"], "a.wasm");
        assert_eq!(out["digest"], "abc");
        assert_eq!(out["old_digest"], "def");
        assert_eq!(out["phase"], "link");
        assert!(out.get("file").is_none() && out.get("host").is_none());
    }

    #[test]
    fn unknown_format_is_an_error_naming_the_variable() {
        assert_eq!(Format::parse(None).unwrap(), Format::Text);
        assert_eq!(Format::parse(Some("json")).unwrap(), Format::Json);
        let err = Format::parse(Some("yaml")).unwrap_err();
        assert!(err.to_string().contains("CAIRN_LOG_FORMAT"), "{err}");
    }
}
