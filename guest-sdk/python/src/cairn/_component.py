"""The plugin's two entry points, `describe` and `invoke`, as the host calls
them through `cairn:plugin/plugin`, in plain Python.

`cairn-py build` generates the component's main module, which imports the
plugin and forwards the WIT exports here; `cairn.testing.invoke` calls the
same functions natively, so a test sees exactly what the host would.

# Guarantees

* `invoke` never lets an exception escape for anything the SDK can see: an
  unknown action, argument bytes that do not decode (nested too deeply
  included), a missing, extra or ill-typed argument, a conversion that raises
  (a dataclass's `__post_init__`), a dependency that fails, an exception the
  action raises, a result that does not serialize (one that contains itself
  or an `int` too long to write included) and a coroutine that stalls all
  become a `Failure` (the WIT `action-error`). Only what kills the
  interpreter itself (running out of memory, the host's deadline) traps.
* Keyword arguments are bound before any dependency is built, and the action
  is not called if a dependency fails.
* Neither entry point reaches a host import unless an action's dependency
  asks for it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import traceback as _traceback
from typing import Any

from . import payload
from .binding import ConvertError, admits_none, convert
from .deps import DependencyError, Resolver, run_sync
from .errors import SDK_MODULE, TRACEBACK_KEY, TYPE_HIERARCHY_KEY, describe_exception

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
_EMPTY = inspect.Parameter.empty


@dataclasses.dataclass
class Failure(Exception):
    """An invocation's failure as the WIT `action-error` record carries it.
    `details` is an encoded `WorkflowDictArgument` (the payload's `values`)."""

    type_name: str
    module: str
    message: str
    retryable: bool = False
    details: bytes | None = None

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


def _sdk_failure(type_name: str, message: str) -> Failure:
    return Failure(type_name, SDK_MODULE, message)


#: componentize-py mounts the N-th Python path directory at `/N/`: inside a
#: component, `/2/app.py` is the plugin directory's `app.py`.
_COMPONENT_PATH = re.compile(r"^/\d+/")


def format_traceback(exc: BaseException) -> str:
    """The traceback of `exc` as Python prints it, without the SDK's own
    frames above the first frame of the plugin's code, and with file names
    relative to the plugin's directory inside a component."""
    summary = _traceback.TracebackException.from_exception(exc)
    frames = list(summary.stack)
    while frames and frames[0].filename.startswith(_SDK_DIR + os.sep) and len(frames) > 1:
        frames.pop(0)
    for frame in frames:
        frame.filename = _COMPONENT_PATH.sub("", frame.filename)
    summary.stack = _traceback.StackSummary.from_list(frames)
    return "".join(summary.format())


def failure_from_exception(exc: BaseException) -> Failure:
    """An exception raised by the action or one of its dependencies, as the
    host sees it (see `cairn.errors`): its type, module, message and
    retryability; its details, traceback and MRO in `details`."""
    described = describe_exception(exc)
    origin = exc.cause if isinstance(exc, DependencyError) and exc.cause is not None else exc
    details = dict(described.details or {})
    details[TRACEBACK_KEY] = format_traceback(origin)
    details[TYPE_HIERARCHY_KEY] = described.type_hierarchy
    try:
        encoded = payload._write_dict_body(details)
    except payload.PayloadError as err:  # cannot happen: details were checked
        encoded, described.message = None, f"{described.message} (error details dropped: {err})"
    return Failure(described.type_name, described.module, described.message, described.retryable, encoded)


def describe(actions: dict[str, Any]) -> list[dict[str, Any]]:
    """Every action's name, description, timeout and retry policy, sorted by
    name (what `plugin.describe` lists)."""
    out = []
    for name in sorted(actions):
        action = actions[name]
        out.append({
            "name": name,
            "description": action.description,
            "timeout_ms": action.timeout_ms,
            "retry": action.retry,
        })
    return out


def bind(action: Any, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The keyword arguments of one call checked and converted (see
    `cairn.binding`). Raises `Failure` (`ArgumentError`)."""
    params = action.params()
    if not pairs and not params:
        return {}
    kwarg_params = {p.name: p for p in params if p.depends is None}
    seen = set()
    for key, _ in pairs:
        if key not in kwarg_params:
            raise _sdk_failure("ArgumentError", f"unexpected argument `{key}`")
        if key in seen:
            raise _sdk_failure("ArgumentError", f"argument `{key}` given more than once")
        seen.add(key)
    given = dict(pairs)
    bound = {}
    for name, param in kwarg_params.items():
        if name in given:
            try:
                bound[name] = convert(given[name], param.annotation)
            except ConvertError as err:
                raise _sdk_failure("ArgumentError", f"argument `{name}`: {err}") from None
            except Exception as err:  # a dataclass's `__post_init__`, `int()` past its digit limit, ...
                raise _sdk_failure("ArgumentError", f"argument `{name}`: {type(err).__name__}: {err}") from None
        elif param.default is not _EMPTY:
            bound[name] = param.default
        elif admits_none(param.annotation):
            bound[name] = None
        else:
            raise _sdk_failure("ArgumentError", f"missing required argument `{name}`")
    return bound


def invoke(actions: dict[str, Any], module: str, name: str, args: bytes, resolver: Resolver) -> bytes:
    """Run action `name` with the protobuf-encoded keyword arguments `args`;
    return the encoded result payload. Raises `Failure`, see the module docs."""
    action = actions.get(name)
    if action is None:
        raise _sdk_failure("UnknownAction", f"plugin `{module}` has no action `{name}`")
    try:
        pairs = payload.decode_arguments(args)
    except payload.PayloadError as err:
        raise _sdk_failure("ArgumentError", f"arguments are not a valid WorkflowArguments payload: {err}") from None
    bound = bind(action, pairs)
    try:
        if action.is_plain():
            # No dependencies and not async: call it straight away. Every
            # object the SDK touches costs a copy-on-write page in a fresh
            # instance, so the common case avoids the resolver and the
            # coroutine machinery altogether.
            result = action.func(**bound)
        else:
            result = run_sync(_run(action, resolver.scope(), bound))
    except Exception as exc:
        raise failure_from_exception(exc) from None
    try:
        return payload.serialize_result_payload(result)
    except payload.PayloadError as err:
        raise _sdk_failure("SerializationError", f"result of action `{name}` does not serialize: {err}") from None


async def _run(action: Any, scope: Resolver, bound: dict[str, Any]) -> Any:
    deps = await scope.aresolve_params(action.func, bound)
    result = action.func(**bound, **deps)
    if action.is_async:
        result = await result
    return result
