"""The snapshot commands of ``lsm3``: list ``snapshots``, name them (``tag``, ``untag``,
``tags``) and ``inspect`` one: its files per level and bucket, live rows and request cost.
"""

from __future__ import annotations

import argparse
import json
from typing import IO, Any

import lsm3
from lsm3.cli.args import AddCommand, UsageError, format_schema, open_table
from lsm3.cli.io import format_rows, human_bytes, iso_ms, json_default, to_json_line
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


# --------------------------------------------------------------------------- inspect


def inspect_table(table: lsm3.Table, snapshot_id: int | None = None) -> dict[str, Any]:
    """The figures ``lsm3 inspect`` reports, as a JSON-ready dict.

    ``requests`` are the object-store counters of ``table`` when the report is complete, so
    for a freshly opened table they are the cost of opening it and of this inspection.
    """
    snap = table.snapshot(snapshot_id)
    files = table.files(snapshot_id=snap.snapshot_id if snap else 0)
    live_rows = table.count(snapshot_id=snap.snapshot_id if snap else 0)
    retained = table.snapshot_ids()
    levels: dict[int, dict[str, int]] = {}
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for f in files:
        lv = levels.setdefault(f.level, {"files": 0, "bytes": 0, "rows": 0, "deletes": 0})
        part = "/".join(str(v) for v in f.partition)
        g = groups.setdefault((part, f.bucket), {"files": 0, "bytes": 0, "rows": 0, "deletes": 0})
        for d in (lv, g):
            d["files"] += 1
            d["bytes"] += f.bytes
            d["rows"] += f.rows
            d["deletes"] += f.deletes
    ts = table.table_schema
    stored = sum(f.rows for f in files)
    report: dict[str, Any] = {
        "uri": table.uri,
        "snapshot": None
        if snap is None
        else {
            "id": snap.snapshot_id,
            "time": iso_ms(snap.timestamp_ms),
            "kind": snap.kind,
            "writer_id": snap.writer_id,
            "commit_id": snap.commit_id,
        },
        "retained_snapshots": len(retained),
        "schema": format_schema(table.schema),
        "primary_key": list(table.primary_key),
        "partition_by": list(ts.partition_by),
        "buckets": ts.buckets,
        "files": len(files),
        "bytes": sum(f.bytes for f in files),
        "rows_stored": stored,
        "deletes_stored": sum(f.deletes for f in files),
        "rows_live": live_rows,
        "amplification": round(stored / live_rows, 3) if live_rows else None,
        "levels": [{"level": lv, **levels[lv]} for lv in sorted(levels)],
        "buckets_detail": [
            {"partition": part, "bucket": b, **groups[(part, b)]} for part, b in sorted(groups)
        ],
        "writers": {}
        if snap is None
        else {
            w: {"commit_id": r.commit_id, "snapshot_id": r.snapshot_id, "metadata": r.metadata}
            for w, r in sorted(table.manifests.all_writers(snap).items())
        },
    }
    report["requests"] = table.store_stats()
    return report


def format_inspect(report: dict[str, Any]) -> str:
    lines = [f"table        {report['uri']}"]
    snap = report["snapshot"]
    if snap is None:
        lines.append("snapshot     none (nothing committed yet)")
    else:
        lines.append(
            f"snapshot     {snap['id']} ({snap['kind']}, {snap['time']}), "
            f"{report['retained_snapshots']} retained"
        )
    lines.append(f"schema       {report['schema']}")
    part = ",".join(report["partition_by"]) or "-"
    lines.append(
        f"key          {','.join(report['primary_key'])}   partition by: {part}   "
        f"buckets: {report['buckets']}"
    )
    amp = report["amplification"]
    lines.append(
        f"data         {report['files']} file(s), {human_bytes(report['bytes'])}, "
        f"{report['rows_stored']} row(s) stored ({report['deletes_stored']} delete(s)), "
        f"{report['rows_live']} live row(s)"
        + (f", amplification {amp:.2f}x" if amp is not None else "")
    )
    for w, rec in report["writers"].items():
        meta = to_json_line(rec["metadata"]) if rec["metadata"] else "{}"
        lines.append(
            f"writer       {w}: commit {rec['commit_id']} in snapshot {rec['snapshot_id']} {meta}"
        )
    if report["levels"]:
        lines += ["", "per level"]
        rows = [
            [lv["level"], lv["files"], human_bytes(lv["bytes"]), lv["rows"], lv["deletes"]]
            for lv in report["levels"]
        ]
        lines.append(format_rows(["level", "files", "bytes", "rows", "deletes"], rows, [True] * 5))
        lines += ["", "per bucket"]
        detail = report["buckets_detail"]
        partitioned = bool(report["partition_by"])
        header = (["partition"] if partitioned else []) + [
            "bucket",
            "files",
            "bytes",
            "rows",
            "deletes",
        ]
        shown = detail[:64]
        rows = [
            ([d["partition"]] if partitioned else [])
            + [d["bucket"], d["files"], human_bytes(d["bytes"]), d["rows"], d["deletes"]]
            for d in shown
        ]
        lines.append(format_rows(header, rows, ([False] if partitioned else []) + [True] * 5))
        if len(detail) > len(shown):
            lines.append(f"... {len(detail) - len(shown)} more (see --json)")
    req = report["requests"]
    lines += [
        "",
        "requests made by this inspect run: "
        + ", ".join(f"{op} {n}" for op, n in req["requests"].items())
        + f"; {human_bytes(req['bytes'].get('GET', 0))} read",
    ]
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace, out: IO[str]) -> int:
    table = open_table(args)
    report = inspect_table(table, args.snapshot)
    if args.json:
        out.write(json.dumps(report, indent=2, default=json_default) + "\n")
    else:
        print(format_inspect(report), file=out)
    return 0


# --------------------------------------------------------------------------- arguments


def add_commands(add: AddCommand) -> None:
    """Declare ``snapshots``, ``tag``, ``untag``, ``tags`` and ``inspect``."""
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

    p = add(
        "inspect",
        "show files per level and bucket, live rows and the request cost of looking",
        "  lsm3 inspect ./orders\n  lsm3 inspect s3://b/orders --json\n",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--snapshot", type=int, metavar="ID", help="inspect this snapshot id")
    p.set_defaults(func=cmd_inspect)
