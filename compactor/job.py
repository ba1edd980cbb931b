"""The compactor as a program: ``python -m compactor`` and the ``lsm3-compactor`` script.

One *pass* visits every table: the URIs given and, with ``--warehouse``, every table of the
warehouse's catalog (or of its ``--namespace``), listed afresh at each pass so tables created
since the last one are picked up. Each table is compacted within the budgets, then (if asked)
its snapshots expired and its orphan files removed. ``--once`` runs one pass (cron,
Kubernetes CronJobs); ``--interval`` repeats passes until SIGTERM or SIGINT, which let the
current task finish (a second signal abandons it) and exit 0. Each table gets a fresh
``Table`` per pass, so no cached view of the snapshot log outlives a pass.

Output: on a terminal (stderr is a TTY) a progress bar and one line per table; otherwise,
or with ``--json``, JSON lines on stdout: one per task (``"event": "task"``) and one per
table and pass (``"event": "table"``), each naming the table (``"table"``: its URI or
``namespace.table``) and where it lives (``"uri"``). Errors are one line on stderr;
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any, NoReturn

import lsm3
from catalog import Catalog, InvalidIdentifier, TableNotFound, connect
from catalog.identifiers import check_namespace
from compactor.compact import CompactionResult, compact, resolve_options
from compactor.executor import TaskResult
from compactor.lease import Fenced, LeaseHeld
from compactor.maintenance import (
    DEFAULT_ORPHAN_GRACE,
    DEFAULT_RETAIN_LAST,
    DEFAULT_SNAPSHOT_AGE,
    ExpireResult,
    OrphanResult,
    expire_snapshots,
    remove_orphan_files,
)
from compactor.policy import POLICIES, PolicyOptions, plan
from lsm3.cli import UsageError, human_bytes, parse_key_values, to_json_line
from lsm3.errors import Lsm3Error
from lsm3.table import Table

PROG = "lsm3-compactor"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LEASE_HELD = 3
EXIT_FENCED = 4
EXIT_INTERRUPTED = 130

#: With several tables, the exit status is the most severe of theirs, in this order.
_SEVERITY = (EXIT_OK, EXIT_LEASE_HELD, EXIT_FENCED, EXIT_ERROR)

log = logging.getLogger("compactor.job")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Target:
    """One table the job works on: a URI, or a ``namespace.table`` name in a catalog."""

    name: str  # how the output names the table: its URI, or namespace.table
    storage_options: dict[str, Any] | None = None
    catalog: Catalog | None = None  # set for a table of a warehouse

    def open(self) -> Table:
        if self.catalog is not None:
            return self.catalog.load_table(self.name)
        return lsm3.open_table(self.name, self.storage_options)


@dataclass(frozen=True)
class JobConfig:
    """The parsed command line."""

    uris: tuple[str, ...]
    storage_options: dict[str, Any] | None  # for the URIs and the warehouse
    interval: float | None  # None: one pass (--once)
    policy: str | None
    max_bytes: int | None
    max_requests: int | None
    owner: str | None
    wait_for_lease: float
    options: dict[str, Any]
    expire: bool
    retain_last: int
    expire_older_than: dt.timedelta
    remove_orphans: bool
    orphan_grace: dt.timedelta
    json: bool
    debug: bool
    warehouse: str | None = None
    namespaces: tuple[str, ...] = ()  # of the warehouse; () for all of them


def targets(config: JobConfig) -> list[Target]:
    """The tables of one pass: the URIs on the command line, then the warehouse's tables.
    Every source of tables resolves here, once per pass, so tables that appear between
    passes are picked up; raises if the warehouse cannot be listed."""
    return uri_targets(config) + warehouse_targets(config)


def uri_targets(config: JobConfig) -> list[Target]:
    return [Target(uri, config.storage_options) for uri in config.uris]


def warehouse_targets(config: JobConfig) -> list[Target]:
    """Every table of the warehouse (of ``config.namespaces`` if any), by name, sharing one
    catalog connection for the pass."""
    if config.warehouse is None:
        return []
    cat = connect(config.warehouse, config.storage_options)
    if not config.namespaces:
        names = cat.list_tables()
    else:
        names = [name for ns in config.namespaces for name in cat.list_tables(ns)]
    return [Target(name, catalog=cat) for name in names]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?))?(b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    """Bytes: ``1000000``, ``512MiB``, ``10G`` (1024-based) or ``10GB`` (1000-based)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500MiB or 10GB")
    number, prefix, binary, unit_b = m.groups()
    if not prefix:
        return int(float(number))
    base = 1000 if unit_b and not binary else 1024
    return int(float(number) * base ** ("kmgt".index(prefix.lower()) + 1))


def parse_duration(text: str) -> dt.timedelta:
    """A duration: seconds (``90``) or with a unit: ``500ms 30s 15m 12h 7d 2w``."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 1h or 7d")
    number, unit = m.groups()
    return dt.timedelta(seconds=float(number) * _DURATION_UNITS[(unit or "s").lower()])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a non-negative number of seconds")
    return value


_EPILOG = f"""\
examples:
  {PROG} --once s3://bucket/orders s3://bucket/events
  {PROG} --interval 60 --expire --remove-orphans s3://bucket/orders
  {PROG} --interval 300 --warehouse s3://bucket/wh        # every table of the warehouse
  {PROG} --once --warehouse s3://bucket/wh --namespace sales --namespace billing
  {PROG} --once --max-bytes 20GiB --max-requests 50000 --owner nightly ./orders
  python -m compactor --once --option num_sorted_run_trigger=3 --json ./orders

Every pass compacts each table with its compaction_policy table option (or --policy) until
nothing is due or a budget is spent (budgets count per table and pass), then runs the
maintenance asked for: --expire deletes snapshots beyond the newest --retain-last that are
older than --expire-older-than, with the files only they referenced; --remove-orphans
deletes files no snapshot references that are older than --orphan-grace. The grace period
must exceed the longest time a writer takes from uploading a file to committing it.
Orphan removal reads every snapshot, so run it less often than compaction on busy tables.

One compactor per table: a second one gets exit status 3 (--once) or retries next pass
(--interval). Give restarts of the same deployment the same --owner (e.g. the CronJob's
name), so a restart after a crash takes the lease at once instead of waiting for it to
expire (table option compactor_lease_seconds).

Output: a progress bar on a terminal; otherwise (or with --json) one JSON line per task
(inputs, outputs, bytes read and written, requests, seconds) and one per table and pass.

With --warehouse, each pass lists the warehouse's catalog (or the --namespace ones) and
works on every table in it, after the URIs given, if any; output names those tables
NAMESPACE.TABLE. A table dropped during the pass is skipped (status "dropped"). If the
catalog cannot be listed, the pass reports the error (exit status 1 with --once) and works
on the URIs; --interval tries the listing again next pass.

Table URIs and warehouses: s3://bucket/path, file:///path, a local path. S3 settings come
from the AWS environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_PROFILE) or --storage-option KEY=VALUE (endpoint_url, region,
access_key_id, secret_access_key, session_token, profile), for the tables and the warehouse.

exit status:
  0    success (also after SIGTERM/SIGINT: the current task finished, then the job stopped)
  1    error (table not found, storage failure, ...)
  2    usage error
  3    the lease is held by another compactor (--once)
  4    fenced: another compactor took the lease over during the run
  130  interrupted by a second signal (the current task was abandoned)
With several tables, the most severe status wins: 1, then 4, then 3.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{PROG} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Compact lsm3 tables and clean up after them, once or on a schedule "
        "(also: python -m compactor).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uris", nargs="*", metavar="URI", help="tables to compact")
    p.add_argument(
        "--warehouse",
        metavar="URI",
        help="compact every table of this warehouse's catalog too (listed anew at each pass)",
    )
    p.add_argument(
        "--namespace",
        action="append",
        metavar="NAME",
        help="with --warehouse: only the tables of this namespace (repeatable)",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="run one pass and exit (default)")
    when.add_argument(
        "--interval",
        type=_seconds,
        metavar="SECONDS",
        help="run a pass every SECONDS until SIGTERM/SIGINT",
    )
    p.add_argument(
        "--policy", choices=sorted(POLICIES), help="override the table's compaction_policy"
    )
    p.add_argument(
        "--max-bytes",
        type=parse_size,
        metavar="SIZE",
        help="stop a table's compaction after reading about SIZE (e.g. 10GiB) per pass",
    )
    p.add_argument(
        "--max-requests",
        type=_positive_int,
        metavar="N",
        help="stop a table's compaction after N object-store requests per pass",
    )
    p.add_argument("--owner", metavar="NAME", help="lease owner name (default: HOSTNAME:PID)")
    p.add_argument(
        "--wait-for-lease",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for another compactor's lease (default 0)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="override a compaction option (repeatable): "
        + ", ".join(PolicyOptions.__dataclass_fields__),
    )
    m = p.add_argument_group("maintenance")
    m.add_argument("--expire", action="store_true", help="expire old snapshots after compacting")
    m.add_argument(
        "--retain-last",
        type=_positive_int,
        default=DEFAULT_RETAIN_LAST,
        metavar="N",
        help=f"--expire keeps at least the newest N snapshots (default {DEFAULT_RETAIN_LAST})",
    )
    m.add_argument(
        "--expire-older-than",
        type=parse_duration,
        default=DEFAULT_SNAPSHOT_AGE,
        metavar="AGE",
        help="--expire deletes only snapshots older than AGE (default 1h; 90s, 15m, 7d, ...)",
    )
    m.add_argument(
        "--remove-orphans",
        action="store_true",
        help="delete unreferenced files older than the grace period",
    )
    m.add_argument(
        "--orphan-grace",
        type=parse_duration,
        default=DEFAULT_ORPHAN_GRACE,
        metavar="AGE",
        help="grace period of --remove-orphans (default 1d)",
    )
    o = p.add_argument_group("output and access")
    o.add_argument("--json", action="store_true", help="JSON lines on stdout, even on a terminal")
    o.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="object-store option (repeatable), e.g. endpoint_url=http://localhost:9000",
    )
    o.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    o.add_argument("--version", action="version", version=f"{PROG} (lsm3 {lsm3.__version__})")
    return p


def parse_args(argv: Sequence[str]) -> JobConfig:
    """The configuration; raises SystemExit (argparse) or UsageError on bad arguments."""
    args = build_parser().parse_args(list(argv))
    options = parse_key_values(args.option, "--option", typed=True)
    unknown = sorted(set(options) - set(PolicyOptions.__dataclass_fields__))
    if unknown:
        raise UsageError(
            f"unknown compaction option(s) {unknown}; known: "
            f"{', '.join(PolicyOptions.__dataclass_fields__)} (use --policy for the policy)"
        )
    storage = parse_key_values(args.storage_option, "--storage-option", typed=False)
    if args.interval is not None and args.interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    return JobConfig(
        warehouse=args.warehouse or None,
        namespaces=_namespaces(args),
        uris=tuple(args.uris),
        storage_options=storage or None,
        interval=args.interval,
        policy=args.policy,
        max_bytes=args.max_bytes,
        max_requests=args.max_requests,
        owner=args.owner,
        wait_for_lease=args.wait_for_lease,
        options=options,
        expire=args.expire,
        retain_last=args.retain_last,
        expire_older_than=args.expire_older_than,
        remove_orphans=args.remove_orphans,
        orphan_grace=args.orphan_grace,
        json=args.json,
        debug=args.debug or os.environ.get("LSM3_DEBUG") == "1",
    )


def _namespaces(args: argparse.Namespace) -> tuple[str, ...]:
    if not args.uris and not args.warehouse:
        raise UsageError("nothing to compact: pass table URIs, --warehouse URI, or both")
    if args.namespace and not args.warehouse:
        raise UsageError("--namespace selects tables of a warehouse: pass --warehouse too")
    try:
        return tuple(dict.fromkeys(check_namespace(ns) for ns in args.namespace or ()))
    except InvalidIdentifier as exc:
        raise UsageError(f"--namespace: {exc}") from None


# --------------------------------------------------------------------------- one table


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


def run_table(
    target: Target,
    config: JobConfig,
    stop: threading.Event,
    reporter: Reporter,
    pass_number: int,
) -> TableOutcome:
    """Compact one table, then run the maintenance asked for; never raises an Exception."""
    started = time.perf_counter()
    by_uri = target.catalog is None
    outcome = TableOutcome(target.name, pass_number, uri=target.name if by_uri else None)
    try:
        table = target.open()
        outcome.uri = outcome.uri or table.uri
        reporter.table_started(outcome, table, config)
        outcome.compaction = compact(
            table,
            policy=config.policy,
            max_bytes=config.max_bytes,
            max_requests=config.max_requests,
            owner=config.owner,
            wait_for_lease=config.wait_for_lease,
            options=config.options,
            stop=stop,
            on_task=lambda task: reporter.task(outcome, task),
        )
        if config.expire and not stop.is_set():
            outcome.expire = expire_snapshots(
                table, retain_last=config.retain_last, older_than=config.expire_older_than
            )
        if config.remove_orphans and not stop.is_set():
            outcome.orphans = remove_orphan_files(table, older_than=config.orphan_grace)
        if stop.is_set():
            outcome.status = "stopped"
    except LeaseHeld as exc:
        if stop.is_set():  # the wait for the lease was cut short by a signal
            outcome.status = "stopped"
        else:
            _failed(outcome, "lease-held", EXIT_LEASE_HELD, exc, config.debug)
    except Fenced as exc:
        _failed(outcome, "fenced", EXIT_FENCED, exc, config.debug)
    except TableNotFound as exc:
        if target.catalog is not None and not _still_listed(target):
            outcome.status = "dropped"  # dropped from the catalog since the pass listed it
        else:
            _failed(outcome, "error", EXIT_ERROR, exc, config.debug)
    except Lsm3Error as exc:
        _failed(outcome, "error", EXIT_ERROR, exc, config.debug)
    except Exception as exc:  # a bug or an unexpected failure: still one line
        _failed(outcome, "error", EXIT_ERROR, exc, config.debug, unexpected=True)
    outcome.seconds = time.perf_counter() - started
    reporter.table_finished(outcome)
    return outcome


def _still_listed(target: Target) -> bool:
    assert target.catalog is not None
    try:
        return target.catalog.table_exists(target.name)
    except Lsm3Error:
        return True  # cannot tell: report the original error


def _failed(
    outcome: TableOutcome,
    status: str,
    code: int,
    exc: BaseException,
    debug: bool,
    unexpected: bool = False,
) -> None:
    outcome.status = status
    outcome.exit_code = code
    outcome.error = _message(exc, unexpected)
    if debug:
        outcome.traceback = traceback.format_exc()


def _message(exc: BaseException, unexpected: bool) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    return message


# --------------------------------------------------------------------------- passes


def run(config: JobConfig, stop: threading.Event, reporter: Reporter) -> int:
    """One pass (``interval`` None) or passes until ``stop`` is set; the exit status."""
    pass_number = 0
    while True:
        pass_number += 1
        started = time.monotonic()
        pass_targets, code = _pass_targets(config, reporter, pass_number)
        codes = [code]
        for target in pass_targets:
            if stop.is_set():
                break
            codes.append(run_table(target, config, stop, reporter, pass_number).exit_code)
        if config.interval is None:
            return max(codes, key=_SEVERITY.index, default=EXIT_OK)
        # Fixed rate: the next pass starts `interval` after this one started (at once if
        # this one overran).
        if stop.wait(max(0.0, started + config.interval - time.monotonic())):
            return EXIT_OK


def _pass_targets(
    config: JobConfig, reporter: Reporter, pass_number: int
) -> tuple[list[Target], int]:
    """The pass's tables and its exit status so far: when the warehouse cannot be listed,
    the error is reported and the pass works on the URIs alone."""
    try:
        return targets(config), EXIT_OK
    except Exception as exc:
        unexpected = not isinstance(exc, Lsm3Error)
        message = _message(exc, unexpected)
        trace = traceback.format_exc() if config.debug else None
        reporter.warehouse_failed(str(config.warehouse), pass_number, message, trace)
        return uri_targets(config), EXIT_ERROR


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Set ``stop`` on the first SIGTERM or SIGINT; a second one raises KeyboardInterrupt
    (abandoning the current task). Yields the names of the signals received.

    The handler takes no lock: it runs in the main thread between two bytecodes, possibly
    while that thread holds the Event's own lock (inside ``stop.wait``), so ``stop.set()``
    there could deadlock. A watcher thread sets the Event instead, within 0.1 s.
    """
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)

    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if received:
                stop.set()
                return

    watcher = threading.Thread(target=watch, name="lsm3-compactor-signals", daemon=True)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    watcher.start()
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        done.set()
        watcher.join(timeout=1.0)  # a daemon thread: never let it hold up the exit


# --------------------------------------------------------------------------- output


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
        tasks = plan(table._files_of(table.current_snapshot()), policy, PolicyOptions(**values))
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


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; returns the exit status (the console script exits with it)."""
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help, --version and argparse usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        print(f"{PROG}: error: {exc} (see '{PROG} --help')", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(config.debug)
    terminal = not config.json and sys.stderr.isatty()
    reporter: Reporter = (TerminalReporter if terminal else JsonReporter)(
        sys.stdout, sys.stderr, config.debug
    )
    stop = threading.Event()
    try:
        with stop_on_signals(stop) as received:
            code = run(config, stop, reporter)
            if received:
                reporter.stopped(received)
            return code
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted by a second signal; work in progress abandoned", file=sys.stderr
        )
        return EXIT_INTERRUPTED


def _configure_logging(debug: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    if debug:
        for name in ("compactor", "lsm3"):
            logging.getLogger(name).setLevel(logging.DEBUG)


if __name__ == "__main__":
    sys.exit(main())
