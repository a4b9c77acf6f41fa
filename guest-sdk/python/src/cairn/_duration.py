"""The duration grammar of `@action(timeout=..., backoff=..., max_backoff=...)`.

One function, the same grammar as the Rust SDK's `#[action]` attribute and the
host's `cairn.toml` (`"500ms"`, `"30s"`, `"5m"`, `"1h"`): optional surrounding
whitespace, ASCII digits, optional whitespace, a unit. The value must be
positive and fit an unsigned 64-bit number of milliseconds, because that is
what the WIT `action-info` record carries.

Both implementations are checked against the same vectors,
`guest-sdk/contract/tests/durations.txt`, so they cannot drift apart.
"""

from __future__ import annotations

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_U64_MAX = 2**64 - 1
_DIGITS = frozenset("0123456789")


class DurationError(ValueError):
    """A duration that does not follow the grammar; `reason` is the short
    cause shared with the Rust parser (`missing unit`, `unknown unit`...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_duration_ms(text: str) -> int:
    """Milliseconds in `text` (`"500ms"`, `"30s"`, `"5m"`, `"1h"`).

    Raises `DurationError` with the reason the Rust parser gives for the same
    input: `missing unit`, `missing number`, `number too large`,
    `unknown unit` or `must be greater than zero`.
    """
    text = text.strip()
    split = next((i for i, c in enumerate(text) if c not in _DIGITS), None)
    if split is None:
        raise DurationError("missing unit")
    number, unit = text[:split], text[split:]
    if not number:
        raise DurationError("missing number")
    value = int(number)
    if value > _U64_MAX:
        raise DurationError("number too large")
    scale = _UNITS_MS.get(unit.strip())
    if scale is None:
        raise DurationError("unknown unit")
    ms = value * scale
    if ms > _U64_MAX:
        raise DurationError("number too large")
    if ms == 0:
        raise DurationError("must be greater than zero")
    return ms


def duration_option(key: str, text: object) -> int:
    """`parse_duration_ms` for the decorator option `key`, with a message that
    names the option and shows the accepted forms."""
    if not isinstance(text, str):
        raise TypeError(
            f'`{key}` is a string with a unit, e.g. {key}="30s", not {type(text).__name__}'
        )
    try:
        return parse_duration_ms(text)
    except DurationError as err:
        raise ValueError(
            f"invalid `{key}` duration {text!r}: {err.reason}; write a whole number "
            'with a unit: "500ms", "30s", "5m" or "1h"'
        ) from None
