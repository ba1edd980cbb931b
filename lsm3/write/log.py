"""Versioned logs on object storage: find the newest version, commit the next one.

Version N of a log is the object ``<prefix><N as 20 digits>.json``. Committing N+1 is one
put-if-absent of that object: the put is the single linearisation point between all
processes, so a 412 means "someone else committed N+1": reload, rebuild on top of it (rebase)
and retry. An advisory ``LATEST`` object only speeds up discovery; the versioned objects are
the truth. The logic knows nothing of tables: table snapshots (:class:`SnapshotLog`) and the
catalog's state both use it.

A log whose old versions are deleted (table snapshots, by expiry) must never let a deleted
name be taken again: a committer paused between reading version N and putting N+1 would
otherwise "win" N+1 after expiry freed it and report a commit that no reader follows. So
expiry first writes an *expiry marker* ``<expired_prefix><K as 20 digits>`` (K: the newest
version it is about to delete), and a committer whose put succeeded lists the markers above
N: one there means its version was expired before it was put, so it is not history; the
committer rebases and tries again. No clocks are involved, only the order "marker, then
delete" and the store's read-after-write consistency.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from lsm3.errors import (
    CommitConflict,
    CorruptMetadata,
    ObjectNotFound,
    PreconditionFailed,
    SnapshotNotFound,
    StorageError,
)
from lsm3.format.metadata import Snapshot
from lsm3.io.store import ObjectStore

log = logging.getLogger("lsm3.write.log")

V = TypeVar("V")


class VersionLog(Generic[V]):
    """Reads and appends one numbered sequence of immutable JSON objects, caching reads."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        hint_key: str,
        decode: Callable[[bytes, str], V],
        version_of: Callable[[V], int],
        encode: Callable[[V], bytes],
        what: str,
        expired_prefix: str | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.hint_key = hint_key
        self._decode = decode
        self._version_of = version_of
        self._encode = encode
        self.what = what
        self.expired_prefix = expired_prefix
        self._pattern = re.compile("^" + re.escape(prefix) + r"(\d{20})\.json$")
        self._cache: dict[int, V] = {}
        self._lock = threading.Lock()

    def key(self, version: int) -> str:
        return f"{self.prefix}{version:020d}.json"

    def forget(self, versions: list[int]) -> None:
        """Drop versions from the cache (after maintenance deleted them)."""
        with self._lock:
            for v in versions:
                self._cache.pop(v, None)

    # ----------------------------------------------------------------- reading

    def try_load(self, version: int) -> V | None:
        """Version ``version``, or None if it does not exist (cached: versions never change)."""
        with self._lock:
            found = self._cache.get(version)
        if found is not None:
            return found
        key = self.key(version)
        try:
            raw = self.store.get(key)
        except ObjectNotFound:
            return None
        value = self._decode(raw, f"{self.what} {version} ({key})")
        if self._version_of(value) != version:
            raise CorruptMetadata(f"{key} holds {self.what} {self._version_of(value)}")
        with self._lock:
            self._cache[version] = value
        return value

    def _must_load(self, version: int) -> V:
        found = self.try_load(version)
        if found is None:
            raise CorruptMetadata(f"{self.what} {version} was listed but cannot be read")
        return found

    def _hint(self) -> int:
        try:
            text = self.store.get(self.hint_key).decode("ascii", "replace").strip()
        except ObjectNotFound:
            return 0
        # Advisory: anything but a plausible id (at most 20 digits) is ignored.
        return int(text) if text.isdigit() and len(text) <= 20 else 0

    def list_ids(self, after: int | None = None) -> list[int]:
        """Versions present (sorted), optionally only those after ``after``."""
        start = self.key(after) if after is not None else None
        ids = []
        for info in self.store.list(self.prefix, start_after=start):
            m = self._pattern.match(info.key)
            if m:
                ids.append(int(m.group(1)))
        return sorted(ids)

    def latest(self, known: V | None = None) -> V | None:
        """The newest version, or None for an empty log.

        From a known version the common "nothing new" answer costs a GET (a 404 on the next
        id) and a LIST of the expiry markers (a HEAD in a log that is never expired) proving
        the known version was not expired: versions are expired oldest first, so while it is
        history its successor was never committed. A cold start reads the
        hint, then lists what follows it: the hint may be stale and may name an id that a
        paused committer re-took after expiry (a detached object whose successor is gone),
        so only the listing, not a missing successor, proves nothing newer exists.
        """
        if known is None:
            hint = self._hint()
            if hint > 0:
                newer = self.list_ids(after=hint)
                if newer:
                    return self._must_load(newer[-1])
                found = self.try_load(hint)
                if found is not None:
                    return found
            ids = self.list_ids()
            return self._must_load(ids[-1]) if ids else None
        base = known
        version = self._version_of(base)
        following = self.try_load(version + 1)
        if following is None:
            # Was the known version expired since we read it? Then the next one may have been
            # committed and expired too, and only a listing can tell what is newest. In an
            # expired log an object under its name does not prove it: a paused committer may
            # have re-taken the name (a detached object), so the markers decide.
            if self.expired_prefix is not None:
                gone = self.is_detached(version)
            else:
                gone = self.store.head(self.key(version)) is None
            if gone:
                ids = self.list_ids()
                return self._must_load(ids[-1]) if ids else None
            return base
        newer = self.list_ids(after=self._version_of(following))
        return self._must_load(newer[-1]) if newer else following

    # ----------------------------------------------------------------- expiry markers

    def expired_key(self, version: int) -> str:
        assert self.expired_prefix is not None, f"the {self.what} log is never expired"
        return f"{self.expired_prefix}{version:020d}"

    def expired_through(self, above: int = 0) -> int:
        """The newest version expiry has deleted or is deleting (0: none), from one LIST of
        the markers above ``above`` (0 when there is none: a log without expiry, or no marker
        above it)."""
        if self.expired_prefix is None:
            return 0
        start = self.expired_key(above) if above > 0 else None
        found = [
            int(info.key[len(self.expired_prefix) :])
            for info in self.store.list(self.expired_prefix, start_after=start)
            if info.key[len(self.expired_prefix) :].isdigit()
        ]
        return max(found, default=0)

    def mark_expired(self, through: int) -> None:
        """Record, before deleting them, that versions up to ``through`` are expired; drop
        older markers (never the newest one listed, so the maximum only grows)."""
        with contextlib.suppress(PreconditionFailed):  # another expiry's marker: same meaning
            self.store.put_if_absent(self.expired_key(through), b"")
        markers = sorted(i.key for i in self.store.list(self.expired_prefix or ""))
        older = [k for k in markers[:-1] if k < self.expired_key(through)]
        if older:
            try:
                self.store.delete_many(older)
            except StorageError as exc:  # they only cost a LIST entry each
                log.warning("could not delete old expiry markers: %s", exc)

    def is_detached(self, version: int) -> bool:
        """True if ``version`` lies at or below an expiry marker: an object under that name
        is not part of the history (expired, or put by a paused committer after expiry)."""
        return self.expired_prefix is not None and self.expired_through(version - 1) >= version

    # ----------------------------------------------------------------- committing

    def commit(
        self,
        build: Callable[[V | None], V | None],
        *,
        retries: int,
        is_mine: Callable[[V], bool],
        hint_interval: int = 1,
        known: V | None = None,
        on_ambiguous: Callable[[], None] | None = None,
    ) -> V | None:
        """Append the version ``build(latest)`` returns, rebuilding it on every conflict.

        ``build`` gets the current latest version and returns the next one (numbered
        latest+1), or None to commit nothing (for example when the commit is already there);
        it may raise to refuse. ``is_mine`` recognises our own version after an ambiguous
        failure, and every version committed since the first attempt is checked with it
        before each retry, so a commit whose response was lost is applied at most once.
        ``on_ambiguous`` is called after a put that may have landed, before the rebuild.
        """
        started = time.monotonic()
        base = self.latest(known)
        checked = self._version_of(base) if base is not None else 0
        last_error: StorageError | None = None
        for attempt in range(retries + 1):
            candidate = build(base)
            if candidate is None:
                return base
            number = self._version_of(candidate)
            expected = (self._version_of(base) if base is not None else 0) + 1
            if number != expected:
                raise CommitConflict(f"internal error: built {self.what} {number}, not {expected}")
            try:
                self.store.put_if_absent(self.key(number), self._encode(candidate))
            except PreconditionFailed:
                log.debug("%s %d taken, rebasing (attempt %d)", self.what, number, attempt + 1)
            except StorageError as exc:  # ambiguous: the put may have landed
                last_error = exc
                log.warning("commit of %s %d failed (%s); retrying", self.what, number, exc)
                if on_ambiguous is not None:
                    on_ambiguous()
            else:
                if not self.is_detached(number):
                    with self._lock:
                        self._cache[number] = candidate
                    return self._committed(candidate, hint_interval)
                log.warning(
                    "%s %d was put after expiry had removed that id (this committer was "
                    "paused since it read %s %d): it is not part of the history; rebasing",
                    self.what,
                    number,
                    self.what,
                    number - 1,
                )
            _backoff(attempt, time.monotonic() - started)
            started = time.monotonic()
            base = self.latest(base)
            newest = self._version_of(base) if base is not None else 0
            mine = self._find_mine(checked, newest, is_mine)
            if mine is not None:
                return self._committed(mine, hint_interval)
            checked = newest
        if last_error is not None:
            raise CommitConflict(
                f"gave up after {retries + 1} attempts to commit the next {self.what}; the "
                f"last storage error was: {last_error}"
            ) from last_error
        raise CommitConflict(
            f"gave up after {retries + 1} attempts: other commits kept winning the race for the "
            f"next {self.what}; retry later or raise the retry limit"
        )

    def _find_mine(self, after: int, newest: int, is_mine: Callable[[V], bool]) -> V | None:
        """Our version among ``after+1 .. newest``, if an earlier attempt landed. Versions
        expired meanwhile cannot be checked (the caller's own rule, such as a named writer's
        record or its files being live, decides then), and versions at or below an expiry
        marker are not history even where an object exists."""
        if newest <= after:
            return None
        floor = self.expired_through(after)
        for version in range(max(after, floor) + 1, newest + 1):
            existing = self.try_load(version)
            if existing is not None and is_mine(existing):
                return existing
        return None

    def _committed(self, value: V, hint_interval: int) -> V:
        if self._version_of(value) % hint_interval == 0:
            try:
                self.store.put(self.hint_key, str(self._version_of(value)).encode())
            except StorageError as exc:  # advisory only
                log.warning("could not update %s: %s", self.hint_key, exc)
        return value


def _backoff(attempt: int, window: float) -> None:
    """Wait before retrying a lost race: full jitter (uniform from 0) up to the losing
    attempt's ``window`` (seconds from reading its base to its failed put, at least 5 ms),
    doubled per attempt, at most 1 s. Racers whose windows overlapped then spread their next
    reads over a span as long as the race itself, so a rebased retry rarely meets the next
    commit of the winner (measured: about half the lost puts of a fixed 5 ms span with four
    writers, bench/README.md "Metadata at scale")."""
    cap = min(1.0, max(0.005, window) * (2 ** min(attempt, 10)))
    time.sleep(random.uniform(0, cap))


# --------------------------------------------------------------------------- table snapshots

SNAPSHOT_PREFIX = "snapshot/snapshot-"
LATEST_HINT = "snapshot/LATEST"
#: Expiry markers (docs/FORMAT.md, section 12): ``snapshot/expired/<id as 20 digits>``.
EXPIRED_PREFIX = "snapshot/expired/"


def snapshot_key(snapshot_id: int) -> str:
    return f"{SNAPSHOT_PREFIX}{snapshot_id:020d}.json"


class SnapshotLog(VersionLog[Snapshot]):
    """A table's snapshots: ``snapshot/snapshot-<id>.json`` (docs/FORMAT.md, section 6)."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(
            store,
            SNAPSHOT_PREFIX,
            LATEST_HINT,
            Snapshot.decode,
            lambda s: s.snapshot_id,
            lambda s: s.encode(),
            "snapshot",
            expired_prefix=EXPIRED_PREFIX,
        )

    def load(self, snapshot_id: int) -> Snapshot:
        """Snapshot ``snapshot_id``; SnapshotNotFound if it does not exist (or was expired)."""
        found = self.try_load(snapshot_id)
        if found is None:
            raise SnapshotNotFound(f"snapshot {snapshot_id} does not exist (or was expired)")
        return found

    def load_history(self, snapshot_id: int) -> Snapshot:
        """Snapshot ``snapshot_id`` of the table's history, for time travel: like
        :meth:`load`, but an object at or below an expiry marker (put by a committer paused
        across expiry) is refused as expired (one LIST more than :meth:`load`)."""
        found = self.load(snapshot_id)
        if self.is_detached(snapshot_id):
            raise SnapshotNotFound(
                f"snapshot {snapshot_id} was expired (the object under that name was put by a "
                "committer paused across snapshot expiry and is not part of the history)"
            )
        return found

    def history_ids(self) -> list[int]:
        """Ids of the retained history, oldest first (two LIST requests)."""
        return split_history(self.list_ids(), self.expired_through())[0]

    def as_of(self, timestamp_ms: int) -> Snapshot:
        """The newest snapshot committed at or before ``timestamp_ms``."""
        chosen: Snapshot | None = None
        for sid in self.history_ids():
            snap = self.try_load(sid)
            if snap is None:  # expired while we read
                continue
            if snap.timestamp_ms <= timestamp_ms:
                chosen = snap
            else:
                break
        if chosen is None:
            raise SnapshotNotFound(f"no snapshot was committed at or before {timestamp_ms} ms")
        return chosen


def split_history(ids: list[int], expired_through: int) -> tuple[list[int], list[int]]:
    """Split sorted snapshot ids into the history (the run of consecutive ids above the
    newest expiry marker that ends with the newest id) and the *detached* rest: objects put
    by committers paused across expiry, which no reader follows (docs/FORMAT.md, section 12).
    The newest id is always history: expiry never deletes the newest snapshot, so no marker
    reaches it.
    """
    start = len(ids) - 1
    while start > 0 and ids[start - 1] == ids[start] - 1 and ids[start - 1] > expired_through:
        start -= 1
    return ids[start:], ids[:start]
