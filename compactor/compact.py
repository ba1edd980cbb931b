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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import lsm3
from compactor.executor import TaskResult, run_task
from compactor.lease import Fenced, Lease, LeaseHeld
from compactor.policy import POLICIES, PolicyOptions, Task, drops_tombstones, plan
from lsm3.errors import CommitConflict, InvalidInput
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
) -> CompactionResult:
    """Compact one table; see the module docstring. ``policy`` defaults to the table's
    ``compaction_policy`` option; ``options`` override the table's compaction options."""
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
    opts = PolicyOptions(**values)
    requests_before = table.store.stats.total_requests()
    result = CompactionResult(uri=table.uri, policy=chosen)
    result.files_before = len(table.files())
    sequence_field = table.table_schema.sequence_field is not None
    lease: Lease | None = None
    try:
        for _ in range(max_rounds):
            files = table.files_of(table.refresh())
            tasks = plan(files, chosen, opts)
            if not tasks:
                break
            if lease is None:
                lease = _acquire(table, owner or default_owner(), wait_for_lease, stop)
            done_any = False
            for task in tasks:
                reason = _over_budget(result, table, requests_before, task, max_bytes, max_requests)
                if stop is not None and stop.is_set():
                    reason = "stop"
                if reason:
                    result.stopped_by = reason
                    break
                lease.renew_if_needed()
                bucket_files = [
                    f for f in files if (f.partition, f.bucket) == (task.partition, task.bucket)
                ]
                drop = drops_tombstones(task, bucket_files, sequence_field)
                try:
                    task_result = run_task(table, task, lease, drop)
                except CommitConflict as exc:
                    log.warning("task abandoned: %s", exc)
                    result.abandoned.append(str(exc))
                    continue
                result.tasks.append(task_result)
                done_any = True
                if on_task is not None:
                    on_task(task_result)
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
        result.requests = table.store.stats.total_requests() - requests_before
        result.seconds = time.perf_counter() - started
    return result


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


def _over_budget(
    result: CompactionResult,
    table: Table,
    requests_before: int,
    task: Task,
    max_bytes: int | None,
    max_requests: int | None,
) -> str | None:
    if max_bytes is not None and result.tasks and result.bytes_read + task.input_bytes > max_bytes:
        return "max_bytes"
    # Like max_bytes, the request budget always lets one task run, so a run makes progress.
    used = table.store.stats.total_requests() - requests_before
    if max_requests is not None and result.tasks and used >= max_requests:
        return "max_requests"
    return None
