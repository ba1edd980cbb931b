"""The row commands of ``lsm3``: ``write`` rows in, ``scan``, ``get`` and ``changes`` them out.

Each command is a ``cmd_*`` function of the parsed arguments and stdout, returning the exit
status; :func:`add_commands` declares their arguments and examples.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

from lsm3.cli.args import (
    PROG,
    AddCommand,
    UsageError,
    check_one_snapshot_choice,
    open_table,
    parse_as_of,
    parse_key,
    parse_names,
)
from lsm3.cli.filter import FILTER_HELP, parse_filter
from lsm3.cli.io import (
    check_output_name,
    format_rows,
    input_format,
    limited,
    read_input,
    to_json_line,
    write_rows,
)


def cmd_write(args: argparse.Namespace, out: IO[str]) -> int:
    if args.commit_id and not args.writer_id:
        raise UsageError("--commit-id needs --writer-id (a commit id is per writer)")
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
    formats = [input_format(p, args.format) for p in args.files]
    changes = 0
    with table.writer(args.writer_id) as writer:
        for path, fmt in zip(args.files, formats, strict=True):
            data = read_input(path, fmt, table.schema)
            changes += data.num_rows
            if args.cdc:
                writer.apply_cdc(data, op_column=args.op_column)
            elif args.delete:
                writer.delete(data)
            else:
                writer.upsert(data)
        snap = None
        if changes or args.commit_id:
            metadata = {"files": [os.path.basename(p) for p in args.files][:100]}
            snap = writer.commit(commit_id=args.commit_id, metadata=metadata)
    if snap is None:
        print("nothing to commit (the input files hold no rows)", file=out)
        return 0
    s = snap.summary
    print(
        f"committed snapshot {snap.snapshot_id} to {table.uri}: {changes} change(s) from "
        f"{len(args.files)} file(s) -> {s.get('added_files', 0)} run(s), "
        f"{s.get('added_rows', 0)} row(s) of which {s.get('added_deletes', 0)} delete(s)",
        file=out,
    )
    return 0


def cmd_scan(args: argparse.Namespace, out: IO[str]) -> int:
    check_one_snapshot_choice(args)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be zero or more")
    check_output_name(args.output)
    table = open_table(args)
    columns = parse_names(args.columns, "--columns") if args.columns else None
    expr = parse_filter(args.filter, table.schema) if args.filter else None
    as_of = parse_as_of(args.as_of) if args.as_of is not None else None
    reader = table.to_batches(
        columns=columns, filter=expr, snapshot_id=args.snapshot, as_of=as_of, tag=args.tag
    )
    write_rows(reader.schema, limited(reader, args.limit), args.output, args.format, out)
    return 0


def cmd_get(args: argparse.Namespace, out: IO[str]) -> int:
    check_one_snapshot_choice(args)
    table = open_table(args)
    keys = [parse_key(k, table.schema, table.primary_key) for k in args.keys]
    columns = parse_names(args.columns, "--columns") if args.columns else None
    rows = table.get_many(keys, snapshot_id=args.snapshot, columns=columns, tag=args.tag)
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
    if args.from_snapshot < 0:
        raise UsageError("--from must be a snapshot id >= 0 (0: from the empty table)")
    if args.to_snapshot is not None and args.to_snapshot < args.from_snapshot:
        raise UsageError(f"--to {args.to_snapshot} is before --from {args.from_snapshot}")
    check_output_name(args.output)
    table = open_table(args)
    result = table.changes(
        args.from_snapshot, args.to_snapshot, include_update_before=args.include_update_before
    )
    write_rows(result.schema, result.to_batches(), args.output, args.format, out)
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
    p.add_argument("--limit", type=int, metavar="N", help="stop after N rows")
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
        "\n" + _CHANGES_HELP,
    )
    p.add_argument(
        "--from",
        dest="from_snapshot",
        type=int,
        required=True,
        metavar="ID",
        help="the snapshot id already consumed (0: the empty table)",
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
