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
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyarrow.fs import LocalFileSystem

from lsm3.errors import InvalidInput
from lsm3.format.metadata import DataFile
from lsm3.format.schema import KIND_COLUMN, SEQ_COLUMN, TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.merge import drop_deleted, merge_runs, order_columns
from lsm3.read.prefetch import SpanPrefetcher
from lsm3.read.runfile import OpenRun
from lsm3.read.runindex import FOOTERS
from lsm3.read.sections import RunCursor, merge_sections, section_bounds

#: Stored rows (over all overlapping runs) merged at a time. Smaller sections hold less and,
#: in a fresh process, fault in less new memory: on the benchmark machine, 2^18 against 2^20
#: rows took a 1M-row table's to_arrow from 0.83-1.86 s to 0.56-0.60 s, its full compaction
#: from 2.3-3.4 s to 1.4-1.9 s, and a 10M-row table's stream from 6.2-7.7 s and ~1000 MiB to
#: 4.4 s and ~545 MiB; 2^17 streamed the 10M table more slowly (5.4-5.7 s).
DEFAULT_SECTION_ROWS = 1 << 18


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
    for group_sequence, members in schema.engine.sequence_groups.items():
        if any(m in out for m in members):  # a group's columns are folded by its sequence
            needed.append(group_sequence)
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
    arrays = {
        name: typed_array(schema.arrow.field(name).type, value)
        for name, value in zip(schema.partition_by, partition, strict=True)
    }
    return pa.table(arrays).filter(expr).num_rows > 0


def typed_array(t: pa.DataType, value: Any) -> pa.Array:
    """A one-element array of type ``t`` from a storage value (section 7 of FORMAT.md)."""
    if pa.types.is_date32(t):
        return pa.array([value], pa.int32()).view(t)
    if pa.types.is_timestamp(t):
        return pa.array([value], pa.int64()).view(t)
    return pa.array([value], type=t)


def files_matching(
    schema: TableSchema, files: Sequence[DataFile], expr: pc.Expression
) -> list[DataFile]:
    """The files that can hold a row of the merged result matching ``expr``.

    A file's rows only ever decide keys inside its key range and partition, so a file whose
    range contradicts the filter (``id == 5`` against ids 100..200) changes nothing the
    filter lets through and is not read, whatever else the filter references. Arrow's
    expression simplification decides the contradiction: each file becomes a fragment whose
    partition expression is ``min_key[0] <= key0 <= max_key[0]`` plus its partition values.
    Files with the same partition and first-key range share one fragment, and a filter that
    does not reference the first key column gains nothing from key ranges: then each distinct
    partition is one fragment. (Before, one fragment per file: 4.6 s for 17,000 files.)
    """
    if len(files) <= 1:
        return list(files)
    key0 = schema.primary_key[0]
    others = [n for n in schema.arrow.names if n != key0]
    try:
        if references_only(expr, schema.arrow, others):
            if not schema.partition_by:
                return list(files)
            parts = list(dict.fromkeys(f.partition for f in files))
            kept = guarantees_kept(schema, [_partition_guarantee(schema, p) for p in parts], expr)
            keep = {parts[i] for i in kept}
            return [f for f in files if f.partition in keep]
        # Files with the same partition and first-key range share one decision (all files
        # of a partition do when the first key column is a partition column).
        ranges = [(f.partition, f.min_key[0], f.max_key[0]) for f in files]
        distinct = list(dict.fromkeys(ranges))
        key_type = schema.arrow.field(key0).type
        partition_terms: dict[tuple[Any, ...], pc.Expression] = {}
        guarantees = []
        field = pc.field(key0)
        for partition, lo, hi in distinct:
            g = (field >= typed_array(key_type, lo)[0]) & (field <= typed_array(key_type, hi)[0])
            if schema.partition_by:
                term = partition_terms.get(partition)
                if term is None:
                    term = partition_terms[partition] = _partition_guarantee(schema, partition)
                g = g & term
            guarantees.append(g)
        keep_ranges = {distinct[i] for i in guarantees_kept(schema, guarantees, expr)}
        return [f for f, r in zip(files, ranges, strict=True) if r in keep_ranges]
    except (pa.ArrowException, TypeError, ValueError):
        return list(files)  # a type or expression Arrow cannot reason about: read everything


def _partition_guarantee(schema: TableSchema, partition: tuple[Any, ...]) -> pc.Expression:
    g = pc.scalar(True)
    for name, value in zip(schema.partition_by, partition, strict=True):
        field = pc.field(name)
        t = schema.arrow.field(name).type
        g = g & (field.is_null() if value is None else field == typed_array(t, value)[0])
    return g


def guarantees_kept(
    schema: TableSchema, guarantees: list[pc.Expression], expr: pc.Expression
) -> set[int]:
    """Indexes of the guarantees under which ``expr`` may hold (Arrow simplifies it against
    each as the partition expression of a fragment that is never opened)."""
    fragments = ds.FileSystemDataset.from_paths(
        [str(i) for i in range(len(guarantees))],
        schema=schema.arrow,
        format=ds.ParquetFileFormat(),
        filesystem=LocalFileSystem(),  # never opened: only the expressions are used
        partitions=guarantees,
    ).get_fragments(filter=expr)
    return {int(frag.path) for frag in fragments}


def groups_to_read(
    schema: TableSchema, files: Sequence[DataFile], request: ScanRequest
) -> dict[tuple[tuple[Any, ...], int], list[DataFile]]:
    """The (partition, bucket) groups a scan reads, in scan order, with the files of each
    that can hold a row the filter lets through."""
    if request.filter is not None:
        files = files_matching(schema, files, request.filter)
    return {
        (partition, bucket): group
        for (partition, bucket), group in group_files(files).items()
        if not (
            request.partition_filter
            and request.filter is not None
            and not _partition_matches(schema, partition, request.filter)
        )
    }


def scan_batches(
    store: ObjectStore,
    schema: TableSchema,
    files: Sequence[DataFile],
    request: ScanRequest,
    section_rows: int = DEFAULT_SECTION_ROWS,
    read_ahead: bool = False,
    key_range: tuple[Any, Any] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Merged, delete-free batches of the requested columns, group by group in key order
    (``read_ahead``: see ``merge_group``). ``key_range`` (``lo``, ``hi``: storage values of
    the first key column, None for open): only row groups that can hold keys in
    ``lo <= key0 < hi`` are decoded; the request's filter must also restrict to that range
    (see :mod:`lsm3.read.units`), which keeps the result exact."""
    for group in groups_to_read(schema, files, request).values():
        pre_filter = (lambda t: _pre_filter(t, request)) if request.key_filter else None
        for table in merge_group(
            store,
            schema,
            group,
            request.read_columns,
            drop_deletes=True,
            section_rows=section_rows,
            pre_filter=pre_filter,
            visible_columns=[c for c in request.read_columns if c not in (SEQ_COLUMN, KIND_COLUMN)],
            read_ahead=read_ahead,
            key_range=key_range,
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


#: When sections are merged, runs are fetched whole (CRC checked; see ``get_buffer``) only up to
#: this many bytes in all; the largest runs beyond it are read by ranged requests, section by
#: section, so a scan holds the row groups of one section of them rather than whole files
#: (the 10M-row table: 20 runs of 35 MB, 700 MB if fetched whole).
WHOLE_READ_BYTES = 128 * 1024 * 1024


def ranged_runs(files: Sequence[DataFile]) -> set[str]:
    """Paths of the runs to read by ranged requests: the largest, until the rest fit in
    ``WHOLE_READ_BYTES``."""
    whole = sum(f.size for f in files)
    ranged: set[str] = set()
    for f in sorted(files, key=lambda f: f.size, reverse=True):
        if whole <= WHOLE_READ_BYTES:
            break
        ranged.add(f.path)
        whole -= f.size
    return ranged


def open_run(store: ObjectStore, schema: TableSchema, f: DataFile, ranged: bool) -> OpenRun:
    """A run for sectioned reading: fetched whole (CRC checked), or read by
    ranged requests (footer and page CRCs checked)."""
    if ranged:
        return OpenRun(
            store, f, schema, footer=FOOTERS.get(store, f, schema.primary_key[0]).metadata
        )
    return OpenRun(store, f, schema)


#: A run of a remote store read whole is fetched in spans of about this many bytes of row
#: groups, a few at once, each decoded as soon as it arrives (and verified as ranged reads
#: are: footer checksum, page CRCs; docs/FORMAT.md section 4), so fetching overlaps decoding.
SPAN_BYTES = 16 * 1024 * 1024
_LOCAL_SCHEMES = ("file", "memory")


def is_remote(store: ObjectStore) -> bool:
    """Whether reads of ``store`` are requests (not a local file or memory)."""
    return store.url.split(":", 1)[0] not in _LOCAL_SCHEMES


def read_run(store: ObjectStore, schema: TableSchema, f: DataFile, columns: list[str]) -> pa.Table:
    """``columns`` of the whole run ``f``, verified. From a local store (memory-mapped or in
    memory) the run is taken whole and its CRC checked while it decodes; from a remote one,
    in spans (``SPAN_BYTES``), so that the fetch of one overlaps the decoding of another,
    as Arrow's own reader of S3 files does (a whole fetch first held back decoding for
    the ~0.1 s that 74 MB take on loopback S3)."""
    if not is_remote(store) or f.size < 2 * SPAN_BYTES:
        return OpenRun(store, f, schema).read(columns)
    run = open_run(store, schema, f, ranged=True)
    spans: list[list[int]] = [[]]
    span_bytes = 0
    for i in range(run.num_row_groups):
        group = run.metadata.row_group(i)
        if spans[-1] and span_bytes >= SPAN_BYTES:
            spans.append([])
            span_bytes = 0
        spans[-1].append(i)
        span_bytes += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="lsm3-span") as pool:
        parts = list(pool.map(lambda groups: run.read(columns, groups, use_threads=True), spans))
    return pa.concat_tables(parts)


def _open_all(
    store: ObjectStore, schema: TableSchema, files: Sequence[DataFile], ranged: set[str]
) -> list[OpenRun]:
    if len(files) == 1:
        return [open_run(store, schema, files[0], files[0].path in ranged)]
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        return list(pool.map(lambda f: open_run(store, schema, f, f.path in ranged), files))


def merge_group(
    store: ObjectStore,
    schema: TableSchema,
    group: Sequence[DataFile],
    columns: Sequence[str],
    *,
    drop_deletes: bool,
    section_rows: int = DEFAULT_SECTION_ROWS,
    pre_filter: Callable[[pa.Table], pa.Table] | None = None,
    visible_columns: Sequence[str] | None = None,
    read_ahead: bool = False,
    key_range: tuple[Any, Any] | None = None,
) -> Iterator[pa.Table]:
    """The newest version of every key in the files of one (partition, bucket), as
    key-ordered, key-disjoint tables of ``columns`` (which must include the key, ordering and
    kind columns). The one merge path of readers and the compactor.

    ``visible_columns`` (readers, with ``drop_deletes``): the tables hold just these columns.
    When the files do not overlap, nothing needs ordering, so only these are read (plus the
    row kind of a file that holds deletes); a merge reads the ordering columns too, but does
    not gather them into its output.

    The runs of a section are decoded in parallel, one run per core (the stream's memory
    holds one section either way). ``read_ahead`` (for a caller that keeps everything, like
    ``to_arrow``): the next section is decoded while this one is merged. A stream leaves it
    off: it would hold two sections at once.

    ``key_range`` (``lo``, ``hi`` on the first key column, None for open): when sections are
    merged, row groups wholly below ``lo`` are skipped and nothing at or above ``hi`` is
    taken. Rows below ``lo`` may remain in the first section: the caller filters them."""
    columns = list(columns)
    output = list(visible_columns) if visible_columns is not None and drop_deletes else None

    prefetch: SpanPrefetcher | None = None

    def read(
        run: OpenRun, row_groups: list[int] | None = None, use_threads: bool = False
    ) -> pa.Table:
        """Decode ``run``: by default single-threaded, as each pool thread decodes one run."""
        span = prefetch.take(run, row_groups) if prefetch and row_groups else None
        table = run.read(columns, row_groups, use_threads=use_threads, span=span)
        return pre_filter(table) if pre_filter is not None else table

    ordered = sorted(group, key=lambda f: f.min_key)
    if non_overlapping(ordered):
        for f in ordered:
            if visible_columns is not None and drop_deletes:
                visible = list(visible_columns)
                needed = [*visible, KIND_COLUMN] if f.deletes else visible
                table = read_run(store, schema, f, needed)
                table = pre_filter(table) if pre_filter is not None else table
                yield drop_deleted(table, visible)
            else:
                table = read_run(store, schema, f, columns)
                table = pre_filter(table) if pre_filter is not None else table
                yield drop_deleted(table) if drop_deletes else table
        return
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        if sum(f.rows for f in ordered) <= section_rows:
            runs = _open_all(store, schema, ordered, set())
            tables = [t.result() for t in [pool.submit(read, r) for r in runs]]
            yield merge_runs(tables, schema, drop_deletes=drop_deletes, columns=output)
            return
        key0 = schema.primary_key[0]
        # Planning sections needs every run's footer, so every run is opened first, all
        # requests at once (on S3 each is a round trip): a run read whole is fetched whole
        # (its first section would fetch it anyway; all such runs fit in WHOLE_READ_BYTES)
        # and its footer comes with it, with no request of its own; a ranged run costs its
        # footer only. From a remote store the spans of the ranged runs are fetched for the
        # coming sections while this one decodes (``SpanPrefetcher``; ranging every run
        # instead of fetching the small ones whole first did not pay on loopback S3:
        # bench/README.md, issue 20); locally a ranged run is mapped section by section.
        ranged = ranged_runs(ordered)
        runs = _open_all(store, schema, ordered, ranged)
        lo, hi_end = key_range if key_range is not None else (None, None)
        cursors = [
            RunCursor(run, key0, FOOTERS.get(store, run.file, key0, metadata=run.metadata), lo)
            for run in runs
        ]
        cuts = section_bounds(store, schema, ordered, section_rows)
        cuts = [b for b in cuts if (lo is None or b > lo) and (hi_end is None or b < hi_end)]
        bounds = [*cuts, hi_end]
        if ranged and is_remote(store):
            planned = sorted(
                (section, j, groups)
                for j, cursor in enumerate(cursors)
                if cursor.file.path in ranged
                for section, groups in cursor.planned_reads(bounds)
            )
            prefetch = SpanPrefetcher([(runs[j], groups) for _, j, groups in planned])

        def start_section(hi: Any) -> list[Future[pa.Table | None]]:
            live = [c for c in cursors if not c.done and (hi is None or c.file.min_key[0] < hi)]
            return [pool.submit(cursor.take_below, hi, read) for cursor in live]

        try:
            yield from merge_sections(
                bounds, start_section, schema, drop_deletes, output, read_ahead
            )
        finally:
            if prefetch is not None:
                prefetch.close()
