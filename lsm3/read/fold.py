"""The fold of the merge engines other than deduplicate, on whole Arrow columns.

Versions are sorted by (key, order); each key's versions form a contiguous *segment*. What
counts is the suffix of a segment that starts at its last barrier: a delete (the suffix after
it) or a reset row (the suffix from it, docs/FORMAT.md section 15). Every engine folds that
suffix column by column with numpy segment reductions (``reduceat``) or Arrow's hash
aggregation, so no Python code runs per row or per key.

The result has one row per key: the folded values, the order (``_lsm3_seq`` and the sequence
field) of the key's newest version, and a row kind saying how the row combines with older
data: 0 (a partial fold: combine), 2 (reset: replaces everything older) or 1 (delete). With
``drop_deletes`` (readers, and compaction output that is the oldest data of its range) deleted
keys are dropped and every row is a whole value (kind 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.engines import EngineSpec
from lsm3.format.keys import storage_values
from lsm3.format.schema import (
    KIND_COLUMN,
    KIND_DELETE,
    KIND_RESET,
    KIND_UPSERT,
    SEQ_COLUMN,
    TableSchema,
)

#: Aggregate functions computed by Arrow's hash aggregation: function -> Arrow's name.
_HASH_AGGREGATES = {
    "sum": "sum",
    "count": "sum",  # writers store 1 per non-null value: the count is their sum
    "product": "product",
    "min": "min",
    "max": "max",
    "bool_and": "all",
    "bool_or": "any",
    "listagg": "list",
    "collect": "list",
}


class _Segments:
    """The key segments of versions sorted by (key, order), and each one's relevant suffix."""

    def __init__(self, kinds: np.ndarray, last_of_key: np.ndarray) -> None:
        n = len(kinds)
        self.ends = np.flatnonzero(last_of_key) + 1
        self.starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        self.count = len(self.ends)
        self.pos = np.arange(n, dtype=np.int64)
        self.segment = np.repeat(np.arange(self.count), self.ends - self.starts)
        barrier = np.where(kinds != KIND_UPSERT, self.pos, -1)
        last_barrier = np.maximum.reduceat(barrier, self.starts) if n else barrier
        has_barrier = last_barrier >= 0
        barrier_kind = kinds[np.maximum(last_barrier, 0)] if n else kinds
        self.first = np.where(
            has_barrier,
            np.where(barrier_kind == KIND_RESET, last_barrier, last_barrier + 1),
            self.starts,
        )
        self.last = self.ends - 1
        self.live = self.first < self.ends
        self.kind = np.where(
            self.live, np.where(has_barrier, KIND_RESET, KIND_UPSERT), KIND_DELETE
        ).astype(np.int8)
        #: Rows that take part in their key's fold.
        self.relevant = self.pos >= self.first[self.segment]

    def last_where(self, mask: np.ndarray) -> np.ndarray:
        """Per segment, the last relevant row where ``mask`` holds (-1: none)."""
        cand = np.where(mask & self.relevant, self.pos, -1)
        return np.maximum.reduceat(cand, self.starts)

    def first_where(self, mask: np.ndarray) -> np.ndarray:
        """Per segment, the first relevant row where ``mask`` holds (-1: none)."""
        big = len(self.pos)
        cand = np.where(mask & self.relevant, self.pos, big)
        found = np.minimum.reduceat(cand, self.starts)
        return np.where(found == big, -1, found)


def _take(column: pa.Array, rows: np.ndarray) -> pa.Array:
    """``column[rows]`` with null where ``rows`` is -1."""
    missing = rows < 0
    index = pa.array(np.where(missing, 0, rows), mask=missing if missing.any() else None)
    return pc.take(column, index)


def _valid(column: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


class _Versions:
    """The input rows seen in (key, order) order without gathering them: a column is read
    at sorted positions through the sort index, and only the rows a fold keeps (or the
    values an aggregate needs) are gathered, once."""

    def __init__(self, table: pa.Table, index: pa.Array) -> None:
        self.table = table
        self.index = np.asarray(index.to_numpy(), dtype=np.int64)
        self._columns: dict[str, pa.Array] = {}

    def column(self, name: str) -> pa.Array:
        found = self._columns.get(name)
        if found is None:
            found = self._columns[name] = self.table.column(name).combine_chunks()
        return found

    def sorted_numpy(self, name: str) -> np.ndarray:
        """A column without nulls (key, order, kind) in sorted order, as numpy."""
        return np.asarray(self.column(name).to_numpy(zero_copy_only=False))[self.index]

    def take(self, name: str, rows: np.ndarray) -> pa.Array:
        """Column ``name`` at sorted positions ``rows`` (null where -1)."""
        return _take(self.column(name), np.where(rows >= 0, self.index[np.maximum(rows, 0)], -1))

    def valid(self, name: str) -> np.ndarray:
        return _valid(self.column(name))[self.index]


def fold_versions(
    table: pa.Table,
    schema: TableSchema,
    *,
    drop_deletes: bool,
    columns: Sequence[str] | None = None,
    index: pa.Array | None = None,
) -> pa.Table:
    """One row per key of ``table`` (versions with the key, ordering and kind columns),
    folded by the table's merge engine; see the module docstring. ``columns`` selects the
    output (default: every column of ``table``); ``index``, if the caller has it, is the
    (key, order) sort of ``table``'s rows."""
    spec = schema.engine
    keys = list(schema.primary_key)
    order = [schema.sequence_field, SEQ_COLUMN] if schema.sequence_field else [SEQ_COLUMN]
    out_names = list(columns) if columns is not None else table.column_names
    if table.num_rows == 0:
        return table.select(out_names)
    if index is None:
        sort_cols = keys + order
        index = pc.sort_indices(
            table.select(sort_cols), sort_keys=[(c, "ascending") for c in sort_cols]
        )
    versions = _Versions(table, index)
    n = table.num_rows
    if KIND_COLUMN in table.column_names:
        kinds = versions.sorted_numpy(KIND_COLUMN).astype(np.int8)
    else:
        kinds = np.zeros(n, dtype=np.int8)
    last_of_key = np.zeros(n, dtype=bool)
    last_of_key[-1] = True
    for k in keys:
        col = pc.take(table.column(k), index).combine_chunks()
        ne = pc.not_equal(col.slice(0, n - 1), col.slice(1))
        last_of_key[:-1] |= np.asarray(ne.to_numpy(zero_copy_only=False), dtype=bool)
    seg = _Segments(kinds, last_of_key)
    chosen = np.flatnonzero(seg.live) if drop_deletes else np.arange(seg.count)
    groups = _group_columns(spec, versions, seg, out_names)
    arrays = []
    for name in out_names:
        if name == KIND_COLUMN:
            kind = np.zeros(seg.count, np.int8) if drop_deletes else seg.kind
            arrays.append(pa.array(kind[chosen], pa.int8()))
        elif name in keys or name in order:
            arrays.append(versions.take(name, seg.last[chosen]))
        else:
            folded = groups.get(name)
            if folded is None:
                folded = _fold_column(spec, name, versions, seg)
            arrays.append(folded if len(chosen) == seg.count else pc.take(folded, pa.array(chosen)))
    fields = [table.schema.field(name) for name in out_names]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _group_columns(
    spec: EngineSpec, versions: _Versions, seg: _Segments, names: Sequence[str]
) -> dict[str, pa.Array]:
    """partial_update's sequence groups: each group's columns come together from the row with
    the highest group sequence (the newest such row on ties); rows whose group sequence is
    null do not touch the group."""
    out: dict[str, pa.Array] = {}
    for seq_column, members in spec.sequence_groups.items():
        wanted = [m for m in members if m in names]
        if not wanted:
            continue
        rows = np.flatnonzero(versions.valid(seq_column) & seg.relevant)
        winner = np.full(seg.count, -1, dtype=np.int64)
        if len(rows):
            g = storage_values(versions.column(seq_column))
            g_values = pc.take(g, pa.array(versions.index[rows])).to_numpy()
            ranked = rows[np.lexsort((rows, g_values, seg.segment[rows]))]
            segs = seg.segment[ranked]
            is_last = np.ones(len(ranked), dtype=bool)
            is_last[:-1] = segs[1:] != segs[:-1]
            winner[segs[is_last]] = ranked[is_last]
        for m in wanted:
            out[m] = versions.take(m, winner)
    return out


def _fold_column(spec: EngineSpec, name: str, versions: _Versions, seg: _Segments) -> pa.Array:
    """One value column folded per segment (null for a deleted key)."""
    if spec.name == "first_row":
        return versions.take(name, np.where(seg.live, seg.first, -1))
    function = spec.functions.get(name, "last_non_null_value")
    if function == "last_value":
        return versions.take(name, np.where(seg.live, seg.last, -1))
    if function == "first_value":
        return versions.take(name, np.where(seg.live, seg.first, -1))
    if function == "last_non_null_value":
        return versions.take(name, seg.last_where(versions.valid(name)))
    if function == "first_non_null_value":
        return versions.take(name, seg.first_where(versions.valid(name)))
    return _hash_aggregate(function, versions, name, seg, spec.delimiters.get(name, ","))


#: Numeric aggregates done with numpy segment reductions: function -> (ufunc, neutral value).
_NUMPY_AGGREGATES = {
    "sum": (np.add, 0),
    "count": (np.add, 0),
    "product": (np.multiply, 1),
    "min": (np.minimum, None),
    "max": (np.maximum, None),
    "bool_and": (np.logical_and, True),
    "bool_or": (np.logical_or, False),
}


def _numpy_aggregate(
    function: str, versions: _Versions, name: str, seg: _Segments
) -> pa.Array | None:
    """A numeric or bool aggregate as one ``reduceat`` over the key segments (None: the
    column's type is not one numpy folds exactly, e.g. decimals or strings)."""
    column = versions.column(name)
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return None
    ufunc, neutral = _NUMPY_AGGREGATES[function]
    if neutral is None:  # min/max: a value that never wins
        info = np.finfo if pa.types.is_floating(t) else np.iinfo
        dtype = column.type.to_pandas_dtype()
        neutral = info(dtype).max if function == "min" else info(dtype).min
    take = seg.relevant & versions.valid(name)
    values = np.asarray(pc.fill_null(column, neutral).to_numpy(zero_copy_only=False))
    values = values[versions.index]
    if function in ("sum", "count", "product") and pa.types.is_integer(t):
        values = values.astype(np.int64)  # accumulate wide; narrowed (checked) below
    values = np.where(take, values, neutral)
    folded = ufunc.reduceat(values, seg.starts)
    present = np.add.reduceat(take.astype(np.int64), seg.starts) > 0
    result = pa.array(folded, mask=~present)
    return result if result.type == t else pc.cast(result, t)


def _hash_aggregate(
    function: str, versions: _Versions, name: str, seg: _Segments, delimiter: str
) -> pa.Array:
    if function in _NUMPY_AGGREGATES:
        folded = _numpy_aggregate(function, versions, name, seg)
        if folded is not None:
            return folded
    column = versions.column(name)
    rows = np.flatnonzero(seg.relevant & versions.valid(name))
    values = pc.take(column, pa.array(versions.index[rows]))
    segments = seg.segment[rows]
    if function == "collect":
        present, result = _concatenate_lists(values, segments, column.type)
    else:
        grouped = pa.table({"g": pa.array(segments), "v": values})
        name = _HASH_AGGREGATES[function]
        agg = grouped.group_by("g", use_threads=False).aggregate([("v", name)])
        result = agg.column(f"v_{name}").combine_chunks()
        present = np.asarray(agg.column("g").to_numpy(), dtype=np.int64)
        if function == "listagg":
            result = pc.binary_join(result, delimiter)
        elif result.type != column.type:
            result = pc.cast(result, column.type)
    where = np.full(seg.count, -1, dtype=np.int64)
    where[present] = np.arange(len(present))
    return _take(result, where)


def _concatenate_lists(
    lists: pa.Array, segments: np.ndarray, list_type: pa.DataType
) -> tuple[np.ndarray, pa.Array]:
    """``collect``: per segment, its (non-null, in order) lists concatenated. The lists of
    one segment are adjacent, so each segment's values are one slice of the flattened
    values: only the offsets are computed."""
    lengths = np.asarray(pc.list_value_length(lists).to_numpy(), dtype=np.int64)
    present, first = np.unique(segments, return_index=True)
    totals = np.add.reduceat(lengths, first) if len(first) else lengths[:0]
    offsets = np.concatenate([[0], np.cumsum(totals)])
    large = pa.types.is_large_list(list_type)
    array_type = pa.LargeListArray if large else pa.ListArray
    offset_type = pa.int64() if large else pa.int32()
    flat = lists.flatten()
    return present, array_type.from_arrays(pa.array(offsets, offset_type), flat).cast(list_type)
