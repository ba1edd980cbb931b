"""Outputs and text of the ``lsm3`` command: writing result rows, showing values.

Result batches stream to ``--output FILE`` (Parquet, CSV, JSON lines) or to stdout as CSV or
JSON lines, a batch at a time, so the first rows appear before the scan is done; the aligned
text table shows a bounded number of rows. Values are shown the same way everywhere: JSON
with ISO times, decimals as strings and bytes as base64. Input files are read by
:mod:`lsm3.cli.inputs`.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

import pyarrow as pa

from lsm3.cli.args import UsageError
from lsm3.cli.inputs import FORMATS_BY_EXTENSION

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


# --------------------------------------------------------------------------- outputs


def _output_format(path: str) -> str:
    fmt = FORMATS_BY_EXTENSION.get(os.path.splitext(path.lower())[1])
    if fmt is None:
        raise UsageError(f"--output {path!r}: use a .parquet, .csv or .jsonl name")
    return fmt


def check_output_name(path: str | None) -> None:
    """Refuse an ``--output`` name of unknown type before any work is done."""
    if path:
        _output_format(path)


def limited(batches: Iterable[pa.RecordBatch], limit: int | None) -> Iterator[pa.RecordBatch]:
    """The batches, cut after ``limit`` rows (``None``: all of them); never reads a batch more
    than it needs (the next batch of a scan may take as long as the first)."""
    if limit is not None and limit <= 0:
        return
    remaining = limit
    for batch in batches:
        if remaining is not None:
            if batch.num_rows > remaining:
                batch = batch.slice(0, remaining)
            remaining -= batch.num_rows
        yield batch
        if remaining is not None and remaining <= 0:
            return


def observed(
    batches: Iterable[pa.RecordBatch], each: Callable[[pa.RecordBatch], object]
) -> Iterator[pa.RecordBatch]:
    """The batches, calling ``each`` on every one as it passes (progress counters)."""
    for batch in batches:
        each(batch)
        yield batch


def _write_jsonl(batches: Iterable[pa.RecordBatch], stream: IO[str]) -> int:
    n = 0
    for batch in batches:
        stream.write("".join(to_json_line(row) + "\n" for row in batch.to_pylist()))
        stream.flush()
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


def _stream_csv(schema: pa.Schema, batches: Iterable[pa.RecordBatch], out: IO[str]) -> int:
    """CSV to a text stream, flushed batch by batch: the header, then each batch's rows."""
    import pyarrow.csv as pacsv

    n = 0
    header = True
    for batch in batches:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(batch, sink, pacsv.WriteOptions(include_header=header))
        out.write(sink.getvalue().to_pybytes().decode("utf-8"))
        out.flush()
        header = False
        n += batch.num_rows
    if header:  # no rows: still the header, as a file would have
        sink = pa.BufferOutputStream()
        pacsv.write_csv(schema.empty_table(), sink)
        out.write(sink.getvalue().to_pybytes().decode("utf-8"))
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
) -> int:
    """Rows to ``output``, else to ``out`` as ``fmt``: table|csv|jsonl; returns how many.
    CSV and JSON lines stream; the text table holds its rows (callers bound them)."""
    if output:
        return _output_file(output, schema, batches)
    if fmt == "jsonl":
        return _write_jsonl(batches, out)
    if fmt == "csv":
        return _stream_csv(schema, batches, out)
    result = pa.Table.from_batches(list(batches), schema=schema)
    print(format_table(result), file=out)
    return result.num_rows


def rows_note(n: int) -> str:
    return f"({n:,} row{'s' if n != 1 else ''})"
