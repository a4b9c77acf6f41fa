//! `http`: outbound HTTP through `wasi:http@0.2` (wasmtime-wasi-http),
//! linked only for plugins granted `http`.
//!
//! Strategy: every request goes through `HttpHooks::send_request`, which
//! checks the request's authority against the plugin's `allowed_hosts`
//! *before* any connection is made; anything else gets
//! `ErrorCode::HttpRequestDenied` and never leaves the machine. Allowed
//! requests use wasmtime-wasi-http's client (HTTP/1.1, rustls for https)
//! with timeouts capped by [`CONNECT_TIMEOUT`] and [`FIRST_BYTE_TIMEOUT`]
//! (the guest may ask for shorter, not longer), and a response body capped
//! at [`MAX_RESPONSE_BYTES`] (`HttpResponseBodySize` past it).
//!
//! `allowed_hosts` entries are `host:port` (exact) or `host` (its default
//! port: 80 for http, 443 for https); hosts compare case-insensitively. The
//! call's own deadline still bounds everything.

use super::Dependency;
use crate::store::{HostState, HttpHooks};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Longest wait to establish a connection: a reachable allowed host answers
/// a connect in well under this; more means it is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the response's first byte (and between body chunks):
/// long enough for a slow API, short enough that a stuck one fails the
/// attempt before most action budgets end.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest response body a plugin may receive: bounds host memory per call
/// (the guest's own memory cap is lower still by default).
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;

pub(crate) const DEPENDENCY: Dependency = Dependency {
    name: "http",
    interfaces: &["wasi:http/outgoing-handler", "wasi:http/types"],
    version_prefix: "0.2.",
    add_to_linker: |linker| wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker),
};

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// The per-call outbound HTTP policy: the calling plugin's allowed hosts
/// (shared with its other calls, not copied per call).
impl HttpHooks {
    /// Whether `uri` may be requested.
    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let host = authority.host().to_ascii_lowercase();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        let port = authority.port_u16().unwrap_or(default_port);
        self.deps.settings.allowed_hosts.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            match entry.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                    h == host && p.parse::<u16>() == Ok(port)
                }
                _ => entry == host && port == default_port,
            }
        })
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let _ = fut;
        if !self.allows(request.uri()) {
            // Only the authority: a query string may carry a secret.
            let authority = request.uri().authority().map(|a| a.to_string());
            tracing::warn!(
                plugin = %self.deps.module,
                authority = authority.as_deref().unwrap_or("-"),
                "outbound HTTP denied: host not in plugins.{}.allowed_hosts",
                self.deps.module
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let cap = |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |a| a.min(max)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: cap(options.connect_timeout, CONNECT_TIMEOUT),
            first_byte_timeout: cap(options.first_byte_timeout, FIRST_BYTE_TIMEOUT),
            between_bytes_timeout: cap(options.between_bytes_timeout, FIRST_BYTE_TIMEOUT),
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            if let Some(len) = response.body().size_hint().exact() {
                if len > MAX_RESPONSE_BYTES {
                    return Err(Error::HttpResponseBodySize(Some(len)));
                }
            }
            let response = response.map(|body| {
                CappedBody {
                    inner: Box::pin(body),
                    remaining: MAX_RESPONSE_BYTES,
                }
                .boxed_unsync()
            });
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// A response body that fails with `HttpResponseBodySize` once more than
/// [`MAX_RESPONSE_BYTES`] have come through.
struct CappedBody<B> {
    inner: Pin<Box<B>>,
    remaining: u64,
}

impl<B: Body<Data = Bytes, Error = Error>> Body for CappedBody<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                if len > this.remaining {
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                        MAX_RESPONSE_BYTES,
                    )))));
                }
                this.remaining -= len;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_match_host_and_port() {
        let mut deps = crate::store::PluginDeps::default();
        deps.settings.allowed_hosts =
            vec!["127.0.0.1:8080".to_owned(), "API.example.com".to_owned()];
        let policy = HttpHooks {
            deps: std::sync::Arc::new(deps),
        };
        let ok = |u: &str| policy.allows(&u.parse().unwrap());
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(!ok("http://localhost:8080/x"));
        assert!(ok("https://api.example.com/v1"));
        assert!(!ok("https://api.example.com:8443/v1"));
        assert!(!ok("https://evil.example.com/"));
    }
}
