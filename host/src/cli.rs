//! The `cairn` command line.
//!
//! Every failure is one line on stderr (`error: ...`) and a non-zero exit:
//! 1 for a failed command or action, 2 for a usage error (clap's). Never a
//! panic or a backtrace. Logs (including guest output and `log` records) go
//! to stderr; command results go to stdout as JSON.

use crate::limits::Limits;
use crate::plugin::{self, DirLoad};
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::sandbox::{self, Invocation};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Runs durable actions as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every action (module:name) with its file, digest and imports,
    /// and every plugin file that was rejected, with the reason.
    Plugins {
        /// The plugin directory.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
    },
    /// Run one action in the sandbox, without a database, and print its
    /// result or error payload as JSON.
    Invoke {
        /// The action, as MODULE:NAME.
        action: String,
        /// Keyword arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The plugin directory.
        #[arg(long, env = "CAIRN_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// Attempt number the action sees through `context` (for testing
        /// retry behaviour by hand).
        #[arg(long, default_value_t = 1)]
        attempt: u32,
        /// Override the action's timeout, e.g. `500ms`, `10s`.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

/// Entry point for the binary: parse, run, report. Returns the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", sandbox::one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .init();
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Plugins { plugins } => {
            let (_, load, registry) = load(&plugins).await?;
            print_plugins(&load, &registry);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Invoke {
            action,
            args,
            plugins,
            attempt,
            timeout,
        } => invoke(&action, &args, &plugins, attempt, timeout).await,
    }
}

/// Load a directory and register what loaded (the registry then owns the
/// plugins); conflicts become rejections.
async fn load(dir: &std::path::Path) -> Result<(Runtime, DirLoad, Registry)> {
    if !dir.is_dir() {
        bail!(
            "plugin directory `{}` does not exist (pass --plugins DIR)",
            dir.display()
        );
    }
    let runtime = Runtime::new(Limits::from_env()?)?;
    let mut load = plugin::load_dir(&runtime, dir).await?;
    let registry = Registry::new();
    for plugin in std::mem::take(&mut load.plugins) {
        let file = plugin.file.clone();
        if let Err(conflict) = registry.register_plugin(Arc::new(plugin)) {
            load.rejected.push(plugin::LoadError::new(
                &file,
                plugin::Phase::Register,
                conflict.to_string(),
            ));
        }
    }
    for rejected in &load.rejected {
        tracing::error!("{rejected}");
    }
    Ok((runtime, load, registry))
}

fn print_plugins(load: &DirLoad, registry: &Registry) {
    println!("{:<28} {:<22} {:<14} IMPORTS", "ACTION", "FILE", "DIGEST");
    for (key, handler) in registry.entries() {
        let deps = handler.plugin.dependencies();
        let imports = if deps.is_empty() {
            "-".to_owned()
        } else {
            deps.join(",")
        };
        println!(
            "{:<28} {:<22} {:<14} {}",
            key,
            handler.plugin.file_name(),
            handler.plugin.short_digest(),
            imports
        );
    }
    for rejected in &load.rejected {
        println!(
            "REJECTED {}: ({}) {}",
            plugin::display_name(&rejected.file),
            rejected.phase,
            rejected.message
        );
    }
}

async fn invoke(
    action: &str,
    args: &str,
    plugins: &std::path::Path,
    attempt: u32,
    timeout: Option<Duration>,
) -> Result<std::process::ExitCode> {
    let (module, name) = action
        .split_once(':')
        .filter(|(m, n)| !m.is_empty() && !n.is_empty())
        .ok_or_else(|| anyhow!("action `{action}` is not of the form MODULE:NAME"))?;
    let json: serde_json::Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    let arguments =
        cairn_payload::json::json_to_arguments(&json).map_err(|e| anyhow!("--args: {e}"))?;

    let (runtime, load, registry) = load(plugins).await?;
    let handler = registry.get(module, name).ok_or_else(|| {
        let mut msg = format!(
            "unknown action `{module}:{name}` in `{}`",
            plugins.display()
        );
        if !load.rejected.is_empty() {
            let files: Vec<_> = load
                .rejected
                .iter()
                .map(|r| plugin::display_name(&r.file))
                .collect();
            msg.push_str(&format!(
                " ({} plugin file(s) rejected: {})",
                files.len(),
                files.join(", ")
            ));
        }
        anyhow!(msg)
    })?;

    let invocation = Invocation {
        action_id: format!("invoke-{}", std::process::id()),
        attempt,
        timeout: timeout
            .or_else(|| handler.info.timeout_ms.map(Duration::from_millis))
            .unwrap_or(runtime.limits().default_timeout),
    };
    let bytes = cairn_payload::encode_arguments(&arguments);
    match handler
        .plugin
        .invoke(&runtime, name, bytes, &invocation)
        .await
    {
        Ok(result) => {
            let json = cairn_payload::json::payload_to_json(&result).map_err(|e| {
                anyhow!("action `{module}:{name}` returned an unreadable payload: {e}")
            })?;
            println!("{json}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(failure) => {
            let json = cairn_payload::json::payload_to_json(&failure.payload())
                .map_err(|e| anyhow!("encoding the error payload: {e}"))?;
            println!("{json}");
            eprintln!("error: action `{module}:{name}` failed: {failure}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// Parse `250ms`, `10s`, `5m`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "ms"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "`{text}` has unknown unit `{unit}` (use ms, s, m or h)"
        )),
    }
}
