"""Dependency `wasi:http/outgoing-handler`: a small blocking HTTP client.

```python
@action
def status_of(url: str, http: Annotated[Http, Depends()]) -> int:
    return http.send(Request("GET", url, headers=[("accept", "text/plain")])).status
```

Only a plugin whose actions ask for `Http` imports `wasi:http`. The host
decides which hosts a plugin may reach and enforces timeouts and a response
size limit; a request it refuses fails like any other.

The client is deliberately plain, as the Rust SDK's: a `Request` (method,
URL, headers, body) in, a `Response` (status, headers, whole body) out. A
body is sent with a `content-length`, never chunked. No redirects are
followed and no status is an error by itself: `Response.error_for_status()`
turns 4xx and 5xx into errors.

# Errors

`HttpError`, retryable when trying again may help (DNS and connection
failures, timeouts, a response cut short), not for a URL that does not
parse, a request the host denies, invalid headers, TLS certificate errors
and size limits. `error_for_status` raises `HttpStatusError`, retryable for
408, 429 and 5xx.
"""

from __future__ import annotations

import dataclasses
import json as _json
from typing import Any, Protocol

from .errors import SDK_MODULE, Error


def http_error(message: str, retryable: bool) -> Error:
    return Error(message, type="HttpError", module=SDK_MODULE, retryable=retryable)


def _find(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for n, v in headers if n == name), None)


@dataclasses.dataclass
class Request:
    """One outgoing request. The method is stored upper-case and header
    names lower-case (HTTP header names are case-insensitive)."""

    method: str
    url: str
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: bytes = b""

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        self.headers = [(str(n).lower(), str(v)) for n, v in self.headers]
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")
        self.body = bytes(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case)."""
        return _find(self.headers, name)


@dataclasses.dataclass
class Response:
    """A response, its body read completely."""

    status: int
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: bytes = b""
    #: `METHOD url` of the request, set by `Http.send` for error messages.
    origin: str = dataclasses.field(default="request", compare=False, repr=False)

    def __post_init__(self) -> None:
        self.headers = [(str(n).lower(), str(v)) for n, v in self.headers]
        if isinstance(self.body, str):
            self.body = self.body.encode("utf-8")
        self.body = bytes(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case)."""
        return _find(self.headers, name)

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def text(self) -> str:
        """The body as UTF-8 text; a non-retryable `HttpError` if it is not."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise http_error(f"{self.origin}: body is not UTF-8: {err}", False) from None

    def json(self) -> Any:
        """The body parsed as JSON; a non-retryable `HttpError` if it is not."""
        try:
            return _json.loads(self.text())
        except ValueError as err:
            raise http_error(f"{self.origin}: body is not JSON: {err}", False) from None

    def error_for_status(self) -> "Response":
        """`self` for a 1xx, 2xx or 3xx status; otherwise an `HttpStatusError`
        with the request, the status and the start of the body, retryable
        for 408, 429 and 5xx."""
        if self.status < 400:
            return self
        #: Enough of an error body to recognise it, short enough for a log line.
        snippet = self.body.decode("utf-8", "replace").strip()[:200]
        message = f"{self.origin} answered {self.status}" + (f": {snippet}" if snippet else "")
        retryable = self.status in (408, 429) or 500 <= self.status <= 599
        raise Error(message, type="HttpStatusError", module=SDK_MODULE, retryable=retryable)


class HttpBackend(Protocol):
    """Where an `Http` sends requests: the host's `wasi:http`, or
    `testing.ScriptedHttp`."""

    def send(self, request: Request) -> Response: ...


class Http:
    """Sends HTTP requests."""

    def __init__(self, backend: HttpBackend) -> None:
        self._backend = backend

    def send(self, request: Request) -> Response:
        """Send `request`, wait for the response and read its whole body.
        An `HttpError` when no response arrives; a status is not an error."""
        response = self._backend.send(request)
        response.origin = f"{request.method} {request.url}"
        return response

    def get(self, url: str, headers: list[tuple[str, str]] | None = None) -> Response:
        """`GET url`."""
        return self.send(Request("GET", url, headers or []))

    def post(self, url: str, body: bytes | str = b"", headers: list[tuple[str, str]] | None = None) -> Response:
        """`POST url` with `body`."""
        return self.send(Request("POST", url, headers or [], body))

    def __repr__(self) -> str:
        return "Http(..)"

    @classmethod
    def _construct(cls, resolver) -> "Http":
        backend = resolver.backend("http")
        if backend is None:
            from .builtin import missing_backend
            from .deps import in_component

            if not in_component():
                raise missing_backend("wasi:http/outgoing-handler", "http", "ScriptedHttp()")
            backend = _WasiHttp()
        return cls(backend)


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, authority, path-with-query) of an absolute URL; the fragment
    is dropped (it is never sent) and an empty path becomes `/`."""

    def invalid(why: str) -> Error:
        return http_error(f"invalid URL `{url}`: {why}", False)

    scheme, sep, rest = url.partition("://")
    if not sep:
        raise invalid("expected an absolute URL such as `https://host/path`")
    if not scheme or not all(c.isascii() and (c.isalnum() or c in "+-.") for c in scheme):
        raise invalid("bad scheme")
    rest = rest.split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    if not authority:
        raise invalid("no host")
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    return scheme, authority, path


#: `wasi:http` error codes after which the same request may succeed.
_RETRYABLE_CODES = (
    "DnsTimeout", "DnsError", "DestinationNotFound", "DestinationUnavailable", "ConnectionRefused",
    "ConnectionTerminated", "ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout",
    "ConnectionLimitReached", "HttpResponseIncomplete", "HttpResponseTimeout", "InternalError",
)
#: `blocking-write-and-flush` accepts at most this many bytes per call.
_WRITE_CHUNK = 4096
#: Bytes asked for per read of the response body.
_READ_CHUNK = 64 * 1024


class _WasiHttp:
    """The `wasi:http` backend (inside a component only). Resources are
    dropped child first (`with`), as the component model requires."""

    def __init__(self) -> None:
        from componentize_py_types import Err
        from wit_world.imports import http_types as t
        from wit_world.imports import outgoing_handler, streams

        self._t = t
        self._handler = outgoing_handler
        self._streams = streams
        self._err = Err

    def _code(self, origin: str, code: Any) -> Error:
        name = type(code).__name__.removeprefix("ErrorCode_")
        value = getattr(code, "value", None)
        detail = f"{name}({value})" if value is not None else name
        return http_error(f"{origin}: {detail}", name in _RETRYABLE_CODES)

    def send(self, request: Request) -> Response:
        t = self._t
        origin = f"{request.method} {request.url}"
        scheme, authority, path = split_url(request.url)
        entries = [(n, v.encode("utf-8")) for n, v in request.headers]
        sends_body = bool(request.body) or request.method in ("POST", "PUT", "PATCH")
        if sends_body and request.header("content-length") is None:
            entries.append(("content-length", str(len(request.body)).encode()))
        try:
            headers = t.Fields.from_list(entries)
        except self._err as err:
            raise http_error(f"{origin}: invalid header: {err.value}", False) from None
        methods = {
            "GET": t.Method_Get(), "HEAD": t.Method_Head(), "POST": t.Method_Post(), "PUT": t.Method_Put(),
            "DELETE": t.Method_Delete(), "CONNECT": t.Method_Connect(), "OPTIONS": t.Method_Options(),
            "TRACE": t.Method_Trace(), "PATCH": t.Method_Patch(),
        }
        schemes = {"http": t.Scheme_Http(), "https": t.Scheme_Https()}
        outgoing = t.OutgoingRequest(headers)
        try:
            outgoing.set_method(methods.get(request.method) or t.Method_Other(request.method))
            outgoing.set_scheme(schemes.get(scheme.lower()) or t.Scheme_Other(scheme))
            outgoing.set_authority(authority)
            outgoing.set_path_with_query(path)
        except self._err:
            raise http_error(f"{origin}: invalid method, scheme, host or path", False) from None
        body = outgoing.body()
        try:
            pending = self._handler.handle(outgoing, None)
        except self._err as err:
            raise self._code(origin, err.value) from None
        with body.write() as stream:
            for start in range(0, len(request.body), _WRITE_CHUNK):
                try:
                    stream.blocking_write_and_flush(request.body[start : start + _WRITE_CHUNK])
                except self._err as err:
                    raise http_error(f"{origin}: writing the request body: {err.value}", True) from None
        try:
            t.OutgoingBody.finish(body, None)
        except self._err as err:
            raise self._code(origin, err.value) from None
        with pending:
            while True:
                outcome = pending.get()
                if outcome is not None:
                    break
                with pending.subscribe() as pollable:
                    pollable.block()
        # `get` answers option<result<result<incoming-response, error-code>>>.
        if isinstance(outcome, self._err):
            raise http_error(f"{origin}: response already taken", False)
        inner = outcome.value
        if isinstance(inner, self._err):
            raise self._code(origin, inner.value)
        incoming = inner.value
        with incoming:
            status = incoming.status()
            with incoming.headers() as fields:
                response_headers = [(n, v.decode("utf-8", "replace")) for n, v in fields.entries()]
            incoming_body = incoming.consume()
            chunks = []
            with incoming_body.stream() as stream:
                while True:
                    try:
                        chunks.append(stream.blocking_read(_READ_CHUNK))
                    except self._err as err:
                        if isinstance(err.value, self._streams.StreamError_Closed):
                            break
                        raise http_error(f"{origin}: reading the response body: {err.value}", True) from None
            with t.IncomingBody.finish(incoming_body):
                pass
        return Response(status, response_headers, b"".join(chunks))
