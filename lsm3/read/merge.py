"""The merge kernel: newest version per key across runs, on whole Arrow columns.

One implementation serves the writer (deduplicating a memtable before a flush), the reader
(merge-on-read) and the compactor. It sorts only the key and ordering columns, finds the last
row of each key on the sorted index, and gathers the surviving rows with a single ``take``:
the gather of wide rows is the expensive part, so it is done once, on the rows that survive.
That is the ``deduplicate`` merge engine; the other engines fold a key's versions instead
(:mod:`lsm3.read.fold`), and ``merge_runs`` hands their runs to that fold.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.keys import storage_values
from lsm3.format.schema import (
    KIND_COLUMN,
    KIND_DELETE,
    KIND_RESET,
    KIND_UPSERT,
    SEQ_COLUMN,
    TableSchema,
)
from lsm3.read.fold import fold_versions


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
        keep = pc.and_(keep, pc.not_equal(kinds, KIND_DELETE))
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
    if not schema.engine.is_deduplicate:
        newest_first = _newest_first_if_disjoint(nonempty, schema)
        if newest_first is not None and drop_deletes and schema.engine.name == "first_row":
            return _first_rows(pa.concat_tables(newest_first), schema.primary_key[0], columns)
        index: np.ndarray | None = None
        if newest_first is not None:  # oldest first, a stable sort by key is (key, order)
            nonempty = newest_first[::-1]
            key = storage_values(pa.concat_tables(nonempty).column(schema.primary_key[0]))
            index = np.argsort(key.to_numpy(), kind="stable")
        table = pa.concat_tables(nonempty) if len(nonempty) > 1 else nonempty[0]
        return fold_versions(table, schema, drop_deletes=drop_deletes, columns=columns, index=index)
    newest_first = _newest_first_if_disjoint(nonempty, schema)
    if newest_first is not None:
        table = pa.concat_tables(newest_first)
        keep = _first_per_integer_key(table, schema, drop_deletes)
    else:
        table = pa.concat_tables(nonempty) if len(nonempty) > 1 else nonempty[0]
        keep = newest_indices(table, schema, drop_deletes)
    if columns is not None:
        table = table.select(list(columns))
    return table.take(keep)


def _newest_first_if_disjoint(
    tables: Sequence[pa.Table], schema: TableSchema
) -> list[pa.Table] | None:
    """The runs newest first, when that order alone decides every key: one integer key
    column, versions ordered by sequence number only (no sequence field), and sequence ranges
    that do not interleave (each run wholly newer than the next), as for the runs a writer
    flushes and universal compaction leaves. Runs with the same sequence range (the pieces one
    flush or one compaction output is cut into) may share a place if their key ranges are
    disjoint, which each table's first and last key show (every run is sorted by key).
    Otherwise None: the general merge sorts by sequence number too."""
    keys = schema.primary_key
    if len(tables) < 2 or len(keys) != 1 or schema.sequence_field:
        return None
    key_type = storage_values(tables[0].column(keys[0])).type
    if not pa.types.is_integer(key_type):
        return None
    by_range: dict[tuple[int, int], list[pa.Table]] = {}
    for t in tables:
        bounds = pc.min_max(t.column(SEQ_COLUMN))
        by_range.setdefault((bounds["max"].as_py(), bounds["min"].as_py()), []).append(t)
    ranges = sorted(by_range, reverse=True)
    for (_, newer_min), (older_max, _) in itertools.pairwise(ranges):
        if newer_min <= older_max:
            return None
    ordered: list[pa.Table] = []
    for seq_range in ranges:
        pieces = sorted(by_range[seq_range], key=lambda t: _key_at(t, keys[0], 0))
        for a, b in itertools.pairwise(pieces):
            if _key_at(a, keys[0], -1) >= _key_at(b, keys[0], 0):
                return None
        ordered.extend(pieces)
    return ordered


def _key_at(table: pa.Table, key: str, i: int) -> int:
    """The integer key of row ``i`` (negative: from the end) of a non-empty table."""
    column = storage_values(table.column(key))
    return int(column[i if i >= 0 else len(column) + i].as_py())


def _first_per_integer_key(table: pa.Table, schema: TableSchema, drop_deletes: bool) -> pa.Array:
    """Row indices, in key order, of the first row of each key in ``table``: runs concatenated
    newest first, each sorted by its integer key. A stable sort keeps equal keys in run order,
    and on a concatenation of sorted runs it only merges them (numpy's stable sort of
    integers is a timsort): about a fifth of the general sort by key and sequence."""
    keys = storage_values(table.column(schema.primary_key[0])).to_numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.empty(len(order), dtype=bool)
    first[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    keep = order[first]
    if drop_deletes:
        kinds = table.column(KIND_COLUMN).to_numpy()
        keep = keep[kinds[keep] != KIND_DELETE]
    return pa.array(keep)


def _first_rows(table: pa.Table, key: str, columns: Sequence[str] | None) -> pa.Table:
    """first_row's merged rows, deletes dropped, of runs concatenated newest first, each
    sorted by its integer ``key``: per key, deduplicate's pick at the other end of the key's
    versions, and one gather as deduplicate's. The sequence column is the newest version's
    and every row is a whole value (kind 0), as ``fold_versions`` gives."""
    names = list(columns) if columns is not None else table.column_names
    picks, newest = _oldest_live_per_integer_key(table, key, SEQ_COLUMN in names)
    merged = table.select(names).take(pa.array(picks))
    for i, name in enumerate(names):
        field = table.schema.field(name)
        if name == SEQ_COLUMN:
            merged = merged.set_column(i, field, table.column(name).take(pa.array(newest)))
        elif name == KIND_COLUMN:
            merged = merged.set_column(i, field, pa.array(np.zeros(len(picks), np.int8)))
    return merged


def _oldest_live_per_integer_key(
    table: pa.Table, key: str, with_newest: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """For runs concatenated newest first, each sorted by its integer ``key``: in key order,
    for each key whose newest record is not a delete, the row of its oldest upsert after its
    newest barrier (a delete; or a reset row, then the reset row itself, which holds the
    fold from its delete on), and (``with_newest``) the row of its newest version. The
    stable sort keeps a key's versions newest first, so the pick is a key's last version
    unless the key has a barrier: only the (few) barriers are looked at."""
    keys = storage_values(table.column(key)).to_numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    last = np.empty(len(order), dtype=bool)
    last[-1:] = True
    np.not_equal(sorted_keys[:-1], sorted_keys[1:], out=last[:-1])
    ends = np.flatnonzero(last)
    picks = order[ends]
    starts = np.zeros(len(ends), dtype=np.int64)
    starts[1:] = ends[:-1] + 1
    if KIND_COLUMN in table.column_names:
        kinds = table.column(KIND_COLUMN).to_numpy()[order]
        barriers = np.flatnonzero(kinds != KIND_UPSERT)
        if barriers.size:
            newest = np.ones(barriers.size, dtype=bool)  # a key's first barrier is its newest
            np.not_equal(sorted_keys[barriers[1:]], sorted_keys[barriers[:-1]], out=newest[1:])
            barriers = barriers[newest]
            segment = np.searchsorted(ends, barriers)
            reset = kinds[barriers] == KIND_RESET
            picks[segment] = order[np.where(reset, barriers, np.maximum(barriers - 1, 0))]
            deleted = segment[~reset & (barriers == starts[segment])]  # no upsert after it
            if deleted.size:
                live = np.ones(len(ends), dtype=bool)
                live[deleted] = False
                picks, starts = picks[live], starts[live]
    return picks, order[starts] if with_newest else None


def drop_deleted(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """For a single run (already one row per key): hide deletes and project. A table without
    the row-kind column holds no deletes (its file has none)."""
    if KIND_COLUMN not in table.column_names:
        return table.select(list(columns)) if columns is not None else table
    if table.num_rows and pc.any(pc.equal(table.column(KIND_COLUMN), KIND_DELETE)).as_py():
        table = table.filter(pc.not_equal(table.column(KIND_COLUMN), KIND_DELETE))
    return table.select(list(columns)) if columns is not None else table
