"""Dependency `cairn:plugin/enqueue`: enqueue follow-up actions in the same
queue, which is how actions chain.

```python
@action
def checkout(order: int, enqueue: Annotated[Enqueue, Depends()]) -> int:
    return enqueue.enqueue("mail:receipt", {"order": order}, delay=60,
                           idempotency_key=f"receipt-{order}")
```

# Errors

A target that is not `module:name`, arguments that are not a dict or a
dataclass (or do not serialize), or a delay that is negative or not finite
(as a number or a `timedelta`), are non-retryable `EnqueueError`s raised
before the host is asked. The host's own failures (typically the database
is away) are retryable `EnqueueError`s.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from typing import Any, Protocol

from ._backend import Builtin, HostImport
from .errors import SDK_MODULE, Error, _details_dict


@dataclasses.dataclass
class EnqueueOptions:
    """How to enqueue; every field optional (the action's and the host's
    defaults apply)."""

    #: Not claimed before this many milliseconds from now.
    delay_ms: int | None = None
    #: Lower runs first (the host's default is 0).
    priority: int | None = None
    #: Total attempts, overriding the action's retry policy.
    max_attempts: int | None = None
    #: At most one live row per key: enqueueing again with a live key
    #: returns that row's id instead of a new one.
    idempotency_key: str | None = None


class EnqueueBackend(Protocol):
    """Where an `Enqueue` sends rows: the host's queue, or
    `testing.RecordingEnqueue`. `args` are the encoded keyword arguments."""

    def enqueue(self, module: str, name: str, args: bytes, options: EnqueueOptions) -> int: ...


def _error(message: str, *, retryable: bool = False) -> Error:
    return Error(message, type="EnqueueError", module=SDK_MODULE, retryable=retryable)


def _delay_ms(delay: Any) -> int | None:
    if delay is None:
        return None
    ms: Any = None
    if isinstance(delay, _dt.timedelta):
        ms = delay.total_seconds() * 1000
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        ms = delay * 1000
    # One check for both forms, in milliseconds: not negative, and finite
    # (`int()` of an infinity or NaN would raise something else).
    if ms is None or not 0 <= ms < math.inf:
        raise _error(f"delay must be seconds (a number >= 0) or a timedelta >= 0, not {delay!r}")
    return int(ms)


class Enqueue(Builtin, keyword="enqueue", double="RecordingEnqueue()"):
    """Enqueues follow-up actions."""

    def enqueue(
        self,
        action: str,
        kwargs: Any = None,
        *,
        delay: float | _dt.timedelta | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Enqueue `action` (`"module:name"`) with the keyword arguments
        `kwargs` (a dict, a dataclass whose fields are the arguments, or None
        for none). `delay` is in seconds (or a `timedelta`). Returns the new
        row's id (with a live idempotency key, the existing row's)."""
        from .payload import PayloadError, encode_arguments

        module, sep, name = action.partition(":")
        if not sep or not module or not name or ":" in name:
            raise _error(f"cannot enqueue `{action}`: name the action as `module:name`")
        try:
            pairs = [] if kwargs is None else list(_details_dict(kwargs).items())
        except TypeError:
            raise _error(f"keyword arguments must be a dict or a dataclass, not a {type(kwargs).__name__}") from None
        if any(not isinstance(k, str) for k, _ in pairs):
            raise _error("keyword argument names must be strings")
        try:
            args = encode_arguments(pairs)
        except PayloadError as err:
            raise _error(f"arguments do not serialize: {err}") from None
        options = EnqueueOptions(_delay_ms(delay), priority, max_attempts, idempotency_key)
        return self._backend.enqueue(module, name, args, options)

    @staticmethod
    def _host_backend() -> EnqueueBackend:
        from wit_world.imports import enqueue

        return _HostEnqueue(enqueue)


class _HostEnqueue(HostImport):
    def enqueue(self, module, name, args, options):
        wit_options = self._wit.Options(
            delay_ms=options.delay_ms,
            priority=options.priority,
            max_attempts=options.max_attempts,
            idempotency_key=options.idempotency_key,
        )
        try:
            return self._wit.enqueue(module, name, args, wit_options)
        except self._err as err:
            raise _error(f"enqueue `{module}:{name}`: {err.value}", retryable=True) from None

