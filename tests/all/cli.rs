//! The `cairn` binary: `plugins` and `invoke`, and bad input as one line on
//! stderr with a non-zero exit — never a panic or a backtrace.

use crate::support::{cairn, plugin_dir};
use anyhow::Result;
use serde_json::{json, Value};
use std::process::Output;

fn run(args: &[&str]) -> Result<Output> {
    Ok(cairn().args(args).output()?)
}

fn stdout_json(out: &Output) -> Result<Value> {
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A failing command prints exactly one `error:` line and nothing that
/// looks like a panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line, got: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line should mention {needle:?}: {}",
        errors[0]
    );
    // The host itself never panics (a guest's own abort note may appear in
    // its captured stderr, tagged `cairn::guest`).
    let host_lines: Vec<_> = stderr
        .lines()
        .filter(|l| !l.contains("cairn::guest"))
        .collect();
    assert!(
        !host_lines
            .iter()
            .any(|l| l.contains("panicked at") || l.contains("stack backtrace")),
        "no host panic: {stderr}"
    );
}

/// A usage error: clap refused an argument before anything ran. One
/// `error:` line, exit status 2.
fn assert_usage_error(out: &Output, needle: &str) {
    assert_clean_failure(out, needle);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error exits 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
