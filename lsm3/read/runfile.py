"""Sorted run files: write one Parquet run and read it back, verified.

A run holds at most one row per key, sorted by the primary key, with two hidden columns: the
sequence number (``_lsm3_seq``) and the row kind (``_lsm3_kind``: 0 upsert, 1 delete). Its
manifest entry carries size and CRC-32 so a reader never returns data from a damaged or swapped
file: fetching a run's bytes and checking them lives in ``lsm3.read.runbytes``, the cached index
of runs that lookups use in ``lsm3.read.runindex``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lsm3.errors import CorruptDataFile, SizeMismatch
from lsm3.format.evolution import SCHEMAS, projection
from lsm3.format.keys import storage_values
from lsm3.format.metadata import DataFile
from lsm3.format.schema import KIND_COLUMN, KIND_UPSERT, SEQ_COLUMN, TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.runbytes import (
    ChecksumThread,
    check_checksum,
    checksum_of,
    fetch_row_groups,
    fetch_sized,
    footer_checksum_of,
    footer_verified,
    row_groups_span,
)
from lsm3.read.runbytes import fetch_verified as fetch_verified  # importable from here too


def partition_dir(names: tuple[str, ...], values: tuple[Any, ...]) -> str:
    """``name=value/`` segments (values percent-encoded) for a partition, or ''."""
    parts = []
    for name, value in zip(names, values, strict=True):
        text = value.hex() if isinstance(value, bytes) else str(value)
        parts.append(f"{quote(name, safe='')}={quote(text, safe='')}")
    return "".join(p + "/" for p in parts)


def data_file_path(schema: TableSchema, partition: tuple[Any, ...], bucket: int) -> str:
    where = partition_dir(schema.partition_by, partition)
    return f"data/{where}bucket-{bucket}/{uuid.uuid4().hex}.parquet"


class _BodySink:
    """Where the Parquet writer puts a run: one ``bytearray`` that grows as it is written and
    is handed over without a copy.

    ``pa.BufferOutputStream`` doubles its buffer as it grows, so encoding a 70 MB run held a
    128 MB buffer plus the 64 MB one being copied out of; a list of written chunks joined at
    the end holds the run twice. A ``bytearray`` over-allocates by about an eighth as it
    grows, and is resized in place where the allocator can."""

    def __init__(self) -> None:
        self._body = bytearray()
        self.closed = False

    def write(self, data: Any) -> int:
        self._body += data
        return len(data)

    def tell(self) -> int:
        return len(self._body)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def getvalue(self) -> pa.Buffer:
        """The run's bytes (the sink takes no more writes: the buffer shares its memory)."""
        body, self._body = self._body, bytearray()
        return pa.py_buffer(body)


@dataclass
class EncodedRun:
    """A run serialised and described, ready to upload."""

    body: pa.Buffer
    file: DataFile


class RunWriter:
    """Writes one run incrementally: key-sorted, key-disjoint chunks appended in key order.

    The compactor streams merged sections into it and starts a new file when ``size`` passes
    its target; ``encode_run`` is the one-shot case.
    """

    def __init__(
        self,
        schema: TableSchema,
        *,
        level: int,
        partition: tuple[Any, ...],
        bucket: int,
        path: str | None = None,
        run_id: str = "",
        row_group_rows: int | None = None,
    ) -> None:
        """``row_group_rows``: rows per Parquet row group (default: the table's option)."""
        self.schema = schema
        self.run_id = run_id
        self.row_group_rows = row_group_rows or schema.option("row_group_rows")
        self.level = level
        self.partition = partition
        self.bucket = bucket
        self.path = path or data_file_path(schema, partition, bucket)
        self._sink = _BodySink()
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0
        self._deletes = 0
        self._min_key: tuple[Any, ...] | None = None
        self._max_key: tuple[Any, ...] = ()
        self._min_seq: int | None = None
        self._max_seq: int | None = None

    @property
    def size(self) -> int:
        """Bytes encoded so far (row groups still buffered in the writer are not counted)."""
        return self._sink.tell()

    def write(self, rows: pa.Table) -> None:
        n = rows.num_rows
        if n == 0:
            return
        file_schema = self.schema.file_schema()
        if rows.schema != file_schema:
            rows = rows.cast(file_schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                pa.PythonFile(self._sink, mode="w"),
                rows.schema,
                compression=self.schema.option(
                    "level0_compression" if self.level == 0 else "compression"
                ),
                use_dictionary=dictionary_columns(rows, self.schema),
                write_page_checksum=True,
                sorting_columns=[
                    pq.SortingColumn(rows.schema.get_field_index(k))
                    for k in self.schema.primary_key
                ],
            )
        self._writer.write_table(rows, row_group_size=self.row_group_rows)
        keys = self.schema.primary_key
        if self._min_key is None:
            self._min_key = tuple(
                storage_values(rows.column(k).slice(0, 1))[0].as_py() for k in keys
            )
        self._max_key = tuple(
            storage_values(rows.column(k).slice(n - 1, 1))[0].as_py() for k in keys
        )
        seq = pc.min_max(rows.column(SEQ_COLUMN))
        lo, hi = int(seq["min"].as_py()), int(seq["max"].as_py())
        self._min_seq = lo if self._min_seq is None else min(self._min_seq, lo)
        self._max_seq = hi if self._max_seq is None else max(self._max_seq, hi)
        # Rows that are not plain upserts: tombstones, and reset rows of merge engines.
        kinds = rows.column(KIND_COLUMN)
        self._deletes += int(pc.sum(pc.not_equal(kinds, KIND_UPSERT)).as_py() or 0)
        self.rows += n

    def finish(self) -> EncodedRun:
        if self._writer is None or self._min_key is None:
            raise ValueError("a run needs at least one row")
        self._writer.close()
        body = self._sink.getvalue()
        assert self._min_seq is not None and self._max_seq is not None
        file = DataFile(
            path=self.path,
            level=self.level,
            partition=self.partition,
            bucket=self.bucket,
            min_key=self._min_key,
            max_key=self._max_key,
            min_seq=self._min_seq,
            max_seq=self._max_seq,
            seq_offset=0,
            rows=self.rows,
            deletes=self._deletes,
            size=body.size,
            checksum=checksum_of(body),
            footer_checksum=footer_checksum_of(body),
            schema_id=self.schema.schema_id,
            created_ms=time.time_ns() // 1_000_000,
            run_id=self.run_id,
        )
        return EncodedRun(body, file)


def encode_run(
    rows: pa.Table,
    schema: TableSchema,
    *,
    level: int,
    partition: tuple[Any, ...],
    bucket: int,
    path: str | None = None,
    run_id: str = "",
) -> EncodedRun:
    """Serialise ``rows`` (sorted by key, one row per key, file-schema columns) as a run."""
    writer = RunWriter(
        schema, level=level, partition=partition, bucket=bucket, path=path, run_id=run_id
    )
    writer.write(rows)
    return writer.finish()


_DICTIONARY_SAMPLE = 4096


def dictionary_columns(rows: pa.Table, schema: TableSchema) -> list[str]:
    """Columns worth dictionary encoding: repetitive in a sample of the first rows.

    Dictionary encoding of high-cardinality values (ids, random payloads) costs about a third
    of the write time and then falls back to plain encoding anyway, so it is chosen per run.
    """
    sample = rows.slice(0, _DICTIONARY_SAMPLE)
    n = sample.num_rows
    chosen = []
    for name in rows.column_names:
        if name in schema.primary_key or name.startswith("_lsm3_"):
            continue
        col = sample.column(name)
        if pa.types.is_nested(col.type) or pa.types.is_null(col.type):
            continue
        try:
            distinct = pc.count_distinct(col).as_py()
        except pa.ArrowNotImplementedError:
            continue
        if n and distinct <= n // 4:
            chosen.append(name)
    return chosen


class OpenRun:
    """A verified run held in memory, read (in whole or by row group) through ``read_schema``.

    Columns are asked for by their name in ``read_schema``; a file written with an older
    schema version is mapped onto it by field id (see ``lsm3.format.evolution``).
    """

    def __init__(
        self,
        store: ObjectStore,
        f: DataFile,
        read_schema: TableSchema,
        footer: pq.FileMetaData | None = None,
    ) -> None:
        """Fetch the whole run and check its size and CRC; or, given its ``footer`` (already
        checked against ``footer_checksum``, see ``lsm3.read.runindex``), fetch nothing now and
        read the row groups of each ``read`` later with one ranged request, each page
        checked against its CRC, so that memory holds what is read rather than the whole
        file."""
        self.file = f
        self.file_schema = (
            read_schema if f.schema_id == read_schema.schema_id else SCHEMAS.get(store, f.schema_id)
        )
        self.read_schema = read_schema
        self._store = store
        self._buffer: pa.Buffer | None = None
        self._crc: ChecksumThread | None = None  # the whole-file CRC, computed while decoding
        try:
            self._pq: pq.ParquetFile | None = None  # over the whole run, when fetched whole
            if footer is None:
                self._buffer = fetch_sized(store, f)
                if footer_verified(self._buffer, f):
                    # The footer is checked, so parsing it is safe; the CRC of the whole run
                    # runs on another core while the first read decodes, and that read
                    # returns no row before it matches (``_verified``). Checked first, it
                    # held back decoding by ~12 ms per 74 MB run.
                    self._crc = ChecksumThread(self._buffer)
                else:
                    check_checksum(f, checksum_of(self._buffer))
                self._pq = pq.ParquetFile(pa.BufferReader(self._buffer))
                footer = self._pq.metadata
            self._metadata = footer
            self.num_row_groups = footer.num_row_groups
            names = footer.schema.to_arrow_schema().names
        except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
            # ValueError covers a column name that is not UTF-8 (UnicodeDecodeError)
            raise CorruptDataFile(f"data file {f.path} is not valid Parquet: {exc}") from None
        expected = self.file_schema.file_schema().names
        if names != expected:
            raise CorruptDataFile(
                f"data file {f.path} has the columns {names}, but schema {f.schema_id} says "
                f"{expected}; it was not written by an lsm3 writer of this table"
            )

    def read(
        self,
        columns: list[str],
        row_groups: list[int] | None = None,
        use_threads: bool = True,
        span: Future[pq.ParquetFile] | None = None,
    ) -> pa.Table:
        """``columns`` of the run (of ``row_groups``, default all); ``use_threads``: decode
        columns in parallel (off when the caller already reads several runs in parallel);
        ``span``: the bytes of ``row_groups`` of a ranged run being fetched (``fetch_span`` on
        another thread), so that a caller can fetch ahead of decoding; its failures are
        reported as those of a fetch made here."""
        constant = self._constant_columns(columns)
        if constant:
            stored = [c for c in columns if c not in constant]
            table = self.read(stored, row_groups, use_threads, span)
            return with_constants(table, columns, constant)
        proj = projection(self.file_schema, self.read_schema, columns)
        sources = list(proj.sources)
        try:
            if row_groups is None and self._buffer is not None:
                # the dataset reader decodes row groups and columns in parallel: about 15%
                # faster than ParquetFile.read on a whole run
                t = pq.read_table(
                    pa.BufferReader(self._buffer), columns=sources, use_threads=use_threads
                )
            elif self._pq is not None:
                t = self._pq.read_row_groups(row_groups, columns=sources, use_threads=use_threads)
            else:  # a ranged run: the requested row groups, fetched as one span
                groups = list(range(self.num_row_groups)) if row_groups is None else row_groups
                source = span.result() if span is not None else self.fetch_span(groups)
                t = source.read_row_groups(groups, columns=sources, use_threads=use_threads)
            self._verified()
            return with_effective_seq(proj.apply(t), self.file.seq_offset)
        except SizeMismatch as exc:
            raise CorruptDataFile(
                f"data file {self.file.path} does not have the size its manifest entry says "
                f"({exc}); refusing to read it"
            ) from None
        except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
            self._verified()  # a damaged run: say so by its checksum
            raise CorruptDataFile(
                f"data file {self.file.path} cannot be decoded as its schema says: {exc}"
            ) from None

    def _verified(self) -> None:
        """Wait for the whole-file CRC started when the run was fetched, and refuse the run
        if it disagrees with the manifest entry."""
        if self._crc is not None:
            actual = self._crc.result()
            self._crc = None
            check_checksum(self.file, actual)

    @property
    def metadata(self) -> pq.FileMetaData:
        return self._metadata

    def fetch_span(self, row_groups: list[int]) -> pq.ParquetFile:
        """The bytes of ``row_groups`` (contiguous in the file) in one ranged GET, opened for
        decoding (see :func:`lsm3.read.runbytes.fetch_row_groups`)."""
        return fetch_row_groups(self._store, self.file, self._metadata, row_groups)

    def span_of(self, row_groups: list[int]) -> tuple[int, int]:
        """The byte range ``[lo, hi)`` of the file that holds the column chunks of
        ``row_groups``, checked to lie inside the file."""
        return row_groups_span(self.file, self._metadata, row_groups)

    def _constant_columns(self, columns: list[str]) -> dict[str, tuple[int, pa.Field]]:
        return manifest_constants(self.file, self.read_schema, columns)


def manifest_constants(
    f: DataFile, read_schema: TableSchema, columns: Sequence[str]
) -> dict[str, tuple[int, pa.Field]]:
    """Hidden columns among ``columns`` whose every value the manifest entry of ``f`` already
    states, so they need no decoding: the sequence number of a run written by one flush
    (min_seq == max_seq; the commit's offset included) and the row kind of a run without
    deletes. Decoding them costs as much as a user column (37 of 100 ms for a 500k-row run of
    the benchmark's five columns; 0.3 of 1.4 ms for a lookup's row group); at least one
    column is still read, for the row count."""
    known: dict[str, int] = {}
    if f.min_seq == f.max_seq:
        known[SEQ_COLUMN] = f.effective_min_seq
    if f.deletes == 0:
        known[KIND_COLUMN] = KIND_UPSERT
    found = {c: known[c] for c in columns if c in known}
    if not found or len(found) == len(columns):
        return {}
    fields = read_schema.file_schema()
    return {c: (v, fields.field(c)) for c, v in found.items()}


def with_constants(
    table: pa.Table, columns: Sequence[str], constant: dict[str, tuple[int, pa.Field]]
) -> pa.Table:
    """``table`` with the ``constant`` columns filled in, in the order of ``columns``."""
    n = table.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for name in columns:
        if name in constant:
            value, field = constant[name]
            arrays.append(pa.array(np.full(n, value, dtype=field.type.to_pandas_dtype())))
            fields.append(field)
        else:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def with_effective_seq(t: pa.Table, seq_offset: int) -> pa.Table:
    """Stored sequence numbers plus the file's offset (assigned at commit time)."""
    if seq_offset == 0 or SEQ_COLUMN not in t.column_names:
        return t
    i = t.schema.get_field_index(SEQ_COLUMN)
    return t.set_column(
        i, t.schema.field(i), pc.add(t.column(i), pa.scalar(seq_offset, pa.int64()))
    )
