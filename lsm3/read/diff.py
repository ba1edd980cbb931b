"""The complete changes between two sets of values of the same keys.

Every changelog producer ends here: ``none`` compares reads of a commit's keys before and
after it, ``lookup`` the values at the parent with and without the commit's runs,
``full_compaction`` two full results. Rows are matched by key positions (a binary search
of sorted integer keys, else a hash join of the key columns), and the output is gathered
with one ``take`` over both inputs, in key order, each ``-U`` right before its ``+U``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.keys import storage_values
from lsm3.format.schema import TableSchema

ROW_KIND = "_row_kind"
_KINDS = pa.array(["+I", "-U", "+U", "-D"], pa.string())
_I, _UB, _UA, _D = 0, 1, 2, 3


def compare(
    before: pa.Table, after: pa.Table, schema: TableSchema, drop_unchanged: bool = True
) -> pa.Table:
    """Complete changes from ``before`` to ``after`` (whole values of some keys, one row per
    key each): ``+I`` new key, ``-U`` old values then ``+U`` new ones for a key in both,
    ``-D`` old values for a key gone; with ``drop_unchanged`` nothing for a key whose values
    are equal (null equals null). Rows in key order."""
    keys = list(schema.primary_key)
    names = schema.arrow.names
    values = pa.schema([f.with_nullable(True) for f in schema.arrow])
    before = before.select(names).cast(values)
    after = after.select(names).cast(values)
    if not before.num_rows and _sorted_by_key(after, keys):  # all new, in order: no gather
        kinds = pa.repeat(pa.scalar("+I", pa.string()), after.num_rows)
        return after.append_column(ROW_KIND, kinds)  # no copy: the writer encodes its chunks
    a_idx, b_idx = _match(before, after, keys)
    both = (a_idx >= 0) & (b_idx >= 0)
    old, new = b_idx[both], a_idx[both]
    if drop_unchanged and len(old):
        changed = ~_equal_rows(before, after, old, new, [c for c in names if c not in keys])
        old, new = old[changed], new[changed]
    inserted, deleted = a_idx[b_idx < 0], b_idx[a_idx < 0]
    n = before.num_rows
    # Positions in before ++ after, and each row's kind and the rank that puts -U first.
    source = np.concatenate([inserted + n, old, new + n, deleted])
    pieces = ((inserted, _I), (old, _UB), (new, _UA), (deleted, _D))
    kind = np.concatenate([np.full(len(p), k, dtype=np.int8) for p, k in pieces])
    both_tables = pa.concat_tables([before, after])
    order = _key_order(both_tables, keys, source, kind)
    rows = both_tables.take(pa.array(source[order]))
    kinds = _KINDS.take(pa.array(kind[order]))
    return rows.combine_chunks().append_column(ROW_KIND, kinds)


def _sorted_by_key(rows: pa.Table, keys: list[str]) -> bool:
    if len(keys) != 1 or not pa.types.is_integer(storage_values(rows.column(keys[0])).type):
        return False
    key = storage_values(rows.column(keys[0])).to_numpy()
    return bool(np.all(key[1:] > key[:-1]))


def _match(before: pa.Table, after: pa.Table, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the keys of either table: (positions in ``after``, in ``before``),
    -1 where a table lacks the key."""
    if len(keys) == 1 and pa.types.is_integer(storage_values(after.column(keys[0])).type):
        a = storage_values(after.column(keys[0])).to_numpy()
        b = storage_values(before.column(keys[0])).to_numpy()
        b_sorted = np.argsort(b, kind="stable")
        bs = b[b_sorted]
        at = np.minimum(np.searchsorted(bs, a), max(len(bs) - 1, 0))
        found = bs[at] == a if len(bs) else np.zeros(len(a), dtype=bool)
        a_side = np.arange(len(a), dtype=np.int64)
        b_side = np.where(found, b_sorted[at] if len(bs) else -1, -1).astype(np.int64)
        seen = np.zeros(len(b), dtype=bool)
        seen[b_side[found]] = True
        gone = np.flatnonzero(~seen).astype(np.int64)
        return (
            np.concatenate([a_side, np.full(len(gone), -1, dtype=np.int64)]),
            np.concatenate([b_side, gone]),
        )
    # A hash join of positions, not values: the join takes no nested payload columns.
    a_pos = after.select(keys).append_column("__a", pa.array(np.arange(after.num_rows)))
    b_pos = before.select(keys).append_column("__b", pa.array(np.arange(before.num_rows)))
    joined = a_pos.join(b_pos, keys, join_type="full outer")
    a_idx = joined.column("__a").combine_chunks().fill_null(-1).to_numpy()
    b_idx = joined.column("__b").combine_chunks().fill_null(-1).to_numpy()
    return a_idx.astype(np.int64), b_idx.astype(np.int64)


def _equal_rows(
    before: pa.Table, after: pa.Table, old: np.ndarray, new: np.ndarray, columns: list[str]
) -> np.ndarray:
    same = np.ones(len(old), dtype=bool)
    old_at, new_at = pa.array(old), pa.array(new)
    for c in columns:
        a, b = before.column(c).take(old_at), after.column(c).take(new_at)
        same &= np.asarray(_same(a, b).to_numpy(zero_copy_only=False), dtype=bool)
    return same


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """Element-wise "equal or both null"."""
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    try:
        equal = pc.fill_null(pc.equal(a, b), False)
    except pa.ArrowNotImplementedError:  # nested types: compared as Python values
        equal = pa.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)])
    return pc.or_(both_null, equal)


def _key_order(rows: pa.Table, keys: list[str], source: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """The order of the change rows: by key, ``-U`` before ``+U``."""
    rank = (kind != _UB).astype(np.int8)
    if len(keys) == 1 and pa.types.is_integer(storage_values(rows.column(keys[0])).type):
        key = storage_values(rows.column(keys[0])).to_numpy()[source]
        return np.lexsort((rank, key))
    at = pa.array(source)
    table = pa.table({**{k: rows.column(k).take(at) for k in keys}, "__rank": rank})
    sort_keys = [*((k, "ascending") for k in keys), ("__rank", "ascending")]
    return pc.sort_indices(table, sort_keys=sort_keys).to_numpy()
