//! The `cairn` binary: `plugins` and `invoke`, and bad input as one line on
//! stderr with a non-zero exit — never a panic or a backtrace.

use crate::pg::fresh_db;
use crate::support::{
    assert_clean_failure, assert_usage_error, cairn, enqueue, plugin_dir, row_state, until, wasm,
    Serve, SOON,
};
use anyhow::{anyhow, ensure, Context, Result};
use cairn::bench::reload::{result_version, with_version};
use cairn::queue::{ActionStatus, Client, EnqueueRequest};
use serde_json::{json, Value};
use std::process::Output;

fn run(args: &[&str]) -> Result<Output> {
    Ok(cairn().args(args).output()?)
}

fn stdout_json(out: &Output) -> Result<Value> {
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn plugins_lists_actions_with_file_digest_and_imports() -> Result<()> {
    let dir = plugin_dir(&["greet", "chatty", "math"]);
    let out = run(&["plugins", "--plugins", dir.path().to_str().unwrap()])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let chatty = text
        .lines()
        .find(|l| l.starts_with("chatty:chat"))
        .expect("chatty:chat listed");
    assert!(
        chatty.contains("chatty.wasm") && chatty.contains("log"),
        "{chatty}"
    );
    assert!(text
        .lines()
        .any(|l| l.starts_with("greet:hello") && l.contains("greet.wasm")));
    assert!(text.lines().any(|l| l.starts_with("math:add")));
    Ok(())
}

#[test]
fn invoke_prints_result_as_json() -> Result<()> {
    let dir = plugin_dir(&["greet", "math"]);
    let out = run(&[
        "invoke",
        "greet:hello",
        "--args",
        r#"{"name":"Grace"}"#,
        "--plugins",
        dir.path().to_str().unwrap(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)?, json!({"result": "Hello, Grace!"}));
    Ok(())
}

#[test]
fn invoke_prints_error_payload_and_fails() -> Result<()> {
    let dir = plugin_dir(&["math"]);
    let out = run(&[
        "invoke",
        "math:divide",
        "--args",
        r#"{"a":1,"b":0}"#,
        "--plugins",
        dir.path().to_str().unwrap(),
    ])?;
    assert_clean_failure(&out, "ZeroDivisionError");
    assert_eq!(stdout_json(&out)?["error"]["type"], "ZeroDivisionError");
    Ok(())
}

#[test]
fn guest_log_and_stdio_reach_host_logs_with_fields() -> Result<()> {
    let dir = plugin_dir(&["chatty"]);
    let out = cairn()
        .env("CAIRN_LOG", "debug")
        .args([
            "invoke",
            "chatty:chat",
            "--args",
            r#"{"message":"zebra"}"#,
            "--plugins",
            dir.path().to_str().unwrap(),
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout_json(&out)?, json!({"result": 3}));
    let guest: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("cairn::guest"))
        .collect();
    assert!(
        guest.iter().all(|l| l.contains("module=chatty")
            && l.contains("action=chat")
            && l.contains("attempt=1")),
        "{stderr}"
    );
    assert!(
        guest.iter().any(|l| l.contains("stdout: zebra")),
        "stdout captured: {stderr}"
    );
    assert!(
        guest.iter().any(|l| l.contains("stderr: zebra")),
        "stderr captured: {stderr}"
    );
    assert!(
        guest
            .iter()
            .any(|l| l.contains("zebra") && l.contains("len")),
        "log record with fields: {stderr}"
    );
    Ok(())
}

#[test]
fn bad_input_is_one_line_and_nonzero() -> Result<()> {
    let dir = plugin_dir(&["greet", "looper", "hog", "panicker"]);
    let d = dir.path().to_str().unwrap();
    std::fs::write(dir.path().join("notwasm.wasm"), b"hello")?;

    assert_clean_failure(
        &run(&["invoke", "greet:nope", "--plugins", d])?,
        "unknown action `greet:nope`",
    );
    assert_clean_failure(
        &run(&[
            "invoke",
            "greet:hello",
            "--args",
            r#"{"name": 5}"#,
            "--plugins",
            d,
        ])?,
        "`name`",
    );
    assert_clean_failure(
        &run(&["invoke", "greet:hello", "--args", "[1,2]", "--plugins", d])?,
        "JSON object",
    );
    assert_clean_failure(
        &run(&["invoke", "greet:hello", "--args", "{nope", "--plugins", d])?,
        "not valid JSON",
    );
    assert_clean_failure(
        &run(&["invoke", "greet:hello", "--plugins", "/definitely/missing"])?,
        "does not exist",
    );
    assert_usage_error(&run(&["invoke", "nocolon", "--plugins", d])?, "MODULE:NAME");
    assert_usage_error(&run(&["invoke", "a:b:c", "--plugins", d])?, "MODULE:NAME");
    assert_clean_failure(
        &run(&[
            "invoke",
            "looper:spin",
            "--timeout",
            "300ms",
            "--plugins",
            d,
        ])?,
        "TimeoutError",
    );
    assert_clean_failure(
        &cairn()
            .env("CAIRN_MEMORY_MIB", "16")
            .args([
                "invoke",
                "hog:eat",
                "--args",
                r#"{"mib":64}"#,
                "--plugins",
                d,
            ])
            .output()?,
        "MemoryError",
    );
    assert_clean_failure(
        &run(&[
            "invoke",
            "panicker:boom",
            "--args",
            r#"{"message":"oh no"}"#,
            "--plugins",
            d,
        ])?,
        "oh no",
    );
    assert_clean_failure(
        &cairn()
            .env("CAIRN_MEMORY_MIB", "lots")
            .args(["plugins", "--plugins", d])
            .output()?,
        "CAIRN_MEMORY_MIB",
    );

    // The broken file is reported by `plugins`, and the rest still load.
    let listing = run(&["plugins", "--plugins", d])?;
    assert!(listing.status.success());
    let text = String::from_utf8(listing.stdout)?;
    assert!(
        text.contains("REJECTED notwasm.wasm") && text.contains("not a WebAssembly file"),
        "{text}"
    );
    assert!(text.contains("greet:hello"));
    Ok(())
}

#[test]
fn a_duration_flag_without_a_unit_is_a_usage_error() -> Result<()> {
    let dir = plugin_dir(&["greet"]);
    let d = dir.path().to_str().context("path")?;
    // A bare number: milliseconds or seconds? The grammar refuses to guess.
    assert_usage_error(
        &run(&["invoke", "greet:hello", "--timeout", "500", "--plugins", d])?,
        "500",
    );
    for (flag, value) in [
        ("--lease", "30"),
        ("--shutdown-grace", "10"),
        ("--unknown-after", "300"),
    ] {
        // Refused while parsing, before serve looks for a database.
        let out = run(&["serve", "--plugins", d, flag, value])?;
        assert_usage_error(&out, flag);
    }
    Ok(())
}

#[test]
fn a_zero_timeout_or_lease_flag_is_a_usage_error() -> Result<()> {
    let dir = plugin_dir(&["greet"]);
    let d = dir.path().to_str().context("path")?;
    // A zero budget would time every call out; a zero lease would expire
    // every row as it is claimed.
    assert_usage_error(
        &run(&["invoke", "greet:hello", "--timeout", "0s", "--plugins", d])?,
        "--timeout",
    );
    assert_usage_error(
        &run(&["serve", "--plugins", d, "--lease", "0s"])?,
        "--lease",
    );
    Ok(())
}

#[test]
fn a_zero_timeout_in_cairn_toml_is_refused_by_serve_and_plugins() -> Result<()> {
    let dir = plugin_dir(&["sleepy"]);
    let d = dir.path().to_str().context("path")?;
    let cwd = tempfile::tempdir()?;
    let config = cwd.path().join("cairn.toml");
    std::fs::write(&config, "[plugins.sleepy]\ntimeout = \"0s\"\n")?;
    let config = config.to_str().context("path")?;
    assert_clean_failure(
        &run(&["--config", config, "plugins", "--plugins", d])?,
        "greater than zero",
    );
    // Refused before serve connects anywhere: the URL leads nowhere.
    assert_clean_failure(
        &run(&[
            "--config",
            config,
            "serve",
            "--plugins",
            d,
            "--database-url",
            "postgres://cairn@127.0.0.1:1/none",
        ])?,
        "greater than zero",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_invoke_and_serve_agree_on_who_owns_a_contested_action() -> Result<()> {
    // Two files declare the same actions with different code: a.wasm
    // (version 1) comes first by name and owns them; b.wasm (version 2)
    // waits, rejected, until a.wasm goes away.
    let template = std::fs::read(wasm("versioned"))?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("a.wasm"), with_version(&template, 1)?)?;
    std::fs::write(dir.path().join("b.wasm"), with_version(&template, 2)?)?;
    let d = dir.path().to_str().context("path")?.to_owned();

    let listing = run(&["plugins", "--plugins", &d])?;
    let text = String::from_utf8(listing.stdout)?;
    ensure!(listing.status.success(), "{text}");
    let owner = text
        .lines()
        .find(|l| l.starts_with("versioned:version "))
        .context("versioned:version not listed")?;
    ensure!(owner.contains("a.wasm"), "owner: {owner}");
    let rejected = text
        .lines()
        .find(|l| l.starts_with("REJECTED b.wasm: (register) (waiting)"))
        .with_context(|| format!("b.wasm not listed as rejected and waiting:\n{text}"))?;
    ensure!(rejected.contains("a.wasm"), "{rejected}");

    let invoked = run(&["invoke", "versioned:version", "--plugins", &d])?;
    ensure!(
        invoked.status.success(),
        "{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    ensure!(
        stdout_json(&invoked)? == json!({"result": 1}),
        "invoke ran b.wasm"
    );

    let db = fresh_db().await?;
    let serve = Serve::start_in(&db, dir, &[]).await?;
    let client = Client::new(db.pool.clone());
    let id = client
        .enqueue(&EnqueueRequest::new("versioned", "version"))
        .await?;
    let row = client.wait(id, SOON).await?;
    ensure!(
        row.status == ActionStatus::Succeeded,
        "{row:?}\n{}",
        serve.stderr_text()
    );
    let version =
        result_version(row.result.as_deref().unwrap_or_default()).map_err(|e| anyhow!("{e}"))?;
    ensure!(version == 1, "serve ran version {version}, not a.wasm's");
    Ok(())
}

#[tokio::test]
async fn serve_threads_sizes_the_runtime_that_runs_actions() -> Result<()> {
    let dir = plugin_dir(&["greet"]);
    let d = dir.path().to_str().context("path")?;
    assert_usage_error(
        &run(&["serve", "--plugins", d, "--threads", "0"])?,
        "--threads",
    );

    let db = fresh_db().await?;
    let client = Client::new(db.pool.clone());
    for threads in [1, 3] {
        let flag = threads.to_string();
        let plugins = plugin_dir(&["greet", "looper"]);
        let serve = Serve::start_in(&db, plugins, &["--threads", &flag]).await?;
        // The worker logs the size of the runtime it runs on, read from the
        // runtime itself.
        let said = format!("threads={threads} ");
        until("the worker to log its runtime's size", SOON, || {
            let log = serve.stderr_text();
            let line = log
                .lines()
                .find(|l| l.contains("worker started"))
                .map(str::to_owned);
            async move { Ok(line) }
        })
        .await
        .and_then(|line| {
            ensure!(line.contains(&said), "--threads {threads}: {line}");
            Ok(())
        })?;
        // A guest spinning on the only thread does not stop the host from
        // claiming and running other work: guests yield at every epoch.
        let spin = enqueue(&client, "looper:spin", json!({})).await?;
        until("the looper to run", SOON, || async {
            Ok((row_state(&db.pool, spin).await?.0 == ActionStatus::Running).then_some(()))
        })
        .await?;
        let id = enqueue(&client, "greet:hello", json!({"name": "t"})).await?;
        let row = client.wait(id, SOON).await?;
        ensure!(row.status == ActionStatus::Succeeded, "{row:?}");
        ensure!(
            row_state(&db.pool, spin).await?.0 == ActionStatus::Running,
            "the looper still runs"
        );
    }
    Ok(())
}
