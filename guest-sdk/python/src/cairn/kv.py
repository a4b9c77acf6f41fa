"""Dependency `cairn:plugin/kv`: durable key-value storage in the host's
PostgreSQL, namespaced per plugin (a plugin cannot see another's keys).

```python
@action
def visit(page: str, kv: Annotated[Kv, Depends()]) -> int:
    return kv.increment(f"visits:{page}")
```

Values are bytes. `get_as`/`set_as` store any value in cairn's payload
format (a protobuf `WorkflowArgumentValue`, the encoding of action arguments),
which the Rust SDK's `Kv::get_as`/`set_as` read and write too.

Counters written by `increment` are stored however the host stores them:
read one back with `increment(key, 0)`.

# Errors

The host reports failures as one-line messages (typically: the database is
away); they become retryable `KvError`s, since the usual cause is transient.
Encoding or decoding a typed value fails with a non-retryable
`SerializationError`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._backend import Builtin, HostImport
from .errors import SDK_MODULE, Error, SerializationError


class KvBackend(Protocol):
    """Where a `Kv` stores: the host, or `testing.MemoryKv`. The methods
    mirror the WIT interface one to one."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> bool: ...

    def increment(self, key: str, delta: int) -> int: ...

    def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> bool: ...


def kv_error(operation: str, key: str, message: str, *, retryable: bool = True) -> Error:
    """A failure of a kv call, as the Rust SDK words it."""
    return Error(f"kv {operation} `{key}`: {message}", type="KvError", module=SDK_MODULE, retryable=retryable)


class Kv(Builtin, keyword="kv", double="MemoryKv()"):
    """The plugin's key-value store."""

    def get(self, key: str) -> bytes | None:
        """The value under `key`, if any."""
        return self._backend.get(key)

    def set(self, key: str, value: bytes) -> None:
        """Store `value` under `key`, replacing any previous value."""
        self._backend.set(key, bytes(value))

    def delete(self, key: str) -> bool:
        """Remove `key`; returns whether it existed."""
        return self._backend.delete(key)

    def increment(self, key: str, delta: int = 1) -> int:
        """Atomically add `delta` (may be negative) to the counter under
        `key` (absent counts as 0) and return the new value."""
        return self._backend.increment(key, int(delta))

    def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """Atomically set `key` to `new` if its value is `expected` (`None`:
        only if absent). Returns whether it swapped."""
        return self._backend.compare_and_swap(key, None if expected is None else bytes(expected), bytes(new))

    def get_as(self, key: str, annotation: Any = Any) -> Any:
        """The value under `key` decoded from cairn's payload format (and
        into `annotation`, as an action argument would be), or None."""
        from .binding import convert
        from .payload import PayloadError, decode_value

        raw = self.get(key)
        if raw is None:
            return None
        try:
            return convert(decode_value(raw), annotation)
        except (PayloadError, TypeError, ValueError) as err:
            raise SerializationError(f"kv value under `{key}`: {err}") from None

    def set_as(self, key: str, value: Any) -> None:
        """Store `value` under `key` in cairn's payload format."""
        from .payload import PayloadError, encode_value

        try:
            encoded = encode_value(value)
        except PayloadError as err:
            raise SerializationError(f"kv value under `{key}`: {err}") from None
        self.set(key, encoded)

    @staticmethod
    def _host_backend() -> KvBackend:
        from wit_world.imports import kv

        return _HostKv(kv)


class _HostKv(HostImport):
    def _call(self, operation: str, key: str, fn, *args):
        try:
            return fn(key, *args)
        except self._err as err:
            raise kv_error(operation, key, str(err.value)) from None

    def get(self, key):
        return self._call("get", key, self._wit.get)

    def set(self, key, value):
        self._call("set", key, self._wit.set, value)

    def delete(self, key):
        return self._call("delete", key, self._wit.delete)

    def increment(self, key, delta):
        return self._call("increment", key, self._wit.increment, delta)

    def compare_and_swap(self, key, expected, new):
        return self._call("compare-and-swap", key, self._wit.compare_and_swap, expected, new)

