"""The measuring loop every contender script shares (pyarrow + standard library only).

A contender implements `Contender` (how to load, apply a CDC batch, read, look up);
`run()` does all timing, reading of inputs, correctness checks and reporting, so
every library is measured the same way. Inputs are read from the workload's
Parquet files outside the timed sections. The result is printed as one JSON line
on stdout (the runner takes the last line that parses) and, after every phase, to
the --progress file so a timed-out run still reports how far it got.

Phases and what their times include:
  setup          create the empty table / store (not part of ingest)
  initial_s      load the initial rows as one commit
  batch_s[i]     apply CDC batch i as one commit (upserts + deletes)
  finish_s       anything needed before the data is durable and readable (close/flush)
  read_s         open a fresh handle and read the whole merged table into pyarrow
  lookups        one `lookup(key)` per key on a handle opened beforehand (untimed)
Each phase also records process CPU time (`*_cpu_s`, all threads): on a busy machine
wall time inflates with the load while CPU time mostly does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.checksum import table_checksum
from bench.workloads import load_manifest

DATA_COLUMNS = ["id", "name", "value", "ts", "payload"]
MIN_LOOKUPS = 20


class NotSupported(Exception):
    """The contender cannot do this (missing API, feature, backend); reported, not fatal."""


class Contender:
    """What a contender must provide; one instance lives for one benchmark run."""

    name = "contender"
    packages: tuple[str, ...] = ()  # distributions whose versions go in the report

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work_dir = Path(args.work_dir)
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Contender-specific command-line options."""

    def setup(self, schema: pa.Schema) -> None:
        raise NotImplementedError

    def load_initial(self, table: pa.Table) -> None:
        raise NotImplementedError

    def apply_batch(self, batch: pa.Table) -> None:
        """One commit: rows with op c/u are upserts, rows with op d delete their id."""
        raise NotImplementedError

    def finish_ingest(self) -> None:
        """Make everything durable and release writers."""

    def read_all(self) -> pa.Table:
        """Open a fresh handle and return the merged table (columns DATA_COLUMNS)."""
        raise NotImplementedError

    def after_read(self, table: pa.Table) -> None:
        """Extra, contender-specific measurements (store them in self.extra)."""

    def open_lookups(self) -> None:
        """Prepare the handle that `lookup` uses (untimed)."""

    def lookup(self, key: int) -> dict[str, Any] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release everything (untimed)."""

    def data_paths(self) -> list[Path]:
        """Where the contender's bytes live (summed for `disk_bytes`)."""
        return [self.work_dir]


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload-dir", required=True, help="generated workload directory")
    parser.add_argument("--work-dir", required=True, help="empty directory for the table")
    parser.add_argument("--storage", default="local", help="storage backend (only: local)")
    parser.add_argument("--progress", help="file rewritten with partial results after each phase")
    parser.add_argument("--variant", default="", help="contender variant label")
    parser.add_argument(
        "--lookup-budget-s", type=float, default=30.0, help="stop lookups after this (0: never)"
    )


def dir_bytes(paths: list[Path]) -> int:
    total = 0
    for root in paths:
        if root.is_file():
            total += root.stat().st_size
            continue
        for dirpath, _, files in os.walk(root):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    found = {"python": platform.python_version(), "pyarrow": pa.__version__}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def resource_usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


class Recorder:
    """Accumulates the result dict and mirrors it to the progress file."""

    def __init__(self, contender: Contender, args: argparse.Namespace) -> None:
        self.progress = Path(args.progress) if args.progress else None
        self.result: dict[str, Any] = {
            "contender": contender.name,
            "variant": args.variant,
            "status": "running",
            "storage": args.storage,
            "lookup_budget_s": args.lookup_budget_s,
            "versions": versions(contender.packages),
            "batch_s": [],
            "cdc_cpu_s": 0.0,
        }

    def set(self, **values: Any) -> None:
        self.result.update(values)
        self.flush()

    def flush(self) -> None:
        if self.progress is not None:
            tmp = self.progress.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.result, default=str))
            tmp.replace(self.progress)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Record wall time as `key` and process CPU time as `key` with `_s` -> `_cpu_s`."""
        started, cpu = time.perf_counter(), time.process_time()
        yield
        self.set(
            **{
                key: time.perf_counter() - started,
                key.replace("_s", "_cpu_s"): time.process_time() - cpu,
            }
        )


def read_input(directory: Path, name: str) -> pa.Table:
    return pq.read_table(directory / name)


def ingest(contender: Contender, rec: Recorder, directory: Path, manifest: dict[str, Any]) -> None:
    initial = read_input(directory, manifest["files"]["initial"])
    with rec.timed("setup_s"):
        contender.setup(initial.schema)
    with rec.timed("initial_s"):
        contender.load_initial(initial)
    del initial
    for name in manifest["files"]["batches"]:
        batch = read_input(directory, name)
        started, cpu = time.perf_counter(), time.process_time()
        contender.apply_batch(batch)
        rec.result["batch_s"].append(time.perf_counter() - started)
        rec.result["cdc_cpu_s"] += time.process_time() - cpu
        rec.flush()
    with rec.timed("finish_s"):
        contender.finish_ingest()
    cdc = sum(rec.result["batch_s"])
    rec.set(
        cdc_s=cdc,
        ingest_s=rec.result["initial_s"] + cdc + rec.result["finish_s"],
        ingest_cpu_s=sum(rec.result[k] for k in ("initial_cpu_s", "cdc_cpu_s", "finish_cpu_s")),
        commits=1 + len(manifest["files"]["batches"]),
        disk_bytes=dir_bytes(contender.data_paths()),
    )


def check_read(table: pa.Table, expected: dict[str, Any]) -> dict[str, Any]:
    got = table_checksum(table.select(DATA_COLUMNS))
    return {
        "rows": got["rows"],
        "checksum": got["checksum"],
        "checksum_detail": got["detail"],
        "correct": got["checksum"] == expected["checksum"],
    }


def read_phase(contender: Contender, rec: Recorder, manifest: dict[str, Any]) -> None:
    with rec.timed("read_s"):
        table = contender.read_all()
    rec.set(**check_read(table, manifest["expected"]))
    contender.after_read(table)
    rec.set(extra=contender.extra)


def lookup_ok(row: dict[str, Any] | None, present: bool, value: float | None) -> bool:
    if not present:
        return row is None
    return row is not None and row.get("value") == value


def lookup_phase(contender: Contender, rec: Recorder, directory: Path, manifest: dict) -> None:
    """Time one lookup per key, in the (shuffled) key file order, within a time budget.

    A contender whose lookups scan whole files would otherwise spend many minutes
    here; past the budget (and after at least MIN_LOOKUPS) the remaining keys are
    skipped and the percentiles come from the random sample already taken.
    """
    keys = read_input(directory, manifest["files"]["keys"]).to_pydict()
    budget = float(rec.result.get("lookup_budget_s") or 0) or math.inf
    contender.open_lookups()
    latencies: list[float] = []
    wrong = 0
    phase_started, cpu = time.perf_counter(), time.process_time()
    for key, present, value in zip(keys["key"], keys["present"], keys["value"], strict=True):
        if len(latencies) >= MIN_LOOKUPS and time.perf_counter() - phase_started > budget:
            break
        started = time.perf_counter()
        row = contender.lookup(key)
        latencies.append(time.perf_counter() - started)
        wrong += not lookup_ok(row, present, value)
    latencies.sort()
    rec.set(
        lookup_cpu_s=time.process_time() - cpu,
        lookups=len(latencies),
        lookups_planned=len(keys["key"]),
        lookup_wrong=wrong,
        lookup_p50_ms=percentile(latencies, 50) * 1000,
        lookup_p99_ms=percentile(latencies, 99) * 1000,
        lookup_mean_ms=sum(latencies) / max(1, len(latencies)) * 1000,
    )


def parse_args(cls: type[Contender], argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"benchmark contender {cls.name}")
    common_arguments(parser)
    cls.add_arguments(parser)
    return parser.parse_args(argv)


def run(cls: type[Contender], argv: list[str] | None = None) -> int:
    """Entry point of a contender script: measure everything, print one JSON line."""
    args = parse_args(cls, argv)
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    if args.progress:
        Path(args.progress).parent.mkdir(parents=True, exist_ok=True)
    contender = cls(args)
    rec = Recorder(contender, args)
    directory = Path(args.workload_dir)
    manifest = load_manifest(directory)
    rec.set(workload=manifest["workload"], expected=manifest["expected"]["checksum"])
    code = 0
    try:
        if args.storage != "local":
            raise NotSupported(f"storage backend {args.storage!r} is not wired up yet")
        ingest(contender, rec, directory, manifest)
        read_phase(contender, rec, manifest)
        lookup_phase(contender, rec, directory, manifest)
        rec.result["status"] = "ok"
    except NotSupported as exc:
        rec.result.update(status="not supported", reason=str(exc))
    except Exception as exc:  # reported to the runner, which marks the row as an error
        traceback.print_exc()
        rec.result.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
        code = 1
    finally:
        contender.close()
    rec.result.update(notes=contender.notes, extra=contender.extra, **resource_usage())
    rec.flush()
    sys.stdout.flush()
    print(json.dumps(rec.result, default=str), flush=True)
    return code
