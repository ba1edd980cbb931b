"""What a changelog producer costs: ingest of one workload under ``changelog_producer`` =
``lookup`` (and ``input``) against ``none``, and ``t.changelog`` of one CDC commit.

Loads a generated workload (``python -m bench.datagen --workload cdc-1m``) into fresh local
tables, one per producer, in one process, as ``bench/engines.py`` does: the initial load and
every CDC batch committed through ``apply_cdc``. Then times ``t.changelog(n-1, n)`` of the
last CDC commit (computed by comparing reads under ``none``, read from the stored files
otherwise). Producers are interleaved per repeat so the machine's drift hits them alike; the
report is the median per producer and its ratio to ``none``, in wall-clock seconds and in
the process's CPU seconds (all threads; steadier than wall-clock on a shared machine).

Usage: ``python -m bench.changelog --workload cdc-1m [--repeat 3] [--producers none,lookup]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import lsm3
from bench.engines import ingest, sitting

PRODUCERS = ("none", "lookup", "input")


def run_once(data: Path, files: list[str], root: Path, producer: str) -> dict[str, float]:
    uri = str(root / f"{producer}-{time.monotonic_ns()}")
    cpu = time.process_time()
    load, cdc = ingest(data, files, uri, {"changelog_producer": producer})
    cpu = time.process_time() - cpu
    reader = lsm3.open_table(uri)
    last = reader.refresh().snapshot_id  # type: ignore[union-attr]
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = reader.changelog(last - 1, last).num_rows
    changelog = time.perf_counter() - start
    changelog_cpu = time.process_time() - cpu_start
    shutil.rmtree(uri, ignore_errors=True)
    return {
        "load_s": load,
        "cdc_s": cdc,
        "ingest_s": load + cdc,
        "ingest_cpu_s": cpu,
        "changelog_s": changelog,
        "changelog_cpu_s": changelog_cpu,
        "changelog_rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.changelog", description=__doc__)
    parser.add_argument("--workload", default="cdc-1m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--producers", default=",".join(PRODUCERS))
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)
    producers = args.producers.split(",")
    results = sitting(args.workload, args.repeat, producers, args.work_dir, run_once)
    keys = ("load_s", "cdc_s", "ingest_s", "ingest_cpu_s", "changelog_s", "changelog_cpu_s")
    base = {k: statistics.median(r[k] for r in results[producers[0]]) for k in keys}
    print(f"{args.workload}, {args.repeat} runs per producer, medians (ratio to {producers[0]}):")
    report = {}
    for producer, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        each = ", ".join(f"{r['changelog_s']:.3f}" for r in runs)
        report[producer] = med
        print(
            f"  {producer:16s} ingest {med['ingest_s']:.2f} s "
            f"({med['ingest_s'] / base['ingest_s']:.2f}x; CPU {med['ingest_cpu_s']:.2f} s, "
            f"{med['ingest_cpu_s'] / base['ingest_cpu_s']:.2f}x)"
            f"  load {med['load_s']:.2f}  cdc {med['cdc_s']:.2f}"
            f"  changelog of the last commit {med['changelog_s']:.3f} s "
            f"(CPU {med['changelog_cpu_s']:.3f} s; {int(runs[0]['changelog_rows'])} rows; "
            f"each run: {each})"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
