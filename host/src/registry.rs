//! The action registry: `module:name` → the handler that runs it.
//!
//! Rules, which keep the registry unambiguous:
//! * registering a key that exists with the **same digest** is a no-op (the
//!   same plugin seen twice, e.g. a copied file);
//! * registering a key that exists with a **different digest** is an error
//!   naming both source files — two implementations of one action would make
//!   results depend on which host claimed the row;
//! * the same action name in two different modules is fine.
//!
//! [`Registry::register_plugin`] registers all of a plugin's actions or none.
//!
//! Hot reload goes through one per-file operation, [`Registry::replace_file`]:
//! under one write lock it removes every key the file owns and inserts the
//! new version's keys — or, if a new key is owned by **another file with a
//! different digest**, changes nothing. A key belongs to the file that
//! registered it first. [`Registry::remove_file`] is its removal half, which
//! cannot conflict. Every change is logged (file, keys, old and new digest)
//! and published to [`Registry::subscribe`]rs: the worker refreshes its
//! heartbeat and wakes the hosts from it.
//!
//! # Snapshots
//!
//! The registry is read on every claim and written on a reload, so it is kept
//! as an immutable [`Snapshot`] behind an `Arc`, replaced whole by each change
//! (copy on write). A reader takes the `Arc` — one atomic increment — and
//! keeps a consistent view for as long as it likes: the worker claims with one
//! snapshot and runs each claimed row on the handler from that same snapshot,
//! so a row runs on the version that was live when it was claimed, whatever a
//! reload does next. A snapshot carries a [`generation`](Snapshot::generation)
//! so derived data (the claim's arrays) is rebuilt only when it changes.

use crate::bindings::ActionInfo;
use crate::key::{short_or_dash, ActionKey, Digest};
use crate::plugin::{display_name, Plugin};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Changes kept for a slow subscriber before it starts missing some (it then
/// learns it lagged, and re-reads the whole registry).
const CHANGE_BACKLOG: usize = 256;

/// What runs one action: the plugin that provides it and its declaration.
#[derive(Debug)]
pub struct ActionHandler {
    /// The plugin, shared by all of its actions.
    pub plugin: Arc<Plugin>,
    /// The action as `describe` declared it.
    pub info: ActionInfo,
    /// `module:name`.
    pub key: ActionKey,
}

impl ActionHandler {
    /// The handler of `info`, one of `plugin`'s actions.
    pub fn new(plugin: Arc<Plugin>, info: ActionInfo) -> Self {
        let key = ActionKey::new(plugin.module.clone(), info.name.clone());
        ActionHandler { plugin, info, key }
    }
}

/// Registering would give one `module:name` two implementations. Returned
/// boxed: it is large (two file names, two digests) and rare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The contested key.
    pub key: ActionKey,
    /// The file already registered for it.
    pub existing_file: String,
    /// The existing digest.
    pub existing_digest: Digest,
    /// The file that tried to register it.
    pub new_file: String,
    /// The new digest.
    pub new_digest: Digest,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "action `{}` from `{}` (digest {}) conflicts with the one already registered from `{}` (digest {})",
            self.key,
            self.new_file,
            self.new_digest.short(),
            self.existing_file,
            self.existing_digest.short(),
        )
    }
}

impl std::error::Error for Conflict {}

/// What one [`Registry::replace_file`] or [`Registry::remove_file`] did to
/// the keys of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file.
    pub file: PathBuf,
    /// The digest of the version the file served before, if any.
    pub old_digest: Option<Digest>,
    /// The digest of the version it serves now, if any.
    pub new_digest: Option<Digest>,
    /// Keys that were not served before and now are.
    pub added: Vec<ActionKey>,
    /// Keys the file served before and serves now, from the new version.
    pub replaced: Vec<ActionKey>,
    /// Keys the file served before and no longer does.
    pub removed: Vec<ActionKey>,
    /// Keys the new version declares that another file serves with the same
    /// digest (an identical copy): that file keeps them.
    pub shared: Vec<ActionKey>,
    /// When the change happened (taken under the write lock): every claim
    /// snapshot taken after this sees the new version, none before.
    pub at: SystemTime,
}

impl Change {
    /// Whether the registry is unchanged (e.g. the file was not served and
    /// is removed, or every key is shared).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }

    /// What happened to the file's version.
    pub fn kind(&self) -> ChangeKind {
        match (&self.old_digest, &self.new_digest) {
            _ if self.is_empty() => ChangeKind::Unchanged,
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Removed,
            _ => ChangeKind::Replaced,
        }
    }

    /// The keys that became claimable (added or replaced).
    pub fn served(&self) -> impl Iterator<Item = &ActionKey> {
        self.added.iter().chain(&self.replaced)
    }
}

/// What a [`Change`] did to its file's version (metrics count these; logs
/// print them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A file started serving.
    Added,
    /// A new version replaced the one that served.
    Replaced,
    /// A file stopped serving.
    Removed,
    /// Nothing the registry serves changed.
    Unchanged,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "added",
            ChangeKind::Replaced => "replaced",
            ChangeKind::Removed => "removed",
            ChangeKind::Unchanged => "unchanged",
        })
    }
}

/// The registry at one moment. See the module docs.
#[derive(Debug, Default)]
pub struct Snapshot {
    actions: BTreeMap<ActionKey, Arc<ActionHandler>>,
    generation: u64,
}

impl Snapshot {
    /// The handler for `key`, if registered.
    pub fn get(&self, key: &ActionKey) -> Option<&Arc<ActionHandler>> {
        self.actions.get(key)
    }

    /// Every `(key, handler)`, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&ActionKey, &Arc<ActionHandler>)> {
        self.actions.iter()
    }

    /// Every registered key as `module:name`, sorted.
    pub fn names(&self) -> Vec<String> {
        self.actions.keys().map(ToString::to_string).collect()
    }

    /// How many actions are registered.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether no action is registered.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Increases with every change: equal generations mean equal contents.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Thread-safe map from `module:name` to handler. See the module docs.
#[derive(Debug)]
pub struct Registry {
    current: RwLock<Arc<Snapshot>>,
    changes: broadcast::Sender<Change>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            current: RwLock::default(),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current contents, consistent and unaffected by later changes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every change from now on (the ones [`replace_file`](Self::replace_file)
    /// and [`remove_file`](Self::remove_file) make and log).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Apply `edit` to a copy of the current map and publish it as the next
    /// snapshot, all under the write lock; `edit` may refuse (then nothing
    /// changes).
    fn update<T, E>(
        &self,
        edit: impl FnOnce(&mut BTreeMap<ActionKey, Arc<ActionHandler>>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut actions = current.actions.clone();
        let out = edit(&mut actions)?;
        *current = Arc::new(Snapshot {
            actions,
            generation: current.generation + 1,
        });
        Ok(out)
    }

    /// Register one action. See the module docs for the conflict rules.
    ///
    /// # Errors
    /// A [`Conflict`] when `module:name` is registered with another digest.
    pub fn register(
        &self,
        module: &str,
        name: &str,
        handler: Arc<ActionHandler>,
    ) -> Result<(), Box<Conflict>> {
        let key = ActionKey::new(module, name);
        self.update(|map| {
            check(map, &key, &handler)?;
            map.insert(key, handler);
            Ok(())
        })
    }

    /// Register every action of `plugin`, or none if any conflicts.
    ///
    /// # Errors
    /// The first [`Conflict`].
    pub fn register_plugin(&self, plugin: Arc<Plugin>) -> Result<(), Box<Conflict>> {
        let handlers = handlers_of(&plugin);
        self.update(|map| {
            for handler in &handlers {
                check(map, &handler.key, handler)?;
            }
            for handler in handlers {
                map.insert(handler.key.clone(), handler);
            }
            Ok(())
        })
    }

    /// Make `file`'s keys exactly those of `plugin` (loaded from `file`),
    /// atomically: under one write lock, remove every key the file owns and
    /// insert the new version's. A new key owned by another file with the
    /// same digest (an identical copy) stays with that file and is reported
    /// as [`Change::shared`]. Logs and publishes the change.
    ///
    /// # Errors
    /// A [`Conflict`] when a new key is owned by another file with another
    /// digest; then nothing changes and the file's previous version (if any)
    /// keeps serving.
    pub fn replace_file(&self, file: &Path, plugin: Arc<Plugin>) -> Result<Change, Box<Conflict>> {
        debug_assert!(
            plugin.file == file,
            "a plugin is registered under the file it was loaded from"
        );
        let handlers = handlers_of(&plugin);
        let change = self.update(|map| {
            let mut shared = Vec::new();
            for handler in &handlers {
                if map.get(&handler.key).is_some_and(|e| e.plugin.file != file) {
                    check(map, &handler.key, handler)?;
                    shared.push(handler.key.clone());
                }
            }
            let mut change = take_file(map, file);
            change.new_digest = Some(plugin.digest);
            for handler in handlers {
                if shared.contains(&handler.key) {
                    continue;
                }
                match change.removed.iter().position(|k| *k == handler.key) {
                    Some(i) => change.replaced.push(change.removed.remove(i)),
                    None => change.added.push(handler.key.clone()),
                }
                map.insert(handler.key.clone(), handler);
            }
            change.shared = shared;
            Ok::<_, Box<Conflict>>(change)
        })?;
        self.publish(&change);
        Ok(change)
    }

    /// Unregister every key `file` owns. Logs and publishes the change.
    pub fn remove_file(&self, file: &Path) -> Change {
        let Ok(change) = self.update(|map| Ok::<_, std::convert::Infallible>(take_file(map, file)));
        self.publish(&change);
        change
    }

    /// Log a change and send it to subscribers (none, in a one-shot
    /// command, is fine).
    fn publish(&self, change: &Change) {
        if change.is_empty() {
            return;
        }
        let keys = |keys: &[ActionKey]| keys.iter().map(ToString::to_string).collect::<Vec<_>>();
        tracing::info!(
            file = %display_name(&change.file),
            old_digest = %short_or_dash(change.old_digest.as_ref()),
            new_digest = %short_or_dash(change.new_digest.as_ref()),
            added = ?keys(&change.added),
            replaced = ?keys(&change.replaced),
            removed = ?keys(&change.removed),
            shared = ?keys(&change.shared),
            "registry: plugin {}",
            change.kind()
        );
        let _ = self.changes.send(change.clone());
    }

    /// The handler for `module:name`, if registered.
    pub fn get(&self, module: &str, name: &str) -> Option<Arc<ActionHandler>> {
        self.snapshot().get(&ActionKey::new(module, name)).cloned()
    }

    /// Every registered key as `module:name`, sorted.
    pub fn names(&self) -> Vec<String> {
        self.snapshot().names()
    }

    /// Every `(module:name, handler)`, sorted by key.
    pub fn entries(&self) -> Vec<(String, Arc<ActionHandler>)> {
        self.snapshot()
            .iter()
            .map(|(k, h)| (k.to_string(), h.clone()))
            .collect()
    }

    /// Remove everything.
    pub fn reset(&self) {
        let Ok(()) = self.update(|map| {
            map.clear();
            Ok::<_, std::convert::Infallible>(())
        });
    }
}

/// Remove every key `file` owns from `map`: a [`Change`] with those keys as
/// `removed` (the caller moves re-inserted ones to `replaced`).
fn take_file(map: &mut BTreeMap<ActionKey, Arc<ActionHandler>>, file: &Path) -> Change {
    let owned: Vec<ActionKey> = map
        .iter()
        .filter(|(_, h)| h.plugin.file == file)
        .map(|(k, _)| k.clone())
        .collect();
    let old_digest = owned
        .first()
        .and_then(|k| map.get(k))
        .map(|h| h.plugin.digest);
    for key in &owned {
        map.remove(key);
    }
    Change {
        file: file.to_owned(),
        old_digest,
        new_digest: None,
        added: Vec::new(),
        replaced: Vec::new(),
        removed: owned,
        shared: Vec::new(),
        at: SystemTime::now(),
    }
}

/// One handler per action of `plugin`.
fn handlers_of(plugin: &Arc<Plugin>) -> Vec<Arc<ActionHandler>> {
    plugin
        .actions
        .iter()
        .map(|info| Arc::new(ActionHandler::new(plugin.clone(), info.clone())))
        .collect()
}

/// Refuse `handler` for `key` if another digest serves it.
fn check(
    map: &BTreeMap<ActionKey, Arc<ActionHandler>>,
    key: &ActionKey,
    handler: &ActionHandler,
) -> Result<(), Box<Conflict>> {
    match map.get(key) {
        Some(existing) if existing.plugin.digest != handler.plugin.digest => {
            Err(Box::new(Conflict {
                key: key.clone(),
                existing_file: display_name(&existing.plugin.file),
                existing_digest: existing.plugin.digest,
                new_file: display_name(&handler.plugin.file),
                new_digest: handler.plugin.digest,
            }))
        }
        _ => Ok(()),
    }
}
