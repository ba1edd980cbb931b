"""Input files of the ``lsm3`` command, read as a stream of Arrow batches for the writer.

Parquet is read row group by row group, CSV block by block and JSON lines block by block, so
``lsm3 write`` holds one block (plus the writer's memtable) in memory, not the whole file.
CSV columns of the table are read with the table's types (``"007"`` stays a string) and with
Arrow's null handling for every type: an unquoted field listed in ``null_values`` (by default
Arrow's list: empty, ``NA``, ``N/A``, ``NULL``, ``null``, ``NaN``, ...) is null, a quoted one
(``""``, ``"NA"``) is the string itself. That is what ``lsm3 scan --output x.csv`` writes
(nulls as empty fields, strings quoted), so a scan to CSV written back is lossless.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.cli.args import CliError, UsageError, format_type

#: File formats by name ending, for input files and ``--output`` alike.
FORMATS_BY_EXTENSION = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

#: Rows per Parquet batch and bytes per CSV / JSON block read at a time.
BATCH_ROWS = 131_072
BLOCK_BYTES = 16 << 20
#: Bytes of a CSV or JSON lines file whose types ``create --like`` infers.
SAMPLE_BYTES = 2 << 20

NULL_VALUES_HELP = (
    "CSV: comma-separated field values read as null (default: Arrow's list: empty, NA, N/A, "
    'NULL, null, NaN, nan, #N/A, ...; \'\' for empty fields only); quoted fields ("", "NA") '
    "are always strings"
)


def default_null_values() -> list[str]:
    import pyarrow.csv as pacsv

    values: list[str] = pacsv.ConvertOptions().null_values
    return values


def parse_null_values(text: str | None) -> list[str]:
    """``--null-values``: a comma-separated list (``''``: only empty fields are null)."""
    if text is None:
        return default_null_values()
    return [v.strip() for v in text.split(",")]


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
    if ext not in FORMATS_BY_EXTENSION:
        raise UsageError(
            f"cannot tell the format of {path!r} from its extension; pass --format "
            "parquet|csv|jsonl"
        )
    return FORMATS_BY_EXTENSION[ext]


@dataclass(frozen=True)
class InputFile:
    """One input file and how to read it."""

    path: str  # '-' for stdin
    fmt: str  # parquet | csv | jsonl
    null_values: Sequence[str]

    def batches(
        self, schema: pa.Schema | None, block_bytes: int = BLOCK_BYTES
    ) -> Iterator[pa.RecordBatch]:
        """The file's rows, a batch at a time; CSV columns named in ``schema`` get its types
        (``None``: every type inferred, as for ``create --like``)."""
        if self.path != "-" and not os.path.exists(self.path):
            raise CliError(f"input file {self.path!r} does not exist")
        try:
            if self.fmt == "parquet":
                yield from self._parquet()
            elif self.fmt == "csv":
                yield from self._csv(schema, block_bytes)
            elif self.fmt == "jsonl":
                yield from self._jsonl(block_bytes)
            else:
                raise UsageError(f"unknown input format {self.fmt!r}")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise CliError(self._explain(exc, schema)) from None

    def sample_schema(self) -> pa.Schema:
        """The schema of the file's first block (``lsm3 create --like``): Parquet's own,
        inferred from the first :data:`SAMPLE_BYTES` of CSV and JSON lines."""
        if self.fmt == "parquet" and self.path != "-":
            import pyarrow.parquet as pq

            schema: pa.Schema = pq.read_schema(self.path)
            return schema
        for batch in self.batches(None, block_bytes=SAMPLE_BYTES):
            return batch.schema
        raise CliError(f"{self.path} holds no columns to take a schema from")

    # -- formats ----------------------------------------------------------------------------

    def _source(self) -> Any:
        return sys.stdin.buffer if self.path == "-" else self.path

    def _parquet(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        source = pa.BufferReader(sys.stdin.buffer.read()) if self.path == "-" else self.path
        yield from pq.ParquetFile(source).iter_batches(batch_size=BATCH_ROWS)

    def _csv_options(self, schema: pa.Schema | None) -> tuple[Any, dict[str, pa.DataType]]:
        import pyarrow.csv as pacsv

        # Zoned timestamps as text first: they may come with or without an offset.
        fields = list(schema or [])
        zoned = {f.name: f.type for f in fields if pa.types.is_timestamp(f.type) and f.type.tz}
        types = {f.name: pa.string() if f.name in zoned else f.type for f in fields}
        convert = pacsv.ConvertOptions(
            column_types=types,
            null_values=list(self.null_values),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        return convert, zoned

    def _csv(self, schema: pa.Schema | None, block_bytes: int) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pacsv

        convert, zoned = self._csv_options(schema)
        read = pacsv.ReadOptions(block_size=block_bytes)
        with pacsv.open_csv(self._source(), read_options=read, convert_options=convert) as r:
            for batch in r:
                if zoned:
                    batch = _with_zoned(batch, zoned)
                yield batch

    def _jsonl(self, block_bytes: int) -> Iterator[pa.RecordBatch]:
        import pyarrow.json as pajson

        read = pajson.ReadOptions(block_size=block_bytes)
        if hasattr(pajson, "open_json"):
            with pajson.open_json(self._source(), read_options=read) as r:
                yield from r
        else:  # pragma: no cover - pyarrow without a streaming JSON reader
            yield from pajson.read_json(self._source(), read_options=read).to_batches()

    # -- errors -----------------------------------------------------------------------------

    def _explain(self, exc: Exception, schema: pa.Schema | None) -> str:
        """Arrow's message in the user's terms: the column by name and the line of the value."""
        text = " ".join(str(exc).split())
        m = _CSV_CONVERSION.search(text)
        if self.fmt != "csv" or m is None:
            return f"cannot read {self.path} as {self.fmt}: {text}"
        index, type_name, value = int(m.group(1)), m.group(2), m.group(3)
        name = self._column_name(index)
        line = self._line_of(name, value) if name else None
        where = f"{self.path} line {line}" if line else self.path
        column = f"column {name!r}" if name else f"column {index + 1}"
        hint = (
            f"the table stores {column} as {format_type(schema.field(name).type)}"
            if schema is not None and name and name in schema.names
            else "fix the value"
        )
        return f"{where}: {column}: {value!r} is not a valid {type_name}; {hint}" + (
            "" if value in self.null_values else "; for a null, leave the field empty"
        )

    def _column_name(self, index: int) -> str | None:
        if self.path == "-":
            return None
        import csv

        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            names = next(csv.reader(f), [])
        return names[index] if 0 <= index < len(names) else None

    def _line_of(self, name: str, value: str) -> int | None:
        """The line of the first field ``value`` in column ``name`` (1 is the header)."""
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(include_columns=[name], column_types={name: pa.string()})
        try:
            column = pacsv.read_csv(self.path, convert_options=convert).column(0)
        except (pa.ArrowInvalid, OSError):
            return None
        found = pc.index(column, pa.scalar(value, pa.string())).as_py()
        return None if found < 0 else found + 2


_CSV_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]+): "
    r"invalid value '(.*)'$"
)

_OFFSET_SUFFIX = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"


def _with_zoned(batch: pa.RecordBatch, zoned: dict[str, pa.DataType]) -> pa.RecordBatch:
    columns = [
        parse_zoned(col, zoned[name]) if name in zoned else col
        for name, col in zip(batch.schema.names, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def parse_zoned(column: pa.Array, t: pa.DataType) -> pa.Array:
    """Text to a zoned timestamp: values with an offset as given, values without one as UTC."""
    none = pa.scalar(None, pa.string())
    has_offset = pc.match_substring_regex(column, _OFFSET_SUFFIX)
    with_offset = pc.cast(pc.if_else(has_offset, column, none), t)
    naive = pc.cast(pc.if_else(has_offset, none, column), pa.timestamp(t.unit))
    return pc.if_else(has_offset, with_offset, pc.cast(naive, t))


def check_keys_not_empty(
    batch: pa.RecordBatch, primary_key: Sequence[str], source: InputFile, first_row: int
) -> None:
    """Refuse an empty string as a key value (usually a missing value in a CSV file): the row
    would be stored under the key ``""``. ``first_row``: the batch's first row in the file."""
    for name in primary_key:
        if name not in batch.schema.names:
            continue
        column = batch.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        found = pc.index(column, pa.scalar("", column.type)).as_py()
        if found >= 0:
            row = first_row + found
            line = f"line {row + 2}" if source.fmt == "csv" else f"row {row + 1}"
            where = f"{source.path} {line}"
            raise CliError(
                f"{where}: the key column {name!r} is an empty "
                "string; fill it in, or pass --allow-empty-key to store '' as a key"
            )
