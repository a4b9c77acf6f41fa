//! Dependency `wasi:http/outgoing-handler`: a small blocking HTTP client.
//!
//! Take a `Dep<Http>` parameter to use it; only then does the component
//! import `wasi:http/outgoing-handler` (and `wasi:http/types`). The host
//! decides which hosts a plugin may reach, and enforces timeouts and a
//! response size limit; a request it refuses fails like any other.
//!
//! ```
//! use cairn_sdk::http::Request;
//! use cairn_sdk::{Dep, Error, Http};
//!
//! #[cairn_sdk::action]
//! fn status_of(url: String, http: Dep<Http>) -> Result<u16, Error> {
//!     let response = http.send(&Request::get(url).with_header("accept", "text/plain"))?;
//!     Ok(response.status())
//! }
//! ```
//!
//! The client is deliberately plain: a [`Request`] (method, URL, headers,
//! body) in, a [`Response`] (status, headers, body) out, the whole body in
//! memory. A request body is sent with a `content-length` (added unless the
//! request sets one), never chunked. No redirects are followed and no status is an error by itself;
//! [`Response::error_for_status`] turns 4xx and 5xx into errors.
//!
//! # Errors
//!
//! `HttpError`, retryable when trying again may help: DNS and connection
//! failures, timeouts and a response cut short are retryable; a URL that
//! does not parse, a request the host denies (a host not allowed), invalid
//! headers, TLS certificate errors and size limits are not. Statuses are
//! `HttpStatusError`s from [`Response::error_for_status`]: retryable for
//! 408, 429 and 5xx.

use std::fmt;
use std::rc::Rc;

use crate::deps::{Dependency, DependencyError, Resolver};
use crate::error::SDK_MODULE;
use crate::Error;

/// Sends HTTP requests.
#[derive(Clone)]
pub struct Http {
    backend: Rc<dyn HttpBackend>,
}

/// Where an [`Http`] sends requests: the host's `wasi:http` (in a component)
/// or a test double such as
/// [`testing::ScriptedHttp`](crate::testing::ScriptedHttp).
pub trait HttpBackend {
    /// Send `request` and read the whole response.
    ///
    /// # Errors
    ///
    /// When no response arrives (see the module docs).
    fn send(&self, request: &Request) -> Result<Response, Error>;
}

impl Http {
    /// An `Http` over any backend, e.g. to call a function that takes
    /// `&Http` in a test.
    pub fn new(backend: impl HttpBackend + 'static) -> Self {
        Http {
            backend: Rc::new(backend),
        }
    }

    /// Send `request`, wait for the response and read its whole body.
    ///
    /// # Errors
    ///
    /// An `HttpError` when no response arrives; a status is not an error
    /// (see [`Response::error_for_status`]).
    pub fn send(&self, request: &Request) -> Result<Response, Error> {
        let mut response = self.backend.send(request)?;
        response.origin = Some(origin(request));
        Ok(response)
    }

    /// `GET url`.
    ///
    /// # Errors
    ///
    /// As [`Http::send`].
    pub fn get(&self, url: impl Into<String>) -> Result<Response, Error> {
        self.send(&Request::get(url))
    }
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Http { .. }")
    }
}

/// One outgoing request. Header names are stored lower-case (HTTP header
/// names are case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with any method (`"GET"`, `"PUT"`, `"PURGE"`...; stored
    /// upper-case) to an absolute `http://` or `https://` URL.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into().to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new("GET", url)
    }

    /// `POST url`.
    pub fn post(url: impl Into<String>) -> Self {
        Request::new("POST", url)
    }

    /// `PUT url`.
    pub fn put(url: impl Into<String>) -> Self {
        Request::new("PUT", url)
    }

    /// `DELETE url`.
    pub fn delete(url: impl Into<String>) -> Self {
        Request::new("DELETE", url)
    }

    /// Add a header (repeatable: a name given twice is sent twice).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Set the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The method, upper-case.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every header, in order, names lower-case.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A response, its body read completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// `METHOD url` of the request, set by [`Http::send`] for error messages.
    origin: Option<String>,
}

impl Response {
    /// A response with `status`, no headers and an empty body: what a test
    /// double answers with.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            origin: None,
        }
    }

    /// Add a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Set the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Every header, in order, names lower-case. Values that are not UTF-8
    /// are decoded lossily.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taking it.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    ///
    /// A non-retryable `HttpError` if the body is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body).map_err(|err| {
            http_error(
                format!("{}: body is not UTF-8: {err}", self.origin()),
                false,
            )
        })
    }

    /// `Ok(self)` for a 1xx, 2xx or 3xx status, otherwise an error.
    ///
    /// # Errors
    ///
    /// An `HttpStatusError` whose message has the request, the status and the
    /// start of the body; retryable for 408 (timeout), 429 (too many
    /// requests) and 5xx, where the same request may succeed later.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status < 400 {
            return Ok(self);
        }
        /// Enough of an error body to recognise it, short enough for a log line.
        const SNIPPET_CHARS: usize = 200;
        let text = String::from_utf8_lossy(&self.body);
        let snippet: String = text.trim().chars().take(SNIPPET_CHARS).collect();
        let mut message = format!("{} answered {}", self.origin(), self.status);
        if !snippet.is_empty() {
            message.push_str(": ");
            message.push_str(&snippet);
        }
        let retryable = matches!(self.status, 408 | 429 | 500..=599);
        Err(Error::new(message)
            .with_type("HttpStatusError")
            .with_module(SDK_MODULE)
            .with_retryable(retryable))
    }

    fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or("request")
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An `HttpError` with the SDK's module.
pub(crate) fn http_error(message: String, retryable: bool) -> Error {
    Error::new(message)
        .with_type("HttpError")
        .with_module(SDK_MODULE)
        .with_retryable(retryable)
}

/// `METHOD url` for messages, with the URL [redacted](redact_url).
fn origin(request: &Request) -> String {
    format!("{} {}", request.method, redact_url(&request.url))
}

/// A URL as it may appear in an error: without its query string, fragment
/// and user info, which may carry secrets (`?api_key=...`,
/// `user:password@`). Errors land in the queue's database and the host's
/// logs, so the SDK keeps to the host's rule of naming only where a request
/// went, e.g. `https://api.example/v1/forecast?…`.
pub(crate) fn redact_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (kept, rest) = url.split_at(cut);
    let kept = match kept.split_once("://") {
        Some((scheme, after)) => {
            let end = after.find('/').unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => kept.to_owned(),
    };
    if rest.is_empty() {
        kept
    } else {
        format!("{kept}?…")
    }
}

/// The parts of an absolute URL that `wasi:http` takes separately.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) struct UrlParts<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path_with_query: String,
}

/// Split `scheme://authority/path?query#fragment`; the fragment is dropped
/// (it is never sent) and an empty path becomes `/`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn split_url(url: &str) -> Result<UrlParts<'_>, Error> {
    let invalid =
        |why: &str| http_error(format!("invalid URL `{}`: {why}", redact_url(url)), false);
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected an absolute URL such as `https://host/path`"))?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(invalid("bad scheme"));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    let path_with_query = match path.chars().next() {
        None => "/".to_owned(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_owned(),
    };
    Ok(UrlParts {
        scheme,
        authority,
        path_with_query,
    })
}

impl Dependency for Http {
    const NAME: &'static str = "Http";

    fn construct(resolver: &Resolver) -> Result<Self, DependencyError> {
        let backend = match &resolver.backends().http {
            Some(backend) => Rc::clone(backend),
            None => host_backend()?,
        };
        Ok(Http { backend })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn host_backend() -> Result<Rc<dyn HttpBackend>, DependencyError> {
    Err(DependencyError::no_backend(
        "wasi:http/outgoing-handler",
        "http",
        "cairn_sdk::testing::ScriptedHttp::new()",
    ))
}

#[cfg(target_arch = "wasm32")]
fn host_backend() -> Result<Rc<dyn HttpBackend>, DependencyError> {
    Ok(Rc::new(wasi::Host))
}

/// The `wasi:http` backend, through the `wasip2` crate's bindings.
#[cfg(target_arch = "wasm32")]
mod wasi {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    use super::{http_error, split_url, HttpBackend, Request, Response};
    use crate::Error;

    /// `blocking-write-and-flush` accepts at most this many bytes per call.
    const WRITE_CHUNK: usize = 4096;
    /// Bytes asked for per read of the response body.
    const READ_CHUNK: u64 = 64 * 1024;

    pub(super) struct Host;

    impl HttpBackend for Host {
        fn send(&self, request: &Request) -> Result<Response, Error> {
            let origin = super::origin(request);
            let fail = |what: &str| http_error(format!("{origin}: {what}"), false);
            let code = |err: ErrorCode| {
                let retryable = is_retryable(&err);
                http_error(format!("{origin}: {err:?}"), retryable)
            };

            let url = split_url(&request.url)?;
            let mut entries: Vec<(String, Vec<u8>)> = request
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone().into_bytes()))
                .collect();
            // The whole body is known, so say how long it is rather than
            // stream it chunked (some servers refuse chunked uploads, and
            // a POST without a length may get 411).
            let sends_body = !request.body.is_empty()
                || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH");
            if sends_body && request.header("content-length").is_none() {
                entries.push((
                    "content-length".to_owned(),
                    request.body.len().to_string().into_bytes(),
                ));
            }
            let headers = Fields::from_list(&entries)
                .map_err(|err| fail(&format!("invalid header: {err:?}")))?;
            let outgoing = OutgoingRequest::new(headers);
            outgoing
                .set_method(&method(&request.method))
                .map_err(|()| fail("invalid method"))?;
            outgoing
                .set_scheme(Some(&scheme(url.scheme)))
                .map_err(|()| fail("invalid scheme"))?;
            outgoing
                .set_authority(Some(url.authority))
                .map_err(|()| fail("invalid host"))?;
            outgoing
                .set_path_with_query(Some(&url.path_with_query))
                .map_err(|()| fail("invalid path"))?;
            let body = outgoing
                .body()
                .map_err(|()| fail("request body already taken"))?;

            // Hand the request over first, then stream the body: a body larger
            // than the host's buffer would otherwise block forever.
            let pending = outgoing_handler::handle(outgoing, None).map_err(code)?;
            {
                let stream = body.write().map_err(|()| fail("request body stream"))?;
                for chunk in request.body.chunks(WRITE_CHUNK) {
                    stream
                        .blocking_write_and_flush(chunk)
                        .map_err(|err| stream_error(&origin, "writing the request body", err))?;
                }
            }
            OutgoingBody::finish(body, None).map_err(code)?;

            let incoming = loop {
                match pending.get() {
                    Some(result) => break result,
                    None => pending.subscribe().block(),
                }
            };
            let incoming = incoming
                .map_err(|()| fail("response already taken"))?
                .map_err(code)?;

            let status = incoming.status();
            let headers = {
                let fields = incoming.headers();
                fields
                    .entries()
                    .into_iter()
                    .map(|(name, value)| {
                        (
                            name.to_ascii_lowercase(),
                            String::from_utf8_lossy(&value).into_owned(),
                        )
                    })
                    .collect()
            };
            let body = incoming
                .consume()
                .map_err(|()| fail("response body already taken"))?;
            let mut bytes = Vec::new();
            {
                let stream = body.stream().map_err(|()| fail("response body stream"))?;
                loop {
                    match stream.blocking_read(READ_CHUNK) {
                        Ok(chunk) => bytes.extend_from_slice(&chunk),
                        Err(StreamError::Closed) => break,
                        Err(err) => {
                            return Err(stream_error(&origin, "reading the response body", err))
                        }
                    }
                }
            }
            drop(IncomingBody::finish(body));
            Ok(Response {
                status,
                headers,
                body: bytes,
                origin: None,
            })
        }
    }

    fn stream_error(origin: &str, what: &str, err: StreamError) -> Error {
        let detail = match err {
            StreamError::Closed => "stream closed".to_owned(),
            StreamError::LastOperationFailed(err) => err.to_debug_string(),
        };
        // A connection that breaks mid-body may well work next time.
        http_error(format!("{origin}: {what}: {detail}"), true)
    }

    fn method(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    fn scheme(name: &str) -> Scheme {
        match name.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => Scheme::Other(name.to_owned()),
        }
    }

    /// Failures where the same request may succeed later: name resolution,
    /// connections and timeouts. Denials, bad requests, TLS certificate
    /// problems and size limits fail the same way every time.
    fn is_retryable(code: &ErrorCode) -> bool {
        matches!(
            code,
            ErrorCode::DnsTimeout
                | ErrorCode::DnsError(_)
                | ErrorCode::DestinationNotFound
                | ErrorCode::DestinationUnavailable
                | ErrorCode::DestinationIpUnroutable
                | ErrorCode::ConnectionRefused
                | ErrorCode::ConnectionTerminated
                | ErrorCode::ConnectionTimeout
                | ErrorCode::ConnectionReadTimeout
                | ErrorCode::ConnectionWriteTimeout
                | ErrorCode::ConnectionLimitReached
                | ErrorCode::TlsProtocolError
                | ErrorCode::TlsAlertReceived(_)
                | ErrorCode::HttpResponseIncomplete
                | ErrorCode::HttpResponseTimeout
        )
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let parts = split_url("https://api.example:8443/v1/forecast?city=Paris#top").unwrap();
        assert_eq!(parts.scheme, "https");
        assert_eq!(parts.authority, "api.example:8443");
        assert_eq!(parts.path_with_query, "/v1/forecast?city=Paris");
        assert_eq!(split_url("http://127.0.0.1").unwrap().path_with_query, "/");
        assert_eq!(split_url("http://h?q=1").unwrap().path_with_query, "/?q=1");
    }

    #[test]
    fn errors_name_the_url_without_query_or_credentials() {
        use super::redact_url;
        assert_eq!(
            redact_url("https://user:pw@api.example:8443/v1/x?api_key=s3cr3t#frag"),
            "https://api.example:8443/v1/x?…"
        );
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        let err = split_url("h t://h/?token=s3cr3t").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn relative_or_hostless_urls_are_errors() {
        for url in ["/forecast", "http:///x", "://h/x", "h t://h/"] {
            let err = split_url(url).unwrap_err();
            assert_eq!(err.type_name(), "HttpError", "{url}");
            assert!(!err.is_retryable());
        }
    }
}
