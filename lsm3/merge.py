"""The merge kernel: newest version per key across runs, on whole Arrow columns.

One implementation serves the writer (deduplicating a memtable before a flush), the reader
(merge-on-read) and the compactor. It sorts only the key and ordering columns, finds the last
row of each key on the sorted index, and gathers the surviving rows with a single ``take``:
the gather of wide rows is the expensive part, so it is done once, on the rows that survive.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.schema import KIND_COLUMN, KIND_UPSERT, SEQ_COLUMN, TableSchema


def order_columns(schema: TableSchema) -> list[str]:
    """What decides which version of a key is newest: the sequence field, then the sequence."""
    seq_field = schema.sequence_field
    return [seq_field, SEQ_COLUMN] if seq_field else [SEQ_COLUMN]


def last_per_key_mask(sorted_keys: Sequence[pa.Array]) -> pa.Array:
    """True at the last row of each run of equal keys in key-sorted columns."""
    n = len(sorted_keys[0])
    if n == 0:
        return pa.array([], pa.bool_())
    differs: pa.Array | None = None
    for col in sorted_keys:
        ne = pc.not_equal(col.slice(0, n - 1), col.slice(1))
        differs = ne if differs is None else pc.or_(differs, ne)
    assert differs is not None
    return pa.concat_arrays([differs, pa.array([True])])


def newest_indices(table: pa.Table, schema: TableSchema, drop_deletes: bool) -> pa.Array:
    """Row indices of the newest version of each key, in key order."""
    keys = list(schema.primary_key)
    sort_cols = keys + order_columns(schema)
    sort_keys = [(c, "ascending") for c in sort_cols]
    idx = pc.sort_indices(table.select(sort_cols), sort_keys=sort_keys)
    sorted_keys = [pc.take(table.column(k), idx).combine_chunks() for k in keys]
    keep = last_per_key_mask(sorted_keys)
    if drop_deletes:
        kinds = pc.take(table.column(KIND_COLUMN), idx)
        keep = pc.and_(keep, pc.equal(kinds, KIND_UPSERT))
    return pc.filter(idx, keep)


def merge_runs(
    tables: Sequence[pa.Table],
    schema: TableSchema,
    *,
    drop_deletes: bool,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Merge runs (each with the key, ordering and kind columns) into one key-sorted table.

    ``drop_deletes`` removes keys whose newest version is a delete: right for readers, and for
    compaction only when the output is the oldest data for its key range. ``columns`` selects
    the output columns (default: all).
    """
    if not tables:
        raise ValueError("merge_runs needs at least one (possibly empty) table")
    nonempty = [t for t in tables if t.num_rows] or [tables[0]]
    table = pa.concat_tables(nonempty) if len(nonempty) > 1 else nonempty[0]
    keep = newest_indices(table, schema, drop_deletes)
    if columns is not None:
        table = table.select(list(columns))
    return table.take(keep)


def drop_deleted(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """For a single run (already one row per key): hide deletes and project. A table without
    the row-kind column holds no deletes (its file has none)."""
    if KIND_COLUMN not in table.column_names:
        return table.select(list(columns)) if columns is not None else table
    if table.num_rows and pc.any(pc.not_equal(table.column(KIND_COLUMN), KIND_UPSERT)).as_py():
        table = table.filter(pc.equal(table.column(KIND_COLUMN), KIND_UPSERT))
    return table.select(list(columns)) if columns is not None else table
