"""Argument values of the ``lsm3`` command: from command-line text to what the API takes.

The schema grammar (``id:int64,ts:timestamp[us,UTC]``), column lists, ``KEY=VALUE`` options,
primary keys, ``--as-of`` times and the snapshot selectors (``--snapshot``, ``--as-of``,
``--tag``), plus the two error classes every part of the CLI raises: :class:`UsageError` (a
malformed value, exit status 2) and :class:`CliError` (a failure the CLI found, exit status 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

import lsm3

if TYPE_CHECKING:
    from lsm3.cli.plugins import TableResolver

PROG = "lsm3"
#: The title of the option group every command shares (``--storage-option``, ``--debug``).
COMMON_OPTIONS = "common options"

#: ``add(name, help, examples)``: declares a subcommand taking the common options (and, for a
#: table command, the TABLE argument as ``args.uri``); the command modules receive it to
#: declare their own subcommands, plugins through :class:`lsm3.cli.plugins.CliExtension`.
AddCommand = Callable[[str, str, str], argparse.ArgumentParser]


class UsageError(Exception):
    """A malformed argument value (schema, filter, key, KEY=VALUE...): exit status 2."""


class CliError(Exception):
    """A failure the CLI detected itself (missing file, unknown format...): exit status 1."""


# --------------------------------------------------------------------------- schema grammar

_TYPE_NAMES: dict[str, pa.DataType] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "str": pa.string(),
    "utf8": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "date32": pa.date32(),
    "date": pa.date32(),
    "date64": pa.date64(),
}
_TIME_UNITS = ("s", "ms", "us", "ns")
_PARAM_TYPE = re.compile(r"^([a-z0-9_]+)\s*[\[(]\s*(.*?)\s*[\])]$")

SCHEMA_HELP = (
    "types: int8..int64, uint8..uint64, bool, float32, float64, string, large_string, binary, "
    "date32, date64, timestamp[us] or timestamp[us,UTC] (unit s|ms|us|ns), time64[us], "
    "duration[us], decimal128(precision,scale); append '!' for NOT NULL (key columns are "
    "always NOT NULL)"
)


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets: ``a:int64,b:decimal128(10,2)`` -> two items."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_type(text: str) -> pa.DataType:
    """An Arrow type from its short name: ``int64``, ``timestamp[us,UTC]``, ``decimal128(10,2)``."""
    name = text.strip().lower()
    if name in _TYPE_NAMES:
        return _TYPE_NAMES[name]
    if name == "timestamp":
        return pa.timestamp("us")
    m = _PARAM_TYPE.match(text.strip())
    if m:
        kind = m.group(1).lower()
        args = [a.strip() for a in m.group(2).split(",")] if m.group(2) else []
        try:
            if kind == "timestamp" and 1 <= len(args) <= 2 and args[0] in _TIME_UNITS:
                return pa.timestamp(args[0], tz=args[1] if len(args) == 2 else None)
            if kind in ("time32", "time64", "duration") and len(args) == 1:
                return getattr(pa, kind)(args[0])
            if kind.startswith("decimal") and len(args) == 2:
                fn = {"decimal": pa.decimal128}.get(kind) or getattr(pa, kind, None)
                if fn is not None:
                    return fn(int(args[0]), int(args[1]))
        except (ValueError, TypeError, pa.ArrowInvalid) as exc:
            raise UsageError(f"invalid type {text!r}: {exc}") from None
    raise UsageError(f"unknown type {text!r}; {SCHEMA_HELP}")


def parse_column(item: str) -> pa.Field:
    """``"name:string!"`` -> a field (``!``: NOT NULL)."""
    name, sep, type_text = item.partition(":")
    name, type_text = name.strip(), type_text.strip()
    if not sep or not name or not type_text:
        raise UsageError(f"schema item {item!r} is not NAME:TYPE (e.g. id:int64)")
    nullable = not type_text.endswith("!")
    return pa.field(name, parse_type(type_text.rstrip("!")), nullable=nullable)


def parse_schema(text: str) -> pa.Schema:
    """``"id:int64,name:string,ts:timestamp[us,UTC]"`` -> a ``pyarrow.Schema``."""
    fields = [parse_column(item) for item in _split_top_level(text) if item]
    if not fields:
        raise UsageError("the schema names no columns; e.g. --schema 'id:int64,name:string'")
    try:
        return pa.schema(fields)
    except (pa.ArrowInvalid, ValueError) as exc:
        raise UsageError(f"invalid schema {text!r}: {exc}") from None


def format_type(t: pa.DataType) -> str:
    """The short name :func:`parse_type` reads back."""
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}{',' + t.tz if t.tz else ''}]"
    if pa.types.is_decimal(t):
        return f"decimal{t.bit_width}({t.precision},{t.scale})"
    if pa.types.is_time(t) or pa.types.is_duration(t):
        return f"{str(t).split('[')[0]}[{t.unit}]"
    return "bool" if t == pa.bool_() else str(t).replace("double", "float64")


def format_schema(schema: pa.Schema) -> str:
    """The ``--schema`` text of a schema."""
    return ",".join(f"{f.name}:{format_type(f.type)}{'' if f.nullable else '!'}" for f in schema)


# --------------------------------------------------------------------------- other values


def parse_names(text: str, what: str) -> list[str]:
    """A comma-separated column list (``--columns``, ``--primary-key``...)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"{what} names no columns")
    return names


def _option_value(text: str) -> Any:
    """``--option`` values: JSON scalars (numbers, true/false/null) or plain strings."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def parse_key_values(items: Sequence[str] | None, what: str, typed: bool) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` arguments as a dict (``typed``: values read as JSON scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r} is not KEY=VALUE")
        out[key.strip()] = _option_value(value) if typed else value
    return out


def parse_key(text: str, schema: pa.Schema, primary_key: Sequence[str]) -> Any:
    """A key from the command line: one value, or comma-separated values for a composite key,
    each cast to its key column's type. Returns a scalar or a tuple."""
    parts = [text] if len(primary_key) == 1 else [p.strip() for p in text.split(",")]
    if len(parts) != len(primary_key):
        raise UsageError(
            f"key {text!r} has {len(parts)} value(s); the primary key is "
            f"({', '.join(primary_key)}): pass one comma-separated value per column"
        )
    values = []
    for part, name in zip(parts, primary_key, strict=True):
        t = schema.field(name).type
        try:
            scalar = pa.scalar(part).cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            try:
                if not (pa.types.is_timestamp(t) and t.tz is not None):
                    raise
                scalar = pa.scalar(part).cast(pa.timestamp(t.unit)).cast(t)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise UsageError(
                    f"key value {part!r} is not a valid {format_type(t)} for column {name!r}"
                ) from None
        values.append(scalar.as_py())
    return values[0] if len(values) == 1 else tuple(values)


def parse_as_of(text: str) -> int:
    """``--as-of``: milliseconds since the epoch, or an ISO-8601 time (UTC if no offset)."""
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--as-of {text!r} is neither milliseconds since the epoch nor an ISO-8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def check_one_snapshot_choice(args: argparse.Namespace) -> None:
    """``--snapshot``, ``--as-of`` and ``--tag`` each pick a snapshot: at most one may be given."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("snapshot", "as_of", "tag")
        if getattr(args, name, None) is not None
    ]
    if len(given) > 1:
        raise UsageError(f"pass only one of {', '.join(given)}: each picks a snapshot")


# --------------------------------------------------------------------------- table access


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    options = parse_key_values(args.storage_option, "--storage-option", typed=False)
    return options or None


def table_resolvers(args: argparse.Namespace) -> Sequence[TableResolver]:
    """The plugins' resolvers of TABLE arguments (see :mod:`lsm3.cli.plugins`), in order."""
    resolvers: Sequence[TableResolver] = getattr(args, "table_resolvers", ())
    return resolvers


def refuse_memory_uri(uri: str) -> None:
    """A ``memory://`` table lives as long as the process: the next command would not find it."""
    if uri.startswith("memory://"):
        raise UsageError(
            f"{uri}: a memory:// table lives only inside one Python process, so the next "
            f"{PROG} command would not find it; use a directory (./orders) or s3://bucket/path"
        )


def open_table(args: argparse.Namespace) -> lsm3.Table:
    """The table ``args.uri`` names: what a plugin's resolver makes of it (``sales.orders``
    with ``--warehouse``), else the URI, opened with the ``--storage-option`` settings."""
    for resolver in table_resolvers(args):
        table = resolver.open_table(args, args.uri)
        if table is not None:
            return table
    refuse_memory_uri(args.uri)
    try:
        return lsm3.open_table(args.uri, storage_options=storage_options(args))
    except lsm3.TableNotFound as exc:
        raise CliError(
            f"no lsm3 table at {args.uri}; create one with '{PROG} create {args.uri} "
            "--schema COLUMNS --primary-key COLS' (or --like FILE for the columns of a file)"
        ) from exc


def create_table(
    args: argparse.Namespace,
    schema: pa.Schema,
    *,
    primary_key: Sequence[str],
    partition_by: Sequence[str] | None,
    buckets: int,
    options: dict[str, Any] | None,
) -> tuple[lsm3.Table, str]:
    """Create the table ``args.uri`` names (through a resolver, else at the URI); returns it
    and how messages should name it."""
    definition: dict[str, Any] = dict(
        primary_key=primary_key, partition_by=partition_by, buckets=buckets, options=options
    )
    for resolver in table_resolvers(args):
        table = resolver.create_table(args, args.uri, schema, **definition)
        if table is not None:
            return table, f"{args.uri} at {table.uri}"
    refuse_memory_uri(args.uri)
    try:
        table = lsm3.create_table(
            args.uri, schema, storage_options=storage_options(args), **definition
        )
    except lsm3.TableAlreadyExists as exc:
        raise CliError(
            f"a table already exists at {args.uri}; add rows with '{PROG} write {args.uri} "
            f"FILE', see it with '{PROG} schema {args.uri}', or create the new one elsewhere"
        ) from exc
    return table, table.uri
