"""Keyword arguments: from decoded payload values to an action's parameters.

# Strategy

The host hands an action a protobuf `WorkflowArguments`; `payload` decodes
it into plain Python values, and this module checks them against the
action's signature, parameter by parameter, with the rules of the Rust SDK:

* every argument must be a parameter that is not a dependency
  (``unexpected argument `x` ``), and appear once
  (``argument `x` given more than once``);
* a parameter without an argument takes its default; without a default it is
  `None` if its annotation admits `None` (Rust's `Option<T>`), otherwise
  ``missing required argument `x` ``;
* each argument is converted to the parameter's annotation (`convert`),
  leniently where another language may have written it (an `int` parameter
  reads a decimal string, a `float` one reads an `int`, a dataclass reads a
  `dict` or a `basemodel`, a `tuple` reads a `list`); a value that does not
  fit is ``argument `x`: invalid type: string "a", expected int``, with the
  path inside the value when it is nested (``at field `p.y`: ...``).

An unannotated parameter (or `Any`) takes the value as decoded.

# Failure modes

Every failure is an `ArgumentError` (never retryable: the same arguments
fail the same way) whose message names the parameter. Annotations the
converter cannot handle are found when the plugin is built
(`check_annotation`), not when it runs.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import math
import types
import typing
from typing import Any

from .payload import ErrorValue, Model, PayloadError, kind_name

_NoneType = type(None)


class ConvertError(ValueError):
    """A value that does not fit an annotation; `path` as in `PayloadError`."""

    def __init__(self, message: str, path: list | None = None) -> None:
        self.message = message
        self.path = path or []
        super().__init__(str(PayloadError(message, self.path)))

    def inside(self, segment: str | int) -> "ConvertError":
        return ConvertError(self.message, [segment, *self.path])


def _unexpected(value: Any) -> str:
    """A value described as serde describes it in `invalid type` errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {_quoted(value)}"
    if isinstance(value, Model):
        return f"basemodel `{value.name}`"
    return kind_name(value)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _type_name(annotation: Any) -> str:
    if annotation is _NoneType or annotation is None:
        return "None"
    if isinstance(annotation, type):
        if dataclasses.is_dataclass(annotation):
            return f"dataclass {annotation.__name__}"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _invalid(value: Any, annotation: Any) -> ConvertError:
    return ConvertError(f"invalid type: {_unexpected(value)}, expected {_type_name(annotation)}")


def _is_int_text(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return bool(digits) and all(c in "0123456789" for c in digits)


def admits_none(annotation: Any) -> bool:
    """Whether a missing argument may be `None` (Rust's `Option<T>`): the
    annotation is `None`, `Any`, `Optional[T]` or a union with `None`. An
    unannotated parameter is required."""
    if annotation is None or annotation is _NoneType or annotation is Any:
        return True
    if typing.get_origin(annotation) is typing.Annotated:
        return admits_none(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(admits_none(arm) for arm in typing.get_args(annotation))
    return False


def _items(value: Any, annotation: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _invalid(value, annotation)


def _map_entries(value: Any, annotation: Any) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, Model):
        return value.data
    if isinstance(value, ErrorValue):
        return value.to_dict()
    raise _invalid(value, annotation)


def convert(value: Any, annotation: Any) -> Any:
    """Convert a decoded payload value to `annotation` (see the module docs).
    Raises `ConvertError`."""
    if annotation in (Any, object, inspect.Parameter.empty):
        return value
    if annotation is None or annotation is _NoneType:
        if value is None:
            return None
        raise _invalid(value, annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return convert(value, typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(annotation)
        if value is None and _NoneType in arms:
            return None
        for arm in arms:
            if arm is _NoneType:
                continue
            try:
                return convert(value, arm)
            except ConvertError:
                continue
        raise _invalid(value, annotation)
    if origin is typing.Literal:
        for choice in typing.get_args(annotation):
            if value == choice and type(value) is type(choice):
                return value
        raise ConvertError(f"invalid value: {_unexpected(value)}, expected one of {typing.get_args(annotation)}")
    if origin in (list, set, frozenset) or annotation in (list, set, frozenset):
        (item_type,) = typing.get_args(annotation) or (Any,)
        items = []
        for index, item in enumerate(_items(value, annotation)):
            try:
                items.append(convert(item, item_type))
            except ConvertError as err:
                raise err.inside(index) from None
        container = origin or annotation
        return items if container is list else container(items)
    if origin is tuple or annotation is tuple:
        args = typing.get_args(annotation)
        items = _items(value, annotation)
        if not args:
            return tuple(items)
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(items)
        else:
            item_types = list(args)
            if len(items) != len(item_types):
                raise ConvertError(f"invalid length {len(items)}, expected {len(item_types)} items")
        out = []
        for index, (item, item_type) in enumerate(zip(items, item_types)):
            try:
                out.append(convert(item, item_type))
            except ConvertError as err:
                raise err.inside(index) from None
        return tuple(out)
    if origin is dict or annotation is dict:
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        out = {}
        for key, item in _map_entries(value, annotation).items():
            try:
                converted_key = _convert_key(key, key_type)
                out[converted_key] = convert(item, value_type)
            except ConvertError as err:
                raise err.inside(key) from None
        return out
    if not isinstance(annotation, type):
        raise ConvertError(f"cannot decode into {_type_name(annotation)}")
    return _convert_class(value, annotation)


def _convert_key(key: str, key_type: Any) -> Any:
    if key_type in (str, Any, object):
        return key
    if key_type is int and _is_int_text(key):
        return int(key)
    if key_type is bool and key in ("true", "false"):
        return key == "true"
    if isinstance(key_type, type) and issubclass(key_type, enum.Enum) and key in key_type.__members__:
        return key_type[key]
    raise ConvertError(f"invalid value: string {_quoted(key)}, expected a map key holding {_type_name(key_type)}")


def _convert_class(value: Any, cls: type) -> Any:
    if cls is bool:
        if isinstance(value, bool):
            return value
        raise _invalid(value, cls)
    if issubclass(cls, enum.Enum):
        if isinstance(value, str) and value in cls.__members__:
            return cls[value]
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in cls.__members__:
            return cls[next(iter(value))]
        raise ConvertError(f"invalid value: {_unexpected(value)}, expected a variant of {cls.__name__}")
    if cls is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _is_int_text(value):
            return int(value)
        raise _invalid(value, cls)
    if cls is float:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if isinstance(value, str) and value in special:
            return special[value]
        raise _invalid(value, cls)
    if cls is str:
        if isinstance(value, str):
            return value
        raise _invalid(value, cls)
    if cls in (bytes, bytearray):
        if isinstance(value, str):
            return cls(value.encode("utf-8"))
        if isinstance(value, (list, tuple)):
            out = bytearray()
            for index, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 255:
                    if isinstance(item, str) and _is_int_text(item) and 0 <= int(item) <= 255:
                        out.append(int(item))
                        continue
                    raise ConvertError(f"invalid type: {_unexpected(item)}, expected u8", [index])
                out.append(item)
            return cls(out)
        raise _invalid(value, cls)
    if cls is Model:
        if isinstance(value, Model):
            return value
        raise _invalid(value, cls)
    if cls is ErrorValue:
        if isinstance(value, ErrorValue):
            return value
        raise _invalid(value, cls)
    if dataclasses.is_dataclass(cls):
        return _convert_dataclass(value, cls)
    fields = getattr(cls, "model_fields", None)
    if isinstance(fields, dict) and hasattr(cls, "model_validate"):
        data = _map_entries(value, cls)
        try:
            return cls.model_validate(data)
        except Exception as err:  # pydantic's ValidationError, without importing pydantic
            raise ConvertError(" ".join(str(err).split())) from None
    if isinstance(value, cls):
        return value
    raise ConvertError(f"cannot decode into {_type_name(cls)}")


@functools.cache
def _dataclass_plan(cls: type) -> tuple[list, dict[str, Any]]:
    """The `__init__` fields of dataclass `cls` and its resolved annotations,
    once per class: `get_type_hints` re-evaluates every annotation each time
    it is called, which would cost every invocation that passes a
    dataclass argument."""
    return [f for f in dataclasses.fields(cls) if f.init], typing.get_type_hints(cls)


def _convert_dataclass(value: Any, cls: type) -> Any:
    fields, hints = _dataclass_plan(cls)
    if isinstance(value, (list, tuple)):
        if len(value) > len(fields):
            raise ConvertError(f"invalid length {len(value)}, expected {len(fields)} items")
        data = {f.name: item for f, item in zip(fields, value)}
    else:
        data = _map_entries(value, cls)
    kwargs = {}
    for field in fields:
        if field.name in data:
            try:
                kwargs[field.name] = convert(data[field.name], hints.get(field.name, Any))
            except ConvertError as err:
                raise err.inside(field.name) from None
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            if admits_none(hints.get(field.name, Any)):
                kwargs[field.name] = None
            else:
                raise ConvertError(f"missing field `{field.name}`")
    return cls(**kwargs)


def check_annotation(annotation: Any) -> str | None:
    """Why `convert` could never produce a value of `annotation`, or None if
    it can. `cairn-py build` reports it as an unsupported signature."""
    if annotation in (Any, object, inspect.Parameter.empty, None, _NoneType):
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return check_annotation(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, set, frozenset, tuple, dict):
        for arg in typing.get_args(annotation):
            if arg is Ellipsis:
                continue
            why = check_annotation(arg)
            if why:
                return why
        return None
    if origin is typing.Literal:
        return None
    if isinstance(annotation, type):
        if annotation in (bool, int, float, str, bytes, bytearray, list, tuple, dict, set, frozenset, Model, ErrorValue):
            return None
        if issubclass(annotation, enum.Enum):
            return None
        if dataclasses.is_dataclass(annotation):
            try:
                hints = typing.get_type_hints(annotation)
            except Exception as err:
                return f"cannot resolve the field annotations of {annotation.__name__}: {err}"
            for field in dataclasses.fields(annotation):
                why = check_annotation(hints.get(field.name, Any))
                if why:
                    return f"field `{field.name}` of {annotation.__name__}: {why}"
            return None
        if isinstance(getattr(annotation, "model_fields", None), dict):
            return None
    return f"cannot decode an argument into {_type_name(annotation)} (use str, int, float, bool, bytes, lists, tuples, dicts, enums, dataclasses or Optional of those)"
