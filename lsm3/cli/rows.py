"""The row commands of ``lsm3``: ``write`` rows in, ``scan``, ``get`` and ``changes`` them out.

Each command is a ``cmd_*`` function of the parsed arguments and stdout, returning the exit
status; :func:`add_commands` declares their arguments and examples.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import IO, Any

import pyarrow as pa

import lsm3
from lsm3.cli.args import (
    PROG,
    AddCommand,
    CliError,
    UsageError,
    check_one_snapshot_choice,
    open_table,
    parse_as_of,
    parse_key,
    parse_names,
)
from lsm3.cli.filter import FILTER_HELP, parse_filter
from lsm3.cli.inputs import (
    NULL_VALUES_HELP,
    InputFile,
    check_keys_not_empty,
    input_format,
    parse_null_values,
)
from lsm3.cli.io import (
    check_output_name,
    format_rows,
    iso_ms,
    limited,
    observed,
    rows_note,
    to_json_line,
    write_rows,
)
from lsm3.cli.progress import Progress
from lsm3.errors import SnapshotNotFound


def cmd_write(args: argparse.Namespace, out: IO[str]) -> int:
    if args.commit_id and not args.writer_id:
        raise UsageError("--commit-id needs --writer-id (a commit id is per writer)")
    null_values = parse_null_values(args.null_values)
    sources = [InputFile(p, input_format(p, args.format), null_values) for p in args.files]
    table = open_table(args)
    if args.writer_id and args.commit_id:
        last = table.last_commit(args.writer_id)
        if last is not None and last.commit_id == args.commit_id:
            print(
                f"commit {args.commit_id!r} of writer {args.writer_id!r} is already in "
                f"snapshot {last.snapshot_id}; nothing written",
                file=out,
            )
            return 0
    progress = Progress("write")
    with table.writer(args.writer_id) as writer:
        for source in sources:
            _write_file(args, table, writer, source, progress)
        progress.clear()
        snap = None
        if progress.rows or args.commit_id:
            metadata = {"files": [os.path.basename(p) for p in args.files][:100]}
            snap = writer.commit(commit_id=args.commit_id, metadata=metadata)
    if snap is None:
        print("nothing to commit (the input files hold no rows)", file=out)
        return 0
    s = snap.summary
    print(
        f"committed snapshot {snap.snapshot_id} to {table.uri}: {progress.rows} change(s) from "
        f"{len(args.files)} file(s) -> {s.get('added_files', 0)} run(s), "
        f"{s.get('added_rows', 0)} row(s) of which {s.get('added_deletes', 0)} delete(s)",
        file=out,
    )
    return 0


def _write_file(
    args: argparse.Namespace,
    table: lsm3.Table,
    writer: lsm3.Writer,
    source: InputFile,
    progress: Progress,
) -> None:
    """Stream one input file into the writer, a block at a time."""
    first_row = 0
    for batch in source.batches(table.schema):
        if not args.allow_empty_key:
            check_keys_not_empty(batch, table.primary_key, source, first_row)
        if args.cdc:
            if args.op_column not in batch.schema.names:
                raise UsageError(
                    f"{source.path} has no column {args.op_column!r} for the ops of --cdc "
                    f"(its columns: {', '.join(batch.schema.names)}); name the op column with "
                    "--op-column NAME"
                )
            writer.apply_cdc(batch, op_column=args.op_column)
        elif args.delete:
            writer.delete(batch)
        else:
            writer.upsert(batch)
        first_row += batch.num_rows
        progress.add(batch.num_rows, batch.nbytes)


#: Rows the text table shows when no --limit is given.
TABLE_ROWS = 20


def snapshot_of(table: lsm3.Table, args: argparse.Namespace) -> int:
    """The snapshot id ``--snapshot``, ``--as-of`` or ``--tag`` picks (default: the current
    one; 0 for a table with no commit), resolved once so every read of a command agrees."""
    check_one_snapshot_choice(args)
    as_of_text = getattr(args, "as_of", None)
    as_of = parse_as_of(as_of_text) if as_of_text is not None else None
    try:
        snap = table.snapshot(args.snapshot, as_of=as_of, tag=args.tag)
    except SnapshotNotFound:
        if as_of is None:
            raise
        first = table.snapshots()[:1]
        hint = (
            f"the oldest retained snapshot ({first[0].snapshot_id}) was committed at "
            f"{iso_ms(first[0].timestamp_ms)}; see '{PROG} snapshots {args.uri}'"
            if first
            else "the table has no snapshot yet"
        )
        raise CliError(
            f"no snapshot was committed at or before --as-of {as_of_text} ({iso_ms(as_of)}); {hint}"
        ) from None
    return snap.snapshot_id if snap else 0


def cmd_scan(args: argparse.Namespace, out: IO[str]) -> int:
    check_one_snapshot_choice(args)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be zero or more")
    check_output_name(args.output)
    table = open_table(args)
    columns = parse_names(args.columns, "--columns") if args.columns else None
    expr = parse_filter(args.filter, table.schema) if args.filter else None
    snapshot_id = snapshot_of(table, args)
    reader = table.to_batches(columns=columns, filter=expr, snapshot_id=snapshot_id)
    on_screen = not args.output and args.format == "table"
    if on_screen and args.limit is None:
        return _scan_to_screen(table, reader, expr, snapshot_id, out)
    if on_screen:
        n = write_rows(reader.schema, limited(reader, args.limit), None, "table", out)
        print(rows_note(n), file=out)
        return 0
    progress = Progress("scan", enabled=None if args.output or not _isatty(out) else False)
    rows = observed(limited(reader, args.limit), lambda b: progress.add(b.num_rows, b.nbytes))
    n = write_rows(reader.schema, rows, args.output, args.format, out)
    progress.clear()
    if args.output:
        print(f"wrote {n:,} row(s) to {args.output}", file=sys.stderr)
    return 0


def _scan_to_screen(
    table: lsm3.Table,
    reader: pa.RecordBatchReader,
    expr: Any,
    snapshot_id: int,
    out: IO[str],
) -> int:
    """The first :data:`TABLE_ROWS` rows as a text table at once, then how many were left out
    (counted on the key columns after the rows are shown)."""
    batches = list(limited(reader, TABLE_ROWS + 1))
    n = write_rows(reader.schema, limited(batches, TABLE_ROWS), None, "table", out)
    out.flush()
    if sum(b.num_rows for b in batches) <= TABLE_ROWS:
        print(rows_note(n), file=out)
        return 0
    reader.close()
    total = count_rows(table, expr, snapshot_id)
    print(
        f"({n:,} of {total:,} rows shown; --limit N for more, --format csv|jsonl or --output "
        "FILE for all of them)",
        file=out,
    )
    return 0


def count_rows(table: lsm3.Table, expr: Any, snapshot_id: int, what: str = "count") -> int:
    """Live rows matching ``expr`` (the key columns merged only), with progress."""
    progress = Progress(what)
    reader = table.to_batches(columns=list(table.primary_key), filter=expr, snapshot_id=snapshot_id)
    for batch in reader:
        progress.add(batch.num_rows)
    progress.clear()
    return progress.rows


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_get(args: argparse.Namespace, out: IO[str]) -> int:
    table = open_table(args)
    keys = [parse_key(k, table.schema, table.primary_key) for k in args.keys]
    columns = parse_names(args.columns, "--columns") if args.columns else None
    rows = table.get_many(keys, snapshot_id=snapshot_of(table, args), columns=columns)
    missing = [k for k, r in zip(args.keys, rows, strict=True) if r is None]
    if args.format == "table":
        names = columns or table.schema.names
        found = [[r[n] for n in names] for r in rows if r is not None]
        print(format_rows(names, found), file=out)
    else:
        for row in rows:
            out.write(to_json_line(row) + "\n")
    if missing:
        print(f"{PROG}: not found: {', '.join(missing)}", file=sys.stderr)
        return 3
    return 0


def cmd_changes(args: argparse.Namespace, out: IO[str]) -> int:
    if args.consumer is not None:
        return _consume(args, out)
    if args.follow:
        raise UsageError("--follow needs --consumer ID (the position is kept in the table)")
    if args.from_snapshot is None:
        raise UsageError("give --from ID (the snapshot already consumed) or --consumer ID")
    if args.from_snapshot < 0:
        raise UsageError("--from must be a snapshot id >= 0 (0: from the empty table)")
    if args.to_snapshot is not None and args.to_snapshot < args.from_snapshot:
        raise UsageError(f"--to {args.to_snapshot} is before --from {args.from_snapshot}")
    check_output_name(args.output)
    table = open_table(args)
    result = table.changes(
        args.from_snapshot, args.to_snapshot, include_update_before=args.include_update_before
    )
    if not args.output and args.format == "table" and result.num_rows > TABLE_ROWS:
        n = write_rows(result.schema, result.slice(0, TABLE_ROWS).to_batches(), None, "table", out)
        print(
            f"({n:,} of {result.num_rows:,} rows shown; --format csv|jsonl or --output FILE "
            "for all of them)",
            file=out,
        )
        return 0
    n = write_rows(result.schema, result.to_batches(), args.output, args.format, out)
    if args.output:
        print(f"wrote {n:,} row(s) to {args.output}", file=sys.stderr)
    elif args.format == "table":
        print(rows_note(n), file=out)
    return 0


def _consume(args: argparse.Namespace, out: IO[str]) -> int:
    """``changes --consumer ID``: the changelog since the consumer's position (each commit's
    +I, -U/+U, -D rows with _snapshot_id), then the position moves past what was printed.
    With ``--follow`` it goes on printing each new commit until interrupted."""
    if args.to_snapshot is not None:
        raise UsageError("--consumer reads up to the newest snapshot: drop --to")
    check_output_name(args.output)
    table = open_table(args)
    try:  # --from only places a new consumer; an existing one reads from its position
        consumer = table.consumer(args.consumer, args.from_snapshot)
    except lsm3.InvalidInput as exc:
        raise UsageError(str(exc)) from None
    if not args.follow:
        result = consumer.read()
        n = write_rows(result.schema, result.to_batches(), args.output, args.format, out)
        if result.num_rows:
            consumer.commit(result.column("_snapshot_id")[-1].as_py())
        if args.output:
            print(f"wrote {n:,} row(s) to {args.output}", file=sys.stderr)
        print(f"{args.consumer}: at snapshot {consumer.position}", file=sys.stderr)
        return 0
    if args.output or args.format not in ("jsonl", "csv"):
        raise UsageError("--follow prints to stdout as --format jsonl or csv")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for _sid, changes in table.follow(args.consumer, args.poll_interval, stop=stop):
            write_rows(changes.schema, changes.to_batches(), None, args.format, out)
            out.flush()
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- arguments

_CDC_HELP = (
    "With --cdc, each row carries an op: c, r, u, +I, +U upsert; d, -D delete (delete rows\n"
    "need only the key columns); -U is skipped. With --writer-id and --commit-id a repeated\n"
    "run of the same batch is applied once.\n"
)
_CHANGES_HELP = (
    "One row per key changed after snapshot --from up to --to (default: the latest), with a\n"
    "_row_kind column: +I a new key, +U the new values of a changed key, -D a deleted key\n"
    "(with its last values) and, with --include-update-before, -U the old values before each\n"
    "+U. Snapshot 0 is the empty table, so --from 0 lists every live row as +I. Remember the\n"
    "last snapshot id you consumed and pass it as --from next time to see every change once.\n"
)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", metavar="FILE", help="write to FILE (.parquet, .csv or .jsonl) instead"
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "jsonl"],
        default="table",
        help="stdout format (default: table)",
    )


def add_commands(add: AddCommand) -> None:
    """Declare ``write``, ``scan``, ``get`` and ``changes``."""
    p = add(
        "write",
        "upsert, delete or apply CDC from files, as one commit",
        "  lsm3 write ./orders day1.parquet day2.parquet\n"
        "  lsm3 write ./orders gone.csv --delete\n"
        "  lsm3 write ./orders changes.jsonl --cdc --op-column op\n"
        "  cat rows.csv | lsm3 write ./orders - --format csv\n"
        "  lsm3 write ./orders batch-17.parquet --writer-id loader --commit-id batch-17\n"
        "\n" + _CDC_HELP,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="input files ('-' for stdin)")
    p.add_argument(
        "--format",
        choices=["parquet", "csv", "jsonl"],
        help="input format (default: from the file extension: .parquet, .csv, .jsonl/.json)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cdc", action="store_true", help="rows are change events with an op")
    mode.add_argument("--delete", action="store_true", help="rows are keys to delete")
    p.add_argument("--op-column", default="op", help="the op column for --cdc (default: op)")
    p.add_argument("--null-values", metavar="LIST", help=NULL_VALUES_HELP)
    p.add_argument(
        "--allow-empty-key",
        action="store_true",
        help="store rows whose string key is '' (refused by default: usually a missing value)",
    )
    p.add_argument("--writer-id", help="name the writer (recorded in the snapshot)")
    p.add_argument("--commit-id", help="idempotency id of this commit (needs --writer-id)")
    p.set_defaults(func=cmd_write)

    p = add(
        "scan",
        "read the merged rows of a table",
        "  lsm3 scan ./orders --limit 10\n"
        "  lsm3 scan ./orders --columns id,amount --filter 'amount >= 100 and id in [1, 2, 3]'\n"
        "  lsm3 scan ./orders --filter \"status != 'cancelled' and note is not None\"\n"
        "  lsm3 scan ./orders --filter \"updated_at >= '2026-01-01'\" --format jsonl\n"
        "  lsm3 scan ./orders --snapshot 3 --output orders-v3.parquet\n"
        "  lsm3 scan ./orders --tag month-end --format csv\n" + FILTER_HELP,
    )
    p.add_argument("--columns", metavar="COLS", help="columns to return, comma-separated")
    p.add_argument("--filter", metavar="EXPR", help="row filter, see below")
    p.add_argument("--snapshot", type=int, metavar="ID", help="read this snapshot id")
    p.add_argument(
        "--as-of", metavar="TIME", help="read the snapshot current at TIME (ISO-8601 or ms)"
    )
    p.add_argument("--tag", metavar="NAME", help="read the snapshot tagged NAME")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"stop after N rows (the text table shows {TABLE_ROWS} by default)",
    )
    _add_output_options(p)
    p.set_defaults(func=cmd_scan)

    p = add(
        "get",
        "look rows up by primary key",
        "  lsm3 get ./orders 42 43\n"
        "  lsm3 get ./events acme,1001        # composite key (tenant, id)\n"
        "  lsm3 get ./orders 42 --snapshot 3 --format table\n"
        "  lsm3 get ./orders 42 --tag month-end\n"
        "\n"
        "Prints one JSON line per key ('null' when absent); exit status 3 if a key is absent.\n",
    )
    p.add_argument(
        "keys",
        nargs="+",
        metavar="KEY",
        help="a key; comma-separated values for a composite key",
    )
    p.add_argument("--columns", metavar="COLS", help="columns to return, comma-separated")
    p.add_argument("--snapshot", type=int, metavar="ID", help="read this snapshot id")
    p.add_argument("--tag", metavar="NAME", help="read the snapshot tagged NAME")
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl", help="default: jsonl")
    p.set_defaults(func=cmd_get)

    p = add(
        "changes",
        "list the net change per key between two snapshots",
        "  lsm3 changes ./orders --from 3\n"
        "  lsm3 changes ./orders --from 3 --to 5 --include-update-before --format jsonl\n"
        "  lsm3 changes s3://b/orders --from 0 --output everything.parquet\n"
        "  lsm3 changes ./orders --consumer warehouse --follow\n"
        "\n" + _CHANGES_HELP,
    )
    p.add_argument(
        "--from",
        dest="from_snapshot",
        type=int,
        metavar="ID",
        help="the snapshot id already consumed (0: the empty table)",
    )
    p.add_argument(
        "--consumer",
        metavar="ID",
        help="read as this changelog consumer: from its stored position (a new one starts at "
        "--from, default the current snapshot), commit by commit (+I, -U/+U, -D with "
        "_snapshot_id), then move the position past what was printed",
    )
    p.add_argument(
        "--follow", action="store_true", help="with --consumer: keep printing new commits"
    )
    p.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="S", help="--follow: default 1 s"
    )
    p.add_argument(
        "--to", dest="to_snapshot", type=int, metavar="ID", help="up to this snapshot id"
    )
    p.add_argument(
        "--include-update-before",
        action="store_true",
        help="also emit -U rows with the old values of updated keys",
    )
    _add_output_options(p)
    p.set_defaults(func=cmd_changes)
