"""Scan planning and merge-on-read: from a snapshot's live files to merged Arrow batches.

Files are grouped by (partition, bucket); keys never cross groups, so each group is read on its
own. A group whose files do not overlap in key range is read without merging. Overlapping files
are merged one key-range *section* at a time (sections cut at row-group boundaries of the first
key column), so memory is bounded by the files overlapping one section, not by the table.

Filters: a filter that references only primary-key columns is applied to every run *before*
the merge (all versions of a key share the key, so this is exact) and a filter on partition
columns only also prunes whole groups; any other filter is applied after the merge, because an
older version of a row may match a predicate that its newest version does not.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import InvalidInput
from lsm3.keys import storage_values
from lsm3.merge import drop_deleted, merge_runs, order_columns
from lsm3.metadata import DataFile
from lsm3.runfile import OpenRun
from lsm3.runindex import FOOTERS
from lsm3.schema import KIND_COLUMN, SEQ_COLUMN, TableSchema
from lsm3.storage import ObjectStore

DEFAULT_SECTION_ROWS = 1 << 20


def references_only(expr: pc.Expression, schema: pa.Schema, names: Sequence[str]) -> bool:
    """Whether ``expr`` can be evaluated on the columns ``names`` alone."""
    probe = pa.table({n: pa.array([], schema.field(n).type) for n in names})
    try:
        probe.filter(expr)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError, TypeError):
        return False
    return True


@dataclass
class ScanRequest:
    """What to read: output columns, the filter and how it may be pushed down."""

    columns: list[str]  # user columns to return
    read_columns: list[str]  # columns read from files (output + key + order + kind)
    filter: pc.Expression | None
    key_filter: bool  # filter references only key columns: apply before the merge
    partition_filter: bool  # ... only partition columns: also prune groups


def make_request(
    schema: TableSchema, columns: Sequence[str] | None, filter: pc.Expression | None
) -> ScanRequest:
    names = schema.arrow.names
    if columns is None:
        out = list(names)
    else:
        if isinstance(columns, str):
            raise InvalidInput("columns must be a list of column names, not a string")
        out = list(columns)
        unknown = [c for c in out if c not in names]
        if unknown:
            raise InvalidInput(f"unknown columns {unknown}; the table has {names}")
    if filter is not None and not isinstance(filter, pc.Expression):
        raise InvalidInput("filter must be a pyarrow.compute.Expression, e.g. pc.field('id') > 5")
    key_filter = filter is not None and references_only(filter, schema.arrow, schema.primary_key)
    partition_filter = (
        filter is not None
        and bool(schema.partition_by)
        and references_only(filter, schema.arrow, schema.partition_by)
    )
    if filter is not None and not key_filter and not references_only(filter, schema.arrow, names):
        raise InvalidInput(f"filter {filter} references a column the table does not have ({names})")
    needed = list(schema.primary_key) + order_columns(schema) + [KIND_COLUMN]
    if filter is not None and not key_filter:
        needed += names  # the filter's columns are unknown: read them all
    read = [c for c in [*names, SEQ_COLUMN, KIND_COLUMN] if c in out or c in needed]
    return ScanRequest(out, read, filter, key_filter, partition_filter)


def group_files(files: Sequence[DataFile]) -> dict[tuple[tuple[Any, ...], int], list[DataFile]]:
    groups: dict[tuple[tuple[Any, ...], int], list[DataFile]] = {}
    for f in files:
        groups.setdefault((f.partition, f.bucket), []).append(f)
    return dict(sorted(groups.items(), key=lambda kv: (repr(kv[0][0]), kv[0][1])))


def _partition_matches(
    schema: TableSchema, partition: tuple[Any, ...], expr: pc.Expression
) -> bool:
    arrays = {}
    for name, value in zip(schema.partition_by, partition, strict=True):
        t = schema.arrow.field(name).type
        if pa.types.is_date32(t):  # partition values are storage values (section 7)
            arrays[name] = pa.array([value], pa.int32()).view(t)
        elif pa.types.is_timestamp(t):
            arrays[name] = pa.array([value], pa.int64()).view(t)
        else:
            arrays[name] = pa.array([value], type=t)
    return pa.table(arrays).filter(expr).num_rows > 0


def scan_batches(
    store: ObjectStore,
    schema: TableSchema,
    files: Sequence[DataFile],
    request: ScanRequest,
    section_rows: int = DEFAULT_SECTION_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Merged, delete-free batches of the requested columns, group by group in key order."""
    for (partition, _bucket), group in group_files(files).items():
        if (
            request.partition_filter
            and request.filter is not None
            and not _partition_matches(schema, partition, request.filter)
        ):
            continue
        pre_filter = (lambda t: _pre_filter(t, request)) if request.key_filter else None
        for table in merge_group(
            store,
            schema,
            group,
            request.read_columns,
            drop_deletes=True,
            section_rows=section_rows,
            pre_filter=pre_filter,
        ):
            yield from _finish(table, request).to_batches()


def _finish(table: pa.Table, request: ScanRequest) -> pa.Table:
    if request.filter is not None and not request.key_filter and table.num_rows:
        table = table.filter(request.filter)
    return table.select(request.columns)


def _pre_filter(table: pa.Table, request: ScanRequest) -> pa.Table:
    if request.key_filter and request.filter is not None and table.num_rows:
        return table.filter(request.filter)
    return table


def non_overlapping(files: Sequence[DataFile]) -> bool:
    """Whether files (sorted by min_key) have pairwise disjoint key ranges."""
    return all(a.max_key < b.min_key for a, b in itertools.pairwise(files))


def _open_all(store: ObjectStore, schema: TableSchema, files: Sequence[DataFile]) -> list[OpenRun]:
    if len(files) == 1:
        return [OpenRun(store, files[0], schema)]
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        return list(pool.map(lambda f: OpenRun(store, f, schema), files))


def merge_group(
    store: ObjectStore,
    schema: TableSchema,
    group: Sequence[DataFile],
    columns: Sequence[str],
    *,
    drop_deletes: bool,
    section_rows: int = DEFAULT_SECTION_ROWS,
    pre_filter: Callable[[pa.Table], pa.Table] | None = None,
) -> Iterator[pa.Table]:
    """The newest version of every key in the files of one (partition, bucket), as
    key-ordered, key-disjoint tables of ``columns`` (which must include the key, ordering and
    kind columns). The one merge path of readers and the compactor."""
    columns = list(columns)

    def read(run: OpenRun, row_groups: list[int] | None = None) -> pa.Table:
        table = run.read(columns, row_groups)
        return pre_filter(table) if pre_filter is not None else table

    ordered = sorted(group, key=lambda f: f.min_key)
    if non_overlapping(ordered):
        for f in ordered:
            table = read(OpenRun(store, f, schema))
            yield drop_deleted(table) if drop_deletes else table
        return
    if sum(f.rows for f in ordered) <= section_rows:
        tables = [read(r) for r in _open_all(store, schema, ordered)]
        yield merge_runs(tables, schema, drop_deletes=drop_deletes)
        return
    key0 = schema.primary_key[0]
    bounds = _section_bounds(store, schema, ordered, section_rows)
    open_runs: dict[str, OpenRun] = {}
    decoded: dict[tuple[str, int], pa.Table] = {}
    for lo, hi in zip([None, *bounds], [*bounds, None], strict=True):
        live = [
            f
            for f in ordered
            if (hi is None or f.min_key[0] < hi) and (lo is None or f.max_key[0] >= lo)
        ]
        to_open = [f for f in live if f.path not in open_runs]
        for run in _open_all(store, schema, to_open) if to_open else []:
            open_runs[run.file.path] = run
        pieces = []
        for f in live:
            index = FOOTERS.get(store, f, key0)
            for i in range(len(index.rg_min)):
                if (hi is not None and index.rg_min[i] >= hi) or (
                    lo is not None and index.rg_max[i] < lo
                ):
                    continue
                rg = decoded.get((f.path, i))
                if rg is None:
                    rg = read(open_runs[f.path], [i])
                    decoded[(f.path, i)] = rg
                pieces.append(_slice_key_range(rg, key0, lo, hi))
                if hi is None or index.rg_max[i] < hi:
                    decoded.pop((f.path, i), None)  # fully consumed
        if pieces:
            yield merge_runs(pieces, schema, drop_deletes=drop_deletes)
        for f in live:
            if hi is not None and f.max_key[0] < hi:
                open_runs.pop(f.path, None)


def _section_bounds(
    store: ObjectStore, schema: TableSchema, files: Sequence[DataFile], section_rows: int
) -> list[Any]:
    """Cut points on the first key column, at row-group starts, ~section_rows apart."""
    key0 = schema.primary_key[0]
    starts: list[tuple[Any, int]] = []
    for f in files:
        index = FOOTERS.get(store, f, key0)
        for i, lo in enumerate(index.rg_min):
            starts.append((lo, index.metadata.row_group(i).num_rows))
    starts.sort(key=lambda s: s[0])
    bounds: list[Any] = []
    acc = 0
    for value, rows in starts:
        if acc >= section_rows and (not bounds or value > bounds[-1]):
            bounds.append(value)
            acc = 0
        acc += rows
    return bounds


def _slice_key_range(table: pa.Table, key0: str, lo: Any, hi: Any) -> pa.Table:
    if lo is None and hi is None:
        return table
    col = storage_values(table.column(key0))
    mask = None
    if lo is not None:
        mask = pc.greater_equal(col, pa.scalar(lo, col.type))
    if hi is not None:
        upper = pc.less(col, pa.scalar(hi, col.type))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table.filter(mask)
