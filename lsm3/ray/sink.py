"""Writing: a Ray Dataset into a table, in parallel tasks and one commit.

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

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
from ray.data import Dataset
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

import lsm3
from lsm3.errors import InvalidInput, SchemaMismatch
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import TableSchema
from lsm3.ray.cluster import open_shared_table
from lsm3.table import Table
from lsm3.write.bulk import GROUP_COLUMN, MODES, tag_rows, write_group, write_rows
from lsm3.write.commit import commit_files
from lsm3.write.writer import Writer

#: Local sequence numbers each write task may use (one per flush; a task would have to
#: buffer ~2^20 memtables to run out).
SEQUENCES_PER_TASK = 1 << 20


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
