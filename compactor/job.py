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

The command line is parsed by :mod:`compactor.job_args`, the tables of a pass resolved by
:mod:`compactor.targets`, progress shown by :mod:`compactor.report`, and signals handled by
:mod:`compactor.shutdown`; this module runs the passes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Sequence

from catalog import TableNotFound
from compactor.compact import compact
from compactor.job_args import (
    EXIT_ERROR,
    EXIT_FENCED,
    EXIT_INTERRUPTED,
    EXIT_LEASE_HELD,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    JobConfig,
    build_parser,
    parse_args,
    parse_duration,
    parse_size,
)
from compactor.lease import Fenced, LeaseHeld
from compactor.maintenance import expire_snapshots, remove_orphan_files
from compactor.report import (
    JsonReporter,
    Reporter,
    TableOutcome,
    TerminalReporter,
    summary_text,
)
from compactor.shutdown import stop_on_signals
from compactor.targets import Target, targets, uri_targets, warehouse_targets
from lsm3.cli import UsageError
from lsm3.errors import Lsm3Error

# The job's names, wherever they are defined: the console script, ``python -m compactor`` and
# the tests import them from here.
__all__ = [
    "EXIT_ERROR",
    "EXIT_FENCED",
    "EXIT_INTERRUPTED",
    "EXIT_LEASE_HELD",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "JobConfig",
    "JsonReporter",
    "Reporter",
    "TableOutcome",
    "Target",
    "TerminalReporter",
    "build_parser",
    "main",
    "parse_args",
    "parse_duration",
    "parse_size",
    "run",
    "run_table",
    "stop_on_signals",
    "summary_text",
    "targets",
    "uri_targets",
    "warehouse_targets",
]

#: With several tables, the exit status is the most severe of theirs, in this order.
_SEVERITY = (EXIT_OK, EXIT_LEASE_HELD, EXIT_FENCED, EXIT_ERROR)


# --------------------------------------------------------------------------- one table


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
            executor=config.executor,
            storage_options=config.storage_options,
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
