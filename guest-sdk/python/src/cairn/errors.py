"""How an action reports failure, and what the host sees of it.

An action fails by raising. The SDK describes the exception to the host as
the WIT `action-error` record (type name, module, message, retryable,
details), which the host stores as the action's error payload and consults
for retries. As in the Rust SDK:

| raised | type / module | retryable |
|---|---|---|
| `cairn.Error(msg)` | `Error` / `cairn` | `retryable=` (default no) |
| `cairn.Error(msg, type="Busy")` | `Busy` / the module that raised it (or `module=`) | `retryable=` |
| a subclass of `cairn.Error` | its class name / its module (unless given) | `retryable=` |
| any other exception, e.g. `ZeroDivisionError` | its class's `__name__` / `__module__` (`builtins`) | only if the exception (or its class) has `retryable = True` |
| errors the SDK raises for the action (`ArgumentError`, `DependencyError`, `UnknownAction`, `SerializationError`, `StalledCoroutine`) | that name / `cairn` | no (a `DependencyError` is if its cause was) |

An uncaught exception is not retryable, as a Rust error that is not a
`cairn_sdk::Error` is not: the same input would fail the same way. Declare
transient failures with `cairn.Error(..., retryable=True)` or a class
attribute `retryable = True` on your own exception type.

The traceback and the MRO travel to the host too: see `to_action_error`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

#: The module reported for errors the SDK raises itself and for a
#: `cairn.Error` without a custom type.
SDK_MODULE = "cairn"

#: Keys of the action-error `details` that carry the Python traceback and the
#: type hierarchy to the host (the WIT record has no field for them); the
#: host moves them into the error payload's `traceback` and `type_hierarchy`.
#: A `:` keeps them apart from any Python identifier a user's details use.
TRACEBACK_KEY = "cairn:traceback"
TYPE_HIERARCHY_KEY = "cairn:type_hierarchy"


class Error(Exception):
    """An action's failure, with full control over what the host sees.

    ```python
    raise cairn.Error("inventory service busy", type="ServiceBusy", retryable=True,
                      details={"retry_in_ms": 250})
    ```

    * `type`: the type name the host records (default: the class's name,
      `Error` for this class itself).
    * `module`: where that type lives (default: the Python module that
      created the error, when `type` is given; `cairn` otherwise).
    * `retryable`: whether running the action again may succeed (default
      `False`).
    * `details`: structured data that becomes the error payload's `values`;
      a dict or a dataclass. Anything else is dropped with a note in the
      message: a failure is never masked by a failure to describe it.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        module: str | None = None,
        retryable: bool = False,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = bool(retryable)
        self.details = details
        self._type = type
        if module is None and type is not None:
            # As Rust's `with_type` defaults the module to the action's own
            # module path: the code that created the error.
            module = sys._getframe(1).f_globals.get("__name__", "")
            if module == __name__ or module.startswith("cairn."):
                module = sys._getframe(2).f_globals.get("__name__", "")
        self._module = module

    @property
    def type_name(self) -> str:
        """The type name the host will see."""
        if self._type is not None:
            return self._type
        return type(self).__name__

    @property
    def module(self) -> str:
        """The module the host will see with the type name."""
        if self._module is not None:
            return self._module
        cls = type(self)
        return SDK_MODULE if cls.__module__.startswith("cairn") else cls.__module__

    def __str__(self) -> str:
        return self.message


Error.__module__ = SDK_MODULE


class ArgumentError(Error):
    """The keyword arguments do not fit the action: a missing required
    argument, an unexpected one, one given twice, or one of the wrong type.
    The message names the parameter. Never retryable."""


class SerializationError(Error):
    """An action's result (or a value it stores or enqueues) has no payload
    mapping. Never retryable."""


class UnknownAction(Error):
    """The host asked for an action the plugin does not have."""


class StalledCoroutine(Error):
    """An `async` action awaited something that can never complete inside a
    plugin (there is no event loop to wake it): see `cairn.actions`."""


for _cls in (ArgumentError, SerializationError, UnknownAction, StalledCoroutine):
    _cls.__module__ = SDK_MODULE


@dataclasses.dataclass
class Described:
    """An exception as the error payload describes it."""

    type_name: str
    module: str
    message: str
    retryable: bool
    details: dict[str, Any] | None
    type_hierarchy: list[str]


def _mro_names(cls: type) -> list[str]:
    return [c.__name__ for c in cls.__mro__ if c is not object]


def _details_dict(details: Any) -> dict[str, Any]:
    """A dict, a `Model`'s data or a record's (dataclass, pydantic model)
    fields, as a mapping in field order: an error's `details`, and what
    `Enqueue.enqueue` accepts as keyword arguments. `TypeError` for anything
    else."""
    from .payload import Model, _fields_of

    if isinstance(details, dict):
        return details
    if isinstance(details, Model):
        return details.data
    record = _fields_of(details)
    if record is not None:
        return dict(record[2])
    raise TypeError("details must serialize to a dict (a dataclass or a dict)")


def describe_exception(exc: BaseException) -> Described:
    """Type name, module, message, retryability, details and type hierarchy
    of `exc`, by the rules in the module docs."""
    hierarchy = _mro_names(type(exc))
    if isinstance(exc, Error):
        if exc._type is not None and exc._type != hierarchy[0]:
            hierarchy = [exc._type, *hierarchy]
        details = None
        message = exc.message
        if exc.details is not None:
            try:
                details = _details_dict(exc.details)
                from .payload import encode_value

                encode_value(details)
            except (TypeError, ValueError) as err:
                details = None
                message = f"{message} (error details dropped: {err})"
        return Described(exc.type_name, exc.module, message, exc.retryable, details, hierarchy)
    retryable = getattr(exc, "retryable", False) is True
    return Described(type(exc).__name__, type(exc).__module__, str(exc), retryable, None, hierarchy)
