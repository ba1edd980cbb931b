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
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import lsm3
from lsm3.errors import CorruptMetadata, InvalidInput, Lsm3Error, SnapshotNotFound
from lsm3.format.metadata import DataFile, ManifestEntry, Snapshot
from lsm3.io.store import ObjectInfo
from lsm3.read.consumer import (
    ConsumerState,
    announce_expiry,
    consumer_key,
    covered_announcements,
    list_consumers,
)
from lsm3.table import Table
from lsm3.write.log import LATEST_HINT, SNAPSHOT_PREFIX, snapshot_key, split_history

log = logging.getLogger("compactor.maintenance")

#: Defaults of Paimon: ``snapshot.num-retained.min`` = 10, ``snapshot.time-retained`` = 1 h,
#: orphan files older than one day.
DEFAULT_RETAIN_LAST = 10
DEFAULT_SNAPSHOT_AGE = dt.timedelta(hours=1)
DEFAULT_ORPHAN_GRACE = dt.timedelta(days=1)

#: Parallel requests for loading metadata and deleting objects (deletes are independent).
_IO_THREADS = 8
#: Snapshots loaded per round while looking for the first one too young to expire.
_LOAD_BATCH = 32

#: An age (``timedelta``, or milliseconds as a number) or an absolute cutoff (``datetime``).
Age = dt.timedelta | dt.datetime | int | float

_T = TypeVar("_T")
_R = TypeVar("_R")


class ConcurrentMaintenance(Lsm3Error):
    """Another process expired snapshots of the same table while this one was computing."""


# --------------------------------------------------------------------------- results


@dataclass
class _Report:
    uri: str
    dry_run: bool
    requests: int = 0
    seconds: float = 0.0

    def _finish(self, table: Table, requests_before: int, started: float) -> None:
        self.requests = table.store.stats.total_requests() - requests_before
        self.seconds = time.perf_counter() - started


@dataclass
class ExpireResult(_Report):
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


@dataclass
class OrphanResult(_Report):
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


# --------------------------------------------------------------------------- expiry


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
    table = _open(table_or_uri, storage_options)
    if isinstance(retain_last, bool) or not isinstance(retain_last, int) or retain_last < 1:
        raise InvalidInput(
            f"retain_last must be an integer >= 1 (the newest snapshot is always kept), "
            f"got {retain_last!r}"
        )
    cutoff = cutoff_ms(older_than, "older_than")
    store = table.store
    requests_before = store.stats.total_requests()
    result = ExpireResult(uri=table.uri, dry_run=dry_run)

    listed = _snapshot_objects(table)
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
        dead = [s for s in _load_snapshots(table, detached) if s is not None]
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
            _delete_all(table, covered_announcements(store, max(gone)))
            # Oldest first and one at a time: a crash leaves a contiguous suffix of
            # snapshots, which is what readers and the next expiry rely on.
            for sid in gone:
                store.delete(snapshot_key(sid))
            _forget(table, gone, result.manifests)
            _fix_latest_hint(table, max(gone), history[-1])
        if (expired or dead) and delete_files:
            # Tags are read only now, after the snapshots are gone: a tag created until now
            # is kept, and one created later sees the marker and refuses its snapshot.
            tagged = _tag_references(table)
            result.manifests = [m for m in result.manifests if m not in tagged]
            result.data_files = [f for f in result.data_files if f not in tagged]
            result.data_bytes = sum(files[f] for f in result.data_files)
            if result.manifests:
                sizes = {i.key: i.size for i in store.list("manifest/")}
                result.manifest_bytes = sum(sizes.get(m, 0) for m in result.manifests)
            if not dry_run:
                # Snapshots before what they reference: never a snapshot with missing files.
                _delete_all(table, result.manifests)
                _delete_all(table, result.data_files)
    result._finish(table, requests_before, started)
    return result


def _expirable(table: Table, candidates: Sequence[int], cutoff: int) -> tuple[list[Snapshot], int]:
    """The oldest candidates committed at or before ``cutoff`` (timestamps never decrease
    along the history, so they are a prefix), and how many ids that prefix spans. Loads in
    small parallel batches, so a table with many young snapshots costs few requests."""
    expired: list[Snapshot] = []
    for start in range(0, len(candidates), _LOAD_BATCH):
        batch = candidates[start : start + _LOAD_BATCH]
        for offset, snap in enumerate(_load_snapshots(table, batch)):
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
        batch = history[max(0, end - _LOAD_BATCH) : end]
        snaps = _load_snapshots(table, batch)
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
        manifests.update(p for p in _referenced(table, snap) if p not in kept_manifests)
    # Files removed by the oldest retained snapshot were live only in its (expired) parent.
    # The oldest expired snapshot's removals were freed by the run that expired its parent
    # (or there are none: the first snapshot removes nothing).
    files: dict[str, int] = {}
    # With nothing expired now, the oldest retained snapshot's removals were freed before.
    for snap in [*expired[1:], keep] if expired else []:
        files.update(
            (e.file.path, e.file.size) for e in _delta_entries(table, snap) if e.op == "remove"
        )
    # A commit's changelog files are read through its snapshot only: they go with it.
    for snap in expired:
        files.update((f.path, f.size) for f in _changelog_files(table, snap))
    return manifests, files


def _changelog_files(table: Table, snap: Snapshot) -> list[DataFile]:
    """The changelog files the snapshot's commit stored (docs/FORMAT.md, section 16); none if
    it stored none, or its changelog manifest was deleted by an earlier, interrupted expiry."""
    if snap.changelog_manifest is None:
        return []
    try:
        entries = table.manifests.entries(snap.changelog_manifest, table.schema_at(snap.schema_id))
    except CorruptMetadata:
        return []
    return [e.file for e in entries]


def _delta_entries(table: Table, snap: Snapshot) -> list[ManifestEntry]:
    """The entries of the snapshot's own commit ([] if it has none, or it was deleted by an
    earlier, interrupted expiry)."""
    if snap.delta_manifest is None:
        return []
    try:
        return table.manifests.delta_entries(snap, table.schema_at(snap.schema_id))
    except CorruptMetadata:
        return []


def _tag_references(table: Table) -> set[str]:
    """Every manifest and live data file of a tagged snapshot (tags embed their snapshot, so
    it outlives the expiry of ``snapshot/`` objects; its files must too)."""
    out: set[str] = set()
    for snap in table.tagged_snapshots().values():
        out.update(table.manifests.referenced(snap))
        out.update(f.path for f in table.files_of(snap))
        out.update(f.path for f in _changelog_files(table, snap))
    return out


def _referenced(table: Table, snap: Snapshot) -> set[str]:
    """The manifest objects ``snap`` needs; of a snapshot whose manifest list is gone (an
    interrupted expiry, or a detached snapshot) only the objects it names itself."""
    try:
        return table.manifests.referenced(snap)
    except CorruptMetadata:
        return set(snap.referenced_manifests)


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


# --------------------------------------------------------------------------- orphans


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
    table = _open(table_or_uri, storage_options)
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
    referenced |= _tag_references(table)

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
        _delete_all(table, result.removed)
    result._finish(table, requests_before, started)
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
    snapshots = [snap for snap in _load_snapshots(table, todo) if snap is not None]

    def manifests_of(snap: Snapshot) -> set[str]:
        try:
            return table.manifests.referenced(snap)
        except CorruptMetadata:
            if snap.snapshot_id in detached:
                return set(snap.referenced_manifests)
            if table.store.head(snapshot_key(snap.snapshot_id)) is None:
                return set()  # its snapshot was expired meanwhile
            raise

    for names in _parallel(manifests_of, snapshots):
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

    for paths in _parallel(live_files, snapshots):
        referenced.update(paths)
    for snap in snapshots:  # changelog files, which no live set holds
        referenced.update(f.path for f in _changelog_files(table, snap))


def _named_entries(table: Table, snap: Snapshot) -> list[ManifestEntry]:
    """Entries of the manifests of ``snap`` that still exist (a detached snapshot's older
    manifests may be gone)."""
    out: list[ManifestEntry] = []
    for path in _referenced(table, snap):
        try:
            out.extend(table.manifests.entries(path, table.schema_at(snap.schema_id)))
        except CorruptMetadata:
            continue
    return out


# --------------------------------------------------------------------------- helpers


def cutoff_ms(older_than: Age, what: str, now_ms: int | None = None) -> int:
    """The cutoff time (ms since the epoch) for an age or an absolute ``datetime``."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if isinstance(older_than, dt.datetime):
        return int(older_than.timestamp() * 1000)
    if isinstance(older_than, dt.timedelta):
        age_ms = older_than.total_seconds() * 1000
    elif isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        age_ms = float(older_than)
    else:
        raise InvalidInput(
            f"{what} must be a timedelta, a number of milliseconds or a datetime, "
            f"got {older_than!r}"
        )
    if age_ms < 0 or age_ms != age_ms:
        raise InvalidInput(f"{what} must not be negative, got {older_than!r}")
    return now - int(age_ms)


def _open(table_or_uri: Table | str, storage_options: Mapping[str, Any] | None) -> Table:
    if isinstance(table_or_uri, Table):
        table_or_uri.refresh()
        return table_or_uri
    return lsm3.open_table(table_or_uri, storage_options)


def _snapshot_objects(table: Table) -> dict[int, ObjectInfo]:
    """The snapshot objects present, by id (the listing also gives their sizes)."""
    out: dict[int, ObjectInfo] = {}
    for info in table.store.list(SNAPSHOT_PREFIX):
        digits = info.key[len(SNAPSHOT_PREFIX) : -len(".json")]
        if digits.isdigit() and snapshot_key(int(digits)) == info.key:
            out[int(digits)] = info
    return out


def _load_snapshots(table: Table, ids: Sequence[int]) -> list[Snapshot | None]:
    """Snapshots in the order of ``ids`` (None for one that no longer exists)."""

    def load(sid: int) -> Snapshot | None:
        try:
            return table.log.load(sid)
        except SnapshotNotFound:
            return None

    return _parallel(load, ids)


def _parallel(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(
        max_workers=min(_IO_THREADS, len(items)), thread_name_prefix="lsm3-maintenance"
    ) as pool:
        return list(pool.map(fn, items))


def _delete_all(table: Table, keys: Sequence[str]) -> None:
    table.store.delete_many(list(keys))


__all__ = [
    "DEFAULT_ORPHAN_GRACE",
    "DEFAULT_RETAIN_LAST",
    "DEFAULT_SNAPSHOT_AGE",
    "ConcurrentMaintenance",
    "ExpireResult",
    "OrphanResult",
    "cutoff_ms",
    "expire_snapshots",
    "remove_orphan_files",
]
