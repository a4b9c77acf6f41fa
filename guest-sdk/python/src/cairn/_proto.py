"""Protobuf wire format for `guest-sdk/payload/proto/messages.proto`, in pure
Python.

Why not the `protobuf` package: it is a C extension (or a slow pure-Python
fallback with a large import), and a plugin component can only carry what
CPython-for-WASI can import. The messages are small and fixed, so encoding
them by hand is a few dozen lines.

Strategy, encoding: produce exactly the bytes `prost` (the Rust side)
produces, because payloads are compared and stored byte for byte:

* fields in field-number order;
* proto3 scalars outside a `oneof` are omitted when they hold their default
  (`""`), members of a `oneof` are always written (an empty string, `0`,
  `false` and the null enum included);
* a present sub-message is written even when empty; repeated fields write
  every element, empty strings included;
* varints are minimal, `sint64` is zigzag, `double` is 8 little-endian bytes.

Strategy, decoding: the general protobuf rules, so that bytes from any
conforming writer decode: unknown fields are skipped by wire type, a
repeated singular scalar keeps its last value, a repeated singular message
is merged (decoded from the concatenation of its occurrences), and the last
member set in a `oneof` wins.

Failure modes: decoding raises `ProtoError` (a `ValueError`) with a one-line
reason for truncated input, an over-long varint, a wire type that does not
match the field, invalid UTF-8 or a wire type 3/4 (groups, unused by these
messages). Encoding does not fail: callers hand it well-formed values.
"""

from __future__ import annotations

import struct

# Wire types.
VARINT = 0
I64 = 1
LEN = 2
I32 = 5

_DOUBLE = struct.Struct("<d")
_U64 = 2**64


class ProtoError(ValueError):
    """Bytes that are not the protobuf message they were read as."""


def varint(value: int) -> bytes:
    """The minimal varint of an unsigned 64-bit value (negative int64 values
    are written as their two's complement, as protobuf does)."""
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int) -> int:
    """`sint64` encoding: small magnitudes stay small."""
    return (value << 1) ^ (value >> 63)


def unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def tag(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def len_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or sub-message)."""
    return tag(field, LEN) + varint(len(payload)) + payload


def str_field(field: int, text: str) -> bytes:
    return len_field(field, text.encode("utf-8"))


def double_field(field: int, value: float) -> bytes:
    return tag(field, I64) + _DOUBLE.pack(value)


def varint_field(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value)


class Reader:
    """Iterates the fields of one message: `(field, wire, value)` where value
    is an int for VARINT/I64/I32 (raw bits) and a memoryview for LEN."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._end = len(self._data)

    def _varint(self) -> int:
        result = 0
        shift = 0
        data = self._data
        while True:
            if self._pos >= self._end:
                raise ProtoError("truncated varint")
            byte = data[self._pos]
            self._pos += 1
            if shift == 63 and byte > 1:
                raise ProtoError("varint overflows 64 bits")
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ProtoError("varint longer than 10 bytes")

    def __iter__(self):
        while self._pos < self._end:
            key = self._varint()
            field, wire = key >> 3, key & 7
            if field == 0:
                raise ProtoError("field number 0")
            if wire == VARINT:
                yield field, wire, self._varint()
            elif wire == I64:
                yield field, wire, self._fixed(8)
            elif wire == I32:
                yield field, wire, self._fixed(4)
            elif wire == LEN:
                size = self._varint()
                start = self._pos
                if size > self._end - start:
                    raise ProtoError("truncated length-delimited field")
                self._pos = start + size
                yield field, wire, self._data[start : self._pos]
            else:
                raise ProtoError(f"unsupported wire type {wire}")

    def _fixed(self, size: int) -> int:
        if self._pos + size > self._end:
            raise ProtoError("truncated fixed-width field")
        raw = bytes(self._data[self._pos : self._pos + size])
        self._pos += size
        return int.from_bytes(raw, "little")


def expect(wire: int, wanted: int, what: str) -> None:
    if wire != wanted:
        raise ProtoError(f"{what} has wire type {wire}, expected {wanted}")


def text(value: memoryview, what: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"{what} is not valid UTF-8") from None


def double(bits: int) -> float:
    return _DOUBLE.unpack(bits.to_bytes(8, "little"))[0]

