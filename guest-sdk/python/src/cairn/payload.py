"""cairn's payload format in Python: how action arguments and results become
the protobuf bytes the host stores, exactly as the Rust SDK writes them.

The helpers the seed names are here: `serialize_result_payload`,
`serialize_error_payload` and `deserialize_result_payload`, over protobuf
`WorkflowArguments` (`guest-sdk/payload/proto/messages.proto`). The `@action`
machinery uses them; tooling that reads stored results can too.

# The mapping

Writing is deterministic and byte-identical to `cairn-payload` (Rust) for the
same value; a differential test (`guest-sdk/payload/tests/all/python.rs`)
checks that over thousands of generated values, both ways. A `set` or
`frozenset` is written sorted, as Rust writes a `BTreeSet`, so that its bytes
do not depend on the process's hash seed; only a set whose elements cannot be
compared with each other (`{1, "a"}`) is written in iteration order.

| Python | written as | read back as |
|---|---|---|
| `None` | `null_value` | `None` (also an unset value) |
| `bool` | `bool_value` | `bool` |
| `int` in the int64 range | `int_value` (zigzag `sint64`) | `int` |
| `int` outside it | `string_value` of its decimal digits, as Rust writes `u64`/`i128` | `str` (an `int` parameter reads it back) |
| `float` (NaN and the infinities too) | `double_value` | `float` |
| `str` | `string_value` | `str` |
| `bytes`, `bytearray` | `list_value` of `int_value` 0..255, as Rust writes `Vec<u8>` | `list` of `int` (a `bytes` parameter reads it back) |
| `list` | `list_value` | `list` |
| `set`, `frozenset` | `list_value`, sorted if its elements compare | `list` |
| `tuple` (named tuples too) | `tuple_value` | `tuple` |
| `dict` | `dict_value`; `int` and `bool` keys as their Rust string form (`"1"`, `"true"`) | `dict` (first entry of a repeated key wins) |
| `enum.Enum` member | `string_value` of its name, as Rust writes a unit variant | `str` |
| dataclass instance | `basemodel`: `module` = the class's module, `name` = its `__name__`, `data` = its fields in declaration order | `Model` (a dataclass again from `deserialize_result_payload` if its module is loaded) |
| pydantic model (outside a component) | `basemodel` as a dataclass, fields in `model_fields` order | as a dataclass |
| `Model` | `basemodel` as given | `Model` |
| an exception | `exception` (see `error_value`) | `ErrorValue` |
| `ErrorValue` | `exception` as given | `ErrorValue` |

Anything else (a `datetime`, an arbitrary object, a float or tuple dict key)
is a `PayloadError` naming where in the value it sits: ``at field `a[2]`:
cannot serialize a value of type datetime``.

# Failure modes

Every error here is a `PayloadError` (a `ValueError`) with a one-line message:
a value that cannot be written (no mapping, an `int` too long to write as
decimal digits, a value nested too deeply or containing itself), bytes that
are not a protobuf `WorkflowArguments` (nesting too deep included), a result
payload with neither or both of `result` and `error`. Python's own limits
(`RecursionError`, the int-to-string digit limit) never escape as such, so
a caller that handles `PayloadError` handles every bad value.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import sys
import traceback as _traceback
from typing import Any, Iterable

from . import _proto as p

#: The key of a successful outcome in a result payload.
RESULT_KEY = "result"
#: The key of a failed outcome in a result payload.
ERROR_KEY = "error"

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


class PayloadError(ValueError):
    """A value that cannot be written, or bytes that cannot be read.

    `str()` is one line: the location in the value (if any) and the reason,
    as the Rust crate words it (``at field `point.x`: ...``)."""

    def __init__(self, message: str, path: Iterable[str | int] = ()) -> None:
        self.message = " ".join(message.split()) if "\n" in message else message
        #: Path segments, outermost first: dict keys / field names and indexes.
        self.path = list(path)
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.location()
        return f"at field `{where}`: {self.message}" if where else self.message

    def location(self) -> str | None:
        """Where in the value the error happened (`point.x`, `items[2]`)."""
        if not self.path:
            return None
        out = ""
        for segment in self.path:
            if isinstance(segment, int):
                out += f"[{segment}]"
            else:
                out += ("." if out else "") + segment
        return out

    def inside(self, segment: str | int) -> "PayloadError":
        """The same error, one level further out."""
        return PayloadError(self.message, [segment, *self.path])


@dataclasses.dataclass
class Model:
    """A `basemodel` value whose class is not at hand: its module, class name
    and fields. Reading an unknown record gives one; writing one gives the
    record back unchanged."""

    module: str
    name: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ErrorValue:
    """An `exception` value: what the host stores for a failed action.

    `values` is `None` when the payload carries no `values` message at all
    (distinct from an empty dict, so that bytes round-trip exactly)."""

    type: str
    module: str = ""
    message: str = ""
    traceback: str = ""
    values: dict[str, Any] | None = None
    type_hierarchy: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The error as the seed's `deserialize_result_payload` hands it out,
        and as `cairn result` prints it: every field, `values` as `{}` when
        absent."""
        return {
            "type": self.type,
            "module": self.module,
            "message": self.message,
            "traceback": self.traceback,
            "values": dict(self.values or {}),
            "type_hierarchy": list(self.type_hierarchy),
        }


@dataclasses.dataclass
class ResultPayload:
    """A decoded result payload: exactly one of `result` (what the action
    returned) and `error` (the error as a dict, see `ErrorValue.to_dict`) is
    meaningful; `error is None` means success."""

    result: Any | None = None
    error: dict[str, Any] | None = None


# ---------------------------------------------------------------- writing


def _primitive(body: bytes) -> bytes:
    return p.len_field(1, body)


_NULL = _primitive(p.varint_field(5, 0))


def _is_pydantic(value: Any) -> bool:
    # Duck-typed so the SDK never imports pydantic (which cannot run inside
    # a component: pydantic-core is a native extension with no WASI build).
    fields = getattr(type(value), "model_fields", None)
    return isinstance(fields, dict) and hasattr(value, "model_dump")


def _entries(items: Iterable[tuple[str, Any]]) -> bytes:
    """The `entries` (field 1) of a `WorkflowDictArgument`."""
    out = []
    for key, item in items:
        try:
            encoded = _encode(item)
        except PayloadError as err:
            raise err.inside(key) from None
        out.append(p.len_field(1, _argument(key, encoded)))
    return b"".join(out)


def _argument(key: str, encoded_value: bytes) -> bytes:
    """A `WorkflowArgument`: key (omitted when empty, as prost does) and the
    value message (always present)."""
    head = p.str_field(1, key) if key else b""
    return head + p.len_field(2, encoded_value)


def _decimal(value: int) -> str:
    """The decimal digits of an int, or a `PayloadError` for one longer than
    the interpreter converts (`sys.get_int_max_str_digits()`)."""
    try:
        return str(int(value))
    except ValueError:
        raise PayloadError(
            f"integer too large to serialize: more than {sys.get_int_max_str_digits()} decimal digits"
        ) from None


def _dict_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, enum.Enum):
        return key.name
    if isinstance(key, int):
        return _decimal(key)
    raise PayloadError("map keys must be strings, numbers, bools or chars")


def _items(values: Iterable[Any]) -> bytes:
    out = []
    for index, item in enumerate(values):
        try:
            out.append(p.len_field(1, _encode(item)))
        except PayloadError as err:
            raise err.inside(index) from None
    return b"".join(out)


def _fields_of(value: Any) -> tuple[str, str, list[tuple[str, Any]]] | None:
    """(module, name, fields) of a record value, or None."""
    cls = type(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        return cls.__module__, cls.__name__, fields
    if _is_pydantic(value):
        fields = [(name, getattr(value, name)) for name in cls.model_fields]
        return cls.__module__, cls.__name__, fields
    return None


def _basemodel(module: str, name: str, data: bytes) -> bytes:
    body = (p.str_field(1, module) if module else b"") + (p.str_field(2, name) if name else b"")
    return p.len_field(2, body + p.len_field(3, data))


def _error_body(error: ErrorValue) -> bytes:
    out = []
    for field, text in ((1, error.type), (2, error.module), (3, error.message), (4, error.traceback)):
        if text:
            out.append(p.str_field(field, text))
    if error.values is not None:
        out.append(p.len_field(5, _dict_body(error.values)))
    for name in error.type_hierarchy:
        out.append(p.str_field(6, name))
    return b"".join(out)


def _dict_body(mapping: dict) -> bytes:
    return _entries((_dict_key(k), v) for k, v in mapping.items())


#: Why a value made the encoder or decoder recurse past Python's limit.
_TOO_DEEP_TO_WRITE = "value is nested too deeply to serialize (or contains itself)"


def _writer(fn):
    """`fn`, an entry point of the (recursive) encoder, with a value nested
    past the interpreter's recursion limit, or containing itself, turned
    into a `PayloadError` at the entry point, not at the innermost level
    (where the path would be a thousand segments long)."""

    @functools.wraps(fn)
    def write(*args: Any) -> bytes:
        try:
            return fn(*args)
        except RecursionError:
            raise PayloadError(_TOO_DEEP_TO_WRITE) from None

    return write


def _set_items(value: set | frozenset) -> Iterable[Any]:
    """A set's elements in a stable order: sorted (hash order differs between
    processes for strings), or as iterated if they do not compare."""
    try:
        return sorted(value)
    except TypeError:
        return value


@_writer
def encode_value(value: Any) -> bytes:
    """Encode one value as a protobuf `WorkflowArgumentValue` (see the table
    in the module docs). Raises `PayloadError` for a value with no mapping."""
    return _encode(value)


def _encode(value: Any) -> bytes:
    if value is None:
        return _NULL
    if value is True or value is False:
        return _primitive(p.varint_field(4, int(value)))
    if isinstance(value, enum.Enum):
        return _primitive(p.str_field(1, value.name))
    if isinstance(value, int):
        if _I64_MIN <= value <= _I64_MAX:
            return _primitive(p.varint_field(3, p.zigzag(int(value))))
        return _primitive(p.str_field(1, _decimal(value)))
    if isinstance(value, float):
        return _primitive(p.double_field(2, value))
    if isinstance(value, str):
        return _primitive(p.str_field(1, value))
    if isinstance(value, dict):
        return p.len_field(6, _dict_body(value))
    if isinstance(value, tuple):
        return p.len_field(5, _items(value))
    if isinstance(value, list):
        return p.len_field(4, _items(value))
    if isinstance(value, (set, frozenset)):
        return p.len_field(4, _items(_set_items(value)))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return p.len_field(4, b"".join(p.len_field(1, _primitive(p.varint_field(3, p.zigzag(b)))) for b in bytes(value)))
    if isinstance(value, Model):
        return _basemodel(value.module, value.name, _dict_body(value.data))
    if isinstance(value, ErrorValue):
        return p.len_field(3, _error_body(value))
    if isinstance(value, BaseException):
        return p.len_field(3, _error_body(error_value(value)))
    record = _fields_of(value)
    if record is not None:
        module, name, fields = record
        return _basemodel(module, name, _entries(fields))
    raise PayloadError(f"cannot serialize a value of type {type(value).__qualname__}")


#: A `WorkflowDictArgument` body (the action-error's `details`), from outside
#: the encoder.
_write_dict_body = _writer(_dict_body)


@_writer
def encode_arguments(kwargs: dict[str, Any] | Iterable[tuple[str, Any]]) -> bytes:
    """Keyword arguments as a protobuf `WorkflowArguments`, in the given
    order (what the host hands an action, and what `enqueue` sends)."""
    items = kwargs.items() if isinstance(kwargs, dict) else kwargs
    return _entries((str(k), v) for k, v in items)


def serialize_result_payload(value: Any) -> bytes:
    """Serialize a successful action result: a `WorkflowArguments` with the
    single entry `result`. Raises `PayloadError` if the value has no mapping."""
    return p.len_field(1, _argument(RESULT_KEY, encode_value(value)))


@_writer
def serialize_error_payload(exc: BaseException | ErrorValue) -> bytes:
    """Serialize an error raised during action execution: a
    `WorkflowArguments` with the single entry `error`, an `exception` with the
    error's type, module, message, traceback and MRO (see `error_value`)."""
    error = exc if isinstance(exc, ErrorValue) else error_value(exc)
    return p.len_field(1, _argument(ERROR_KEY, p.len_field(3, _error_body(error))))


def error_value(exc: BaseException) -> ErrorValue:
    """Describe an exception as the error payload does.

    * `type`, `module`: the exception class's `__name__` and `__module__`
      (`ZeroDivisionError`, `builtins`). A `cairn.Error` reports the type and
      module it was given instead.
    * `message`: `str(exc)`.
    * `traceback`: the Python traceback, as `traceback.format_exception`
      prints it (empty for an exception that was never raised).
    * `type_hierarchy`: the names along the class's MRO, nearest first,
      without `object` (`ZeroDivisionError`, `ArithmeticError`, `Exception`,
      `BaseException`); a `cairn.Error` with a custom type puts that first.
    * `values`: a `cairn.Error`'s `details`, else absent.
    """
    from .errors import describe_exception

    described = describe_exception(exc)
    trace = ""
    if exc.__traceback__ is not None:
        trace = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorValue(
        type=described.type_name,
        module=described.module,
        message=described.message,
        traceback=trace,
        values=described.details,
        type_hierarchy=described.type_hierarchy,
    )


# ---------------------------------------------------------------- reading


def _merged(chunks: list) -> bytes:
    return chunks[0] if len(chunks) == 1 else b"".join(bytes(c) for c in chunks)


def _decode_primitive(data) -> Any:
    result: Any = None
    for field, wire, raw in p.Reader(data):
        if field == 1:
            p.expect(wire, p.LEN, "string_value")
            result = p.text(raw, "string_value")
        elif field == 2:
            p.expect(wire, p.I64, "double_value")
            result = p.double(raw)
        elif field == 3:
            p.expect(wire, p.VARINT, "int_value")
            result = p.unzigzag(raw)
        elif field == 4:
            p.expect(wire, p.VARINT, "bool_value")
            result = raw != 0
        elif field == 5:
            p.expect(wire, p.VARINT, "null_value")
            result = None
    return result


def _len_fields(data, names: dict[int, str]):
    """(field, bytes) of each length-delimited field of message `data` that
    `names` lists, in order; one of them with another wire type is an error
    naming it, and fields not listed are skipped."""
    for field, wire, raw in p.Reader(data):
        if field in names:
            p.expect(wire, p.LEN, names[field])
            yield field, raw


def _decode_entries(data) -> list[tuple[str, Any]]:
    """The entries of a `WorkflowDictArgument` (or `WorkflowArguments`), in
    order, duplicates kept."""
    return [_decode_argument(raw) for _, raw in _len_fields(data, {1: "entry"})]


def _decode_argument(data) -> tuple[str, Any]:
    key = ""
    value_chunks: list = []
    for field, raw in _len_fields(data, {1: "key", 2: "value"}):
        if field == 1:
            key = p.text(raw, "key")
        else:
            value_chunks.append(raw)
    return key, (_value(_merged(value_chunks)) if value_chunks else None)


def _first_wins(entries: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entries:
        out.setdefault(key, value)
    return out


def _decode_items(data) -> list:
    return [_value(raw) for _, raw in _len_fields(data, {1: "item"})]


def _decode_model(data) -> Model:
    module = name = ""
    chunks: list = []
    for field, raw in _len_fields(data, {1: "module", 2: "name", 3: "data"}):
        if field == 1:
            module = p.text(raw, "module")
        elif field == 2:
            name = p.text(raw, "name")
        else:
            chunks.append(raw)
    data_dict = _first_wins(_decode_entries(_merged(chunks))) if chunks else {}
    return Model(module, name, data_dict)


def _decode_error(data) -> ErrorValue:
    texts = {1: "", 2: "", 3: "", 4: ""}
    names = {1: "type", 2: "module", 3: "message", 4: "traceback", 5: "values", 6: "type_hierarchy"}
    values: list = []
    hierarchy: list[str] = []
    for field, raw in _len_fields(data, names):
        if field in texts:
            texts[field] = p.text(raw, names[field])
        elif field == 5:
            values.append(raw)
        else:
            hierarchy.append(p.text(raw, "type_hierarchy"))
    return ErrorValue(
        type=texts[1],
        module=texts[2],
        message=texts[3],
        traceback=texts[4],
        values=_first_wins(_decode_entries(_merged(values))) if values else None,
        type_hierarchy=hierarchy,
    )


#: Why bytes made the decoder recurse past Python's limit.
_TOO_DEEP_TO_READ = "values nested too deeply"

_KINDS = {1: _decode_primitive, 2: _decode_model, 3: _decode_error, 4: _decode_items,
          5: lambda d: tuple(_decode_items(d)), 6: lambda d: _first_wins(_decode_entries(d))}


def decode_value(data: bytes | memoryview) -> Any:
    """Decode a protobuf `WorkflowArgumentValue` (see the table in the module
    docs). Raises `PayloadError` on bytes that are not one."""
    try:
        return _value(data)
    except p.ProtoError as err:
        raise PayloadError(f"payload is not a protobuf WorkflowArgumentValue: {err}") from None
    except RecursionError:
        raise PayloadError(f"payload is not a protobuf WorkflowArgumentValue: {_TOO_DEEP_TO_READ}") from None


def _value(data) -> Any:
    member = None
    chunks: list = []
    for field, wire, raw in p.Reader(data):
        if field in _KINDS:
            p.expect(wire, p.LEN, "value kind")
            if field != member:
                member, chunks = field, []
            chunks.append(raw)
    if member is None:
        return None
    return _KINDS[member](_merged(chunks))


def decode_arguments(data: bytes | memoryview) -> list[tuple[str, Any]]:
    """Decode a protobuf `WorkflowArguments` into its `(key, value)` pairs, in
    order and with repeated keys kept (callers decide what a repeat means).
    Raises `PayloadError` on bytes that are not one."""
    if not data:
        return []
    try:
        return _decode_entries(data)
    except p.ProtoError as err:
        raise PayloadError(f"payload is not a protobuf WorkflowArguments: {err}") from None
    except RecursionError:
        raise PayloadError(f"payload is not a protobuf WorkflowArguments: {_TOO_DEEP_TO_READ}") from None


def deserialize_result_payload(payload: bytes | memoryview | None) -> ResultPayload:
    """Deserialize a result payload produced by `serialize_result_payload` or
    `serialize_error_payload` (or by the Rust SDK, or the host for traps and
    timeouts).

    Records (`basemodel`) become instances of their dataclass again when the
    class's module is already imported (no module is imported as a side
    effect), otherwise `Model`s. Entries other than `result` and `error` are
    ignored. Raises `PayloadError` when the bytes are not protobuf, hold
    neither or both entries, or `error` is not an exception. `None` (no
    payload stored yet) gives an empty `ResultPayload`.
    """
    if payload is None:
        return ResultPayload()
    try:
        entries = _first_wins(decode_arguments(payload))
    except PayloadError as err:
        raise PayloadError(f"result payload: {err.message}") from None
    has_result, has_error = RESULT_KEY in entries, ERROR_KEY in entries
    if has_result and has_error:
        raise PayloadError("result payload has both `result` and `error` entries")
    if has_result:
        return ResultPayload(result=revive(entries[RESULT_KEY]))
    if has_error:
        error = entries[ERROR_KEY]
        if not isinstance(error, ErrorValue):
            raise PayloadError(
                f"result payload's `error` entry is not an exception but {kind_name(error)}"
            )
        return ResultPayload(error=error.to_dict())
    raise PayloadError(
        f"result payload has neither a `result` nor an `error` entry (keys: {list(entries)})"
    )


def revive(value: Any) -> Any:
    """`Model`s inside `value` turned back into their dataclasses where the
    class is importable without importing anything (its module is in
    `sys.modules`)."""
    if isinstance(value, Model):
        data = {k: revive(v) for k, v in value.data.items()}
        cls = getattr(sys.modules.get(value.module), value.name, None)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            try:
                return cls(**data)
            except TypeError:
                pass
        return Model(value.module, value.name, data)
    if isinstance(value, list):
        return [revive(v) for v in value]
    if isinstance(value, tuple):
        return tuple(revive(v) for v in value)
    if isinstance(value, dict):
        return {k: revive(v) for k, v in value.items()}
    return value


def kind_name(value: Any) -> str:
    """The payload kind a decoded value came from, for error messages (the
    names the Rust crate uses: `null`, `string`, `int`, `list`...)."""
    # First match wins: `bool` is an `int` subclass, so it comes first.
    kinds = (
        (type(None), "null"), (bool, "bool"), (int, "int"), (float, "double"), (str, "string"),
        (list, "list"), (tuple, "tuple"), (dict, "dict"), (Model, "basemodel"), (ErrorValue, "exception"),
    )
    return next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
