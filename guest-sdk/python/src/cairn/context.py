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
from typing import Protocol

from ._backend import Builtin


class ContextBackend(Protocol):
    """Where a `Context` reads from: the host, or `testing.FixedContext`."""

    def action_id(self) -> str: ...

    def attempt(self) -> int: ...

    def deadline_unix_ms(self) -> int: ...


class Context(Builtin, keyword="context"):
    """The current invocation: its id, attempt and deadline."""

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

    @staticmethod
    def _host_backend() -> ContextBackend:
        # The binding's module-level functions are exactly a `ContextBackend`.
        from wit_world.imports import context

        return context

    @classmethod
    def _native_backend(cls) -> ContextBackend:
        # What a test without a `FixedContext` sees. Imported here: `testing`
        # imports the other built-ins, which a component never needs.
        from .testing import FixedContext

        return FixedContext("native")
