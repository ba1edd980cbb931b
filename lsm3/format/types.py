"""Column types: the exact JSON grammar of Arrow types in schema objects (docs/FORMAT.md,
"Types"), and which types a primary key may have.

Every type lsm3 stores has one JSON form and back, so another implementation can read a schema
without Arrow's own serialisation; anything outside the grammar is refused on write
(InvalidInput) and on read (CorruptMetadata).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from lsm3.errors import CorruptMetadata, InvalidInput

_INTEGER_TYPES = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
}
_PRIMITIVE_TYPES: dict[str, pa.DataType] = {
    **_INTEGER_TYPES,
    "null": pa.null(),
    "bool": pa.bool_(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "date32": pa.date32(),
    "date64": pa.date64(),
}
_PRIMITIVE_NAMES = {v: k for k, v in _PRIMITIVE_TYPES.items()}


def type_to_json(t: pa.DataType) -> Any:
    """The JSON form of an Arrow type (see docs/FORMAT.md, "Types")."""
    if t in _PRIMITIVE_NAMES:
        return _PRIMITIVE_NAMES[t]
    if pa.types.is_timestamp(t):
        return {"type": "timestamp", "unit": t.unit, "tz": t.tz}
    if pa.types.is_time32(t) or pa.types.is_time64(t):
        return {"type": "time32" if pa.types.is_time32(t) else "time64", "unit": t.unit}
    if pa.types.is_duration(t):
        return {"type": "duration", "unit": t.unit}
    if pa.types.is_decimal(t):
        return {"type": f"decimal{t.bit_width}", "precision": t.precision, "scale": t.scale}
    if pa.types.is_fixed_size_binary(t):
        return {"type": "fixed_size_binary", "byte_width": t.byte_width}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        kind = "list" if pa.types.is_list(t) else "large_list"
        return {"type": kind, "element": field_to_json(t.value_field)}
    if pa.types.is_struct(t):
        return {
            "type": "struct",
            "fields": [field_to_json(t.field(i)) for i in range(t.num_fields)],
        }
    if pa.types.is_map(t):
        return {
            "type": "map",
            "key": field_to_json(t.key_field),
            "value": field_to_json(t.item_field),
        }
    raise InvalidInput(
        f'column type {t} is not supported by lsm3 (docs/FORMAT.md, "Types", lists the '
        "supported types); cast the column to one of them"
    )


def type_from_json(j: Any) -> pa.DataType:
    """Inverse of :func:`type_to_json`; raises CorruptMetadata on anything unknown."""
    if isinstance(j, str):
        if j in _PRIMITIVE_TYPES:
            return _PRIMITIVE_TYPES[j]
        raise CorruptMetadata(f"unknown column type {j!r} in schema")
    if not isinstance(j, dict) or not isinstance(j.get("type"), str):
        raise CorruptMetadata(f"malformed column type {j!r} in schema")
    kind = j["type"]
    try:
        if kind == "timestamp":
            return pa.timestamp(j["unit"], tz=j.get("tz"))
        if kind == "time32":
            return pa.time32(j["unit"])
        if kind == "time64":
            return pa.time64(j["unit"])
        if kind == "duration":
            return pa.duration(j["unit"])
        if kind in ("decimal32", "decimal64", "decimal128", "decimal256"):
            return getattr(pa, kind)(int(j["precision"]), int(j["scale"]))
        if kind == "fixed_size_binary":
            return pa.binary(int(j["byte_width"]))
        if kind == "list":
            return pa.list_(field_from_json(j["element"]))
        if kind == "large_list":
            return pa.large_list(field_from_json(j["element"]))
        if kind == "struct":
            return pa.struct([field_from_json(f) for f in j["fields"]])
        if kind == "map":
            return pa.map_(field_from_json(j["key"]), field_from_json(j["value"]))
    except (KeyError, TypeError, ValueError, OverflowError, pa.ArrowInvalid) as exc:
        raise CorruptMetadata(f"malformed column type {j!r} in schema: {exc}") from None
    raise CorruptMetadata(f"unknown column type {kind!r} in schema")


def field_to_json(f: pa.Field) -> dict[str, Any]:
    """The JSON form of a field: name, type and nullability."""
    return {"name": f.name, "type": type_to_json(f.type), "nullable": f.nullable}


def field_from_json(j: Any) -> pa.Field:
    """Inverse of :func:`field_to_json`; raises CorruptMetadata on anything malformed."""
    if not isinstance(j, dict) or not isinstance(j.get("name"), str):
        raise CorruptMetadata(f"malformed field {j!r} in schema")
    nullable = j.get("nullable", True)
    if not isinstance(nullable, bool):
        raise CorruptMetadata(f"field {j['name']!r}: nullable must be true or false")
    return pa.field(j["name"], type_from_json(j.get("type")), nullable=nullable)


def is_key_type(t: pa.DataType) -> bool:
    """Types a primary-key column may have: exact, totally ordered, hashable as specified."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_date32(t)
        or pa.types.is_timestamp(t)
    )
