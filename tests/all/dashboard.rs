//! The dashboard in a real browser: Debian's headless Chromium, driven over
//! WebDriver (`chromedriver`, by the fantoccini crate), against a real
//! `cairn serve --http` on a real PostgreSQL with real example plugins.
//! Every test saves a screenshot of each page it visits under
//! `<target>/test-output/dashboard/`.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them); without
//! them the tests fail saying so. Browser tests run one at a time (a lock):
//! two Chromiums on a 2-core machine only slow each other down.
//!
//! chromedriver runs in a process group of its own, with the Chromium it
//! starts (and Chromium's helpers) inside it; the [`Browser`] guard kills the
//! whole group when it is dropped — a test that fails or panics halfway
//! included — so no browser outlives its test.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use cairn::queue::{ActionStatus, Client};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::pg::fresh_db;
use crate::support::{enqueue, enqueue_later, finished, http_get, row_state, until, Serve, SOON};

/// One browser at a time.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chromium's flags for a root user on a machine without a network: no
/// sandbox (root), no GPU, and nothing that phones home (each refused
/// connection costs time), in a fresh profile.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// A headless Chromium session through a chromedriver of our own.
struct Browser {
    driver: Child,
    client: Option<fantoccini::Client>,
    shots: PathBuf,
    test: &'static str,
    _profile: tempfile::TempDir,
}

fn find(binary: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{binary}` is not installed: apt-get install chromium chromium-driver (see .ci/run)")
        })
}

impl Browser {
    async fn start(test: &'static str) -> Result<Self> {
        let chromium = find("chromium")?;
        let chromedriver = find("chromedriver")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let profile = tempfile::tempdir()?;
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .context("target dir")?
            .join("test-output/dashboard");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            // Its own process group, which the Chromium it starts joins:
            // one kill(-pgid) on drop ends them all.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        // From here the guard owns the group: any `?` below kills it.
        let mut browser = Browser {
            driver,
            client: None,
            shots,
            test,
            _profile: profile,
        };
        std::fs::create_dir_all(&browser.shots)?;
        let addr = format!("127.0.0.1:{port}").parse()?;
        until("chromedriver to answer", SOON, || async {
            Ok(http_get(addr, "/status")
                .await
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| ()))
        })
        .await?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let caps = json!({
            "browserName": "chrome",
            // Leave an alert open (and visible to the test) instead of
            // dismissing it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let serde_json::Value::Object(caps) = caps else {
            bail!("capabilities are an object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("starting a Chromium session")?;
        browser.client = Some(client);
        Ok(browser)
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("connected in start")
    }

    /// Saves a screenshot of the current page as `<test>-<page>.png`.
    async fn shot(&self, page: &str) -> Result<()> {
        let png = self.client().screenshot().await?;
        ensure!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{}-{page}.png", self.test)), png)?;
        Ok(())
    }

    /// Clicks the button with id `button` and returns the notice on the
    /// page the form's answer redirects to (a click returns before that page
    /// has loaded, so this waits for the notice).
    async fn submit(&self, button: &str) -> Result<String> {
        let c = self.client();
        c.find(Locator::Id(button))
            .await
            .with_context(|| format!("no #{button} on the page"))?
            .click()
            .await?;
        Ok(c.wait()
            .at_most(SOON)
            .for_element(Locator::Id("notice"))
            .await?
            .text()
            .await?)
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(self
            .client()
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no `{css}` on the page"))?
            .text()
            .await?)
    }

    async fn close(mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            client.close().await?;
        }
        Ok(())
    }
}

impl Drop for Browser {
    /// Kills chromedriver's whole process group — Chromium and its helper
    /// processes too, which a kill of chromedriver alone would leave running
    /// (re-parented to init) — then reaps chromedriver.
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.driver.id()) {
            // SAFETY: kill(2) on the process group of our own, unreaped
            // child (its pid is the group id: `process_group(0)`).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn dashboard_pages_render_real_rows() -> Result<()> {
    let _one = BROWSER.lock().await;
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet", "math", "chatty"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let ok = enqueue(&client, "greet:hello", json!({"name": "Ada"})).await?;
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    let later = enqueue_later(&client, "math:add").await?;
    finished(&client, ok, SOON).await?;
    finished(&client, bad, SOON).await?;
    let host_id: String = sqlx::query_scalar("SELECT host_id FROM cairn.hosts")
        .fetch_one(&db.pool)
        .await?;

    let b = Browser::start("pages").await?;
    let c = b.client();
    c.goto(&host.url("/")).await?;
    assert_eq!(c.title().await?, "Overview · cairn");
    let depth = b.text("#depth").await?;
    assert!(depth.contains("math:add"), "{depth}");
    let hosts = b.text("#hosts").await?;
    assert!(
        hosts.contains(&host_id) && hosts.contains("live") && hosts.contains("greet.wasm"),
        "{hosts}"
    );
    let throughput = b.text("#throughput").await?;
    assert!(
        throughput.contains("2 rows finished, 50.0% failed"),
        "{throughput}"
    );
    b.shot("overview").await?;

    c.goto(&host.url("/rows")).await?;
    let lines = c.find_all(Locator::Css("#rows tbody tr")).await?;
    assert_eq!(lines.len(), 3);
    let rows = b.text("#rows").await?;
    assert!(rows.contains("ZeroDivisionError"), "{rows}");
    b.shot("rows").await?;

    // Paged by id: two rows, then the older one.
    c.goto(&host.url("/rows?limit=2")).await?;
    assert_eq!(c.find_all(Locator::Css("#rows tbody tr")).await?.len(), 2);
    c.find(Locator::Id("next")).await?.click().await?;
    until("the next page", SOON, || async {
        Ok(c.current_url()
            .await?
            .as_str()
            .contains("before=")
            .then_some(()))
    })
    .await?;
    let older = c
        .find(Locator::Css("#rows tbody tr"))
        .await?
        .attr("data-id")
        .await?;
    assert_eq!(
        older,
        Some(ok.to_string()),
        "the second page holds the oldest row"
    );
    assert!(
        c.find_all(Locator::Id("next")).await?.is_empty(),
        "and no third"
    );

    c.goto(&host.url("/rows?status=failed")).await?;
    assert_eq!(c.find_all(Locator::Css("#rows tbody tr")).await?.len(), 1);
    c.find(Locator::LinkText(&bad.to_string()))
        .await?
        .click()
        .await?;
    assert_eq!(c.title().await?, format!("Row {bad} · cairn"));
    assert_eq!(b.text("#status").await?, "failed");
    assert!(b.text("#error").await?.contains("ZeroDivisionError"));
    assert!(b.text("#args").await?.contains(r#""b": 0"#));
    assert!(
        b.text("#fields").await?.contains(&host_id),
        "the host that ran it"
    );
    b.shot("row").await?;

    c.goto(&host.url(&format!("/rows/{later}"))).await?;
    assert_eq!(b.text("#status").await?, "queued");

    // A broken file lands next to the good ones: the host rejects it, and
    // the plugins page says which file, in which phase, and why.
    std::fs::write(host.plugins().join(".bad.tmp"), b"not wasm at all")?;
    std::fs::rename(
        host.plugins().join(".bad.tmp"),
        host.plugins().join("bad.wasm"),
    )?;
    until("the rejection in /metrics", SOON, || async {
        let m = http_get(host.addr(), "/metrics").await?;
        Ok(m.body
            .contains("cairn_plugin_rejections_total 1")
            .then_some(()))
    })
    .await?;
    c.goto(&host.url("/plugins")).await?;
    let plugins = b.text("#plugins").await?;
    assert!(
        plugins.contains("greet.wasm") && plugins.contains("math:divide"),
        "{plugins}"
    );
    assert!(
        plugins.contains("log✓"),
        "chatty's granted log import: {plugins}"
    );
    let bad = c
        .find(Locator::XPath("//tr[td[1][text()='bad.wasm']]"))
        .await?
        .text()
        .await?;
    assert!(
        bad.contains("(validate)") && bad.contains("not a WebAssembly file"),
        "{bad}"
    );
    b.shot("plugins").await?;
    b.close().await
}

#[tokio::test]
async fn dashboard_retry_button_reruns_a_failed_row() -> Result<()> {
    let _one = BROWSER.lock().await;
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["math"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let bad = enqueue(&client, "math:divide", json!({"a": 1, "b": 0})).await?;
    finished(&client, bad, SOON).await?;
    assert_eq!(row_state(&db.pool, bad).await?, (ActionStatus::Failed, 1));

    let b = Browser::start("retry").await?;
    let c = b.client();
    c.goto(&host.url(&format!("/rows/{bad}"))).await?;
    b.shot("before").await?;
    let notice = b.submit("retry").await?;
    assert!(
        notice.contains("queued again"),
        "the page says so: {notice}"
    );
    until("the row to run again and fail", SOON, || async {
        Ok((row_state(&db.pool, bad).await? == (ActionStatus::Failed, 2)).then_some(()))
    })
    .await?;
    c.goto(&host.url(&format!("/rows/{bad}"))).await?;
    assert_eq!(b.text("#attempts").await?, "2/2");
    b.shot("after").await?;
    b.close().await
}

#[tokio::test]
async fn dashboard_cancel_button_cancels_a_queued_row() -> Result<()> {
    let _one = BROWSER.lock().await;
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let later = enqueue_later(&client, "greet:hello").await?;

    let b = Browser::start("cancel").await?;
    let c = b.client();
    c.goto(&host.url(&format!("/rows/{later}"))).await?;
    assert!(
        c.find_all(Locator::Id("retry")).await?.is_empty(),
        "no retry on a queued row"
    );
    b.shot("before").await?;
    let notice = b.submit("cancel").await?;
    assert!(notice.contains("is cancelled"), "{notice}");
    assert_eq!(row_state(&db.pool, later).await?.0, ActionStatus::Cancelled);
    assert_eq!(b.text("#status").await?, "cancelled");
    assert!(c.find_all(Locator::Id("cancel")).await?.is_empty());
    b.shot("after").await?;
    b.close().await
}

#[tokio::test]
async fn dashboard_shows_a_script_argument_as_inert_text() -> Result<()> {
    let _one = BROWSER.lock().await;
    let db = fresh_db().await?;
    let host = Serve::start_http(&db, &["greet"], &[]).await?;
    let client = Client::new(db.pool.clone());
    let evil =
        "<script>document.title='pwned';alert('xss')</script><img src=x onerror=alert('img')>";
    let id = enqueue(&client, "greet:hello", json!({"name": evil})).await?;
    let row = finished(&client, id, SOON).await?;
    ensure!(row.status == ActionStatus::Succeeded, "{row:?}");

    let b = Browser::start("script").await?;
    let c = b.client();
    for path in [format!("/rows/{id}"), "/rows".to_owned()] {
        c.goto(&host.url(&path)).await?;
        match c.get_alert_text().await {
            Err(e) if e.is_no_such_alert() => {}
            Ok(text) => bail!("a script ran on {path}: alert({text:?})"),
            Err(e) => return Err(e.into()),
        }
        assert!(
            c.find_all(Locator::Css("main script, main img"))
                .await?
                .is_empty(),
            "no element was made from row data on {path}"
        );
    }
    c.goto(&host.url(&format!("/rows/{id}"))).await?;
    assert_eq!(
        c.title().await?,
        format!("Row {id} · cairn"),
        "the title was not rewritten"
    );
    let args = b.text("#args").await?;
    assert!(args.contains(evil), "shown as text: {args}");
    assert!(b
        .text("#result")
        .await?
        .contains(&format!("Hello, {evil}!")));
    assert!(c.source().await?.contains("&lt;script&gt;"));
    b.shot("row").await?;
    b.close().await
}
