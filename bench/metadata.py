"""Metadata at scale: commit latency and metadata bytes per commit as the table grows, cold
open and plan, and the compaction and expiry paths (issue 21).

Metadata-only: commits carry synthetic file entries (no Parquet is written), so a table of a
million live files takes minutes, not hours. The table lives in a local directory
(``LocalStore`` with fsync, the default). Run from the repository root:

    .venv/bin/python -m bench.metadata                     # 1k, 10k, 100k live files
    .venv/bin/python -m bench.metadata --sizes 1000,1000000 --commits 1000

Per size: fill the table to N live files (commits of ``manifest_target_entries`` files),
then ``--commits`` commits of ``--files-per-commit`` files by one writer, then the same
number by four concurrent writers (threads, each with its own Table and store counters), then
a cold open (all files; one partition), ``rewrite_manifests`` and the cold open again, then a
compaction commit and an expiry.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import lsm3
from compactor.maintenance import expire_snapshots
from compactor.manifests import rewrite_manifests
from lsm3.format.metadata import DataFile
from lsm3.io.local import LocalStore
from lsm3.read.scan import files_matching
from lsm3.write.commit import commit_files

SCHEMA = pa.schema([("p", pa.int64()), ("id", pa.int64()), ("v", pa.string())])
PARTITIONS = 16
#: files_matching builds one Arrow expression per file when the filter references the first
#: key column (here the partition column ``p``): above this it takes minutes.
PLAN_LIMIT = 200_000
BUCKETS = 8


def synthetic_file(i: int) -> DataFile:
    """One plausible file entry: ~450 bytes of JSON, like a real flush's."""
    part = i % PARTITIONS
    bucket = (i // PARTITIONS) % BUCKETS
    return DataFile(
        path=f"data/p={part}/bucket-{bucket}/{uuid.uuid4().hex}.parquet",
        level=0,
        partition=(part,),
        bucket=bucket,
        min_key=(part, i * 10),
        max_key=(part, i * 10 + 9),
        min_seq=0,
        max_seq=0,
        seq_offset=0,
        rows=16,
        deletes=0,
        size=4096 + i % 1000,
        checksum="crc32:0badf00d",
        footer_checksum="crc32:0badf00d",
        schema_id=0,
        created_ms=time.time_ns() // 1_000_000,
        run_id="",
    )


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def take(self, k: int) -> int:
        with self.lock:
            start = self.n
            self.n += k
            return start


def commit(table: lsm3.Table, files: list[DataFile], kind: str = "APPEND", **kw: Any) -> Any:
    return commit_files(
        table,
        added=files,
        removed=kw.pop("removed", []),
        seq_count=1 if kind == "APPEND" else 0,
        kind=kind,
        writer_id=kw.pop("writer_id", None),
        commit_id=uuid.uuid4().hex,
        metadata={},
        assign_offset=kind == "APPEND",
    )


def put_bytes(table: lsm3.Table) -> int:
    return table.store.stats.snapshot()["bytes"]["PUT"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_writer(
    root: str, counter: Counter, commits: int, per_commit: int, name: str, out: dict[str, Any]
) -> None:
    table = lsm3.open_table(LocalStore(root))
    latencies = []
    deltas = snaps = gave_up = 0
    before = put_bytes(table)
    for _ in range(commits):
        start = counter.take(per_commit)
        files = [synthetic_file(i) for i in range(start, start + per_commit)]
        t0 = time.perf_counter()
        while True:
            try:
                snap = commit(table, files, writer_id=name)
                break
            except lsm3.CommitConflict:  # starved by the others: counted, then tried again
                gave_up += 1
        latencies.append(time.perf_counter() - t0)
        deltas += (Path(root) / snap.delta_manifest).stat().st_size
        snaps += len(snap.encode())
    out[name] = {
        "latencies": latencies,
        "bytes": put_bytes(table) - before,
        "delta_bytes": deltas,
        "snapshot_bytes": snaps,
        "gave_up": gave_up,
    }


def commit_phase(root: str, counter: Counter, writers: int, commits: int, per: int) -> dict:
    out: dict[str, Any] = {}
    threads = [
        threading.Thread(
            target=run_writer, args=(root, counter, commits // writers, per, f"w{i}", out)
        )
        for i in range(writers)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [x for r in out.values() for x in r["latencies"]]
    total = sum(r["bytes"] for r in out.values())
    added = sum(r["delta_bytes"] + r["snapshot_bytes"] for r in out.values())
    n = len(lat)
    return {
        "writers": writers,
        "commits": n,
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p99_ms": round(1000 * percentile(lat, 0.99), 2),
        "max_ms": round(1000 * max(lat), 2),
        "commits_per_s": round(n / wall, 1),
        "bytes_per_commit": round(total / n),
        "delta_plus_snapshot_per_commit": round(added / n),
        "ratio": round(total / added, 2),
        "gave_up_after_retries": sum(r["gave_up"] for r in out.values()),
    }


def cold_open(root: str) -> dict[str, Any]:
    """A fresh process's view: open the table and list every live file, then (another fresh
    Table) plan a scan of one partition, which fetches only the manifests it needs."""
    t0 = time.perf_counter()
    table = lsm3.open_table(LocalStore(root))
    snap = table.current_snapshot()
    files = table.files_of(snap)
    full_s = time.perf_counter() - t0
    full_requests = table.store.stats.total_requests()
    schema = table.table_schema
    expr = pc.field("p") == 0
    t1 = time.perf_counter()
    pruned = files_matching(schema, files, expr) if len(files) <= PLAN_LIMIT else []
    plan_s = time.perf_counter() - t1
    t0 = time.perf_counter()
    fresh = lsm3.open_table(LocalStore(root))
    candidates = fresh.files_for(fresh.current_snapshot(), expr)
    one = files_matching(schema, candidates, expr)
    pruned_open_s = time.perf_counter() - t0
    manifest_gets = fresh.store.stats.snapshot()["requests"]["GET"]
    return {
        "live_files": len(files),
        "open_files_s": round(full_s, 3),
        "open_requests": full_requests,
        "manifests": len(table.manifests.all_manifests(snap)) if snap else 0,
        "full_plan_s": round(plan_s, 3) if len(files) <= PLAN_LIMIT else None,
        "full_plan_files": len(pruned),
        "pruned_open_plan_s": round(pruned_open_s, 3),
        "pruned_open_requests": fresh.store.stats.total_requests(),
        "pruned_open_gets": manifest_gets,
        "pruned_candidates": len(candidates),
        "pruned_files": len(one),
    }


def rewrite(root: str) -> dict[str, Any]:
    table = lsm3.open_table(LocalStore(root))
    table.files_of(table.current_snapshot())  # the live set is loaded in any case
    before = table.store.stats.total_requests()
    t0 = time.perf_counter()
    rewrite_manifests(table)
    return {
        "rewrite_s": round(time.perf_counter() - t0, 3),
        "rewrite_requests": table.store.stats.total_requests() - before,
    }


def maintenance_paths(root: str, counter: Counter) -> dict[str, Any]:
    table = lsm3.open_table(LocalStore(root))
    files = table.files_of(table.current_snapshot())
    removed = files[:10]
    output = synthetic_file(counter.take(1))
    before = table.store.stats.total_requests()
    t0 = time.perf_counter()
    commit(table, [output], kind="COMPACT", removed=removed)
    compact_s = time.perf_counter() - t0
    compact_requests = table.store.stats.total_requests() - before
    result = expire_snapshots(table, retain_last=10, older_than=0)
    return {
        "compact_commit_s": round(compact_s, 3),
        "compact_commit_requests": compact_requests,
        "expire_s": round(result.seconds, 3),
        "expire_requests": result.requests,
        "expired_snapshots": len(result.expired),
        "expired_manifests": len(result.manifests),
    }


def fill(root: str, counter: Counter, live: int) -> float:
    table = lsm3.open_table(LocalStore(root))
    chunk = table.table_schema.option("manifest_target_entries")
    t0 = time.perf_counter()
    while counter.n < live:
        k = min(chunk, live - counter.n)
        start = counter.take(k)
        commit(table, [synthetic_file(i) for i in range(start, start + k)])
    return time.perf_counter() - t0


def one_size(base: Path, live: int, commits: int, per: int) -> dict[str, Any]:
    root = str(base / f"t{live}")
    lsm3.create_table(root, SCHEMA, ["p", "id"], partition_by="p", buckets=BUCKETS, options={})
    counter = Counter()
    fill_s = fill(root, counter, live)
    result: dict[str, Any] = {"live_files": live, "fill_s": round(fill_s, 1)}
    result["one_writer"] = commit_phase(root, counter, 1, commits, per)
    result["four_writers"] = commit_phase(root, counter, 4, commits, per)
    result["cold"] = cold_open(root)
    result["rewrite"] = rewrite(root)
    result["cold_after_rewrite"] = cold_open(root)
    result["maintenance"] = maintenance_paths(root, counter)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--files-per-commit", type=int, default=8)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    base = Path(args.dir or tempfile.mkdtemp(prefix="lsm3-metadata-"))
    results = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            r = one_size(base, size, args.commits, args.files_per_commit)
            print(json.dumps(r), flush=True)
            results.append(r)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
