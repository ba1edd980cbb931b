#!/usr/bin/env python3
"""Stream Debezium-style change events into an lsm3 table, exactly once across restarts.

This is the ingestion loop to copy into your own consumer. It reads change events, one JSON
object per line::

    {"op": "c|r|u|d", "before": {...} | null, "after": {...} | null, "source": {"lsn": N}}

(optionally wrapped as ``{"payload": {...}}``, as Kafka Connect's JSON converter writes them;
blank lines and ``null`` tombstones are skipped) from a file (``--input FILE``), from stdin
(``--input -``) or from a built-in generator (``--generate N``). It buffers the changes and
commits every ``--commit-every`` events or ``--commit-interval`` seconds, whichever comes first.

Exactly once: every commit is made under a fixed ``--writer-id`` and records its source
offset in the commit metadata (``{"position": <line number>, "lsn": <last lsn>}``); the commit
of the data and of the offset is one atomic snapshot. On start the loop asks the table for
``last_commit(writer_id)`` and skips the input up to the committed position. So if the process
is killed at any point (even ``kill -9`` in the middle of a commit) and restarted on the same
input, no event is lost and none is applied twice. The commit id is derived from the offset,
so a commit retried after an ambiguous failure is applied at most once as well. (With Kafka you
would store the partition offsets instead of the line number, and seek to them on start.)

SIGTERM and SIGINT stop the loop gracefully: the pending events are committed, then it exits 0.

Examples::

    # generate 10,000 events into a new local table, committing every 1,000
    python examples/stream_cdc.py --table /tmp/orders --create --generate 10000

    # a Debezium export on S3/MinIO (endpoint and keys from the AWS environment)
    python examples/stream_cdc.py --table s3://bucket/orders --create --input changes.jsonl \\
        --schema 'id:int64,name:string,price:float64' --primary-key id

    # follow a pipe; commit at least every 5 seconds
    kafka-console-consumer ... | python examples/stream_cdc.py --table ./t --input - \\
        --commit-interval 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pyarrow as pa

import lsm3
from lsm3.cli import format_schema, parse_key_values, parse_schema

log = logging.getLogger("stream_cdc")

#: The schema of the built-in generator's rows (used by ``--create`` with ``--generate``).
GENERATOR_SCHEMA = "id:int64,name:string,qty:int64,price:float64,updated_at:timestamp[us,UTC]"
UPSERT_OPS = {"c", "r", "u"}
DELETE_OPS = {"d"}
_EOF = object()


class InputError(Exception):
    """A malformed input line; the events before it are committed, then the loop stops."""


# --------------------------------------------------------------------------- input


@dataclass
class Event:
    position: int  # 1-based line number (or event number of the generator)
    op: str  # c, r, u, d
    row: dict[str, Any]  # the after-image (before-image for deletes)
    lsn: int | None


def parse_event(position: int, record: Any) -> Event | None:
    """One Debezium change event (a parsed JSON value) -> Event; None for a tombstone."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise InputError(f"line {position}: expected a JSON object, got {type(record).__name__}")
    if "payload" in record and "op" not in record:
        record = record["payload"]
        if record is None:
            return None
        if not isinstance(record, dict):
            raise InputError(f"line {position}: payload is not a JSON object")
    op = record.get("op")
    if op in UPSERT_OPS:
        row = record.get("after")
    elif op in DELETE_OPS:
        row = record.get("before")
    else:
        raise InputError(
            f"line {position}: unsupported op {op!r} (expected c, r, u or d; truncate 't' and "
            "message 'm' events cannot be applied to a keyed table)"
        )
    if not isinstance(row, dict):
        image = "before" if op in DELETE_OPS else "after"
        raise InputError(f"line {position}: op {op!r} needs a {image!r} object")
    source = record.get("source")
    lsn = source.get("lsn") if isinstance(source, dict) else None
    return Event(position, op, row, lsn if isinstance(lsn, int) else None)


def read_lines(path: str, skip_through: int) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of a file or stdin, skipping committed lines unparsed."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        for position, line in enumerate(stream, 1):
            if position <= skip_through:
                continue
            text = line.strip()
            if not text:
                yield position, None
                continue
            try:
                yield position, json.loads(text)
            except ValueError as exc:
                raise InputError(f"line {position} is not valid JSON: {exc}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def generate_events(n: int, seed: int, skip_through: int = 0) -> Iterator[tuple[int, Any]]:
    """``n`` deterministic Debezium events (inserts, updates, deletes) for GENERATOR_SCHEMA.

    The same seed always yields the same sequence, so a restarted run can skip what it
    already committed.
    """
    rng = random.Random(seed)
    live: list[int] = []
    next_id = 1
    t0_us = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    for position in range(1, n + 1):
        lsn = 10_000 + position
        roll = rng.random()
        if not live or roll < 0.5:
            op, key = "c", next_id
            next_id += 1
            live.append(key)
        elif roll < 0.85:
            op, key = "u", rng.choice(live)
        else:
            op = "d"
            key = live.pop(rng.randrange(len(live)))
        row = {
            "id": key,
            "name": f"item-{key}",
            "qty": rng.randrange(1, 100),
            "price": round(rng.uniform(1, 1000), 2),
            "updated_at": t0_us + lsn * 1000,
        }
        if position <= skip_through:
            continue
        event: dict[str, Any]
        if op == "d":
            event = {"op": "d", "before": {"id": key}, "after": None}
        else:
            event = {"op": op, "before": None, "after": row}
        event["source"] = {"lsn": lsn}
        yield position, event


class Feeder(threading.Thread):
    """Reads the input on a thread, so the loop can commit on time while the input is idle."""

    def __init__(self, source: Iterator[tuple[int, Any]]) -> None:
        super().__init__(name="stream-cdc-input", daemon=True)
        self.source = source
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=10_000)

    def run(self) -> None:
        try:
            for item in self.source:
                self.queue.put(item)
        except BaseException as exc:  # handed to the loop, which commits, then reports it
            self.queue.put(exc)
        self.queue.put(_EOF)


# --------------------------------------------------------------------------- the loop


class Ingest:
    """Buffers events and commits them, with the source offset, under one writer id."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.storage_options = parse_key_values(args.storage_option, "--storage-option", False)
        self.table: lsm3.Table | None = None
        self.writer: lsm3.Writer | None = None
        self.rows: list[dict[str, Any]] = []
        self.ops: list[str] = []
        self.position = 0  # the last input position consumed
        self.committed_position = 0
        self.lsn: int | None = None
        self.last_commit_time = time.monotonic()
        self.unknown_fields: set[str] = set()
        self.events = 0
        self.commits = 0

    # -- table ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the table (creating it now if a schema is known) and find the resume point."""
        try:
            self.table = lsm3.open_table(self.args.table, self.storage_options or None)
        except lsm3.TableNotFound:
            if not self.args.create:
                raise
            schema_text = self.args.schema or (GENERATOR_SCHEMA if self.args.generate else None)
            if schema_text is None:
                log.info(
                    "table %s does not exist; it is created at the first commit, with "
                    "a schema inferred from the first events",
                    self.args.table,
                )
                return
            self.table = self._create(parse_schema(schema_text))
        assert self.table is not None
        self.writer = self.table.writer(self.args.writer_id)
        last = self.table.last_commit(self.args.writer_id)
        if last is not None:
            self.committed_position = int(last.metadata.get("position", 0))
            self.position = self.committed_position
            self.lsn = last.metadata.get("lsn")
            log.info(
                "resuming writer %r after position %d (lsn %s, snapshot %d)",
                self.args.writer_id,
                self.committed_position,
                self.lsn,
                last.snapshot_id,
            )
        else:
            log.info(
                "writer %r has no commit in %s: starting at the beginning",
                self.args.writer_id,
                self.table.uri,
            )

    def _create(self, schema: pa.Schema) -> lsm3.Table:
        key = [k.strip() for k in self.args.primary_key.split(",")]
        try:
            table = lsm3.create_table(
                self.args.table,
                schema,
                primary_key=key,
                buckets=self.args.buckets,
                storage_options=self.storage_options or None,
            )
            log.info(
                "created table %s with schema %s, key %s",
                table.uri,
                format_schema(table.schema),
                ",".join(key),
            )
            return table
        except lsm3.TableAlreadyExists:  # another instance created it first
            return lsm3.open_table(self.args.table, self.storage_options or None)

    def _infer_schema(self) -> pa.Schema:
        names: dict[str, None] = {}
        for row in self.rows:
            names.update(dict.fromkeys(row))
        fields = []
        for name in names:
            t = pa.array([r.get(name) for r in self.rows]).type
            fields.append(pa.field(name, pa.string() if pa.types.is_null(t) else t))
        return pa.schema(fields)

    # -- buffering and committing ---------------------------------------------------------

    def add(self, position: int, event: Event | None) -> None:
        self.position = position
        if event is None:
            return
        self.rows.append(event.row)
        self.ops.append(event.op)
        if event.lsn is not None:
            self.lsn = event.lsn
        self.events += 1

    @property
    def pending(self) -> int:
        return self.position - self.committed_position

    def due(self) -> bool:
        if not self.pending:
            return False
        if len(self.rows) >= self.args.commit_every:
            return True
        return time.monotonic() - self.last_commit_time >= self.args.commit_interval

    def batch(self, schema: pa.Schema) -> pa.Table:
        """The buffered events as one Arrow table (one column per table column + ``op``).

        Columns are built with Arrow's type inference and cast to the table types by the
        writer with safe casts, so a 1.5 in an integer column is an error, not a silent 1.
        """
        columns: dict[str, pa.Array] = {}
        for name in schema.names:
            values = [r.get(name) for r in self.rows]
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InputError(
                    f"positions {self.committed_position + 1}-{self.position}: column {name!r} "
                    f"has values of mixed types: {exc}"
                ) from None
        extra = {k for r in self.rows for k in r} - set(schema.names) - self.unknown_fields
        if extra:
            log.warning("ignoring input fields that the table does not have: %s", sorted(extra))
            self.unknown_fields |= extra
        columns["op"] = pa.array(self.ops, pa.string())
        return pa.table(columns)

    def commit(self) -> None:
        if not self.pending:
            return
        started = time.monotonic()
        if self.table is None:
            self.table = self._create(self._infer_schema())
            self.writer = self.table.writer(self.args.writer_id)
        assert self.writer is not None
        if self.rows:
            self.writer.apply_cdc(self.batch(self.table.schema), op_column="op")
        metadata = {"position": self.position, "lsn": self.lsn, "input": self.args.source_name}
        snap = self.writer.commit(commit_id=f"position-{self.position}", metadata=metadata)
        counts = {op: self.ops.count(op) for op in sorted(set(self.ops))}
        log.info(
            "snapshot %s: positions %d-%d, %d event(s) %s, lsn %s (%.0f ms)",
            snap.snapshot_id if snap else "-",
            self.committed_position + 1,
            self.position,
            len(self.rows),
            counts,
            self.lsn,
            (time.monotonic() - started) * 1000,
        )
        self.committed_position = self.position
        self.rows, self.ops = [], []
        self.last_commit_time = time.monotonic()
        self.commits += 1


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    stop_reason: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: leave now (the committed state is consistent)
            os._exit(128 + signum)
        stop_reason.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ingest = Ingest(args)
    ingest.open()
    skip = ingest.committed_position
    if args.generate is not None:
        source = generate_events(args.generate, args.seed, skip)
    else:
        source = read_lines(args.input, skip)
    feeder = Feeder(source)
    feeder.start()

    started = time.monotonic()
    consumed = 0
    failure: BaseException | None = None
    while not stop.is_set():
        wait = max(0.0, args.commit_interval - (time.monotonic() - ingest.last_commit_time))
        try:
            item = feeder.queue.get(timeout=min(wait, 0.25) if ingest.pending else 0.25)
        except queue.Empty:
            item = None
        if item is _EOF:
            break
        if isinstance(item, BaseException):
            failure = item
            break
        if item is not None:
            position, record = item
            try:
                event = parse_event(position, record)
            except InputError as exc:
                failure = exc
                break
            ingest.add(position, event)
            consumed += 1
            if args.rate:
                ahead = started + consumed / args.rate - time.monotonic()
                if ahead > 0:
                    stop.wait(ahead)
        if ingest.due():
            ingest.commit()
    ingest.commit()  # what is pending, on EOF, on a stop signal and before reporting an error
    how = f"stopped by {stop_reason[0]}" if stop_reason else "end of input"
    log.info(
        "%s: %d event(s) in %d commit(s) this run; committed through position %d",
        how,
        ingest.events,
        ingest.commits,
        ingest.committed_position,
    )
    if failure is not None:
        raise failure
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream_cdc.py",
        description="Stream Debezium-style change events (JSON lines) into an lsm3 table, "
        "exactly once across restarts.",
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--table", metavar="URI", help="the lsm3 table (required)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="JSON-lines change events ('-': stdin)")
    src.add_argument(
        "--generate", type=int, metavar="N", help="use N generated events (see --seed)"
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument(
        "--emit",
        action="store_true",
        help="with --generate: print the events as JSON lines to stdout and exit",
    )
    parser.add_argument(
        "--writer-id",
        default="stream-cdc",
        help="the writer's stable name; its last commit is the resume point (default "
        "stream-cdc). Give each source partition its own writer id.",
    )
    parser.add_argument(
        "--commit-every", type=int, default=1000, metavar="N", help="commit every N events"
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="commit pending events at least this often (default 10)",
    )
    parser.add_argument(
        "--create",
        action="store_true",
        help="create the table if it does not exist: with --schema, with the generator's "
        f"schema ({GENERATOR_SCHEMA}) for --generate, or else with a schema inferred from "
        "the first events (JSON integers -> int64, numbers -> float64, strings -> string, "
        "booleans -> bool)",
    )
    parser.add_argument("--schema", help="schema for --create, e.g. 'id:int64,name:string'")
    parser.add_argument(
        "--primary-key", default="id", help="key column(s) for --create (default id)"
    )
    parser.add_argument("--buckets", type=int, default=1, help="buckets for --create")
    parser.add_argument(
        "--storage-option", action="append", metavar="KEY=VALUE", help="object-store option"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="consume at most this many events per second (0: unlimited); for demos and tests",
    )
    parser.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.commit_every < 1 or args.commit_interval <= 0:
        print(
            "stream_cdc: error: --commit-every and --commit-interval must be positive",
            file=sys.stderr,
        )
        return 2
    if args.emit:
        if args.generate is None:
            print("stream_cdc: error: --emit needs --generate", file=sys.stderr)
            return 2
        try:
            for _, event in generate_events(args.generate, args.seed):
                sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. piped into head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not args.table:
        print("stream_cdc: error: --table is required", file=sys.stderr)
        return 2
    args.source_name = f"generate:{args.seed}" if args.generate is not None else args.input
    # Our progress at INFO; everything else (lsm3, boto3) only from WARNING up.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return run(args)
    except (lsm3.Lsm3Error, InputError, OSError) as exc:
        print(f"stream_cdc: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
