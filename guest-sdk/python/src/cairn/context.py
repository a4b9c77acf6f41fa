"""Dependency `cairn:plugin/context`: facts about the current invocation.

```python
@action
def which_attempt(context: Annotated[Context, Depends()]) -> int:
    return context.attempt()
```

Outside a component (tests), without a `testing.FixedContext`, a `Context`
answers from a default: action id `native`, attempt 1, an hour left.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol


class ContextBackend(Protocol):
    """Where a `Context` reads from: the host, or `testing.FixedContext`."""

    def action_id(self) -> str: ...

    def attempt(self) -> int: ...

    def deadline_unix_ms(self) -> int: ...


class Context:
    """The current invocation: its id, attempt and deadline."""

    def __init__(self, backend: ContextBackend) -> None:
        self._backend = backend

    def action_id(self) -> str:
        """The id of the action row being run (or of the one-off `cairn invoke`)."""
        return self._backend.action_id()

    def attempt(self) -> int:
        """Which attempt this is, starting at 1."""
        return self._backend.attempt()

    def deadline_unix_ms(self) -> int:
        """When this attempt's budget runs out, in ms since the Unix epoch."""
        return self._backend.deadline_unix_ms()

    def deadline(self) -> _dt.datetime:
        """When this attempt's budget runs out. The host stops the guest at
        about that time, so long work should check it and stop (with a
        retryable error) before then."""
        return _dt.datetime.fromtimestamp(self.deadline_unix_ms() / 1000, tz=_dt.timezone.utc)

    def __repr__(self) -> str:
        return "Context(..)"

    @classmethod
    def _construct(cls, resolver) -> "Context":
        backend = resolver.backend("context")
        if backend is None:
            from .deps import in_component

            backend = _HostContext() if in_component() else _NativeContext()
        return cls(backend)


class _HostContext:
    def __init__(self) -> None:
        from wit_world.imports import context as wit

        self._wit = wit

    def action_id(self) -> str:
        return self._wit.action_id()

    def attempt(self) -> int:
        return self._wit.attempt()

    def deadline_unix_ms(self) -> int:
        return self._wit.deadline_unix_ms()


class _NativeContext:
    """What a test without a `FixedContext` sees."""

    #: Plenty of time: tests of deadline handling set their own.
    BUDGET_MS = 3_600_000

    def __init__(self) -> None:
        self._deadline = int(time.time() * 1000) + self.BUDGET_MS

    def action_id(self) -> str:
        return "native"

    def attempt(self) -> int:
        return 1

    def deadline_unix_ms(self) -> int:
        return self._deadline
