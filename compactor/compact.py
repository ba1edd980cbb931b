"""``compact()``: plan, take the lease, run tasks within budgets, release.

This is the function the job calls for every table and that users can call themselves. It
plans on the latest snapshot, runs tasks one by one (re-planning after each round, because
one merge can make the next one due), and stops early when a byte or request budget is spent
or when asked to stop. Nothing here is needed for correctness: a compactor killed at any
point leaves a readable table and, at worst, orphans for ``remove_orphan_files``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import lsm3
from compactor.changelog import capped_options, plannable
from compactor.executor import Executor, Job, LocalExecutor, Outputs, TaskResult, commit_batch
from compactor.lease import Fenced, Lease, LeaseHeld
from compactor.policy import POLICIES, PolicyOptions, Task, drops_tombstones, plan
from lsm3.errors import CommitConflict, InvalidInput
from lsm3.format.metadata import DataFile
from lsm3.format.schema import validate_schema
from lsm3.table import Table

log = logging.getLogger("compactor")


@dataclass
class CompactionResult:
    """What one ``compact()`` call did to one table."""

    uri: str
    policy: str
    tasks: list[TaskResult] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # "max_bytes", "max_requests", "stop", "fenced", "lease-held"
    files_before: int = 0
    files_after: int = 0
    requests: int = 0
    seconds: float = 0.0
    worker_requests: int = 0  # requests made by remote workers (executor="ray")

    @property
    def bytes_read(self) -> int:
        return sum(t.bytes_read for t in self.tasks)

    @property
    def bytes_written(self) -> int:
        return sum(t.bytes_written for t in self.tasks)

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "policy": self.policy,
            "tasks": len(self.tasks),
            "abandoned": self.abandoned,
            "stopped_by": self.stopped_by,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
        }


def default_owner() -> str:
    """Unique per call, so two compactions in one process never share a lease by accident."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def resolve_options(table: Table, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The table's compaction options with ``overrides`` applied (unknown names refused)."""
    schema = table.table_schema
    names = set(PolicyOptions.__dataclass_fields__) | {"compaction_policy"}
    for k in overrides or {}:
        if k not in names:
            raise InvalidInput(f"unknown compaction option {k!r}; known: {sorted(names)}")
    # Overrides obey the same rules as table options.
    checked = replace(schema, options={**schema.options, **(overrides or {})})
    validate_schema(checked)
    return {n: checked.option(n) for n in names}


def compact(
    table_or_uri: Table | str,
    storage_options: Mapping[str, Any] | None = None,
    policy: str | None = None,
    *,
    max_bytes: int | None = None,
    max_requests: int | None = None,
    max_rounds: int = 16,
    owner: str | None = None,
    wait_for_lease: float = 0.0,
    options: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
    on_task: Callable[[TaskResult], None] | None = None,
    executor: str | Executor = "local",
) -> CompactionResult:
    """Compact one table; see the module docstring. ``policy`` defaults to the table's
    ``compaction_policy`` option; ``options`` override the table's compaction options.

    ``executor``: ``"local"`` runs the tasks one by one in this process; ``"ray"`` runs the
    tasks of a round as Ray tasks, at once, on the cluster ``RAY_ADDRESS`` names (else a
    local one; needs ``pip install lsm3[ray]``; workers reopen the table from its URI and
    ``storage_options``). Either way the plan is made here, and each task's outputs are
    committed here, under this process's lease, as they arrive (with Ray, the outputs of
    the tasks that finished together in one COMPACT snapshot). With Ray, ``max_bytes``
    is applied when tasks are started, and ``max_requests`` counts the workers' requests
    of finished tasks too."""
    started = time.perf_counter()
    table = (
        table_or_uri
        if isinstance(table_or_uri, Table)
        else lsm3.open_table(table_or_uri, storage_options)
    )
    table.refresh()
    values = resolve_options(table, options)
    chosen = policy or values.pop("compaction_policy")
    values.pop("compaction_policy", None)
    if chosen not in POLICIES:
        raise InvalidInput(f"unknown policy {chosen!r}; choose one of {sorted(POLICIES)}")
    opts = capped_options(table.table_schema, chosen, PolicyOptions(**values))
    runner = _executor(executor, table, storage_options)
    runner_is_remote = not isinstance(runner, LocalExecutor)
    requests_before = table.store.stats.total_requests()
    result = CompactionResult(uri=table.uri, policy=chosen)
    result.files_before = len(table.files())
    sequence_field = table.table_schema.sequence_field is not None
    lease: Lease | None = None
    in_flight: list[int] = []  # input bytes of jobs started and not yet committed

    def admit(job: Job) -> str | None:
        reason = _over_budget(
            result, table, requests_before, job.task, max_bytes, max_requests, in_flight
        )
        if stop is not None and stop.is_set():
            reason = "stop"
        if reason:
            result.stopped_by = reason
            return reason
        in_flight.append(job.task.input_bytes)
        return None

    try:
        for _ in range(max_rounds):
            files = table.files_of(table.refresh())
            tasks = plan(plannable(table.table_schema, chosen, files), chosen, opts)
            if not tasks:
                break
            if lease is None:
                lease = _acquire(table, owner or default_owner(), wait_for_lease, stop)
            held = lease
            jobs = [
                Job(task, drops_tombstones(task, _bucket_files(files, task), sequence_field))
                for task in tasks
            ]
            done_any = False
            for batch in _finished(runner, table, jobs, admit, held.renew_if_needed):
                for done in batch:
                    in_flight.remove(done.job.task.input_bytes)
                lease.renew_if_needed()
                for task_result in _commit(table, batch, lease, result):
                    result.tasks.append(task_result)
                    done_any = True
                    if on_task is not None:
                        on_task(task_result)
                if runner_is_remote:
                    result.worker_requests += sum(done.requests for done in batch)
            if result.stopped_by or not done_any:
                break
    except LeaseHeld:
        result.stopped_by = "lease-held"
        raise
    except Fenced:
        result.stopped_by = "fenced"
        lease = None
        raise
    finally:
        if lease is not None:
            with contextlib.suppress(Fenced):
                lease.release()
        result.files_after = len(table.files_of(table.refresh()))
        result.requests = (
            table.store.stats.total_requests() - requests_before + result.worker_requests
        )
        result.seconds = time.perf_counter() - started
    return result


def _finished(
    runner: Executor,
    table: Table,
    jobs: list[Job],
    admit: Callable[[Job], str | None],
    heartbeat: Callable[[], None],
) -> Iterator[list[Outputs]]:
    """The executor's finished jobs, in batches: those that finished together (an executor
    with ``run_batches``, such as Ray's), else one by one."""
    if hasattr(runner, "run_batches"):
        yield from runner.run_batches(table, jobs, admit, heartbeat)
    else:
        for done in runner.run(table, jobs, admit, heartbeat):
            yield [done]


def _commit(
    table: Table, batch: list[Outputs], lease: Lease, result: CompactionResult
) -> list[TaskResult]:
    """Commit a batch in one snapshot; if an input of one of its jobs is gone (another commit
    removed it), commit the jobs one by one instead, abandoning only those that conflict."""
    try:
        return commit_batch(
            table, batch, lease, table.store.stats.total_requests(), time.perf_counter()
        )
    except CommitConflict as exc:
        if len(batch) == 1:
            log.warning("task abandoned: %s", exc)
            result.abandoned.append(str(exc))
            return []
    return [r for done in batch for r in _commit(table, [done], lease, result)]


def _acquire(
    table: Table, owner: str, wait_for_lease: float, stop: threading.Event | None
) -> Lease:
    lease = Lease(table, owner, table.table_schema.option("compactor_lease_seconds"))
    deadline = time.monotonic() + wait_for_lease
    while True:
        try:
            lease.acquire()
            return lease
        except LeaseHeld:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise
            delay = min(5.0, max(0.1, deadline - time.monotonic()))
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)


def _bucket_files(files: list[DataFile], task: Task) -> list[DataFile]:
    return [f for f in files if (f.partition, f.bucket) == (task.partition, task.bucket)]


def _executor(
    executor: str | Executor, table: Table, storage_options: Mapping[str, Any] | None
) -> Executor:
    if executor == "local":
        return LocalExecutor()
    if executor == "ray":
        from compactor.ray_executor import RayExecutor  # Ray is optional: import on demand

        return RayExecutor(table.uri, storage_options)
    if isinstance(executor, str):
        raise InvalidInput(f"unknown executor {executor!r}; choose 'local' or 'ray'")
    return executor


def _over_budget(
    result: CompactionResult,
    table: Table,
    requests_before: int,
    task: Task,
    max_bytes: int | None,
    max_requests: int | None,
    in_flight: list[int],
) -> str | None:
    started = bool(result.tasks or in_flight)
    spent = result.bytes_read + sum(in_flight)
    if max_bytes is not None and started and spent + task.input_bytes > max_bytes:
        return "max_bytes"
    # Like max_bytes, the request budget always lets one task run, so a run makes progress.
    used = table.store.stats.total_requests() - requests_before + result.worker_requests
    if max_requests is not None and started and used >= max_requests:
        return "max_requests"
    return None
