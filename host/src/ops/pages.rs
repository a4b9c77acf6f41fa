//! The dashboard's pages and controls. Each handler gathers what its page
//! shows into a plain view struct of strings and numbers (formatting happens
//! here, in Rust), and an askama template in `host/templates/` lays it out;
//! askama escapes every `{{ }}` for HTML, so nothing a row holds — arguments,
//! results, error messages, action names — can become markup.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::AppState;
use crate::error::one_line;
use crate::key::ActionKey;
use crate::plugin::display_name;
use crate::queue::admin::{self, attempts_text, time_text, RowFilter};
use crate::queue::ActionStatus;

/// Largest JSON document a row page shows per payload; past it the text is
/// cut and says so. A page must stay usable whatever a row holds.
const SHOW_JSON_CHARS: usize = 64 * 1024;

/// Payloads larger than this are not decoded for display at all (decoding
/// costs memory and time proportional to the size).
const DECODE_BYTES: usize = 4 * 1024 * 1024;

/// An error page: the status and one line.
pub(super) struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = MessagePage {
            title: self.0.canonical_reason().unwrap_or("error").to_owned(),
            active: "",
            message: self.1,
        };
        match page.render() {
            Ok(html) => (self.0, Html(html)).into_response(),
            Err(_) => (self.0, "error\n").into_response(),
        }
    }
}

impl From<anyhow::Error> for PageError {
    fn from(err: anyhow::Error) -> Self {
        let line = one_line(&err);
        tracing::warn!("dashboard: {line}");
        PageError(StatusCode::INTERNAL_SERVER_ERROR, line)
    }
}

impl From<askama::Error> for PageError {
    fn from(err: askama::Error) -> Self {
        PageError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {err}"),
        )
    }
}

type PageResult = Result<Response, PageError>;

fn html(page: impl Template) -> PageResult {
    Ok(Html(page.render()?).into_response())
}

fn time_opt(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time_text).unwrap_or_default()
}

fn age(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => "just now".to_owned(),
        s if s < 120.0 => format!("{s:.0}s ago"),
        s if s < 7200.0 => format!("{:.0}m ago", s / 60.0),
        s => format!("{:.0}h ago", s / 3600.0),
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: String,
    active: &'static str,
    message: String,
}

// ---------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------

struct DepthLine {
    action: String,
    queued: i64,
    running: i64,
}

struct MinuteLine {
    start: String,
    succeeded: i64,
    failed: i64,
    error_rate: String,
}

struct HostLine {
    id: String,
    this: bool,
    live: bool,
    started: String,
    heartbeat: String,
    actions: Vec<String>,
    plugins: Vec<String>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    title: String,
    active: &'static str,
    depth: Vec<DepthLine>,
    minutes: Vec<MinuteLine>,
    hosts: Vec<HostLine>,
    finished_5m: i64,
    error_rate_5m: String,
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

pub(super) async fn overview(State(state): State<Arc<AppState>>) -> PageResult {
    let pool = &state.ctx.pool;
    let stats = admin::stats(pool).await?;
    let hosts = admin::hosts(pool, state.ctx.host_ttl).await?;
    let mut depth: Vec<DepthLine> = Vec::new();
    for d in &stats.depth {
        let action = d.action.to_string();
        if depth.last().is_none_or(|l| l.action != action) {
            depth.push(DepthLine {
                action,
                queued: 0,
                running: 0,
            });
        }
        let line = depth.last_mut().expect("pushed above");
        match d.status {
            ActionStatus::Queued => line.queued = d.rows,
            _ => line.running = d.rows,
        }
    }
    let (ok, failed) = stats
        .minutes
        .iter()
        .fold((0, 0), |(s, f), m| (s + m.succeeded, f + m.failed));
    let total = ok + failed;
    let last = stats.minutes.len().saturating_sub(1);
    html(OverviewPage {
        title: "Overview".into(),
        active: "overview",
        depth,
        minutes: stats
            .minutes
            .iter()
            .enumerate()
            .map(|(i, m)| MinuteLine {
                start: format!(
                    "{}{}",
                    m.start.format("%H:%M"),
                    if i == last { " (so far)" } else { "" }
                ),
                succeeded: m.succeeded,
                failed: m.failed,
                error_rate: percent(m.error_rate()),
            })
            .collect(),
        hosts: hosts
            .into_iter()
            .map(|h| HostLine {
                this: h.host_id == state.ctx.host_id,
                live: h.live,
                started: time_text(&h.started_at),
                heartbeat: age(h.heartbeat_age_seconds),
                actions: h.actions,
                plugins: h
                    .plugins
                    .iter()
                    .map(|p| match (p.short_digest(), &p.rejected) {
                        (Some(d), None) => format!("{} {d}", p.file),
                        (Some(d), Some(_)) => format!("{} {d} (newer version rejected)", p.file),
                        (None, _) => format!("{} (rejected)", p.file),
                    })
                    .collect(),
                id: h.host_id,
            })
            .collect(),
        finished_5m: total,
        error_rate_5m: percent(admin::error_rate(ok, failed)),
    })
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// The rows page's query: strings, parsed here so that a bad value is shown
/// to the user rather than rejected as a bare 400.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RowsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    limit: String,
}

impl RowsQuery {
    fn filter(&self) -> Result<RowFilter, String> {
        let mut filter = RowFilter {
            limit: admin::DEFAULT_PAGE,
            ..RowFilter::default()
        };
        if !self.status.is_empty() {
            filter.status = Some(self.status.parse().map_err(|_| {
                format!(
                    "unknown status {:?} (queued, running, succeeded, failed, cancelled)",
                    self.status
                )
            })?);
        }
        if !self.action.is_empty() {
            filter.action = Some(ActionKey::parse(self.action.trim()).map_err(|e| e.to_string())?);
        }
        if !self.since.is_empty() {
            filter.since =
                Some(cairn_contract::parse_duration(self.since.trim()).map_err(|e| e.to_string())?);
        }
        if !self.before.is_empty() {
            filter.before = Some(
                self.before
                    .parse()
                    .map_err(|_| format!("`{}` is not a row id", self.before))?,
            );
        }
        if !self.limit.is_empty() {
            filter.limit = self
                .limit
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=admin::MAX_PAGE).contains(n))
                .ok_or_else(|| format!("limit must be 1 to {}", admin::MAX_PAGE))?;
        }
        Ok(filter)
    }

    /// The query string of the next page after `last_id`.
    fn next(&self, last_id: i64) -> String {
        let pairs = [
            ("status", self.status.as_str()),
            ("action", self.action.as_str()),
            ("since", self.since.as_str()),
            ("limit", self.limit.as_str()),
        ];
        let mut out: Vec<(&str, String)> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        out.push(("before", last_id.to_string()));
        serde_urlencoded::to_string(out).unwrap_or_default()
    }
}

struct RowLine {
    id: i64,
    action: String,
    status: &'static str,
    attempts: String,
    created: String,
    started: String,
    finished: String,
    error: String,
}

#[derive(Template)]
#[template(path = "rows.html")]
struct RowsPage {
    title: String,
    active: &'static str,
    status: String,
    action: String,
    since: String,
    statuses: [&'static str; 5],
    problem: Option<String>,
    rows: Vec<RowLine>,
    next: Option<String>,
    paged: bool,
}

pub(super) async fn rows(
    State(state): State<Arc<AppState>>,
    Query(query): Query<RowsQuery>,
) -> PageResult {
    let (problem, rows, next) = match query.filter() {
        Err(problem) => (Some(problem), Vec::new(), None),
        Ok(filter) => {
            let rows = admin::list(&state.ctx.pool, &filter).await?;
            let next = (rows.len() as u32 == filter.limit.min(admin::MAX_PAGE))
                .then(|| rows.last().map(|r| query.next(r.id)))
                .flatten();
            (None, rows, next)
        }
    };
    html(RowsPage {
        title: "Rows".into(),
        active: "rows",
        status: query.status.clone(),
        action: query.action.clone(),
        since: query.since.clone(),
        statuses: ["queued", "running", "succeeded", "failed", "cancelled"],
        problem,
        rows: rows
            .into_iter()
            .map(|r| RowLine {
                id: r.id,
                action: r.action.to_string(),
                status: r.status.as_str(),
                attempts: attempts_text(r.attempts, r.max_attempts),
                created: time_text(&r.created_at),
                started: time_opt(&r.started_at),
                finished: time_opt(&r.finished_at),
                error: r
                    .error
                    .filter(|_| r.status == ActionStatus::Failed)
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        next,
        paged: !query.before.is_empty(),
    })
}

// ---------------------------------------------------------------------------
// One row
// ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "row.html")]
struct RowPage {
    title: String,
    active: &'static str,
    id: i64,
    action: String,
    status: &'static str,
    attempts: String,
    priority: i32,
    created: String,
    run_at: String,
    started: String,
    finished: String,
    lease_owner: String,
    lease_expires: String,
    host: String,
    idempotency_key: String,
    args: String,
    result: Option<String>,
    error_title: &'static str,
    error: Option<String>,
    can_retry: bool,
    can_cancel: bool,
    csrf: String,
    notice: Option<String>,
}

/// A payload as pretty JSON, cut at [`SHOW_JSON_CHARS`].
fn show_json(bytes: &[u8], decode: impl Fn(&[u8]) -> Result<serde_json::Value, String>) -> String {
    if bytes.len() > DECODE_BYTES {
        return format!("({} bytes: too large to show here)", bytes.len());
    }
    let text = match decode(bytes) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_else(|e| e.to_string()),
        Err(e) => return format!("({} bytes that do not decode: {e})", bytes.len()),
    };
    if text.len() <= SHOW_JSON_CHARS {
        return text;
    }
    let mut cut = SHOW_JSON_CHARS;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n… (cut: {} of {} characters shown)",
        &text[..cut],
        cut,
        text.len()
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RowQuery {
    #[serde(default)]
    done: String,
}

pub(super) async fn row(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<RowQuery>,
) -> PageResult {
    let id: i64 = id
        .parse()
        .map_err(|_| PageError(StatusCode::NOT_FOUND, format!("`{id}` is not a row id")))?;
    let detail = admin::get(&state.ctx.pool, id)
        .await?
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no row with id {id}")))?;
    let s = &detail.summary;
    let payload = |b: &[u8]| cairn_payload::json::payload_to_json(b).map_err(|e| e.to_string());
    let args = |b: &[u8]| {
        cairn_payload::decode_arguments(b)
            .map(|a| cairn_payload::json::arguments_to_json(&a))
            .map_err(|e| e.to_string())
    };
    let notice = match query.done.as_str() {
        "retried" => Some(format!(
            "Row {id} is queued again for attempt {}.",
            s.attempts + 1
        )),
        "cancelled" => Some(format!("Row {id} is cancelled.")),
        "not-retried" => Some(format!(
            "Row {id} was not retried: it is {}, not failed.",
            s.status
        )),
        "not-cancelled" => Some(format!(
            "Row {id} was not cancelled: it is {}, not queued or running.",
            s.status
        )),
        _ => None,
    };
    html(RowPage {
        title: format!("Row {id}"),
        active: "rows",
        id,
        action: s.action.to_string(),
        status: s.status.as_str(),
        attempts: attempts_text(s.attempts, s.max_attempts),
        priority: s.priority,
        created: time_text(&s.created_at),
        run_at: time_text(&s.run_at),
        started: time_opt(&s.started_at),
        finished: time_opt(&s.finished_at),
        lease_owner: s.lease_owner.clone().unwrap_or_default(),
        lease_expires: time_opt(&detail.lease_expires_at),
        host: s.host.clone().unwrap_or_default(),
        idempotency_key: detail.idempotency_key.clone().unwrap_or_default(),
        args: show_json(&detail.args, args),
        result: detail.result.as_deref().map(|b| show_json(b, payload)),
        error_title: if s.status == ActionStatus::Failed {
            "Error"
        } else {
            "Last error"
        },
        error: detail.error.as_deref().map(|b| show_json(b, payload)),
        can_retry: s.status == ActionStatus::Failed,
        can_cancel: matches!(s.status, ActionStatus::Queued | ActionStatus::Running),
        csrf: state.access.csrf().to_owned(),
        notice,
    })
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn control(
    state: &AppState,
    id: &str,
    form: &CsrfForm,
    retry: bool,
) -> Result<Redirect, PageError> {
    if !state.access.csrf_matches(&form.csrf) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or stale (reload the page and try again)"
                .into(),
        ));
    }
    let id: i64 = id
        .parse()
        .map_err(|_| PageError(StatusCode::NOT_FOUND, format!("`{id}` is not a row id")))?;
    let pool = &state.ctx.pool;
    let report = if retry {
        admin::retry(pool, &[id]).await?
    } else {
        admin::cancel(pool, &[id]).await?
    };
    if !report.missing.is_empty() {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            format!("no row with id {id}"),
        ));
    }
    let done = match (retry, report.done.is_empty()) {
        (true, false) => "retried",
        (true, true) => "not-retried",
        (false, false) => "cancelled",
        (false, true) => "not-cancelled",
    };
    tracing::info!(action_id = id, "dashboard: {done}");
    Ok(Redirect::to(&format!("/rows/{id}?done={done}")))
}

pub(super) async fn retry(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    control(&state, &id, &form, true).await
}

pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, PageError> {
    control(&state, &id, &form, false).await
}

// ---------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------

struct ImportLine {
    name: &'static str,
    granted: bool,
}

struct PluginLine {
    file: String,
    digest: String,
    digest_short: String,
    module: String,
    actions: Vec<String>,
    imports: Vec<ImportLine>,
    wasi: usize,
    rejected: Option<String>,
}

#[derive(Template)]
#[template(path = "plugins.html")]
struct PluginsPage {
    title: String,
    active: &'static str,
    host_id: String,
    plugins: Vec<PluginLine>,
}

pub(super) async fn plugins(State(state): State<Arc<AppState>>) -> PageResult {
    let plugins = state
        .ctx
        .plugins
        .files()
        .into_iter()
        .map(|f| {
            let serving = f.serving.as_ref();
            PluginLine {
                file: display_name(&f.file),
                digest: serving.map(|p| p.digest.hex()).unwrap_or_default(),
                digest_short: serving.map(|p| p.digest.short()).unwrap_or_default(),
                module: serving.map(|p| p.module.clone()).unwrap_or_default(),
                actions: serving
                    .map(|p| {
                        p.actions
                            .iter()
                            .map(|a| ActionKey::new(p.module.as_str(), a.name.as_str()).to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                // Names of dependencies and whether each is granted: never
                // config values or secrets.
                imports: serving
                    .map(|p| {
                        p.grants()
                            .into_iter()
                            .map(|(name, granted)| ImportLine { name, granted })
                            .collect()
                    })
                    .unwrap_or_default(),
                wasi: serving
                    .map(|p| p.imports.iter().filter(|i| i.starts_with("wasi:")).count())
                    .unwrap_or(0),
                rejected: f.rejected.as_ref().map(|r| {
                    format!(
                        "({}) {}{}",
                        r.error.phase,
                        r.error.message,
                        if r.waiting {
                            " — waiting: retried when another file changes"
                        } else {
                            ""
                        }
                    )
                }),
            }
        })
        .collect();
    html(PluginsPage {
        title: "Plugins".into(),
        active: "plugins",
        host_id: state.ctx.host_id.clone(),
        plugins,
    })
}

// ---------------------------------------------------------------------------
// Login, style sheet, 404
// ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: String,
    active: &'static str,
    failed: bool,
}

pub(super) async fn login_form(State(state): State<Arc<AppState>>) -> PageResult {
    if !state.access.requires_token() {
        return Ok(Redirect::to("/").into_response());
    }
    html(LoginPage {
        title: "Log in".into(),
        active: "",
        failed: false,
    })
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
}

pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    Form(form): Form<LoginForm>,
) -> PageResult {
    match state.access.session_cookie() {
        Some(cookie) if state.access.token_matches(&form.token) => {
            Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
        }
        Some(_) => {
            let page = LoginPage {
                title: "Log in".into(),
                active: "",
                failed: true,
            };
            Ok((StatusCode::UNAUTHORIZED, Html(page.render()?)).into_response())
        }
        None => Ok(Redirect::to("/").into_response()),
    }
}

pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../templates/cairn.css"),
    )
        .into_response()
}

pub(super) async fn not_found() -> PageError {
    PageError(StatusCode::NOT_FOUND, "no such page".into())
}
