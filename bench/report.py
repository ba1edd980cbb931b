"""Markdown rendering of aggregated results (bench/RESULTS.md); standard library only.

Ratios are contender / reference, so 2.0x means "twice as slow (or big) as the reference"
and 0.5x "half". A ratio is shown only when both sides ran ok. `targets()` checks the
issue's targets against the stored figures and says met / missed and by how much.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.registry import CONTENDERS
from bench.s3env import PRICE_PER_1000, request_cost
from bench.workloads import WORKLOADS, get_workload

Results = dict[str, dict[str, Any]]
Sections = dict[str, tuple[dict[str, Any], Results]]

RATIO_METRICS = (
    ("ingest_s", "ingest"),
    ("cdc_s", "CDC"),
    ("scan_s", "scan"),
    ("read_s", "read"),
    ("read_compacted_s", "read after compaction"),
    ("lookup_p50_ms", "get p50"),
    ("compact_s", "compaction"),
)
CPU_RATIO_METRICS = (
    ("ingest_cpu_s", "ingest"),
    ("cdc_cpu_s", "CDC"),
    ("scan_cpu_s", "scan"),
    ("read_cpu_s", "read"),
    ("read_compacted_cpu_s", "read after compaction"),
    ("get_cpu_ms", "get"),
    ("compact_cpu_s", "compaction"),
)
WRITE_CLASSES = ("PUT", "POST", "COPY")


def machine_info() -> dict[str, str]:
    """nproc, memory and CPU model, as the reader of RESULTS.md needs to weigh the figures."""
    info = {
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(
            next(line for line in meminfo.splitlines() if line.startswith("MemTotal")).split()[1]
        )
        info["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["memory"] = "unknown"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(line for line in cpuinfo.splitlines() if line.startswith("model name"))
        info["cpu"] = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or "unknown"
    return info


# ------------------------------------------------------------------------------ formatting


def num(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mib(value: Any) -> str:
    return fmt(value / 2**20, 1) if num(value) else "—"


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def count(value: Any) -> str:
    """1234567 -> 1.23M, 45678 -> 45.7k."""
    if not num(value):
        return "—"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def ok(result: dict[str, Any] | None) -> bool:
    return result is not None and result.get("status") == "ok"


def ratio_value(
    result: dict[str, Any] | None,
    reference: dict[str, Any] | None,
    key: str,
) -> float | None:
    if not ok(result) or not ok(reference):
        return None
    assert result is not None and reference is not None
    mine, theirs = result.get(key), reference.get(key)
    if not num(mine) or not num(theirs) or theirs <= 0:
        return None
    return float(mine) / float(theirs)


def ratio(result: dict[str, Any], reference: dict[str, Any] | None, key: str) -> str:
    value = ratio_value(result, reference, key)
    return "—" if value is None else f"{value:.2f}x"


def status_cell(result: dict[str, Any]) -> str:
    status = result.get("status", "?")
    if status == "ok":
        runs = result.get("runs_ok", 1), result.get("runs", 1)
        return "ok" if runs[0] == runs[1] else f"ok ({runs[0]}/{runs[1]} runs)"
    if status == "timeout":
        done = len(result.get("batch_s") or [])
        phase = result.get("timeout_phase", "?")
        return (
            f"**timeout** after {fmt(result.get('timeout_s'), 0)} s in {phase} "
            f"({done} commits done)"
        )
    if status == "not supported":
        return f"not supported: {result.get('reason', '')}"
    return f"**{status}**"


def check_cell(result: dict[str, Any]) -> str:
    check = result.get("check")
    if check == "ok":
        return "ok"
    if check is None:
        return "—"
    return f"**{check}**"


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if num(v))
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def p99(values: list[float]) -> float | None:
    values = sorted(v for v in values if num(v))
    if not values:
        return None
    return values[max(0, math.ceil(0.99 * len(values)) - 1)]


def lookup_cells(result: dict[str, Any], suffix: str = "") -> list[str]:
    """p50 and p99; the sample size is shown when the time budget cut the lookups short."""
    cells = [fmt(result.get(f"lookup{suffix}_p50_ms")), fmt(result.get(f"lookup{suffix}_p99_ms"))]
    done, planned = result.get(f"lookups{suffix}"), result.get("lookups_planned")
    if isinstance(done, int) and isinstance(planned, int) and done < planned:
        cells[1] += f" (n={done})"
    return cells


# ------------------------------------------------------------------------------ derived


def records(manifest: dict[str, Any]) -> int:
    spec = manifest["spec"]
    return int(spec["initial_rows"] + spec["batches"] * spec["batch_rows"])


def phase_requests(result: dict[str, Any], *phases: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for phase in phases:
        for k, v in ((result.get("requests") or {}).get(phase) or {}).get("requests", {}).items():
            total[k] = total.get(k, 0) + v
    return total


def phase_bytes(result: dict[str, Any], *phases: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for phase in phases:
        for k, v in ((result.get("requests") or {}).get(phase) or {}).get("bytes", {}).items():
            total[k] = total.get(k, 0) + v
    return total


def written_bytes(result: dict[str, Any]) -> tuple[float | None, str]:
    """Bytes the contender wrote while ingesting (stream compactions included), and how we
    know: counted requests, or (local, uncounted) what it holds after ingest."""
    counted = phase_bytes(result, "ingest", "stream_compact")
    if result.get("requests_source") and counted:
        return float(sum(counted.get(k, 0) for k in WRITE_CLASSES)), "counted"
    if num(result.get("disk_bytes")):
        return float(result["disk_bytes"]), "on disk"
    return None, ""


def with_derived(result: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Figures computed from the stored ones (per-lookup CPU, rows/s, write amplification)."""
    r = dict(result)
    own = (r.get("extra") or {}).get("compaction") or {}
    if num(own.get("seconds")) and num(own.get("cpu_s")):
        # lsm3: the compactor's own time (runs before the floor comparison was split off
        # timed both together)
        r["compact_s"], r["compact_cpu_s"] = own["seconds"], own["cpu_s"]
    for suffix in ("", "_compacted"):
        cpu, done = r.get(f"lookup{suffix}_cpu_s"), r.get(f"lookups{suffix}")
        if num(cpu) and isinstance(done, int) and done > 0:
            r[f"get{suffix}_cpu_ms"] = cpu / done * 1000
    n = records(manifest)
    if num(r.get("ingest_s")) and r["ingest_s"] > 0:
        r["rows_per_s"] = n / r["ingest_s"]
    written, how = written_bytes(r)
    if written is not None and manifest.get("input_bytes"):
        r["write_amp"] = written / manifest["input_bytes"]
        r["write_amp_source"] = how
    ingest = phase_requests(r, "ingest", "stream_compact")
    if ingest and r.get("requests_source"):
        r["ingest_requests_per_m"] = {k: v * 1e6 / n for k, v in ingest.items()}
        r["ingest_cost_per_m"] = request_cost(r["ingest_requests_per_m"])
    gets = phase_requests(r, "lookups")
    if r.get("requests_source") and isinstance(r.get("lookups"), int) and r["lookups"]:
        r["gets_per_lookup"] = (gets.get("GET", 0) + gets.get("HEAD", 0)) / r["lookups"]
        r["requests_per_lookup"] = sum(gets.values()) / r["lookups"]
    batches = r.get("batch_s") or []
    r["batch_p50_s"], r["batch_p99_s"] = median(batches), p99(batches)
    return r


# ------------------------------------------------------------------------------ tables


def table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "|---" + "|--:" * (len(head) - 1) + "|"
    return ["| " + " | ".join(head) + " |", align, *("| " + " | ".join(r) + " |" for r in rows)]


def main_table(order: list[str], results: Results) -> list[str]:
    head = [
        "contender",
        "status",
        "ingest s",
        "rows/s",
        "initial s",
        "CDC s",
        "commit s p50",
        "commit s p99",
        "scan s",
        "read s",
        "compaction s",
        "read after compaction s",
        "get p50 ms",
        "get p99 ms",
        "get p50 after compaction ms",
        "rows",
        "correct",
    ]
    rows = []
    for name in order:
        r = results[name]
        rows.append(
            [
                name,
                status_cell(r),
                fmt(r.get("ingest_s")),
                count(r.get("rows_per_s")),
                fmt(r.get("initial_s")) + ("" if "initial_input_s" in r or not ok(r) else " †"),
                fmt(r.get("cdc_s")),
                fmt(r.get("batch_p50_s"), 3),
                fmt(r.get("batch_p99_s"), 3),
                fmt(r.get("scan_s")),
                fmt(r.get("read_s")),
                fmt(r.get("compact_s")) if "compact_s" in r else "n/a",
                fmt(r.get("read_compacted_s")),
                *lookup_cells(r),
                fmt(r.get("lookup_compacted_p50_ms")),
                f"{r['rows']:,}" if isinstance(r.get("rows"), int) else "—",
                check_cell(r),
            ]
        )
    return table(head, rows, "|---|---" + "|--:" * (len(head) - 4) + "|--:|---|")


def storage_table(order: list[str], results: Results) -> list[str]:
    head = [
        "contender",
        "files after ingest",
        "MiB after ingest",
        "write amp",
        "files at end",
        "live files at end",
        "MiB at end",
        "writer peak RSS MiB",
        "scan peak RSS MiB",
        "read process peak RSS MiB",
        "CPU s (all processes)",
    ]
    rows = []
    for name in order:
        r = results[name]
        amp = fmt(r.get("write_amp"))
        if r.get("write_amp_source") == "on disk":
            amp += " (disk)"
        rows.append(
            [
                name,
                fmt(r.get("files_ingest")),
                mib(r.get("disk_bytes")),
                amp,
                fmt(r.get("files_end")),
                fmt(r.get("live_files")),
                mib(r.get("bytes_end")),
                fmt(r.get("write_peak_rss_mb"), 0),
                fmt(r.get("scan_peak_rss_mb"), 0)
                + ("" if r.get("scan_streamed", True) else " (materialised)"),
                fmt(r.get("read_peak_rss_mb"), 0),
                fmt(r.get("cpu_s"), 1),
            ]
        )
    return table(head, rows)


def cpu_table(order: list[str], results: Results) -> list[str]:
    keys = (
        "ingest_cpu_s",
        "initial_cpu_s",
        "cdc_cpu_s",
        "scan_cpu_s",
        "read_cpu_s",
        "compact_cpu_s",
        "read_compacted_cpu_s",
        "get_cpu_ms",
        "get_compacted_cpu_ms",
    )
    head = [
        "contender",
        "ingest",
        "initial",
        "CDC",
        "scan",
        "read",
        "compaction",
        "read after compaction",
        "ms per get",
        "ms per get after compaction",
    ]
    return table(head, [[n, *(fmt(results[n].get(k)) for k in keys)] for n in order])


def ratio_table(
    order: list[str], results: Results, metrics: tuple[tuple[str, str], ...]
) -> list[str]:
    floor, lsm3 = results.get("floor"), results.get("lsm3")
    head = ["contender"] + [
        f"{label} vs {ref}" for ref in ("floor", "lsm3") for _, label in metrics
    ]
    rows = [
        [name] + [ratio(results[name], ref, key) for ref in (floor, lsm3) for key, _ in metrics]
        for name in order
    ]
    return table(head, rows)


def requests_table(order: list[str], results: Results) -> list[str]:
    rows = []
    for name in order:
        r = results[name]
        if not r.get("requests_source"):
            continue
        per_m = r.get("ingest_requests_per_m") or {}
        written = sum(phase_bytes(r, "ingest", "stream_compact").get(k, 0) for k in WRITE_CLASSES)
        scan = phase_requests(r, "scan")
        rows.append(
            [
                name,
                r["requests_source"],
                ", ".join(
                    f"{k} {count(v)}" for k, v in sorted(per_m.items(), key=lambda kv: -kv[1])
                )
                or "—",
                f"${r['ingest_cost_per_m']:.4f}" if num(r.get("ingest_cost_per_m")) else "—",
                mib(written),
                ", ".join(f"{k} {v}" for k, v in scan.items()) or "—",
                fmt(r.get("gets_per_lookup")),
                fmt(r.get("requests_per_lookup")),
                ", ".join(f"{k} {v}" for k, v in phase_requests(r, "lookups_open").items()) or "—",
            ]
        )
    if not rows:
        return []
    head = [
        "contender",
        "counted by",
        "ingest requests per 1M records",
        "request cost per 1M records",
        "MiB written (ingest)",
        "scan requests",
        "GET+HEAD per lookup",
        "requests per lookup",
        "lookup set-up requests",
    ]
    return [
        "Object-store requests (ingest includes the stream compactions; prices below):",
        "",
        *table(head, rows, "|---|---|---" + "|--:" * 6 + "|"),
        "",
    ]


# ------------------------------------------------------------------------------ stream


def compacted_bytes_per_row(results: Results, manifest: dict[str, Any]) -> float | None:
    """Bytes per live row of the fully compacted table (from any run's final compaction that
    wrote something: the same rows compact to the same size whatever the policy)."""
    rows = manifest["expected"]["rows"]
    for r in results.values():
        written = ((r.get("extra") or {}).get("compaction") or {}).get("bytes_written")
        if written and rows:
            return float(written) / rows
    return None


def space_amp(
    r: dict[str, Any], manifest: dict[str, Any], per_row: float | None
) -> tuple[float | None, float | None]:
    """(max, last) of live bytes / the same live rows fully compacted."""
    if not per_row:
        return None, None
    live = manifest.get("live_rows") or []
    amps = [
        p["bytes"] / (live[p["commit"]] * per_row)
        for p in r.get("probes") or []
        if p["commit"] < len(live) and live[p["commit"]]
    ]
    return (max(amps), amps[-1]) if amps else (None, None)


def lsm_write_amp(r: dict[str, Any]) -> float | None:
    """(bytes flushed by writers + bytes written by compactions) / bytes flushed."""
    flushed = sum(phase_bytes(r, "ingest").get(k, 0) for k in WRITE_CLASSES)
    compacted = sum(phase_bytes(r, "stream_compact").get(k, 0) for k in WRITE_CLASSES)
    return (flushed + compacted) / flushed if flushed else None


def stream_table(order: list[str], results: Results, manifest: dict[str, Any]) -> list[str]:
    rows = []
    for name in order:
        r = results[name]
        probes = r.get("probes") or []
        if not probes:
            continue
        smax, slast = space_amp(r, manifest, compacted_bytes_per_row(results, manifest))
        total = phase_requests(r, "ingest", "stream_compact")
        n = records(manifest)
        rows.append(
            [
                name,
                fmt(r.get("compact_every")),
                fmt(r.get("ingest_s")),
                fmt(r.get("stream_compact_total_s")),
                fmt(r.get("batch_p50_s"), 3),
                fmt(r.get("batch_p99_s"), 3),
                fmt(lsm_write_amp(r)),
                str(max(p["sorted_runs"] for p in probes)),
                fmt(sum(p["read_amp_mean"] for p in probes) / len(probes)),
                str(max(p["read_amp_max"] for p in probes)),
                str(max(p["read_amp_max_per_level"] for p in probes)),
                fmt(r.get("gets_per_lookup")),
                fmt(smax),
                fmt(slast),
                count(sum(total.values()) * 1e6 / n) if total else "—",
                f"${request_cost({k: v * 1e6 / n for k, v in total.items()}):.4f}"
                if total
                else "—",
            ]
        )
    if not rows:
        return []
    head = [
        "contender",
        "compactor every N commits",
        "ingest s (commits)",
        "compaction s (total)",
        "commit s p50",
        "commit s p99",
        "write amp (LSM)",
        "max sorted runs per bucket",
        "read amp mean (files per point read)",
        "read amp max",
        "max files per level per read",
        "GET+HEAD per lookup (end)",
        "space amp max",
        "space amp end",
        "requests per 1M records",
        "request cost per 1M records",
    ]
    return [
        "Steady-stream simulation (state probed after every commit, before that step's "
        "compaction):",
        "",
        *table(head, rows),
        "",
    ]


def compaction_table(order: list[str], results: Results) -> list[str]:
    rows = []
    for name in order:
        extra = results[name].get("extra") or {}
        mine, floor = extra.get("compaction"), extra.get("compaction_floor")
        if not mine or not floor:
            continue
        mb = mine["bytes_read"] / 2**20
        rows.append(
            [
                name,
                f"{mine['files_before']} → {mine['files_after']}",
                fmt(mb, 1),
                fmt(mine["bytes_written"] / 2**20, 1),
                fmt(mine["seconds"]),
                fmt(mine["cpu_s"]),
                fmt(floor["seconds"]),
                fmt(floor["cpu_s"]),
                fmt(mb / mine["seconds"], 1),
                fmt(mb / floor["seconds"], 1),
                fmt(floor["seconds"] / mine["seconds"]),
                fmt(floor["cpu_s"] / mine["cpu_s"]) if mine["cpu_s"] else "—",
            ]
        )
    if not rows:
        return []
    head = [
        "contender",
        "files",
        "MiB read",
        "MiB written",
        "compaction s",
        "CPU s",
        "floor s",
        "floor CPU s",
        "MiB/s",
        "floor MiB/s",
        "throughput vs floor (wall)",
        "throughput vs floor (CPU)",
    ]
    return [
        "Full compaction against its floor in the same run (plain pyarrow reading the same "
        "input files, merging and writing the same rows as one zstd file); target: "
        "throughput at least 0.6x the floor's:",
        "",
        *table(head, rows),
        "",
    ]


# ------------------------------------------------------------------------------ notes


def store_requests(requests: dict[str, Any]) -> str:
    """Per-phase request counters as one readable line."""
    phases = []
    for phase, stats in requests.items():
        counts, sizes = stats.get("requests") or {}, stats.get("bytes") or {}
        verbs = [
            f"{verb} {n:,}" + (f" ({human_bytes(sizes[verb])})" if sizes.get(verb) else "")
            for verb, n in counts.items()
        ]
        errors = stats.get("errors") or {}
        if errors:
            verbs.append("errors " + ", ".join(f"{k}: {v}" for k, v in errors.items()))
        phases.append(f"{phase}: {', '.join(verbs) or 'none'}")
    return "; ".join(phases)


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def notes_section(order: list[str], results: Results) -> list[str]:
    lines = []
    for name in order:
        r = results[name]
        spec = CONTENDERS.get(name)
        parts = [spec.summary] if spec else []
        if r.get("reason"):
            parts.append(f"reason: {r['reason']}")
        if r.get("compact_reason"):
            parts.append(f"compaction: {r['compact_reason']}")
        parts.extend(r.get("notes") or [])
        if r.get("requests"):
            parts.append(f"requests ({r.get('requests_source')}): {store_requests(r['requests'])}")
        extra = dict(r.get("extra") or {})
        if extra:
            parts.append(f"extra: `{json.dumps(rounded(extra), sort_keys=True, default=str)}`")
        versions = ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items())
        if versions:
            parts.append(f"versions: {versions}")
        if r.get("s3_server"):
            parts.append(f"S3 server: {r['s3_server']} behind the counting proxy")
        if r.get("measured_at"):
            load = r.get("load_before")
            load_note = f", 1-min load average {load:.1f} before" if num(load) else ""
            if num(r.get("load_after")):
                load_note += f", {r['load_after']:.1f} after"
            parts.append(f"measured {r['measured_at']} over {r.get('runs', '?')} run(s){load_note}")
        if r.get("command"):
            parts.append(f"command: `{r['command']}`")
        lines.append(f"- **{name}**: " + "; ".join(parts))
    return lines


# ------------------------------------------------------------------------------ sections


def section(key: str, manifest: dict[str, Any], raw: Results) -> list[str]:
    workload, _, storage = key.partition("@")
    spec = get_workload(workload)
    results = {name: with_derived(r, manifest) for name, r in raw.items()}
    order = [name for name in CONTENDERS if name in results]
    order += sorted(name for name in results if name not in CONTENDERS)
    upd, ins, dele = spec.counts()
    mismatches = [n for n in order if results[n].get("check") not in (None, "ok")]
    where = "S3 (SeaweedFS on 127.0.0.1 behind the counting proxy)" if storage else "local disk"
    lines = [f"## {key}", "", f"{spec.description} Storage: {where}.", ""]
    if mismatches:
        lines += [
            f"> **WARNING: result mismatch for {', '.join(mismatches)}** (see `correct`).",
            "",
        ]
    lines += [
        f"Initial load {spec.initial_rows:,} rows, then {spec.batches:,} commits of "
        f"{spec.batch_rows:,} records ({upd:,} updates, {ins:,} inserts, {dele:,} deletes); "
        f"{manifest['lookups']['keys']:,} lookup keys (half absent). Expected final table: "
        f"{manifest['expected']['rows']:,} rows, checksum `{manifest['expected']['checksum']}`. "
        f"Input: {mib(manifest.get('input_bytes'))} MiB of zstd Parquet.",
        "",
        *main_table(order, results),
        "",
        *(
            [
                "† initial s (and so ingest s) of this row includes reading the input Parquet "
                "batches (measured before that time was taken out; see the other rows' "
                "`initial_input_s`: about 0.2-0.4 s per million rows).",
                "",
            ]
            if any(ok(r) and "initial_input_s" not in r for r in results.values())
            else []
        ),
        "Storage and memory (write amp = bytes written while ingesting / input Parquet bytes; "
        "'(disk)': not counted, bytes on disk after ingest):",
        "",
        *storage_table(order, results),
        "",
        "Process CPU seconds by phase (all threads):",
        "",
        *cpu_table(order, results),
        "",
        "Ratios of wall times (contender / reference; below 1 is faster than the reference):",
        "",
        *ratio_table(order, results, RATIO_METRICS),
        "",
        "Ratios of CPU times (the steadier comparison on a busy machine):",
        "",
        *ratio_table(order, results, CPU_RATIO_METRICS),
        "",
        *requests_table(order, results),
        *stream_table(order, results, manifest),
        *compaction_table(order, results),
        "Per contender:",
        "",
        *notes_section(order, results),
        *missing_note(spec.kind, results),
        "",
    ]
    return lines


def missing_note(kind: str, results: Results) -> list[str]:
    missing = [c.name for c in CONTENDERS.values() if kind in c.kinds and c.name not in results]
    if not missing:
        return []
    return [
        f"- not measured here: {', '.join(missing)} (left out of this run for time, not "
        "because they cannot run it; `--contenders NAME` adds a row)"
    ]


# ------------------------------------------------------------------------------ targets


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("**met**" if met else "**missed**")


def targets(sections: Sections) -> list[str]:
    """The issue's targets, each with the figure, met/missed and by how much."""

    def get(key: str, name: str) -> dict[str, Any] | None:
        found = sections.get(key)
        if not found:
            return None
        r = found[1].get(name)
        return with_derived(r, found[0]) if r else None

    rows: list[list[str]] = []

    def add(target: str, figure: str, met: bool | None) -> None:
        rows.append([target, figure, verdict(met)])

    for w in ("cdc-1m", "cdc-10m"):
        lsm3, floor = get(w, "lsm3"), get(w, "floor")
        wall, cpu = ratio_value(lsm3, floor, "ingest_s"), ratio_value(lsm3, floor, "ingest_cpu_s")
        if wall is not None:
            add(
                f"{w}: lsm3 ingest within 1.3x of the floor",
                f"{wall:.2f}x wall, {cpu or math.nan:.2f}x CPU "
                f"({fmt((lsm3 or {}).get('ingest_s'))} s vs "
                f"{fmt((floor or {}).get('ingest_s'))} s)",
                cpu <= 1.3 if cpu is not None else wall <= 1.3,
            )
        if ok(lsm3) and w in sections:
            peers = {
                n: with_derived(r, sections[w][0])
                for n, r in sections[w][1].items()
                if n not in ("floor",) and not n.startswith("lsm3") and ok(r)
            }
            if peers:
                best = min(peers, key=lambda n: peers[n]["ingest_s"])
                best_cpu = min(peers, key=lambda n: peers[n].get("ingest_cpu_s") or math.inf)
                assert lsm3 is not None
                add(
                    f"{w}: lsm3 ingest fastest of all peers",
                    f"lsm3 {fmt(lsm3['ingest_s'])} s; fastest peer {best} "
                    f"{fmt(peers[best]['ingest_s'])} s "
                    f"(CPU: lsm3 {fmt(lsm3.get('ingest_cpu_s'))} s, "
                    f"{best_cpu} {fmt(peers[best_cpu].get('ingest_cpu_s'))} s); peers run: "
                    f"{', '.join(sorted(peers))}",
                    lsm3["ingest_s"] < peers[best]["ingest_s"],
                )
    small, big = get("cdc-1m", "lsm3"), get("cdc-10m", "lsm3")
    if ok(small) and ok(big):
        assert small is not None and big is not None
        r = big["batch_p50_s"] / small["batch_p50_s"]
        add(
            "lsm3 seconds per CDC batch at 10M within 1.3x of 1M",
            f"median commit {fmt(big['batch_p50_s'], 3)} s vs {fmt(small['batch_p50_s'], 3)} s: "
            f"{r:.2f}x (CPU per batch {fmt(big['cdc_cpu_s'] / 10, 3)} vs "
            f"{fmt(small['cdc_cpu_s'] / 10, 3)} s: {big['cdc_cpu_s'] / small['cdc_cpu_s']:.2f}x)",
            r <= 1.3,
        )
    for w in ("cdc-1m", "cdc-10m"):
        if w not in sections:
            continue
        lsm3, floor = get(w, "lsm3"), get(w, "floor")
        if not ok(lsm3):
            continue
        assert lsm3 is not None
        peers = {
            n: with_derived(r, sections[w][0])
            for n, r in sections[w][1].items()
            if n != "floor" and not n.startswith("lsm3") and ok(r)
        }
        if peers:
            best = min(peers, key=lambda n: peers[n]["read_s"])
            add(
                f"{w}: lsm3 merged scan (uncompacted) faster than every peer's read",
                f"lsm3 read {fmt(lsm3['read_s'])} s (CPU {fmt(lsm3.get('read_cpu_s'))}); fastest "
                f"peer {best} {fmt(peers[best]['read_s'])} s (CPU "
                f"{fmt(peers[best].get('read_cpu_s'))})",
                lsm3["read_s"] < peers[best]["read_s"],
            )
        if ok(floor) and floor is not None and num(floor.get("read_compacted_s")):
            wall = lsm3["read_s"] / floor["read_compacted_s"]
            cpu = (
                lsm3["read_cpu_s"] / floor["read_compacted_cpu_s"]
                if floor.get("read_compacted_cpu_s")
                else None
            )
            add(
                f"{w}: lsm3 uncompacted read within 1.3x of the floor's read after full compaction",
                f"{fmt(lsm3['read_s'])} s vs {fmt(floor['read_compacted_s'])} s: {wall:.2f}x wall"
                + (f", {cpu:.2f}x CPU" if cpu else ""),
                (cpu if cpu is not None else wall) <= 1.3,
            )
        if ok(floor) and floor is not None and num(lsm3.get("read_compacted_s")):
            wall = ratio_value(lsm3, floor, "read_compacted_s")
            cpu = ratio_value(lsm3, floor, "read_compacted_cpu_s")
            if wall is not None:
                add(
                    f"{w}: lsm3 read after full compaction within 1.1x of the floor's",
                    f"{fmt(lsm3['read_compacted_s'])} s vs {fmt(floor['read_compacted_s'])} s: "
                    f"{wall:.2f}x wall" + (f", {cpu:.2f}x CPU" if cpu else ""),
                    (cpu if cpu is not None else wall) <= 1.1,
                )
        present = lsm3.get("lookup_compacted_present_p50_ms")
        absent = lsm3.get("lookup_compacted_absent_p50_ms")
        if num(present) and num(absent):
            add(
                f"{w}: lsm3 get p50 after full compaction under 0.1 ms (present keys) "
                "and 0.02 ms (absent keys)",
                f"present p50 {fmt(present, 3)} ms, absent p50 {fmt(absent, 3)} ms "
                f"(all keys before compaction: p50 {fmt(lsm3.get('lookup_p50_ms'), 3)} ms)",
                present < 0.1 and absent < 0.02,
            )
        if num(lsm3.get("lookup_p50_ms")):
            add(
                f"{w}: lsm3 point lookup p50 under 2 ms locally",
                f"p50 {fmt(lsm3['lookup_p50_ms'])} ms, p99 {fmt(lsm3.get('lookup_p99_ms'))} ms "
                f"(after full compaction: p50 {fmt(lsm3.get('lookup_compacted_p50_ms'))} ms)",
                lsm3["lookup_p50_ms"] < 2,
            )
    for w in ("cdc-1m@s3", "cdc-10m@s3"):
        lsm3 = get(w, "lsm3")
        if ok(lsm3) and lsm3 is not None and num(lsm3.get("gets_per_lookup")):
            add(
                f"{w}: lsm3 at most 2 GET requests per lookup once metadata is cached",
                f"{lsm3['gets_per_lookup']:.2f} GET+HEAD per lookup over {lsm3['lookups']} lookups "
                f"(metadata loaded beforehand: "
                f"{sum(phase_requests(lsm3, 'lookups_open').values())} requests)",
                lsm3["gets_per_lookup"] <= 2,
            )
    if ok(small) and ok(big):
        assert small is not None and big is not None
        for key, label in (("write_peak_rss_mb", "writer"), ("scan_peak_rss_mb", "scan")):
            if num(small.get(key)) and num(big.get(key)):
                r = big[key] / small[key]
                add(
                    f"lsm3 {label} peak RSS flat (within 1.5x) from 1M to 10M rows",
                    f"{fmt(small[key], 0)} MiB → {fmt(big[key], 0)} MiB: {r:.2f}x",
                    r <= 1.5,
                )
    for w in ("cdc-1m", "cdc-10m"):
        lsm3 = get(w, "lsm3")
        extra = (lsm3 or {}).get("extra") or {}
        if extra.get("compaction") and extra.get("compaction_floor"):
            mine, floor = extra["compaction"], extra["compaction_floor"]
            wall, cpu = floor["seconds"] / mine["seconds"], floor["cpu_s"] / mine["cpu_s"]
            add(
                f"{w}: compaction throughput at least 0.6x the floor's",
                f"{wall:.2f}x wall ({fmt(mine['seconds'])} s vs floor {fmt(floor['seconds'])} s), "
                f"{cpu:.2f}x CPU",
                (cpu if cpu else wall) >= 0.6,
            )
    stream = sections.get("stream")
    if stream:
        _, results = stream
        for name, policy in (
            ("lsm3", "universal"),
            ("lsm3-leveled", "leveled"),
            ("lsm3-full", "full"),
        ):
            r = results.get(name)
            if not ok(r) or not (r or {}).get("probes"):
                continue
            assert r is not None
            amp, runs = lsm_write_amp(r), max(p["sorted_runs"] for p in r["probes"])
            per_level = max(p["read_amp_max_per_level"] for p in r["probes"])
            if policy == "universal":
                add(
                    "stream: universal write amplification at most 5, at most 8 sorted runs",
                    f"write amp {fmt(amp)}, max sorted runs {runs} "
                    f"(compactor every {r.get('compact_every')} commits)",
                    amp is not None and amp <= 5 and runs <= 8,
                )
            if policy == "leveled":
                add(
                    "stream: leveled read amplification at most one file per level",
                    f"max files per level a point read may touch: {per_level} "
                    f"(write amp {fmt(amp)}, max sorted runs {runs})",
                    per_level <= 1,
                )
    if not rows:
        return []
    return [
        "## Targets",
        "",
        "Met or missed, with the figure (CPU-time ratios decide where the machine was "
        "loaded; the figures are the medians in the sections below):",
        "",
        *table(["target", "figure", "verdict"], rows, "|---|---|---|"),
        "",
    ]


# ------------------------------------------------------------------------------ page


def versions_line(sections: Sections) -> str:
    found: dict[str, str] = {}
    for _, results in sections.values():
        for r in results.values():
            for k, v in (r.get("versions") or {}).items():
                if k != "python":
                    found.setdefault(f"{k} {v}", "")
    return ", ".join(sorted(found))


def render(sections: Sections, charts: list[str] | None = None) -> str:
    """The whole RESULTS.md: header, machine, targets, charts, one section per workload."""
    machine = machine_info()
    commands = sorted(
        {
            r.get("command", "")
            for _, rs in sections.values()
            for r in rs.values()
            if r.get("command")
        }
    )
    lines = [
        "# lsm3 benchmark results",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the stored "
        "results of each contender (each row says when it was measured and by which command).",
        f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory']} RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}.",
        f"Versions: {versions_line(sections)}.",
        "Timings are medians over the runs of each contender; each contender ran alone, one "
        "process per phase (write, scan, read), each peer in its own virtualenv. How to read "
        "the figures: bench/README.md. Request prices (S3 Standard, us-east-1, USD per 1,000): "
        + ", ".join(f"{k} {v}" for k, v in PRICE_PER_1000.items() if k != "OTHER")
        + ".",
        "",
    ]
    if commands:
        lines += ["Commands: " + "; ".join(f"`{c}`" for c in commands), ""]
    warm = sorted(
        {
            r.get("warm_memory_gib") or 0.0
            for _, rs in sections.values()
            for r in rs.values()
            if r.get("measured_at")
        }
    )
    if warm:
        lines += [
            "Memory warm-up before every phase: "
            + ", ".join(f"{w:g} GiB" if w else "none" for w in warm)
            + " (a throwaway process touches that much memory first: on a virtual machine "
            "whose idle memory goes back to the host, a fresh process would otherwise pay for "
            "faulting it in again; see `python -m bench.cold_memory`). Rows measured before "
            "the warm-up existed count as none.",
            "",
        ]
    loads = [
        r["load_before"]
        for _, results in sections.values()
        for r in results.values()
        if num(r.get("load_before"))
    ]
    if loads and max(loads) > (os.cpu_count() or 1):
        lines += [
            f"> The machine was shared while measuring: the 1-minute load average before "
            f"the runs was {min(loads):.1f} to {max(loads):.1f} on {machine['nproc']} cores, so "
            "wall-clock figures are inflated by an unknown factor (CPU s less so); compare "
            "CPU ratios, and re-run on an idle machine for absolute figures.",
            "",
        ]
    lines += targets(sections)
    if charts:
        lines += ["## Charts", ""] + [f"![{Path(c).stem}]({c})" for c in charts] + [""]
    for key, (manifest, results) in sections.items():
        lines += section(key, manifest, results)
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["WORKLOADS", "render"]
