"""What every built-in dependency (`Log`, `Context`, `Config`, `Kv`,
`Enqueue`, `Http`) has in common: it is a thin handle over one backend,
picked when the resolver builds it.

# Strategy

The backend is, in this order:

1. the resolver's test double under the dependency's keyword
   (`Resolver(kv=MemoryKv())`);
2. inside a component, the host's import, built only then, so that a
   plugin whose actions never ask for a dependency does not import its WIT
   interface;
3. outside a component, the dependency's native fallback: stderr for `Log`,
   a default context for `Context`, and for the others a `MissingBackend`
   error that names the double to give.

# Failure modes

A missing backend raises from `_construct`, which the resolver reports as a
`DependencyError` naming the dependency. A handle never prints its backend
(its `repr` is `Name(..)`): a `Config`'s values may be secrets.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Builtin:
    """Base of the built-in dependency classes. A subclass names itself with
    class keywords: `class Kv(Builtin, keyword="kv", double="MemoryKv()")`,
    and says how to reach the host in `_host_backend`."""

    #: The resolver's keyword for this dependency's double, which is also the
    #: name `cairn-py build` uses for its import.
    _keyword: ClassVar[str]
    #: The WIT interface the host backend imports, for error messages.
    _interface: ClassVar[str]
    #: An example test double, for the `MissingBackend` message.
    _double: ClassVar[str]

    def __init_subclass__(cls, *, keyword: str, double: str = "", interface: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._keyword = keyword
        cls._double = double
        cls._interface = interface or f"cairn:plugin/{keyword}"

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __repr__(self) -> str:
        return f"{type(self).__name__}(..)"

    @classmethod
    def _construct(cls, resolver: Any) -> Any:
        """Called by the resolver: a handle over the double it holds, else
        over the host's import (in a component) or the native fallback."""
        from .deps import in_component

        backend = resolver.backend(cls._keyword)
        if backend is None:
            backend = cls._host_backend() if in_component() else cls._native_backend()
        return cls(backend)

    @staticmethod
    def _host_backend() -> Any:
        """The backend over the host's import; imports its WIT binding."""
        raise NotImplementedError

    @classmethod
    def _native_backend(cls) -> Any:
        """The backend outside a component without a double: by default
        none, so the resolver reports which double to give."""
        from .builtin import missing_backend

        raise missing_backend(cls._interface, cls._keyword, cls._double)


class HostImport:
    """Base of a host backend over one WIT import whose functions return a
    `result`: componentize-py raises its `Err` for the error case, and that
    type (like the binding) exists only inside a component, so both are
    looked up when the backend is built."""

    def __init__(self, wit: Any) -> None:
        from componentize_py_types import Err

        self._wit = wit
        self._err = Err
