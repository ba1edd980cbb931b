"""When to repeat the write-stall warning: once per set of crowded buckets, then at most every
few minutes while it lasts.

Under ``write_stall = warn`` every commit to a crowded bucket would otherwise log the same
warning (a loader committing every second logs it every second until the compactor runs).
The state is per process and per table URI; a bucket newly crowded warns at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable

#: Seconds before the same crowded buckets warn again.
REPEAT_SECONDS = 300.0


class StallWarnings:
    """Remembers, per table, which crowded buckets were last warned about and when."""

    def __init__(self, repeat_seconds: float = REPEAT_SECONDS) -> None:
        self.repeat_seconds = repeat_seconds
        self._lock = threading.Lock()
        self._last: dict[str, tuple[frozenset[Hashable], float]] = {}

    def should_warn(self, table_uri: str, crowded: Iterable[Hashable]) -> bool:
        """True if ``crowded`` holds a bucket not warned about, or the last warning is old."""
        state = frozenset(crowded)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(table_uri)
            if last is not None and state <= last[0] and now - last[1] < self.repeat_seconds:
                return False
            self._last[table_uri] = (state, now)
            return True

    def reset(self, table_uri: str) -> None:
        """Forget ``table_uri`` (its buckets are no longer crowded)."""
        with self._lock:
            self._last.pop(table_uri, None)


#: The process-wide record the writers share.
STALL_WARNINGS = StallWarnings()
