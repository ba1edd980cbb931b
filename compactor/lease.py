"""The compactor lease: one compactor per table, fenced through the snapshot log.

The lease lives in every snapshot (``compactor``: epoch, owner, expiry) and changes only by
commits, so it needs no other coordination than the conditional put. A compactor takes the
lease by committing a snapshot that raises the epoch (allowed when the current lease has
expired or is its own); every compaction commit checks that the epoch is still its own and
renews the expiry. A zombie (a paused process whose lease was taken over) therefore fails its
next commit instead of removing files it no longer owns. Writers copy the lease unchanged and
are never fenced.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from lsm3.errors import Lsm3Error
from lsm3.format.metadata import CompactorLease, Snapshot
from lsm3.table import Table
from lsm3.write.commit import commit_files


class LeaseHeld(Lsm3Error):
    """Another compactor holds the table's lease."""


class Fenced(Lsm3Error):
    """This compactor's lease was taken over; it must stop committing."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Lease:
    """This process's claim on a table's compaction; see the module docstring."""

    def __init__(self, table: Table, owner: str, seconds: int) -> None:
        self.table = table
        self.owner = owner
        self.seconds = seconds
        self.epoch: int | None = None
        self.until_ms = 0

    def _renewed(self) -> CompactorLease:
        assert self.epoch is not None
        self.until_ms = now_ms() + self.seconds * 1000
        return CompactorLease(self.epoch, self.owner, self.until_ms)

    def acquire(self) -> Snapshot:
        """Commit a snapshot that makes us the lease holder; LeaseHeld if someone else is."""

        def take(base: Snapshot | None) -> CompactorLease:
            current = base.compactor if base else None
            if (
                current is not None
                and current.owner != self.owner
                and current.lease_until_ms > now_ms()
            ):
                wait_s = (current.lease_until_ms - now_ms()) / 1000
                raise LeaseHeld(
                    f"another compactor ({current.owner!r}, epoch {current.epoch}) holds the "
                    f"lease of {self.table.uri} for {wait_s:.0f} more seconds; run one "
                    "compactor per table, or wait for it to finish"
                )
            self.epoch = (current.epoch if current else 0) + 1
            return self._renewed()

        return self._commit(take, {"compactor": "acquire"})

    def check(self) -> Callable[[Snapshot | None], CompactorLease]:
        """The lease rule for a compaction commit: still ours, then renewed."""

        def verify(base: Snapshot | None) -> CompactorLease:
            current = base.compactor if base else None
            if current is None or current.epoch != self.epoch or current.owner != self.owner:
                holder = f"{current.owner!r} (epoch {current.epoch})" if current else "nobody"
                raise Fenced(
                    f"compactor {self.owner!r} lost its lease (epoch {self.epoch}) to {holder}; "
                    "its work is abandoned and left for garbage collection"
                )
            return self._renewed()

        return verify

    def renew_if_needed(self) -> None:
        """Renew with an empty commit when less than half the lease remains."""
        if self.until_ms - now_ms() < self.seconds * 500:
            self._commit(self.check(), {"compactor": "renew"})

    def release(self) -> None:
        """Let the next compactor in at once (an empty commit with an expired lease)."""
        if self.epoch is None:
            return
        verify = self.check()

        def expire(base: Snapshot | None) -> CompactorLease:
            lease = verify(base)
            return CompactorLease(lease.epoch, lease.owner, 0)

        self._commit(expire, {"compactor": "release"})
        self.epoch = None

    def _commit(self, rule: Callable[[Snapshot | None], CompactorLease], meta: dict) -> Snapshot:
        return commit_files(
            self.table,
            added=[],
            removed=[],
            seq_count=0,
            kind="COMPACT",
            writer_id=None,
            commit_id=uuid.uuid4().hex,
            metadata=meta,
            assign_offset=False,
            compactor=rule,
        )
