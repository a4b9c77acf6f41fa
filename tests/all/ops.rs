//! The operations surface without a browser: `cairn serve --http` (health,
//! metrics, access rules, CSRF), the queue-control commands (`ls`, `retry`,
//! `cancel`, `stats`, `plugins`) against `--database-url` and the embedded
//! default, and JSON logs. Real hosts (`cairn serve` children), a real
//! PostgreSQL, real example plugins.

use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn::queue::{ActionStatus, Client, LoadedPlugin};
use cairn::serve::Host;
use cairn::worker::WorkerConfig;
use serde_json::{json, Value};

use crate::pg::{fresh_db, StateDir, TestDb};
use crate::support::{
    assert_clean_failure, assert_usage_error, cairn, enqueue, enqueue_later, fast_worker, finished,
    http_get, http_request, on_a_terminal, plugin_dir, request, row_state, serve_options, until,
    InProcess, Serve, SOON,
};

/// The CSRF token in a page's forms.
pub fn csrf_in(page: &str) -> Result<String> {
    let at = page
        .find(r#"name="csrf" value=""#)
        .context("no CSRF field in the page")?
        + r#"name="csrf" value=""#.len();
    Ok(page[at..]
        .split('"')
        .next()
        .context("unterminated CSRF value")?
        .to_owned())
}

fn run(args: &[&str], db: &TestDb) -> Result<Output> {
    Ok(cairn()
        .args(args)
        .args(["--database-url", &db.url])
        .env_remove("CAIRN_DATABASE_URL")
        .output()?)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_out(out: &Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}\nstderr: {}", stdout(out), stderr(out)))
}

// ---------------------------------------------------------------------------
// --http
// ---------------------------------------------------------------------------

#[tokio::test]
async fn http_on_a_non_loopback_address_without_a_token_refuses_to_start() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugin_dir(&["greet"]);
    let out = cairn()
        .args(["serve", "--http", "0.0.0.0:0", "--plugins"])
        .arg(dir.path())
        .args(["--database-url", &db.url])
        .env_remove("CAIRN_HTTP_TOKEN")
        .output()?;
    assert_clean_failure(&out, "CAIRN_HTTP_TOKEN");
    assert_eq!(
        out.status.code(),
        Some(1),
        "not a usage error: the host refuses"
    );
    let hosts: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.hosts")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(hosts, 0, "the host never started");
    Ok(())
}

#[tokio::test]
async fn metrics_count_attempts_by_registered_action_and_outcome() -> Result<()> {
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet", "math"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let ok = enqueue(&client, "greet:hello", json!({"name": "Ada"})).await?;
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    finished(&client, ok, SOON).await?;
    finished(&client, bad, SOON).await?;
    // Rows of an action nobody serves, whose name is attacker-chosen data.
    enqueue(&client, "<script>:x\"y", json!({})).await?;
    enqueue_later(&client, "greet:hello").await?;

    let text = until("depth and attempts in /metrics", SOON, || async {
        let r = http_get(host.addr(), "/metrics").await?;
        ensure!(r.status == 200, "{} {}", r.status, r.body);
        Ok((r
            .body
            .contains(r#"cairn_queue_depth_rows{action="greet:hello",status="queued"} 1"#)
            && r.body
                .contains(r#"cairn_attempts_total{action="math:divide",outcome="failed"} 1"#))
        .then_some(r.body))
    })
    .await?;
    for needle in [
        r#"cairn_attempts_total{action="greet:hello",outcome="succeeded"} 1"#,
        r#"cairn_run_seconds_count{action="greet:hello"} 1"#,
        r#"cairn_queue_wait_seconds_count{action="math:divide"} 1"#,
        r#"cairn_queue_depth_rows{action="other",status="queued"} 1"#,
        "cairn_claim_batch_rows_count",
        "cairn_completion_batch_rows_count",
        "cairn_inflight_actions 0",
        "cairn_free_permits ",
        "cairn_worker_running 1",
        "cairn_plugin_loads_total 2",
        "cairn_plugin_rejections_total 0",
        "cairn_leases_lost_total 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("script"), "row data became a label:\n{text}");
    Ok(())
}

#[tokio::test]
async fn healthz_says_503_with_a_reason_when_shutting_down_or_the_database_is_gone() -> Result<()> {
    let db = fresh_db().await?;
    let mut host = Serve::start_http(&db, &["looper"], &[]).await?;
    let ok = http_get(host.addr(), "/healthz").await?;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));

    // An action that runs until its timeout keeps the host in its grace
    // period after SIGTERM.
    let client = Client::new(db.pool.clone());
    let spin = enqueue(&client, "looper:spin", json!({})).await?;
    until("the looper to run", SOON, || async {
        Ok((row_state(&db.pool, spin).await?.0 == ActionStatus::Running).then_some(()))
    })
    .await?;
    host.signal(libc::SIGTERM)?;
    let r = until("/healthz to say 503", SOON, || async {
        let r = http_get(host.addr(), "/healthz").await?;
        Ok((r.status == 503).then_some(r))
    })
    .await?;
    assert_eq!(r.body, "shutting down\n");
    assert!(host.exit_within(Duration::from_secs(30)).await?.success());

    // The database itself goes away under a running host.
    let db2 = fresh_db().await?;
    let host2 = Serve::start_http(&db2, &["greet"], &[]).await?;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db2.pool)
        .await?;
    db2.pool.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&db.pool)
        .await?;
    let r = until("/healthz to notice the database is gone", SOON, || async {
        let r = http_get(host2.addr(), "/healthz").await?;
        Ok((r.status == 503).then_some(r))
    })
    .await?;
    assert!(r.body.starts_with("database"), "{}", r.body);
    assert_eq!(r.body.lines().count(), 1, "one line: {}", r.body);
    Ok(())
}

#[tokio::test]
async fn with_a_token_every_page_needs_it_as_bearer_or_login_cookie() -> Result<()> {
    let db = fresh_db().await?;
    let token = "t0ken-for-tests";
    let host = Serve::start_http(&db, &["greet"], &[("CAIRN_HTTP_TOKEN", token)]).await?;
    let a = host.addr();

    let r = http_get(a, "/metrics").await?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let bearer = format!("Bearer {token}");
    let r = http_request(a, "GET", "/metrics", &[("Authorization", &bearer)], None).await?;
    assert_eq!(r.status, 200);
    let r = http_request(
        a,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer nope")],
        None,
    )
    .await?;
    assert_eq!(r.status, 401);

    // A browser is sent to the login form, and the form sets a cookie.
    let r = http_request(a, "GET", "/", &[("Accept", "text/html")], None).await?;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http_request(a, "POST", "/login", &form, Some("token=wrong")).await?;
    assert_eq!(r.status, 401);
    let r = http_request(a, "POST", "/login", &form, Some(&format!("token={token}"))).await?;
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").context("no cookie")?.to_owned();
    assert!(
        !cookie.contains(token),
        "the cookie is not the token: {cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap_or_default();
    let r = http_request(a, "GET", "/", &[("Cookie", session)], None).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Queue depth"));

    // Health checks stay open.
    assert_eq!(http_get(a, "/healthz").await?.status, 200);
    // The token never reaches the log.
    assert!(!host.stderr_text().contains(token));
    Ok(())
}

#[tokio::test]
async fn without_a_token_only_loopback_host_headers_are_served() -> Result<()> {
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet"], &[]).await?;
    let r = http_request(
        host.addr(),
        "GET",
        "/",
        &[("Host", "rebound.example:80")],
        None,
    )
    .await?;
    assert_eq!(r.status, 421, "DNS rebinding is refused: {}", r.body);
    let r = http_request(host.addr(), "GET", "/", &[("Host", "localhost")], None).await?;
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    Ok(())
}

#[tokio::test]
async fn retry_and_cancel_forms_are_refused_without_the_csrf_token() -> Result<()> {
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["math"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    finished(&client, bad, SOON).await?;
    let later = enqueue_later(&client, "math:add").await?;
    let form = [("Content-Type", "application/x-www-form-urlencoded")];

    for body in ["", "csrf=0000"] {
        let r = http_request(
            host.addr(),
            "POST",
            &format!("/rows/{bad}/retry"),
            &form,
            Some(body),
        )
        .await?;
        assert_eq!(r.status, 403, "{}", r.body);
        let r = http_request(
            host.addr(),
            "POST",
            &format!("/rows/{later}/cancel"),
            &form,
            Some(body),
        )
        .await?;
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(row_state(&db.pool, bad).await?, (ActionStatus::Failed, 1));
    assert_eq!(row_state(&db.pool, later).await?.0, ActionStatus::Queued);

    // With the page's token both work.
    let page = http_get(host.addr(), &format!("/rows/{bad}")).await?;
    let csrf = csrf_in(&page.body)?;
    let body = format!("csrf={csrf}");
    let r = http_request(
        host.addr(),
        "POST",
        &format!("/rows/{bad}/retry"),
        &form,
        Some(&body),
    )
    .await?;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some(&*format!("/rows/{bad}?done=retried")))
    );
    until("the retried row to fail again", SOON, || async {
        Ok((row_state(&db.pool, bad).await? == (ActionStatus::Failed, 2)).then_some(()))
    })
    .await?;
    let r = http_request(
        host.addr(),
        "POST",
        &format!("/rows/{later}/cancel"),
        &form,
        Some(&body),
    )
    .await?;
    assert_eq!(r.status, 303);
    assert_eq!(row_state(&db.pool, later).await?.0, ActionStatus::Cancelled);
    // Unknown rows are a 404, not an error page.
    let r = http_request(
        host.addr(),
        "POST",
        "/rows/999999/cancel",
        &form,
        Some(&body),
    )
    .await?;
    assert_eq!(r.status, 404);
    assert_eq!(http_get(host.addr(), "/rows/999999").await?.status, 404);
    let r = http_get(host.addr(), "/rows?status=bogus").await?;
    assert!(
        r.status == 200 && r.body.contains("unknown status"),
        "{}",
        r.body
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_stable_fields() -> Result<()> {
    let db = fresh_db().await?;
    let host = Serve::start_http(
        &db,
        &["math", "chatty"],
        &[("CAIRN_LOG_FORMAT", "json"), ("CAIRN_LOG", "info")],
    )
    .await?;
    let client = Client::new(db.pool.clone());
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    let chat = enqueue(&client, "chatty:chat", json!({"message": "zebra"})).await?;
    finished(&client, bad, SOON).await?;
    finished(&client, chat, SOON).await?;
    let lines = until("the failure's log line", SOON, || async {
        let text = host.stderr_text();
        Ok(text.contains("ZeroDivisionError").then_some(text))
    })
    .await?;
    let mut objects = Vec::new();
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        for key in ["timestamp", "level", "target", "message", "host"] {
            ensure!(v.get(key).is_some(), "no {key} in {line}");
        }
        objects.push(v);
    }
    let failure = objects
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("ZeroDivisionError"))
        })
        .context("the failure line")?;
    assert_eq!(failure["action"], "math:divide");
    assert_eq!(failure["action_id"], bad);
    assert_eq!(failure["attempt"], 1);
    // The guest's log records and its stdout and stderr lines: each names
    // the action and the row it ran for.
    let guest: Vec<&Value> = objects
        .iter()
        .filter(|v| v["target"] == "cairn::guest")
        .collect();
    for kind in ["zebra", "stdout: zebra", "stderr: zebra"] {
        let line = guest
            .iter()
            .find(|v| v["message"] == kind)
            .with_context(|| format!("a guest line {kind:?} in {guest:?}"))?;
        assert_eq!(line["action"], "chatty:chat", "{line}");
        assert_eq!(line["action_id"], chat, "{line}");
        assert_eq!(line["attempt"], 1, "{line}");
    }
    let loaded = objects
        .iter()
        .find(|v| v.get("plugin").is_some())
        .context("a line naming a plugin file")?;
    assert!(
        loaded["plugin"]
            .as_str()
            .unwrap_or_default()
            .ends_with(".wasm"),
        "{loaded}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Queue control from the CLI
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ls_retry_cancel_and_stats_work_against_a_database_url() -> Result<()> {
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet", "math"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let ok = enqueue(&client, "greet:hello", json!({"name": "Ada"})).await?;
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    let later = enqueue_later(&client, "greet:hello").await?;
    finished(&client, ok, SOON).await?;
    finished(&client, bad, SOON).await?;

    // ls: JSON, filters, table.
    let rows = json_out(&run(&["ls", "--json"], &db)?)?;
    let ids: Vec<i64> = rows
        .as_array()
        .context("an array")?
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![later, bad, ok], "newest first");
    let failed = &rows[1];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["action"], "math:divide");
    assert_eq!(failed["error"]["type"], "ZeroDivisionError");
    assert!(
        failed["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{failed}"
    );
    let only = json_out(&run(
        &[
            "ls",
            "--status",
            "failed",
            "--action",
            "math:divide",
            "--json",
        ],
        &db,
    )?)?;
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    let paged = json_out(&run(
        &[
            "ls",
            "--limit",
            "1",
            "--before",
            &later.to_string(),
            "--json",
        ],
        &db,
    )?)?;
    assert_eq!(paged[0]["id"], bad);
    let table = run(&["ls", "--since", "10m"], &db)?;
    let text = stdout(&table);
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("math:divide") && l.contains("ZeroDivisionError")),
        "{text}"
    );

    // Bad input: one line, exit 2, nothing changed.
    assert_usage_error(
        &run(&["ls", "--status", "bogus"], &db)?,
        "unknown status `bogus`",
    );
    assert_usage_error(&run(&["ls", "--since", "5x"], &db)?, "--since");
    assert_usage_error(&run(&["ls", "--action", "nocolon"], &db)?, "MODULE:NAME");
    assert_usage_error(
        &run(&["retry", "999999", &bad.to_string()], &db)?,
        "no action with id 999999",
    );
    assert_usage_error(
        &run(&["cancel", "999998"], &db)?,
        "no action with id 999998",
    );
    assert_eq!(
        row_state(&db.pool, bad).await?,
        (ActionStatus::Failed, 1),
        "nothing retried"
    );

    // retry: a failed row runs again and its attempts keep counting; a row
    // that is not failed is left alone and reported.
    let out = run(&["retry", &bad.to_string()], &db)?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("retried 1 row(s): {bad}"));
    until("the retried row to fail again", SOON, || async {
        Ok((row_state(&db.pool, bad).await? == (ActionStatus::Failed, 2)).then_some(()))
    })
    .await?;
    let out = run(&["retry", &ok.to_string()], &db)?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!("left alone: row {ok} (succeeded, not failed)")),
        "{}",
        stdout(&out)
    );

    // retry --failed, narrowed by action.
    let out = run(
        &["retry", "--failed", "--action", "greet:hello", "--json"],
        &db,
    )?;
    assert_eq!(json_out(&out)?["done"], json!([]));
    let out = run(
        &[
            "retry",
            "--failed",
            "--action",
            "math:divide",
            "--since",
            "1h",
            "--json",
        ],
        &db,
    )?;
    assert_eq!(json_out(&out)?["done"], json!([bad]));
    until("the row to fail a third time", SOON, || async {
        Ok((row_state(&db.pool, bad).await? == (ActionStatus::Failed, 3)).then_some(()))
    })
    .await?;

    // cancel.
    let out = run(
        &["cancel", &later.to_string(), &ok.to_string(), "--json"],
        &db,
    )?;
    let report = json_out(&out)?;
    assert_eq!(report["done"], json!([later]));
    assert_eq!(report["skipped"][0]["id"], ok);
    assert_eq!(row_state(&db.pool, later).await?.0, ActionStatus::Cancelled);

    // stats: depth and the last five minutes.
    let stats = json_out(&run(&["stats", "--json"], &db)?)?;
    let minutes = stats["minutes"].as_array().context("minutes")?;
    assert_eq!(minutes.len(), 5);
    let failed: i64 = minutes.iter().filter_map(|m| m["failed"].as_i64()).sum();
    let succeeded: i64 = minutes.iter().filter_map(|m| m["succeeded"].as_i64()).sum();
    assert_eq!((succeeded, failed), (1, 1), "{stats}");
    let text = stdout(&run(&["stats"], &db)?);
    assert!(
        text.contains("queue depth") && text.contains("ERROR RATE"),
        "{text}"
    );
    drop(host);
    Ok(())
}

#[tokio::test]
async fn plugins_shows_what_running_hosts_loaded_beside_the_directory() -> Result<()> {
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet"], &[]).await?;
    let dir = plugin_dir(&["greet", "math"]);
    let d = dir.path().to_str().context("utf-8 path")?;
    let digest = hex_digest(&host.plugins().join("greet.wasm"))?;

    let out = run(&["plugins", "--plugins", d, "--json"], &db)?;
    let v = json_out(&out)?;
    let hosts = v["hosts"].as_array().context("hosts")?;
    assert_eq!(hosts.len(), 1, "{v}");
    let loaded = &hosts[0]["plugins"];
    assert_eq!(loaded[0]["file"], "greet.wasm");
    assert_eq!(loaded[0]["digest"], digest.as_str());
    assert_eq!(loaded[0]["actions"], json!(["hello"]));

    let text = stdout(&run(&["plugins", "--plugins", d], &db)?);
    assert!(text.contains("math:add"), "local listing: {text}");
    let line = text
        .lines()
        .find(|l| {
            l.contains("greet.wasm")
                && l.contains(&digest[..12])
                && l.contains("greet:hello")
                && !l.starts_with("greet:")
        })
        .with_context(|| format!("a host line: {text}"))?;
    assert!(line.contains('-'), "{line}");

    let local = stdout(&run(&["plugins", "--plugins", d, "--dir"], &db)?);
    assert!(!local.contains("running hosts"), "{local}");
    Ok(())
}

fn hex_digest(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(std::fs::read(path)?)))
}

#[tokio::test]
async fn a_retried_row_that_failed_before_action_kinds_existed_runs_again() -> Result<()> {
    let db = fresh_db().await?;
    let host = InProcess::start(&db.pool, &["math"], fast_worker()).await?;
    let client = Client::new(db.pool.clone());
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    finished(&client, bad, SOON).await?;
    assert_eq!(row_state(&db.pool, bad).await?, (ActionStatus::Failed, 1));
    // As a row that finished before migration 0005 is: no action kind.
    sqlx::query("UPDATE cairn.actions SET kind = NULL WHERE id = $1")
        .bind(bad)
        .execute(&db.pool)
        .await?;
    let report = cairn::queue::admin::retry(&db.pool, &[bad]).await?;
    assert_eq!(report.done, [bad]);
    until(
        "the retried row to be claimed and fail again",
        SOON,
        || async {
            Ok((row_state(&db.pool, bad).await? == (ActionStatus::Failed, 2)).then_some(()))
        },
    )
    .await?;
    host.stop(SOON).await?;
    Ok(())
}

#[tokio::test]
async fn retry_keeps_a_keyless_row_apart_from_a_key_that_spells_its_id() -> Result<()> {
    let db = fresh_db().await?;
    let host = InProcess::start(&db.pool, &["math"], fast_worker()).await?;
    let client = Client::new(db.pool.clone());
    let keyless = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    // An idempotency key is any string, so also one that looks like how
    // retry once grouped keyless rows.
    let keyed = client
        .enqueue(
            &request("math:divide", json!({"a": 1, "b": 0}))?
                .idempotency_key(format!("id:{keyless}")),
        )
        .await?;
    for id in [keyless, keyed] {
        finished(&client, id, SOON).await?;
    }
    host.stop(SOON).await?;
    let report = cairn::queue::admin::retry(&db.pool, &[keyless, keyed]).await?;
    let mut done = report.done.clone();
    done.sort_unstable();
    assert_eq!(done, [keyless, keyed], "{report:?}");
    Ok(())
}

/// The plugin files host `host_id` has published in `cairn.hosts`.
async fn published(pool: &sqlx::PgPool, host_id: &str) -> Result<Vec<LoadedPlugin>> {
    let json: Value = sqlx::query_scalar("SELECT plugins FROM cairn.hosts WHERE host_id = $1")
        .bind(host_id)
        .fetch_one(pool)
        .await?;
    Ok(serde_json::from_value(json)?)
}

#[tokio::test]
async fn a_rejected_file_is_published_at_once_not_at_the_next_heartbeat() -> Result<()> {
    let db = fresh_db().await?;
    // A heartbeat an hour apart: only the reload event can publish in time.
    let worker = WorkerConfig {
        heartbeat_every: Duration::from_secs(3600),
        ..fast_worker()
    };
    let (mut options, dir) = serve_options(&["greet"], worker);
    options.reload.watch = true;
    let host = Host::start(options, db.pool.clone()).await?;
    let host = InProcess::run(&db.pool, host, Some(dir)).await?;
    let at_start = published(&db.pool, &host.host_id).await?;
    assert_eq!(at_start.len(), 1, "{at_start:?}");
    assert_eq!(at_start[0].file, "greet.wasm");
    assert_eq!(at_start[0].actions, ["hello"]);
    assert!(at_start[0].rejected.is_none(), "{at_start:?}");

    let plugins = host.plugins.files()[0]
        .file
        .parent()
        .context("plugin dir")?
        .to_owned();
    std::fs::write(plugins.join(".bad.tmp"), b"not wasm at all")?;
    std::fs::rename(plugins.join(".bad.tmp"), plugins.join("bad.wasm"))?;
    let bad = until("the rejection in cairn.hosts", SOON, || async {
        Ok(published(&db.pool, &host.host_id)
            .await?
            .into_iter()
            .find(|p| p.file == "bad.wasm"))
    })
    .await?;
    let rejected = bad.rejected.context("published as rejected")?;
    assert!(
        rejected.reason.starts_with("(validate)"),
        "{}",
        rejected.reason
    );
    assert_eq!(bad.digest, None, "nothing of it serves");
    host.stop(SOON).await?;
    Ok(())
}

#[tokio::test]
async fn serve_that_fails_to_start_stops_the_embedded_server_it_started() -> Result<()> {
    let state = StateDir::new("serve-fails");
    let cwd = tempfile::tempdir()?;
    let dir = plugin_dir(&["greet"]);
    // The address is taken: the host fails after the database is up.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let out = cairn()
        .current_dir(cwd.path())
        .args(["serve", "--http", &addr, "--plugins"])
        .arg(dir.path())
        .env("CAIRN_STATE_DIR", state.path())
        .env_remove("CAIRN_DATABASE_URL")
        .env_remove("CAIRN_HTTP_TOKEN")
        .output()?;
    assert_clean_failure(&out, "cannot listen");
    assert!(
        state.path().join("postgres/data").exists(),
        "serve started the embedded server"
    );
    assert!(
        !state.path().join("postgres/run/.s.PGSQL.5432").exists(),
        "and stopped it on the way out"
    );
    Ok(())
}

#[tokio::test]
async fn queue_commands_work_on_the_embedded_server() -> Result<()> {
    let state = StateDir::new("ops-cli");
    let cwd = tempfile::tempdir()?;
    let cmd = |args: &[&str]| -> Result<Output> {
        Ok(cairn()
            .current_dir(cwd.path())
            .args(args)
            .env("CAIRN_STATE_DIR", state.path())
            .env_remove("CAIRN_DATABASE_URL")
            .output()?)
    };
    let out = cmd(&[
        "enqueue",
        "greet:hello",
        "--args",
        r#"{"name":"Ada"}"#,
        "--delay",
        "1h",
    ])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let id: i64 = stdout(&out).trim().parse()?;
    let rows = json_out(&cmd(&["ls", "--status", "queued", "--json"])?)?;
    assert_eq!(rows[0]["id"], id);
    let stats = json_out(&cmd(&["stats", "--json"])?)?;
    assert_eq!(
        stats["depth"],
        json!([{"action": "greet:hello", "status": "queued", "rows": 1}])
    );
    let out = cmd(&["retry", &id.to_string()])?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "queued is not failed: {}",
        stdout(&out)
    );
    let out = cmd(&["cancel", &id.to_string()])?;
    assert_eq!(stdout(&out).trim(), format!("cancelled 1 row(s): {id}"));
    assert_usage_error(&cmd(&["cancel", "424242"])?, "no action with id 424242");
    // No server runs now (the last command stopped it): `plugins` does not
    // start one to ask.
    let dir = plugin_dir(&["greet"]);
    let out = cmd(&["plugins", "--plugins", dir.path().to_str().context("path")?])?;
    assert!(
        stdout(&out).contains("no database to ask"),
        "{}",
        stdout(&out)
    );
    assert!(
        !state.path().join("postgres/run/.s.PGSQL.5432").exists(),
        "plugins started no server"
    );
    Ok(())
}

#[tokio::test]
async fn bench_passes_http_to_its_serve_child() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugin_dir(&["noop"]);
    let cwd = tempfile::tempdir()?;
    let out = cairn()
        .current_dir(cwd.path())
        .args([
            "bench",
            "--actions",
            "200",
            "--trickle",
            "3",
            "--concurrency",
            "8",
        ])
        .args(["--http", "127.0.0.1:0", "--plugins"])
        .arg(dir.path())
        .args(["--database-url", &db.url])
        // The child inherits this, so its log (with the dashboard line)
        // reaches the bench's stderr.
        .env("CAIRN_LOG", "info")
        .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("actions/s"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("dashboard at http://127.0.0.1:"),
        "the serve child ran with --http: {}",
        stderr(&out)
    );
    Ok(())
}

#[tokio::test]
async fn bench_shares_the_queue_between_several_serve_children() -> Result<()> {
    let db = fresh_db().await?;
    let dir = plugin_dir(&["noop"]);
    let cwd = tempfile::tempdir()?;
    let bench = |extra: &[&str]| {
        cairn()
            .current_dir(cwd.path())
            .args(["bench", "--actions", "400", "--trickle", "3"])
            .args(["--concurrency", "4", "--hosts", "2", "--plugins"])
            .arg(dir.path())
            .args(["--database-url", &db.url])
            .args(extra)
            .output()
    };
    let out = bench(&["--host-threads", "1"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let line = report
        .lines()
        .find(|l| l.starts_with("throughput:"))
        .with_context(|| report.clone())?;
    assert!(line.contains("2 host(s) (1 thread(s))"), "{line}");
    // Rows are counted per registered child by the host that ran them.
    let split: Vec<i64> = line
        .rsplit_once("rows per host ")
        .context("no split")?
        .1
        .split(" / ")
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(split.len(), 2, "{line}");
    assert_eq!(split.iter().sum::<i64>(), 400, "{line}");

    // Two children cannot listen on one fixed port.
    let out = bench(&["--http", "127.0.0.1:9"])?;
    assert_clean_failure(&out, "give port 0");
    Ok(())
}

#[tokio::test]
async fn retry_failed_draws_a_progress_bar_only_on_a_terminal() -> Result<()> {
    let db = fresh_db().await?;
    let _host = Serve::start_http(&db, &["math"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?);
    }
    for id in &ids {
        finished(&client, *id, SOON).await?;
    }
    let failed_again = |attempts: i32| {
        let (db, ids) = (&db, &ids);
        async move {
            for id in ids {
                if row_state(&db.pool, *id).await? != (ActionStatus::Failed, attempts) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    };

    // Piped: the same lines as ever, no bar.
    let out = run(&["retry", "--failed"], &db)?;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("retry [") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    until("the rows to fail again", SOON, || failed_again(2)).await?;

    // On a terminal (script(1) gives the command a pty): a bar.
    let out = on_a_terminal(&["retry", "--failed", "--database-url", &db.url])?;
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("retry ["), "a progress bar: {screen:?}");
    assert!(screen.contains("retried 3 row(s)"), "{screen:?}");
    until("the rows to fail a third time", SOON, || failed_again(3)).await?;
    Ok(())
}
