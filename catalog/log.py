"""The catalog state log: ``catalog/state-<20 digits>.json``, one immutable object per change.

It is lsm3's versioned log (lsm3/write/log.py, docs/FORMAT.md section 6) over catalog states: state
N+1 exists iff change N+1 happened, and it is created with put-if-absent, the single point of
agreement between processes. A 412 means another process changed the catalog first: reload,
re-apply the change to the new state (which may now refuse it, e.g. the name was taken) and
retry with bounded, jittered backoff. There is no lock, no rename and no check-then-write.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping

from catalog.state import EMPTY, CatalogState, NamespaceEntry
from lsm3.io.store import ObjectStore
from lsm3.write.log import VersionLog

STATE_PREFIX = "catalog/state-"
LATEST_HINT = "catalog/LATEST"

#: A change maps the current namespaces to the new ones, or raises to refuse.
Change = Callable[[CatalogState], Mapping[str, NamespaceEntry]]


def state_key(state_id: int) -> str:
    return f"{STATE_PREFIX}{state_id:020d}.json"


class StateLog:
    """Reads and appends the catalog states of one warehouse."""

    def __init__(self, store: ObjectStore, retries: int = 32) -> None:
        self.store = store
        self.retries = retries
        self._log: VersionLog[CatalogState] = VersionLog(
            store,
            STATE_PREFIX,
            LATEST_HINT,
            CatalogState.decode,
            lambda s: s.state_id,
            lambda s: s.encode(),
            "catalog state",
        )

    def load(self, state_id: int) -> CatalogState | None:
        """State ``state_id``, or None if it does not exist."""
        return self._log.try_load(state_id)

    def latest(self, known: CatalogState | None = None) -> CatalogState:
        """The newest state (EMPTY for a warehouse with no catalog yet)."""
        return (
            self._log.latest(known if known is not None and known.state_id > 0 else None) or EMPTY
        )

    def commit(
        self, operation: str, change: Change, known: CatalogState | None = None
    ) -> CatalogState:
        """Append ``change`` applied to the latest state; return the committed state.

        Errors ``change`` raises (the name is taken, the namespace is gone...) propagate:
        nothing was committed. A commit whose response was lost is recognised by its
        ``commit_id`` and applied at most once.
        """
        commit_id = uuid.uuid4().hex

        def build(base: CatalogState | None) -> CatalogState:
            base = base or EMPTY
            return CatalogState(
                state_id=base.state_id + 1,
                parent_id=base.state_id or None,
                timestamp_ms=max(time.time_ns() // 1_000_000, base.timestamp_ms),
                commit_id=commit_id,
                operation=operation,
                namespaces=change(base),
            )

        committed = self._log.commit(
            build,
            retries=self.retries,
            is_mine=lambda s: s.commit_id == commit_id,
            known=known if known is not None and known.state_id > 0 else None,
        )
        assert committed is not None  # build never returns None
        return committed
