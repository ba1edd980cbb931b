"""The compactor job's command line: its options and help, the exit statuses it documents,
and the :class:`JobConfig` they parse into. Sizes (``10GiB``) and durations (``7d``) are
parsed here too; a bad argument is a usage error (exit status 2) on one line. The program
itself is :mod:`compactor.job`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import lsm3
from catalog import InvalidIdentifier
from catalog.identifiers import check_namespace
from compactor.maintenance import DEFAULT_ORPHAN_GRACE, DEFAULT_RETAIN_LAST, DEFAULT_SNAPSHOT_AGE
from compactor.policy import POLICIES, PolicyOptions
from lsm3.cli import UsageError, parse_key_values

PROG = "lsm3-compactor"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LEASE_HELD = 3
EXIT_FENCED = 4
EXIT_INTERRUPTED = 130


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
    executor: str = "local"  # "ray": compaction tasks as Ray tasks


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
  RAY_ADDRESS=ray://head:10001 {PROG} --once --executor ray s3://bucket/orders
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
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where compaction tasks run: in this process (default) or as Ray tasks on the "
        "cluster RAY_ADDRESS names, else a local one (pip install lsm3[ray])",
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
        executor=args.executor,
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
