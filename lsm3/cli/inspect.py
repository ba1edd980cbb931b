"""``lsm3 inspect``: what a snapshot holds, answered from its manifests.

The report lists files, bytes, rows and deletes per level and per bucket, the sorted runs a
read merges (read amplification), the bytes written per byte ingested over the retained
history (write amplification) and the requests the inspection made. Live rows come from the
manifest entries: stored rows minus deletes is an upper bound, exact when no two files of a
bucket overlap and nothing is deleted; ``--exact`` merges the key columns to count them.
``--html`` and ``--png`` draw the tree (:mod:`lsm3.cli.treeview`).
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import IO, Any

import lsm3
from lsm3.cli.args import AddCommand, format_schema, open_table
from lsm3.cli.io import format_rows, human_bytes, iso_ms, json_default, to_json_line
from lsm3.cli.progress import Progress

_ZERO = {"files": 0, "bytes": 0, "rows": 0, "deletes": 0}


def _overlaps(files: list[lsm3.FileInfo]) -> bool:
    """Whether two files of one (partition, bucket) share a key range."""
    by_group: dict[tuple[Any, int], list[lsm3.FileInfo]] = {}
    for f in files:
        by_group.setdefault((f.partition, f.bucket), []).append(f)
    for group in by_group.values():
        group.sort(key=lambda f: f.min_key)
        for a, b in itertools.pairwise(group):
            if b.min_key <= a.max_key:
                return True
    return False


def sorted_runs(files: list[lsm3.FileInfo]) -> dict[tuple[Any, int], int]:
    """Sorted runs a read of each (partition, bucket) merges: every level-0 file's run (one
    commit's flush), plus one per deeper level (its files are key-disjoint)."""
    runs: dict[tuple[Any, int], set[Any]] = {}
    for f in files:
        runs.setdefault((f.partition, f.bucket), set()).add(
            ("L0", f.min_seq, f.max_seq) if f.level == 0 else ("L", f.level)
        )
    return {k: len(v) for k, v in runs.items()}


def history(table: lsm3.Table) -> list[dict[str, Any]]:
    """Per retained snapshot: id, kind, bytes added, and the live files and bytes after it."""
    return [
        {
            "id": s.snapshot_id,
            "kind": s.kind,
            "time": iso_ms(s.timestamp_ms),
            "added_bytes": int(s.summary.get("added_bytes", 0)),
            "total_files": int(s.summary.get("total_files", 0)),
            "total_bytes": int(s.summary.get("total_bytes", 0)),
        }
        for s in table.snapshots()
    ]


def inspect_table(
    table: lsm3.Table, snapshot_id: int | None = None, exact: bool = False
) -> dict[str, Any]:
    """The figures ``lsm3 inspect`` reports, as a JSON-ready dict (see the module docstring).

    ``requests`` are the object-store counters of ``table`` when the report is complete, so
    for a freshly opened table they are the cost of opening it and of this inspection.
    """
    snap = table.snapshot(snapshot_id)
    sid = snap.snapshot_id if snap else 0
    files = table.files(snapshot_id=sid)
    levels: dict[int, dict[str, int]] = {}
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for f in files:
        part = "/".join(str(v) for v in f.partition)
        for d in (
            levels.setdefault(f.level, dict(_ZERO)),
            groups.setdefault((part, f.bucket), dict(_ZERO)),
        ):
            d["files"] += 1
            d["bytes"] += f.bytes
            d["rows"] += f.rows
            d["deletes"] += f.deletes
    stored = sum(f.rows for f in files)
    deletes = sum(f.deletes for f in files)
    # A tombstone is never a live row; under a merge engine "deletes" also counts reset rows,
    # which are live, so only deduplicate tables may subtract them.
    at_most = stored - deletes if table.table_schema.engine.is_deduplicate else stored
    if exact:
        live: int | None = _count(table, sid)
    else:
        live = at_most if deletes == 0 and not _overlaps(files) else None
    runs = sorted_runs(files)
    past = history(table)
    ingested = sum(h["added_bytes"] for h in past if h["kind"] not in ("COMPACT",))
    written = sum(h["added_bytes"] for h in past)
    ts = table.table_schema
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
        "retained_snapshots": len(past),
        "schema": format_schema(table.schema),
        "primary_key": list(table.primary_key),
        "partition_by": list(ts.partition_by),
        "buckets": ts.buckets,
        "files": len(files),
        "bytes": sum(f.bytes for f in files),
        "rows_stored": stored,
        "deletes_stored": deletes,
        "rows_live_at_most": at_most,
        "rows_live": live,  # None: not known without --exact
        "amplification": round(stored / live, 3) if live else None,
        "read_amplification": {
            "max_sorted_runs": max(runs.values(), default=0),
            "mean_sorted_runs": round(sum(runs.values()) / len(runs), 2) if runs else 0,
        },
        "write_amplification": round(written / ingested, 3) if ingested else None,
        "levels": [{"level": lv, **levels[lv]} for lv in sorted(levels)],
        "buckets_detail": [
            {"partition": part, "bucket": b, **groups[(part, b)]} for part, b in sorted(groups)
        ],
        "history": past,
        "writers": {}
        if snap is None
        else {
            w: {"commit_id": r.commit_id, "snapshot_id": r.snapshot_id, "metadata": r.metadata}
            for w, r in sorted(table.manifests.all_writers(snap).items())
        },
    }
    report["requests"] = table.store_stats()
    return report


def _count(table: lsm3.Table, snapshot_id: int) -> int:
    progress = Progress("count")
    for batch in table.to_batches(columns=list(table.primary_key), snapshot_id=snapshot_id):
        progress.add(batch.num_rows)
    progress.clear()
    return progress.rows


def _live_text(report: dict[str, Any]) -> str:
    if report["rows_live"] is not None:
        amp = report["amplification"]
        return f"{report['rows_live']} live row(s)" + (
            f", amplification {amp:.2f}x" if amp is not None else ""
        )
    return (
        f"at most {report['rows_live_at_most']} live row(s) (approximately: overlapping runs may "
        "hold a key twice; --exact counts them)"
    )


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
    lines.append(
        f"data         {report['files']} file(s), {human_bytes(report['bytes'])}, "
        f"{report['rows_stored']} row(s) stored ({report['deletes_stored']} delete(s)), "
        + _live_text(report)
    )
    ra, wa = report["read_amplification"], report["write_amplification"]
    lines.append(
        f"amplification read: up to {ra['max_sorted_runs']} sorted run(s) per bucket (mean "
        f"{ra['mean_sorted_runs']}); write: "
        + (f"{wa:.2f}x over the retained history" if wa is not None else "-")
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
        header = ["partition"] if partitioned else []
        header += ["bucket", "files", "bytes", "rows", "deletes"]
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
    from lsm3.cli import treeview

    for path, suffix in ((args.html, ".html"), (args.png, ".png")):
        if path and not path.lower().endswith(suffix):
            from lsm3.cli.args import UsageError

            raise UsageError(f"{path!r}: the file name should end in {suffix}")
    table = open_table(args)
    report = inspect_table(table, args.snapshot, exact=args.exact)
    if args.html or args.png:
        files = table.files(snapshot_id=report["snapshot"]["id"] if report["snapshot"] else 0)
        page = treeview.render_html(report, files)
        if args.html:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(page)
            print(f"wrote {args.html}", file=out)
        if args.png:
            treeview.screenshot(page, args.png)
            print(f"wrote {args.png}", file=out)
        return 0
    if args.json:
        out.write(json.dumps(report, indent=2, default=json_default) + "\n")
    else:
        print(format_inspect(report), file=out)
    return 0


def add_commands(add: AddCommand) -> None:
    """Declare ``inspect``."""
    p = add(
        "inspect",
        "show files per level and bucket, rows, amplification and the request cost of looking",
        "  lsm3 inspect ./orders\n"
        "  lsm3 inspect s3://b/orders --json\n"
        "  lsm3 inspect ./orders --exact              # count live rows (reads the keys)\n"
        "  lsm3 inspect ./orders --html tree.html     # draw the LSM tree (--png: a picture)\n",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--snapshot", type=int, metavar="ID", help="inspect this snapshot id")
    p.add_argument(
        "--exact",
        action="store_true",
        help="count live rows exactly (merges the key columns; without it the count comes from "
        "the manifests and is an upper bound when runs overlap)",
    )
    p.add_argument("--html", metavar="FILE", help="draw the tree into a self-contained HTML file")
    p.add_argument(
        "--png",
        metavar="FILE",
        help="draw the tree into a PNG (needs Chromium: apt install chromium)",
    )
    p.set_defaults(func=cmd_inspect)
