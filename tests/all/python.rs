//! Python plugins end to end: the examples in `examples/python/` built with
//! `cairn-py build` (the SDK in `guest-sdk/python`) and run by a real `cairn
//! serve` on the real PostgreSQL of `pg.rs`, next to Rust plugins.
//!
//! Strategy: once per test binary, a virtualenv under the target directory
//! gets the SDK installed editable (`pip install -e guest-sdk/python`, which
//! brings componentize-py from PyPI the first time), so it always runs this
//! tree's SDK; each example is built at most once per binary. A venv whose
//! `cairn` is not this tree's (the target dir is shared by worktrees) is
//! rebuilt. Everything a test checks comes from a real component in a real
//! host: results, stored error payloads, the refusal of an ungranted import,
//! the dependency cache, a Rust plugin beside a Python one, a hot reload.
//!
//! Failure modes: no `python3` with `venv`, or no registry to install
//! componentize-py from, fails the first test that needs a build, saying
//! which step failed (never a skip).

use crate::pg::{fresh_db, TestDb};
use crate::support::{cairn_with_config, repo, scratch, until, wasm, Serve, ServeArgs};
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a host may take to load Python plugins: each is an ~18 MB
/// component (CPython inside) that a debug build of the host compiles in
/// tens of seconds on a busy 2-core machine.
const LOAD_LIMIT: Duration = Duration::from_secs(600);
/// How long one action may take to finish once enqueued.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The venv with this tree's SDK installed (editable); its `cairn-py`.
fn cairn_py() -> Result<PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = VENV
        .get_or_init(|| make_venv().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(venv.join("bin/cairn-py"))
}

fn make_venv() -> Result<PathBuf> {
    let venv = scratch("cairn-py-venv");
    let sdk = repo().join("guest-sdk/python");
    let python = venv.join("bin/python");
    let expected = sdk.join("src/cairn/__init__.py");
    let current = Command::new(&python)
        .args(["-c", "import cairn; print(cairn.__file__)"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let fresh = current.as_deref() == Some(expected.to_str().unwrap_or_default())
        && venv.join("bin/cairn-py").exists()
        && venv.join("bin/componentize-py").exists();
    if !fresh {
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating the SDK's venv (python3 -m venv)",
        )?;
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "-e"])
                .arg(&sdk),
            "installing the Python SDK (pip install -e guest-sdk/python)",
        )?;
    }
    Ok(venv)
}

/// `cairn-py build SRC -o OUT`.
fn build_python(src: &Path, out: &Path) -> Result<()> {
    run(
        Command::new(cairn_py()?)
            .arg("build")
            .arg(src)
            .arg("-o")
            .arg(out),
        &format!("cairn-py build {}", src.display()),
    )?;
    Ok(())
}

/// The component of Python example `name`, built once per test binary.
fn python_example(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(name) {
        return Ok(path.clone());
    }
    let dir = scratch("cairn-py-examples");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("{name}.wasm"));
    build_python(&repo().join("examples/python").join(name), &out)?;
    built.insert(name.to_owned(), out.clone());
    Ok(out)
}

/// A plugin directory with the named Python examples and Rust examples.
fn plugins(python: &[&str], rust: &[&str]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for name in python {
        std::fs::copy(
            python_example(name)?,
            dir.path().join(format!("py_{name}.wasm")),
        )?;
    }
    for name in rust {
        std::fs::copy(wasm(name), dir.path().join(format!("rs_{name}.wasm")))?;
    }
    Ok(dir)
}

/// `cairn serve` on `plugins` (with `config` as its cairn.toml), given
/// [`LOAD_LIMIT`] to compile the Python components.
async fn serve(db: &TestDb, plugins: tempfile::TempDir, config: Option<&str>) -> Result<Serve> {
    let args = ServeArgs {
        config,
        load_limit: LOAD_LIMIT,
        ..ServeArgs::default()
    };
    Serve::start_with(db, plugins, args).await
}

/// Enqueue `module:name` with JSON keyword arguments; the row's id.
async fn enqueue(db: &TestDb, module: &str, name: &str, args: Value) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT cairn.enqueue($1, $2, $3::jsonb)")
            .bind(module)
            .bind(name)
            .bind(args)
            .fetch_one(&db.pool)
            .await?,
    )
}

/// The finished row `id`: (status, attempts, outcome as JSON).
async fn outcome(db: &TestDb, id: i64) -> Result<(String, i32, Value)> {
    until(&format!("action {id} to finish"), RUN_LIMIT, || async move {
        let row: Option<(String, i32, Option<Value>)> = sqlx::query_as(
            "SELECT status, attempts, cairn.payload_to_json(coalesce(result, error)) FROM cairn.result($1)
             WHERE status IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
        Ok(row.map(|(status, attempts, json)| (status, attempts, json.unwrap_or(Value::Null))))
    })
    .await
}

async fn result_of(db: &TestDb, module: &str, name: &str, args: Value) -> Result<Value> {
    let id = enqueue(db, module, name, args).await?;
    let (status, _, json) = outcome(db, id).await?;
    ensure!(status == "succeeded", "{module}:{name} {status}: {json}");
    Ok(json["result"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_actions_return_results_through_serve() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugins(&["greet", "math"], &[])?;
    let _serve = serve(&db, dir, None).await?;
    assert_eq!(
        result_of(&db, "greet", "hello", json!({"name": "Ada"})).await?,
        json!("Hello, Ada!")
    );
    assert_eq!(
        result_of(&db, "greet", "shout", json!({"name": "Ada", "times": 2})).await?,
        json!("HELLO, ADA! HELLO, ADA!")
    );
    assert_eq!(
        result_of(&db, "math", "add", json!({"a": 2, "b": 40})).await?,
        json!(42)
    );
    // A tuple of floats; jsonb (cairn.payload_to_json) prints 3.0 as 3, so compare as numbers.
    let stats = result_of(&db, "math", "stats", json!({"values": [3, 1.5, 2]})).await?;
    let numbers: Option<Vec<f64>> = stats
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect());
    assert_eq!(numbers, Some(vec![1.5, 3.0]), "{stats}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_exception_is_stored_as_an_error_payload_with_its_traceback() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugins(&["math"], &[])?;
    let _serve = serve(&db, dir, None).await?;
    let id = enqueue(&db, "math", "divide", json!({"a": 1, "b": 0})).await?;
    let (status, attempts, json) = outcome(&db, id).await?;
    // An uncaught exception is not retryable: one attempt, although the
    // action declares retries=3.
    assert_eq!((status.as_str(), attempts), ("failed", 1), "{json}");
    let error = &json["error"];
    assert_eq!(error["type"], "ZeroDivisionError", "{json}");
    assert_eq!(error["module"], "builtins", "{json}");
    assert_eq!(error["message"], "division by zero", "{json}");
    // The WIT action-error has no traceback field: the SDK sends the
    // traceback and the MRO in its details under the contract's keys, and
    // the host lifts them into the payload's own fields.
    let traceback = error["traceback"].as_str().context("no traceback")?;
    assert!(
        traceback.contains("File \"app.py\", line") && traceback.contains("in divide"),
        "{traceback}"
    );
    assert_eq!(
        error["type_hierarchy"],
        json!([
            "ZeroDivisionError",
            "ArithmeticError",
            "Exception",
            "BaseException"
        ])
    );
    assert!(
        error
            .get("values")
            .is_none_or(|v| v.get("cairn:traceback").is_none()),
        "{json}"
    );
    // A bad argument is the SDK's ArgumentError, naming the parameter.
    let id = enqueue(&db, "math", "add", json!({"a": 1, "b": "two"})).await?;
    let (status, _, json) = outcome(&db, id).await?;
    assert_eq!(status, "failed");
    assert_eq!(json["error"]["type"], "ArgumentError");
    assert_eq!(
        json["error"]["message"],
        "argument `b`: invalid type: string \"two\", expected int"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_plugin_imports_only_what_it_uses_and_ungranted_kv_is_refused() -> Result<()> {
    let dir = plugins(&["greet", "visits"], &[])?;
    // Config granted, kv not: visits is refused naming the kv grant; greet,
    // which imports no cairn dependency, loads without any grant.
    let out = cairn_with_config(
        "[plugins.visits]\ngrants = [\"config\"]\n[plugins.visits.config]\nsite_name = \"docs\"\n",
        &[],
        &["plugins", "--plugins", dir.path().to_str().context("path")?],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let both = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        both.contains("py_visits.wasm")
            && both.contains("imports `cairn:plugin/kv`, which is not granted: add \"kv\" to plugins.visits.grants"),
        "{both}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("visits:")),
        "{stdout}"
    );
    let greet = stdout
        .lines()
        .find(|l| l.starts_with("greet:hello"))
        .context("greet:hello listed")?;
    assert!(
        !greet.contains("kv") && !greet.contains("config"),
        "{greet}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_kv_and_config_through_a_depends_chain() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugins(&["visits"], &[])?;
    let config = "[plugins.visits]\ngrants = [\"kv\", \"config\"]\n[plugins.visits.config]\nsite_name = \"docs\"\n";
    let _serve = serve(&db, dir, Some(config)).await?;
    let first = result_of(&db, "visits", "visit", json!({"page": "home"})).await?;
    assert_eq!(
        first,
        json!({"site": "docs", "url": "https://example.test/home", "visits": 1})
    );
    let second = result_of(&db, "visits", "visit", json!({"page": "home"})).await?;
    assert_eq!(second["visits"], 2);
    assert_eq!(
        result_of(&db, "visits", "peek", json!({"page": "home"})).await?,
        json!(2)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_use_cache_on_and_off_counts_constructions() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugins(&["deps_cache"], &[])?;
    let _serve = serve(&db, dir, None).await?;
    assert_eq!(
        result_of(&db, "deps_cache", "cached", json!({})).await?,
        json!(1)
    );
    assert_eq!(
        result_of(&db, "deps_cache", "fresh", json!({})).await?,
        json!(2)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_rust_plugins_serve_side_by_side() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugins(&["greet"], &["math"])?;
    let _serve = serve(&db, dir, None).await?;
    let py = enqueue(&db, "greet", "hello", json!({"name": "Rust"})).await?;
    let rs = enqueue(&db, "math", "add", json!({"a": 20, "b": 22})).await?;
    assert_eq!(outcome(&db, rs).await?.2, json!({"result": 42}));
    assert_eq!(outcome(&db, py).await?.2, json!({"result": "Hello, Rust!"}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_plugin_hot_reloads_a_new_version() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugins(&["greet"], &[])?;
    let serve = serve(&db, dir, None).await?;
    assert_eq!(
        result_of(&db, "greet", "hello", json!({"name": "Ada"})).await?,
        json!("Hello, Ada!")
    );

    // Version 2 of the same plugin: greets differently.
    let src = tempfile::tempdir()?;
    let app = std::fs::read_to_string(repo().join("examples/python/greet/app.py"))?;
    ensure!(
        app.contains("f\"Hello, {name}!\""),
        "the greet example changed: update this test"
    );
    std::fs::write(
        src.path().join("app.py"),
        app.replace("f\"Hello, {name}!\"", "f\"Hi again, {name}!\""),
    )?;
    let staged = src.path().join("greet.wasm");
    build_python(src.path(), &staged)?;
    // Dropped in as a new file atomically replacing the old one.
    let landing = serve.plugins().join(".greet.wasm.tmp");
    std::fs::copy(&staged, &landing)?;
    std::fs::rename(&landing, serve.plugins().join("py_greet.wasm"))?;

    let greeting = until("the new greet version to serve", LOAD_LIMIT, || {
        let db = &db;
        async move {
            let reply = result_of(db, "greet", "hello", json!({"name": "Ada"})).await?;
            Ok((reply != json!("Hello, Ada!")).then_some(reply))
        }
    })
    .await
    .with_context(|| serve.stderr_text())?;
    assert_eq!(greeting, json!("Hi again, Ada!"));
    Ok(())
}
