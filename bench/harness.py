"""The measuring loop every contender script shares (pyarrow + standard library only).

A contender implements `Contender` (how to load, apply a CDC batch, read, look up,
compact); `run()` does all timing, reading of inputs, correctness checks, request
counting and reporting, so every library is measured the same way. Inputs are read from
the workload's Parquet files outside the timed sections. The result is printed as one
JSON line on stdout (the runner takes the last line that parses) and, after every
phase, to the --progress file so a timed-out run still reports how far it got.

One benchmark run is three processes (`--phase`), so that each peak RSS belongs to one
activity and nothing cached by the writer flatters a reader:
  write  setup; initial (streamed from initial.parquet, one commit); one commit per CDC
         batch (stream workloads: the contender's compaction every `compact_every`
         commits, timed apart); finish (close/flush). Peak RSS = the writer's.
  scan   a streaming full scan of the merged table (batches checked and dropped).
         Peak RSS = the scan's; a contender without a streaming read materialises it.
  read   read the merged table into one pyarrow.Table (read_s); point lookups; compact
         fully (compact_s, if the contender can); read again (read_compacted_s) and look up
         again. Files and bytes at the end.
`--phase all` runs the three in one process (handy by hand).

Requests: with `--s3-stats` (the counting proxy, bench/s3proxy.py) every contender's
object-store requests are counted per phase at the proxy; on local disk only contenders
that count their own (lsm3's `store_stats`) report requests.
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

from bench.checksum import StreamingChecksum, table_checksum
from bench.s3env import S3Target, fetch_stats
from bench.workloads import load_manifest

DATA_COLUMNS = ["id", "name", "value", "ts", "payload"]
MIN_LOOKUPS = 20
INPUT_BATCH_ROWS = 131_072
PHASES = {"write": ("write",), "scan": ("scan",), "read": ("read",)}
PHASES["all"] = ("write", "scan", "read")


class NotSupported(Exception):
    """The contender cannot do this (missing API, feature, backend); reported, not fatal."""


class Contender:
    """What a contender must provide; one instance lives for one benchmark process."""

    name = "contender"
    packages: tuple[str, ...] = ()  # distributions whose versions go in the report
    s3_support: str | None = None  # None: works on S3; otherwise why it cannot here

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work_dir = Path(args.work_dir)
        self.s3 = S3Target.from_args(args)
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Contender-specific command-line options."""

    def location(self, name: str) -> str:
        """Where a named piece of the table lives: a local path or an s3:// URI."""
        return self.s3.uri(name) if self.s3 else str(self.work_dir / name)

    # -- write ---------------------------------------------------------------------------
    def setup(self, schema: pa.Schema) -> None:
        raise NotImplementedError

    def load_initial(self, table: pa.Table) -> None:
        raise NotImplementedError

    def load_initial_batches(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> None:
        """The initial load as one commit, from a stream of batches. The default collects
        the stream into one table (so the writer holds the whole input); contenders that
        can write batch by batch override this."""
        self.notes.append("initial load given as one table (no batch-wise writer used)")
        self.load_initial(pa.Table.from_batches(list(batches), schema))

    def apply_batch(self, batch: pa.Table) -> None:
        """One commit: rows with op c/u are upserts, rows with op d delete their id."""
        raise NotImplementedError

    def compact_between(self) -> None:
        """Stream workloads: the maintenance run every `compact_every` commits (default none)."""

    def probe(self) -> dict[str, Any] | None:
        """Stream workloads: untimed state figures after each commit (lsm3: sorted runs...)."""
        return None

    def finish_ingest(self) -> None:
        """Make everything durable and release writers."""

    # -- scan / read ---------------------------------------------------------------------
    def scan_batches(self) -> Iterator[pa.RecordBatch | pa.Table]:
        """Stream the merged table (fresh handle); raise NotSupported if it cannot."""
        raise NotSupported("no streaming read")

    def read_all(self) -> pa.Table:
        """Open a fresh handle and return the merged table (columns DATA_COLUMNS)."""
        raise NotImplementedError

    def after_read(self, table: pa.Table) -> None:
        """Extra, contender-specific measurements (store them in self.extra)."""

    def open_lookups(self) -> None:
        """Prepare the handle that `lookup` uses (untimed; loads and caches metadata)."""

    def lookup(self, key: int) -> dict[str, Any] | None:
        raise NotImplementedError

    def compact(self) -> None:
        """Compact the table fully (one sorted run per bucket / one file); NotSupported if it
        cannot. Timed as compact_s; contender figures go to self.extra."""
        raise NotSupported("no compaction")

    def after_compact(self) -> None:
        """Untimed work right after the timed compaction (lsm3: the compaction's floor)."""

    def close(self) -> None:
        """Release everything (untimed)."""

    # -- accounting ----------------------------------------------------------------------
    def store_counters(self) -> dict[str, dict[str, int]] | None:
        """The contender's own request counters ({"requests": {...}, "bytes": {...}})."""
        return None

    def data_paths(self) -> list[Path]:
        """Where the contender's bytes live locally (summed for files/bytes)."""
        return [self.work_dir]

    def s3_prefixes(self) -> list[str]:
        """bucket/key prefixes holding the contender's objects on S3."""
        assert self.s3 is not None
        return [self.s3.path("")]

    def live_files(self) -> int | None:
        """Data files the current table version references (None: unknown)."""
        return None


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload-dir", required=True, help="generated workload directory")
    parser.add_argument("--work-dir", required=True, help="directory for the table (local)")
    parser.add_argument("--storage", default="local", choices=("local", "s3"))
    S3Target.add_arguments(parser)
    parser.add_argument("--phase", default="all", choices=sorted(PHASES))
    parser.add_argument("--progress", help="file rewritten with partial results after each phase")
    parser.add_argument("--variant", default="", help="contender variant label")
    parser.add_argument(
        "--lookup-budget-s", type=float, default=30.0, help="stop lookups after this (0: never)"
    )
    parser.add_argument("--max-lookups", type=int, default=0, help="use at most N keys (0: all)")
    parser.add_argument(
        "--compact-every", type=int, help="stream workloads: override the workload's N"
    )


def inventory(contender: Contender) -> dict[str, int]:
    """Files and bytes the contender holds in storage (old versions and metadata included)."""
    files = total = 0
    if contender.s3 is not None:
        from pyarrow import fs

        s3fs = contender.s3.pyarrow_fs()
        for prefix in contender.s3_prefixes():
            try:
                infos = s3fs.get_file_info(fs.FileSelector(prefix.rstrip("/"), recursive=True))
            except (FileNotFoundError, OSError):
                continue
            for info in infos:
                if info.type == fs.FileType.File:
                    files += 1
                    total += info.size or 0
        return {"files": files, "bytes": total}
    for root in contender.data_paths():
        if root.is_file():
            files, total = files + 1, total + root.stat().st_size
            continue
        for dirpath, _, names in os.walk(root):
            files += len(names)
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in names)
    return {"files": files, "bytes": total}


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


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return math.nan


def resource_usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def counter_delta(now: Any, before: Any) -> Any:
    """`now - before` for (nested) dicts of numbers, dropping zeros."""
    if isinstance(now, dict):
        before = before if isinstance(before, dict) else {}
        delta = {k: counter_delta(v, before.get(k)) for k, v in now.items()}
        return {k: v for k, v in delta.items() if v not in (0, {}, None)}
    if isinstance(now, (int, float)) and isinstance(before, (int, float)):
        return now - before
    return now


def counter_sum(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(a or {})
    for k, v in (b or {}).items():
        if isinstance(v, dict):
            out[k] = counter_sum(out.get(k), v)
        elif isinstance(v, (int, float)):
            out[k] = out.get(k, 0) + v
    return out


class Recorder:
    """Accumulates the result dict and mirrors it to the progress file."""

    def __init__(self, contender: Contender, args: argparse.Namespace) -> None:
        self.progress = Path(args.progress) if args.progress else None
        self.contender = contender
        self.stats_url = args.s3_stats
        self.last_counters: Any = None
        self.result: dict[str, Any] = {
            "contender": contender.name,
            "variant": args.variant,
            "status": "running",
            "phase": args.phase,
            "storage": args.storage,
            "lookup_budget_s": args.lookup_budget_s,
            "versions": versions(contender.packages),
            "requests": {},
            "base_rss_mb": current_rss_mb(),
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

    # -- request counting ----------------------------------------------------------------
    def _counters(self) -> Any:
        if self.stats_url:
            self.result["requests_source"] = "counting proxy"
            return fetch_stats(self.stats_url)
        counters = self.contender.store_counters()
        if counters is not None:
            self.result["requests_source"] = f"{self.contender.name} own counters"
        return counters

    def mark(self, phase: str | None) -> None:
        """Attribute the requests since the last mark to `phase` (None: discard them)."""
        now = self._counters()
        if now is None:
            return
        if phase is not None and self.last_counters is not None:
            delta = counter_delta(now, self.last_counters)
            self.result["requests"][phase] = counter_sum(self.result["requests"].get(phase), delta)
        self.last_counters = now


def read_input(directory: Path, name: str) -> pa.Table:
    return pq.read_table(directory / name)


class InputBatches:
    """The initial load's batches, read from Parquet as the contender pulls them; the time
    spent reading them (wall and CPU) is measured so that it can be taken out of initial_s
    (inputs are never part of a contender's time)."""

    def __init__(self, path: Path) -> None:
        # pre_buffer off: with it, pyarrow keeps the file's coalesced row groups cached as it
        # iterates (741 MiB at the end of the 10M-row input), and that is the harness's
        # memory, not the contender's (it was counted in every writer's peak RSS)
        self.batches = pq.ParquetFile(path, pre_buffer=False).iter_batches(
            batch_size=INPUT_BATCH_ROWS
        )
        self.wall = self.cpu = 0.0

    def __iter__(self) -> InputBatches:
        return self

    def __next__(self) -> pa.RecordBatch:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return next(self.batches)
        finally:
            self.wall += time.perf_counter() - started
            self.cpu += time.process_time() - cpu


def write_process(contender: Contender, rec: Recorder, directory: Path, manifest: dict) -> None:
    spec = manifest["spec"]
    every = int(spec.get("compact_every") or 0) if spec.get("kind") == "stream" else 0
    if every and contender.args.compact_every is not None:
        every = contender.args.compact_every
    rec.set(compact_every=every)
    schema = pq.read_schema(directory / manifest["files"]["initial"])
    rec.mark(None)
    with rec.timed("setup_s"):
        contender.setup(schema)
    inputs = InputBatches(directory / manifest["files"]["initial"])
    with rec.timed("initial_s"):
        contender.load_initial_batches(inputs, schema)
    rec.set(
        initial_s=rec.result["initial_s"] - inputs.wall,
        initial_cpu_s=rec.result["initial_cpu_s"] - inputs.cpu,
        initial_input_s=inputs.wall,  # reading initial.parquet: taken out of initial_s
        initial_input_cpu_s=inputs.cpu,
    )
    batch_s: list[float] = []
    compact_s: list[float] = []
    probes: list[dict[str, Any]] = []
    cdc_cpu = compact_cpu = 0.0
    for i, name in enumerate(manifest["files"]["batches"], start=1):
        batch = read_input(directory, name)
        started, cpu = time.perf_counter(), time.process_time()
        contender.apply_batch(batch)
        batch_s.append(time.perf_counter() - started)
        cdc_cpu += time.process_time() - cpu
        if spec.get("kind") == "stream":  # the state right after the commit (the worst)
            rec.mark("ingest")
            probe = contender.probe()
            rec.mark(None)  # the probe's own requests are not the workload's
            if probe is not None:
                probes.append({"commit": i, **probe})
        if every and i % every == 0:
            rec.mark("ingest")
            started, cpu = time.perf_counter(), time.process_time()
            contender.compact_between()
            compact_s.append(time.perf_counter() - started)
            compact_cpu += time.process_time() - cpu
            rec.mark("stream_compact")
        rec.result.update(batch_s=batch_s, cdc_cpu_s=cdc_cpu)
        if i % 50 == 0 or i == len(manifest["files"]["batches"]):
            rec.flush()
    with rec.timed("finish_s"):
        contender.finish_ingest()
    rec.mark("ingest")
    cdc = sum(batch_s)
    rec.set(
        cdc_s=cdc,
        ingest_s=rec.result["initial_s"] + cdc + rec.result["finish_s"],
        ingest_cpu_s=rec.result["initial_cpu_s"] + cdc_cpu + rec.result["finish_cpu_s"],
        commits=1 + len(batch_s),
        stream_compact_s=compact_s,
        stream_compact_total_s=sum(compact_s),
        stream_compact_cpu_s=compact_cpu,
        probes=probes,
    )
    ingested = inventory(contender)
    rec.set(disk_bytes=ingested["bytes"], files_ingest=ingested["files"])


def check_read(table: pa.Table, expected: dict[str, Any]) -> dict[str, Any]:
    got = table_checksum(table.select(DATA_COLUMNS))
    return {
        "rows": got["rows"],
        "checksum": got["checksum"],
        "checksum_detail": got["detail"],
        "correct": got["checksum"] == expected["checksum"],
    }


def scan_process(contender: Contender, rec: Recorder, manifest: dict[str, Any]) -> None:
    """A streaming full scan: each batch is checksummed and dropped (constant memory)."""
    rec.mark(None)
    check = StreamingChecksum()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        for batch in contender.scan_batches():
            check.update(batch.select(DATA_COLUMNS))
        streamed = True
    except NotSupported as exc:
        check = StreamingChecksum()
        check.update(contender.read_all())
        streamed = False
        contender.notes.append(f"scan: read as one table ({exc})")
    rec.set(
        scan_s=time.perf_counter() - started,
        scan_cpu_s=time.process_time() - cpu,
        scan_streamed=streamed,
        scan_rows=check.detail["rows"],
        scan_correct=check.matches(manifest["expected"]["detail"]),
    )
    rec.mark("scan")


def lookup_phase(
    contender: Contender, rec: Recorder, directory: Path, manifest: dict, suffix: str = ""
) -> None:
    """Time one lookup per key, in the (shuffled) key file order, within a time budget.

    A contender whose lookups scan whole files would otherwise spend many minutes
    here; past the budget (and after at least MIN_LOOKUPS) the remaining keys are
    skipped and the percentiles come from the random sample already taken.
    """
    keys = read_input(directory, manifest["files"]["keys"]).to_pydict()
    budget = float(rec.result.get("lookup_budget_s") or 0) or math.inf
    limit = int(getattr(contender.args, "max_lookups", 0) or 0) or len(keys["key"])
    rec.mark(None)
    contender.open_lookups()
    rec.mark(f"lookups_open{suffix}")
    latencies: list[float] = []
    by_presence: dict[bool, list[float]] = {True: [], False: []}
    wrong = 0
    phase_started, cpu = time.perf_counter(), time.process_time()
    for key, present, value in zip(keys["key"], keys["present"], keys["value"], strict=True):
        if len(latencies) >= limit:
            break
        if len(latencies) >= MIN_LOOKUPS and time.perf_counter() - phase_started > budget:
            break
        started = time.perf_counter()
        row = contender.lookup(key)
        latencies.append(time.perf_counter() - started)
        by_presence[bool(present)].append(latencies[-1])
        wrong += not lookup_ok(row, present, value)
    cpu_s = time.process_time() - cpu
    rec.mark(f"lookups{suffix}")
    latencies.sort()
    for present, found in by_presence.items():  # keys present, and absent or deleted
        found.sort()
        if found:
            label = "present" if present else "absent"
            rec.set(**{f"lookup{suffix}_{label}_p50_ms": percentile(found, 50) * 1000})
    rec.set(
        **{
            f"lookup{suffix}_cpu_s": cpu_s,
            f"lookups{suffix}": len(latencies),
            "lookups_planned": len(keys["key"]),
            f"lookup{suffix}_wrong": wrong,
            f"lookup{suffix}_p50_ms": percentile(latencies, 50) * 1000,
            f"lookup{suffix}_p99_ms": percentile(latencies, 99) * 1000,
            f"lookup{suffix}_mean_ms": sum(latencies) / max(1, len(latencies)) * 1000,
        }
    )


def lookup_ok(row: dict[str, Any] | None, present: bool, value: float | None) -> bool:
    if not present:
        return row is None
    return row is not None and row.get("value") == value


def read_process(contender: Contender, rec: Recorder, directory: Path, manifest: dict) -> None:
    rec.mark(None)
    with rec.timed("read_s"):
        table = contender.read_all()
    rec.mark("read")
    rec.set(**check_read(table, manifest["expected"]))
    contender.after_read(table)
    del table
    rec.mark(None)
    rec.set(extra=contender.extra)
    lookup_phase(contender, rec, directory, manifest)
    try:
        with rec.timed("compact_s"):
            contender.compact()
    except NotSupported as exc:
        rec.result.pop("compact_s", None)
        rec.result.pop("compact_cpu_s", None)
        rec.set(compact_reason=str(exc))
        return
    finally:
        rec.mark("compact")
    contender.after_compact()
    rec.mark(None)
    with rec.timed("read_compacted_s"):
        table = contender.read_all()
    rec.mark("read_compacted")
    after = check_read(table, manifest["expected"])
    del table
    rec.set(correct_compacted=after["correct"], rows_compacted=after["rows"])
    budget = rec.result["lookup_budget_s"]
    rec.result["lookup_budget_s"] = budget / 2 if budget else budget
    lookup_phase(contender, rec, directory, manifest, suffix="_compacted")
    rec.result["lookup_budget_s"] = budget


def parse_args(cls: type[Contender], argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"benchmark contender {cls.name}")
    common_arguments(parser)
    cls.add_arguments(parser)
    return parser.parse_args(argv)


def run(cls: type[Contender], argv: list[str] | None = None) -> int:
    """Entry point of a contender script: measure the phases, print one JSON line."""
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
        if contender.s3 is not None and contender.s3_support is not None:
            raise NotSupported(f"S3: {contender.s3_support}")
        phases = PHASES[args.phase]
        if "write" in phases:
            write_process(contender, rec, directory, manifest)
        if "scan" in phases:
            scan_process(contender, rec, manifest)
        if "read" in phases:
            read_process(contender, rec, directory, manifest)
            end = inventory(contender)
            rec.set(
                files_end=end["files"], bytes_end=end["bytes"], live_files=contender.live_files()
            )
        rec.result["status"] = "ok"
    except NotSupported as exc:
        rec.result.update(status="not supported", reason=str(exc))
    except Exception as exc:  # reported to the runner, which marks the row as an error
        traceback.print_exc()
        rec.result.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
        code = 1
    finally:
        try:
            contender.close()
        except Exception:  # a failing close must not hide the figures
            traceback.print_exc()
    usage = resource_usage()
    rec.result.update(
        notes=contender.notes,
        extra=contender.extra,
        **{
            f"{args.phase}_peak_rss_mb": usage["peak_rss_mb"],
            f"{args.phase}_process_cpu_s": usage["cpu_s"],
        },
    )
    rec.flush()
    sys.stdout.flush()
    print(json.dumps(rec.result, default=str), flush=True)
    return code
