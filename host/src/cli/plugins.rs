//! `cairn plugins` and `cairn invoke`: a plugin directory loaded exactly as
//! `cairn serve` loads it ([`load_plugins`]), without a database. `cairn
//! plugins` then shows what the hosts running on the database have loaded
//! ([`super::admin::hosts`]), unless told `--dir`.

use crate::key::ActionKey;
use crate::limits::Limits;
use crate::plugin::display_name;
use crate::queue::admin::HostInfo;
use crate::reload::ReloadConfig;
use crate::sandbox::Invocation;
use crate::serve::{load_plugins, LoadedPlugins};
use crate::settings::Settings;
use anyhow::{anyhow, Result};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Load `dir` as `serve` would. One-shot commands use no artifact cache: they
/// leave nothing behind in the working directory.
async fn load(dir: &Path, settings: Arc<Settings>) -> Result<LoadedPlugins> {
    load_plugins(dir, settings, Limits::from_env()?, ReloadConfig::default()).await
}

/// `cairn plugins`: every action with its file, digest and imports (each
/// cairn dependency marked granted ✓ or not ✗; never config values or
/// secrets), then every rejected file with its phase and reason; then, with
/// `hosts` (the database to ask), what the running hosts have loaded. As
/// JSON with `json`.
pub(super) async fn list(
    dir: &Path,
    settings: Arc<Settings>,
    hosts: Option<super::DbArgs>,
    json: bool,
) -> Result<ExitCode> {
    let loaded = load(dir, settings).await?;
    let hosts = match hosts {
        Some(db) => Some(super::admin::hosts(db).await?),
        None => None,
    };
    let hosts = hosts.as_ref().map(|h| h.as_deref());
    if json {
        print_json(&loaded, hosts);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<28} {:<22} {:<14} IMPORTS", "ACTION", "FILE", "DIGEST");
    for (key, handler) in loaded.registry().snapshot().iter() {
        let plugin = &handler.plugin;
        let mut imports: Vec<String> = plugin
            .grants()
            .iter()
            .map(|(d, granted)| format!("{d}{}", if *granted { "✓" } else { "✗" }))
            .collect();
        let wasi = plugin
            .imports
            .iter()
            .filter(|i| i.starts_with("wasi:"))
            .count();
        if wasi > 0 {
            imports.push(format!("+{wasi} wasi"));
        }
        let imports = if imports.is_empty() {
            "-".to_owned()
        } else {
            imports.join(",")
        };
        println!(
            "{:<28} {:<22} {:<14} {}",
            key.to_string(),
            plugin.file_name(),
            plugin.digest.short(),
            imports
        );
    }
    for file in loaded.reloader.files() {
        if let Some(rejected) = file.rejected {
            // A file that loaded but declares another file's actions waits:
            // it takes them over when that file goes away (docs/reload.md).
            let waiting = if rejected.waiting { " (waiting)" } else { "" };
            println!(
                "REJECTED {}: ({}){waiting} {}",
                display_name(&file.file),
                rejected.error.phase,
                rejected.error.message
            );
        }
    }
    if let Some(hosts) = hosts {
        print!("{}", super::admin::hosts_text(hosts));
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn plugins --json`: `actions`, `rejected`, and (unless `--dir`)
/// `hosts` (`null` when there is no database to ask).
fn print_json(loaded: &LoadedPlugins, hosts: Option<Option<&[HostInfo]>>) {
    let actions: Vec<serde_json::Value> = loaded
        .registry()
        .snapshot()
        .iter()
        .map(|(key, handler)| {
            let p = &handler.plugin;
            json!({
                "action": key.to_string(),
                "file": p.file_name(),
                "digest": p.digest.hex(),
                "imports": p
                    .grants()
                    .iter()
                    .map(|(d, granted)| json!({"name": d, "granted": granted}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let rejected: Vec<serde_json::Value> = loaded
        .reloader
        .files()
        .into_iter()
        .filter_map(|f| {
            let r = f.rejected?;
            Some(json!({
                "file": display_name(&f.file),
                "phase": r.error.phase.to_string(),
                "reason": r.error.message,
            }))
        })
        .collect();
    let mut out = json!({"actions": actions, "rejected": rejected});
    if let Some(hosts) = hosts {
        out["hosts"] = super::admin::hosts_json(hosts);
    }
    println!("{out}");
}

/// `cairn invoke`: one call in the sandbox, its result or error payload
/// printed as JSON; exit 1 when the action failed.
pub(super) async fn invoke(
    action: &ActionKey,
    args: &str,
    dir: &Path,
    settings: Arc<Settings>,
    attempt: u32,
    timeout: Option<Duration>,
) -> Result<ExitCode> {
    let arguments = super::queue::parse_args(args)?;
    let loaded = load(dir, settings).await?;
    let handler = loaded
        .registry()
        .snapshot()
        .get(action)
        .cloned()
        .ok_or_else(|| {
            let mut msg = format!("unknown action `{action}` in `{}`", dir.display());
            let rejected: Vec<String> = loaded
                .reloader
                .files()
                .iter()
                .filter(|f| f.rejected.is_some())
                .map(|f| display_name(&f.file))
                .collect();
            if !rejected.is_empty() {
                msg.push_str(&format!(
                    " ({} plugin file(s) rejected: {})",
                    rejected.len(),
                    rejected.join(", ")
                ));
            }
            anyhow!(msg)
        })?;

    let invocation = Invocation {
        action_id: format!("invoke-{}", std::process::id()),
        attempt,
        timeout,
    };
    let bytes = cairn_payload::encode_arguments(&arguments);
    match handler
        .plugin
        .invoke(&loaded.engine, &action.name, bytes, &invocation)
        .await
    {
        Ok(result) => {
            let json = cairn_payload::json::payload_to_json(&result)
                .map_err(|e| anyhow!("action `{action}` returned an unreadable payload: {e}"))?;
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            let json = cairn_payload::json::payload_to_json(&failure.payload())
                .map_err(|e| anyhow!("encoding the error payload: {e}"))?;
            println!("{json}");
            eprintln!("error: action `{action}` failed: {failure}");
            Ok(ExitCode::FAILURE)
        }
    }
}
