"""Maintenance: expire old snapshots and delete the objects no retained snapshot references.

Objects are only ever deleted here (DESIGN invariant 5), in two steps:

* :func:`expire_snapshots` deletes the oldest snapshots that are both past ``retain_last`` and
  older than ``older_than``, oldest first, so a crash leaves a contiguous suffix of snapshots;
  it never deletes the newest one. Like Iceberg it then deletes the manifests and data files
  that only expired snapshots referenced: those were committed, so no live writer can still
  be about to commit them, and no later commit can refer to them again (writers only add new
  files, and a compaction only removes files live in the newest snapshot).
* :func:`remove_orphan_files` lists ``data/`` and ``manifest/`` and deletes what no retained
  snapshot references and what is older than a grace period (default one day, like Paimon):
  uploads of a live writer or compactor are not referenced until their commit, and the grace
  period is what keeps them alive. It never touches ``schema/`` or ``snapshot/``.

Both take a ``Table`` (or a URI), go through the table's object store (which counts every
request), report what they removed in objects and bytes, and with ``dry_run`` only report.

The two jobs live in ``compactor/expiry.py`` and ``compactor/orphans.py``, on the shared ground
of ``compactor/references.py``; this module is their public face.
"""

from compactor.expiry import ExpireResult, expire_snapshots
from compactor.orphans import OrphanResult, remove_orphan_files
from compactor.references import (
    DEFAULT_ORPHAN_GRACE,
    DEFAULT_RETAIN_LAST,
    DEFAULT_SNAPSHOT_AGE,
    Age,
    ConcurrentMaintenance,
    cutoff_ms,
)

__all__ = [
    "DEFAULT_ORPHAN_GRACE",
    "DEFAULT_RETAIN_LAST",
    "DEFAULT_SNAPSHOT_AGE",
    "Age",
    "ConcurrentMaintenance",
    "ExpireResult",
    "OrphanResult",
    "cutoff_ms",
    "expire_snapshots",
    "remove_orphan_files",
]
