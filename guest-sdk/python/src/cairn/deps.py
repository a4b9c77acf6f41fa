"""Dependency injection: `Annotated[T, Depends(fn)]` parameters, resolved per
invocation, in the model of FastAPI's and Mountaineer's `Depends`.

# Strategy

A parameter annotated `Annotated[T, Depends(fn)]` is not a keyword argument:
the SDK calls `fn` for it (resolving `fn`'s own `Depends` parameters first)
and passes what `fn` returned. `Depends()` without a function uses `T`
itself, which is how the host's dependencies are asked for:
`kv: Annotated[cairn.Kv, Depends()]`.

* **One scope per invocation.** Every invocation, whether the host's or a
  direct call in a test, resolves in a fresh `Resolver` scope, so nothing a
  dependency built survives into the next one (the host runs each invocation
  in a fresh instance anyway).
* **Built once per invocation by default.** With `use_cache=True` (the
  default) a dependency is called the first time it is needed and the same
  value goes to everything else that asks for it in that invocation;
  `Depends(fn, use_cache=False)` calls `fn` again for that parameter. The
  cache is keyed by the function, as FastAPI keys it.
* **Sync or async.** A dependency may be a plain function, an `async`
  function or a class; one that returns an awaitable is awaited.
* **Built-ins are swappable.** `Kv`, `Config`, `Http`, `Enqueue`, `Log` and
  `Context` take their backend from the resolver: the host's import inside a
  component, a test double anywhere (`Resolver(kv=MemoryKv())`).
* **Imports are declarations.** `cairn-py build` walks every action's
  dependency graph (`builtins_used`) and the component imports exactly the
  host interfaces found there; a backend imports its WIT binding only when
  it is built. So a plugin whose actions never ask for `Kv` does not import
  `cairn:plugin/kv`, and the operator's grants mean the same as for Rust.

# Failure modes

Resolution raises, never recurses without bound:

* a dependency that raises fails the invocation with a `DependencyError`
  naming it and the chain that needed it (retryable if its cause was), and
  the action is not called;
* a dependency that needs itself, directly or not, is a `DependencyError`
  listing the cycle, detected before the second call starts;
* outside a component, a built-in without a test double (kv, config, http,
  enqueue) fails with a `DependencyError` whose cause (`MissingBackend`) says
  which double to give the resolver; `Log` and `Context` fall back to stderr
  and a default context.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from typing import Any, Callable

from .errors import SDK_MODULE, Error, StalledCoroutine, describe_exception


class Depends:
    """Mark a parameter as a dependency: `Annotated[T, Depends(fn)]`.

    `dependency` is the function (or class) whose result the parameter gets;
    `None` means the annotated type `T` itself. `use_cache=True` shares one
    value per invocation; `False` calls the dependency for this parameter
    alone.
    """

    __slots__ = ("dependency", "use_cache")

    def __init__(self, dependency: Callable[..., Any] | None = None, *, use_cache: bool = True) -> None:
        if dependency is not None and not callable(dependency):
            raise TypeError(f"Depends() takes a function or class, not {dependency!r}")
        self.dependency = dependency
        self.use_cache = bool(use_cache)

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__qualname__", self.dependency)
        return f"Depends({name}, use_cache={self.use_cache})"


#: The seed's backward-compatible alias for `Depends`.
Depend = Depends


class DependencyError(Error):
    """Resolving a dependency failed: it raised, or it needs itself.

    The host sees type `DependencyError` (module `cairn`) with a message that
    names the dependency and the chain that needed it
    (``dependency `busy` failed (via `needs_busy` -> `busy`): upstream busy``)
    and details `dependency`, `path`, `cause_type` and `cause_module`.
    Retryable if the cause was; a cycle never is.
    """

    def __init__(self, path: list[str], cause: BaseException | None = None, cycle: list[str] | None = None) -> None:
        self.path = list(path)
        self.cause = cause
        self.cycle = cycle
        if cycle is not None:
            message = "dependency cycle: " + " -> ".join(f"`{n}`" for n in cycle)
            cause_type, cause_module, retryable = "DependencyCycle", SDK_MODULE, False
        else:
            described = describe_exception(cause) if cause is not None else None
            message = f"dependency `{self.dependency}` failed"
            if len(self.path) > 1:
                message += " (via " + " -> ".join(f"`{n}`" for n in self.path) + ")"
            message += f": {described.message if described else ''}"
            cause_type = described.type_name if described else ""
            cause_module = described.module if described else ""
            retryable = described.retryable if described else False
        super().__init__(
            message,
            type="DependencyError",
            module=SDK_MODULE,
            retryable=retryable,
            details={
                "dependency": self.dependency,
                "path": list(self.path),
                "cause_type": cause_type,
                "cause_module": cause_module,
            },
        )

    @property
    def dependency(self) -> str:
        """The dependency that failed (for a cycle, the one asked for twice)."""
        if self.cycle:
            return self.cycle[-1]
        return self.path[-1] if self.path else ""


DependencyError.__module__ = SDK_MODULE


def dependency_name(dependency: Any) -> str:
    """How errors name a dependency: its `__name__` (a function's or a
    class's)."""
    return getattr(dependency, "__name__", None) or repr(dependency)


# ------------------------------------------------------------------ plans


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of an action or dependency, as the SDK binds it."""

    name: str
    #: `Depends` marker, or None for a keyword argument.
    depends: Depends | None
    #: The dependency to call (the marker's, or the annotated type).
    dependency: Any
    #: The annotation without `Annotated[...]` (for keyword arguments: the
    #: type the argument is decoded into).
    annotation: Any
    default: Any


class SignatureError(TypeError):
    """An action or dependency whose signature the SDK cannot call. The
    message starts with `file:line:` of the function."""


def where(fn: Any) -> str:
    """`file:line` of a function or class, for build errors."""
    target = fn
    if inspect.isclass(fn):
        target = fn.__init__ if "__init__" in vars(fn) else fn
    code = getattr(inspect.unwrap(target), "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return getattr(fn, "__module__", "?")


def _hints(fn: Any) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as err:  # NameError for an unresolvable forward reference, ...
        raise SignatureError(f"{where(fn)}: cannot resolve the annotations of `{dependency_name(fn)}`: {err}") from None


def check_named_params(fn: Any, signature: inspect.Signature, what: str) -> None:
    """Raise `SignatureError` if `fn` (`what`: how the message names it,
    e.g. ``action `f` ``) takes `*args`, `**kwargs` or a positional-only
    parameter: keyword arguments, and dependencies, are passed by name."""
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind == param.VAR_POSITIONAL else "**"
            raise SignatureError(
                f"{where(fn)}: {what} takes `{star}{param.name}`: actions and dependencies take named parameters only"
            )
        if param.kind == param.POSITIONAL_ONLY:
            raise SignatureError(
                f"{where(fn)}: parameter `{param.name}` of {what} is positional-only: "
                "keyword arguments are matched by name"
            )


_PLANS: dict[Any, list[Param]] = {}


def plan(fn: Any) -> list[Param]:
    """The parameters of `fn` (an action's function or a dependency), cached.

    Raises `SignatureError` for `*args`, `**kwargs`, positional-only
    parameters and a `Depends` whose dependency is missing."""
    cached = _PLANS.get(fn)
    if cached is not None:
        return cached
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise SignatureError(f"{where(fn)}: cannot read the signature of `{dependency_name(fn)}`: {err}") from None
    check_named_params(fn, signature, f"`{dependency_name(fn)}`")
    hints = _hints(fn)
    params = []
    for param in signature.parameters.values():
        annotation = hints.get(param.name, param.annotation)
        depends = None
        base = annotation
        if typing.get_origin(annotation) is typing.Annotated:
            base, *extras = typing.get_args(annotation)
            markers = [e for e in extras if isinstance(e, Depends)]
            if len(markers) > 1:
                raise SignatureError(f"{where(fn)}: parameter `{param.name}` has more than one Depends(...)")
            depends = markers[0] if markers else None
        if isinstance(param.default, Depends):
            raise SignatureError(
                f"{where(fn)}: parameter `{param.name}` uses `= Depends(...)` as a default: "
                f"write `{param.name}: Annotated[T, Depends(...)]`"
            )
        dependency = None
        if depends is not None:
            dependency = depends.dependency if depends.dependency is not None else base
            if dependency is inspect.Parameter.empty or not callable(dependency):
                raise SignatureError(
                    f"{where(fn)}: parameter `{param.name}`: `Depends()` without a function needs a "
                    "class as the annotated type"
                )
        params.append(Param(param.name, depends, dependency, base, param.default))
    _PLANS[fn] = params
    return params


def builtins_used(fn: Any, *, seen: set | None = None) -> set[type]:
    """The built-in dependency classes (`Kv`, `Config`...) reachable from
    `fn`'s `Depends` parameters, through user-defined dependencies. What
    `cairn-py build` turns into the component's imports."""
    from .builtin import BUILTINS

    seen = set() if seen is None else seen
    found: set[type] = set()
    for param in plan(fn):
        if param.depends is None:
            continue
        dependency = param.dependency
        if dependency in seen:
            continue
        seen.add(dependency)
        if dependency in BUILTINS:
            found.add(dependency)
        else:
            found |= builtins_used(dependency, seen=seen)
    return found


def check_dependency_params(fn: Any, *, seen: set | None = None) -> None:
    """Every parameter of every dependency reachable from `fn` must be a
    `Depends` or have a default: dependencies take no keyword arguments.
    Raises `SignatureError` naming the first that is neither."""
    from .builtin import BUILTINS

    seen = set() if seen is None else seen
    for param in plan(fn):
        if param.depends is None or param.dependency in seen or param.dependency in BUILTINS:
            continue
        seen.add(param.dependency)
        for inner in plan(param.dependency):
            if inner.depends is None and inner.default is inspect.Parameter.empty:
                raise SignatureError(
                    f"{where(param.dependency)}: parameter `{inner.name}` of dependency "
                    f"`{dependency_name(param.dependency)}` is neither `Annotated[T, Depends(...)]` "
                    "nor has a default: dependencies take no keyword arguments"
                )
        check_dependency_params(param.dependency, seen=seen)


# --------------------------------------------------------------- resolving


class Resolver:
    """Resolves `Depends` parameters for one invocation: the backends the
    built-in dependencies use, values that replace dependencies outright, and
    the cache of values built so far.

    ```python
    resolver = Resolver(kv=MemoryKv(), config=FixedConfig({"greeting": "hi"}))
    assert hello.call(resolver, name="Ada") == "hi, Ada!"
    ```

    `overrides={fn: value}` replaces a whole dependency (FastAPI's
    `dependency_overrides`). A resolver is one scope: values it cached stay
    for as long as it lives; `scope()` starts a new one with the same
    backends and overrides, which is what every invocation does.
    """

    def __init__(
        self,
        *,
        kv: Any = None,
        config: Any = None,
        http: Any = None,
        enqueue: Any = None,
        log: Any = None,
        context: Any = None,
        overrides: dict[Any, Any] | None = None,
    ) -> None:
        self.backends = {"kv": kv, "config": config, "http": http, "enqueue": enqueue, "log": log, "context": context}
        self.overrides = dict(overrides or {})
        self._cache: dict[Any, Any] = {}
        self._resolving: list[Any] = []

    def scope(self) -> "Resolver":
        """A fresh scope (one invocation): same backends and overrides,
        nothing cached."""
        fresh = Resolver(overrides=self.overrides)
        fresh.backends = dict(self.backends)
        return fresh

    def resolve(self, dependency: Any, *, use_cache: bool = True) -> Any:
        """Build `dependency` (a function, class or built-in type) in this
        scope, awaiting it if it is async. Raises `DependencyError`."""
        return run_sync(self.aresolve(dependency, use_cache=use_cache))

    async def aresolve(self, dependency: Any, *, use_cache: bool = True) -> Any:
        """`resolve` for async callers (an async action called directly)."""
        from .builtin import BUILTINS

        if dependency in self.overrides:
            return self.overrides[dependency]
        if dependency in BUILTINS:
            # Built-ins are cheap handles over one backend: always shared.
            use_cache = True
        if use_cache and dependency in self._cache:
            return self._cache[dependency]
        if dependency in self._resolving:
            at = self._resolving.index(dependency)
            cycle = [dependency_name(d) for d in self._resolving[at:]] + [dependency_name(dependency)]
            raise DependencyError([dependency_name(d) for d in self._resolving], cycle=cycle)
        self._resolving.append(dependency)
        try:
            if dependency in BUILTINS:
                value = dependency._construct(self)
            else:
                kwargs = await self.aresolve_params(dependency)
                value = dependency(**kwargs)
                if inspect.isawaitable(value):
                    value = await value
        except DependencyError:
            raise
        except Exception as err:
            raise DependencyError([dependency_name(d) for d in self._resolving], cause=err) from err
        finally:
            self._resolving.pop()
        if use_cache:
            self._cache[dependency] = value
        return value

    async def aresolve_params(self, fn: Any, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `Depends` parameters of `fn` that `given` does not supply,
        resolved in this scope."""
        given = given or {}
        out = {}
        for param in plan(fn):
            if param.depends is None or param.name in given:
                continue
            out[param.name] = await self.aresolve(param.dependency, use_cache=param.depends.use_cache)
        return out

    def backend(self, name: str) -> Any:
        """The test double given for built-in `name`, or None."""
        return self.backends.get(name)

    def __repr__(self) -> str:
        given = ", ".join(k for k, v in self.backends.items() if v is not None)
        return f"Resolver(doubles=[{given}], overrides={len(self.overrides)}, cached={len(self._cache)})"


def in_component() -> bool:
    """Whether this code runs inside a component (CPython for WASI), where
    the built-ins talk to the host's imports."""
    return sys.platform == "wasi"


def run_sync(awaitable: Any) -> Any:
    """Run a coroutine to completion on the spot, without an event loop.

    There is no event loop inside a plugin: a coroutine can only make progress
    by being resumed, which works for cooperative yields (`await
    asyncio.sleep(0)`) and for awaiting other coroutines. One that awaits a
    future (I/O, a timer) waits for something that will never come, so
    instead of hanging until the host's timeout this raises
    `StalledCoroutine` at once.
    """
    coro = awaitable.__await__() if not inspect.iscoroutine(awaitable) else awaitable
    try:
        while True:
            yielded = coro.send(None)
            if yielded is not None:
                coro.close()
                raise StalledCoroutine(
                    f"coroutine awaited {type(yielded).__name__}, which nothing inside a plugin can complete "
                    "(there is no event loop: await only other coroutines)",
                    type="StalledCoroutine",
                    module=SDK_MODULE,
                )
    except StopIteration as done:
        return done.value
