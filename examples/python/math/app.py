"""The math plugin: plain arithmetic, and an error the host stores.

`divide` with `b=0` raises Python's own `ZeroDivisionError`; the host stores
an error payload of type `ZeroDivisionError`, module `builtins`, with the
traceback and the MRO (`ZeroDivisionError`, `ArithmeticError`, `Exception`,
`BaseException`) as its type hierarchy. Not retryable: an uncaught exception
never is unless it says so.
"""

import cairn
from cairn import action

cairn.plugin(module="math")


@action
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@action(timeout="5s", retries=3, backoff="200ms")
def divide(a: float, b: float) -> float:
    """Divide `a` by `b`."""
    return a / b


@action
def stats(values: list[float]) -> tuple[float, float]:
    """The minimum and maximum of `values` (a tuple comes back as a tuple)."""
    if not values:
        raise cairn.Error("no values", type="ValueError")
    return (min(values), max(values))
