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

use crate::bindings::ActionInfo;
use crate::plugin::{display_name, Plugin};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

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
