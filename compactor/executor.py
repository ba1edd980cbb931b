"""Running compaction tasks: merge the inputs, write key-disjoint outputs, commit.

Running a task (``write_outputs``: files uploaded, nothing committed) and committing it
(``commit_outputs``, or ``commit_batch`` for several tasks in one snapshot) are separate
steps, so an executor can run tasks elsewhere (``LocalExecutor`` here, one by one in this
process; ``compactor.ray_executor`` on a Ray cluster) while the commits stay in the process
that holds the lease.

The merge is ``lsm3.read.scan.merge_group``, the reader's own merge, streamed section by section so
memory follows the task, not the table. Outputs keep each row's effective sequence number
(stored with offset 0), so the result reads exactly as the inputs did. The commit removes the
inputs and adds the outputs through the conditional put; if a writer committed meanwhile the
commit rebases onto it (writers only add newer files, which keep winning by sequence number);
if another commit removed an input, the task is abandoned and its outputs become orphans.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from compactor.changelog import full_compaction_changelog, produces_changelog
from compactor.lease import Lease
from compactor.policy import Task
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.read.runfile import RunWriter
from lsm3.read.scan import merge_group
from lsm3.table import Table
from lsm3.write.commit import commit_files


@dataclass
class TaskResult:
    """What one task did, in the figures the job logs."""

    partition: tuple[Any, ...]
    bucket: int
    reason: str
    output_level: int
    inputs: int
    outputs: int
    bytes_read: int
    bytes_written: int
    rows_in: int
    rows_out: int
    dropped_tombstones: bool
    requests: int
    seconds: float
    snapshot_id: int | None = None
    output_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": list(self.partition),
            "bucket": self.bucket,
            "reason": self.reason,
            "output_level": self.output_level,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped_tombstones": self.dropped_tombstones,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "snapshot_id": self.snapshot_id,
        }


def write_outputs(table: Table, task: Task, drop_tombstones: bool) -> list[DataFile]:
    """Merge the task's inputs and upload the outputs (not yet committed)."""
    schema = table.table_schema
    target = schema.option("target_file_bytes")
    columns = schema.file_schema().names
    # Output that is the oldest data of its range (the bottom) is what scans read most: it
    # gets larger row groups (docs/FORMAT.md, section 3)
    chunk_rows = (
        schema.bottom_row_group_rows if drop_tombstones else schema.option("row_group_rows")
    )
    run_id = uuid.uuid4().hex  # the outputs of a task form one sorted run
    uploads: list[Future[DataFile]] = []
    writer: RunWriter | None = None

    def upload(w: RunWriter) -> DataFile:
        encoded = w.finish()
        table.store.put(encoded.file.path, encoded.body)
        return encoded.file

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lsm3-compact-upload") as pool:
        for section in merge_group(
            table.store, schema, task.inputs, columns, drop_deletes=drop_tombstones
        ):
            # Row-group sized slices: the size check after each keeps files near the target.
            for start in range(0, section.num_rows, chunk_rows):
                if writer is None:
                    writer = RunWriter(
                        schema,
                        level=task.output_level,
                        partition=task.partition,
                        bucket=task.bucket,
                        run_id=run_id,
                        row_group_rows=chunk_rows,
                    )
                writer.write(section.slice(start, chunk_rows))
                if writer.size >= target:
                    uploads.append(pool.submit(upload, writer))
                    writer = None
        if writer is not None and writer.rows:
            uploads.append(pool.submit(upload, writer))
        return [u.result() for u in uploads]


@dataclass(frozen=True)
class Job:
    """A planned task and whether its merge drops tombstones."""

    task: Task
    drop_tombstones: bool


@dataclass
class Outputs:
    """What running a job produced: uploaded, not yet committed files."""

    job: Job
    files: list[DataFile]
    requests: int
    seconds: float


#: Called by an executor before it starts a job: a reason to start no more jobs, or None.
Admit = Callable[[Job], "str | None"]


class Executor(Protocol):
    """Runs jobs (merge the inputs, upload the outputs) and yields their outputs, each once,
    as they finish; committing is the caller's. It calls ``admit`` before starting each job
    and starts no more once it returns a reason, and ``heartbeat`` at least every few seconds
    while it waits (the caller renews its lease there). An executor that runs jobs at once
    may also offer ``run_batches`` (same arguments), yielding the outputs of the jobs that
    finished together as one list: ``compact`` then commits them in one snapshot."""

    def run(
        self,
        table: Table,
        jobs: Sequence[Job],
        admit: Admit,
        heartbeat: Callable[[], None],
    ) -> Iterator[Outputs]: ...


class LocalExecutor:
    """Jobs one after the other in this process: a job starts after the previous one's
    outputs were handed over (and committed)."""

    def run(
        self,
        table: Table,
        jobs: Sequence[Job],
        admit: Admit,
        heartbeat: Callable[[], None],
    ) -> Iterator[Outputs]:
        for job in jobs:
            if admit(job) is not None:
                return
            heartbeat()
            started = time.perf_counter()
            before = table.store.stats.total_requests()
            files = write_outputs(table, job.task, job.drop_tombstones)
            yield Outputs(
                job,
                files,
                table.store.stats.total_requests() - before,
                time.perf_counter() - started,
            )


def run_task(table: Table, task: Task, lease: Lease, drop_tombstones: bool) -> TaskResult:
    """Execute ``task`` and commit it under ``lease``; raises Fenced or CommitConflict."""
    started = time.perf_counter()
    requests_before = table.store.stats.total_requests()
    outputs = write_outputs(table, task, drop_tombstones)
    return commit_outputs(
        table,
        Outputs(Job(task, drop_tombstones), outputs, 0, 0.0),
        lease,
        requests_before,
        started,
    )


def commit_outputs(
    table: Table, done: Outputs, lease: Lease, requests_before: int, started: float
) -> TaskResult:
    """Commit a job's outputs in place of its inputs under ``lease`` (outputs keep their
    effective sequence numbers); raises Fenced or CommitConflict (another commit removed an
    input: the outputs become orphans)."""
    return commit_batch(table, [done], lease, requests_before, started)[0]


def commit_batch(
    table: Table, batch: Sequence[Outputs], lease: Lease, requests_before: int, started: float
) -> list[TaskResult]:
    """Commit the outputs of several finished jobs (of distinct buckets) in one COMPACT
    snapshot, each in place of its inputs: the conflict rule is per removed file, so the
    batch lands iff every job's inputs are still live; raises Fenced or CommitConflict
    (then nothing of the batch is committed)."""
    changelog: Callable[[Snapshot | None], list[DataFile]] | None = None
    if any(produces_changelog(table.table_schema, done.job.task) for done in batch):
        stored = [
            f
            for done in batch
            if produces_changelog(table.table_schema, done.job.task)
            for f in full_compaction_changelog(table, done.job.task, done.files)
        ]

        def changelog(_base: Snapshot | None) -> list[DataFile]:
            return stored  # the same files on every attempt: they depend on the tasks only

    snapshot: Snapshot = commit_files(
        table,
        added=[f for done in batch for f in done.files],
        removed=[f for done in batch for f in done.job.task.inputs],
        seq_count=0,
        kind="COMPACT",
        writer_id=None,
        commit_id=uuid.uuid4().hex,
        metadata=_commit_metadata(batch),
        assign_offset=False,
        compactor=lease.check(),
        changelog=changelog,
    )
    commit_requests = table.store.stats.total_requests() - requests_before
    commit_seconds = time.perf_counter() - started
    results = []
    for i, done in enumerate(batch):
        task, outputs = done.job.task, done.files
        results.append(
            TaskResult(
                partition=task.partition,
                bucket=task.bucket,
                reason=task.reason,
                output_level=task.output_level,
                inputs=len(task.inputs),
                outputs=len(outputs),
                bytes_read=task.input_bytes,
                bytes_written=sum(f.size for f in outputs),
                rows_in=sum(f.rows for f in task.inputs),
                rows_out=sum(f.rows for f in outputs),
                dropped_tombstones=done.job.drop_tombstones,
                # The commit's requests and time are counted once, with the first task.
                requests=(commit_requests if i == 0 else 0) + done.requests,
                seconds=(commit_seconds if i == 0 else 0.0) + done.seconds,
                snapshot_id=snapshot.snapshot_id,
                output_files=[f.path for f in outputs],
            )
        )
    return results


def _commit_metadata(batch: Sequence[Outputs]) -> dict[str, Any]:
    tasks = [done.job.task for done in batch]
    if len(tasks) == 1:
        return {"compactor": tasks[0].reason, "output_level": tasks[0].output_level}
    return {
        "compactor": ",".join(sorted({t.reason for t in tasks})),
        "output_level": max(t.output_level for t in tasks),
        "tasks": len(tasks),
    }
