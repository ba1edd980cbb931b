"""The ``lsm3`` command line: create, write, scan, get, snapshots and inspect a table.

Every subcommand takes a table URI (``s3://bucket/path``, ``file:///path``, a plain path or
``memory://name``) and the common options ``--storage-option KEY=VALUE`` (repeatable) and
``--debug``. S3 credentials and endpoint come from ``--storage-option`` or, as with boto3, from
the standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

Errors are printed as one line, ``lsm3: error: <message>``, with exit status 1 (2 for a usage
error such as a malformed ``--schema`` or ``--filter``); ``--debug`` shows the traceback.

Filters (``scan --filter``) use a tiny expression language parsed with :mod:`ast` and never
evaluated: column names, literals (numbers, strings, True/False/None), comparisons
(``== != < <= > >=``, chained ones too), ``in`` / ``not in`` a list of literals,
``is None`` / ``is not None``, ``and`` / ``or`` / ``not`` and parentheses. Everything else
(calls, attributes, subscripts, arithmetic, ...) is refused. See :func:`parse_filter`.
"""

from __future__ import annotations

import argparse
import ast
import base64
import datetime as dt
import decimal
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc

import lsm3
from lsm3.errors import Lsm3Error

PROG = "lsm3"

# --------------------------------------------------------------------------- errors


class UsageError(Exception):
    """A malformed argument value (schema, filter, key, KEY=VALUE...): exit status 2."""


class CliError(Exception):
    """A failure the CLI detected itself (missing file, unknown format...): exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


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


def parse_schema(text: str) -> pa.Schema:
    """``"id:int64,name:string,ts:timestamp[us,UTC]"`` -> a ``pyarrow.Schema``."""
    fields = []
    for item in _split_top_level(text):
        if not item:
            continue
        name, sep, type_text = item.partition(":")
        name, type_text = name.strip(), type_text.strip()
        if not sep or not name or not type_text:
            raise UsageError(f"schema item {item!r} is not NAME:TYPE (e.g. id:int64)")
        nullable = not type_text.endswith("!")
        fields.append(pa.field(name, parse_type(type_text.rstrip("!")), nullable=nullable))
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


def _names(text: str, what: str) -> list[str]:
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
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r} is not KEY=VALUE")
        out[key.strip()] = _option_value(value) if typed else value
    return out


# --------------------------------------------------------------------------- filter language

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_MIRROR: dict[type, type] = {
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
    ast.Lt: ast.Gt,
    ast.LtE: ast.GtE,
    ast.Gt: ast.Lt,
    ast.GtE: ast.LtE,
}
MAX_FILTER_LENGTH = 10_000

_FILTER_HINT = "see 'lsm3 scan --help' for the filter language"
_FILTER_EPILOG = """
Filter language (parsed with Python's ast module and translated, never evaluated):
  columns and literals   id, name, 42, -1.5, 'text', True, False, None
  comparisons            == != < <= > >=, also chained: 1 < id <= 10
  membership             status in ['new', 'paid'], id not in (1, 2)
  nulls                  note is None, note is not None
  logic                  and, or, not, parentheses
  timestamps and dates   updated_at >= '2026-01-31 12:00' (UTC unless an offset is given)
A null never matches a comparison (as in SQL). Calls, attributes, subscripts and
arithmetic are refused.
"""


class _Column:
    def __init__(self, name: str, type: pa.DataType) -> None:
        self.name = name
        self.type = type
        self.expr = pc.field(name)


class _Literal:
    def __init__(self, value: Any) -> None:
        self.value = value


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "function calls",
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripts",
        ast.BinOp: "arithmetic",
        ast.Lambda: "lambdas",
        ast.NamedExpr: "assignments",
        ast.IfExp: "conditional expressions",
        ast.JoinedStr: "f-strings",
    }
    for kind, text in names.items():
        if isinstance(node, kind):
            return text
    return type(node).__name__


def _literal(node: ast.AST) -> Any:
    """A constant (or a negated number); anything else raises UsageError."""
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, (bool, int, float, str))
    ):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        v = node.operand.value
        return -v if isinstance(node.op, ast.USub) else v
    raise UsageError(f"{_describe(node)} are not allowed in filters; {_FILTER_HINT}")


def _coerce(value: Any, column: _Column) -> pa.Scalar:
    """A literal as a scalar comparable with ``column`` (strings parsed for other types)."""
    t = column.type
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if isinstance(value, bool):
        if pa.types.is_boolean(t):
            return pa.scalar(value)
    elif isinstance(value, (int, float)) and numeric:
        if pa.types.is_decimal(t):
            return pa.scalar(decimal.Decimal(str(value)))
        return pa.scalar(value)  # let Arrow promote (id > 5.5 on an int column is fine)
    elif isinstance(value, str):
        try:
            return pa.scalar(value).cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if pa.types.is_timestamp(t) and t.tz is not None:
                try:  # no offset in the text: read it as UTC
                    return pa.scalar(value).cast(pa.timestamp(t.unit)).cast(t)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
    raise UsageError(f"cannot compare column {column.name!r} ({format_type(t)}) with {value!r}")


def _operand(node: ast.AST, schema: pa.Schema) -> _Column | _Literal:
    if isinstance(node, ast.Name):
        if node.id not in schema.names:
            raise UsageError(f"unknown column {node.id!r} in filter; columns: {schema.names}")
        return _Column(node.id, schema.field(node.id).type)
    return _Literal(_literal(node))


def _compare(op: ast.cmpop, left: ast.AST, right: ast.AST, schema: pa.Schema) -> pc.Expression:
    kind = type(op)
    if kind in (ast.Is, ast.IsNot):
        subject = _operand(left, schema)
        if not isinstance(subject, _Column) or not (
            isinstance(right, ast.Constant) and right.value is None
        ):
            raise UsageError("'is' / 'is not' only test a column against None")
        return subject.expr.is_null() if kind is ast.Is else subject.expr.is_valid()
    if kind in (ast.In, ast.NotIn):
        subject = _operand(left, schema)
        if not isinstance(subject, _Column):
            raise UsageError("the left side of 'in' must be a column")
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise UsageError("'in' needs a list of literals, e.g. status in ['new', 'paid']")
        values = [_coerce(_literal(e), subject) for e in right.elts]
        if values:
            arr = pa.array([v.as_py() for v in values], type=values[0].type)
            if arr.type != subject.type:
                try:
                    arr = arr.cast(subject.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise UsageError(
                        f"the values of 'in' do not fit column {subject.name!r}: {exc}"
                    ) from None
        else:
            arr = pa.array([], type=subject.type)
        found = subject.expr.isin(arr)
        # SQL semantics, as for '!=': a null is neither in nor not in the list
        return found if kind is ast.In else ~found & subject.expr.is_valid()
    if kind not in _COMPARE:
        raise UsageError(f"operator {type(op).__name__} is not allowed in filters")
    a, b = _operand(left, schema), _operand(right, schema)
    if isinstance(a, _Literal) and isinstance(b, _Column):  # 5 < id  ->  id > 5
        a, b, kind = b, a, _MIRROR[kind]
    if isinstance(b, _Literal) and b.value is None:
        if kind not in (ast.Eq, ast.NotEq) or not isinstance(a, _Column):
            raise UsageError("None can only be tested with '== None' / 'is None' (or '!=')")
        return a.expr.is_null() if kind is ast.Eq else a.expr.is_valid()
    if isinstance(a, _Column) and isinstance(b, _Column):
        return _COMPARE[kind](a.expr, b.expr)
    if isinstance(a, _Column) and isinstance(b, _Literal):
        return _COMPARE[kind](a.expr, pc.scalar(_coerce(b.value, a)))
    assert isinstance(a, _Literal) and isinstance(b, _Literal)
    return _COMPARE[kind](pc.scalar(a.value), pc.scalar(b.value))


def _boolean(node: ast.AST, schema: pa.Schema) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_boolean(v, schema) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_boolean(node.operand, schema)
    if isinstance(node, ast.Compare):
        terms = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            terms.append(_compare(op, left, right, schema))
            left = right
        out = terms[0]
        for t in terms[1:]:
            out = out & t
        return out
    if isinstance(node, ast.Name):
        column = _operand(node, schema)
        assert isinstance(column, _Column)
        if not pa.types.is_boolean(column.type):
            raise UsageError(
                f"column {column.name!r} ({format_type(column.type)}) is not a condition; "
                f"compare it, e.g. {column.name} > 0"
            )
        return column.expr
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return pc.scalar(node.value)
    raise UsageError(f"{_describe(node)} are not allowed in filters; {_FILTER_HINT}")


def parse_filter(text: str, schema: pa.Schema) -> pc.Expression:
    """Translate a filter expression into a ``pyarrow.compute.Expression`` without eval.

    The text is parsed by :func:`ast.parse` (which only builds a syntax tree) and a whitelist
    of node types is translated; column names are checked against ``schema`` and literals are
    converted to the column's type (so ``updated_at >= '2026-01-01'`` works).
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise UsageError(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UsageError(f"invalid filter {text!r}: {exc.msg}; {_FILTER_HINT}") from None
    except (ValueError, RecursionError, MemoryError):
        raise UsageError(f"invalid filter {text[:80]!r}") from None
    try:
        expr = _boolean(tree.body, schema)
    except RecursionError:
        raise UsageError("the filter is nested too deeply") from None
    # Type-check it now, so a mismatch is a clear usage error instead of a failed scan.
    probe = pa.table({f.name: pa.array([], f.type) for f in schema})
    try:
        probe.filter(expr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise UsageError(f"filter {text!r} does not type-check: {exc}") from None
    return expr


# --------------------------------------------------------------------------- output helpers


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def to_json_line(row: Any) -> str:
    return json.dumps(row, default=_json_default, ensure_ascii=False)


def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, float):
        text = f"{value:.10g}"
        if text.lstrip("-").isdigit():
            text += ".0"
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, (dict, list)):
        text = to_json_line(value)
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_rows(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    right: Sequence[bool] | None = None,
    max_width: int = 40,
) -> str:
    """Rows as an aligned text table (cells cut at ``max_width`` characters)."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [len(h) for h in header]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    align = list(right or [])[: len(header)]
    align += [False] * (len(header) - len(align))

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, align, strict=True)
        ]
        return "  ".join(out).rstrip()

    lines = [line(header), line(["-" * w for w in widths])]
    lines += [line(row) for row in cells]
    return "\n".join(lines)


def format_table(table: pa.Table, max_width: int = 40) -> str:
    """An Arrow table as aligned text (numbers right-aligned)."""
    right = [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in table.schema
    ]
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return format_rows(table.column_names, zip(*columns, strict=True), right, max_width)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _iso_ms(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _parse_as_of(text: str) -> int:
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


# --------------------------------------------------------------------------- table access


def _storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    options = parse_key_values(args.storage_option, "--storage-option", typed=False)
    return options or None


def _open(args: argparse.Namespace) -> lsm3.Table:
    return lsm3.open_table(args.uri, storage_options=_storage_options(args))


# --------------------------------------------------------------------------- create


def cmd_create(args: argparse.Namespace, out: IO[str]) -> int:
    schema = parse_schema(args.schema)
    table = lsm3.create_table(
        args.uri,
        schema,
        primary_key=_names(args.primary_key, "--primary-key"),
        partition_by=_names(args.partition_by, "--partition-by") if args.partition_by else None,
        buckets=args.buckets,
        options=parse_key_values(args.option, "--option", typed=True) or None,
        storage_options=_storage_options(args),
    )
    key = ",".join(table.primary_key)
    print(f"created table {table.uri} (primary key {key}, {args.buckets} bucket(s))", file=out)
    return 0


# --------------------------------------------------------------------------- write

_FORMATS_BY_EXTENSION = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _input_format(path: str, given: str | None) -> str:
    if given:
        return given
    if path == "-":
        raise UsageError("reading stdin ('-') needs --format parquet|csv|jsonl")
    lower = path.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        lower = lower.removesuffix(suffix)
    ext = os.path.splitext(lower)[1]
    if ext not in _FORMATS_BY_EXTENSION:
        raise UsageError(
            f"cannot tell the format of {path!r} from its extension; pass --format "
            "parquet|csv|jsonl"
        )
    return _FORMATS_BY_EXTENSION[ext]


def read_input(path: str, fmt: str, schema: pa.Schema) -> pa.Table:
    """Read one input file (``-`` for stdin) as Arrow; the writer casts it to the table."""
    source: Any = sys.stdin.buffer if path == "-" else path
    if path != "-" and not os.path.exists(path):
        raise CliError(f"input file {path!r} does not exist")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            if path == "-":
                source = pa.BufferReader(sys.stdin.buffer.read())
            return pq.read_table(source)
        if fmt == "csv":
            import pyarrow.csv as pacsv

            # Read the table's columns with the table's types, so "007" stays a string;
            # zoned timestamps as text first: they may come with or without an offset.
            zoned = {f.name: f.type for f in schema if pa.types.is_timestamp(f.type) and f.type.tz}
            types = {f.name: pa.string() if f.name in zoned else f.type for f in schema}
            convert = pacsv.ConvertOptions(column_types=types)
            data = pacsv.read_csv(source, convert_options=convert)
            for name, t in zoned.items():
                if name in data.column_names:
                    i = data.column_names.index(name)
                    data = data.set_column(i, name, _parse_zoned(data.column(name), t))
            return data
        if fmt == "jsonl":
            import pyarrow.json as pajson

            return pajson.read_json(source)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise CliError(f"cannot read {path} as {fmt}: {exc}") from None
    raise UsageError(f"unknown input format {fmt!r}")


_OFFSET_SUFFIX = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"


def _parse_zoned(column: pa.ChunkedArray, t: pa.DataType) -> pa.ChunkedArray:
    """Text to a zoned timestamp: values with an offset as given, values without one as UTC."""
    import pyarrow.csv as pacsv

    none = pa.scalar(None, pa.string())
    nulls = pa.array(pacsv.ConvertOptions().null_values, pa.string())  # "", "NULL", "NA", ...
    column = pc.if_else(pc.is_in(column, value_set=nulls), none, column)
    has_offset = pc.match_substring_regex(column, _OFFSET_SUFFIX)
    with_offset = pc.cast(pc.if_else(has_offset, column, none), t)
    naive = pc.cast(pc.if_else(has_offset, none, column), pa.timestamp(t.unit))
    return pc.if_else(has_offset, with_offset, pc.cast(naive, t))


def cmd_write(args: argparse.Namespace, out: IO[str]) -> int:
    if args.commit_id and not args.writer_id:
        raise UsageError("--commit-id needs --writer-id (a commit id is per writer)")
    table = _open(args)
    if args.writer_id and args.commit_id:
        last = table.last_commit(args.writer_id)
        if last is not None and last.commit_id == args.commit_id:
            print(
                f"commit {args.commit_id!r} of writer {args.writer_id!r} is already in "
                f"snapshot {last.snapshot_id}; nothing written",
                file=out,
            )
            return 0
    formats = [_input_format(p, args.format) for p in args.files]
    changes = 0
    with table.writer(args.writer_id) as writer:
        for path, fmt in zip(args.files, formats, strict=True):
            data = read_input(path, fmt, table.schema)
            changes += data.num_rows
            if args.cdc:
                writer.apply_cdc(data, op_column=args.op_column)
            elif args.delete:
                writer.delete(data)
            else:
                writer.upsert(data)
        snap = None
        if changes or args.commit_id:
            metadata = {"files": [os.path.basename(p) for p in args.files][:100]}
            snap = writer.commit(commit_id=args.commit_id, metadata=metadata)
    if snap is None:
        print("nothing to commit (the input files hold no rows)", file=out)
        return 0
    s = snap.summary
    print(
        f"committed snapshot {snap.snapshot_id} to {table.uri}: {changes} change(s) from "
        f"{len(args.files)} file(s) -> {s.get('added_files', 0)} run(s), "
        f"{s.get('added_rows', 0)} row(s) of which {s.get('added_deletes', 0)} delete(s)",
        file=out,
    )
    return 0


# --------------------------------------------------------------------------- scan


def _limited(reader: pa.RecordBatchReader, limit: int | None) -> Iterator[pa.RecordBatch]:
    remaining = limit
    for batch in reader:
        if remaining is not None:
            if remaining <= 0:
                break
            if batch.num_rows > remaining:
                batch = batch.slice(0, remaining)
            remaining -= batch.num_rows
        yield batch


def _write_jsonl(batches: Iterable[pa.RecordBatch], stream: IO[str]) -> int:
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            stream.write(to_json_line(row) + "\n")
        n += batch.num_rows
    return n


def _output_file(path: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    ext = os.path.splitext(path.lower())[1]
    n = 0
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        with pq.ParquetWriter(path, schema, compression="zstd") as pw:
            for batch in batches:
                pw.write_batch(batch)
                n += batch.num_rows
        return n
    if ext == ".csv":
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(path, schema) as cw:
            for batch in batches:
                cw.write_batch(batch)
                n += batch.num_rows
        return n
    if ext in (".jsonl", ".ndjson", ".json"):
        with open(path, "w", encoding="utf-8") as f:
            return _write_jsonl(batches, f)
    raise UsageError(f"--output {path!r}: use a .parquet, .csv or .jsonl file name")


def cmd_scan(args: argparse.Namespace, out: IO[str]) -> int:
    if args.snapshot is not None and args.as_of is not None:
        raise UsageError("pass --snapshot or --as-of, not both")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be zero or more")
    if args.output:
        ext = os.path.splitext(args.output.lower())[1]
        if ext not in (".parquet", ".pq", ".csv", ".jsonl", ".ndjson", ".json"):
            raise UsageError(f"--output {args.output!r}: use a .parquet, .csv or .jsonl name")
    table = _open(args)
    columns = _names(args.columns, "--columns") if args.columns else None
    expr = parse_filter(args.filter, table.schema) if args.filter else None
    as_of = _parse_as_of(args.as_of) if args.as_of is not None else None
    reader = table.to_batches(columns=columns, filter=expr, snapshot_id=args.snapshot, as_of=as_of)
    batches = _limited(reader, args.limit)
    if args.output:
        n = _output_file(args.output, reader.schema, batches)
        print(f"wrote {n} row(s) to {args.output}", file=sys.stderr)
        return 0
    if args.format == "jsonl":
        _write_jsonl(batches, out)
        return 0
    if args.format == "csv":
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        with pacsv.CSVWriter(sink, reader.schema) as cw:
            for batch in batches:
                cw.write_batch(batch)
        out.write(sink.getvalue().to_pybytes().decode("utf-8"))
        return 0
    result = pa.Table.from_batches(list(batches), schema=reader.schema)
    print(format_table(result), file=out)
    print(f"({result.num_rows} row{'s' if result.num_rows != 1 else ''})", file=out)
    return 0


# --------------------------------------------------------------------------- get


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


def cmd_get(args: argparse.Namespace, out: IO[str]) -> int:
    table = _open(args)
    keys = [parse_key(k, table.schema, table.primary_key) for k in args.keys]
    columns = _names(args.columns, "--columns") if args.columns else None
    rows = table.get_many(keys, snapshot_id=args.snapshot, columns=columns)
    missing = [k for k, r in zip(args.keys, rows, strict=True) if r is None]
    if args.format == "table":
        names = columns or table.schema.names
        found = [[r[n] for n in names] for r in rows if r is not None]
        print(format_rows(names, found), file=out)
    else:
        for row in rows:
            out.write(to_json_line(row) + "\n")
    if missing:
        print(f"{PROG}: not found: {', '.join(missing)}", file=sys.stderr)
        return 3
    return 0


# --------------------------------------------------------------------------- snapshots


def _summary_text(s: dict[str, int]) -> str:
    """``+2 files, +900 rows (120 del); 8 files, 1900 rows`` (added; then the live totals)."""
    removed = f"-{s['removed_files']} " if s.get("removed_files") else ""
    return (
        f"{removed}+{s.get('added_files', 0)} files, +{s.get('added_rows', 0)} rows "
        f"({s.get('added_deletes', 0)} del); {s.get('total_files', 0)} files, "
        f"{s.get('total_rows', 0)} rows"
    )


def cmd_snapshots(args: argparse.Namespace, out: IO[str]) -> int:
    table = _open(args)
    snaps = table.snapshots()
    if args.format == "jsonl":
        for s in snaps:
            doc = {
                "snapshot_id": s.snapshot_id,
                "parent_id": s.parent_id,
                "timestamp_ms": s.timestamp_ms,
                "time": _iso_ms(s.timestamp_ms),
                "kind": s.kind,
                "writer_id": s.writer_id,
                "commit_id": s.commit_id,
                "metadata": s.metadata,
                "summary": s.summary,
            }
            out.write(to_json_line(doc) + "\n")
        return 0
    rows = [
        [
            s.snapshot_id,
            "-" if s.parent_id is None else s.parent_id,
            _iso_ms(s.timestamp_ms),
            s.kind,
            s.writer_id or "-",
            s.commit_id or "-",
            _summary_text(s.summary),
            to_json_line(s.metadata) if s.metadata else "-",
        ]
        for s in snaps
    ]
    header = ["id", "parent", "time", "kind", "writer", "commit", "summary", "metadata"]
    right = [True, True, False, False, False, False, False, False]
    print(format_rows(header, rows, right, max_width=args.width), file=out)
    print(f"({len(snaps)} snapshot{'s' if len(snaps) != 1 else ''})", file=out)
    return 0


# --------------------------------------------------------------------------- inspect


def inspect_table(table: lsm3.Table, snapshot_id: int | None = None) -> dict[str, Any]:
    """The figures ``lsm3 inspect`` reports, as a JSON-ready dict.

    ``requests`` are the object-store counters of ``table`` when the report is complete, so
    for a freshly opened table they are the cost of opening it and of this inspection.
    """
    snap = table.snapshot(snapshot_id)
    files = table.files(snapshot_id=snap.snapshot_id if snap else 0)
    live_rows = table.count(snapshot_id=snap.snapshot_id if snap else 0)
    retained = table.snapshot_ids()
    levels: dict[int, dict[str, int]] = {}
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for f in files:
        lv = levels.setdefault(f.level, {"files": 0, "bytes": 0, "rows": 0, "deletes": 0})
        part = "/".join(str(v) for v in f.partition)
        g = groups.setdefault((part, f.bucket), {"files": 0, "bytes": 0, "rows": 0, "deletes": 0})
        for d in (lv, g):
            d["files"] += 1
            d["bytes"] += f.bytes
            d["rows"] += f.rows
            d["deletes"] += f.deletes
    ts = table.table_schema
    stored = sum(f.rows for f in files)
    report: dict[str, Any] = {
        "uri": table.uri,
        "snapshot": None
        if snap is None
        else {
            "id": snap.snapshot_id,
            "time": _iso_ms(snap.timestamp_ms),
            "kind": snap.kind,
            "writer_id": snap.writer_id,
            "commit_id": snap.commit_id,
        },
        "retained_snapshots": len(retained),
        "schema": format_schema(table.schema),
        "primary_key": list(table.primary_key),
        "partition_by": list(ts.partition_by),
        "buckets": ts.buckets,
        "files": len(files),
        "bytes": sum(f.bytes for f in files),
        "rows_stored": stored,
        "deletes_stored": sum(f.deletes for f in files),
        "rows_live": live_rows,
        "amplification": round(stored / live_rows, 3) if live_rows else None,
        "levels": [{"level": lv, **levels[lv]} for lv in sorted(levels)],
        "buckets_detail": [
            {"partition": part, "bucket": b, **groups[(part, b)]} for part, b in sorted(groups)
        ],
        "writers": {}
        if snap is None
        else {
            w: {"commit_id": r.commit_id, "snapshot_id": r.snapshot_id, "metadata": r.metadata}
            for w, r in sorted(snap.writers.items())
        },
    }
    report["requests"] = table.store_stats()
    return report


def format_inspect(report: dict[str, Any]) -> str:
    lines = [f"table        {report['uri']}"]
    snap = report["snapshot"]
    if snap is None:
        lines.append("snapshot     none (nothing committed yet)")
    else:
        lines.append(
            f"snapshot     {snap['id']} ({snap['kind']}, {snap['time']}), "
            f"{report['retained_snapshots']} retained"
        )
    lines.append(f"schema       {report['schema']}")
    part = ",".join(report["partition_by"]) or "-"
    lines.append(
        f"key          {','.join(report['primary_key'])}   partition by: {part}   "
        f"buckets: {report['buckets']}"
    )
    amp = report["amplification"]
    lines.append(
        f"data         {report['files']} file(s), {human_bytes(report['bytes'])}, "
        f"{report['rows_stored']} row(s) stored ({report['deletes_stored']} delete(s)), "
        f"{report['rows_live']} live row(s)"
        + (f", amplification {amp:.2f}x" if amp is not None else "")
    )
    for w, rec in report["writers"].items():
        meta = to_json_line(rec["metadata"]) if rec["metadata"] else "{}"
        lines.append(
            f"writer       {w}: commit {rec['commit_id']} in snapshot {rec['snapshot_id']} {meta}"
        )
    if report["levels"]:
        lines += ["", "per level"]
        rows = [
            [lv["level"], lv["files"], human_bytes(lv["bytes"]), lv["rows"], lv["deletes"]]
            for lv in report["levels"]
        ]
        lines.append(format_rows(["level", "files", "bytes", "rows", "deletes"], rows, [True] * 5))
        lines += ["", "per bucket"]
        detail = report["buckets_detail"]
        partitioned = bool(report["partition_by"])
        header = (["partition"] if partitioned else []) + [
            "bucket",
            "files",
            "bytes",
            "rows",
            "deletes",
        ]
        shown = detail[:64]
        rows = [
            ([d["partition"]] if partitioned else [])
            + [d["bucket"], d["files"], human_bytes(d["bytes"]), d["rows"], d["deletes"]]
            for d in shown
        ]
        lines.append(format_rows(header, rows, ([False] if partitioned else []) + [True] * 5))
        if len(detail) > len(shown):
            lines.append(f"... {len(detail) - len(shown)} more (see --json)")
    req = report["requests"]
    lines += [
        "",
        "requests made by this inspect run: "
        + ", ".join(f"{op} {n}" for op, n in req["requests"].items())
        + f"; {human_bytes(req['bytes'].get('GET', 0))} read",
    ]
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace, out: IO[str]) -> int:
    table = _open(args)
    report = inspect_table(table, args.snapshot)
    if args.json:
        out.write(json.dumps(report, indent=2, default=_json_default) + "\n")
    else:
        print(format_inspect(report), file=out)
    return 0


# --------------------------------------------------------------------------- parser

_MAIN_EPILOG = """\
examples:
  lsm3 create s3://bucket/orders --schema 'id:int64,customer:string,amount:float64' \\
       --primary-key id --buckets 4
  lsm3 write s3://bucket/orders changes.parquet more.csv
  lsm3 write s3://bucket/orders events.jsonl --cdc --op-column op
  lsm3 scan s3://bucket/orders --filter "amount > 100 and customer == 'acme'" --limit 20
  lsm3 get s3://bucket/orders 42 43
  lsm3 snapshots s3://bucket/orders
  lsm3 inspect s3://bucket/orders --json

Table URIs: s3://bucket/path, file:///path, a local path, memory://name.
S3 settings come from the AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE) or --storage-option KEY=VALUE with the keys
endpoint_url, region, access_key_id, secret_access_key, session_token, profile.

Exit status: 0 success, 1 error, 2 usage error, 3 'get' found not every key.
"""

_COMMON_HELP = "see 'lsm3 --help' for table URIs and S3 settings"


def _common(debug_default: Any) -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="object-store option (repeatable): endpoint_url, region, access_key_id, "
        "secret_access_key, session_token, profile",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=debug_default,
        help="show the full traceback on errors",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Create, load, query and inspect lsm3 tables (LSM-tree tables of sorted "
        "Parquet runs on S3-compatible storage or a local directory).",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lsm3 {lsm3.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    common = _common(argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog="examples:\n" + epilog + "\n" + _COMMON_HELP,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("uri", metavar="URI", help="the table: s3://bucket/path, a path, ...")
        return p

    p = add(
        "create",
        "create an empty table",
        "  lsm3 create ./orders --schema 'id:int64,name:string,amount:float64' --primary-key id\n"
        "  lsm3 create s3://b/events --schema 'tenant:string,id:int64,ts:timestamp[us,UTC]' \\\n"
        "       --primary-key tenant,id --partition-by tenant --buckets 8 \\\n"
        "       --option sequence_field=ts\n",
    )
    p.add_argument(
        "--schema",
        required=True,
        metavar="COLUMNS",
        help="comma-separated NAME:TYPE list, e.g. 'id:int64,name:string'; " + SCHEMA_HELP,
    )
    p.add_argument(
        "--primary-key", required=True, metavar="COLS", help="key column(s), comma-separated"
    )
    p.add_argument(
        "--partition-by", metavar="COLS", help="partition column(s), a subset of the key"
    )
    p.add_argument("--buckets", type=int, default=1, help="hash buckets (default 1)")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="table option (repeatable), e.g. sequence_field=lsn, memtable_bytes=67108864, "
        "row_group_rows=16384, target_file_bytes=134217728",
    )
    p.set_defaults(func=cmd_create)

    p = add(
        "write",
        "upsert, delete or apply CDC from files, as one commit",
        "  lsm3 write ./orders day1.parquet day2.parquet\n"
        "  lsm3 write ./orders gone.csv --delete\n"
        "  lsm3 write ./orders changes.jsonl --cdc --op-column op\n"
        "  cat rows.csv | lsm3 write ./orders - --format csv\n"
        "  lsm3 write ./orders batch-17.parquet --writer-id loader --commit-id batch-17\n"
        "\n"
        "With --cdc, each row carries an op: c, r, u, +I, +U upsert; d, -D delete (delete rows\n"
        "need only the key columns); -U is skipped. With --writer-id and --commit-id a repeated\n"
        "run of the same batch is applied once.\n",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="input files ('-' for stdin)")
    p.add_argument(
        "--format",
        choices=["parquet", "csv", "jsonl"],
        help="input format (default: from the file extension: .parquet, .csv, .jsonl/.json)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cdc", action="store_true", help="rows are change events with an op")
    mode.add_argument("--delete", action="store_true", help="rows are keys to delete")
    p.add_argument("--op-column", default="op", help="the op column for --cdc (default: op)")
    p.add_argument("--writer-id", help="name the writer (recorded in the snapshot)")
    p.add_argument("--commit-id", help="idempotency id of this commit (needs --writer-id)")
    p.set_defaults(func=cmd_write)

    p = add(
        "scan",
        "read the merged rows of a table",
        "  lsm3 scan ./orders --limit 10\n"
        "  lsm3 scan ./orders --columns id,amount --filter 'amount >= 100 and id in [1, 2, 3]'\n"
        "  lsm3 scan ./orders --filter \"status != 'cancelled' and note is not None\"\n"
        "  lsm3 scan ./orders --filter \"updated_at >= '2026-01-01'\" --format jsonl\n"
        "  lsm3 scan ./orders --snapshot 3 --output orders-v3.parquet\n" + _FILTER_EPILOG,
    )
    p.add_argument("--columns", metavar="COLS", help="columns to return, comma-separated")
    p.add_argument("--filter", metavar="EXPR", help="row filter, see below")
    p.add_argument("--snapshot", type=int, metavar="ID", help="read this snapshot id")
    p.add_argument(
        "--as-of", metavar="TIME", help="read the snapshot current at TIME (ISO-8601 or ms)"
    )
    p.add_argument("--limit", type=int, metavar="N", help="stop after N rows")
    p.add_argument(
        "--output", metavar="FILE", help="write to FILE (.parquet, .csv or .jsonl) instead"
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "jsonl"],
        default="table",
        help="stdout format (default: table)",
    )
    p.set_defaults(func=cmd_scan)

    p = add(
        "get",
        "look rows up by primary key",
        "  lsm3 get ./orders 42 43\n"
        "  lsm3 get ./events acme,1001        # composite key (tenant, id)\n"
        "  lsm3 get ./orders 42 --snapshot 3 --format table\n"
        "\n"
        "Prints one JSON line per key ('null' when absent); exit status 3 if a key is absent.\n",
    )
    p.add_argument(
        "keys",
        nargs="+",
        metavar="KEY",
        help="a key; comma-separated values for a composite key",
    )
    p.add_argument("--columns", metavar="COLS", help="columns to return, comma-separated")
    p.add_argument("--snapshot", type=int, metavar="ID", help="read this snapshot id")
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl", help="default: jsonl")
    p.set_defaults(func=cmd_get)

    p = add(
        "snapshots",
        "list the snapshots of a table, oldest first",
        "  lsm3 snapshots ./orders\n  lsm3 snapshots s3://b/orders --format jsonl\n",
    )
    p.add_argument("--format", choices=["table", "jsonl"], default="table", help="default: table")
    p.add_argument("--width", type=int, default=80, help="cut table cells at this many characters")
    p.set_defaults(func=cmd_snapshots)

    p = add(
        "inspect",
        "show files per level and bucket, live rows and the request cost of looking",
        "  lsm3 inspect ./orders\n  lsm3 inspect s3://b/orders --json\n",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--snapshot", type=int, metavar="ID", help="inspect this snapshot id")
    p.set_defaults(func=cmd_inspect)
    return parser


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (``lsm3`` and ``python -m lsm3`` exit with it)."""
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("LSM3_DEBUG") == "1"
    try:
        return int(args.func(args, sys.stdout))
    except UsageError as exc:
        return _fail(exc, 2, debug)
    except (Lsm3Error, CliError) as exc:
        return _fail(exc, 1, debug)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `lsm3 scan ... | head`): not an error.
        _silence_stdout()
        return 0
    except Exception as exc:  # an unexpected failure: still one line, unless --debug
        return _fail(exc, 1, debug, unexpected=True)


def _fail(exc: BaseException, code: int, debug: bool, unexpected: bool = False) -> int:
    if debug:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
