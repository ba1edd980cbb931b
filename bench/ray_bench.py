"""Ray against the single process: a merged read and a full compaction of a CDC workload.

    .venv/bin/python -m bench.ray_bench --workload cdc-1m --buckets 4 --repeat 3

Builds the table once from the workload's files (initial load in one commit, then one
commit per CDC batch, as the lsm3 contender does, but with ``--buckets``), then, ``--repeat``
times, interleaved (single process, then Ray): ``Table.to_arrow()`` against
``read_lsm3(...)`` collected on the driver, and ``compact(policy="full")`` against
``compact(..., executor="ray")`` on fresh copies of the table. Ray starts on the local
machine (``num_cpus`` = cores) before any timing; its start-up is printed apart. Prints
each run, the medians and the Ray/single ratio of the medians; results are checked equal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import lsm3
from bench.datagen import generate
from bench.workloads import get_workload, load_manifest, manifest_is_current, workload_dir
from compactor import compact


def build(spec_name: str, root: Path, buckets: int) -> lsm3.Table:
    spec = get_workload(spec_name)
    directory = workload_dir(spec.name)
    if not manifest_is_current(spec):
        generate(spec, directory)
    manifest = load_manifest(directory)
    initial = pq.ParquetFile(directory / manifest["files"]["initial"])
    t = lsm3.create_table(str(root), initial.schema_arrow, "id", buckets=buckets)
    with t.writer() as w:
        for batch in initial.iter_batches(batch_size=131072):
            w.upsert(batch)
    for name in manifest["files"]["batches"]:
        with t.writer() as w:
            w.apply_cdc(pq.read_table(directory / name), "op")
    return t


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="cdc-1m")
    p.add_argument("--buckets", type=int, default=4)
    p.add_argument("--max-unit-rows", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    import ray

    from lsm3.ray import read_lsm3

    work = Path(tempfile.mkdtemp(prefix="lsm3-ray-bench-"))
    try:
        _, built = timed(lambda: build(args.workload, work / "t", args.buckets))
        print(f"built {args.workload} with {args.buckets} buckets in {built:.1f} s")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        _, started = timed(lambda: ray.init(include_dashboard=False, log_to_driver=False))
        print(f"ray.init: {started:.1f} s (not counted below)")
        t = lsm3.open_table(str(work / "t"))
        extra = {"max_unit_rows": args.max_unit_rows} if args.max_unit_rows else {}

        def ray_read() -> pa.Table:
            ds = read_lsm3(str(work / "t"), **extra)
            return pa.concat_tables(ray.get(ds.to_arrow_refs()))

        # Warm the workers (imports), as the single process has lsm3 and compactor imported.
        ray_read()
        warm = ray.remote(lambda: __import__("compactor.ray_executor") and None)
        ray.get([warm.remote() for _ in range(int(ray.cluster_resources().get("CPU", 1)))])
        reads: dict[str, list[float]] = {"single": [], "ray": []}
        comps: dict[str, list[float]] = {"single": [], "ray": []}
        for i in range(args.repeat):
            single, s_read = timed(t.to_arrow)
            distributed, r_read = timed(ray_read)
            assert single.num_rows == distributed.num_rows
            if i == 0:
                assert single.sort_by("id").equals(distributed.sort_by("id"))
            del single, distributed
            reads["single"].append(s_read)
            reads["ray"].append(r_read)
            print(f"read    {i}: single {s_read:.2f} s  ray {r_read:.2f} s", flush=True)
            local, remote = work / f"c-local-{i}", work / f"c-ray-{i}"
            shutil.copytree(work / "t", local)
            shutil.copytree(work / "t", remote)
            _, s_comp = timed(lambda: compact(str(local), policy="full"))  # noqa: B023
            _, r_comp = timed(lambda: compact(str(remote), policy="full", executor="ray"))  # noqa: B023
            if i == 0:
                a, b = lsm3.open_table(str(local)), lsm3.open_table(str(remote))
                assert a.to_arrow().equals(b.to_arrow())
            shutil.rmtree(local)
            shutil.rmtree(remote)
            comps["single"].append(s_comp)
            comps["ray"].append(r_comp)
            print(f"compact {i}: single {s_comp:.2f} s  ray {r_comp:.2f} s", flush=True)
        for name, runs in (("read", reads), ("compact", comps)):
            s_med, r_med = statistics.median(runs["single"]), statistics.median(runs["ray"])
            ratio = r_med / s_med
            print(f"{name:8} median single {s_med:.2f} s  ray {r_med:.2f} s  ratio {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
