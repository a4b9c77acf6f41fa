//! The operations surface of `cairn serve --http ADDR`: `/healthz`,
//! `/metrics` and the dashboard, served by the host itself
//! ([`crate::serve::Host`] starts it when asked to).
//!
//! # Strategy
//!
//! One small axum server on its own task, off the data path: it reads the
//! queue through [`crate::queue::admin`] (the same functions as the CLI),
//! this host's plugins through the reloader's [`PluginDir`], and metrics from
//! the shared [`Metrics`], and it writes only through `admin::retry` and
//! `admin::cancel`. Pages are rendered on the server from askama templates
//! (`host/templates/`, checked at compile time, HTML-escaped by default); the
//! only client-side code is none at all — forms and links. A strict
//! `Content-Security-Policy` (no scripts, no inline anything) backs the
//! escaping up: even a bug there could not run a script.
//!
//! It is **off unless asked for**. Access rules are in [`auth`]: a loopback
//! address needs no credentials, any other address needs `CAIRN_HTTP_TOKEN`
//! or the host refuses to start.
//!
//! # Failure modes
//!
//! * Address in use, or non-loopback without a token: `cairn serve` fails to
//!   start, one line naming the address.
//! * Database errors while rendering: that page is a 500 with one line; the
//!   host keeps running. `/healthz` says 503 and why.
//! * Bad query parameters (unknown status, malformed duration or action): the
//!   rows page shows the problem above an empty list; a bad id is a 404.
//! * Shutdown: `/healthz` turns 503 ("shutting down") as soon as the signal
//!   arrives, so a load balancer stops sending work; the server stops after
//!   the worker.

pub mod auth;
mod pages;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::one_line;
use crate::metrics::{self, Metrics};
use crate::reload::PluginDir;
use auth::{Access, Denied};

/// Environment variable holding the token for non-loopback addresses.
pub const TOKEN_ENV: &str = "CAIRN_HTTP_TOKEN";

/// Longest `/healthz` waits for the database before it says 503: a health
/// check must answer quickly, and a database slower than this is not healthy.
pub const HEALTH_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Where to listen and with which token.
#[derive(Clone)]
pub struct HttpConfig {
    addr: SocketAddr,
    token: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HttpConfig {
    /// Listen on `addr`; `token` (empty = none) is required on every request
    /// when set.
    ///
    /// # Errors
    ///
    /// `addr` is not a loopback address and there is no token.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Result<Self> {
        let token = token.filter(|t| !t.trim().is_empty());
        if !addr.ip().is_loopback() && token.is_none() {
            bail!(
                "http: --http {addr} is not a loopback address: set {TOKEN_ENV} to require a token, or listen on 127.0.0.1"
            );
        }
        Ok(HttpConfig { addr, token })
    }

    /// [`new`](Self::new) with the token from `CAIRN_HTTP_TOKEN`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_env(addr: SocketAddr) -> Result<Self> {
        Self::new(addr, std::env::var(TOKEN_ENV).ok())
    }
}

/// What the server reads: the host's parts.
#[derive(Clone)]
pub struct OpsContext {
    /// The queue.
    pub pool: PgPool,
    /// This host's plugin files, and through them what it serves (for the
    /// depth labels).
    pub plugins: PluginDir,
    /// This host's id.
    pub host_id: String,
    /// This host's metrics.
    pub metrics: Arc<Metrics>,
    /// A host is live while its heartbeat is younger than this.
    pub host_ttl: Duration,
}

struct AppState {
    ctx: OpsContext,
    access: Access,
    draining: Arc<AtomicBool>,
}

/// The running server. Stop it with [`HttpServer::stop`].
pub struct HttpServer {
    addr: SocketAddr,
    draining: Arc<AtomicBool>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    depth: JoinHandle<()>,
}

/// Turns `/healthz` to 503 "shutting down"; see [`HttpServer::drain_handle`].
#[derive(Clone, Debug)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// From now on `/healthz` answers 503.
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl HttpServer {
    /// Binds `config.addr` and serves until [`stop`](Self::stop)ped; also
    /// starts the queue-depth refresher for `/metrics`. Logs where the
    /// dashboard is.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the random source cannot be read.
    pub async fn start(config: HttpConfig, ctx: OpsContext) -> Result<Self> {
        let access = Access::new(config.token.clone()).context("http: drawing a CSRF token")?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("http: cannot listen on {}", config.addr))?;
        let addr = listener.local_addr().context("http: local address")?;
        let draining = Arc::new(AtomicBool::new(false));
        let registry = ctx.plugins.registry().clone();
        let depth = metrics::spawn_depth_refresher(
            ctx.pool.clone(),
            ctx.metrics.clone(),
            move || registry.snapshot().iter().map(|(k, _)| k.clone()).collect(),
            metrics::depth_every_from_env()?,
        );
        let state = Arc::new(AppState {
            ctx,
            access,
            draining: draining.clone(),
        });
        let app = router(state);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!("http: server stopped: {err}");
            }
        });
        tracing::info!(
            %addr,
            token = config.token.is_some(),
            "dashboard at http://{addr}/ (metrics at /metrics, health at /healthz)"
        );
        Ok(HttpServer {
            addr,
            draining,
            shutdown: Some(shutdown),
            task: Some(task),
            depth,
        })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that turns `/healthz` to 503 when shutdown begins.
    pub fn drain_handle(&self) -> Drain {
        Drain(self.draining.clone())
    }

    /// Stops accepting, lets requests in progress finish, and returns.
    pub async fn stop(mut self) {
        self.draining.store(true, Ordering::Relaxed);
        self.depth.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.depth.abort();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/rows", get(pages::rows))
        .route("/rows/{id}", get(pages::row))
        .route("/rows/{id}/retry", post(pages::retry))
        .route("/rows/{id}/cancel", post(pages::cancel))
        .route("/plugins", get(pages::plugins))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/static/cairn.css", get(pages::stylesheet))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Access control (see [`auth`]) and the security headers on every answer.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = matches!(path, "/healthz" | "/static/cairn.css")
        || (path == "/login" && state.access.requires_token());
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = state.access.check(
        text(header::HOST),
        text(header::AUTHORIZATION),
        text(header::COOKIE),
    );
    let wants_html = text(header::ACCEPT).is_some_and(|a| a.contains("text/html"));
    let mut response = match verdict {
        Ok(()) => next.run(request).await,
        Err(Denied::NoCredentials) if open => next.run(request).await,
        Err(Denied::NoCredentials) if wants_html => Redirect::to("/login").into_response(),
        Err(Denied::NoCredentials) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized: send Authorization: Bearer <CAIRN_HTTP_TOKEN>\n",
        )
            .into_response(),
        Err(Denied::ForeignHost) if path == "/healthz" => next.run(request).await,
        Err(Denied::ForeignHost) => (
            StatusCode::MISDIRECTED_REQUEST,
            "refused: without CAIRN_HTTP_TOKEN only a loopback Host (127.0.0.1, [::1], localhost) is served\n",
        )
            .into_response(),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `GET /metrics`: encode, nothing else (depth is refreshed elsewhere).
async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.ctx.metrics.encode(),
    )
        .into_response()
}

/// `GET /healthz`: 200 `ok` while the worker serves and the database
/// answers within [`HEALTH_DB_TIMEOUT`]; otherwise 503 and one line why.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let unhealthy = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why}\n"),
        )
            .into_response()
    };
    if state.draining.load(Ordering::Relaxed) {
        return unhealthy("shutting down".into());
    }
    if !state.ctx.metrics.worker_running() {
        return unhealthy("not serving: the worker has not started".into());
    }
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.ctx.pool);
    match tokio::time::timeout(HEALTH_DB_TIMEOUT, ping).await {
        Err(_) => unhealthy(format!(
            "database did not answer within {HEALTH_DB_TIMEOUT:?}"
        )),
        Ok(Err(err)) => unhealthy(format!("database unreachable: {}", one_line(&err))),
        Ok(Ok(_)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "ok\n",
        )
            .into_response(),
    }
}
