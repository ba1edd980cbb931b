"""Batched lookups: the current values of many keys at once, for the changelog: the
``lookup`` producer's writer needs the previous value of every key a commit writes, and the
changes computed under ``none`` (:mod:`lsm3.read.changes`) the values of a commit's keys
before it.

Random keys of a large commit hit every row group of every run, so probing row groups
(``lsm3.read.lookup``) saves nothing; instead each run whose key range admits the keys is
taken whole, rows are selected by one vectorised membership test of the first key column,
and the selections are merged as a reader merges. Decoded runs are kept in a bounded,
process-wide cache (runs are immutable, so entries never go stale; ``DECODED_RUNS``, 512 MiB
by default, ``lsm3.set_cache_limits(decoded_run_bytes=...)``): a writer that commits
again probes the runs it read before from memory, and decodes only the new ones, as
Paimon's lookup producer keeps local lookup files; a consumer reading commit after commit
decodes each run once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.keys import storage_values
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import KIND_COLUMN, KIND_DELETE, SEQ_COLUMN, TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.merge import merge_runs
from lsm3.read.runfile import OpenRun, with_effective_seq
from lsm3.read.runindex import DECODED_RUNS, FOOTERS

if TYPE_CHECKING:
    from lsm3.table import Table


def current_values(
    table: Table, schema: TableSchema, snap: Snapshot | None, touched: pa.Table
) -> pa.Table:
    """The visible rows at ``snap`` of the keys in ``touched`` (key columns, unique), with
    the table's columns through ``schema``."""
    # Under deduplicate only the newest version of a key counts: pick it by (key, sequence)
    # in numpy, then gather just the winners' rows, once.
    newest_only = schema.engine.is_deduplicate and schema.sequence_field is None
    selected, hits = _select(table, schema, snap, touched, newest_only)
    if hits is not None:
        return _newest(hits, schema).cast(_out_schema(schema))
    return merged_versions(selected, schema, touched)


def touched_versions(
    table: Table, schema: TableSchema, snap: Snapshot | None, touched: pa.Table
) -> list[pa.Table]:
    """The stored rows at ``snap`` (file-schema columns, effective sequence numbers, one
    table per run, not merged) that can hold the keys in ``touched``: what
    :func:`merged_versions` folds into :func:`current_values`, for a caller that must merge
    newer rows in among them (a ``sequence_field`` can order a new row before old ones)."""
    return _select(table, schema, snap, touched, False)[0]


def merged_versions(selected: list[pa.Table], schema: TableSchema, touched: pa.Table) -> pa.Table:
    """The visible rows of the keys in ``touched`` among the versions ``selected``
    (file-schema columns, effective sequence numbers), with the table's columns."""
    out_schema = _out_schema(schema)
    if not selected:
        return out_schema.empty_table()
    selected = [s.cast(selected[0].schema) for s in selected]
    found = merge_runs(selected, schema, drop_deletes=True, columns=schema.arrow.names)
    if len(schema.primary_key) > 1:  # membership of the first column over-selects keys
        found = _rows_with_keys(found, touched, list(schema.primary_key))
    return found.cast(out_schema)


def _rows_with_keys(found: pa.Table, touched: pa.Table, keys: list[str]) -> pa.Table:
    """The rows of ``found`` whose key is in ``touched``, in order. The semi join runs on
    the key columns and row positions alone: Arrow's join cannot carry list, struct or map
    columns, which a table may have beside its key."""
    probe = found.select(keys).append_column("_row", pa.array(np.arange(found.num_rows)))
    hit = probe.join(touched.select(keys), keys, join_type="left semi")
    rows = np.sort(hit.column("_row").to_numpy())
    return found.take(pa.array(rows))


def _out_schema(schema: TableSchema) -> pa.Schema:
    return pa.schema([f.with_nullable(True) for f in schema.arrow])


def _select(
    table: Table, schema: TableSchema, snap: Snapshot | None, touched: pa.Table, newest_only: bool
) -> tuple[list[pa.Table], list[tuple[pa.Table, np.ndarray]] | None]:
    """The rows of each run at ``snap`` that can hold a key of ``touched``; with
    ``newest_only`` (honoured for one integer key column) as (run rows, positions) for
    :func:`_newest` instead (the second item, None otherwise)."""
    keys = list(schema.primary_key)
    files = table.files_of(snap)
    if not files or not touched.num_rows:
        return [], None
    # One integer key column: runs are sorted by it, so a binary search of the sorted wanted
    # keys finds the rows (O(wanted log rows)) where hashing would probe every row. The
    # keys of one run (a writer's commit) are sorted and unique already.
    wanted, wanted_np = _wanted_keys(storage_values(touched.column(keys[0])), len(keys) == 1)
    search = wanted_np is not None
    bounds = pc.min_max(wanted)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    newest_only = newest_only and search
    selected: list[pa.Table] = []
    hits: list[tuple[pa.Table, np.ndarray]] = []
    for f in files:
        if f.max_key[0] < lo or f.min_key[0] > hi:
            continue
        rows, key0 = _decoded(table.store, f, schema, wanted_np)
        if wanted_np is not None and key0 is not None:
            if not len(key0):
                continue
            at = np.minimum(np.searchsorted(key0, wanted_np), len(key0) - 1)
            at = at[key0[at] == wanted_np]
            if newest_only:
                hits.append((rows, at))
            elif len(at):
                selected.append(rows.take(pa.array(at)))
            continue
        hit = rows.filter(pc.is_in(storage_values(rows.column(keys[0])), value_set=wanted))
        if hit.num_rows:
            selected.append(hit)
    return selected, hits if newest_only else None


def _wanted_keys(
    key0: pa.Array | pa.ChunkedArray, single: bool
) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray | None]:
    """The distinct values of the first key column, and (one integer key column) them
    sorted as numpy."""
    if not (single and pa.types.is_integer(key0.type)):
        return pc.unique(key0), None
    values = key0.to_numpy()
    if len(values) and np.all(values[1:] > values[:-1]):
        return key0, values
    unique = np.unique(values)
    return pa.array(unique, key0.type), unique


def _newest(hits: list[tuple[pa.Table, np.ndarray]], schema: TableSchema) -> pa.Table:
    """The newest version of each key among rows ``at`` of each run (one integer key, no
    sequence field), deleted keys dropped."""
    names = schema.arrow.names
    hits = [(rows, at) for rows, at in hits if len(at)]
    if not hits:
        return pa.schema([f.with_nullable(True) for f in schema.arrow]).empty_table()
    key0 = schema.primary_key[0]
    run = np.concatenate([np.full(len(at), i, dtype=np.int64) for i, (_, at) in enumerate(hits)])
    pos = np.concatenate([at for _, at in hits])
    col = [(rows, at) for rows, at in hits]
    key = np.concatenate([storage_values(r.column(key0)).to_numpy()[a] for r, a in col])
    seq = np.concatenate([r.column(SEQ_COLUMN).to_numpy()[a] for r, a in col])
    kind = np.concatenate([r.column(KIND_COLUMN).to_numpy()[a] for r, a in col])
    order = np.lexsort((-seq, key))  # by key, newest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    won = order[first]
    won = won[kind[won] != KIND_DELETE]
    pieces = [
        rows.select(names).take(pa.array(pos[won][run[won] == i]))
        for i, (rows, _) in enumerate(hits)
    ]
    return pa.concat_tables([p.cast(pieces[0].schema) for p in pieces])


def remember(store: ObjectStore, schema: TableSchema, f: DataFile, rows: pa.Table) -> None:
    """Cache the rows of run ``f`` (file-schema columns, stored sequence numbers) that its
    writer still holds: committed with ``f.seq_offset``."""
    rows = with_effective_seq(rows.combine_chunks(), f.seq_offset)
    key0 = storage_values(rows.column(schema.primary_key[0]))
    search = len(schema.primary_key) == 1 and pa.types.is_integer(key0.type)
    DECODED_RUNS.put(
        (store.url, f.path, schema.schema_id), (rows, key0.to_numpy() if search else None)
    )


def _decoded(
    store: ObjectStore, f: DataFile, schema: TableSchema, wanted: np.ndarray | None
) -> tuple[pa.Table, np.ndarray | None]:
    """The run's rows (file-schema columns) and, when the wanted keys are given as sorted
    integers, its first key column as a sorted numpy array.

    The run comes whole from the cache or is fetched and decoded whole and cached, unless
    the wanted keys fall in few of its row groups (a small commit on a large table; see
    ``_blocks_holding``): then only those row groups are fetched (one ranged request per
    block of adjacent ones, verified as every ranged read) and decoded, and not cached, so
    computing the changes of a commit of a few keys costs a few row groups, not the table."""
    key = (store.url, f.path, schema.schema_id)
    found = DECODED_RUNS.get(key)
    if found is not None:
        return found
    names = schema.file_schema().names
    key_column = schema.primary_key[0]
    # Level 0's row-group size: larger groups below only make the estimate over-count.
    rows_per_group = int(schema.option("row_group_rows"))
    blocks = (
        None if wanted is None else _blocks_holding(store, f, key_column, rows_per_group, wanted)
    )
    if blocks is not None:
        if not blocks:  # no row group can hold a wanted key: the caller skips the run
            return pa.table({}), np.empty(0, dtype=wanted.dtype if wanted is not None else None)
        run = OpenRun(store, f, schema, footer=FOOTERS.get(store, f, key_column).metadata)
        rows = pa.concat_tables([run.read(names, row_groups=b) for b in blocks]).combine_chunks()
        return rows, storage_values(rows.column(key_column)).to_numpy()
    rows = OpenRun(store, f, schema).read(names).combine_chunks()
    key0 = storage_values(rows.column(key_column)).to_numpy() if wanted is not None else None
    found = (rows, key0)
    DECODED_RUNS.put(key, found)
    return found


#: A run is read by row groups when the wanted keys fall in at most 1/SPARSE_SHARE of its
#: row groups, in at most SPARSE_BLOCKS blocks of adjacent ones (each block is a request).
SPARSE_SHARE = 4
SPARSE_BLOCKS = 32


def _blocks_holding(
    store: ObjectStore, f: DataFile, key_column: str, row_group_rows: int, wanted: np.ndarray
) -> list[list[int]] | None:
    """The row groups of ``f`` whose first-key range holds a wanted key (sorted integers),
    as blocks of adjacent ones, if they are few; None when the run is better read whole.

    Without a cached footer, a run that holds at least ``1/SPARSE_SHARE`` as many wanted keys
    as it could have row groups is read whole at once: a large commit's keys hit most row
    groups, and its footer would be a request that decides nothing."""
    index = FOOTERS.peek(store, f)
    if index is None:
        inside = np.searchsorted(wanted, f.max_key[0], side="right") - np.searchsorted(
            wanted, f.min_key[0], side="left"
        )
        if inside * SPARSE_SHARE >= -(-f.rows // row_group_rows):
            return None
        index = FOOTERS.get(store, f, key_column)
    count = len(index.rg_min)
    if count < SPARSE_SHARE or index.rg_min.dtype.kind not in "iu":
        return None
    first = np.searchsorted(wanted, index.rg_min, side="left")
    past = np.searchsorted(wanted, index.rg_max, side="right")
    hit = np.flatnonzero(past > first)
    if len(hit) * SPARSE_SHARE > count:
        return None
    cuts = np.flatnonzero(np.diff(hit) > 1) + 1
    blocks = [b.tolist() for b in np.split(hit, cuts)] if len(hit) else []
    return blocks if len(blocks) <= SPARSE_BLOCKS else None
