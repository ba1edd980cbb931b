"""Write stalls: backpressure on writers when compaction falls behind, and when to repeat
the warning (once per set of crowded buckets, then at most every few minutes while it lasts).

Under ``write_stall = warn`` every commit to a crowded bucket would otherwise log the same
warning (a loader committing every second logs it every second until the compactor runs).
The state is per process and per table URI; a bucket newly crowded warns at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lsm3.errors import WriteStalled
from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema

if TYPE_CHECKING:
    from lsm3.table import Table

log = logging.getLogger("lsm3.write.writer")  # the writer's own logger, as before

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


def crowded_buckets(
    schema: TableSchema, pending: Sequence[DataFile], files: Sequence[DataFile]
) -> dict[tuple[Any, int], int]:
    """Buckets the ``pending`` runs add to whose sorted runs (with the live ``files``) would
    reach the stop trigger."""
    stop = schema.option("num_sorted_run_stop_trigger")
    new_runs: dict[tuple[Any, int], set[str]] = {}
    for f in pending:
        new_runs.setdefault((f.partition, f.bucket), set()).add(f.run)
    adding = {k: len(v) for k, v in new_runs.items()}
    level0: dict[tuple[Any, int], set[str]] = {}
    levels: dict[tuple[Any, int], set[int]] = {}
    for f in files:
        key = (f.partition, f.bucket)
        if key not in adding:
            continue
        if f.level == 0:
            level0.setdefault(key, set()).add(f.run)
        else:
            levels.setdefault(key, set()).add(f.level)
    runs = {k: len(level0.get(k, ())) + len(levels.get(k, ())) + n for k, n in adding.items()}
    return {k: n for k, n in runs.items() if n >= stop}


def apply_write_stall(table: Table, schema: TableSchema, pending: Sequence[DataFile]) -> None:
    """Backpressure when compaction falls behind (table option ``write_stall``).

    ``warn`` (the default) logs and commits: the compactor is a separate, scheduled job,
    and a missed run must not stop ingestion; reads only get slower. ``wait`` polls the
    table until compaction catches up, for at most ``write_stall_timeout_seconds``, then
    raises WriteStalled; ``error`` raises at once. A raised stall commits nothing and
    keeps the writer's data, so ``commit()`` can be retried.
    """
    if not pending:
        return
    crowded = crowded_buckets(schema, pending, table.files_of(table.current_snapshot()))
    if not crowded:
        STALL_WARNINGS.reset(table.uri)
        return
    mode = schema.option("write_stall")
    what = ", ".join(
        f"bucket {b} of partition {list(p)}: {n} runs" for (p, b), n in crowded.items()
    )
    stop = schema.option("num_sorted_run_stop_trigger")
    if mode == "warn":
        if STALL_WARNINGS.should_warn(table.uri, crowded):  # not at every commit
            log.warning(
                "write stall threshold (%d sorted runs) reached: %s; run the compactor "
                "(lsm3-compactor --once %s)",
                stop,
                what,
                table.uri,
            )
        return
    if mode == "wait":
        deadline = time.monotonic() + schema.option("write_stall_timeout_seconds")
        while time.monotonic() < deadline:
            time.sleep(1.0)
            if not crowded_buckets(schema, pending, table.files_of(table.refresh())):
                return
    raise WriteStalled(
        f"write stalled: {what} (stop trigger {stop}); run the compactor (python -m compactor "
        f"{table.uri}) or set the table option write_stall to 'warn'"
    )
