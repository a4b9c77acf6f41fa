"""The payload helpers: the seed's three functions and the value mapping.

Byte-for-byte agreement with the Rust crate over generated values is the
differential test's job (guest-sdk/payload/tests/all/python.rs); these pin
the mapping's decisions and a few exact encodings."""

import dataclasses
import enum
import math
import sys

import pytest

import cairn
from cairn import ErrorValue, Model, PayloadError, deserialize_result_payload, serialize_error_payload, serialize_result_payload
from cairn.payload import decode_arguments, decode_value, encode_arguments, encode_value


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Mode(enum.Enum):
    FAST = "f"


def test_exact_bytes_of_small_values_match_prost():
    # Null is written explicitly (field 5 = 0), as prost writes a oneof member.
    assert encode_value(None) == b"\x0a\x02\x28\x00"
    assert encode_value(True) == b"\x0a\x02\x20\x01"
    assert encode_value(False) == b"\x0a\x02\x20\x00"
    assert encode_value(0) == b"\x0a\x02\x18\x00"
    assert encode_value(-1) == b"\x0a\x02\x18\x01"  # zigzag
    assert encode_value("") == b"\x0a\x02\x0a\x00"
    assert encode_value(1.0) == b"\x0a\x09\x11" + bytes.fromhex("000000000000f03f")
    assert serialize_result_payload("hi") == b"\n\x10\n\x06result\x12\x06\n\x04\n\x02hi"


def test_primitives_and_containers_round_trip():
    value = {"s": "x", "i": -(2**63), "f": -0.0, "b": True, "n": None, "l": [1, (2, 3)], "t": (), "d": {"k": []}}
    assert decode_value(encode_value(value)) == value
    assert math.copysign(1, decode_value(encode_value(-0.0))) == -1
    assert math.isnan(decode_value(encode_value(math.nan)))


def test_integers_outside_int64_become_decimal_strings():
    assert decode_value(encode_value(2**63)) == str(2**63)
    assert decode_value(encode_value(-(2**63) - 1)) == str(-(2**63) - 1)
    assert decode_value(encode_value(2**63 - 1)) == 2**63 - 1


def test_records_bytes_sets_enums_and_keys_map_as_rust_does():
    assert decode_value(encode_value(Point(1, 2.5))) == Model(__name__, "Point", {"x": 1, "y": 2.5})
    assert decode_value(encode_value(b"\x01\x02")) == [1, 2]
    assert decode_value(encode_value({3})) == [3]
    assert decode_value(encode_value(Mode.FAST)) == "FAST"
    assert decode_value(encode_value({1: "a", False: "b"})) == {"1": "a", "false": "b"}
    assert decode_value(encode_value(Model("m", "N", {"a": 1}))) == Model("m", "N", {"a": 1})


def test_values_without_a_mapping_are_errors_naming_where():
    import datetime

    with pytest.raises(PayloadError) as err:
        encode_value({"a": [1, datetime.date(2020, 1, 1)]})
    assert str(err.value) == "at field `a[1]`: cannot serialize a value of type date"
    with pytest.raises(PayloadError, match="map keys must be strings, numbers, bools or chars"):
        encode_value({1.5: "x"})


def test_deserialize_result_payload_revives_loaded_dataclasses():
    decoded = deserialize_result_payload(serialize_result_payload([Point(1, 2.0)]))
    assert decoded.error is None and decoded.result == [Point(1, 2.0)]
    assert deserialize_result_payload(None) == cairn.ResultPayload()


def test_error_payload_carries_type_module_message_traceback_and_mro():
    def divide():
        return 1 / 0

    try:
        divide()
    except ZeroDivisionError as exc:
        payload = serialize_error_payload(exc)
    error = deserialize_result_payload(payload).error
    assert error["type"] == "ZeroDivisionError" and error["module"] == "builtins"
    assert error["message"] == "division by zero"
    assert error["type_hierarchy"] == ["ZeroDivisionError", "ArithmeticError", "Exception", "BaseException"]
    assert "in divide" in error["traceback"] and error["traceback"].startswith("Traceback (most recent call last)")
    assert error["values"] == {}


def test_cairn_error_reports_its_type_module_and_details():
    exc = cairn.Error("busy", type="ServiceBusy", retryable=True, details={"retry_in_ms": 250})
    error = deserialize_result_payload(serialize_error_payload(exc)).error
    assert (error["type"], error["module"], error["message"]) == ("ServiceBusy", __name__, "busy")
    assert error["values"] == {"retry_in_ms": 250}
    assert error["type_hierarchy"][:2] == ["ServiceBusy", "Error"]
    plain = deserialize_result_payload(serialize_error_payload(cairn.Error("x"))).error
    assert (plain["type"], plain["module"]) == ("Error", "cairn")
    dropped = deserialize_result_payload(serialize_error_payload(cairn.Error("x", details=[1]))).error
    assert dropped["message"] == "x (error details dropped: details must serialize to a dict (a dataclass or a dict))"


def test_malformed_payloads_are_one_line_errors():
    with pytest.raises(PayloadError, match="result payload: payload is not a protobuf WorkflowArguments: truncated"):
        deserialize_result_payload(b"\x0a\x05ab")
    with pytest.raises(PayloadError, match="neither a `result` nor an `error` entry"):
        deserialize_result_payload(encode_arguments({"other": 1}))
    with pytest.raises(PayloadError, match="both `result` and `error`"):
        deserialize_result_payload(encode_arguments({"result": 1, "error": ErrorValue("E")}))
    with pytest.raises(PayloadError, match="not an exception but int"):
        deserialize_result_payload(encode_arguments({"error": 1}))


def test_decoding_follows_protobuf_rules_for_other_writers():
    # An unknown field is skipped; a repeated oneof member: the last wins.
    unknown = b"\x50\x07"  # field 10, varint 7
    assert decode_value(unknown + encode_value(5)) == 5
    assert decode_value(encode_value(1) + encode_value("two")) == "two"
    assert decode_arguments(encode_arguments([("a", 1), ("a", 2)])) == [("a", 1), ("a", 2)]


def nested_list_bytes(depth):
    """A `WorkflowArgumentValue` of `depth` lists inside each other, written
    by hand: the encoder itself refuses to nest that deep."""
    from cairn import _proto as p

    value = encode_value(None)
    for _ in range(depth):
        value = p.len_field(4, p.len_field(1, value))
    return value


def self_containing_list():
    loop = [1]
    loop.append(loop)
    return loop


def test_values_nested_past_the_recursion_limit_are_payload_errors_both_ways():
    from cairn import _proto as p

    deep = nested_list_bytes(sys.getrecursionlimit() + 100)
    with pytest.raises(PayloadError) as err:
        decode_value(deep)
    assert str(err.value) == "payload is not a protobuf WorkflowArgumentValue: values nested too deeply"
    with pytest.raises(PayloadError) as err:
        decode_arguments(p.len_field(1, p.len_field(1, b"a") + p.len_field(2, deep)))
    assert str(err.value) == "payload is not a protobuf WorkflowArguments: values nested too deeply"

    too_deep = "value is nested too deeply to serialize (or contains itself)"
    for write in (encode_value, serialize_result_payload, lambda v: encode_arguments({"a": v}),
                  lambda v: serialize_error_payload(ErrorValue("E", values={"a": v}))):
        with pytest.raises(PayloadError) as err:
            write(self_containing_list())
        assert str(err.value) == too_deep
    # An error whose details cannot be written keeps its message and says why.
    dropped = deserialize_result_payload(
        serialize_error_payload(cairn.Error("x", details={"a": self_containing_list()}))
    ).error
    assert dropped["message"] == f"x (error details dropped: {too_deep})"


def test_integers_too_long_for_decimal_digits_are_payload_errors():
    huge = 10 ** (sys.get_int_max_str_digits() + 1)
    reason = f"integer too large to serialize: more than {sys.get_int_max_str_digits()} decimal digits"
    with pytest.raises(PayloadError) as err:
        encode_value([1, huge])
    assert str(err.value) == f"at field `[1]`: {reason}"
    with pytest.raises(PayloadError) as err:
        encode_value({huge: 1})
    assert str(err.value) == reason


def test_sets_are_written_sorted_so_bytes_do_not_depend_on_the_hash_seed():
    words = {f"word-{i}" for i in range(32)}
    assert list(words) != sorted(words)  # string hashes are seeded per process
    assert encode_value(words) == encode_value(sorted(words))
    assert encode_value(frozenset(words)) == encode_value(sorted(words))
    assert encode_value({3.5, -1, 2}) == encode_value([-1, 2, 3.5])
    # Elements that do not compare are still written, in iteration order.
    assert sorted(decode_value(encode_value({1, "a"})), key=str) == [1, "a"]
