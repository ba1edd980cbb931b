"""The snapshot log: finding the latest snapshot and committing the next one.

Snapshot N is the object ``snapshot/snapshot-<N as 20 digits>.json``. Committing N+1 is one
put-if-absent of that object: the put is the single linearisation point between all writers
and compactors, so a 412 means "someone else committed N+1": reload, rebuild on top of it
(rebase) and retry. ``snapshot/LATEST`` is an advisory hint that only speeds up discovery; the
snapshot objects are the truth.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable

from lsm3.errors import (
    CommitConflict,
    CorruptMetadata,
    ObjectNotFound,
    PreconditionFailed,
    SnapshotNotFound,
    StorageError,
)
from lsm3.metadata import Snapshot
from lsm3.storage import ObjectStore

log = logging.getLogger("lsm3.log")

SNAPSHOT_PREFIX = "snapshot/snapshot-"
LATEST_HINT = "snapshot/LATEST"
_SNAPSHOT_KEY = re.compile(r"^snapshot/snapshot-(\d{20})\.json$")


def snapshot_key(snapshot_id: int) -> str:
    return f"{SNAPSHOT_PREFIX}{snapshot_id:020d}.json"


class SnapshotLog:
    """Reads and appends the snapshot sequence of one table; caches what it has read."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._cache: dict[int, Snapshot] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reading

    def load(self, snapshot_id: int) -> Snapshot:
        """Snapshot ``snapshot_id`` (cached forever: snapshots are immutable)."""
        with self._lock:
            found = self._cache.get(snapshot_id)
        if found is not None:
            return found
        key = snapshot_key(snapshot_id)
        try:
            raw = self.store.get(key)
        except ObjectNotFound:
            raise SnapshotNotFound(
                f"snapshot {snapshot_id} does not exist (or was expired)"
            ) from None
        snap = Snapshot.decode(raw, f"snapshot {snapshot_id} ({key})")
        if snap.snapshot_id != snapshot_id:
            raise CorruptMetadata(f"{key} holds snapshot id {snap.snapshot_id}")
        with self._lock:
            self._cache[snapshot_id] = snap
        return snap

    def _try_load(self, snapshot_id: int) -> Snapshot | None:
        try:
            return self.load(snapshot_id)
        except SnapshotNotFound:
            return None

    def _hint(self) -> int:
        try:
            text = self.store.get(LATEST_HINT).decode("ascii", "replace").strip()
        except ObjectNotFound:
            return 0
        return int(text) if text.isdigit() else 0

    def list_ids(self, after: int | None = None) -> list[int]:
        """Ids of the snapshot objects present (sorted), optionally only those after ``after``."""
        start = snapshot_key(after) if after is not None else None
        ids = []
        for info in self.store.list(SNAPSHOT_PREFIX, start_after=start):
            m = _SNAPSHOT_KEY.match(info.key)
            if m:
                ids.append(int(m.group(1)))
        return ids

    def latest(self, known: Snapshot | None = None) -> Snapshot | None:
        """The newest snapshot, or None for a table with no commit yet.

        With a known snapshot the common "nothing new" answer costs one GET (a 404 on the
        next id); a cold start adds one GET of the hint.
        """
        base = known
        if base is None:
            hint = self._hint()
            if hint > 0:
                base = self._try_load(hint)
            if base is None:
                ids = self.list_ids()
                return self.load(ids[-1]) if ids else None
        following = self._try_load(base.snapshot_id + 1)
        if following is None:
            return base
        newer = self.list_ids(after=following.snapshot_id)
        return self.load(newer[-1]) if newer else following

    def as_of(self, timestamp_ms: int) -> Snapshot:
        """The newest snapshot committed at or before ``timestamp_ms``."""
        chosen: Snapshot | None = None
        for sid in self.list_ids():
            snap = self.load(sid)
            if snap.timestamp_ms <= timestamp_ms:
                chosen = snap
            else:
                break
        if chosen is None:
            raise SnapshotNotFound(f"no snapshot was committed at or before {timestamp_ms} ms")
        return chosen

    # ----------------------------------------------------------------- committing

    def commit(
        self,
        build: Callable[[Snapshot | None], Snapshot | None],
        *,
        retries: int,
        is_mine: Callable[[Snapshot], bool],
        hint_interval: int = 1,
        known: Snapshot | None = None,
    ) -> Snapshot | None:
        """Append the snapshot ``build(latest)`` returns, rebuilding it on every conflict.

        ``build`` is called with the current latest snapshot and returns the next one (its id
        must be latest+1), or None to commit nothing (for example when the commit is already
        there). ``is_mine`` recognises our own snapshot after an ambiguous failure, so a commit
        whose response was lost is applied at most once.
        """
        base = self.latest(known)
        for attempt in range(retries + 1):
            candidate = build(base)
            if candidate is None:
                return base
            expected = (base.snapshot_id if base else 0) + 1
            if candidate.snapshot_id != expected:
                raise CommitConflict(
                    f"internal error: built snapshot {candidate.snapshot_id}, expected {expected}"
                )
            try:
                self.store.put_if_absent(snapshot_key(candidate.snapshot_id), candidate.encode())
            except PreconditionFailed:
                existing = self._try_load(candidate.snapshot_id)
                if existing is not None and is_mine(existing):
                    return self._committed(existing, hint_interval)
                log.debug("snapshot %d taken, rebasing (attempt %d)", expected, attempt + 1)
            except StorageError as exc:
                # Ambiguous: the put may have landed. Look before retrying.
                existing = self._try_load(candidate.snapshot_id)
                if existing is not None and is_mine(existing):
                    return self._committed(existing, hint_interval)
                log.warning("commit of snapshot %d failed (%s); retrying", expected, exc)
            else:
                with self._lock:
                    self._cache[candidate.snapshot_id] = candidate
                return self._committed(candidate, hint_interval)
            _backoff(attempt)
            base = self.latest(base)
        raise CommitConflict(
            f"gave up after {retries + 1} attempts: other commits kept winning the race for the "
            "next snapshot; retry later or raise the table option commit_retries"
        )

    def _committed(self, snap: Snapshot, hint_interval: int) -> Snapshot:
        if snap.snapshot_id % hint_interval == 0:
            try:
                self.store.put(LATEST_HINT, str(snap.snapshot_id).encode())
            except StorageError as exc:  # advisory only
                log.warning("could not update the LATEST hint: %s", exc)
        return snap


def _backoff(attempt: int) -> None:
    cap = min(1.0, 0.005 * (2 ** min(attempt, 10)))
    time.sleep(random.uniform(0, cap))
