"""Files and text of the ``lsm3`` command: reading inputs, writing outputs, showing values.

Input files (Parquet, CSV read with the table's types, JSON lines; ``-`` for stdin) become
Arrow tables for the writer; result batches go to ``--output FILE`` (Parquet, CSV, JSON lines)
or to stdout as an aligned text table, CSV or JSON lines. Values are shown the same way
everywhere: JSON with ISO times, decimals as strings and bytes as base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.cli.args import CliError, UsageError

# --------------------------------------------------------------------------- values as text


def json_default(value: Any) -> Any:
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
    return json.dumps(row, default=json_default, ensure_ascii=False)


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


def iso_ms(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# --------------------------------------------------------------------------- input files

# File formats by name ending, for input files and --output alike.
_FORMATS_BY_EXTENSION = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def input_format(path: str, given: str | None) -> str:
    """The format of an input file: ``given`` (``--format``), else from its extension."""
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


# --------------------------------------------------------------------------- outputs


def _output_format(path: str) -> str:
    fmt = _FORMATS_BY_EXTENSION.get(os.path.splitext(path.lower())[1])
    if fmt is None:
        raise UsageError(f"--output {path!r}: use a .parquet, .csv or .jsonl name")
    return fmt


def check_output_name(path: str | None) -> None:
    """Refuse an ``--output`` name of unknown type before any work is done."""
    if path:
        _output_format(path)


def limited(reader: pa.RecordBatchReader, limit: int | None) -> Iterator[pa.RecordBatch]:
    """The batches of ``reader``, cut after ``limit`` rows (``None``: all of them)."""
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


def _write_csv(sink: Any, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    import pyarrow.csv as pacsv

    n = 0
    with pacsv.CSVWriter(sink, schema) as cw:
        for batch in batches:
            cw.write_batch(batch)
            n += batch.num_rows
    return n


def _output_file(path: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    fmt = _output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        n = 0
        with pq.ParquetWriter(path, schema, compression="zstd") as pw:
            for batch in batches:
                pw.write_batch(batch)
                n += batch.num_rows
        return n
    if fmt == "csv":
        return _write_csv(path, schema, batches)
    with open(path, "w", encoding="utf-8") as f:
        return _write_jsonl(batches, f)


def write_rows(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    output: str | None,
    fmt: str,
    out: IO[str],
) -> None:
    """Rows to ``output`` (a row count on stderr), else to ``out`` as ``fmt``: table|csv|jsonl."""
    if output:
        n = _output_file(output, schema, batches)
        print(f"wrote {n} row(s) to {output}", file=sys.stderr)
    elif fmt == "jsonl":
        _write_jsonl(batches, out)
    elif fmt == "csv":
        sink = pa.BufferOutputStream()
        _write_csv(sink, schema, batches)
        out.write(sink.getvalue().to_pybytes().decode("utf-8"))
    else:
        result = pa.Table.from_batches(list(batches), schema=schema)
        print(format_table(result), file=out)
        print(f"({result.num_rows} row{'s' if result.num_rows != 1 else ''})", file=out)
