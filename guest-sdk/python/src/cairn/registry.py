"""The action registry: the in-process map from (module, name) to action.

As the seed describes it: actions are keyed by (module, name), the module
being the Python module the action is defined in, so the same action name
may be used in different modules. `@action` registers every action here when
its module is imported; `cairn-py build` imports the plugin and reads it.

The host's key is different: it is `<plugin module>:<name>`, the plugin
module being what the plugin declares with `cairn.plugin(module=...)`. A
plugin's actions must therefore have distinct names across all of its
Python modules; `cairn-py build` rejects two actions with one name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class _ActionEntry:
    """One registered action."""

    #: The Python module containing the action.
    module: str
    #: The action name (from `@action`, default the function's name).
    name: str
    #: The action: the decorated callable (see `cairn.actions.Action`).
    func: Callable[..., Any]

    @property
    def key(self) -> str:
        """`module:name`."""
        return f"{self.module}:{self.name}"


def _implementation(func: Any) -> Any:
    """The function behind an action, to tell "the same action registered
    again" (a no-op) from "another action with the same key" (an error)."""
    return getattr(func, "func", func)


class ActionRegistry:
    """In-memory registry of user-defined actions.

    Actions are keyed by (module, name), allowing the same action name to be
    used in different modules."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _ActionEntry] = {}

    def register(self, module: str, name: str, func: Callable[..., Any]) -> None:
        """Register an action with its module and name.

        Raises `ValueError` if an action with the same module:name is already
        registered with a different implementation. Registering the same one
        again is a no-op."""
        key = (module, name)
        existing = self._entries.get(key)
        if existing is not None:
            if _implementation(existing.func) is _implementation(func):
                return
            raise ValueError(
                f"action `{module}:{name}` is already registered with a different implementation "
                f"({getattr(_implementation(existing.func), '__qualname__', existing.func)!s})"
            )
        self._entries[key] = _ActionEntry(module, name, func)

    def get(self, module: str, name: str) -> Callable[..., Any] | None:
        """The action registered as module:name, or None."""
        entry = self._entries.get((module, name))
        return entry.func if entry is not None else None

    def names(self) -> list[str]:
        """Every registered action key, `module:name`, sorted."""
        return sorted(entry.key for entry in self._entries.values())

    def entries(self) -> list[_ActionEntry]:
        """Every registered entry, sorted by module and name."""
        return [self._entries[key] for key in sorted(self._entries)]

    def reset(self) -> None:
        """Clear all registered actions."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ActionRegistry({self.names()})"


#: The registry `@action` registers into.
registry = ActionRegistry()
