"""What a merge engine costs: ingest and merged read of one workload under every engine.

Loads a generated workload (``python -m bench.datagen --workload cdc-1m``) into fresh local
tables, one per engine, in one process: the initial load and every CDC batch committed as
the bench's lsm3 contender does (``apply_cdc``), then ``to_arrow`` of the uncompacted table.
Engines are interleaved per repeat (dedupe, aggregation, partial_update, dedupe, ...) so that
the machine's drift hits them alike; the report is the median per engine and its ratio to
``deduplicate``.

Usage: ``python -m bench.engines --workload cdc-1m [--repeat 3] [--work-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import lsm3
from bench.datagen import generate
from bench.workloads import get_workload, load_manifest, manifest_is_current, workload_dir

ENGINES: dict[str, dict[str, Any]] = {
    "deduplicate": {},
    "aggregation": {
        "merge_engine": "aggregation",
        "fields.value.aggregate_function": "sum",
        "fields.ts.aggregate_function": "max",
        "fields.name.aggregate_function": "last_non_null_value",
        "fields.payload.aggregate_function": "last_non_null_value",
    },
    "partial_update": {"merge_engine": "partial_update"},
    "first_row": {"merge_engine": "first_row"},
}


def run_once(data: Path, files: list[str], root: Path, engine: str) -> dict[str, float]:
    uri = str(root / f"{engine}-{time.monotonic_ns()}")
    load, cdc = ingest(data, files, uri, ENGINES[engine])
    reader = lsm3.open_table(uri)
    start = time.perf_counter()
    rows = reader.to_arrow().num_rows
    read = time.perf_counter() - start
    shutil.rmtree(uri, ignore_errors=True)
    return {"load_s": load, "cdc_s": cdc, "ingest_s": load + cdc, "read_s": read, "rows": rows}


def ingest(data: Path, files: list[str], uri: str, options: dict[str, Any]) -> tuple[float, float]:
    """Create a table at ``uri``, load the initial file, commit each CDC batch through
    ``apply_cdc``: (load seconds, CDC seconds)."""
    initial = pq.read_table(data / files[0])
    batches = [pq.read_table(data / f) for f in files[1:]]
    t = lsm3.create_table(uri, initial.schema, "id", options=options or None)
    start = time.perf_counter()
    with t.writer() as w:
        w.upsert(initial)
    load = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches:
        with t.writer() as w:
            w.apply_cdc(batch, op_column="op")
    return load, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__)
    parser.add_argument("--workload", default="cdc-1m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)
    results = sitting(args.workload, args.repeat, args.engines.split(","), args.work_dir, run_once)
    base = {
        k: statistics.median(r[k] for r in results["deduplicate"]) for k in ("ingest_s", "read_s")
    }
    print(f"{args.workload}, {args.repeat} runs per engine, medians (ratio to deduplicate):")
    report = {}
    for engine, runs in results.items():
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in ("load_s", "cdc_s", "ingest_s", "read_s")
        }
        report[engine] = med
        ingest_ratio = med["ingest_s"] / base["ingest_s"]
        print(
            f"  {engine:15s} ingest {med['ingest_s']:.2f} s ({ingest_ratio:.2f}x)"
            f"  load {med['load_s']:.2f}  cdc {med['cdc_s']:.2f}"
            f"  merged read {med['read_s']:.3f} s ({med['read_s'] / base['read_s']:.2f}x)"
            f"  rows {int(runs[0]['rows'])}"
        )
    print(json.dumps(report))
    return 0


Run = Callable[[Path, list[str], Path, str], dict[str, float]]


def sitting(
    workload: str, repeat: int, names: list[str], work_dir: str | None, run: Run
) -> dict[str, list[dict[str, float]]]:
    """``run(data dir, files, work dir, name)`` for every name, names interleaved per
    repeat so the machine's drift hits them alike: name -> the runs' figures."""
    data = workload_dir(workload)
    spec = get_workload(workload)
    if not manifest_is_current(spec):  # a fresh checkout: generate the workload once
        print(f"[data] generating {workload} in {data} ...", flush=True)
        generate(spec, data)
    manifest = load_manifest(data)
    files = [manifest["files"]["initial"], *manifest["files"]["batches"]]
    root = Path(work_dir or tempfile.mkdtemp(prefix="lsm3-bench-"))
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for _ in range(repeat):
        for name in names:
            results[name].append(run(data, files, root, name))
    if not work_dir:
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
