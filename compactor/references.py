"""What retained snapshots reference, and the shared ground of the two maintenance jobs
(``compactor/expiry.py`` and ``compactor/orphans.py``): their defaults and reports, the age
cutoff, parallel loads of snapshots and deletes of objects.

Both jobs go through the table's object store (which counts every request) and report what
they removed in objects and bytes; with ``dry_run`` they only report.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import lsm3
from lsm3.errors import CorruptMetadata, InvalidInput, Lsm3Error, SnapshotNotFound
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.io.store import ObjectInfo
from lsm3.table import Table
from lsm3.write.log import SNAPSHOT_PREFIX, snapshot_key

#: Defaults of Paimon: ``snapshot.num-retained.min`` = 10, ``snapshot.time-retained`` = 1 h,
#: orphan files older than one day.
DEFAULT_RETAIN_LAST = 10
DEFAULT_SNAPSHOT_AGE = dt.timedelta(hours=1)
DEFAULT_ORPHAN_GRACE = dt.timedelta(days=1)

#: Parallel requests for loading metadata and deleting objects (deletes are independent).
IO_THREADS = 8
#: Snapshots loaded per round while looking for the first one too young to expire.
LOAD_BATCH = 32

#: An age (``timedelta``, or milliseconds as a number) or an absolute cutoff (``datetime``).
Age = dt.timedelta | dt.datetime | int | float

_T = TypeVar("_T")
_R = TypeVar("_R")


class ConcurrentMaintenance(Lsm3Error):
    """Another process expired snapshots of the same table while this one was computing."""


@dataclass
class MaintenanceReport:
    """What every maintenance job reports: the table, whether it only reported, and what it
    cost."""

    uri: str
    dry_run: bool
    requests: int = 0
    seconds: float = 0.0

    def finish(self, table: Table, requests_before: int, started: float) -> None:
        self.requests = table.store.stats.total_requests() - requests_before
        self.seconds = time.perf_counter() - started


def changelog_files(table: Table, snap: Snapshot) -> list[DataFile]:
    """The changelog files the snapshot's commit stored (docs/FORMAT.md, section 16); none if
    it stored none, or its changelog manifest was deleted by an earlier, interrupted expiry."""
    if snap.changelog_manifest is None:
        return []
    try:
        entries = table.manifests.entries(snap.changelog_manifest, table.schema_at(snap.schema_id))
    except CorruptMetadata:
        return []
    return [e.file for e in entries]


def tag_references(table: Table) -> set[str]:
    """Every manifest and live data file of a tagged snapshot (tags embed their snapshot, so
    it outlives the expiry of ``snapshot/`` objects; its files must too)."""
    out: set[str] = set()
    for snap in table.tagged_snapshots().values():
        out.update(table.manifests.referenced(snap))
        out.update(f.path for f in table.files_of(snap))
        out.update(f.path for f in changelog_files(table, snap))
    return out


def manifests_needed_by(table: Table, snap: Snapshot) -> set[str]:
    """The manifest objects ``snap`` needs; of a snapshot whose manifest list is gone (an
    interrupted expiry, or a detached snapshot) only the objects it names itself."""
    try:
        return table.manifests.referenced(snap)
    except CorruptMetadata:
        return set(snap.referenced_manifests)


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


def open_table_arg(table_or_uri: Table | str, storage_options: Mapping[str, Any] | None) -> Table:
    if isinstance(table_or_uri, Table):
        table_or_uri.refresh()
        return table_or_uri
    return lsm3.open_table(table_or_uri, storage_options)


def snapshot_objects(table: Table) -> dict[int, ObjectInfo]:
    """The snapshot objects present, by id (the listing also gives their sizes)."""
    out: dict[int, ObjectInfo] = {}
    for info in table.store.list(SNAPSHOT_PREFIX):
        digits = info.key[len(SNAPSHOT_PREFIX) : -len(".json")]
        if digits.isdigit() and snapshot_key(int(digits)) == info.key:
            out[int(digits)] = info
    return out


def load_snapshots(table: Table, ids: Sequence[int]) -> list[Snapshot | None]:
    """Snapshots in the order of ``ids`` (None for one that no longer exists)."""

    def load(sid: int) -> Snapshot | None:
        try:
            return table.log.load(sid)
        except SnapshotNotFound:
            return None

    return parallel(load, ids)


def parallel(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(
        max_workers=min(IO_THREADS, len(items)), thread_name_prefix="lsm3-maintenance"
    ) as pool:
        return list(pool.map(fn, items))


def delete_all(table: Table, keys: Sequence[str]) -> None:
    table.store.delete_many(list(keys))
