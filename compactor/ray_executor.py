"""Compaction tasks as Ray tasks: ``compact(..., executor="ray")``.

The driver plans and commits (under its lease, by the usual conflict rules; the outputs of
the tasks that finished together in one COMPACT snapshot); each job runs as one Ray task
that reopens the table from its URI and ``storage_options``, merges the inputs, uploads the
outputs and returns their descriptions. Ray retries a task whose worker died
(``max_retries``): the dead attempt's uploads are never committed (only the descriptions a
finished attempt returns are), so they are orphans for ``remove_orphan_files``, never
duplicates; an input's rows are in exactly the outputs of the one attempt that is committed.
A task that raises is not retried: ``compact`` raises, the tasks committed before stay, and
the failed task's inputs stay live.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ray

from compactor.executor import Admit, Job, Outputs, write_outputs
from lsm3.format.metadata import DataFile
from lsm3.ray import ensure_ray, open_shared_table

#: Attempts after a worker dies (a task that raises is not retried: that is a real error).
MAX_RETRIES = 3
#: Seconds between lease heartbeats while tasks run.
HEARTBEAT_SECONDS = 5.0


def _run_job(
    uri: str, storage_options: Mapping[str, Any] | None, job: Job
) -> tuple[list[DataFile], int, float]:
    started = time.perf_counter()
    table = open_shared_table(uri, storage_options)
    before = table.store.stats.total_requests()
    files = write_outputs(table, job.task, job.drop_tombstones)
    return files, table.store.stats.total_requests() - before, time.perf_counter() - started


class RayExecutor:
    """Starts every admitted job of a round at once as a Ray task; yields outputs as tasks
    finish. ``ray_remote_args`` go to ``ray.remote`` (e.g. ``{"num_cpus": 2}``)."""

    #: The function a Ray task runs for a job (tests replace it to kill workers).
    task = staticmethod(_run_job)

    def __init__(
        self,
        uri: str,
        storage_options: Mapping[str, Any] | None = None,
        ray_remote_args: Mapping[str, Any] | None = None,
    ) -> None:
        open_shared_table(uri, storage_options)  # refuse memory:// before starting anything
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self.remote_args = {"max_retries": MAX_RETRIES, **dict(ray_remote_args or {})}

    def run(
        self,
        table: Any,
        jobs: Sequence[Job],
        admit: Admit,
        heartbeat: Callable[[], None],
    ) -> Iterator[Outputs]:
        for batch in self.run_batches(table, jobs, admit, heartbeat):
            yield from batch

    def run_batches(
        self,
        table: Any,
        jobs: Sequence[Job],
        admit: Admit,
        heartbeat: Callable[[], None],
    ) -> Iterator[list[Outputs]]:
        """The outputs of the tasks that finished by the time the caller is ready for more,
        together: the caller commits them in one snapshot, so a round of many small tasks
        does not queue one commit per task behind the driver."""
        ensure_ray()
        remote = ray.remote(**self.remote_args)(self.task)
        pending: dict[Any, Job] = {}
        try:
            for job in jobs:
                if admit(job) is not None:
                    break
                pending[remote.remote(self.uri, self.storage_options or None, job)] = job
            while pending:
                ready, rest = ray.wait(list(pending), num_returns=1, timeout=HEARTBEAT_SECONDS)
                heartbeat()
                if ready and rest:  # and every other task done by now
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
                batch = []
                for ref in ready:
                    job = pending.pop(ref)
                    files, requests, seconds = ray.get(ref)
                    batch.append(Outputs(job, files, requests, seconds))
                if batch:
                    yield batch
        finally:
            for ref in pending:  # a failure or a stopped caller: drop what is still running
                ray.cancel(ref)
