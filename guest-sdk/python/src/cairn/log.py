"""Dependency `cairn:plugin/log`: structured records in the host's log.

```python
@action
def charge(amount_cents: int, log: Annotated[Log, Depends()]) -> None:
    log.info("charging", amount_cents=amount_cents)
```

The host adds the plugin's module, the action's name and the attempt to
every record; the guest cannot forge them. Field values are sent as text
(`str(value)`). Outside a component, without a `testing.RecordingLog`,
records go to stderr as `[INFO] message key=value`. `print` works too (the
host captures stdout and stderr), but records carry the fields.
"""

from __future__ import annotations

import sys
from typing import Protocol

#: The levels, in order; each maps one to one onto the host's `tracing`.
LEVELS = ("trace", "debug", "info", "warn", "error")


class LogBackend(Protocol):
    """Where a `Log` writes: the host, stderr, or `testing.RecordingLog`."""

    def log(self, level: str, message: str, fields: list[tuple[str, str]]) -> None: ...


class Log:
    """Emits structured log records."""

    def __init__(self, backend: LogBackend) -> None:
        self._backend = backend

    def log(self, level: str, message: str, **fields: object) -> None:
        """Emit one record at `level` (`trace`, `debug`, `info`, `warn`,
        `error`) with extra key/value fields."""
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
        self._backend.log(level, str(message), [(k, str(v)) for k, v in fields.items()])

    def trace(self, message: str, **fields: object) -> None:
        """Emit a `trace` record."""
        self.log("trace", message, **fields)

    def debug(self, message: str, **fields: object) -> None:
        """Emit a `debug` record."""
        self.log("debug", message, **fields)

    def info(self, message: str, **fields: object) -> None:
        """Emit an `info` record."""
        self.log("info", message, **fields)

    def warn(self, message: str, **fields: object) -> None:
        """Emit a `warn` record."""
        self.log("warn", message, **fields)

    def error(self, message: str, **fields: object) -> None:
        """Emit an `error` record."""
        self.log("error", message, **fields)

    def __repr__(self) -> str:
        return "Log(..)"

    @classmethod
    def _construct(cls, resolver) -> "Log":
        backend = resolver.backend("log")
        if backend is None:
            from .deps import in_component

            backend = _HostLog() if in_component() else _StderrLog()
        return cls(backend)


class _HostLog:
    def __init__(self) -> None:
        from wit_world.imports import log as wit

        self._wit = wit
        self._levels = {
            "trace": wit.Level.TRACE,
            "debug": wit.Level.DEBUG,
            "info": wit.Level.INFO,
            "warn": wit.Level.WARN,
            "error": wit.Level.ERROR,
        }

    def log(self, level: str, message: str, fields: list[tuple[str, str]]) -> None:
        self._wit.log(self._levels[level], message, fields)


class _StderrLog:
    def log(self, level: str, message: str, fields: list[tuple[str, str]]) -> None:
        line = f"[{level.upper()}] {message}" + "".join(f" {k}={v}" for k, v in fields)
        print(line, file=sys.stderr)
