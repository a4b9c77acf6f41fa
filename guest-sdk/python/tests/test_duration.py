"""The duration grammar, checked against the vectors every implementation
shares (guest-sdk/contract/tests/durations.txt), and the decorator options
that use it."""

import os

import pytest

from cairn import action
from cairn._duration import DurationError, parse_duration_ms
from conftest import REPO

VECTORS = os.path.join(REPO, "guest-sdk", "contract", "tests", "durations.txt")


def vectors():
    """`(input, expected)` pairs in the file's format: milliseconds, `zero`
    (parses as 0 ms, refused where a positive duration is needed, as every
    decorator option is) or `error`; `\\s` in the input is one space and
    surrounding whitespace is ignored."""
    with open(VECTORS, encoding="utf-8") as file:
        for line in file.read().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            text, expected = line.split("\t")
            yield text.replace("\\s", " "), expected.strip()


def test_vectors_file_has_cases_of_every_kind():
    outcomes = {e if e in ("zero", "error") else "ms" for _, e in vectors()}
    assert outcomes == {"ms", "zero", "error"}
    assert len(list(vectors())) >= 20


@pytest.mark.parametrize("text,expected", list(vectors()))
def test_duration_matches_shared_vector(text, expected):
    if expected == "error":
        with pytest.raises(DurationError):
            parse_duration_ms(text)
    elif expected == "zero":
        with pytest.raises(DurationError) as err:
            parse_duration_ms(text)
        assert err.value.reason == "must be greater than zero"
    else:
        assert parse_duration_ms(text) == int(expected)


def test_action_options_become_timeout_and_retry_policy():
    @action(timeout="30s", retries=3, backoff="500ms", max_backoff="1m")
    def slow() -> None: ...

    assert slow.timeout_ms == 30_000
    assert (slow.retry.max_attempts, slow.retry.initial_backoff_ms, slow.retry.max_backoff_ms) == (3, 500, 60_000)


def test_retries_without_backoff_take_the_rust_defaults():
    @action(retries=2)
    def flaky() -> None: ...

    assert (flaky.retry.initial_backoff_ms, flaky.retry.max_backoff_ms) == (1_000, 60_000)
    assert flaky.timeout_ms is None


@pytest.mark.parametrize(
    "options,message",
    [
        ({"timeout": "1.5s"}, "invalid `timeout` duration '1.5s': unknown unit"),
        ({"timeout": 30}, "`timeout` is a string with a unit"),
        ({"backoff": "1s"}, "`backoff` and `max_backoff` only apply with `retries=N`"),
        ({"retries": 0}, "must be at least 1"),
        ({"retries": "3"}, "`retries` is an integer"),
        ({"retries": 2, "backoff": "10s", "max_backoff": "1s"}, "`max_backoff` (1000ms) is shorter than `backoff` (10000ms)"),
        ({"name": "a:b"}, "invalid action name 'a:b'"),
        ({"name": ""}, "invalid action name ''"),
    ],
)
def test_bad_action_options_are_rejected_at_import(options, message):
    with pytest.raises((TypeError, ValueError)) as err:
        action(**options)(_plain)
    assert message in str(err.value)


def _plain():
    return None
