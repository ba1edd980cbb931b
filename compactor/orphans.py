"""Orphan removal: delete objects under ``data/`` and ``manifest/`` that no snapshot present
or tagged needs and that are older than a grace period.

Uploads of a live writer or compactor are not referenced until their commit; the grace period
(default one day, like Paimon) is what keeps them alive. It never touches ``schema/`` or
``snapshot/`` (except temporary files of local puts killed mid-write).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compactor.references import (
    DEFAULT_ORPHAN_GRACE,
    Age,
    MaintenanceReport,
    changelog_files,
    cutoff_ms,
    delete_all,
    load_snapshots,
    manifests_needed_by,
    open_table_arg,
    parallel,
    tag_references,
)
from lsm3.errors import CorruptMetadata
from lsm3.format.metadata import ManifestEntry, Snapshot
from lsm3.io.store import ObjectInfo
from lsm3.table import Table
from lsm3.write.log import snapshot_key, split_history


@dataclass
class OrphanResult(MaintenanceReport):
    """What :func:`remove_orphan_files` removed (or, with ``dry_run``, would remove)."""

    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    scanned: int = 0
    referenced: int = 0
    young: int = 0
    young_bytes: int = 0

    @property
    def files(self) -> int:
        return len(self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "dry_run": self.dry_run,
            "files": self.files,
            "bytes": self.bytes,
            "scanned": self.scanned,
            "referenced": self.referenced,
            "young": self.young,
            "young_bytes": self.young_bytes,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
        }


def remove_orphan_files(
    table_or_uri: Table | str,
    older_than: Age = DEFAULT_ORPHAN_GRACE,
    *,
    storage_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> OrphanResult:
    """Delete objects under ``data/`` and ``manifest/`` that no snapshot present or tagged
    needs (a manifest it lists or its delta manifest; a data file live in it) and that are
    older than the grace period ``older_than`` (a ``timedelta``, milliseconds, or a
    ``datetime``).

    The grace period must exceed the longest time a writer or compactor takes from uploading
    a file to committing it: an upload older than that, still uncommitted, is deleted, and
    its later commit would reference a missing file. One day (the default) is generous.
    Object ages come from the store's last-modified times, so clock skew between this host
    and the store shortens or lengthens the grace period by that skew.
    """
    started = time.perf_counter()
    table = open_table_arg(table_or_uri, storage_options)
    cutoff = cutoff_ms(older_than, "older_than")
    store = table.store
    requests_before = store.stats.total_requests()
    result = OrphanResult(uri=table.uri, dry_run=dry_run)

    # List the objects before the snapshots: a file committed in between is then seen as
    # referenced, whatever its age.
    objects = [*store.list("data/"), *store.list("manifest/")]
    # Temporary files of local puts killed mid-write (never objects of the format).
    objects += [
        info
        for prefix in ("snapshot/", "schema/", "tag/")
        for info in store.list(prefix)
        if _TEMPORARY.search(info.key)
    ]
    result.scanned = len(objects)
    seen: set[int] = set()
    referenced: set[str] = set()
    ids = table.log.list_ids()
    detached = set(split_history(ids, table.log.expired_through())[1]) if ids else set()
    _collect_references(table, ids, detached, referenced, seen)
    # Commits that landed while we were reading: one more LIST, and their references too.
    newer = table.log.list_ids(after=max(ids) if ids else None)
    _collect_references(table, newer, set(), referenced, seen)
    referenced |= tag_references(table)

    orphans: list[ObjectInfo] = []
    for info in objects:
        if info.key in referenced:
            result.referenced += 1
        elif info.last_modified_ms > cutoff:
            result.young += 1
            result.young_bytes += info.size
        else:
            orphans.append(info)
    result.removed = [o.key for o in orphans]
    result.bytes = sum(o.size for o in orphans)
    if not dry_run:
        delete_all(table, result.removed)
    result.finish(table, requests_before, started)
    return result


_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.tmp$")


def _collect_references(
    table: Table,
    ids: Sequence[int],
    detached: set[int],
    referenced: set[str],
    seen: set[int],
) -> None:
    """Add to ``referenced`` every manifest the snapshots ``ids`` need and every data file
    live in one of them (a file only named by a ``remove`` entry is read by nobody).
    Snapshots expired meanwhile are skipped, and so are the missing manifests of
    ``detached`` snapshots (see :func:`expire_snapshots`); a manifest missing under any
    other snapshot is corruption and stops everything: we could no longer tell which files
    are referenced."""
    todo = [i for i in ids if i not in seen]
    seen.update(todo)
    snapshots = [snap for snap in load_snapshots(table, todo) if snap is not None]

    def manifests_of(snap: Snapshot) -> set[str]:
        try:
            return table.manifests.referenced(snap)
        except CorruptMetadata:
            if snap.snapshot_id in detached:
                return set(snap.referenced_manifests)
            if table.store.head(snapshot_key(snap.snapshot_id)) is None:
                return set()  # its snapshot was expired meanwhile
            raise

    for names in parallel(manifests_of, snapshots):
        referenced.update(names)

    def live_files(snap: Snapshot) -> list[str]:
        try:
            return [f.path for f in table.files_of(snap)]
        except CorruptMetadata:
            if snap.snapshot_id in detached:
                # keep what it names until expiry removes it
                return [e.file.path for e in _named_entries(table, snap)]
            if table.store.head(snapshot_key(snap.snapshot_id)) is None:
                return []  # its snapshot was expired meanwhile
            raise

    for paths in parallel(live_files, snapshots):
        referenced.update(paths)
    for snap in snapshots:  # changelog files, which no live set holds
        referenced.update(f.path for f in changelog_files(table, snap))


def _named_entries(table: Table, snap: Snapshot) -> list[ManifestEntry]:
    """Entries of the manifests of ``snap`` that still exist (a detached snapshot's older
    manifests may be gone)."""
    out: list[ManifestEntry] = []
    for path in manifests_needed_by(table, snap):
        try:
            out.extend(table.manifests.entries(path, table.schema_at(snap.schema_id)))
        except CorruptMetadata:
            continue
    return out


# --------------------------------------------------------------------------- helpers
