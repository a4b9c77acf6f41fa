"""The host's dependencies, as one table: which class stands for which WIT
import. `cairn-py build` reads it to write the component's world; the
resolver reads it to know which dependencies take a backend rather than
being called.

A backend is found in this order: the resolver's test double, else the
host's import inside a component, else (outside one) a `MissingBackend`
error that says which double to give, except for `Log` and `Context`, which
fall back to stderr and a default context so that actions that log can be
called directly.
"""

from __future__ import annotations

from .config import Config
from .context import Context
from .enqueue import Enqueue
from .errors import SDK_MODULE, Error
from .http import Http
from .kv import Kv
from .log import Log

#: Built-in dependency class -> the WIT interface the component imports for
#: it (`cairn:plugin/<name>`, or wasi:http for `Http`).
IMPORTS = {
    Log: "log",
    Context: "context",
    Config: "config",
    Kv: "kv",
    Enqueue: "enqueue",
    Http: "http",
}
BUILTINS = frozenset(IMPORTS)


def missing_backend(interface: str, keyword: str, double: str) -> Error:
    """The cause of a `DependencyError` for a built-in without a backend,
    outside a component."""
    return Error(
        f"no `{interface}` outside a component: give the resolver a test double, e.g. "
        f"`Resolver({keyword}={double})`, or install one with `cairn.testing.install(...)`",
        type="MissingBackend",
        module=SDK_MODULE,
    )


def host_error_type():
    """componentize-py's `Err`, which a WIT import raises for `result::err`."""
    from componentize_py_types import Err

    return Err
