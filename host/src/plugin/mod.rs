//! Load a plugin file: validate, compile once, link, describe.
//!
//! Strategy, by phase (every error names the file and the phase):
//! 1. **read** the file and take its SHA-256 digest (the plugin's identity);
//! 2. **validate** the bytes: a WebAssembly *component* (a core module gets a
//!    hint about `wasm32-wasip2`), that exports `cairn:plugin/plugin@0.1.x`
//!    and imports only what this host provides — WASI p2 and the
//!    dependencies in [`crate::deps`]. Anything else is refused naming the
//!    offending import;
//! 3. **compile** with the shared engine, once (off the async executor) —
//!    or, with a [`Loader`] that has an [`ArtifactCache`] ([`cache`], beside
//!    the loader because loading is on the data path), load the artifact
//!    this host compiled earlier for the same digest and engine;
//! 4. **describe**: link WASI (denying) and the imported dependencies
//!    *inert* (no settings, no database, no allowed hosts: nothing to read,
//!    nothing reachable), call `describe` in a throwaway instance under the
//!    sandbox limits, and check the answer (non-empty module, unique action
//!    names, no `:` in names). Grants are keyed by module, which only
//!    `describe` reveals;
//! 5. **link** (grant check): every imported dependency must be granted to
//!    the module in `cairn.toml`, else the plugin is refused with the config
//!    key that would grant it; then link WASI plus exactly the imported,
//!    granted dependencies and keep the resulting `InstancePre`.
//!
//! A loader handles one file. A directory is loaded by the reloader
//! ([`crate::reload`]) — for `cairn serve`, and with watching off for `cairn
//! plugins` and `cairn invoke` — so that one set of ownership rules decides
//! which file serves an action; a bad file never affects the others.

pub mod cache;

use crate::bindings::{ActionInfo, PluginInfo, PluginWorldPre};
use crate::deps;
use crate::engine::Engine;
use crate::error::one_line;
use crate::key::Digest;
use crate::sandbox::{self, Invocation};
use crate::settings::Settings;
use crate::store::HostState;
use crate::store::PluginDeps;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};

pub use cache::ArtifactCache;

/// The cairn interface every plugin must export.
pub const PLUGIN_EXPORT: &str = "cairn:plugin/plugin";

/// WASI p2 packages whose interfaces are always linked (with a denying
/// context). Rust's standard library makes every guest import some of them.
const WASI_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// A loaded, validated, compiled plugin, ready to instantiate per call.
pub struct Plugin {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file's bytes: its identity for conflicts and caching.
    pub digest: Digest,
    /// The module its actions live in, as `describe` said.
    pub module: String,
    /// The actions it provides, as `describe` said.
    pub actions: Vec<ActionInfo>,
    /// Every import of the component (WASI and cairn), in order.
    pub imports: Vec<String>,
    pub(crate) pre: PluginWorldPre<HostState>,
    /// Its settings from `cairn.toml` and the database, for its
    /// dependencies. `Debug` of the settings redacts secrets.
    pub(crate) deps: Arc<PluginDeps>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("file", &self.file)
            .field("digest", &self.digest)
            .field("module", &self.module)
            .field(
                "actions",
                &self.actions.iter().map(|a| &a.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Plugin {
    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        display_name(&self.file)
    }

    /// The `cairn:plugin` dependencies this plugin imports, by short name.
    pub fn dependencies(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for dep in self.imports.iter().filter_map(|i| deps::find(i)) {
            if !names.contains(&dep.name) {
                names.push(dep.name);
            }
        }
        names
    }

    /// Each imported dependency with whether the operator granted it to
    /// this plugin, e.g. `[("log", true), ("kv", true)]`. A loaded plugin has
    /// every import granted (else it is refused); the listing shows it.
    pub fn grants(&self) -> Vec<(&'static str, bool)> {
        self.dependencies()
            .into_iter()
            .map(|d| (d, self.deps.settings.grants(d)))
            .collect()
    }

    /// Run one action in a fresh sandboxed instance. See [`crate::sandbox`].
    ///
    /// # Errors
    /// A [`sandbox::Failure`] (with its error payload) for every way the call
    /// can fail.
    pub async fn invoke(
        &self,
        engine: &Engine,
        action: &str,
        args: Vec<u8>,
        invocation: &Invocation,
    ) -> Result<Vec<u8>, sandbox::Failure> {
        let declared = self
            .actions
            .iter()
            .find(|a| a.name == action)
            .and_then(|a| a.timeout_ms)
            .map(std::time::Duration::from_millis);
        sandbox::invoke(
            engine,
            &self.pre,
            &self.deps,
            &self.module,
            action,
            declared,
            args,
            invocation,
        )
        .await
    }
}

/// The phase of loading that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPhase {
    /// Reading the file.
    Read,
    /// Checking the bytes, exports and imports.
    Validate,
    /// Compiling with wasmtime.
    Compile,
    /// Linking imports.
    Link,
    /// Calling and checking `describe`.
    Describe,
    /// Registering its actions.
    Register,
}

impl fmt::Display for LoadPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadPhase::Read => "read",
            LoadPhase::Validate => "validate",
            LoadPhase::Compile => "compile",
            LoadPhase::Link => "link",
            LoadPhase::Describe => "describe",
            LoadPhase::Register => "register",
        })
    }
}

/// A plugin file that was refused, and why. Displays as one line.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// Where loading stopped.
    pub phase: LoadPhase,
    /// Why, in one line.
    pub message: String,
}

impl LoadError {
    pub(crate) fn new(file: &Path, phase: LoadPhase, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_owned(),
            phase,
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin `{}` rejected ({}): {}",
            display_name(&self.file),
            self.phase,
            self.message
        )
    }
}

impl std::error::Error for LoadError {}

/// Load one plugin file. See the module docs for the phases. Compiles
/// without a cache; use a [`Loader`] to cache and count compilations.
///
/// # Errors
/// A [`LoadError`] naming the file, the phase and the reason.
pub async fn load_file(engine: &Engine, path: &Path) -> Result<Plugin, LoadError> {
    Loader::new(engine.clone()).load_file(path).await
}

/// Load a plugin from bytes; `path` is used for messages and listings.
///
/// # Errors
/// As [`load_file`].
pub async fn load_bytes(engine: &Engine, path: &Path, bytes: Vec<u8>) -> Result<Plugin, LoadError> {
    Loader::new(engine.clone()).load_bytes(path, bytes).await
}

/// How many times a [`Loader`] compiled, and how its cache did. Tests and
/// the reload benchmark read it to tell a cold load from a warm one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadCounts {
    /// Components compiled with Cranelift.
    pub compiled: u64,
    /// Components loaded from the artifact cache instead.
    pub cache_hits: u64,
    /// Cache entries that could not be loaded, deleted and recompiled.
    pub cache_discarded: u64,
}

/// The counters behind [`LoadCounts`], shared with the compile tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) compiled: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_discarded: AtomicU64,
}

/// Loads plugins on one engine, optionally through an on-disk
/// [`ArtifactCache`], and counts compilations. Cheap to clone (clones share
/// the cache and the counters). `cairn serve` uses one with a cache so a
/// restart (or a reload of a version it has seen) does not compile again;
/// the free functions [`load_file`]/[`load_bytes`] use one without.
#[derive(Clone)]
pub struct Loader {
    engine: Engine,
    cache: Option<Arc<ArtifactCache>>,
    counters: Arc<Counters>,
    settings: Arc<Settings>,
    pool: Option<sqlx::PgPool>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("cache", &self.cache)
            .field("counts", &self.counts())
            .finish()
    }
}

impl Loader {
    /// A loader that always compiles.
    pub fn new(engine: Engine) -> Self {
        Loader {
            engine,
            cache: None,
            counters: Arc::default(),
            settings: Arc::default(),
            pool: None,
        }
    }

    /// The same loader, granting dependencies and applying per-plugin
    /// settings from `settings` (without it: only `log` and `context`).
    pub fn with_settings(mut self, settings: Arc<Settings>) -> Self {
        self.settings = settings;
        self
    }

    /// The same loader, giving plugins' `kv` and `enqueue` this database
    /// (without it they return an error saying there is none).
    pub fn with_pool(mut self, pool: sqlx::PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The same loader, loading and storing compiled artifacts in `cache`
    /// (which must have been opened for this engine).
    pub fn with_cache(mut self, cache: ArtifactCache) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// The same loader with the artifact cache under `root` (`None`: none),
    /// opened for this engine. A cache that cannot be used (see
    /// [`ArtifactCache::open`]) is logged and the loader compiles without
    /// one: a slower start, never a refusal to start.
    pub fn with_cache_dir(self, root: Option<&Path>) -> Self {
        let Some(root) = root else {
            return self;
        };
        match ArtifactCache::open(root, self.engine.wasmtime()) {
            Ok(cache) => {
                tracing::debug!(dir = %cache.dir().display(), "artifact cache");
                self.with_cache(cache)
            }
            Err(err) => {
                tracing::warn!("{err:#}; compiling every plugin without a cache");
                self
            }
        }
    }

    /// The engine plugins are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The artifact cache, if any.
    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_deref()
    }

    /// Compilations and cache use so far.
    pub fn counts(&self) -> LoadCounts {
        LoadCounts {
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            cache_hits: self.counters.cache_hits.load(Ordering::Relaxed),
            cache_discarded: self.counters.cache_discarded.load(Ordering::Relaxed),
        }
    }

    /// Load one plugin file. See the module docs for the phases.
    ///
    /// # Errors
    /// A [`LoadError`] naming the file, the phase and the reason.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| LoadError::new(path, LoadPhase::Read, e.to_string()))?;
        self.load_bytes(path, bytes).await
    }

    /// Load a plugin from bytes; `path` is used for messages and listings.
    ///
    /// # Errors
    /// As [`Loader::load_file`].
    pub async fn load_bytes(&self, path: &Path, bytes: Vec<u8>) -> Result<Plugin, LoadError> {
        let engine = &self.engine;
        let digest = Digest::of(&bytes);
        check_header(&bytes).map_err(|m| LoadError::new(path, LoadPhase::Validate, m))?;

        let wasmtime = engine.wasmtime().clone();
        let cache = self.cache.clone();
        let counters = self.counters.clone();
        let component = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache.load_or_compile(&wasmtime, &digest, &bytes, &counters),
            None => {
                counters.compiled.fetch_add(1, Ordering::Relaxed);
                Component::new(&wasmtime, &bytes)
            }
        })
        .await
        .map_err(|e| LoadError::new(path, LoadPhase::Compile, e.to_string()))?
        .map_err(|e| LoadError::new(path, LoadPhase::Compile, one_line(&e)))?;

        let imports = check_imports_exports(engine, &component)
            .map_err(|m| LoadError::new(path, LoadPhase::Validate, m))?;

        // Describe before the grant check (grants are keyed by the module,
        // which only `describe` reveals), with every imported dependency
        // linked but inert: the describe store has no settings, no
        // database and no allowed hosts, so `config` finds nothing, `kv`
        // and `enqueue` fail and `http` is denied. (Trap stubs would do too,
        // but wasmtime's `define_unknown_imports_as_traps` shadows
        // semver-matched WASI imports with new resource types.)
        let link_err = |e: wasmtime::Error| LoadError::new(path, LoadPhase::Link, one_line(&e));
        let pre = base_linker(engine, path, &imports, |_| true)?
            .instantiate_pre(&component)
            .and_then(PluginWorldPre::new)
            .map_err(link_err)?;
        let info = describe(engine, &pre, path).await?;

        let settings = self.settings.plugin(&info.module);
        for import in &imports {
            if let Some(dep) = deps::find(import) {
                if !settings.grants(dep.name) {
                    return Err(LoadError::new(
                        path,
                        LoadPhase::Link,
                        format!(
                            "plugin `{module}` ({file}) imports `{interface}`, which is not granted: add \"{name}\" to plugins.{module}.grants in cairn.toml",
                            module = info.module,
                            file = display_name(path),
                            interface = interface_of(import),
                            name = dep.name,
                        ),
                    ));
                }
            }
        }
        let linker = base_linker(engine, path, &imports, |d| settings.grants(d))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PluginWorldPre::new)
            .map_err(link_err)?;
        let deps = Arc::new(PluginDeps {
            module: info.module.clone(),
            settings,
            pool: self.pool.clone(),
        });
        Ok(Plugin {
            file: path.to_owned(),
            digest,
            module: info.module,
            actions: info.actions,
            imports,
            pre,
            deps,
        })
    }
}

/// A linker with WASI (denying) and every dependency in `imports` that
/// `granted` allows.
fn base_linker(
    engine: &Engine,
    path: &Path,
    imports: &[String],
    granted: impl Fn(&str) -> bool,
) -> Result<Linker<HostState>, LoadError> {
    let mut linker: Linker<HostState> = Linker::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| LoadError::new(path, LoadPhase::Link, one_line(&e)))?;
    let mut linked: Vec<&str> = Vec::new();
    for import in imports {
        if let Some(dep) = deps::find(import).filter(|d| granted(d.name)) {
            if linked.contains(&dep.name) {
                continue;
            }
            linked.push(dep.name);
            (dep.add_to_linker)(&mut linker).map_err(|e| {
                LoadError::new(
                    path,
                    LoadPhase::Link,
                    format!("linking `{}`: {}", dep.name, one_line(&e)),
                )
            })?;
        }
    }
    Ok(linker)
}

/// Distinguish "not wasm" and "core module" from a component up front: the
/// compiler's own errors for those are cryptic.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a WebAssembly file".into());
    }
    // Bytes 4..8: version (2 bytes) and layer (2 bytes); layer 1 = component.
    if bytes[6..8] == [0, 0] {
        return Err("a core WebAssembly module, not a component (build the plugin with `--target wasm32-wasip2`)".into());
    }
    Ok(())
}

/// Check the component's exports and imports; return the import names.
fn check_imports_exports(engine: &Engine, component: &Component) -> Result<Vec<String>, String> {
    let engine = engine.wasmtime();
    let ty = component.component_type();
    let exports_plugin = ty
        .exports(engine)
        .any(|(name, _)| interface_of(name) == PLUGIN_EXPORT && version_ok(name));
    if !exports_plugin {
        return Err(format!(
            "does not export `{PLUGIN_EXPORT}@0.1.x` (is it a cairn plugin built with cairn-sdk?)"
        ));
    }
    let mut imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        let provided = WASI_PACKAGES.iter().any(|p| name.starts_with(p))
            || deps::find(name).is_some()
            || (interface_of(name) == "cairn:plugin/types" && version_ok(name));
        if !provided {
            return Err(format!(
                "imports `{name}`, which this host does not provide"
            ));
        }
        imports.push(name.to_owned());
    }
    Ok(imports)
}

fn interface_of(name: &str) -> &str {
    name.split_once('@').map_or(name, |(i, _)| i)
}

fn version_ok(name: &str) -> bool {
    name.split_once('@')
        .is_some_and(|(_, v)| v.starts_with(deps::PACKAGE_VERSION_PREFIX))
}

async fn describe(
    engine: &Engine,
    pre: &PluginWorldPre<HostState>,
    path: &Path,
) -> Result<PluginInfo, LoadError> {
    let module_hint = display_name(path);
    let info = sandbox::describe(engine, pre, &module_hint)
        .await
        .map_err(|f| LoadError::new(path, LoadPhase::Describe, f.to_string()))?;

    let bad = |m: String| Err(LoadError::new(path, LoadPhase::Describe, m));
    if let Err(e) = cairn_contract::check_name("module", &info.module) {
        return bad(e.to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    for action in &info.actions {
        if let Err(e) = cairn_contract::check_name("action", &action.name) {
            return bad(e.to_string());
        }
        if !seen.insert(action.name.as_str()) {
            return bad(format!("action `{}` is declared twice", action.name));
        }
    }
    Ok(info)
}

pub(crate) fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Whether `path` names a plugin file: `*.wasm`. The loader and the reload
/// watcher agree on this one rule.
pub fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// The plugin files in `dir` (not recursive), sorted by name.
///
/// # Errors
/// When the directory cannot be read.
pub async fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| anyhow::anyhow!("plugin directory `{}` cannot be read: {e}", dir.display()))?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if is_plugin_file(&path) && entry.file_type().await?.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
