"""Consumers: named readers of the changelog whose position the table stores.

A consumer's position is the last snapshot whose changes it has processed; it lives in
``consumer/<id>.json`` (docs/FORMAT.md, section 16) and only moves forward, by a conditional
put (If-Match on the object's ETag), so two processes sharing an id cannot both advance it
from the same place. Snapshot expiry keeps every snapshot from the smallest position of the
live consumers on, so a consumer never finds the changes it still needs expired; a consumer
idle for longer than the table option ``consumer_expiration`` (seconds; default: never) is
dropped by expiry and holds nothing.

Creating a consumer races with expiry. Expiry announces what it is about to expire
(``consumer/expiring/<id>``) and then lists the consumers again; a new consumer puts its
object and then reads the announcements and the expiry markers. So either expiry sees the
consumer (and deletes nothing) or the consumer sees that its start is being expired (and
refuses): never a consumer whose snapshots are gone.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lsm3.errors import (
    CommitConflict,
    CorruptMetadata,
    InvalidInput,
    ObjectNotFound,
    PreconditionFailed,
    SnapshotNotFound,
)
from lsm3.io.store import ObjectStore
from lsm3.read.changelog import changelog_batches, changelog_table

if TYPE_CHECKING:
    from lsm3.table import Table

CONSUMER_PREFIX = "consumer/"
#: Expiry's announcements: ``consumer/expiring/<newest id it will expire, 20 digits>``.
EXPIRING_PREFIX = "consumer/expiring/"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_consumer_id(consumer_id: Any) -> str:
    if not isinstance(consumer_id, str) or not _NAME.match(consumer_id) or ".." in consumer_id:
        raise InvalidInput(
            f"consumer id {consumer_id!r} is not allowed: use 1-128 letters, digits, '_', '.' "
            "or '-', not starting with '.' or '-' and without '..' (it becomes an object name)"
        )
    return consumer_id


def consumer_key(consumer_id: str) -> str:
    return f"{CONSUMER_PREFIX}{check_consumer_id(consumer_id)}.json"


@dataclass(frozen=True)
class ConsumerState:
    consumer_id: str
    snapshot_id: int  # the last snapshot whose changes were processed (0: none yet)
    updated_ms: int

    def encode(self) -> bytes:
        doc = {
            "format": "lsm3-consumer",
            "format_version": 1,
            "consumer_id": self.consumer_id,
            "snapshot_id": self.snapshot_id,
            "updated_ms": self.updated_ms,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @staticmethod
    def decode(raw: bytes, what: str) -> ConsumerState:
        try:
            doc = json.loads(raw)
            if doc.get("format") != "lsm3-consumer" or doc.get("format_version") != 1:
                raise ValueError("not an lsm3-consumer object of format version 1")
            sid, ms, cid = doc["snapshot_id"], doc["updated_ms"], doc["consumer_id"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sid, ms)):
                raise ValueError("snapshot_id and updated_ms must be integers")
            if sid < 0 or not isinstance(cid, str):
                raise ValueError("bad snapshot_id or consumer_id")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise CorruptMetadata(f"{what} is malformed: {exc}") from None
        return ConsumerState(check_consumer_id(cid), sid, ms)


def list_consumers(store: ObjectStore) -> dict[str, ConsumerState]:
    """Every consumer of the table (objects that are not consumers are ignored)."""
    out: dict[str, ConsumerState] = {}
    for info in store.list(CONSUMER_PREFIX):
        name = info.key[len(CONSUMER_PREFIX) :]
        if not name.endswith(".json") or not _NAME.match(name[: -len(".json")]):
            continue  # e.g. the temporary file of an interrupted local put
        try:
            raw = store.get(info.key)
        except ObjectNotFound:
            continue  # dropped meanwhile
        state = ConsumerState.decode(raw, info.key)
        out[state.consumer_id] = state
    return out


def announce_expiry(store: ObjectStore, through: int) -> str:
    """Expiry: say that snapshots up to ``through`` are about to expire (before it lists the
    consumers a last time); returns the announcement's key, to withdraw afterwards."""
    key = f"{EXPIRING_PREFIX}{through:020d}"
    store.put(key, b"")
    return key


def announced_through(store: ObjectStore, above: int) -> int:
    """The newest snapshot an expiry has announced it will expire, above ``above`` (0: none)."""
    start = f"{EXPIRING_PREFIX}{above:020d}" if above > 0 else None
    found = [
        int(info.key[len(EXPIRING_PREFIX) :])
        for info in store.list(EXPIRING_PREFIX, start_after=start)
        if info.key[len(EXPIRING_PREFIX) :].isdigit()
    ]
    return max(found, default=0)


def covered_announcements(store: ObjectStore, through: int) -> list[str]:
    """Announcements of snapshots up to ``through``: moot once a marker covers them."""
    return [
        info.key
        for info in store.list(EXPIRING_PREFIX)
        if info.key[len(EXPIRING_PREFIX) :].isdigit()
        and int(info.key[len(EXPIRING_PREFIX) :]) <= through
    ]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Consumer:
    """A named changelog reader; see the module docstring. Get one with ``table.consumer``."""

    def __init__(self, table: Table, consumer_id: str, start_snapshot_id: int | None = None):
        self.table = table
        self.consumer_id = check_consumer_id(consumer_id)
        self.key = consumer_key(consumer_id)
        self._etag: str | None = None
        self.state = self._load() or self._create(start_snapshot_id)

    @property
    def position(self) -> int:
        """The last snapshot whose changes this consumer has processed."""
        return self.state.snapshot_id

    def _load(self) -> ConsumerState | None:
        try:
            raw, etag = self.table.store.get_with_etag(self.key)
        except ObjectNotFound:
            return None
        self._etag = etag
        return ConsumerState.decode(raw, f"consumer {self.consumer_id} of {self.table.uri}")

    def _create(self, start: int | None) -> ConsumerState:
        if start is None:
            snap = self.table.refresh()
            start = snap.snapshot_id if snap else 0
        elif not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise InvalidInput(f"start_snapshot_id must be a snapshot id >= 0, got {start!r}")
        state = ConsumerState(self.consumer_id, start, _now_ms())
        try:
            self.table.store.put_if_absent(self.key, state.encode())
        except PreconditionFailed:  # created by someone else just now: use theirs
            found = self._load()
            if found is None:
                raise CommitConflict(
                    f"consumer {self.consumer_id} vanished while created"
                ) from None
            return found
        store = self.table.store
        if start > 0 and (
            self.table.log.expired_through(start - 1) >= start
            or announced_through(store, start - 1) >= start
        ):
            self.table.store.delete(self.key)
            raise SnapshotNotFound(
                f"snapshot {start} is expired, so consumer {self.consumer_id} cannot start "
                "there; start it at a retained snapshot (default: the current one)"
            )
        loaded = self._load()
        assert loaded is not None
        return loaded

    def batches(
        self, end_snapshot_id: int | None = None, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The changes since this consumer's position (streamed; the position is unchanged)."""
        return changelog_batches(self.table, self.position, end_snapshot_id, columns)

    def read(
        self, end_snapshot_id: int | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """The changes since this consumer's position, as one table (position unchanged:
        call :meth:`commit` with the last ``_snapshot_id`` processed, or the end)."""
        return changelog_table(self.table, self.position, end_snapshot_id, columns)

    def commit(self, snapshot_id: int) -> None:
        """Record that the changes up to ``snapshot_id`` are processed (never backwards)."""
        if not isinstance(snapshot_id, int) or isinstance(snapshot_id, bool) or snapshot_id < 0:
            raise InvalidInput(f"snapshot_id must be a snapshot id >= 0, got {snapshot_id!r}")
        if snapshot_id < self.position:
            raise InvalidInput(
                f"consumer {self.consumer_id} is at snapshot {self.position}; it cannot move "
                f"back to {snapshot_id}"
            )
        latest = self.table.refresh()
        if snapshot_id > (latest.snapshot_id if latest else 0):
            raise InvalidInput(f"snapshot {snapshot_id} does not exist yet")
        state = ConsumerState(self.consumer_id, snapshot_id, _now_ms())
        try:
            if self._etag is None:
                raise PreconditionFailed("no ETag")
            self.table.store.put_if_match(self.key, state.encode(), self._etag)
        except (PreconditionFailed, ObjectNotFound):
            current = self._load()
            if current is None:
                raise CommitConflict(
                    f"consumer {self.consumer_id} was dropped (idle past the table's "
                    "consumer_expiration, or deleted); create it again"
                ) from None
            raise CommitConflict(
                f"consumer {self.consumer_id} was moved to snapshot {current.snapshot_id} by "
                "another process; one process per consumer id"
            ) from None
        self.state = self._load() or state

    def delete(self) -> None:
        """Drop this consumer: it no longer holds snapshots from expiry."""
        self.table.store.delete(self.key)


def follow(
    table: Table,
    consumer_id: str,
    poll_interval: float = 1.0,
    columns: Sequence[str] | None = None,
    stop: Any = None,
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(snapshot_id, changes)`` for every new commit, forever (or until ``stop``, an
    object with ``is_set()`` such as a ``threading.Event``, is set). The consumer's position
    is committed when the loop asks for the next item, so a crash while processing replays
    that commit: keep the snapshot id with the results downstream (in the same transaction)
    to make it exactly once."""
    consumer = Consumer(table, consumer_id)
    while stop is None or not stop.is_set():
        latest = table.refresh()
        newest = latest.snapshot_id if latest else 0
        for sid in range(consumer.position + 1, newest + 1):
            yield sid, changelog_table(table, sid - 1, sid, columns)
            consumer.commit(sid)
        if stop is not None and stop.wait(poll_interval):
            return
        if stop is None:
            time.sleep(poll_interval)
