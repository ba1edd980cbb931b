"""The memtable: a writer's buffered records, and turning them into sorted runs.

Records arrive as Arrow tables already cast to the table schema. Each gets its arrival order
(in the sequence column) and a row kind. A flush sorts everything by key and order, keeps the
newest record per key (deletes included: a tombstone must reach storage; under another merge
engine, the fold of the key's records: :func:`fold_buffered`), and cuts the result into one
run per (partition, bucket). A run holds each key once, so its rows need no order
among themselves: the writer stores one local sequence number per flush in every row (a
constant column encodes to almost nothing), and the commit's ``seq_count`` is its number of
flushes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.keys import bucket_of, storage_values
from lsm3.format.schema import KIND_COLUMN, SEQ_COLUMN, TableSchema
from lsm3.read.fold import fold_records
from lsm3.read.merge import newest_indices

#: Small appended tables are joined into chunks of about this size, so a flush gathers from
#: few chunks however small the writes were (the join's transient is one chunk).
CHUNK_BYTES = 16 * 1024 * 1024


class BufferedRows:
    """A memtable's records as drained for a flush: tables of one chunk per column, each about
    ``CHUNK_BYTES``, never concatenated.

    Why not one table: Arrow's ``take`` on a string column of many chunks concatenates the
    whole column on every call, and concatenating it once up front holds the largest column
    twice at the flush's peak (150 MB of a 256 MB memtable of the benchmark's rows).
    ``take`` here gathers chunk by chunk instead, so a flush holds the memtable plus the rows
    it is gathering.

    ``records``: for the rows a merge engine's flush stores (:func:`fold_buffered`), the
    buffered records they were folded from."""

    def __init__(self, tables: list[pa.Table], records: BufferedRows | None = None) -> None:
        self.tables = tables
        self.records = records
        self.offsets = np.cumsum([0, *(t.num_rows for t in tables)], dtype=np.int64)
        self.num_rows = int(self.offsets[-1])
        self.nbytes = sum(t.nbytes for t in tables)

    def view(self) -> pa.Table:
        """All rows as one (chunked, zero-copy) table: for sorting and reading columns."""
        return pa.concat_tables(self.tables)

    def take(self, indices: pa.Array) -> pa.Table:
        """Rows at ``indices`` (positions in ``view()``), in that order, one chunk per column."""
        positions = indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        chunk_of = np.searchsorted(self.offsets, positions, side="right") - 1
        if len(positions):
            first, last = int(chunk_of.min()), int(chunk_of.max())
            span = self.tables[first : last + 1]
            # A few small tables (one chunk and the rows a merge engine's flush folded) are
            # taken from at once: Arrow joins them, a transient of about one chunk.
            if first == last or sum(t.nbytes for t in span) <= 2 * CHUNK_BYTES:
                joined = span[0] if first == last else pa.concat_tables(span)
                return joined.take(pa.array(positions - self.offsets[first]))
        # Gather from each chunk the rows it holds (grouped by chunk, in request order inside
        # each), then put the groups back in request order with one take of the small result.
        by_chunk = np.argsort(chunk_of, kind="stable")
        grouped_chunks = chunk_of[by_chunk]
        cuts = np.flatnonzero(np.diff(grouped_chunks)) + 1
        parts = []
        for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(positions)], strict=True):
            c = int(grouped_chunks[start])
            local = positions[by_chunk[start:end]] - self.offsets[c]
            parts.append(self.tables[c].take(pa.array(local)))
        grouped = pa.concat_tables(parts).combine_chunks()
        restore = np.empty_like(by_chunk)
        restore[by_chunk] = np.arange(len(by_chunk))
        return grouped.take(pa.array(restore))


class Memtable:
    """Buffered records of one writer between flushes; ``flushes`` counts the flushes of the
    current commit (each one local sequence number)."""

    def __init__(self, schema: TableSchema, first_flush: int = 0) -> None:
        self.schema = schema
        self.first_flush = first_flush
        self._chunks: list[pa.Table] = []  # one chunk per column, about CHUNK_BYTES each
        self._small: list[pa.Table] = []  # appended tables not yet joined into a chunk
        self._small_bytes = 0
        self.nbytes = 0
        self.rows = 0
        self.next_seq = 0  # arrival order of the next record
        self.flushes = first_flush

    def add(self, rows: pa.Table, kinds: pa.Array) -> None:
        """Append ``rows`` (all user columns, table types) with their row kinds."""
        n = rows.num_rows
        if n == 0:
            return
        seq = pa.array(np.arange(self.next_seq, self.next_seq + n, dtype=np.int64))
        self.next_seq += n
        table = rows.append_column(SEQ_COLUMN, seq).append_column(KIND_COLUMN, kinds)
        table = table.cast(self.schema.file_schema())
        self.nbytes += table.nbytes
        self.rows += n
        for batch in table.to_batches():  # one chunk per column each, without copying
            part = pa.Table.from_batches([batch])
            if part.nbytes >= CHUNK_BYTES:
                self._join_small()
                self._chunks.append(part)
                continue
            self._small.append(part)
            self._small_bytes += part.nbytes
            if self._small_bytes >= CHUNK_BYTES:
                self._join_small()

    def _join_small(self) -> None:
        if self._small:
            self._chunks.append(pa.concat_tables(self._small).combine_chunks())
        self._small = []
        self._small_bytes = 0

    def drain(self) -> BufferedRows | None:
        """Everything buffered; the memtable is then empty (``next_seq`` stays)."""
        self._join_small()
        if not self._chunks:
            return None
        rows = BufferedRows(self._chunks)
        self._chunks = []
        self.nbytes = 0
        self.rows = 0
        return rows

    def restore(self, rows: BufferedRows) -> None:
        """Put back what ``drain`` returned (a flush that failed to upload keeps its rows):
        the records, not a fold of them."""
        rows = rows.records or rows
        self._chunks[:0] = rows.tables
        self.nbytes += rows.nbytes
        self.rows += rows.num_rows

    def end_commit(self) -> None:
        self.next_seq = 0
        self.flushes = self.first_flush


def with_constant_seq(rows: pa.Table, seq: int) -> pa.Table:
    """``rows`` with every stored sequence number set to ``seq`` (one flush, one number)."""
    i = rows.schema.get_field_index(SEQ_COLUMN)
    constant = pa.array(np.full(rows.num_rows, seq, dtype=np.int64))
    return rows.set_column(i, rows.schema.field(i), constant)


def fold_buffered(rows: BufferedRows, schema: TableSchema) -> tuple[BufferedRows, pa.Array]:
    """A merge engine's flush: the rows to store, one per key (a key's one upsert record as
    it is, the fold of the others' records: :func:`lsm3.read.fold.fold_records`), as the
    buffered records followed by the folded rows, and the positions of the stored rows in
    key order, for :func:`split_runs`. Nothing is gathered but the records of keys that fold,
    so the flush gathers each stored row once, as deduplicate's does."""
    folded, keep = fold_records(rows.view(), schema, take=rows.take)
    tables = [*rows.tables, folded] if folded.num_rows else rows.tables
    return BufferedRows(tables, records=rows), pa.array(keep)


def split_runs(
    table: pa.Table, schema: TableSchema, keep: pa.Array | None = None
) -> Iterator[tuple[tuple[Any, ...], int, pa.Array]]:
    """Newest record per key, sorted, cut into runs: (partition, bucket, row indices into
    ``table``). The caller gathers each run's rows (``table.take``), so the expensive gather
    of wide rows can run in parallel, one piece per worker. ``keep``: the rows to store, one
    per key in key order, if the caller chose them (:func:`fold_buffered`)."""
    if keep is None:
        keep = newest_indices(table, schema, drop_deletes=False)
    if schema.buckets == 1 and not schema.partition_by:
        yield (), 0, keep
        return
    key_cols = [pc.take(table.column(k), keep) for k in schema.primary_key]
    buckets = bucket_of(key_cols, schema.buckets)
    parts = [storage_values(pc.take(table.column(p), keep)) for p in schema.partition_by]
    group_cols: dict[str, Any] = {f"p{i}": c for i, c in enumerate(parts)}
    group_cols["bucket"] = pa.array(buckets)
    groups = pa.table(group_cols)
    # Stable sort by (partition, bucket): rows stay in key order inside each group.
    order = pc.sort_indices(groups, sort_keys=[(c, "ascending") for c in groups.column_names])
    indices = pc.take(keep, order)
    groups = groups.take(order)
    n = len(indices)
    boundaries = np.zeros(n, dtype=bool)
    if n:
        boundaries[0] = True
    for name in groups.column_names:
        col = groups.column(name).combine_chunks()
        if len(col) > 1:
            ne = pc.not_equal(col.slice(1), col.slice(0, len(col) - 1))
            boundaries[1:] |= ne.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(boundaries).tolist()
    ends = [*starts[1:], n]
    for start, end in zip(starts, ends, strict=True):
        partition = tuple(groups.column(f"p{i}")[start].as_py() for i in range(len(parts)))
        yield (
            partition,
            int(groups.column("bucket")[start].as_py()),
            indices.slice(start, end - start),
        )
