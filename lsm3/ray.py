"""Ray Data connectors: read an lsm3 table into a ``ray.data.Dataset``, write one into a table.

``pip install lsm3[ray]``. ``import lsm3`` never imports this module (nor Ray).

**Reading** (:func:`read_lsm3`). The driver plans once, from the snapshot's manifests, the
independent units of the scan (:mod:`lsm3.read.units`: one per (partition, bucket) group,
and first-key ranges of a group over ``max_unit_rows`` stored rows); each unit is one read
task, which reopens the store from the URI and ``storage_options`` and merges its runs with
the reader's own kernel and pruning. The dataset's rows are those of ``Table.to_arrow()``
at the same snapshot, in the same order when Ray preserves order
(``DataContext.execution_options.preserve_order``).

**Writing** (:func:`write_lsm3`). Each write task is a :class:`lsm3.Writer` that stages its
runs instead of committing them; the driver's ``on_write_complete`` commits the runs of
every task in one snapshot (one conditional put; ``writer_id``/``commit_id`` make a
retried job land once). A task's flushes use the local sequence numbers
``task_index * SEQUENCES_PER_TASK + flush``, so within the commit a later task's record of a
key wins over an earlier task's, and within a task a later row wins, as in one Writer.

*Order* of a distributed dataset: the order in which Ray hands blocks to the write tasks,
which ``write_lsm3`` makes the dataset's own order (``preserve_order`` is switched on for
the write, on a copy of the dataset's context): the order ``ds.iter_batches()`` yields
rows. The newest record of a key is the last one in that order, exactly as for a single
Writer fed ``ds.iter_batches()``.

*Grouping* (``group_by_bucket``, the default for a table with several buckets or
partitions). Many tasks each holding rows of many buckets would give every bucket a tiny run
per task. So the rows are first tagged (:mod:`lsm3.write.bulk`) with their (partition,
bucket) group and cut into one piece per write task by group (a shuffle in plain Ray tasks,
:func:`write_grouped`); each write task concatenates its piece of every block in the
dataset's order (block by block, each piece in its block's row order) and feeds it to one
Writer: a bucket gets
one run per write, and the last record of a key wins exactly as for one Writer. The write
tasks return their staged runs and the driver commits them once. A write task holds its
share of the input (the input over the cluster's CPUs) in memory.
Without grouping each task takes a contiguous slice of at least ``min_rows_per_task`` rows,
by default at least the table's ``memtable_bytes`` of input, and writes one run per bucket
it holds, per flush.

A job that fails commits nothing; runs its tasks uploaded are orphans that
``compactor.remove_orphan_files`` deletes after its grace period.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import Dataset
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask
from ray.data.datasource.datasink import WriteResult

import lsm3
from lsm3.errors import InvalidInput, SchemaMismatch
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import TableSchema
from lsm3.io.retry import with_retries
from lsm3.io.store import ObjectStore, open_store
from lsm3.read.scan import ScanRequest, make_request
from lsm3.read.units import DEFAULT_UNIT_ROWS, ScanUnit, estimate_bytes, plan_units, scan_unit
from lsm3.table import Table
from lsm3.write.bulk import GROUP_COLUMN, MODES, tag_rows, write_group, write_rows
from lsm3.write.commit import commit_files
from lsm3.write.writer import Writer

#: Local sequence numbers each write task may use (one per flush; a task would have to
#: buffer ~2^20 memtables to run out).
SEQUENCES_PER_TASK = 1 << 20
#: Rows a read task gathers into one block.
BLOCK_ROWS = 1 << 20

__all__ = ["Lsm3Datasink", "Lsm3Datasource", "ensure_ray", "read_lsm3", "write_lsm3"]


def ensure_ray() -> None:
    """Connect to Ray if this process is not connected: the cluster ``RAY_ADDRESS`` names,
    else a new local one."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)


def open_shared_table(uri: str, storage_options: Mapping[str, Any] | None) -> Table:
    """The table, opened as a worker will open it: refuses what other processes cannot see."""
    if not isinstance(uri, str):
        raise InvalidInput(
            "Ray needs a table URI (workers reopen the table), not an opened store or Table"
        )
    if uri.lower().startswith("memory://"):
        raise InvalidInput(
            f"{uri!r} lives in this process's memory, which Ray workers cannot see; use a "
            "path shared by the workers or an s3:// URI"
        )
    return lsm3.open_table(uri, storage_options)


@functools.lru_cache(maxsize=64)
def _worker_store(uri: str, options_key: str) -> ObjectStore:
    """One store per table and options in a worker process, so its footer and metadata caches
    serve every task the worker runs."""
    import json

    options = json.loads(options_key)
    return with_retries(open_store(uri, options or None))


def _store_for(uri: str, storage_options: Mapping[str, Any] | None) -> ObjectStore:
    import json

    return _worker_store(uri, json.dumps(dict(storage_options or {}), sort_keys=True, default=str))


# --------------------------------------------------------------------------------- reading


class Lsm3Datasource(Datasource):
    """A snapshot of an lsm3 table as a Ray Data source; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        snapshot_id: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        max_unit_rows: int = DEFAULT_UNIT_ROWS,
    ) -> None:
        super().__init__()
        if not isinstance(max_unit_rows, int) or max_unit_rows < 1:
            raise InvalidInput("max_unit_rows must be a positive integer")
        table = open_shared_table(uri, storage_options)
        snap = table.snapshot(snapshot_id) if snapshot_id is not None else table.refresh()
        self._uri = table.uri
        self._storage_options = dict(storage_options or {})
        self._schema: TableSchema = table.schema_at(snap.schema_id if snap else 0)
        self._request: ScanRequest = make_request(self._schema, columns, filter)
        self._out_schema = pa.schema(
            [self._schema.arrow.field(c).with_nullable(True) for c in self._request.columns]
        )
        self._units: list[ScanUnit] = plan_units(
            table.store,
            self._schema,
            table.files_for(snap, self._request.filter),
            self._request,
            max_unit_rows,
        )
        self.snapshot_id = snap.snapshot_id if snap else 0

    @property
    def units(self) -> list[ScanUnit]:
        return list(self._units)

    def get_name(self) -> str:
        return "lsm3"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(estimate_bytes(u, self._schema, self._request) for u in self._units)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        """One task per unit, whatever ``parallelism`` says: units are the pieces that merge
        independently, and a group is cut only where its size calls for it."""
        units: list[ScanUnit | None] = list(self._units) or [None]  # an empty table: one task
        tasks = []
        for unit in units:
            read = functools.partial(
                _read_unit,
                self._uri,
                self._storage_options,
                self._schema,
                unit,
                self._request,
                self._out_schema,
            )
            meta = BlockMetadata(
                num_rows=None,  # known after the merge: superseded versions drop out
                size_bytes=estimate_bytes(unit, self._schema, self._request) if unit else 0,
                input_files=[f.path for f in unit.files] if unit else [],
                exec_stats=None,
            )
            tasks.append(
                ReadTask(read, meta, schema=self._out_schema, per_task_row_limit=per_task_row_limit)
            )
        return tasks


def _read_unit(
    uri: str,
    storage_options: Mapping[str, Any],
    schema: TableSchema,
    unit: ScanUnit | None,
    request: ScanRequest,
    out_schema: pa.Schema,
) -> Iterator[pa.Table]:
    if unit is None:
        yield out_schema.empty_table()
        return
    store = _store_for(uri, storage_options)
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in scan_unit(store, schema, unit, request):
        pending.append(batch.cast(out_schema) if batch.schema != out_schema else batch)
        rows += batch.num_rows
        if rows >= BLOCK_ROWS:
            yield pa.Table.from_batches(pending, out_schema)
            pending, rows = [], 0
    yield pa.Table.from_batches(pending, out_schema)


def read_lsm3(
    uri: str,
    *,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,
    snapshot_id: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_unit_rows: int = DEFAULT_UNIT_ROWS,
) -> Dataset:
    """The merged rows of the table at ``uri`` (the latest snapshot, or ``snapshot_id``) as a
    Ray Dataset: the rows of ``open_table(uri).to_arrow(columns, filter, snapshot_id)``.
    ``max_unit_rows``: stored rows above which a bucket is read by several tasks."""
    source = Lsm3Datasource(
        uri,
        columns=columns,
        filter=filter,
        snapshot_id=snapshot_id,
        storage_options=storage_options,
        max_unit_rows=max_unit_rows,
    )
    return ray.data.read_datasource(source)


# --------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class StagedRuns:
    """What one write task returns: its runs and one past the highest local sequence used."""

    task_index: int
    files: list[DataFile]
    seq_count: int


class Lsm3Datasink(Datasink[StagedRuns]):
    """Writes a dataset's rows as sorted runs in parallel and commits them once; see the
    module docstring. ``snapshot`` holds the commit after the write."""

    def __init__(
        self,
        uri: str,
        *,
        mode: str = "upsert",
        op_column: str = "op",
        writer_id: str | None = None,
        commit_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        min_rows_per_task: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidInput(f"unknown write mode {mode!r}; choose one of {list(MODES)}")
        if not isinstance(op_column, str) or not op_column:
            raise InvalidInput("op_column must be a non-empty column name")
        if writer_id is not None and (not isinstance(writer_id, str) or not writer_id):
            raise InvalidInput("writer_id must be a non-empty string or None")
        if commit_id is not None and (not isinstance(commit_id, str) or not commit_id):
            raise InvalidInput("commit_id must be a non-empty string")
        if commit_id is not None and writer_id is None:
            raise InvalidInput(
                "an explicit commit_id needs a writer_id, so that a retried job lands once"
            )
        if min_rows_per_task is not None and (
            not isinstance(min_rows_per_task, int) or min_rows_per_task < 1
        ):
            raise InvalidInput("min_rows_per_task must be a positive integer")
        meta = dict(metadata or {})
        try:
            import json

            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"commit metadata must be JSON-serialisable: {exc}") from None
        table = open_shared_table(uri, storage_options)
        self._uri = table.uri
        self._storage_options = dict(storage_options or {})
        self._table = table
        self._schema = table.table_schema
        self.mode = mode
        self.op_column = op_column
        self.writer_id = writer_id
        self.commit_id = commit_id or uuid.uuid4().hex
        self.metadata = meta
        self._min_rows = min_rows_per_task
        self.snapshot: Snapshot | None = None

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def storage_options(self) -> dict[str, Any]:
        return self._storage_options

    @property
    def table_schema(self) -> TableSchema:
        return self._schema

    @property
    def table(self) -> Table:
        """The driver's table (None in a task)."""
        return self._table

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_table"] = None  # tasks reopen the table; the driver keeps its own
        return state

    @property
    def min_rows_per_write(self) -> int | None:
        return self._min_rows

    @property
    def min_bytes_per_write(self) -> int | None:
        return None if self._min_rows is not None else int(self._schema.option("memtable_bytes"))

    def get_name(self) -> str:
        return "lsm3"

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        if schema is None:
            return
        names = list(schema.names)
        check_columns(self._schema, names, self.mode, self.op_column)

    def write(self, blocks: Iterable[Block], ctx: Any) -> StagedRuns:
        table = lsm3.open_table(self._uri, self._storage_options or None)
        first = ctx.task_idx * SEQUENCES_PER_TASK
        writer = Writer(table, first_sequence=first)
        for block in blocks:
            rows = BlockAccessor.for_block(block).to_arrow()
            if rows.num_rows:
                write_rows(writer, rows, self.mode, self.op_column)
        files, count = writer.stage()
        if count - first > SEQUENCES_PER_TASK:
            raise InvalidInput(
                f"a write task flushed {count - first} times (over {SEQUENCES_PER_TASK}); "
                "give the table a larger memtable_bytes"
            )
        return StagedRuns(ctx.task_idx, files, count if files else 0)

    def on_write_complete(self, write_result: WriteResult[StagedRuns]) -> None:
        staged = [s for s in write_result.write_returns if s is not None]
        self.snapshot = commit_staged(
            self._table, staged, self.writer_id, self.commit_id, self.metadata
        )


def check_columns(schema: TableSchema, names: Sequence[str], mode: str, op_column: str) -> None:
    """Refuse input that lacks what ``mode`` needs, before any task runs."""
    if mode == "cdc" and op_column not in names:
        raise SchemaMismatch(
            f"cdc input has no op column {op_column!r} (columns {list(names)}); pass op_column="
        )
    needed = list(schema.primary_key)  # the Writer checks the other columns
    missing = [c for c in needed if c not in names]
    if missing:
        raise SchemaMismatch(f"{mode} input lacks column(s) {missing}; it has {list(names)}")


def commit_staged(
    table: Table,
    staged: Sequence[StagedRuns],
    writer_id: str | None,
    commit_id: str,
    metadata: dict[str, Any],
) -> Snapshot | None:
    """Commit the runs of every task in one snapshot (nothing, and None, if there are none
    and no identity to record)."""
    files = [f for s in sorted(staged, key=lambda s: s.task_index) for f in s.files]
    if not files and writer_id is None:
        return None
    table.refresh()
    return commit_files(
        table,
        added=files,
        removed=[],
        seq_count=max((s.seq_count for s in staged), default=0),
        kind="APPEND",
        writer_id=writer_id,
        commit_id=commit_id,
        metadata=metadata,
    )


def _split_block(
    block: pa.Table,
    schema: TableSchema,
    mode: str,
    op_column: str,
    parts: int,
) -> Any:
    """Stage 1 of a grouped write: the block's rows, tagged, cut into ``parts`` pieces by
    group (a group's rows all go to one piece)."""
    check_columns(schema, block.column_names, mode, op_column)
    tagged = tag_rows(block, schema)
    if parts == 1:
        return tagged
    part = tagged.column(GROUP_COLUMN).to_numpy() % parts
    return [tagged.filter(pa.array(part == i)) for i in range(parts)]


def write_part(
    uri: str, storage_options: Mapping[str, Any], mode: str, op_column: str, *pieces: pa.Table
) -> StagedRuns:
    """Stage 2 of a grouped write: one piece of every block, in the dataset's order (so the
    rows of a key are in that order): whole groups; staged."""
    rows = pa.concat_tables(pieces, promote_options="permissive")
    if rows.num_rows == 0:
        return StagedRuns(0, [], 0)
    files, count = write_group(lsm3.open_table(uri, storage_options or None), rows, mode, op_column)
    return StagedRuns(0, files, count if files else 0)


def write_grouped(
    ds: Dataset, sink: Lsm3Datasink, parts: int | None = None, part_task: Any = None
) -> Snapshot | None:
    """Write ``ds`` through ``sink``'s options with its rows grouped by (partition, bucket)
    first (see the module docstring); commit once on the driver and return the snapshot.
    Two rounds of Ray tasks: one per block tags and splits its rows into ``parts`` pieces by
    group (default: the cluster's CPUs), one per piece number writes that
    piece of every block (``part_task``, default ``write_part``; tests inject failures)."""
    ordered = Dataset.copy(ds, _deep_copy=True)
    ordered.context.execution_options.preserve_order = True
    refs = ordered.to_arrow_refs()  # in the dataset's order
    if parts is None:
        parts = max(1, int(ray.cluster_resources().get("CPU", 1)))
    schema = sink.table_schema
    split = ray.remote(num_returns=parts)(_split_block)
    write = ray.remote(part_task or write_part)
    pieces = [split.remote(ref, schema, sink.mode, sink.op_column, parts) for ref in refs]
    if parts == 1:
        pieces = [[p] for p in pieces]
    args = (sink.uri, sink.storage_options, sink.mode, sink.op_column)
    written = [write.remote(*args, *(b[i] for b in pieces)) for i in range(parts) if pieces]
    if written:  # every task settles first: a failed job leaves no task still uploading
        ray.wait(written, num_returns=len(written))
    staged = ray.get(written)
    sink.snapshot = commit_staged(sink.table, staged, sink.writer_id, sink.commit_id, sink.metadata)
    return sink.snapshot


def write_lsm3(
    ds: Dataset,
    uri: str,
    *,
    mode: str = "upsert",
    op_column: str = "op",
    writer_id: str | None = None,
    commit_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    min_rows_per_task: int | None = None,
    group_by_bucket: bool | None = None,
    write_tasks: int | None = None,
) -> Snapshot | None:
    """Write the rows of ``ds`` into the table at ``uri`` in one commit and return its
    snapshot (None if ``ds`` is empty and no ``writer_id`` is given).

    ``mode``: ``"upsert"`` (rows with every column), ``"delete"`` (rows with the key
    columns), ``"cdc"`` (change events, their kind in ``op_column``, as
    ``Writer.apply_cdc``). The last record of a key in the dataset's order wins (see the
    module docstring). With ``writer_id`` and ``commit_id``, a job run again after it
    committed (or after an ambiguous failure) lands once: if the writer's last commit is
    ``commit_id`` nothing is written and that snapshot is returned.

    ``group_by_bucket`` (default: when the table has several buckets or partitions): shuffle
    the rows by (partition, bucket) first, so each bucket gets one run from this write;
    otherwise each task writes a contiguous slice of at least ``min_rows_per_task`` rows
    (default: the table's ``memtable_bytes`` of input) and a bucket gets a run per task.
    ``write_tasks``: tasks of the grouped write (default: the cluster's CPUs); each holds its
    share of the input in memory.
    """
    sink = Lsm3Datasink(
        uri,
        mode=mode,
        op_column=op_column,
        writer_id=writer_id,
        commit_id=commit_id,
        metadata=metadata,
        storage_options=storage_options,
        min_rows_per_task=min_rows_per_task,
    )
    if writer_id is not None and commit_id is not None:
        last = sink.table.last_commit(writer_id)
        if last is not None and last.commit_id == commit_id:
            return sink.table.snapshot(last.snapshot_id)
    schema = sink.table_schema
    if group_by_bucket is None:
        group_by_bucket = schema.buckets > 1 or bool(schema.partition_by)
    if write_tasks is not None and (not isinstance(write_tasks, int) or write_tasks < 1):
        raise InvalidInput("write_tasks must be a positive integer")
    if group_by_bucket:
        return write_grouped(ds, sink, parts=write_tasks)
    ordered = Dataset.copy(ds, _deep_copy=True)
    ordered.context.execution_options.preserve_order = True
    ordered.write_datasink(sink)
    return sink.snapshot
