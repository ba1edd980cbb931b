"""Where the compactor job's progress goes: :class:`TableOutcome`, what a pass did to one
table, and the reporters that show it: JSON lines on stdout (:class:`JsonReporter`) or, on a
terminal, a progress bar and a summary line per table on stderr (:class:`TerminalReporter`).
Errors are one line on stderr either way.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from compactor.compact import CompactionResult, resolve_options
from compactor.executor import TaskResult
from compactor.job_args import EXIT_OK, PROG, JobConfig
from compactor.maintenance import ExpireResult, OrphanResult
from compactor.policy import PolicyOptions, plan
from lsm3.cli import human_bytes, to_json_line
from lsm3.errors import Lsm3Error
from lsm3.table import Table


@dataclass
class TableOutcome:
    """What one pass did to one table."""

    table: str  # the target's name: its URI, or namespace.table
    pass_number: int
    uri: str | None = None  # the URI given, or where a catalog's table lives once opened
    status: str = "ok"  # ok | stopped | dropped | lease-held | fenced | error
    exit_code: int = EXIT_OK
    compaction: CompactionResult | None = None
    expire: ExpireResult | None = None
    orphans: OrphanResult | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "table",
            "time": _now_iso(),
            "table": self.table,
            "uri": self.uri,
            "pass": self.pass_number,
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
            "compaction": self.compaction.to_json() if self.compaction else None,
            "expire": self.expire.to_json() if self.expire else None,
            "orphans": self.orphans.to_json() if self.orphans else None,
            "seconds": round(self.seconds, 3),
        }


class Reporter:
    """Where the job's progress goes; see :class:`JsonReporter` and :class:`TerminalReporter`."""

    def __init__(self, out: IO[str], err: IO[str], debug: bool) -> None:
        self.out = out
        self.err = err
        self.debug = debug

    def table_started(self, outcome: TableOutcome, table: Table, config: JobConfig) -> None:
        pass

    def task(self, outcome: TableOutcome, task: TaskResult) -> None:
        pass

    def table_finished(self, outcome: TableOutcome) -> None:
        if outcome.error is not None:
            self._error(outcome.table, outcome.error, outcome.traceback)

    def warehouse_failed(
        self, warehouse: str, pass_number: int, error: str, trace: str | None
    ) -> None:
        self._error(f"warehouse {warehouse}", error, trace)

    def _error(self, what: str, error: str, trace: str | None) -> None:
        if trace:
            self.err.write(trace)
        self.err.write(f"{PROG}: error: {what}: {error}\n")
        self.err.flush()

    def stopped(self, signals: Sequence[str]) -> None:
        pass


class JsonReporter(Reporter):
    """One JSON object per line on stdout: a line per task and a line per table and pass."""

    def _line(self, doc: dict[str, Any]) -> None:
        self.out.write(to_json_line(doc) + "\n")  # partition values may be bytes or dates
        self.out.flush()

    def task(self, outcome: TableOutcome, task: TaskResult) -> None:
        doc = {"event": "task", "time": _now_iso(), "table": outcome.table, "uri": outcome.uri}
        self._line({**doc, "pass": outcome.pass_number, **task.to_json()})

    def table_finished(self, outcome: TableOutcome) -> None:
        self._line(outcome.to_json())
        super().table_finished(outcome)

    def warehouse_failed(
        self, warehouse: str, pass_number: int, error: str, trace: str | None
    ) -> None:
        doc = {"event": "warehouse", "time": _now_iso(), "warehouse": warehouse}
        self._line({**doc, "pass": pass_number, "status": "error", "error": error})
        super().warehouse_failed(warehouse, pass_number, error, trace)

    def stopped(self, signals: Sequence[str]) -> None:
        self._line({"event": "stopped", "time": _now_iso(), "signals": list(signals)})


class TerminalReporter(Reporter):
    """A progress bar per table on stderr, then one line saying what the pass did."""

    def __init__(self, out: IO[str], err: IO[str], debug: bool) -> None:
        super().__init__(out, err, debug)
        self._name = ""
        self._total = 0
        self._done = 0
        self._tasks = 0
        self._drawn = False

    def table_started(self, outcome: TableOutcome, table: Table, config: JobConfig) -> None:
        self._name = outcome.table
        self._total = _planned_bytes(table, config)
        self._done = 0
        self._tasks = 0
        self._drawn = False
        if self._total:
            self._draw()

    def task(self, outcome: TableOutcome, task: TaskResult) -> None:
        self._done += task.bytes_read
        self._tasks += 1
        self._total = max(self._total, self._done)
        self._draw()

    def _draw(self) -> None:
        width = max(10, min(40, shutil.get_terminal_size().columns - 60))
        share = self._done / self._total if self._total else 1.0
        filled = int(share * width)
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"\r{self._name} [{bar}] {share:4.0%} {self._tasks} task(s), "
            f"{human_bytes(self._done)} of {human_bytes(self._total)}"
        )
        self.err.write(line + "\x1b[K")
        self.err.flush()
        self._drawn = True

    def table_finished(self, outcome: TableOutcome) -> None:
        if self._drawn:
            self.err.write("\r\x1b[K")
        if outcome.error is None:
            self.err.write(summary_text(outcome) + "\n")
            self.err.flush()
        super().table_finished(outcome)

    def stopped(self, signals: Sequence[str]) -> None:
        self.err.write(f"{PROG}: stopped ({', '.join(signals) or 'signal'})\n")
        self.err.flush()


def _planned_bytes(table: Table, config: JobConfig) -> int:
    """Input bytes of the tasks due now: the progress bar's 100% (later rounds may add)."""
    try:
        values = resolve_options(table, config.options)
        policy = config.policy or values.pop("compaction_policy")
        values.pop("compaction_policy", None)
        tasks = plan(table.files_of(table.current_snapshot()), policy, PolicyOptions(**values))
    except Lsm3Error:
        return 0  # compact() will report it
    total = sum(t.input_bytes for t in tasks)
    return min(total, config.max_bytes) if config.max_bytes is not None else total


def summary_text(outcome: TableOutcome) -> str:
    """One human line for what a pass did to a table."""
    parts = []
    c = outcome.compaction
    if c is not None and c.tasks:
        parts.append(
            f"compacted {len(c.tasks)} task(s), {c.files_before} -> {c.files_after} files, "
            f"read {human_bytes(c.bytes_read)}, wrote {human_bytes(c.bytes_written)}, "
            f"{c.requests} requests"
        )
    elif c is not None:
        parts.append(f"nothing to compact ({c.files_after} files)")
    if c is not None and c.abandoned:
        parts.append(f"{len(c.abandoned)} task(s) abandoned")
    e = outcome.expire
    if e is not None:
        parts.append(
            f"expired {len(e.expired) + len(e.detached)} snapshot(s), "
            f"{len(e.manifests)} manifest(s), {len(e.data_files)} data file(s), "
            f"{human_bytes(e.bytes)}"
        )
    o = outcome.orphans
    if o is not None:
        parts.append(f"removed {o.files} orphan(s), {human_bytes(o.bytes)}")
    if outcome.status == "stopped":
        parts.append("stopped")
    return f"{outcome.table}: {'; '.join(parts) or outcome.status} in {outcome.seconds:.1f} s"


def _now_iso() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
