//! Dependencies end to end: real example guests, real PostgreSQL (a fresh
//! database per test), grants and settings from inline `cairn.toml`
//! snippets. Plugins are loaded with a [`Loader`] given the config and the
//! pool, and called directly (no queue), except where the test is about the
//! queue (follow-up enqueue) or the CLI (what it prints).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use cairn::engine::Engine;
use cairn::plugin::{Loader, Plugin};
use cairn::queue::{ActionStatus, Client, EnqueueRequest};
use cairn::serve::Host;
use cairn::settings::Settings;
use serde_json::{json, Value};

use crate::pg::fresh_db;
use crate::support::{
    self, cairn, cairn_with_config, engine, fast_worker, invocation, plugin_dir, wasm, InProcess,
    SOON,
};

fn parse(toml: &str) -> Result<Settings> {
    Settings::parse(toml, Path::new("cairn.toml"), &cairn::deps::names())
}

fn config(toml: &str) -> Result<Arc<Settings>> {
    Ok(Arc::new(parse(toml)?))
}

/// Load example plugin `name` (crate name) with `settings` and, if given, a
/// database.
async fn load(
    name: &str,
    settings: Arc<Settings>,
    pool: Option<&sqlx::PgPool>,
) -> Result<(Engine, Plugin)> {
    let engine = engine();
    let mut loader = Loader::new(engine.clone()).with_settings(settings);
    if let Some(pool) = pool {
        loader = loader.with_pool(pool.clone());
    }
    let plugin = loader.load_file(&wasm(name)).await?;
    Ok((engine, plugin))
}

/// [`support::call`], with a failure as its one-line text (`Type: message`),
/// which is what these tests compare.
async fn call(
    engine: &Engine,
    plugin: &Plugin,
    action: &str,
    args: Value,
) -> Result<Result<Value, String>> {
    Ok(support::call(engine, plugin, action, args)
        .await?
        .map_err(|failure| failure.to_string()))
}

#[tokio::test]
async fn granted_kv_counts_across_calls() -> Result<()> {
    let db = fresh_db().await?;
    let cfg = config("[plugins.counter]\ngrants = [\"kv\"]\n")?;
    let (rt, counter) = load("counter", cfg, Some(&db.pool)).await?;
    assert_eq!(
        call(&rt, &counter, "bump", json!({"key": "visits"})).await?,
        Ok(json!(1))
    );
    assert_eq!(
        call(&rt, &counter, "bump", json!({"key": "visits"})).await?,
        Ok(json!(2))
    );
    assert_eq!(
        call(&rt, &counter, "peek", json!({"key": "visits"})).await?,
        Ok(json!(2))
    );
    assert_eq!(
        call(&rt, &counter, "peek", json!({"key": "other"})).await?,
        Ok(Value::Null)
    );
    Ok(())
}

#[tokio::test]
async fn missing_grant_refuses_the_load_naming_the_key() -> Result<()> {
    let err = load("counter", config("")?, None)
        .await
        .err()
        .context("counter loaded without a kv grant")?;
    let text = err.to_string();
    assert!(
        text.contains(
            "plugin `counter` (counter.wasm) imports `cairn:plugin/kv`, which is not granted: add \"kv\" to plugins.counter.grants in cairn.toml"
        ),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn kv_is_isolated_between_plugins() -> Result<()> {
    let db = fresh_db().await?;
    let cfg = config("[plugins.counter]\ngrants = [\"kv\"]\n")?;
    let (rt, counter) = load("counter", cfg, Some(&db.pool)).await?;
    for _ in 0..3 {
        call(&rt, &counter, "bump", json!({"key": "shared"}))
            .await?
            .map_err(|e| anyhow!(e))?;
    }
    // The same component under another module's settings: a different
    // namespace, so the same key starts from scratch.
    let other = config("[plugins.counter]\ngrants = [\"kv\"]\nkv_namespace = \"other\"\n")?;
    let (rt2, counter2) = load("counter", other, Some(&db.pool)).await?;
    assert_eq!(
        call(&rt2, &counter2, "peek", json!({"key": "shared"})).await?,
        Ok(Value::Null)
    );
    assert_eq!(
        call(&rt2, &counter2, "bump", json!({"key": "shared"})).await?,
        Ok(json!(1))
    );
    assert_eq!(
        call(&rt, &counter, "peek", json!({"key": "shared"})).await?,
        Ok(json!(3))
    );
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT namespace, key FROM cairn.kv ORDER BY namespace")
            .fetch_all(&db.pool)
            .await?;
    assert_eq!(
        rows,
        [
            ("counter".to_owned(), "shared".to_owned()),
            ("other".to_owned(), "shared".to_owned())
        ]
    );
    Ok(())
}

#[tokio::test]
async fn kv_without_a_database_is_a_clear_error() -> Result<()> {
    let cfg = config("[plugins.counter]\ngrants = [\"kv\"]\n")?;
    let (rt, counter) = load("counter", cfg, None).await?;
    let err = call(&rt, &counter, "bump", json!({"key": "k"}))
        .await?
        .err()
        .context("bump succeeded without a database")?;
    assert!(err.contains("no database"), "{err}");
    Ok(())
}

#[tokio::test]
async fn settings_never_show_a_secret_when_printed() -> Result<()> {
    let cfg = config(
        "[plugins.secrets]\ngrants = [\"config\"]\n[plugins.secrets.secrets]\ntoken = \"s3cr3t-value\"\n",
    )?;
    ensure!(
        !format!("{cfg:?}").contains("s3cr3t-value"),
        "Debug shows a secret"
    );
    Ok(())
}

#[tokio::test]
async fn secret_is_visible_to_its_plugin_only() -> Result<()> {
    let cfg = config(
        "[plugins.secrets]\ngrants = [\"config\"]\n[plugins.secrets.secrets]\ntoken = \"s3cr3t-value\"\n\
         [plugins.other]\ngrants = [\"config\"]\n[plugins.other.secrets]\nmine = \"not-yours\"\n",
    )?;
    let (rt, secrets) = load("secrets", cfg, None).await?;
    assert_eq!(
        call(&rt, &secrets, "reveal", json!({"key": "token"})).await?,
        Ok(json!("s3cr3t-value"))
    );
    assert_eq!(
        call(&rt, &secrets, "reveal", json!({"key": "mine"})).await?,
        Ok(Value::Null)
    );
    Ok(())
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_the_plugins_listing() -> Result<()> {
    let dir = plugin_dir(&["secrets", "greet"]);
    let d = dir.path().to_str().context("path")?;
    let toml = "[plugins.secrets]\ngrants = [\"config\"]\n[plugins.secrets.secrets]\ntoken = \"s3cr3t-value\"\n";
    let trace = [("CAIRN_LOG", "trace")];
    let listing = cairn_with_config(toml, &trace, &["plugins", "--plugins", d])?;
    let (out, err) = (
        String::from_utf8_lossy(&listing.stdout),
        String::from_utf8_lossy(&listing.stderr),
    );
    ensure!(listing.status.success(), "cairn plugins failed: {err}");
    assert!(out.contains("config✓"), "{out}");
    assert!(
        !out.contains("s3cr3t") && !err.contains("s3cr3t"),
        "{out}\n{err}"
    );

    let invoke = cairn_with_config(
        toml,
        &trace,
        &[
            "invoke",
            "secrets:reveal",
            "--args",
            r#"{"key":"token"}"#,
            "--plugins",
            d,
        ],
    )?;
    let err = String::from_utf8_lossy(&invoke.stderr);
    ensure!(invoke.status.success(), "cairn invoke failed: {err}");
    // The action's own result is the one place the plugin chose to put it.
    assert!(String::from_utf8_lossy(&invoke.stdout).contains("s3cr3t-value"));
    assert!(!err.contains("s3cr3t"), "{err}");
    Ok(())
}

#[tokio::test]
async fn secret_from_the_environment_reaches_its_plugin() -> Result<()> {
    let dir = plugin_dir(&["secrets"]);
    let cwd = tempfile::tempdir()?;
    let out = cairn()
        .current_dir(cwd.path())
        .env("CAIRN_PLUGIN_SECRETS_GRANTS", "config")
        .env("CAIRN_PLUGIN_SECRETS_SECRET_TOKEN", "from-env")
        .args([
            "invoke",
            "secrets:reveal",
            "--args",
            r#"{"key":"token"}"#,
            "--plugins",
        ])
        .arg(dir.path())
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-env"));
    Ok(())
}

#[tokio::test]
async fn unknown_config_key_is_an_error_naming_it() -> Result<()> {
    let err = parse("[plugins.counter]\ngrants = [\"kv\"]\nkv_namspace = \"x\"\n")
        .err()
        .context("a misspelt key was accepted")?;
    assert!(format!("{err:#}").contains("kv_namspace"), "{err:#}");

    let dir = plugin_dir(&["greet"]);
    let d = dir.path().to_str().context("path")?;
    let out = cairn_with_config(
        "[plugins.greet]\nmemory = 3\n",
        &[],
        &["plugins", "--plugins", d],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("memory") && err.contains("cairn.toml"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_grant_name_is_an_error() -> Result<()> {
    let err = parse("[plugins.counter]\ngrants = [\"kvv\"]\n")
        .err()
        .context("an unknown grant was accepted")?;
    assert!(format!("{err:#}").contains("kvv"), "{err:#}");
    Ok(())
}

#[tokio::test]
async fn dependency_cache_on_and_off_counts_constructions() -> Result<()> {
    let (rt, plugin) = load("deps_cache", config("")?, None).await?;
    assert_eq!(
        call(&rt, &plugin, "count", json!({"cached": true})).await?,
        Ok(json!(1))
    );
    assert_eq!(
        call(&rt, &plugin, "count", json!({"cached": false})).await?,
        Ok(json!(2))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_enqueue_creates_a_row_a_worker_completes() -> Result<()> {
    let db = fresh_db().await?;
    let (mut options, dir) = support::serve_options(&["chain", "greet"], fast_worker());
    options.settings = config("[plugins.chain]\ngrants = [\"enqueue\"]\n")?;
    let host = Host::start(options, db.pool.clone()).await?;
    let client = Client::new(db.pool.clone());
    let first = client
        .enqueue(
            &EnqueueRequest::new("chain", "greet_later").args(
                &cairn_payload::json::json_to_arguments(
                    &json!({"name": "Ada", "idempotency_key": "ada"}),
                )
                .map_err(|e| anyhow!("{e}"))?,
            ),
        )
        .await?;
    let worker = InProcess::run(&db.pool, host, Some(dir)).await?;
    let row = client.wait(first, SOON).await?;
    ensure!(
        row.status == ActionStatus::Succeeded,
        "chain failed: {row:?}"
    );
    let follow_up = cairn_payload::json::payload_to_json(row.result.as_deref().unwrap_or_default())
        .map_err(|e| anyhow!("{e}"))?["result"]
        .as_i64()
        .context("greet_later returned no id")?;
    let greeted = client.wait(follow_up, SOON).await?;
    assert_eq!(
        (greeted.module.as_str(), greeted.name.as_str()),
        ("greet", "hello")
    );
    assert_eq!(greeted.status, ActionStatus::Succeeded, "{greeted:?}");
    worker.stop(SOON).await?;
    Ok(())
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering every request with the
/// JSON weather `forecast` expects. Returns its address and a counter of
/// requests it received.
fn weather_server() -> Result<(String, Arc<std::sync::atomic::AtomicUsize>)> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = r#"{"summary": "sunny", "temperature_c": 21.5}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok((addr, hits))
}

fn weather_config(api: &str, allowed: &str) -> Result<Arc<Settings>> {
    config(&format!(
        "[plugins.weather]\ngrants = [\"kv\", \"config\", \"http\"]\nallowed_hosts = [\"{allowed}\"]\n\
         [plugins.weather.config]\napi_url = \"http://{api}/\"\n\
         [plugins.weather.secrets]\napi_key = \"k3y\"\n"
    ))
}

#[tokio::test]
async fn http_to_an_allowed_local_host_works() -> Result<()> {
    let db = fresh_db().await?;
    let (addr, hits) = weather_server()?;
    let (rt, weather) = load("weather", weather_config(&addr, &addr)?, Some(&db.pool)).await?;
    let forecast = call(&rt, &weather, "forecast", json!({"city": "Paris"}))
        .await?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(forecast["summary"], json!("sunny"));
    assert_eq!(forecast["from_cache"], json!(false));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test]
async fn kv_get_increment_and_delete_work_from_a_real_guest() -> Result<()> {
    let db = fresh_db().await?;
    let (addr, hits) = weather_server()?;
    let (rt, weather) = load("weather", weather_config(&addr, &addr)?, Some(&db.pool)).await?;
    // weather caches each forecast in kv: the first call stores it...
    let first = call(&rt, &weather, "forecast", json!({"city": "Paris"}))
        .await?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(first["from_cache"], json!(false));
    // ...the second is served from the cache (get + increment), `forget`
    // deletes it, and the next call fetches again.
    let cached = call(&rt, &weather, "forecast", json!({"city": "Paris"}))
        .await?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(cached["from_cache"], json!(true));
    assert_eq!(cached["cache_hits"], json!(1));
    let forgot = call(&rt, &weather, "forget", json!({"city": "Paris"}))
        .await?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(
        forgot,
        json!(true),
        "the cached entry existed and was deleted"
    );
    let fetched = call(&rt, &weather, "forecast", json!({"city": "Paris"}))
        .await?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(fetched["from_cache"], json!(false));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn http_to_another_host_or_port_is_denied_before_connecting() -> Result<()> {
    let db = fresh_db().await?;
    let (allowed, _) = weather_server()?;
    let (other, other_hits) = weather_server()?;
    let (rt, weather) = load("weather", weather_config(&other, &allowed)?, Some(&db.pool)).await?;
    let err = call(&rt, &weather, "forecast", json!({"city": "Paris"}))
        .await?
        .err()
        .context("a request to a host not in allowed_hosts succeeded")?;
    assert!(err.to_lowercase().contains("denied"), "{err}");
    assert_eq!(other_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test]
async fn http_needs_its_own_grant() -> Result<()> {
    let cfg = config("[plugins.weather]\ngrants = [\"kv\", \"config\"]\n")?;
    let err = load("weather", cfg, None)
        .await
        .err()
        .context("weather loaded without http")?;
    assert!(
        err.to_string()
            .contains("add \"http\" to plugins.weather.grants in cairn.toml"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn per_plugin_memory_cap_narrows_the_host_limit() -> Result<()> {
    let cfg = config("[plugins.hog]\nmemory_mib = 16\n")?;
    let (rt, hog) = load("hog", cfg, None).await?;
    assert!(call(&rt, &hog, "eat", json!({"mib": 4})).await?.is_ok());
    let err = call(&rt, &hog, "eat", json!({"mib": 32}))
        .await?
        .err()
        .context("hog ate past its 16 MiB cap")?;
    assert!(err.contains("memory limit of 16 MiB"), "{err}");
    Ok(())
}

#[tokio::test]
async fn per_plugin_timeout_narrows_the_requested_budget() -> Result<()> {
    let cfg = config("[plugins.sleepy]\ntimeout = \"300ms\"\n")?;
    let (rt, sleepy) = load("sleepy", cfg, None).await?;
    // The row asks for 10 s; the plugin's cap of 300 ms wins.
    let failure = support::call_with(
        &rt,
        &sleepy,
        "nap_always",
        json!({"ms": 5000}),
        invocation(Some(Duration::from_secs(10))),
    )
    .await?
    .err()
    .context("sleepy ran past its 300ms timeout")?;
    let err = failure.to_string();
    assert!(
        err.contains("TimeoutError") && err.contains("300ms"),
        "{err}"
    );
    Ok(())
}

/// A server on 127.0.0.1 that reads one request per connection and then
/// misbehaves as `respond` does.
fn misbehaving_server(respond: fn(&mut std::net::TcpStream)) -> Result<String> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                respond(&mut stream);
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn http_response_over_the_size_limit_is_cut_off() -> Result<()> {
    use std::io::Write;
    let db = fresh_db().await?;
    let addr = misbehaving_server(|stream| {
        let len = cairn::deps::http::MAX_RESPONSE_BYTES + (1 << 20);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        );
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0u64;
        while sent < len {
            if stream.write_all(&chunk).is_err() {
                return; // the host hung up: the limit at work
            }
            sent += chunk.len() as u64;
        }
    })?;
    let (rt, weather) = load("weather", weather_config(&addr, &addr)?, Some(&db.pool)).await?;
    let err = call(&rt, &weather, "forecast", json!({"city": "Oslo"}))
        .await?
        .err()
        .context("a body over the limit was accepted")?;
    assert!(
        err.to_lowercase().contains("size"),
        "the failure should name the size limit: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn http_server_that_never_answers_hits_the_first_byte_timeout() -> Result<()> {
    let db = fresh_db().await?;
    // The behaviour under test: a server that accepts and never answers.
    let addr = misbehaving_server(|_stream| std::thread::sleep(Duration::from_secs(60)))?;
    let (rt, weather) = load("weather", weather_config(&addr, &addr)?, Some(&db.pool)).await?;
    let arguments = cairn_payload::json::json_to_arguments(&json!({"city": "Lima"}))
        .map_err(|e| anyhow!("{e}"))?;
    // A call budget longer than the HTTP timeout, so the latter must fire.
    let invocation = invocation(Some(Duration::from_secs(60)));
    let started = std::time::Instant::now();
    let failure = weather
        .invoke(
            &rt,
            "forecast",
            cairn_payload::encode_arguments(&arguments),
            &invocation,
        )
        .await
        .err()
        .context("a server that never answered produced a forecast")?;
    let waited = started.elapsed();
    let timeout = cairn::deps::http::FIRST_BYTE_TIMEOUT;
    assert!(
        failure.to_string().to_lowercase().contains("timeout"),
        "{failure}"
    );
    assert!(
        failure.retryable,
        "a timeout may succeed next time: {failure}"
    );
    assert!(
        waited >= timeout - Duration::from_secs(1) && waited < timeout + Duration::from_secs(10),
        "gave up after {waited:?}, the first-byte timeout is {timeout:?}"
    );
    Ok(())
}

#[tokio::test]
async fn one_plugins_kv_keys_are_invisible_to_another() -> Result<()> {
    let db = fresh_db().await?;
    let (addr, _) = weather_server()?;
    let (rt, weather) = load("weather", weather_config(&addr, &addr)?, Some(&db.pool)).await?;
    let (rt2, counter) = load(
        "counter",
        config("[plugins.counter]\ngrants = [\"kv\"]\n")?,
        Some(&db.pool),
    )
    .await?;
    // weather writes `forecast:Paris` and counts hits in `hits:Paris`.
    for _ in 0..2 {
        call(&rt, &weather, "forecast", json!({"city": "Paris"}))
            .await?
            .map_err(|e| anyhow!(e))?;
    }
    // counter asks for the very same keys in its own namespace.
    assert_eq!(
        call(&rt2, &counter, "peek", json!({"key": "hits:Paris"})).await?,
        Ok(Value::Null)
    );
    assert_eq!(
        call(&rt2, &counter, "bump", json!({"key": "hits:Paris"})).await?,
        Ok(json!(1))
    );
    // ...and its write did not touch weather's counter.
    let third = call(&rt, &weather, "forecast", json!({"city": "Paris"}))
        .await?
        .map_err(|e| anyhow!(e))?;
    assert_eq!(third["cache_hits"], json!(2));
    Ok(())
}
