"""Warm-process point lookups on a kept table, with the row-block cache at a chosen size.

The benchmark's lookup phase times each contender's gets in the key file's order within a
time budget; this probe answers the question behind its figure for lsm3: how much of a
present key's latency is the row group it decodes when the row-block cache cannot hold the
table. It warms the process with gets of random keys over the key range, then times gets of
present and of absent keys from the workload's key file.

Usage: ``python -m bench.getprobe TABLE_DIR KEYS_PARQUET [--cache-mib 128,2048]``
(a table: ``python -m bench --workload cdc-10m --contenders lsm3 --repeat 1 --keep-work``
leaves one in bench/out/work/lsm3/table; the keys are bench/out/data/<workload>/keys.parquet).
Each cache size runs in a fresh process, so no size inherits another's warm cache.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import pyarrow.parquet as pq

import lsm3


def timed_gets(table: lsm3.Table, keys: list[int]) -> dict[str, float]:
    latencies = []
    cpu = time.process_time()
    for key in keys:
        start = time.perf_counter()
        table.get(key)
        latencies.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p90_ms": latencies[int(len(latencies) * 0.9)] * 1000,
        "cpu_ms_per_get": cpu / max(1, len(keys)) * 1000,
    }


def probe(table_dir: str, keys_path: str, cache_mib: int, warmup: int, gets: int) -> dict:
    lsm3.set_cache_limits(row_block_bytes=cache_mib << 20)
    table = lsm3.open_table(table_dir)
    files = table.files()
    keys = pq.read_table(keys_path)
    present_flags = keys.column("present").to_pylist()
    all_keys = keys.column("key").to_pylist()
    present = [k for k, p in zip(all_keys, present_flags, strict=True) if p][:gets]
    absent = [k for k, p in zip(all_keys, present_flags, strict=True) if not p][:gets]
    high = max(int(f.max_key[0]) for f in files)
    rng = random.Random(1)
    for key in (rng.randrange(0, high + 1) for _ in range(warmup)):
        table.get(key)
    return {
        "cache_mib": cache_mib,
        "live_files": len(files),
        "rows": sum(f.rows for f in files),
        "present": timed_gets(table, present),
        "absent": timed_gets(table, absent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table_dir")
    parser.add_argument("keys")
    parser.add_argument("--cache-mib", default="128,2048", help="row-block cache sizes, MiB")
    parser.add_argument("--warmup", type=int, default=8000, help="random gets before timing")
    parser.add_argument("--gets", type=int, default=2000, help="present and absent keys each")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one cache size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(probe(args.table_dir, args.keys, args.one, args.warmup, args.gets)))
        return
    for mib in (int(m) for m in args.cache_mib.split(",")):
        child = [sys.executable, "-m", "bench.getprobe", args.table_dir, args.keys]
        child += ["--one", str(mib), "--warmup", str(args.warmup), "--gets", str(args.gets)]
        out = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
