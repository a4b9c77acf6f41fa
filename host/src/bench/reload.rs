//! `cairn bench-reload`: how long from a plugin file landing in the
//! directory (a `rename` into it) to its new version serving.
//!
//! The plugin is the `versioned` example (`examples/plugins/versioned`): its
//! version number is a marker in the data section that [`with_version`]
//! rewrites, so every version is a new digest and a new result. Two phases,
//! each with `rounds` **cold** landings (a version never seen: validate,
//! compile, link, describe) and then `rounds` **warm** ones (versions landed
//! before, now in the artifact cache: no compilation):
//!
//! 1. **Swap.** In this process: a [`Reloader`] with the default
//!    [`ReloadConfig`] and its own artifact cache. Time from the `rename`
//!    to the registry change ([`FileOutcome::Applied`] with the new digest).
//! 2. **Serving.** A `cairn serve` child on the same database, plugin
//!    directory and a fresh cache (`CAIRN_CACHE_DIR`), exactly as operators
//!    run it. Time from the `rename` to the first `versioned:version` action
//!    that returns the new version; this process keeps one probe action in
//!    flight at a time (each a few milliseconds), so this includes the claim,
//!    the run and the completion.
//!
//! Failure modes: a round that does not finish within [`ROUND_LIMIT`], the
//! child exiting, or an action failing is an error naming the round. The
//! child is always stopped (SIGTERM, then killed) and the work directory
//! (under the state directory) removed.

use super::ServeChild;
use crate::db::Database;
use crate::engine::Engine;
use crate::key::Digest;
use crate::limits::Limits;
use crate::plugin::Loader;
use crate::queue::{ActionStatus, Client, EnqueueRequest};
use crate::registry::Registry;
use crate::reload::{FileOutcome, ReloadConfig, ReloadEvent, Reloader};
use anyhow::{anyhow, bail, ensure, Context, Result};
use indicatif::ProgressBar;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The marker `examples/plugins/versioned` carries: `CAIRNVER:` and seven
/// ASCII digits.
pub const VERSION_MARKER: &[u8] = b"CAIRNVER:";

/// Digits after the marker.
const VERSION_DIGITS: usize = 7;

/// Longest one landing may take to serve before the bench gives up: ten
/// times the budget the docs promise, so a slow machine still reports.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// A copy of the `versioned` plugin's bytes carrying `version` instead:
/// same length, new digest.
///
/// # Errors
/// The bytes do not hold exactly one `CAIRNVER:` marker followed by seven
/// digits, or `version` has more than seven digits.
pub fn with_version(template: &[u8], version: u32) -> Result<Vec<u8>> {
    ensure!(
        version < 10u32.pow(VERSION_DIGITS as u32),
        "version {version} has more than {VERSION_DIGITS} digits"
    );
    let found: Vec<usize> = template
        .windows(VERSION_MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == VERSION_MARKER)
        .map(|(i, _)| i)
        .collect();
    let [at] = found[..] else {
        bail!(
            "expected exactly one `CAIRNVER:` marker (the `versioned` example plugin), found {}",
            found.len()
        );
    };
    let digits = at + VERSION_MARKER.len()..at + VERSION_MARKER.len() + VERSION_DIGITS;
    ensure!(
        template
            .get(digits.clone())
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit)),
        "the `CAIRNVER:` marker is not followed by {VERSION_DIGITS} digits"
    );
    let mut out = template.to_vec();
    out[digits].copy_from_slice(format!("{version:0width$}", width = VERSION_DIGITS).as_bytes());
    Ok(out)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `versioned` example plugin (`versioned.wasm`).
    pub plugin: PathBuf,
    /// Cold landings per phase (as many warm ones follow).
    pub rounds: usize,
    /// cairn's state directory: the work directory goes under it.
    pub state_dir: PathBuf,
    /// Passed to the `cairn serve` child as `--database-url`.
    pub database_url: Option<String>,
}

/// Landing → serving times of one phase.
#[derive(Debug, Clone, Default)]
pub struct Landings {
    /// Versions never seen before (compiled).
    pub cold: Vec<Duration>,
    /// Versions in the artifact cache.
    pub warm: Vec<Duration>,
}

impl Landings {
    /// One landing's time, under `warm` or `cold` as the version was.
    fn record(&mut self, warm: bool, took: Duration) {
        if warm { &mut self.warm } else { &mut self.cold }.push(took);
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Rename → registry swapped, in process.
    pub swap: Landings,
    /// Compilations during the warm landings of the swap phase (0 expected).
    pub warm_compilations: u64,
    /// Rename → first action returning the new version, via `cairn serve`.
    pub serving: Landings,
    /// The plugin's size.
    pub plugin_bytes: usize,
}

fn summary(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, max {:.1} ms ({} landings)",
        ms(sorted[(sorted.len() - 1) / 2]),
        ms(*sorted.last().expect("not empty")),
        sorted.len()
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hot reload of a {} KiB plugin, file renamed into the watched directory:",
            self.plugin_bytes / 1024
        )?;
        writeln!(f, "  rename -> registry swapped (in process)")?;
        writeln!(f, "    cold (compile):    {}", summary(&self.swap.cold))?;
        writeln!(
            f,
            "    warm (cache hit):  {} — {} compilations",
            summary(&self.swap.warm),
            self.warm_compilations
        )?;
        writeln!(
            f,
            "  rename -> first action on the new version (cairn serve child)"
        )?;
        writeln!(f, "    cold (compile):    {}", summary(&self.serving.cold))?;
        write!(f, "    warm (cache hit):  {}", summary(&self.serving.warm))
    }
}

/// Run the benchmark. See the module docs.
///
/// # Errors
/// The plugin is not the `versioned` example, a landing does not serve
/// within [`ROUND_LIMIT`], the child fails, or an action fails.
pub async fn run(db: &Database, options: &Options) -> Result<Report> {
    let template = std::fs::read(&options.plugin).with_context(|| {
        format!(
            "bench-reload: reading `{}` (build examples/plugins and pass --plugin .../versioned.wasm)",
            options.plugin.display()
        )
    })?;
    with_version(&template, 1).context("bench-reload: --plugin")?;
    let work = absolute(&options.state_dir)?.join(format!("bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .with_context(|| format!("bench-reload: creating `{}`", work.display()))?;
    let outcome = measure(db, options, &template, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    outcome
}

async fn measure(db: &Database, options: &Options, template: &[u8], work: &Path) -> Result<Report> {
    let rounds = options.rounds.max(1) as u32;
    // Two phases, each `rounds` cold and `rounds` warm landings.
    let bar = crate::progress::bar(u64::from(rounds) * 4, "landings", "files");
    let (swap, warm_compilations) = swap_phase(template, work, rounds, &bar).await?;
    let serving = serving_phase(db, options, template, work, rounds, &bar).await?;
    bar.finish_and_clear();
    Ok(Report {
        swap,
        warm_compilations,
        serving,
        plugin_bytes: template.len(),
    })
}

/// Write `bytes` to `staging/versioned.wasm`, then time from renaming it
/// into `dir` until `served` says the version serves.
async fn land<F, Fut>(bytes: &[u8], staging: &Path, dir: &Path, served: F) -> Result<Duration>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let staged = staging.join("versioned.wasm");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&staged)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    let start = Instant::now();
    std::fs::rename(&staged, dir.join("versioned.wasm")).context("bench-reload: landing")?;
    tokio::time::timeout(ROUND_LIMIT, served())
        .await
        .map_err(|_| anyhow!("bench-reload: not serving after {ROUND_LIMIT:?}"))??;
    Ok(start.elapsed())
}

fn dirs(work: &Path, phase: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let base = work.join(phase);
    let (plugins, staging, cache) = (
        base.join("plugins"),
        base.join("staging"),
        base.join("cache"),
    );
    for d in [&plugins, &staging] {
        std::fs::create_dir_all(d)?;
    }
    Ok((plugins, staging, cache))
}

async fn swap_phase(
    template: &[u8],
    work: &Path,
    rounds: u32,
    bar: &ProgressBar,
) -> Result<(Landings, u64)> {
    let (plugins, staging, cache) = dirs(work, "swap")?;
    std::fs::write(plugins.join("versioned.wasm"), with_version(template, 1)?)?;
    let mut config = ReloadConfig::from_env(work)?;
    config.cache_dir = Some(cache);
    config.watch = true;
    let loader =
        Loader::new(Engine::new(Limits::from_env()?)?).with_cache_dir(config.cache_dir.as_deref());
    ensure!(
        loader.cache().is_some(),
        "bench-reload: the artifact cache did not open"
    );
    let reloader = Reloader::start(loader, Arc::new(Registry::new()), &plugins, config).await?;
    let mut events = reloader.subscribe();
    let mut phase = Landings::default();
    let mut warm_compilations = 0;
    for warm in [false, true] {
        let before = reloader.loader().counts().compiled;
        for round in 1..=rounds {
            let bytes = with_version(template, 1000 + round)?;
            let digest = Digest::of(&bytes);
            let took = land(&bytes, &staging, &plugins, || async {
                loop {
                    match events.recv().await? {
                        ReloadEvent {
                            outcome: FileOutcome::Applied(change),
                            ..
                        } if change.new_digest == Some(digest) => return Ok(()),
                        ReloadEvent {
                            outcome: FileOutcome::Rejected { error, .. },
                            ..
                        } => bail!("{error}"),
                        _ => {}
                    }
                }
            })
            .await
            .with_context(|| format!("swap phase, round {round}"))?;
            bar.inc(1);
            phase.record(warm, took);
        }
        if warm {
            warm_compilations = reloader.loader().counts().compiled - before;
        }
    }
    reloader.stop().await;
    Ok((phase, warm_compilations))
}

async fn serving_phase(
    db: &Database,
    options: &Options,
    template: &[u8],
    work: &Path,
    rounds: u32,
    bar: &ProgressBar,
) -> Result<Landings> {
    let (plugins, staging, cache) = dirs(work, "serve")?;
    std::fs::write(plugins.join("versioned.wasm"), with_version(template, 1)?)?;
    let mut child = ServeChild::start(
        &plugins,
        4,
        options.database_url.as_deref(),
        [("CAIRN_CACHE_DIR", &cache)],
    )?;
    let client = Client::new(db.pool().clone());
    let outcome = async {
        // Startup: the child connects, loads and registers.
        probe_until(&client, 1, Duration::from_secs(120), &mut child)
            .await
            .context("serving phase: waiting for `cairn serve` to start")?;
        let mut phase = Landings::default();
        for warm in [false, true] {
            for round in 1..=rounds {
                let version = 2000 + round;
                let bytes = with_version(template, version)?;
                let took = land(&bytes, &staging, &plugins, || {
                    probe_until(&client, version, ROUND_LIMIT, &mut child)
                })
                .await
                .with_context(|| format!("serving phase, round {round}"))?;
                bar.inc(1);
                phase.record(warm, took);
            }
        }
        Ok(phase)
    }
    .await;
    child.stop().await;
    outcome
}

/// Run `versioned:version` actions one at a time until one returns
/// `version`.
async fn probe_until(
    client: &Client,
    version: u32,
    limit: Duration,
    child: &mut ServeChild,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        child.check_running()?;
        ensure!(
            Instant::now() < deadline,
            "version {version} not serving after {limit:?}"
        );
        let id = client
            .enqueue(&EnqueueRequest::new("versioned", "version"))
            .await?;
        let row = client.wait(id, deadline - Instant::now()).await?;
        match row.status {
            ActionStatus::Succeeded => {
                let result = row.result.as_deref().unwrap_or_default();
                if result_version(result)? == version {
                    return Ok(());
                }
            }
            ActionStatus::Failed | ActionStatus::Cancelled => {
                bail!("probe action {id} {}", row.status)
            }
            _ => {} // not claimed in time: the deadline check ends it
        }
    }
}

/// The `u32` a `versioned` action returned.
pub fn result_version(payload: &[u8]) -> Result<u32> {
    let json = cairn_payload::json::payload_to_json(payload)
        .map_err(|e| anyhow!("unreadable result payload: {e}"))?;
    json["result"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| anyhow!("result is not a version number: {json}"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}
