//! Shared fixtures for the integration tests: the example plugins, built once
//! per test binary to real wasm32-wasip2 components, and helpers to put a
//! chosen few into a fresh plugin directory.

use anyhow::{bail, Result};
use cairn::limits::Limits;
use cairn::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// Build every example plugin (once per test binary) exactly as an author
/// would: `cargo build --target wasm32-wasip2 --release`. Returns the
/// directory holding the `.wasm` files.
pub fn built_examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let examples = repo().join("examples/plugins");
        let target = examples.join("target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--release",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(&examples)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the example plugins");
        assert!(status.success(), "building the example plugins failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The built component of example plugin `name` (crate name).
pub fn wasm(name: &str) -> PathBuf {
    let path = built_examples().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "example plugin `{name}` was not built at {}",
        path.display()
    );
    path
}

/// A fresh plugin directory holding copies of the named example plugins.
pub fn plugin_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    for name in names {
        std::fs::copy(wasm(name), dir.path().join(format!("{name}.wasm")))
            .expect("copying a plugin");
    }
    dir
}

/// A runtime with default limits.
pub fn runtime() -> Runtime {
    Runtime::new(Limits::default()).expect("creating the runtime")
}

/// A runtime with custom limits.
pub fn runtime_with(limits: Limits) -> Runtime {
    Runtime::new(limits).expect("creating the runtime")
}

/// The `cairn` binary under test.
pub fn cairn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.env_remove("CAIRN_LOG")
        .env_remove("RUST_LOG")
        .env_remove("CAIRN_PLUGINS");
    cmd
}

/// A copy of `wasm` with a custom section appended: the same component
/// behaviour under a different digest (a "new version" of a plugin).
pub fn with_custom_section(wasm: &[u8], payload: &str) -> Vec<u8> {
    let name = b"cairn-test";
    let mut content = Vec::new();
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name);
    content.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// How often [`until`] probes: often enough that tests react within a few
/// tens of milliseconds, rarely enough not to load the database.
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Polls `probe` every [`PROBE_EVERY`] until it yields a value, or fails
/// after `limit` naming `what` it waited for.
pub async fn until<T, F, Fut>(what: &str, limit: std::time::Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if std::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
