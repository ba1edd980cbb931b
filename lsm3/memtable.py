"""The memtable: a writer's buffered records, and turning them into sorted runs.

Records arrive as Arrow tables already cast to the table schema. Each gets its arrival order
(in the sequence column) and a row kind. A flush sorts everything by key and order, keeps the
newest record per key (deletes included: a tombstone must reach storage), and cuts the result
into one run per (partition, bucket). A run holds each key once, so its rows need no order
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

from lsm3.keys import bucket_of, storage_values
from lsm3.merge import newest_indices
from lsm3.schema import KIND_COLUMN, SEQ_COLUMN, TableSchema


class Memtable:
    """Buffered records of one writer between flushes; ``flushes`` counts the flushes of the
    current commit (each one local sequence number)."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self._tables: list[pa.Table] = []
        self.nbytes = 0
        self.rows = 0
        self.next_seq = 0  # arrival order of the next record
        self.flushes = 0

    def add(self, rows: pa.Table, kinds: pa.Array) -> None:
        """Append ``rows`` (all user columns, table types) with their row kinds."""
        n = rows.num_rows
        if n == 0:
            return
        seq = pa.array(np.arange(self.next_seq, self.next_seq + n, dtype=np.int64))
        self.next_seq += n
        table = rows.append_column(SEQ_COLUMN, seq).append_column(KIND_COLUMN, kinds)
        self._tables.append(table.cast(self.schema.file_schema()))
        self.nbytes += table.nbytes
        self.rows += n

    def drain(self) -> pa.Table | None:
        """Everything buffered, as one table with one chunk per column; the memtable is then
        empty (``next_seq`` stays).

        A flush gathers rows in key order from all over the memtable, and Arrow's ``take``
        on a string column of many chunks first concatenates the whole column, on every call
        (a 140 MB transient per 64k rows gathered). So the columns are made contiguous here,
        once, one at a time: each column's chunks are freed as soon as it is copied, and the
        copy costs at most one column beyond the memtable."""
        if not self._tables:
            return None
        tables, self._tables = self._tables, []
        schema = tables[0].schema
        columns: list[pa.Array | pa.ChunkedArray] = list(pa.concat_tables(tables).columns)
        del tables
        for i, column in enumerate(columns):
            columns[i] = column.combine_chunks()
            del column
        self.nbytes = 0
        self.rows = 0
        return pa.Table.from_arrays(columns, schema=schema)

    def restore(self, table: pa.Table) -> None:
        """Put back what ``drain`` returned (a flush that failed to upload keeps its rows)."""
        self._tables.insert(0, table)
        self.nbytes += table.nbytes
        self.rows += table.num_rows

    def end_commit(self) -> None:
        self.next_seq = 0
        self.flushes = 0


def with_constant_seq(rows: pa.Table, seq: int) -> pa.Table:
    """``rows`` with every stored sequence number set to ``seq`` (one flush, one number)."""
    i = rows.schema.get_field_index(SEQ_COLUMN)
    constant = pa.array(np.full(rows.num_rows, seq, dtype=np.int64))
    return rows.set_column(i, rows.schema.field(i), constant)


def split_runs(
    table: pa.Table, schema: TableSchema
) -> Iterator[tuple[tuple[Any, ...], int, pa.Array]]:
    """Newest record per key, sorted, cut into runs: (partition, bucket, row indices into
    ``table``). The caller gathers each run's rows (``table.take``), so the expensive gather
    of wide rows can run in parallel, one piece per worker."""
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
