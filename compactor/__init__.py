"""The standalone lsm3 compactor: policies, execution, maintenance and the scheduled job.

It coordinates with writers only through the table's snapshot log: ``compact()`` commits
COMPACT snapshots with the same conditional put writers use, under a lease that fences a
second compactor but never a writer.
"""

from compactor.compact import CompactionResult, compact
from compactor.executor import TaskResult
from compactor.lease import Fenced, LeaseHeld
from compactor.maintenance import (
    ConcurrentMaintenance,
    ExpireResult,
    OrphanResult,
    expire_snapshots,
    remove_orphan_files,
)
from compactor.manifests import rewrite_manifests
from compactor.policy import (
    PolicyOptions,
    SortedRun,
    Task,
    full,
    leveled,
    plan,
    sorted_runs,
    universal,
)

__all__ = [
    "CompactionResult",
    "ConcurrentMaintenance",
    "ExpireResult",
    "Fenced",
    "LeaseHeld",
    "OrphanResult",
    "PolicyOptions",
    "SortedRun",
    "Task",
    "TaskResult",
    "compact",
    "expire_snapshots",
    "full",
    "leveled",
    "plan",
    "remove_orphan_files",
    "rewrite_manifests",
    "sorted_runs",
    "universal",
]
