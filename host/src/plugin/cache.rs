//! The compiled-artifact cache: `<root>/<engine>/<digest>.cwasm`.
//!
//! Strategy. Compiling a component with Cranelift costs tens to hundreds of
//! milliseconds; loading wasmtime's serialized artifact (an mmap) costs about
//! a millisecond. So the loader keeps every artifact it compiles, named by
//! the SHA-256 digest of the `.wasm` bytes, in a directory named after the
//! engine's [`precompile_compatibility_hash`](wasmtime::Engine::precompile_compatibility_hash)
//! (wasmtime version, compiler settings, enabled features, tunables): an
//! artifact is only ever looked up by an engine that can run it, and a
//! wasmtime upgrade or a configuration change starts an empty directory.
//!
//! Trust. [`Component::deserialize_file`] runs whatever machine code the file
//! holds, so an entry is only ever loaded if this host wrote it:
//! * the cache directories are created `0700`, and [`ArtifactCache::open`]
//!   refuses a directory that another user owns or that group/others can
//!   access — then the host runs without a cache (and says so);
//! * an entry must be a regular file (not a symlink) owned by this user;
//! * entries appear only by `rename` of a fully written, `fsync`ed temporary
//!   file in the same directory, so no reader sees a partial artifact.
//!
//! Failure modes. An entry that cannot be loaded (truncated by a full disk
//! before this scheme, written by a different build that hashes the same,
//! garbage) is deleted, recompiled and rewritten, with a warning. Failing to
//! write an entry is a warning too: the plugin still loads, only the next
//! load compiles again. Nothing is ever evicted: an entry is the size of the
//! compiled code (about 1–3 MB per plugin); delete the directory at any time
//! (not while a host starts) to reclaim space.

use super::Counters;
use crate::error::one_line;
use crate::key::Digest;
use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Extension of a cache entry.
const EXTENSION: &str = "cwasm";

/// A directory of compiled artifacts for one engine configuration. See the
/// module docs.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Open (creating it `0700` if missing) the cache for `engine` under
    /// `root`, i.e. `<root>/<hex of the engine's compatibility hash>/`.
    ///
    /// # Errors
    /// When the directories cannot be created, or exist but are owned by
    /// another user or accessible to group/others (the cache would load
    /// code someone else could have written).
    pub fn open(root: &Path, engine: &Engine) -> Result<Self> {
        let dir = root.join(engine_dir_name(engine));
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("artifact cache: creating `{}`", parent.display()))?;
        }
        for d in [root, dir.as_path()] {
            private_dir(d)?;
        }
        Ok(ArtifactCache { dir })
    }

    /// The directory entries live in (`<root>/<engine hash>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact of the plugin with this digest lives.
    pub fn entry(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}.{EXTENSION}"))
    }

    /// The component for `bytes` (whose SHA-256 is `digest`): from the cache
    /// if this host stored it, else compiled and stored. Blocking: call it
    /// off the async executor.
    ///
    /// # Errors
    /// Only when compiling fails; cache trouble is logged and worked around.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
        counters: &Counters,
    ) -> wasmtime::Result<Component> {
        let path = self.entry(digest);
        match self.load(engine, &path) {
            Ok(Some(component)) => {
                counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(component);
            }
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(
                    entry = %path.display(),
                    "artifact cache: discarding an entry that cannot be loaded ({why:#}); recompiling"
                );
                let _ = fs::remove_file(&path);
                counters.cache_discarded.fetch_add(1, Ordering::Relaxed);
            }
        }
        counters.compiled.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(engine, bytes)?;
        if let Err(why) = self.store(&path, &component) {
            tracing::warn!(
                entry = %path.display(),
                "artifact cache: not stored ({why:#}); the next load compiles again"
            );
        }
        Ok(component)
    }

    /// `Ok(None)`: no entry. `Err`: an entry that must not or cannot be used.
    fn load(&self, engine: &Engine, path: &Path) -> Result<Option<Component>> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading its metadata"),
        };
        if !meta.file_type().is_file() {
            bail!("not a regular file");
        }
        if meta.uid() != effective_uid() {
            bail!("owned by uid {}, not this host's user", meta.uid());
        }
        // SAFETY: `deserialize_file` trusts the file to be an artifact that
        // wasmtime wrote for this engine configuration. The file is in a
        // directory only this user can write (checked in `open`), is owned
        // by this user, was written by `store` (whole, then renamed), and is
        // named after the engine's compatibility hash; wasmtime itself checks
        // the header, version and configuration before using it.
        let component = unsafe { Component::deserialize_file(engine, path) }
            .map_err(|e| anyhow::anyhow!("{}", one_line(&e)))?;
        Ok(Some(component))
    }

    /// Write the artifact to a temporary file, `fsync` it, rename it into
    /// place.
    fn store(&self, path: &Path, component: &Component) -> Result<()> {
        static N: AtomicU64 = AtomicU64::new(0);
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("serializing: {}", one_line(&e)))?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let written = (|| -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.context("writing")
    }
}

/// The cache subdirectory name for `engine`: hex of the first 16 bytes of
/// SHA-256 over the engine's compatibility hash (`std`'s `Hash` feeding
/// SHA-256, so the name is stable across Rust versions, unlike
/// `DefaultHasher`).
pub fn engine_dir_name(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0 // unused: the digest is read from the state below
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// Create `dir` with mode `0700` if missing; refuse it if it is not a
/// directory this user owns and only this user can enter.
fn private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask may have narrowed it further; make it exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("artifact cache: setting `{}` to 0700", dir.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("artifact cache: creating `{}`", dir.display()))
        }
    }
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("artifact cache: reading `{}`", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!("artifact cache: `{}` is not a directory", dir.display());
    }
    if meta.uid() != effective_uid() {
        bail!(
            "artifact cache: `{}` is owned by uid {}, not this user: not using it",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "artifact cache: `{}` is accessible to other users (mode {:o}): not using it \
             (remove it, or `chmod 700` it if you trust its contents)",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
