"""Test doubles for the host's dependencies, so actions run in plain `pytest`:
no component, no host.

```python
from cairn.testing import FixedConfig, MemoryKv, ScriptedHttp, install
from cairn import Resolver, Response

kv = MemoryKv()
http = ScriptedHttp().on("GET", "https://origin.test/a", Response(200, body=b"abc"))
resolver = Resolver(config=FixedConfig({"origin": "https://origin.test"}), http=http, kv=kv)

assert mirror.call(resolver, path="a") == 3      # one invocation, doubles injected
assert kv.value("a") == b"abc"
assert http.requests[0].url == "https://origin.test/a"

with install(resolver):                          # or: direct calls use these doubles
    assert mirror(path="a") == 3
```

| double | for | notes |
| --- | --- | --- |
| `MemoryKv()` / `MemoryKv({k: v})` | `Kv` | `value(k)`, `keys()`; `set_unavailable(True)` fails every call like a database outage; counters stored as ASCII decimal |
| `FixedConfig({k: v})` | `Config` | |
| `ScriptedHttp().on(method, url, Response)` / `.on_error(method, url, Error)` | `Http` | matched by method and exact URL; `requests` records every request; anything unscripted is an `HttpError` |
| `RecordingEnqueue()` | `Enqueue` | `enqueued` lists rows (`id`, `module`, `name`, `kwargs`, `options`); ids 1, 2, 3...; honours idempotency keys |
| `RecordingLog()` | `Log` | `records` |
| `FixedContext(action_id, attempt)` | `Context` | |

`invoke(action, **kwargs)` runs an action exactly as the host would: the
arguments encoded to protobuf and bound by name, dependencies resolved from
the installed resolver, the outcome decoded from the result payload.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from typing import Any, Iterator

from .deps import Resolver
from .enqueue import EnqueueOptions
from .errors import Error
from .http import Request, Response, http_error
from .kv import kv_error

_INSTALLED: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar("cairn_resolver", default=None)


def installed() -> Resolver:
    """The resolver direct calls of actions use: the one `install` put in
    place, or an empty one."""
    return _INSTALLED.get() or Resolver()


@contextlib.contextmanager
def install(resolver: Resolver) -> Iterator[Resolver]:
    """Make direct calls of actions (and `invoke`) resolve dependencies from
    `resolver` for the duration of the `with` block (each call in a fresh
    scope)."""
    token = _INSTALLED.set(resolver)
    try:
        yield resolver
    finally:
        _INSTALLED.reset(token)


class MemoryKv:
    """An in-memory `Kv` backend."""

    def __init__(self, entries: dict[str, bytes] | None = None) -> None:
        self._values: dict[str, bytes] = {k: bytes(v) for k, v in (entries or {}).items()}
        self._unavailable = False

    def value(self, key: str) -> bytes | None:
        """The value under `key`, bypassing any simulated outage."""
        return self._values.get(key)

    def keys(self) -> list[str]:
        """Every key, sorted."""
        return sorted(self._values)

    def set_unavailable(self, unavailable: bool) -> None:
        """Make every call fail (True) as the host does when its database is
        away, or work again (False)."""
        self._unavailable = unavailable

    def _check(self, operation: str, key: str) -> None:
        if self._unavailable:
            raise kv_error(operation, key, "store unavailable (MemoryKv.set_unavailable)")

    def get(self, key: str) -> bytes | None:
        self._check("get", key)
        return self._values.get(key)

    def set(self, key: str, value: bytes) -> None:
        self._check("set", key)
        self._values[key] = bytes(value)

    def delete(self, key: str) -> bool:
        self._check("delete", key)
        return self._values.pop(key, None) is not None

    def increment(self, key: str, delta: int) -> int:
        self._check("increment", key)
        raw = self._values.get(key)
        try:
            current = 0 if raw is None else int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise kv_error("increment", key, "the value is not a counter", retryable=False) from None
        updated = current + delta
        if not -(2**63) <= updated < 2**63:
            raise kv_error("increment", key, "counter overflow", retryable=False)
        self._values[key] = str(updated).encode("ascii")
        return updated

    def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> bool:
        self._check("compare-and-swap", key)
        if self._values.get(key) != expected:
            return False
        self._values[key] = bytes(new)
        return True

    def __repr__(self) -> str:
        return f"MemoryKv(keys={self.keys()})"


class FixedConfig:
    """A `Config` backend with fixed values (and secrets)."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def __repr__(self) -> str:
        # Keys only: values may be secrets.
        return f"FixedConfig(keys={sorted(self._values)})"


class ScriptedHttp:
    """An `Http` backend that answers from a script, matched by method and
    exact URL, and records every request it was sent. A request nothing in
    the script matches fails with a non-retryable `HttpError` naming it."""

    def __init__(self) -> None:
        self._script: list[tuple[str, str, Response | Error]] = []
        #: Every request sent so far, in order.
        self.requests: list[Request] = []

    def on(self, method: str, url: str, response: Response) -> "ScriptedHttp":
        """Answer `method url` with `response` (every time; a later entry
        for the same method and URL replaces an earlier one)."""
        return self._add(method, url, response)

    def on_error(self, method: str, url: str, error: Error) -> "ScriptedHttp":
        """Fail `method url` with `error`, as a transport failure would."""
        return self._add(method, url, error)

    def _add(self, method: str, url: str, outcome: Response | Error) -> "ScriptedHttp":
        method = method.upper()
        self._script = [(m, u, o) for m, u, o in self._script if (m, u) != (method, url)]
        self._script.append((method, url, outcome))
        return self

    def send(self, request: Request) -> Response:
        self.requests.append(request)
        for method, url, outcome in self._script:
            if method == request.method and url == request.url:
                if isinstance(outcome, Error):
                    raise outcome
                return dataclasses.replace(outcome)
        raise http_error(f"ScriptedHttp has no answer for {request.method} {request.url}", False)


@dataclasses.dataclass
class Enqueued:
    """One row a `RecordingEnqueue` was asked to enqueue."""

    #: The id the double returned for it (1, 2, 3...).
    id: int
    module: str
    name: str
    #: The keyword arguments, decoded as the target action would see them.
    kwargs: dict[str, Any]
    options: EnqueueOptions
    #: The encoded arguments, as the host would store them.
    args: bytes


class RecordingEnqueue:
    """An `Enqueue` backend that records rows instead of enqueueing them.
    Honours idempotency keys as the host does."""

    def __init__(self) -> None:
        #: Every row recorded so far, in order.
        self.enqueued: list[Enqueued] = []

    def enqueue(self, module: str, name: str, args: bytes, options: EnqueueOptions) -> int:
        from .payload import decode_arguments

        if options.idempotency_key is not None:
            for row in self.enqueued:
                if row.options.idempotency_key == options.idempotency_key:
                    return row.id
        row = Enqueued(len(self.enqueued) + 1, module, name, dict(decode_arguments(args)), options, args)
        self.enqueued.append(row)
        return row.id


@dataclasses.dataclass
class LogRecord:
    """One record a `RecordingLog` received."""

    level: str
    message: str
    fields: list[tuple[str, str]]


class RecordingLog:
    """A `Log` backend that keeps every record."""

    def __init__(self) -> None:
        #: Every record so far, in order.
        self.records: list[LogRecord] = []

    def log(self, level: str, message: str, fields: list[tuple[str, str]]) -> None:
        self.records.append(LogRecord(level, message, list(fields)))


class FixedContext:
    """A `Context` backend with fixed answers (an hour left unless
    `deadline_unix_ms` is given). Also what a `Context` answers from
    outside a component without one (action id `native`)."""

    #: The default budget: plenty of time, so that only tests of deadline
    #: handling (which give `deadline_unix_ms`) ever see it run out.
    BUDGET_MS = 3_600_000

    def __init__(self, action_id: str = "test", attempt: int = 1, deadline_unix_ms: int | None = None) -> None:
        self._action_id = action_id
        self._attempt = attempt
        self._deadline = deadline_unix_ms if deadline_unix_ms is not None else int(time.time() * 1000) + self.BUDGET_MS

    def action_id(self) -> str:
        return self._action_id

    def attempt(self) -> int:
        return self._attempt

    def deadline_unix_ms(self) -> int:
        return self._deadline


@dataclasses.dataclass
class Outcome:
    """What `invoke` saw, as the host would store it: the result payload
    bytes and their decoding (`result`, or `error` as a dict with `type`,
    `module`, `message`, `traceback`, `values`, `type_hierarchy`), and
    whether the host would retry."""

    payload: bytes
    result: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def invoke(action: Any, /, **kwargs: Any) -> Outcome:
    """Run `action` exactly as the host would, natively: `kwargs` encoded to
    protobuf, bound by name with the SDK's rules, dependencies resolved from
    the installed resolver (see `install`), the outcome encoded, and decoded
    again. An error becomes the payload the host would store (traceback and
    type hierarchy moved from the action-error's details into their fields,
    as the host does)."""
    from . import _component, payload
    from .errors import TRACEBACK_KEY, TYPE_HIERARCHY_KEY

    actions = {action.name: action}
    args = payload.encode_arguments(kwargs)
    try:
        raw = _component.invoke(actions, action.module, action.name, args, installed())
    except _component.Failure as failure:
        values = {}
        if failure.details is not None:
            values = dict(payload._first_wins(payload._decode_entries(failure.details)))
        traceback = values.pop(TRACEBACK_KEY, "")
        hierarchy = values.pop(TYPE_HIERARCHY_KEY, None) or [failure.type_name]
        error = payload.ErrorValue(
            type=failure.type_name, module=failure.module, message=failure.message, traceback=traceback,
            values=values or None, type_hierarchy=list(hierarchy),
        )
        raw = payload.serialize_error_payload(error)
        return Outcome(raw, error=error.to_dict(), retryable=failure.retryable)
    decoded = payload.deserialize_result_payload(raw)
    return Outcome(raw, result=decoded.result)
