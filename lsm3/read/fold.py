"""The fold of the merge engines other than deduplicate, on whole Arrow columns.

Versions are sorted by (key, order); each key's versions form a contiguous *segment*. What
counts is the suffix of a segment that starts at its last barrier: a delete (the suffix after
it) or a reset row (the suffix from it, docs/FORMAT.md section 15). Most output columns hold
one version's value per key (the key and order columns, first_row, last_value, and
last/first_non_null_value wherever the newest/first value is not null), so they are
*picked*: one sorted position per key, and one gather per distinct pick for all the columns
that share it, as deduplicate gathers its survivors once. Only aggregates fold, with numpy
segment reductions (``reduceat``) or Arrow's hash aggregation, so no Python code runs per row
or per key. A flush folds only the keys with more than one record (:func:`fold_records`).

The result has one row per key: the folded values, the order (``_lsm3_seq`` and the sequence
field) of the key's newest version, and a row kind saying how the row combines with older
data: 0 (a partial fold: combine), 2 (reset: replaces everything older) or 1 (delete). With
``drop_deletes`` (readers, and compaction output that is the oldest data of its range) deleted
keys are dropped and every row is a whole value (kind 0).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import cached_property
from typing import Any

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
    """The key segments of versions sorted by (key, order), and each one's relevant suffix.

    Built from the segment ends and the few barrier rows (deletes and resets) alone, so the
    setup costs no pass over every row; the per-row views (``segment``, ``relevant``) are
    built only for the folds that need them (null-skipping picks, aggregates)."""

    def __init__(self, kinds: np.ndarray, ends: np.ndarray) -> None:
        self.n = len(kinds)
        self.ends = ends
        self.count = len(ends)
        self.starts = np.zeros(self.count, dtype=np.int64)
        self.starts[1:] = ends[:-1]
        self.last = ends - 1
        first = self.starts.copy()
        kind = np.zeros(self.count, dtype=np.int8)
        barriers = np.flatnonzero(kinds != KIND_UPSERT)
        #: The sorted positions of delete rows (never part of a fold).
        self.deletes = barriers[kinds[barriers] == KIND_DELETE]
        if len(barriers):
            segment = np.searchsorted(ends, barriers, side="right")
            is_last = np.ones(len(barriers), dtype=bool)
            is_last[:-1] = segment[1:] != segment[:-1]
            last_barrier, where = barriers[is_last], segment[is_last]
            first[where] = np.where(
                kinds[last_barrier] == KIND_RESET, last_barrier, last_barrier + 1
            )
            kind[where] = KIND_RESET
        self.first = first
        self.live = first < ends
        kind[~self.live] = KIND_DELETE
        self.kind = kind
        #: Segments whose relevant suffix starts after their first version.
        self.cut = np.flatnonzero(first > self.starts)

    def live_or_null(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (one sorted position per segment) with -1 where the key is deleted."""
        return rows if self.cut.size == 0 else np.where(self.live, rows, -1)

    @cached_property
    def segment(self) -> np.ndarray:
        """Each row's segment."""
        return np.repeat(np.arange(self.count), self.ends - self.starts)

    @cached_property
    def irrelevant(self) -> np.ndarray:
        """The rows before their segment's relevant suffix (few: those before a barrier)."""
        return _ranges(self.starts[self.cut], self.first[self.cut] - self.starts[self.cut])

    @cached_property
    def relevant(self) -> np.ndarray:
        """Rows that take part in their key's fold."""
        relevant = np.ones(self.n, dtype=bool)
        relevant[self.irrelevant] = False
        return relevant


def _take(column: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``column[rows]`` with null where ``rows`` is -1."""
    missing = rows < 0
    if not missing.any():
        return pc.take(column, pa.array(rows))
    return pc.take(column, pa.array(np.where(missing, 0, rows), mask=missing))


def _valid(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


class _Versions:
    """The input rows seen in (key, order) order without gathering them: a column is read
    at sorted positions through the sort index, and only the rows a fold keeps (or the
    values an aggregate needs) are gathered, once."""

    def __init__(self, table: pa.Table, index: np.ndarray) -> None:
        self.table = table
        self.index = index

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def nulls_outside(self, name: str, deletes: np.ndarray) -> bool:
        """Whether column ``name`` holds a null in a row other than the delete rows
        ``deletes`` (sorted positions). Stored deletes carry nulls, so a column is rarely
        null-free; when its only nulls are in deletes, which no fold takes, every version a
        fold takes has a value. Costs a gather of the few delete rows' validity bits (of a
        bit-packed mask: the column itself is not concatenated), not a validity pass."""
        column = self.table.column(name)
        if column.null_count == 0:
            return False
        if column.null_count > len(deletes):
            return True
        at_deletes = pc.take(pc.is_null(column), pa.array(self.index[deletes]))
        return column.null_count > pc.sum(at_deletes).as_py()

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Sorted positions ``rows`` as input rows (-1 stays -1)."""
        picked = self.index[np.maximum(rows, 0)]
        return picked if rows.size == 0 or rows.min() >= 0 else np.where(rows >= 0, picked, -1)

    def take_columns(self, names: Sequence[str], rows: np.ndarray) -> list[pa.ChunkedArray]:
        """Columns ``names`` at sorted positions ``rows`` (null where -1), one gather."""
        at = self.positions(rows)
        missing = at < 0
        index = pa.array(np.where(missing, 0, at), mask=missing) if missing.any() else pa.array(at)
        return self.table.select(list(names)).take(index).columns

    def valid(self, name: str) -> np.ndarray:
        return _valid(self.column(name))[self.index]

    def sorted_numpy(self, name: str, fill: Any = None) -> np.ndarray:
        """A column in sorted order as numpy (nulls as ``fill``)."""
        column = self.column(name)
        if column.null_count:
            column = pc.fill_null(column, fill)
        return np.asarray(column.to_numpy())[self.index]


def _segment_ends(table: pa.Table, keys: Sequence[str], index: np.ndarray) -> np.ndarray:
    """One past the last sorted position of each key."""
    n = len(index)
    differs = np.zeros(n, dtype=bool)
    differs[-1] = True
    key_type = storage_values(table.column(keys[0])).type
    if len(keys) == 1 and (pa.types.is_integer(key_type) or pa.types.is_floating(key_type)):
        values = storage_values(table.column(keys[0])).to_numpy()[index]
        np.not_equal(values[:-1], values[1:], out=differs[:-1])
    else:
        for k in keys:
            col = pc.take(table.column(k), pa.array(index)).combine_chunks()
            ne = pc.not_equal(col.slice(0, n - 1), col.slice(1))
            differs[:-1] |= np.asarray(ne.to_numpy(zero_copy_only=False), dtype=bool)
    return np.flatnonzero(differs) + 1


def fold_versions(
    table: pa.Table,
    schema: TableSchema,
    *,
    drop_deletes: bool,
    columns: Sequence[str] | None = None,
    index: pa.Array | np.ndarray | None = None,
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
    sort_index = np.asarray(
        index if isinstance(index, np.ndarray) else index.to_numpy(), dtype=np.int64
    )
    versions = _Versions(table, sort_index)
    if KIND_COLUMN in table.column_names:
        kinds = versions.sorted_numpy(KIND_COLUMN).astype(np.int8, copy=False)
    else:
        kinds = np.zeros(table.num_rows, dtype=np.int8)
    seg = _Segments(kinds, _segment_ends(table, keys, sort_index))
    chosen = np.flatnonzero(seg.live) if drop_deletes and seg.cut.size else None
    # Every output column but an aggregate holds one version's value per key: the newest
    # (key and order columns, last_value), the first of the fold (first_row, first_value),
    # or the newest (first) version holding a value (last/first_non_null_value, almost
    # always the newest/first version itself). Columns that pick the same versions are
    # gathered together, once; a reader drops deleted keys, so its picks need no nulls.
    picks: dict[str, np.ndarray] = {
        "newest": seg.last,
        "first": seg.first if drop_deletes else seg.live_or_null(seg.first),
        "newest live": seg.last if drop_deletes else seg.live_or_null(seg.last),
    }
    if drop_deletes:  # a key's columns are equal in all its versions
        key_pick = "first" if spec.name == "first_row" else "newest live"
    else:
        key_pick = "newest"
    gather: dict[str, list[str]] = {}
    folded: dict[str, pa.Array] = {}
    groups = _group_columns(spec, versions, seg, out_names)
    for name in out_names:
        if name == KIND_COLUMN:
            kind = np.zeros(seg.count, np.int8) if drop_deletes else seg.kind
            folded[name] = pa.array(kind if chosen is None else kind[chosen], pa.int8())
            continue
        if name in keys:
            pick = key_pick
        elif name in order:
            pick = "newest" if not drop_deletes or spec.name == "first_row" else "newest live"
        elif name in groups:
            pick, picks[pick] = groups[name]
        else:
            found = _picked_version(spec, name, versions, seg)
            if found is None:
                folded[name] = _fold_column(spec, name, versions, seg, chosen)
                continue
            pick, rows = found
            if rows is not None:
                picks[pick] = rows
        gather.setdefault(pick, []).append(name)
    for pick, names in gather.items():
        rows = picks[pick]
        gathered = versions.take_columns(names, rows if chosen is None else rows[chosen])
        folded.update(zip(names, gathered, strict=True))
    fields = [table.schema.field(name) for name in out_names]
    return pa.Table.from_arrays([folded[n] for n in out_names], schema=pa.schema(fields))


def _picked_version(
    spec: EngineSpec, name: str, versions: _Versions, seg: _Segments
) -> tuple[str, np.ndarray | None] | None:
    """Which version a value column takes whole: the name of a common pick ("newest live",
    "first"), or the column's own pick with its rows; None if the column is aggregated."""
    if spec.name == "first_row":
        return "first", None
    function = spec.functions.get(name, "last_non_null_value")
    if function in ("last_value", "first_value"):
        return ("newest live" if function == "last_value" else "first"), None
    if function not in ("last_non_null_value", "first_non_null_value"):
        return None
    newest = function == "last_non_null_value"
    common = "newest live" if newest else "first"
    if not versions.nulls_outside(name, seg.deletes):
        return common, None
    rows = _newest_valid(seg, _valid(versions.column(name)), versions.index, newest)
    return (common, None) if rows is None else (f"column {name}", rows)


def _newest_valid(
    seg: _Segments, valid: np.ndarray, index: np.ndarray, newest: bool
) -> np.ndarray | None:
    """Per key, the newest (``newest``, else the first) version of its fold where ``valid``
    (a mask of the input rows) holds, -1 if none; None if that is the newest (first) version
    of every live key. Only the keys whose newest (first) value is null are searched."""
    rows = seg.last if newest else np.minimum(seg.first, seg.n - 1)
    need = np.flatnonzero(seg.live & ~valid[index[rows]])
    if need.size == 0:
        return None
    lengths = seg.last[need] - seg.first[need] + 1
    candidates = _ranges(seg.first[need], lengths)
    offsets = np.cumsum(lengths) - lengths
    if newest:
        found = np.maximum.reduceat(np.where(valid[index[candidates]], candidates, -1), offsets)
    else:
        big = seg.n
        found = np.minimum.reduceat(np.where(valid[index[candidates]], candidates, big), offsets)
        found[found == big] = -1
    out = np.where(seg.live, rows, -1)
    out[need] = found
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions of the ranges [start, start + length), concatenated."""
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _group_columns(
    spec: EngineSpec, versions: _Versions, seg: _Segments, names: Sequence[str]
) -> dict[str, tuple[str, np.ndarray]]:
    """partial_update's sequence groups: each group's columns come together from the row with
    the highest group sequence (the newest such row on ties); rows whose group sequence is
    null do not touch the group. Returns column -> (its group's pick, the winning rows)."""
    out: dict[str, tuple[str, np.ndarray]] = {}
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
        out.update((m, (f"group {seq_column}", winner)) for m in wanted)
    return out


def _fold_column(
    spec: EngineSpec, name: str, versions: _Versions, seg: _Segments, chosen: np.ndarray | None
) -> pa.Array:
    """One aggregated column, per segment (null for a deleted key), for the segments
    ``chosen`` (None: all)."""
    function = spec.functions[name]
    if function in _NUMPY_AGGREGATES:
        result = _numpy_aggregate(function, versions, name, seg, chosen)
        if result is not None:
            return result
    result = _hash_aggregate(function, versions, name, seg, spec.delimiters.get(name, ","))
    return result if chosen is None else pc.take(result, pa.array(chosen))


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
    function: str, versions: _Versions, name: str, seg: _Segments, chosen: np.ndarray | None
) -> pa.Array | None:
    """A numeric or bool aggregate as one ``reduceat`` over the key segments (None: the
    column's type is not one numpy folds exactly, e.g. decimals or strings). Nulls and the
    rows before a barrier count as the function's neutral value."""
    column = versions.column(name)
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return None
    ufunc, given = _NUMPY_AGGREGATES[function]
    neutral: Any = given
    if neutral is None:  # min/max: a value that never wins
        if pa.types.is_floating(t):  # infinity, not the largest finite float, which beats inf
            neutral = np.inf if function == "min" else -np.inf
        else:
            info = np.iinfo(column.type.to_pandas_dtype())
            neutral = info.max if function == "min" else info.min
    nulls_outside = versions.nulls_outside(name, seg.deletes)
    values = versions.sorted_numpy(name, fill=neutral)
    if function in ("sum", "count", "product") and pa.types.is_integer(t):
        # accumulate in 64 bits, then wrap into the column's width below (unsigned values
        # wrap into int64 and back): the same result as two's complement arithmetic in it
        values = values.astype(np.int64, copy=False)
    if seg.cut.size:
        values[seg.irrelevant] = neutral
    folded = ufunc.reduceat(values, seg.starts)
    if nulls_outside:
        present = np.logical_or.reduceat(versions.valid(name) & seg.relevant, seg.starts)
    else:  # a live key's fold has a version, and every version it takes has a value
        present = seg.live
    if chosen is not None:
        folded, present = folded[chosen], present[chosen]
    result = pa.array(folded, mask=None if present.all() else ~present)
    # An integer sum, count or product wraps around in the column's width (docs/FORMAT.md,
    # section 15): arithmetic modulo 2**bits is the one rule under which partial folds still
    # combine in any grouping, and a checked narrowing would make every read, changelog and
    # compaction of the key fail on values that writers were allowed to store.
    return result if result.type == t else pc.cast(result, t, safe=False)


def _hash_aggregate(
    function: str, versions: _Versions, name: str, seg: _Segments, delimiter: str
) -> pa.Array:
    """An aggregate by Arrow's hash aggregation (or list concatenation for ``collect``)."""
    column = versions.column(name)
    rows = np.flatnonzero(seg.relevant & versions.valid(name))
    values = pc.take(column, pa.array(versions.index[rows])).combine_chunks()
    segments = seg.segment[rows]
    if function == "collect":
        present, result = _concatenate_lists(values, segments, column.type)
    else:
        wide_sum = function == "sum" and pa.types.is_decimal(column.type)
        if wide_sum and column.type.precision <= 38:
            # sums of values below 10**38 in 76 digits cannot overflow the accumulator
            values = values.cast(pa.decimal256(76, column.type.scale))
        grouped = pa.table({"g": pa.array(segments), "v": values})
        name = _HASH_AGGREGATES[function]
        agg = grouped.group_by("g", use_threads=False).aggregate([("v", name)])
        result = agg.column(f"v_{name}").combine_chunks()
        present = np.asarray(agg.column("g").to_numpy(), dtype=np.int64)
        if function == "listagg":
            # the delimiter as a scalar of the values' type: binary_join has no kernel for
            # large_string values with a string delimiter
            result = pc.binary_join(result, pa.scalar(delimiter, result.type.value_type))
        elif wide_sum:
            result = _wrap_decimal_sums(result, column.type)
        elif result.type != column.type:
            result = pc.cast(result, column.type)
    where = np.full(seg.count, -1, dtype=np.int64)
    where[present] = np.arange(len(present))
    return _take(result, where)


def _wrap_decimal_sums(sums: pa.Array, typ: pa.DataType) -> pa.Array:
    """Decimal sums in the column's type, wrapped around its range (docs/FORMAT.md section
    15): a total beyond +-(10**p - 1) units of the scale is taken modulo 2 * 10**p - 1 into
    that range, the one rule under which partial sums combine in any grouping that never
    fails a read. Only the out-of-range sums (none in practice: new tables sum in precision
    38) are reduced in Python, exactly."""
    exact = decimal.Context(prec=200)  # the default context rounds to 28 digits
    bound = 10**typ.precision - 1
    limit = pa.scalar(exact.scaleb(Decimal(bound), -typ.scale), sums.type)
    outside = pc.or_(pc.greater(sums, limit), pc.less(sums, pc.negate(limit)))
    rows = np.flatnonzero(np.asarray(outside.fill_null(False).to_numpy(zero_copy_only=False)))
    if rows.size:
        unit = Decimal(1).scaleb(-typ.scale)
        wrapped = []
        for value in sums.take(pa.array(rows)).to_pylist():
            units = int(exact.divide(value, unit))
            units = (units + bound) % (2 * bound + 1) - bound
            wrapped.append(exact.multiply(Decimal(units), unit))
        mask = np.zeros(len(sums), dtype=bool)
        mask[rows] = True
        sums = pc.replace_with_mask(sums, pa.array(mask), pa.array(wrapped, sums.type))
    return pc.cast(sums, typ)


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


def fold_records(
    table: pa.Table, schema: TableSchema, take: Callable[[pa.Array], pa.Table] | None = None
) -> tuple[pa.Table, np.ndarray]:
    """A flush's fold of buffered records (key, ordering and kind columns included), that
    folds only the keys that need it: a key with one upsert record is stored as that record,
    the fold of one version being the version. Returns the folded rows of the other keys
    (several records, a delete, or a sequence group left unset, whose columns the fold
    clears) and, in key order, one stored row per key as positions in ``table`` followed by
    the folded rows (``table.num_rows + j`` is folded row ``j``). ``take`` gathers rows of
    ``table`` (default ``table.take``)."""
    keys = list(schema.primary_key)
    order = [schema.sequence_field, SEQ_COLUMN] if schema.sequence_field else [SEQ_COLUMN]
    n = table.num_rows
    sort_cols = keys + order
    index = np.asarray(
        pc.sort_indices(
            table.select(sort_cols), sort_keys=[(c, "ascending") for c in sort_cols]
        ).to_numpy(),
        dtype=np.int64,
    )
    if n == 0:
        return table, index
    ends = _segment_ends(table, keys, index)
    starts = np.zeros(len(ends), dtype=np.int64)
    starts[1:] = ends[:-1]
    single = ends - starts == 1
    alone = index[starts]
    if KIND_COLUMN in table.column_names:
        kinds = np.asarray(table.column(KIND_COLUMN).to_numpy())
        single &= kinds[alone] == KIND_UPSERT
    for seq_column in schema.engine.sequence_groups:
        single &= _valid(table.column(seq_column))[alone]
    to_fold = np.flatnonzero(~single)
    keep = alone
    folded = table.schema.empty_table()
    if to_fold.size:
        rows = index[_ranges(starts[to_fold], ends[to_fold] - starts[to_fold])]
        versions = take(pa.array(rows)) if take is not None else table.take(pa.array(rows))
        folded = fold_versions(
            versions, schema, drop_deletes=False, index=np.arange(len(rows), dtype=np.int64)
        )
        keep[to_fold] = n + np.arange(to_fold.size, dtype=np.int64)
    return folded, keep
