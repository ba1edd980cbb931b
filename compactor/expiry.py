"""Snapshot expiry: delete the oldest snapshots past ``retain_last`` and ``older_than``, then
the manifests and data files only they referenced.

Oldest first, so a crash leaves a contiguous suffix of snapshots; the newest is never
expired. Like Iceberg it deletes the files only expired snapshots referenced: those were
committed, so no live writer can still be about to commit them, and no later commit can refer
to them again (writers only add new files, and a compaction only removes files live in the
newest snapshot). Before deleting anything it writes the expiry marker (docs/FORMAT.md,
section 12), so a paused committer cannot report an expired id as landed.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lsm3
from compactor.references import (
    DEFAULT_RETAIN_LAST,
    DEFAULT_SNAPSHOT_AGE,
    LOAD_BATCH,
    Age,
    ConcurrentMaintenance,
    MaintenanceReport,
    changelog_files,
    cutoff_ms,
    delete_all,
    load_snapshots,
    manifests_needed_by,
    open_table_arg,
    snapshot_objects,
    tag_references,
)
from lsm3.errors import CorruptMetadata, InvalidInput, SnapshotNotFound
from lsm3.format.metadata import ManifestEntry, Snapshot
from lsm3.read.changelog_file import names_a_run
from lsm3.read.consumer import (
    ConsumerState,
    announce_expiry,
    consumer_key,
    covered_announcements,
    list_consumers,
)
from lsm3.table import Table
from lsm3.write.log import LATEST_HINT, snapshot_key, split_history

log = logging.getLogger("compactor.maintenance")


@dataclass
class ExpireResult(MaintenanceReport):
    """What :func:`expire_snapshots` removed (or, with ``dry_run``, would remove)."""

    expired: list[int] = field(default_factory=list)
    detached: list[int] = field(default_factory=list)
    dropped_consumers: list[str] = field(default_factory=list)
    retained: int = 0
    oldest_retained: int | None = None
    manifests: list[str] = field(default_factory=list)
    data_files: list[str] = field(default_factory=list)
    snapshot_bytes: int = 0
    manifest_bytes: int = 0
    data_bytes: int = 0

    @property
    def files(self) -> int:
        """Objects removed: snapshot objects, manifests and data files."""
        return len(self.expired) + len(self.detached) + len(self.manifests) + len(self.data_files)

    @property
    def bytes(self) -> int:
        return self.snapshot_bytes + self.manifest_bytes + self.data_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "dry_run": self.dry_run,
            "expired_snapshots": self.expired,
            "detached_snapshots": self.detached,
            "dropped_consumers": self.dropped_consumers,
            "retained_snapshots": self.retained,
            "oldest_retained": self.oldest_retained,
            "manifests": len(self.manifests),
            "data_files": len(self.data_files),
            "files": self.files,
            "bytes": self.bytes,
            "data_bytes": self.data_bytes,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
        }


def expire_snapshots(
    table_or_uri: Table | str,
    retain_last: int = DEFAULT_RETAIN_LAST,
    older_than: Age = DEFAULT_SNAPSHOT_AGE,
    *,
    storage_options: Mapping[str, Any] | None = None,
    delete_files: bool = True,
    dry_run: bool = False,
) -> ExpireResult:
    """Delete snapshots that are older than ``older_than`` and not among the newest
    ``retain_last`` (at least 1: the newest snapshot is never expired), oldest first; then
    the manifests and data files that only the expired snapshots referenced (unless
    ``delete_files`` is false: then :func:`remove_orphan_files` finds them later).

    ``older_than`` is an age (a ``timedelta``, or milliseconds) or a ``datetime``: snapshots
    committed at or before it may expire. Snapshot ids below a gap in the id sequence are not
    part of the table's history (see ``detached`` in the result) and are expired whatever
    their age. Readers of an expired snapshot get ``SnapshotNotFound``; a reader still
    scanning one may find its files gone, which is what ``older_than`` guards against.
    """
    started = time.perf_counter()
    table = open_table_arg(table_or_uri, storage_options)
    if isinstance(retain_last, bool) or not isinstance(retain_last, int) or retain_last < 1:
        raise InvalidInput(
            f"retain_last must be an integer >= 1 (the newest snapshot is always kept), "
            f"got {retain_last!r}"
        )
    cutoff = cutoff_ms(older_than, "older_than")
    store = table.store
    requests_before = store.stats.total_requests()
    result = ExpireResult(uri=table.uri, dry_run=dry_run)

    listed = snapshot_objects(table)
    if listed:
        history, detached = split_history(sorted(listed), table.log.expired_through())
        kept_from = _retained_from(table, history, retain_last)
        consumers, idle = _consumers(table)
        if consumers:  # a consumer needs its position's snapshot and every later one
            held = min(c.snapshot_id for c in consumers.values())
            kept_from = min(kept_from, bisect.bisect_left(history, held))
        result.dropped_consumers = sorted(idle)
        if not dry_run:  # idle past consumer_expiration: they hold nothing any more
            for consumer_id in result.dropped_consumers:
                store.delete(consumer_key(consumer_id))
        expired, consumed = _expirable(table, history[:kept_from], cutoff)
        dead = [s for s in load_snapshots(table, detached) if s is not None]
        result.expired = [s.snapshot_id for s in expired]
        result.detached = [s.snapshot_id for s in dead]
        result.retained = len(history) - consumed
        result.oldest_retained = history[consumed]
        result.snapshot_bytes = sum(listed[i].size for i in result.expired + result.detached)
        if dead:
            log.warning(
                "%s: snapshot(s) %s lie below a gap in the snapshot ids or an expiry marker, "
                "so they are not part of the table's history (an earlier expiry stopped before "
                "deleting them, or a process paused across an expiry put them); expiring them",
                table.uri,
                result.detached,
            )
        if (expired or dead) and delete_files:
            manifests, files = _only_referenced_by(table, expired, history[consumed])
            result.manifests = sorted(manifests)
            result.data_files = sorted(files)
        if (expired or dead) and not dry_run:
            gone = [*result.detached, *result.expired]
            # The marker first: from now on no committer can take an expired id and report it
            # as landed (docs/FORMAT.md, section 12).
            # Consumers a last time, after announcing what will expire: one created since the
            # first listing either sees the announcement (and refuses) or is seen here.
            intent = announce_expiry(store, max(gone))
            late = [c for c in _consumers(table)[0].values() if c.snapshot_id <= max(gone)]
            if late:
                store.delete(intent)
                raise ConcurrentMaintenance(
                    f"consumer {late[0].consumer_id} of {table.uri} was created at snapshot "
                    f"{late[0].snapshot_id} while expiry ran; nothing was deleted, run it again"
                )
            table.log.mark_expired(max(gone))
            # The marker says it for good now; announcements it covers (this one, and any an
            # interrupted expiry left behind) only cost a LIST entry.
            delete_all(table, covered_announcements(store, max(gone)))
            # Oldest first and one at a time: a crash leaves a contiguous suffix of
            # snapshots, which is what readers and the next expiry rely on.
            for sid in gone:
                store.delete(snapshot_key(sid))
            _forget(table, gone, result.manifests)
            _fix_latest_hint(table, max(gone), history[-1])
        if (expired or dead) and delete_files:
            # Tags are read only now, after the snapshots are gone: a tag created until now
            # is kept, and one created later sees the marker and refuses its snapshot.
            tagged = tag_references(table)
            result.manifests = [m for m in result.manifests if m not in tagged]
            result.data_files = [f for f in result.data_files if f not in tagged]
            result.data_bytes = sum(files[f] for f in result.data_files)
            if result.manifests:
                sizes = {i.key: i.size for i in store.list("manifest/")}
                result.manifest_bytes = sum(sizes.get(m, 0) for m in result.manifests)
            if not dry_run:
                # Snapshots before what they reference: never a snapshot with missing files.
                delete_all(table, result.manifests)
                delete_all(table, result.data_files)
    result.finish(table, requests_before, started)
    return result


def _expirable(table: Table, candidates: Sequence[int], cutoff: int) -> tuple[list[Snapshot], int]:
    """The oldest candidates committed at or before ``cutoff`` (timestamps never decrease
    along the history, so they are a prefix), and how many ids that prefix spans. Loads in
    small parallel batches, so a table with many young snapshots costs few requests."""
    expired: list[Snapshot] = []
    for start in range(0, len(candidates), LOAD_BATCH):
        batch = candidates[start : start + LOAD_BATCH]
        for offset, snap in enumerate(load_snapshots(table, batch)):
            if snap is None:  # expired meanwhile by another process
                continue
            if snap.timestamp_ms > cutoff:
                return expired, start + offset
            expired.append(snap)
    return expired, len(candidates)


def _consumers(table: Table) -> tuple[dict[str, ConsumerState], set[str]]:
    """The live changelog consumers, and the ids of those idle past the table's
    ``consumer_expiration`` (which expiry drops: they hold nothing)."""
    every = list_consumers(table.store)
    seconds = table.table_schema.option("consumer_expiration")
    if not seconds:
        return every, set()
    cutoff = time.time_ns() // 1_000_000 - seconds * 1000
    idle = {c for c, state in every.items() if state.updated_ms < cutoff}
    return {c: s for c, s in every.items() if c not in idle}, idle


def _retained_from(table: Table, history: Sequence[int], retain_last: int) -> int:
    """The index in ``history`` of the oldest snapshot ``retain_last`` keeps: the newest
    ``retain_last`` snapshots that are not compactor lease changes, and every snapshot after
    the oldest of them (lease commits would otherwise push data snapshots out)."""
    counted = 0
    end = len(history)
    while end > 0:
        batch = history[max(0, end - LOAD_BATCH) : end]
        snaps = load_snapshots(table, batch)
        for index in range(len(batch) - 1, -1, -1):
            snap = snaps[index]
            if snap is None or not snap.is_lease_only:
                counted += 1
                if counted >= retain_last:
                    return end - len(batch) + index
        end -= len(batch)
    return 0


def _only_referenced_by(
    table: Table, expired: Sequence[Snapshot], first_retained: int
) -> tuple[set[str], dict[str, int]]:
    """Manifests no retained snapshot needs, and data files (path -> size) no retained
    snapshot can read, given the snapshots being expired.

    Manifests: a retained snapshot needs its manifest list, the manifests that list names,
    its tail and its delta manifest. Every commit keeps its parent's manifests or replaces
    some of them by new ones (fresh names, never listed again once dropped), so the
    snapshots that need one object are consecutive, and what an expired snapshot shares with
    any retained one it shares with the oldest retained one.

    Detached snapshots (below a gap in the ids or an expiry marker) were never part of the
    history. Only their snapshot objects are deleted here, not the files they name: the
    paused committer that put one commits the same data files again in a later snapshot.
    Orphan removal, which checks every retained snapshot, deletes what nothing took.

    Data files: a file leaves the live set only by a ``remove`` entry, which sits in the
    delta manifest of the snapshot that removed it. A file removed by an expired snapshot, or
    by the oldest retained one, is live in no retained snapshot and no incremental read of
    retained snapshots adds it, so it can go, even while manifests of retained snapshots
    still name it.
    """
    try:
        keep = table.log.load(first_retained)
    except SnapshotNotFound:
        raise ConcurrentMaintenance(
            f"snapshot {first_retained} of {table.uri} was expired by another process while "
            "this one was expiring; run one maintenance job per table"
        ) from None
    kept_manifests = table.manifests.referenced(keep)
    manifests: set[str] = set()
    for snap in expired:
        manifests.update(p for p in manifests_needed_by(table, snap) if p not in kept_manifests)
    # Files removed by the oldest retained snapshot were live only in its (expired) parent.
    # The oldest expired snapshot's removals were freed by the run that expired its parent
    # (or there are none: the first snapshot removes nothing).
    files: dict[str, int] = {}
    # With nothing expired now, the oldest retained snapshot's removals were freed before.
    for snap in [*expired[1:], keep] if expired else []:
        files.update(
            (e.file.path, e.file.size) for e in _delta_entries(table, snap) if e.op == "remove"
        )
    # A commit's changelog files are read through its snapshot only: they go with it. An
    # entry naming one of the commit's runs is not a changelog file: the run is data, freed
    # by the removal above once a later commit removed it.
    for snap in expired:
        files.update((f.path, f.size) for f in changelog_files(table, snap) if not names_a_run(f))
    return manifests, files


def _delta_entries(table: Table, snap: Snapshot) -> list[ManifestEntry]:
    """The entries of the snapshot's own commit ([] if it has none, or it was deleted by an
    earlier, interrupted expiry)."""
    if snap.delta_manifest is None:
        return []
    try:
        return table.manifests.delta_entries(snap, table.schema_at(snap.schema_id))
    except CorruptMetadata:
        return []


def _fix_latest_hint(table: Table, newest_expired: int, newest: int) -> None:
    """Point ``snapshot/LATEST`` at a retained snapshot if it named an expired one, so cold
    readers do not fall back to listing ``snapshot/`` on every open."""
    try:
        text = table.store.get(LATEST_HINT).decode("ascii", "replace").strip()
    except lsm3.StorageError:
        return
    if text.isdigit() and int(text) > newest_expired:
        return
    with contextlib.suppress(lsm3.StorageError):  # advisory only
        table.store.put(LATEST_HINT, str(newest).encode())


def _forget(table: Table, snapshot_ids: Iterable[int], manifests: Iterable[str]) -> None:
    """Drop expired snapshots and manifests from this Table's caches, so reading them through
    it raises SnapshotNotFound like a fresh reader would."""
    snapshot_ids = list(snapshot_ids)
    table.log.forget(snapshot_ids)
    table.manifests.forget(list(manifests), snapshot_ids)
