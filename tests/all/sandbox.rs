//! Loading real example components and running them in the sandbox:
//! describe, invoke, error payloads, and every sandbox limit, each checked
//! from inside a real guest.

use crate::support::{call, call_with, engine, engine_with, invocation, plugin_dir, wasm};
use anyhow::{anyhow, Result};
use cairn::engine::Engine;
use cairn::key::Digest;
use cairn::limits::Limits;
use cairn::plugin::{self, LoadPhase, Plugin};
use cairn::reload::ReloadConfig;
use cairn::sandbox::FailureKind;
use cairn_payload::json::{json_to_arguments, payload_to_json};
use cairn_payload::{deserialize_result_payload, encode_arguments, ResultPayload};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn load(engine: &Engine, name: &str) -> Result<Plugin> {
    Ok(plugin::load_file(engine, &wasm(name)).await?)
}

#[tokio::test]
async fn describe_lists_module_and_actions() -> Result<()> {
    let rt = engine();
    let math = load(&rt, "math").await?;
    assert_eq!(math.module, "math");
    let names: Vec<_> = math.actions.iter().map(|a| a.name.as_str()).collect();
    for expected in ["add", "divide", "scale", "stats"] {
        assert!(
            names.contains(&expected),
            "math should declare `{expected}`, got {names:?}"
        );
    }
    let add = math.actions.iter().find(|a| a.name == "add").unwrap();
    assert!(
        !add.description.is_empty(),
        "doc comment becomes the description"
    );
    let flaky = load(&rt, "flaky").await?;
    let retry = flaky.actions[0]
        .retry
        .expect("flaky declares a retry policy");
    assert_eq!(retry.max_attempts, 5);
    assert_eq!(retry.initial_backoff_ms, 100);
    Ok(())
}

#[tokio::test]
async fn a_plugins_digest_is_the_sha256_of_its_file() -> Result<()> {
    let flaky = load(&engine(), "flaky").await?;
    assert_eq!(flaky.digest, Digest::of(&std::fs::read(wasm("flaky"))?));
    Ok(())
}

#[tokio::test]
async fn string_argument_and_string_result_round_trip() -> Result<()> {
    let rt = engine();
    let greet = load(&rt, "greet").await?;
    let out = call(&rt, &greet, "hello", json!({"name": "Ada"}))
        .await?
        .map_err(|f| anyhow!("{f}"))?;
    assert_eq!(out, json!("Hello, Ada!"));
    Ok(())
}

#[tokio::test]
async fn result_bytes_are_the_guests_unchanged_payload() -> Result<()> {
    let rt = engine();
    let math = load(&rt, "math").await?;
    let args = json_to_arguments(&json!({"point": {"x": 1.5, "y": -2.0}, "factor": 2.0}))?;
    let bytes = plugin_invoke(&rt, &math, "scale", encode_arguments(&args)).await?;
    // The struct result arrives as a basemodel carrying its Rust type path,
    // which proves the bytes were produced by the guest SDK, not re-encoded.
    match deserialize_result_payload(&bytes)? {
        ResultPayload::Result(value) => {
            let Some(cairn_payload::workflow_argument_value::Kind::Basemodel(model)) = value.kind
            else {
                panic!("scale should return a basemodel, got {value:?}");
            };
            assert_eq!(model.name, "Point");
            assert!(
                model.module.starts_with("math"),
                "module is the Rust path, got {}",
                model.module
            );
        }
        ResultPayload::Error(e) => panic!("unexpected error {e:?}"),
    }
    assert_eq!(
        payload_to_json(&bytes)?,
        json!({"result": {"x": 3.0, "y": -4.0}})
    );
    Ok(())
}

async fn plugin_invoke(
    rt: &Engine,
    plugin: &Plugin,
    action: &str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>> {
    plugin
        .invoke(rt, action, bytes, &invocation(None))
        .await
        .map_err(|f| anyhow!("{f}"))
}

#[tokio::test]
async fn one_plugin_serves_several_actions_with_typed_arguments_and_results() -> Result<()> {
    let rt = engine();
    let math = load(&rt, "math").await?;
    assert_eq!(
        call(&rt, &math, "add", json!({"a": 40, "b": 2}))
            .await?
            .map_err(|f| anyhow!("{f}"))?,
        json!(42)
    );
    let stats = call(&rt, &math, "stats", json!({"values": [1.0, 2.0, 6.0]}))
        .await?
        .map_err(|f| anyhow!("{f}"))?;
    assert_eq!(
        stats,
        json!({"count": 3, "mean": 3.0, "min": 1.0, "max": 6.0})
    );
    Ok(())
}

#[tokio::test]
async fn guest_error_becomes_error_payload() -> Result<()> {
    let rt = engine();
    let math = load(&rt, "math").await?;
    let failure = call(&rt, &math, "divide", json!({"a": 1.0, "b": 0.0}))
        .await?
        .expect_err("division by zero fails");
    assert_eq!(failure.kind, FailureKind::Action);
    assert!(!failure.retryable);
    let json = payload_to_json(&failure.payload())?;
    assert_eq!(json["error"]["type"], "ZeroDivisionError");
    assert_eq!(json["error"]["message"], "division by zero");
    Ok(())
}

#[tokio::test]
async fn missing_and_mistyped_arguments_name_the_parameter() -> Result<()> {
    let rt = engine();
    let math = load(&rt, "math").await?;
    let missing = call(&rt, &math, "add", json!({"a": 1}))
        .await?
        .expect_err("b is missing");
    assert_eq!(missing.error.r#type, "ArgumentError");
    assert!(
        missing.error.message.contains("`b`"),
        "{}",
        missing.error.message
    );
    let mistyped = call(&rt, &math, "add", json!({"a": 1, "b": "two"}))
        .await?
        .expect_err("b is a string");
    assert_eq!(mistyped.error.r#type, "ArgumentError");
    assert!(
        mistyped.error.message.contains("`b`"),
        "{}",
        mistyped.error.message
    );
    Ok(())
}

#[tokio::test]
async fn unknown_action_is_an_error_payload_not_a_trap() -> Result<()> {
    let rt = engine();
    let math = load(&rt, "math").await?;
    let unknown = call(&rt, &math, "nope", json!({}))
        .await?
        .expect_err("no such action");
    assert_eq!(
        unknown.kind,
        FailureKind::Action,
        "unknown action is an error payload, not a trap"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_argument_bytes_are_an_error_not_a_trap() -> Result<()> {
    let rt = engine();
    let greet = load(&rt, "greet").await?;
    let failure = greet
        .invoke(&rt, "hello", vec![0xff, 0xff, 0xff], &invocation(None))
        .await
        .expect_err("garbage args fail");
    assert_eq!(failure.kind, FailureKind::Action);
    assert_eq!(failure.error.r#type, "ArgumentError");
    Ok(())
}

#[tokio::test]
async fn flaky_sees_attempt_through_context() -> Result<()> {
    let rt = engine();
    let flaky = load(&rt, "flaky").await?;
    let mut inv = invocation(None);
    let first = call_with(
        &rt,
        &flaky,
        "succeed_after",
        json!({"attempts": 3}),
        inv.clone(),
    )
    .await?
    .expect_err("attempt 1 fails");
    assert!(first.retryable, "flaky's error is retryable");
    assert_eq!(first.error.r#type, "FlakyError");
    inv.attempt = 3;
    let third = call_with(&rt, &flaky, "succeed_after", json!({"attempts": 3}), inv)
        .await?
        .map_err(|f| anyhow!("{f}"))?;
    assert_eq!(third, json!("succeeded on attempt 3"));
    Ok(())
}

#[tokio::test]
async fn imports_are_the_declared_dependencies() -> Result<()> {
    let rt = engine();
    assert_eq!(load(&rt, "greet").await?.dependencies(), Vec::<&str>::new());
    assert_eq!(load(&rt, "chatty").await?.dependencies(), vec!["log"]);
    assert_eq!(load(&rt, "flaky").await?.dependencies(), vec!["context"]);
    Ok(())
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline_and_host_keeps_serving() -> Result<()> {
    let rt = engine();
    let looper = load(&rt, "looper").await?;
    let started = Instant::now();
    let failure = call_with(
        &rt,
        &looper,
        "spin",
        json!({}),
        invocation(Some(Duration::from_millis(300))),
    )
    .await?
    .expect_err("loops forever");
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure}");
    assert!(failure.retryable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "deadline enforced promptly: {:?}",
        started.elapsed()
    );
    let greet = load(&rt, "greet").await?;
    assert_eq!(
        call(&rt, &greet, "hello", json!({"name": "x"}))
            .await?
            .map_err(|f| anyhow!("{f}"))?,
        json!("Hello, x!")
    );
    Ok(())
}

#[tokio::test]
async fn looping_guest_does_not_block_other_calls() -> Result<()> {
    // Epoch ticks make a spinning guest yield, so a current-thread runtime
    // still completes another call while it spins.
    let rt = engine();
    let looper = load(&rt, "looper").await?;
    let greet = load(&rt, "greet").await?;
    let spin = call_with(
        &rt,
        &looper,
        "spin",
        json!({}),
        invocation(Some(Duration::from_secs(3))),
    );
    let hello = async {
        let out = call(&rt, &greet, "hello", json!({"name": "y"})).await;
        (Instant::now(), out)
    };
    let (spun, (hello_done, hello_out)) =
        tokio::join!(async { (spin.await, Instant::now()) }, hello);
    assert_eq!(hello_out?.map_err(|f| anyhow!("{f}"))?, json!("Hello, y!"));
    assert!(
        hello_done < spun.1,
        "greet finished while looper was still spinning"
    );
    assert_eq!(
        spun.0?.expect_err("spin times out").kind,
        FailureKind::Timeout
    );
    Ok(())
}

#[tokio::test]
async fn memory_bomb_hits_the_cap() -> Result<()> {
    let rt = engine_with(Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    });
    let hog = load(&rt, "hog").await?;
    assert_eq!(
        call(&rt, &hog, "eat", json!({"mib": 4}))
            .await?
            .map_err(|f| anyhow!("{f}"))?,
        json!(4),
        "small allocations work"
    );
    let failure = call(&rt, &hog, "eat", json!({"mib": 256}))
        .await?
        .expect_err("256 MiB exceeds the 32 MiB cap");
    assert_eq!(failure.kind, FailureKind::OutOfMemory, "{failure}");
    assert!(
        failure.error.message.contains("32 MiB"),
        "{}",
        failure.error.message
    );
    // The host is fine, and so is the next call of the same plugin.
    assert_eq!(
        call(&rt, &hog, "eat", json!({"mib": 4}))
            .await?
            .map_err(|f| anyhow!("{f}"))?,
        json!(4)
    );
    Ok(())
}

#[tokio::test]
async fn panic_becomes_error_payload_with_message() -> Result<()> {
    let rt = engine();
    let panicker = load(&rt, "panicker").await?;
    let failure = call(&rt, &panicker, "boom", json!({"message": "kaboom 42"}))
        .await?
        .expect_err("panics");
    assert_eq!(failure.kind, FailureKind::Panic, "{failure}");
    assert!(
        failure.error.message.contains("kaboom 42"),
        "{}",
        failure.error.message
    );
    assert!(!failure.retryable);
    Ok(())
}

#[tokio::test]
async fn a_result_that_is_not_a_payload_is_a_non_retryable_failure() -> Result<()> {
    let rt = engine();
    let liar = load(&rt, "liar").await?;
    for (action, why) in [
        ("garbage", "not a protobuf WorkflowArguments: "),
        ("wrong_key", "its one entry is `answer`, not `result`"),
        (
            "error_as_result",
            "an error payload (entry `error`) returned as a success",
        ),
    ] {
        let failure = call(&rt, &liar, action, json!({}))
            .await?
            .expect_err("a lie is not a success");
        assert_eq!(failure.kind, FailureKind::InvalidResult, "{failure}");
        assert_eq!(failure.error.r#type, "InvalidResultPayload");
        assert!(!failure.retryable, "{failure}");
        let message = &failure.error.message;
        assert!(
            message.contains(&format!("action `liar:{action}`")) && message.contains(why),
            "{message}"
        );
    }
    // The honest action's bytes pass through unchanged.
    let honest = call(&rt, &liar, "honest", json!({})).await?;
    assert_eq!(honest.map_err(|f| anyhow!("{f}"))?, json!("truth"));
    Ok(())
}

#[tokio::test]
async fn wasi_denies_files_network_and_environment() -> Result<()> {
    std::env::set_var("CAIRN_TEST_SECRET", "hunter2");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?.to_string();
    let secret_file = tempfile::NamedTempFile::new()?;
    std::fs::write(secret_file.path(), "top secret")?;

    let rt = engine();
    let snoop = load(&rt, "snoop").await?;
    let report = call(
        &rt,
        &snoop,
        "probe",
        json!({"path": secret_file.path().to_str().unwrap(), "addr": addr, "var": "CAIRN_TEST_SECRET"}),
    )
    .await?
    .map_err(|f| anyhow!("{f}"))?;
    for field in ["file", "socket", "env", "root", "cwd"] {
        let text = report[field].as_str().unwrap_or_default();
        assert!(
            text.starts_with("denied"),
            "{field} should be denied, got {text:?}"
        );
    }
    assert_eq!(
        report["env_count"],
        json!(0),
        "no environment variables at all"
    );
    assert!(!report.to_string().contains("hunter2") && !report.to_string().contains("top secret"));
    // No wait needed: a connection the guest completed would be in the
    // listener's backlog before the call returned (the kernel finishes a
    // loopback handshake inside connect), and the call has returned.
    assert!(
        listener.accept().is_err(),
        "no connection may reach the host's listener"
    );
    Ok(())
}

#[tokio::test]
async fn pooling_allocator_bounds_live_instances() -> Result<()> {
    // With two pool slots, a third concurrent instance cannot be created:
    // proof that instances come from the pool.
    let rt = engine_with(Limits {
        pool_instances: 2,
        ..Limits::default()
    });
    let looper = load(&rt, "looper").await?;
    let spins = (0..3).map(|_| {
        call_with(
            &rt,
            &looper,
            "spin",
            json!({}),
            invocation(Some(Duration::from_millis(800))),
        )
    });
    let results = futures::future::join_all(spins).await;
    let kinds: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap().expect_err("all fail").kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == FailureKind::Timeout).count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == FailureKind::Instantiate)
            .count(),
        1,
        "{kinds:?}"
    );
    Ok(())
}

#[tokio::test]
async fn not_a_component_is_rejected_in_validate() -> Result<()> {
    let rt = engine();
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm")?;
    let err = plugin::load_file(&rt, &garbage).await.expect_err("garbage");
    assert_eq!(err.phase, LoadPhase::Validate);
    assert!(
        err.to_string().contains("garbage.wasm")
            && err.to_string().contains("not a WebAssembly file"),
        "{err}"
    );

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0")?;
    let err = plugin::load_file(&rt, &core)
        .await
        .expect_err("core module");
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
    Ok(())
}

#[tokio::test]
async fn unknown_import_is_rejected_naming_it() -> Result<()> {
    let rt = engine();
    let err = plugin::load_file(&rt, &wasm("stranger"))
        .await
        .expect_err("stranger imports telepathy");
    assert_eq!(err.phase, LoadPhase::Validate);
    assert!(err.to_string().contains("evil:extra/telepathy"), "{err}");
    assert!(err.to_string().contains("stranger.wasm"), "{err}");
    Ok(())
}

#[tokio::test]
async fn bad_file_in_directory_leaves_the_others_loaded() -> Result<()> {
    let dir = plugin_dir(&["greet", "stranger"]);
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm broken")?;
    // Loaded as `cairn serve`, `plugins` and `invoke` load a directory.
    let loaded = cairn::serve::load_plugins(
        dir.path(),
        Arc::default(),
        Limits::default(),
        ReloadConfig::default(),
    )
    .await?;
    assert_eq!(loaded.registry().names(), vec!["greet:hello"]);
    let mut rejected: Vec<_> = loaded
        .reloader
        .files()
        .into_iter()
        .filter(|f| f.rejected.is_some())
        .map(|f| {
            f.file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    rejected.sort();
    assert_eq!(rejected, vec!["broken.wasm", "stranger.wasm"]);
    Ok(())
}
