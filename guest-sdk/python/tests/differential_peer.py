"""The Python half of the payload differential test
(`guest-sdk/payload/tests/all/python.rs`); not a pytest module.

Reads JSON lines from stdin, one case each: `{"desc": D, "value": HEX,
"result": HEX}` where D describes a value in a neutral form (below), `value`
is the Rust crate's encoding of it as a `WorkflowArgumentValue` and `result`
its `serialize_result_payload`. Writes one JSON line per case:

* `value`, `result`: this SDK's encodings of the same value (built from D);
* `decoded`: the description of what this SDK decodes from the Rust bytes.

The Rust side checks the bytes are identical and that both sides decode each
other's bytes to the same value. Descriptions:

    {"k": "null"} | {"k": "bool", "v": b} | {"k": "int", "v": i} | {"k": "bigint", "v": "digits"}
    {"k": "double", "bits": "16 hex digits"} | {"k": "str", "v": s}
    {"k": "list" | "tuple", "items": [D...]} | {"k": "dict", "entries": [[key, D]...]}
    {"k": "model", "module": m, "name": n, "fields": [[key, D]...], "dataclass": b}
    {"k": "error", "type": t, "module": m, "message": s, "traceback": s,
     "values": null | [[key, D]...], "hierarchy": [s...]}
"""

import dataclasses
import json
import struct
import sys

from cairn.payload import ErrorValue, Model, encode_value, serialize_result_payload, decode_value

_I64 = range(-(2**63), 2**63)


def build(desc):
    """The Python value a description stands for."""
    kind = desc["k"]
    if kind == "null":
        return None
    if kind in ("bool", "str"):
        return desc["v"]
    if kind in ("int", "bigint"):
        return int(desc["v"])
    if kind == "double":
        return struct.unpack("<d", bytes.fromhex(desc["bits"])[::-1])[0]
    if kind == "list":
        return [build(d) for d in desc["items"]]
    if kind == "tuple":
        return tuple(build(d) for d in desc["items"])
    if kind == "dict":
        return {key: build(d) for key, d in desc["entries"]}
    if kind == "model":
        fields = [(key, build(d)) for key, d in desc["fields"]]
        if desc["dataclass"]:
            # A real dataclass declared in module `module`: the path a user's
            # record takes through the encoder.
            cls = dataclasses.make_dataclass(desc["name"], [key for key, _ in fields])
            cls.__module__ = desc["module"]
            return cls(**dict(fields))
        return Model(desc["module"], desc["name"], dict(fields))
    if kind == "error":
        values = None if desc["values"] is None else {key: build(d) for key, d in desc["values"]}
        return ErrorValue(desc["type"], desc["module"], desc["message"], desc["traceback"], values, list(desc["hierarchy"]))
    raise ValueError(f"unknown description kind {kind!r}")


def describe(value):
    """The description of a decoded value."""
    if value is None:
        return {"k": "null"}
    if isinstance(value, bool):
        return {"k": "bool", "v": value}
    if isinstance(value, int):
        return {"k": "int" if value in _I64 else "bigint", "v": value if value in _I64 else str(value)}
    if isinstance(value, float):
        return {"k": "double", "bits": struct.pack("<d", value)[::-1].hex()}
    if isinstance(value, str):
        return {"k": "str", "v": value}
    if isinstance(value, list):
        return {"k": "list", "items": [describe(v) for v in value]}
    if isinstance(value, tuple):
        return {"k": "tuple", "items": [describe(v) for v in value]}
    if isinstance(value, dict):
        return {"k": "dict", "entries": [[k, describe(v)] for k, v in value.items()]}
    if isinstance(value, Model):
        return {"k": "model", "module": value.module, "name": value.name,
                "fields": [[k, describe(v)] for k, v in value.data.items()], "dataclass": False}
    if isinstance(value, ErrorValue):
        values = None if value.values is None else [[k, describe(v)] for k, v in value.values.items()]
        return {"k": "error", "type": value.type, "module": value.module, "message": value.message,
                "traceback": value.traceback, "values": values, "hierarchy": list(value.type_hierarchy)}
    raise TypeError(f"decoded an unexpected {type(value).__name__}")


def main():
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        value = build(case["desc"])
        answer = {
            "value": encode_value(value).hex(),
            "result": serialize_result_payload(value).hex(),
            "decoded": describe(decode_value(bytes.fromhex(case["value"]))),
        }
        out.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
