"""Keyword arguments, bound by parameter name as the host's invocation binds
them (through `cairn.testing.invoke`, which encodes them to protobuf first)."""

import dataclasses
import enum
import math
import sys
from typing import Annotated, Optional

import pytest

from cairn import Depends, Model, action
from cairn.testing import invoke


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


class Color(enum.Enum):
    RED = 1
    GREEN = 2


def error(outcome):
    assert not outcome.ok, outcome.result
    assert outcome.error["type"] == "ArgumentError" and outcome.error["module"] == "cairn"
    assert outcome.retryable is False
    return outcome.error["message"]


def test_arguments_bind_by_name_with_defaults_and_optionals():
    @action
    def f(a: int, b: str = "x", c: Optional[int] = None, d: float | None = None) -> list:
        return [a, b, c, d]

    assert invoke(f, a=1).result == [1, "x", None, None]
    assert invoke(f, d=2.5, a=1, b="y", c=3).result == [1, "y", 3, 2.5]


def test_missing_extra_and_wrongly_typed_arguments_name_the_parameter():
    @action
    def f(a: int, b: str = "x", kv: Annotated[int, Depends(lambda: 1)] = 0) -> int:
        return a

    assert error(invoke(f)) == "missing required argument `a`"
    assert error(invoke(f, a=1, z=2)) == "unexpected argument `z`"
    assert error(invoke(f, a=1, kv=2)) == "unexpected argument `kv`"  # a dependency is not an argument
    assert error(invoke(f, a="one")) == 'argument `a`: invalid type: string "one", expected int'
    assert error(invoke(f, a=True)) == "argument `a`: invalid type: boolean `true`, expected int"
    assert error(invoke(f, a=1, b=2)) == "argument `b`: invalid type: integer `2`, expected str"


def test_integers_read_decimal_strings_and_floats_read_integers_as_rust_does():
    @action
    def f(big: int, ratio: float, inf: float) -> list:
        return [big, ratio, inf]

    assert invoke(f, big="123456789012345678901234567890", ratio=3, inf="-Infinity").result == [
        "123456789012345678901234567890", 3.0, -math.inf,
    ]


def test_nested_values_convert_and_errors_carry_the_path():
    @action
    def f(points: list[Point], colors: dict[str, Color], pair: tuple[int, str]) -> list:
        return [points, colors, pair]

    out = invoke(f, points=[{"x": 1}, Point(2.0, 3.0)], colors={"a": Color.RED}, pair=[1, "b"])
    # The result payload holds basemodels; the dataclass is revived because its module is loaded.
    assert out.result == [[Point(1.0, 0.0), Point(2.0, 3.0)], {"a": "RED"}, (1, "b")]
    message = error(invoke(f, points=[{"x": 1}, {"x": "no"}], colors={}, pair=(1, "b")))
    assert message == 'argument `points`: at field `[1].x`: invalid type: string "no", expected float'
    assert error(invoke(f, points=[{"y": 1.0}], colors={}, pair=(1, "b"))) == "argument `points`: at field `[0]`: missing field `x`"
    assert error(invoke(f, points=[], colors={}, pair=(1,))) == "argument `pair`: invalid length 1, expected 2 items"
    assert "expected a variant of Color" in error(invoke(f, points=[], colors={"a": "BLUE"}, pair=(1, "b")))


def test_dataclass_parameters_read_dicts_models_and_field_lists():
    @action
    def norm(p: Point) -> float:
        return math.hypot(p.x, p.y)

    assert invoke(norm, p={"x": 3, "y": 4}).result == 5.0
    assert invoke(norm, p=Model("elsewhere", "Point", {"x": 3.0, "y": 4.0})).result == 5.0
    assert invoke(norm, p=[3, 4]).result == 5.0


def test_unannotated_parameters_take_the_value_as_decoded():
    @action
    def echo(value):
        return value

    assert invoke(echo, value={"a": (1, [2.5, None])}).result == {"a": (1, [2.5, None])}


def test_bytes_parameters_read_lists_of_integers_and_strings():
    @action
    def size(data: bytes) -> int:
        return len(data)

    assert invoke(size, data=b"\x00\xff").result == 2
    assert invoke(size, data="abc").result == 3
    assert "expected u8" in error(invoke(size, data=[256]))


@dataclasses.dataclass
class Positive:
    n: int

    def __post_init__(self):
        if self.n <= 0:
            raise RuntimeError(f"n must be positive, not {self.n}")


def test_a_conversion_that_raises_is_an_argument_error_naming_the_parameter():
    @action
    def f(p: Positive, big: int = 0) -> int:
        return p.n

    assert invoke(f, p={"n": 2}).result == 2
    assert error(invoke(f, p={"n": -1})) == "argument `p`: RuntimeError: n must be positive, not -1"
    # `int()` refuses strings longer than sys.get_int_max_str_digits().
    message = error(invoke(f, p={"n": 1}, big="1" * (sys.get_int_max_str_digits() + 1)))
    assert message.startswith("argument `big`: ValueError: Exceeds the limit")


def test_argument_bytes_nested_past_the_recursion_limit_are_an_argument_error():
    from cairn import _component, _proto as p
    from cairn.deps import Resolver
    from test_payload import nested_list_bytes

    @action
    def f(value):
        return value

    deep = nested_list_bytes(sys.getrecursionlimit() + 100)
    args = p.len_field(1, p.len_field(1, b"value") + p.len_field(2, deep))
    with pytest.raises(_component.Failure) as failure:
        _component.invoke({"f": f}, "m", "f", args, Resolver())
    assert (failure.value.type_name, failure.value.module, failure.value.retryable) == ("ArgumentError", "cairn", False)
    assert failure.value.message == (
        "arguments are not a valid WorkflowArguments payload: "
        "payload is not a protobuf WorkflowArguments: values nested too deeply"
    )


def test_results_that_contain_themselves_or_too_long_an_int_are_serialization_errors():
    @action
    def loop():
        out = [1]
        out.append(out)
        return out

    @action
    def huge():
        return 10 ** (sys.get_int_max_str_digits() + 1)

    for f, reason in [
        (loop, "value is nested too deeply to serialize (or contains itself)"),
        (huge, f"integer too large to serialize: more than {sys.get_int_max_str_digits()} decimal digits"),
    ]:
        outcome = invoke(f)
        assert (outcome.error["type"], outcome.error["module"]) == ("SerializationError", "cairn")
        assert outcome.retryable is False
        assert outcome.error["message"] == f"result of action `{f.name}` does not serialize: {reason}"
