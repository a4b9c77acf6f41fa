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
//! Readers take a snapshot (`Arc` handlers), so a call that already looked
//! up its handler finishes on it even if the registry changes meanwhile.
//!
//! Hot reload goes through one per-file operation, [`Registry::replace_file`]:
//! under one write lock it removes every key the file owns and inserts the
//! new version's keys — or, if a new key is owned by **another file with a
//! different digest**, changes nothing. A key belongs to the file that
//! registered it first; a reader sees the old version or the new one, never
//! a mix. Every change it makes is logged (file, keys, old and new digest).

use crate::bindings::ActionInfo;
use crate::plugin::{display_name, Plugin};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// What runs one action: the plugin that provides it and its declaration.
#[derive(Debug)]
pub struct ActionHandler {
    /// The plugin, shared by all of its actions.
    pub plugin: Arc<Plugin>,
    /// The action as `describe` declared it.
    pub info: ActionInfo,
}

impl ActionHandler {
    /// `module:name`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.plugin.module, self.info.name)
    }
}

/// Registering would give one `module:name` two implementations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The contested `module:name`.
    pub key: String,
    /// The file already registered for it, and its digest.
    pub existing_file: String,
    /// The existing digest.
    pub existing_digest: String,
    /// The file that tried to register it, and its digest.
    pub new_file: String,
    /// The new digest.
    pub new_digest: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "action `{}` from `{}` (digest {}) conflicts with the one already registered from `{}` (digest {})",
            self.key,
            self.new_file,
            &self.new_digest[..12.min(self.new_digest.len())],
            self.existing_file,
            &self.existing_digest[..12.min(self.existing_digest.len())],
        )
    }
}

impl std::error::Error for Conflict {}

/// What one [`Registry::replace_file`] did to the keys of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file.
    pub file: PathBuf,
    /// The digest of the version the file served before, if any.
    pub old_digest: Option<String>,
    /// The digest of the version it serves now, if any.
    pub new_digest: Option<String>,
    /// Keys that were not served before and now are.
    pub added: Vec<String>,
    /// Keys the file served before and serves now, from the new version.
    pub replaced: Vec<String>,
    /// Keys the file served before and no longer does.
    pub removed: Vec<String>,
    /// Keys the new version declares that another file serves with the same
    /// digest (an identical copy): that file keeps them.
    pub shared: Vec<String>,
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

    /// `added`, `replaced`, `removed` or `unchanged`, for logs.
    pub fn kind(&self) -> &'static str {
        match (&self.old_digest, &self.new_digest) {
            _ if self.is_empty() => "unchanged",
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            _ => "replaced",
        }
    }
}

/// Thread-safe map from `(module, name)` to handler.
#[derive(Debug, Default)]
pub struct Registry {
    actions: RwLock<BTreeMap<(String, String), Arc<ActionHandler>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
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
    ) -> Result<(), Conflict> {
        let mut map = self.actions.write().unwrap_or_else(|p| p.into_inner());
        Self::check(&map, module, name, &handler)?;
        map.insert((module.to_owned(), name.to_owned()), handler);
        Ok(())
    }

    /// Register every action of `plugin`, or none if any conflicts.
    ///
    /// # Errors
    /// The first [`Conflict`].
    pub fn register_plugin(&self, plugin: Arc<Plugin>) -> Result<(), Conflict> {
        let handlers: Vec<_> = plugin
            .actions
            .iter()
            .map(|info| {
                Arc::new(ActionHandler {
                    plugin: plugin.clone(),
                    info: info.clone(),
                })
            })
            .collect();
        let mut map = self.actions.write().unwrap_or_else(|p| p.into_inner());
        for handler in &handlers {
            Self::check(&map, &plugin.module, &handler.info.name, handler)?;
        }
        for handler in handlers {
            map.insert((plugin.module.clone(), handler.info.name.clone()), handler);
        }
        Ok(())
    }

    fn check(
        map: &BTreeMap<(String, String), Arc<ActionHandler>>,
        module: &str,
        name: &str,
        handler: &ActionHandler,
    ) -> Result<(), Conflict> {
        match map.get(&(module.to_owned(), name.to_owned())) {
            Some(existing) if existing.plugin.digest != handler.plugin.digest => Err(Conflict {
                key: format!("{module}:{name}"),
                existing_file: display_name(&existing.plugin.file),
                existing_digest: existing.plugin.digest.clone(),
                new_file: display_name(&handler.plugin.file),
                new_digest: handler.plugin.digest.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Make `file`'s keys exactly those of `plugin` (loaded from `file`;
    /// `None`: remove them),
    /// atomically: under one write lock, remove every key the file owns and
    /// insert the new version's. A new key owned by another file with the
    /// same digest (an identical copy) stays with that file and is reported
    /// as [`Change::shared`]. Logs the change (`tracing::info!`).
    ///
    /// # Errors
    /// A [`Conflict`] when a new key is owned by another file with another
    /// digest; then nothing changes and the file's previous version (if any)
    /// keeps serving.
    pub fn replace_file(
        &self,
        file: &Path,
        plugin: Option<Arc<Plugin>>,
    ) -> Result<Change, Conflict> {
        debug_assert!(
            plugin.as_ref().is_none_or(|p| p.file == file),
            "a plugin is registered under the file it was loaded from"
        );
        let handlers: Vec<Arc<ActionHandler>> = plugin
            .iter()
            .flat_map(|plugin| {
                plugin.actions.iter().map(move |info| {
                    Arc::new(ActionHandler {
                        plugin: plugin.clone(),
                        info: info.clone(),
                    })
                })
            })
            .collect();
        let mut map = self.actions.write().unwrap_or_else(|p| p.into_inner());
        let mut shared = Vec::new();
        for handler in &handlers {
            let key = (handler.plugin.module.clone(), handler.info.name.clone());
            if map.get(&key).is_some_and(|e| e.plugin.file != file) {
                Self::check(&map, &key.0, &key.1, handler)?;
                shared.push(key);
            }
        }
        let owned: Vec<(String, String)> = map
            .iter()
            .filter(|(_, h)| h.plugin.file == file)
            .map(|(k, _)| k.clone())
            .collect();
        let old_digest = owned
            .first()
            .and_then(|k| map.get(k))
            .map(|h| h.plugin.digest.clone());
        for key in &owned {
            map.remove(key);
        }
        let mut added = Vec::new();
        let mut replaced = Vec::new();
        for handler in handlers {
            let key = (handler.plugin.module.clone(), handler.info.name.clone());
            if shared.contains(&key) {
                continue;
            }
            if owned.contains(&key) {
                replaced.push(key.clone());
            } else {
                added.push(key.clone());
            }
            map.insert(key, handler);
        }
        let at = SystemTime::now();
        drop(map);

        let fmt_key = |(m, n): &(String, String)| format!("{m}:{n}");
        let removed: Vec<String> = owned
            .iter()
            .filter(|k| !replaced.contains(k))
            .map(fmt_key)
            .collect();
        let change = Change {
            file: file.to_owned(),
            old_digest,
            new_digest: plugin.as_ref().map(|p| p.digest.clone()),
            added: added.iter().map(fmt_key).collect(),
            replaced: replaced.iter().map(fmt_key).collect(),
            removed,
            shared: shared.iter().map(fmt_key).collect(),
            at,
        };
        if !change.is_empty() {
            let short = |d: &Option<String>| {
                d.as_deref()
                    .map_or_else(|| "-".to_owned(), |d| d[..12.min(d.len())].to_owned())
            };
            tracing::info!(
                file = %display_name(file),
                old_digest = %short(&change.old_digest),
                new_digest = %short(&change.new_digest),
                added = ?change.added,
                replaced = ?change.replaced,
                removed = ?change.removed,
                shared = ?change.shared,
                "registry: plugin {}",
                change.kind()
            );
        }
        Ok(change)
    }

    /// The handler for `module:name`, if registered.
    pub fn get(&self, module: &str, name: &str) -> Option<Arc<ActionHandler>> {
        let map = self.actions.read().unwrap_or_else(|p| p.into_inner());
        map.get(&(module.to_owned(), name.to_owned())).cloned()
    }

    /// Every registered key as `module:name`, sorted.
    pub fn names(&self) -> Vec<String> {
        let map = self.actions.read().unwrap_or_else(|p| p.into_inner());
        map.keys().map(|(m, n)| format!("{m}:{n}")).collect()
    }

    /// Every `(module:name, handler)`, sorted by key.
    pub fn entries(&self) -> Vec<(String, Arc<ActionHandler>)> {
        let map = self.actions.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((m, n), h)| (format!("{m}:{n}"), h.clone()))
            .collect()
    }

    /// Remove everything.
    pub fn reset(&self) {
        self.actions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
