"""The snapshot commands of ``lsm3``: list ``snapshots`` and name them (``tag``, ``untag``,
``tags``); :mod:`lsm3.cli.inspect` looks inside one.
"""

from __future__ import annotations

import argparse
from typing import IO

from lsm3.cli.args import AddCommand, UsageError, open_table
from lsm3.cli.io import format_rows, iso_ms, to_json_line
from lsm3.errors import InvalidInput, SnapshotNotFound
from lsm3.format.tags import check_tag_name

# --------------------------------------------------------------------------- snapshots


def _summary_text(s: dict[str, int]) -> str:
    """``+2 files, +900 rows (120 del); 8 files, 1900 rows`` (added; then the live totals)."""
    removed = f"-{s['removed_files']} " if s.get("removed_files") else ""
    return (
        f"{removed}+{s.get('added_files', 0)} files, +{s.get('added_rows', 0)} rows "
        f"({s.get('added_deletes', 0)} del); {s.get('total_files', 0)} files, "
        f"{s.get('total_rows', 0)} rows"
    )


def cmd_snapshots(args: argparse.Namespace, out: IO[str]) -> int:
    table = open_table(args)
    snaps = table.snapshots()
    if args.format == "jsonl":
        for s in snaps:
            doc = {
                "snapshot_id": s.snapshot_id,
                "parent_id": s.parent_id,
                "timestamp_ms": s.timestamp_ms,
                "time": iso_ms(s.timestamp_ms),
                "kind": s.kind,
                "writer_id": s.writer_id,
                "commit_id": s.commit_id,
                "metadata": s.metadata,
                "summary": s.summary,
            }
            out.write(to_json_line(doc) + "\n")
        return 0
    rows = [
        [
            s.snapshot_id,
            "-" if s.parent_id is None else s.parent_id,
            iso_ms(s.timestamp_ms),
            s.kind,
            s.writer_id or "-",
            s.commit_id or "-",
            _summary_text(s.summary),
            to_json_line(s.metadata) if s.metadata else "-",
        ]
        for s in snaps
    ]
    header = ["id", "parent", "time", "kind", "writer", "commit", "summary", "metadata"]
    right = [True, True, False, False, False, False, False, False]
    print(format_rows(header, rows, right, max_width=args.width), file=out)
    print(f"({len(snaps)} snapshot{'s' if len(snaps) != 1 else ''})", file=out)
    return 0


# --------------------------------------------------------------------------- tags


def _tag_name(name: str) -> str:
    """Check a tag name before the table is opened: a malformed one is a usage error."""
    try:
        check_tag_name(name)
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None
    return name


def cmd_tag(args: argparse.Namespace, out: IO[str]) -> int:
    name = _tag_name(args.name)
    table = open_table(args)
    snapshot_id = table.create_tag(name, args.snapshot)
    print(f"tagged snapshot {snapshot_id} of {table.uri} as {name!r}", file=out)
    return 0


def cmd_untag(args: argparse.Namespace, out: IO[str]) -> int:
    name = _tag_name(args.name)
    table = open_table(args)
    table.delete_tag(name)
    print(f"deleted tag {name!r} of {table.uri}; expiry may now remove its snapshot", file=out)
    return 0


def cmd_tags(args: argparse.Namespace, out: IO[str]) -> int:
    table = open_table(args)
    tags = sorted(table.tags().items(), key=lambda item: (item[1], item[0]))
    docs = []
    for name, snapshot_id in tags:
        try:
            snap = table.snapshot(snapshot_id)
        except SnapshotNotFound:  # the tag outlived its snapshot (removed by hand?)
            snap = None
        time = iso_ms(snap.timestamp_ms) if snap else None
        docs.append({"name": name, "snapshot_id": snapshot_id, "time": time})
    if args.format == "jsonl":
        for doc in docs:
            out.write(to_json_line(doc) + "\n")
        return 0
    rows = [[d["name"], d["snapshot_id"], d["time"] or "missing"] for d in docs]
    print(format_rows(["tag", "snapshot", "time"], rows, [False, True, False]), file=out)
    print(f"({len(docs)} tag{'s' if len(docs) != 1 else ''})", file=out)
    return 0


# --------------------------------------------------------------------------- arguments


def add_commands(add: AddCommand) -> None:
    """Declare ``snapshots``, ``tag``, ``untag`` and ``tags``."""
    p = add(
        "snapshots",
        "list the snapshots of a table, oldest first",
        "  lsm3 snapshots ./orders\n  lsm3 snapshots s3://b/orders --format jsonl\n",
    )
    p.add_argument("--format", choices=["table", "jsonl"], default="table", help="default: table")
    p.add_argument("--width", type=int, default=80, help="cut table cells at this many characters")
    p.set_defaults(func=cmd_snapshots)

    p = add(
        "tag",
        "name a snapshot (default: the current one); expiry keeps tagged snapshots",
        "  lsm3 tag ./orders month-end\n"
        "  lsm3 tag ./orders before-backfill --snapshot 41\n"
        "  lsm3 scan ./orders --tag month-end      # read it back by name\n"
        "\n"
        "Names are 1-128 ASCII letters, digits, '_', '-' and '.'. A tag is never moved: delete\n"
        "it with 'lsm3 untag' first.\n",
    )
    p.add_argument("name", metavar="NAME", help="the tag name")
    p.add_argument("--snapshot", type=int, metavar="ID", help="tag this snapshot id")
    p.set_defaults(func=cmd_tag)

    p = add(
        "untag",
        "delete a tag (the snapshot stays until expiry removes it)",
        "  lsm3 untag ./orders month-end\n",
    )
    p.add_argument("name", metavar="NAME", help="the tag name")
    p.set_defaults(func=cmd_untag)

    p = add(
        "tags",
        "list the tags of a table with their snapshots, oldest snapshot first",
        "  lsm3 tags ./orders\n  lsm3 tags s3://b/orders --format jsonl\n",
    )
    p.add_argument("--format", choices=["table", "jsonl"], default="table", help="default: table")
    p.set_defaults(func=cmd_tags)
