"""Where lsm3's time goes: cProfile of its ingest, read, scan, lookups and compaction.

Runs in the main venv on a generated workload (`python -m bench.datagen` first), with the
same public calls as bench/contenders/lsm3_bench.py, and prints for each activity its
wall and CPU time and the functions with the most own time (tottime) and the most
cumulative time, so a missed target can be traced to the code that costs it.

Usage: python -m bench.profile [--workload cdc-1m] [--what initial,cdc,read,scan,lookups,compact]
                               [--top 12] [--lookups 2000] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.workloads import get_workload, load_manifest, workload_dir

ACTIVITIES = ("initial", "cdc", "read", "scan", "lookups", "compact")


def summarise(profile: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs()
    out.write("-- by own time (tottime) --\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("-- by cumulative time --\n")
    stats.sort_stats("cumulative").print_stats(top)
    lines = [
        line
        for line in out.getvalue().splitlines()
        if line.strip() and not line.startswith(("   Ordered by", "   List reduced"))
    ]
    return "\n".join(lines)


def profiled(name: str, fn: Callable[[], Any], top: int) -> Any:
    profile = cProfile.Profile()
    started, cpu = time.perf_counter(), time.process_time()
    profile.enable()
    result = fn()
    profile.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"\n===== {name}: {wall:.2f} s wall, {cpu:.2f} s CPU (with profiling overhead) =====")
    print(summarise(profile, top))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="cdc-1m")
    parser.add_argument("--what", default=",".join(ACTIVITIES))
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--work-dir", help="table location (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    import compactor
    import lsm3

    spec = get_workload(args.workload)
    data = workload_dir(spec.name)
    manifest = load_manifest(data)
    what = set(args.what.split(","))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lsm3-profile-"))
    uri = str(work / "table")
    shutil.rmtree(uri, ignore_errors=True)
    batches = [pq.read_table(data / name) for name in manifest["files"]["batches"]]

    schema = pq.read_schema(data / manifest["files"]["initial"])
    table = lsm3.create_table(uri, schema, primary_key=["id"])

    def initial() -> None:
        with table.writer() as writer:
            for batch in pq.ParquetFile(
                data / manifest["files"]["initial"], pre_buffer=False
            ).iter_batches(131_072):
                writer.upsert(batch)

    def cdc() -> None:
        for batch in batches:
            with table.writer() as writer:
                writer.apply_cdc(batch, op_column="op")
                writer.commit()

    for name, fn in (("initial", initial), ("cdc", cdc)):
        if name in what or "ingest" in what:
            profiled(f"{name} load" if name == "initial" else "CDC commits", fn, args.top)
        else:
            fn()
    if "read" in what:
        profiled("read (to_arrow)", lambda: lsm3.open_table(uri).to_arrow(), args.top)
    if "scan" in what:
        profiled(
            "scan (to_batches)",
            lambda: sum(b.num_rows for b in lsm3.open_table(uri).to_batches()),
            args.top,
        )
    if "lookups" in what:
        keys = pq.read_table(data / "keys.parquet").column("key").to_pylist()[: args.lookups]
        table = lsm3.open_table(uri)
        table.files()

        def lookups() -> None:
            for key in keys:
                table.get(key)

        profiled(f"{len(keys)} lookups (get)", lookups, args.top)
    if "compact" in what:
        profiled(
            "full compaction",
            lambda: compactor.compact(lsm3.open_table(uri), policy="full"),
            args.top,
        )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
