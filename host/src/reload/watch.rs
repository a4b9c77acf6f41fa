//! The watch loop: inotify events → per-path debounce → stable read →
//! [`Inner::handle`](super::Inner).
//!
//! Strategy. `notify` calls back on its own thread; the callback only
//! forwards events into a channel. One async loop owns a map of pending
//! paths, each with the time it becomes due (its last event plus the quiet
//! period for that kind of event) and how it last arrived. When paths fall
//! due the loop handles them one after another — a load is awaited in the
//! loop, so the per-file state needs no further locking discipline and
//! events that arrive meanwhile simply wait in the channel.
//!
//! Which events count: creation, data and metadata changes, close after
//! write, removal and renames of `*.wasm` files directly in the directory.
//! Opens and reads are ignored (the reloader's own reads would otherwise
//! trigger it). A queue overflow, or any watcher error, rescans the
//! directory; so does a timer (see [`ReloadConfig::rescan_every`]).
//!
//! Failure modes: a path that does not settle within [`MAX_SETTLE_READS`]
//! reads is put back as pending (its writer is still at work and will send
//! more events); a read error rejects the file (phase `read`) and keeps its
//! previous version serving.
//!
//! [`ReloadConfig::rescan_every`]: super::ReloadConfig::rescan_every

use super::Inner;
use crate::plugin::is_plugin_file;
use anyhow::Result;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Reads of one file that may find it changed before it is put back as
/// pending: a writer that keeps going for this many settle intervals will
/// send events again anyway.
const MAX_SETTLE_READS: usize = 5;

/// How a path came to need handling; decides its quiet period and whether
/// its content must settle after the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Renamed into the directory: complete by construction.
    Renamed,
    /// Created, written, touched, or found changed by a rescan.
    Written,
    /// Removed or renamed away (handled as "is it there?").
    Gone,
    /// Found by the initial scan.
    Startup,
}

/// What reading a file found.
pub(super) enum Read {
    /// Its bytes, stable, and its stat.
    Bytes(Vec<u8>, Stat),
    /// It is not there (or is not a regular file).
    Gone,
    /// It kept changing while read.
    Unsettled,
    /// It could not be read (one line).
    Failed(String),
}

/// The identity of a file's content as far as the file system tells it
/// cheaply: if none of these changed, neither did the bytes (barring a
/// writer that restores the mtime, which the digest would still catch on
/// the next event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stat {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Time since the last modification (zero if it is in the future).
    fn age(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Duration::from_nanos(u64::try_from(now - self.mtime_ns).unwrap_or(0))
    }
}

/// A running `notify` watcher and the channel its events arrive on.
pub(super) struct Watcher {
    // Dropping the watcher stops its thread.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<Event>>,
}

impl Watcher {
    /// Watch `dir` (not recursive).
    pub(super) fn start(dir: &Path) -> Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(Watcher {
            _watcher: watcher,
            events,
        })
    }
}

/// A path waiting for its quiet period to end.
struct Pending {
    due: Instant,
    arrival: Arrival,
}

/// Run until `stop`: debounce events, handle paths as they fall due.
/// `unsettled` are files the initial scan found still changing.
pub(super) async fn run(
    inner: Arc<Inner>,
    mut watcher: Watcher,
    unsettled: Vec<PathBuf>,
    mut stop: oneshot::Receiver<()>,
) {
    let config = inner.config.clone();
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    let now = Instant::now();
    for path in unsettled {
        pending.insert(
            path,
            Pending {
                due: now + config.quiet,
                arrival: Arrival::Written,
            },
        );
    }
    let rescan_every = config
        .rescan_every
        .unwrap_or(Duration::from_secs(86_400 * 365));
    let mut rescan = tokio::time::interval_at(now + rescan_every, rescan_every);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Once the watcher's channel closes, stop waiting on it (a closed
    // channel would wake the loop at once, forever) and rely on rescans.
    let mut watching = true;
    loop {
        let next_due = pending.values().map(|p| p.due).min();
        tokio::select! {
            _ = &mut stop => return,
            event = watcher.events.recv(), if watching => match event {
                Some(event) => {
                    note(&inner, &mut pending, event);
                    // Take everything already queued before sleeping again.
                    while let Ok(event) = watcher.events.try_recv() {
                        note(&inner, &mut pending, event);
                    }
                }
                None => {
                    tracing::error!(
                        dir = %inner.dir.display(),
                        "plugin directory watcher stopped; only rescans will notice changes"
                    );
                    watching = false;
                }
            },
            _ = sleep_until(next_due), if next_due.is_some() => {
                handle_due(&inner, &mut pending, config.quiet).await;
            }
            _ = rescan.tick() => rescan_dir(&inner, &mut pending).await,
        }
    }
}

/// Handle every pending path whose quiet period is over, in name order; a
/// file still being written goes back to waiting for another `quiet`.
async fn handle_due(inner: &Inner, pending: &mut HashMap<PathBuf, Pending>, quiet: Duration) {
    let now = Instant::now();
    let mut due: Vec<(PathBuf, Arrival)> = pending
        .iter()
        .filter(|(_, p)| p.due <= now)
        .map(|(path, p)| (path.clone(), p.arrival))
        .collect();
    due.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, arrival) in due {
        pending.remove(&path);
        if !inner.handle(&path, arrival).await {
            tracing::debug!(
                file = %path.display(),
                "plugin file still changing; waiting for it to settle"
            );
            let waiting = Pending {
                due: Instant::now() + quiet,
                arrival: Arrival::Written,
            };
            pending.insert(path, waiting);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Record one watcher event in `pending`.
fn note(inner: &Inner, pending: &mut HashMap<PathBuf, Pending>, event: notify::Result<Event>) {
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(dir = %inner.dir.display(), "plugin directory watcher: {err}; rescanning");
            mark_all(inner, pending);
            return;
        }
    };
    if event.need_rescan() {
        tracing::warn!(dir = %inner.dir.display(), "plugin directory events were lost (queue overflow); rescanning");
        mark_all(inner, pending);
        return;
    }
    let kinds: Vec<(PathBuf, Arrival)> = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => written(&event.paths),
        EventKind::Access(_) => return, // opens and reads, ours included
        EventKind::Create(_) => written(&event.paths),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => renamed(&event.paths),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => gone(&event.paths),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            let mut kinds = gone(&event.paths[..1.min(event.paths.len())]);
            kinds.extend(renamed(event.paths.get(1..).unwrap_or_default()));
            kinds
        }
        EventKind::Modify(_) => written(&event.paths),
        EventKind::Remove(_) => {
            if event.paths.iter().any(|p| p == &inner.dir) {
                tracing::error!(dir = %inner.dir.display(), "plugin directory was removed: keeping the loaded plugins; changes are no longer seen");
            }
            gone(&event.paths)
        }
        EventKind::Any | EventKind::Other => written(&event.paths),
    };
    for (path, arrival) in kinds {
        if path.parent() != Some(inner.dir.as_path()) || !is_plugin_file(&path) {
            continue;
        }
        let quiet = match arrival {
            Arrival::Written => inner.config.quiet,
            _ => inner.config.rename_quiet,
        };
        let due = Instant::now() + quiet;
        pending
            .entry(path)
            .and_modify(|p| {
                // Written after it arrived: it must settle like any write.
                // Replaced by a rename: complete again. Gone: check it is.
                p.due = p.due.max(due);
                p.arrival = arrival;
            })
            .or_insert(Pending { due, arrival });
    }
}

fn written(paths: &[PathBuf]) -> Vec<(PathBuf, Arrival)> {
    paths
        .iter()
        .map(|p| (p.clone(), Arrival::Written))
        .collect()
}

fn renamed(paths: &[PathBuf]) -> Vec<(PathBuf, Arrival)> {
    paths
        .iter()
        .map(|p| (p.clone(), Arrival::Renamed))
        .collect()
}

fn gone(paths: &[PathBuf]) -> Vec<(PathBuf, Arrival)> {
    paths.iter().map(|p| (p.clone(), Arrival::Gone)).collect()
}

/// Every known and present plugin file becomes pending (after lost events).
fn mark_all(inner: &Inner, pending: &mut HashMap<PathBuf, Pending>) {
    let due = Instant::now() + inner.config.quiet;
    let mut paths: Vec<PathBuf> = inner.known_stats().into_keys().collect();
    if let Ok(entries) = std::fs::read_dir(&inner.dir) {
        paths.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_plugin_file(p)),
        );
    }
    for path in paths {
        pending.entry(path).or_insert(Pending {
            due,
            arrival: Arrival::Written,
        });
    }
}

/// The periodic safety net: files whose stat differs from the one last read
/// (or that are new, or gone) become pending. The digest still decides
/// whether anything reloads.
async fn rescan_dir(inner: &Inner, pending: &mut HashMap<PathBuf, Pending>) {
    let mut known = inner.known_stats();
    let files = match crate::plugin::wasm_files(&inner.dir).await {
        Ok(files) => files,
        Err(err) => {
            tracing::warn!("rescan: {err:#}");
            return;
        }
    };
    let due = Instant::now() + inner.config.quiet;
    for path in files {
        let stat = std::fs::symlink_metadata(&path).ok().map(|m| Stat::of(&m));
        let last = known.remove(&path).flatten();
        if stat.is_none() || stat != last {
            pending.entry(path).or_insert(Pending {
                due,
                arrival: Arrival::Written,
            });
        }
    }
    for (path, _) in known {
        pending.entry(path).or_insert(Pending {
            due,
            arrival: Arrival::Gone,
        });
    }
}

/// Read `path` once its content is stable. See the module docs of
/// [`super`] for the rule.
pub(super) async fn read_stable(path: &Path, arrival: Arrival, settle: Duration) -> Read {
    for _ in 0..MAX_SETTLE_READS {
        let before = match stat(path).await {
            Ok(Some(stat)) => stat,
            Ok(None) => return Read::Gone,
            Err(e) => return Read::Failed(e),
        };
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Gone,
            Err(e) => return Read::Failed(e.to_string()),
        };
        let must_settle = match arrival {
            Arrival::Renamed => false,
            // An old file found at start is done; a fresh one may not be.
            Arrival::Startup => before.age() < settle,
            Arrival::Written | Arrival::Gone => true,
        };
        if must_settle {
            tokio::time::sleep(settle).await;
        }
        match stat(path).await {
            Ok(Some(after)) if after == before && after.len == bytes.len() as u64 => {
                return Read::Bytes(bytes, after)
            }
            Ok(Some(_)) => continue, // changed meanwhile: read it again
            Ok(None) => return Read::Gone,
            Err(e) => return Read::Failed(e),
        }
    }
    Read::Unsettled
}

/// The file's stat; `None` if it is missing or not a regular file (a
/// symlink included: the directory loader skips those too).
async fn stat(path: &Path) -> Result<Option<Stat>, String> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.is_file() => Ok(Some(Stat::of(&meta))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
