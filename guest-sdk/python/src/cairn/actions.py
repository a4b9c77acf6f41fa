"""`@action`: turn a plain function into a cairn action.

```python
from typing import Annotated
from cairn import Depends, Kv, action

@action
def hello(name: str) -> str:
    return f"Hello, {name}!"

@action(name="visit", timeout="5s", retries=3, backoff="200ms", max_backoff="10s")
async def count_visit(page: str, kv: Annotated[Kv, Depends()]) -> int:
    return kv.increment(f"visits:{page}")
```

# Strategy

The decorator returns an `Action`: a callable that wraps the function and
registers it in `cairn.registry` under (its Python module, its name).

* **Calling it directly** (as a test does) calls the function with the
  arguments given and resolves every `Depends` parameter the caller did not
  pass, in a fresh scope of the resolver `cairn.testing.install` put in
  place (or an empty one). An `async` action stays a coroutine function.
* **`action.call(resolver, **kwargs)`** does the same with an explicit
  resolver (the Rust SDK's `<action>::call`).
* **The host's invocation** (`cairn._component.invoke`) decodes the
  protobuf keyword arguments, binds them (`cairn.binding`), resolves the
  dependencies, runs the function (driving a coroutine to completion, see
  `deps.run_sync`) and encodes the result or the failure.

# Options

| key | value | meaning |
| --- | --- | --- |
| `name` | `"other_name"` | the action's name; default: the function's `__name__` |
| `timeout` | `"30s"` | default budget per attempt (`ms`, `s`, `m`, `h`) |
| `retries` | `3` | default total attempts, including the first |
| `backoff` | `"500ms"` | delay before the 2nd attempt (default `1s`; needs `retries`) |
| `max_backoff` | `"60s"` | cap on any delay (default `60s`; needs `retries`) |

The same keys, grammar and defaults as the Rust SDK's `#[action(...)]`; a
bad value is a `ValueError`/`TypeError` when the module is imported, so
`cairn-py build` reports it with the file and line. The description the host
shows is the function's docstring.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from ._duration import duration_option
from .deps import Resolver, SignatureError, check_named_params, plan, run_sync, where
from .registry import registry

#: Delay before the second attempt when `retries` is given without
#: `backoff`: long enough not to hammer a struggling dependency, short enough
#: that a transient blip costs about a second (as in the Rust SDK).
DEFAULT_BACKOFF_MS = 1_000
#: Cap on any single delay when `retries` is given without `max_backoff`: a
#: minute keeps a long retry chain responsive (as in the Rust SDK).
DEFAULT_MAX_BACKOFF_MS = 60_000

_KNOWN_KEYS = "`name`, `timeout`, `retries`, `backoff`, `max_backoff`"


def validate_name(name: Any, what: str = "action") -> str:
    """Registry keys are `module:name`: names are non-empty strings without
    `:` or whitespace."""
    if not isinstance(name, str) or not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError(f"invalid {what} name {name!r}: it must be non-empty, without `:` or whitespace")
    return name


class RetryPolicy:
    """The retry policy declared on `@action` (the WIT `retry-policy`)."""

    __slots__ = ("max_attempts", "initial_backoff_ms", "max_backoff_ms")

    def __init__(self, max_attempts: int, initial_backoff_ms: int, max_backoff_ms: int) -> None:
        self.max_attempts = max_attempts
        self.initial_backoff_ms = initial_backoff_ms
        self.max_backoff_ms = max_backoff_ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryPolicy) and (
            (self.max_attempts, self.initial_backoff_ms, self.max_backoff_ms)
            == (other.max_attempts, other.initial_backoff_ms, other.max_backoff_ms)
        )

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, initial_backoff_ms={self.initial_backoff_ms}, "
            f"max_backoff_ms={self.max_backoff_ms})"
        )


def _retry_policy(retries: Any, backoff: Any, max_backoff: Any) -> RetryPolicy | None:
    if retries is None:
        if backoff is not None or max_backoff is not None:
            raise ValueError("`backoff` and `max_backoff` only apply with `retries=N`")
        return None
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(
            "`retries` is an integer: the maximum number of attempts, including the first (e.g. `retries=3`)"
        )
    if retries < 1:
        raise ValueError("`retries` counts attempts including the first, so it must be at least 1")
    if retries > 2**32 - 1:
        raise ValueError("`retries` must fit an unsigned 32-bit number")
    initial = duration_option("backoff", backoff) if backoff is not None else DEFAULT_BACKOFF_MS
    cap = duration_option("max_backoff", max_backoff) if max_backoff is not None else DEFAULT_MAX_BACKOFF_MS
    if cap < initial:
        raise ValueError(f"`max_backoff` ({cap}ms) is shorter than `backoff` ({initial}ms)")
    return RetryPolicy(retries, initial, cap)


class Action:
    """An `@action` function: still callable as the function (with its
    dependencies resolved), plus what the host needs to know about it."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        timeout_ms: int | None,
        retry: RetryPolicy | None,
    ) -> None:
        self.func = func
        self.name = name
        self.module = func.__module__
        self.description = inspect.cleandoc(func.__doc__ or "")
        self.timeout_ms = timeout_ms
        self.retry = retry
        self.is_async = inspect.iscoroutinefunction(func)
        functools.update_wrapper(self, func)
        mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
        if self.is_async and mark is not None:
            # So `inspect.iscoroutinefunction(action)` (pytest-asyncio,
            # anyio) sees what it wraps.
            mark(self)

    @property
    def where(self) -> str:
        """`file:line` of the function, for build errors."""
        return where(self.func)

    def params(self):
        """The parameters (keyword arguments and dependencies); raises
        `SignatureError` for one the SDK cannot bind."""
        return plan(self.func)

    def is_plain(self) -> bool:
        """Whether the action is a sync function without dependencies, which
        the host's invocation calls directly."""
        plain = self.__dict__.get("_plain")
        if plain is None:
            plain = not self.is_async and all(p.depends is None for p in self.params())
            self.__dict__["_plain"] = plain
        return plain

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, resolving the `Depends` parameters
        not given from the installed test resolver (`cairn.testing.install`)
        or an empty one, in a fresh scope."""
        from .testing import installed

        return self.call(installed(), *args, **kwargs)

    def call(self, resolver: Resolver, /, *args: Any, **kwargs: Any) -> Any:
        """Run the action as one invocation: its dependencies resolved from a
        fresh scope of `resolver`, its arguments as given. Returns what the
        function returns (a coroutine for an `async` action); a dependency
        that fails raises `DependencyError`."""
        bound = inspect.signature(self.func).bind_partial(*args, **kwargs).arguments
        scope = resolver.scope()
        if self.is_async:
            return self._acall(scope, bound)
        deps = run_sync(scope.aresolve_params(self.func, bound))
        return self.func(**bound, **deps)

    async def _acall(self, scope: Resolver, bound: dict[str, Any]) -> Any:
        deps = await scope.aresolve_params(self.func, bound)
        return await self.func(**bound, **deps)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Actions are free functions; keep attribute access on a class from
        # turning them into bound methods that would shift the arguments.
        return self

    def __repr__(self) -> str:
        return f"<cairn action {self.module}:{self.name}>"


def action(func: Callable[..., Any] | None = None, *, name: str | None = None, timeout: str | None = None,
           retries: int | None = None, backoff: str | None = None, max_backoff: str | None = None) -> Any:
    """Decorator for registering actions (sync or async functions); usable
    bare (`@action`) or with options (`@action(name=..., timeout="30s",
    retries=3, backoff="500ms", max_backoff="60s")`, see the module docs).

    Actions decorated with `@action` resolve their dependency markers when
    called directly (e.g. in pytest)."""

    def decorate(fn: Callable[..., Any]) -> Action:
        if isinstance(fn, Action):
            raise TypeError(f"{fn.where}: @action applied twice to `{fn.name}`")
        if not inspect.isfunction(fn):
            raise TypeError(f"@action applies to a function, not {type(fn).__name__}")
        action_name = validate_name(name if name is not None else fn.__name__)
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise SignatureError(f"{where(fn)}: action `{action_name}` is a generator: return a value instead")
        check_named_params(fn, inspect.signature(fn), f"action `{action_name}`")
        timeout_ms = duration_option("timeout", timeout) if timeout is not None else None
        retry = _retry_policy(retries, backoff, max_backoff)
        wrapped = Action(fn, name=action_name, timeout_ms=timeout_ms, retry=retry)
        registry.register(wrapped.module, action_name, wrapped)
        return wrapped

    if func is not None:
        if not callable(func):
            raise TypeError(
                f"@action takes options as keywords (`@action(name={func!r})`), not positionally"
            )
        return decorate(func)
    return decorate


class _PluginDeclaration:
    """What `cairn.plugin(...)` declared, and where."""

    module: str | None = None
    where: str | None = None


PLUGIN = _PluginDeclaration()


def plugin(*, module: str) -> None:
    """Declare the plugin's module: the host registers every action of this
    plugin as `module:name` (the Rust SDK's `plugin!(module = "...")`).

    Call it once, in the plugin's entry module. Without it, `cairn-py build`
    takes the `[project] name` of the plugin directory's `pyproject.toml`, or
    the directory's name. Declaring two different modules is a `ValueError`.
    """
    import sys

    validate_name(module, "module")
    frame = sys._getframe(1)
    here = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    if PLUGIN.module is not None and PLUGIN.module != module:
        raise ValueError(f"plugin module declared twice: {PLUGIN.module!r} at {PLUGIN.where}, then {module!r}")
    PLUGIN.module = module
    PLUGIN.where = here
