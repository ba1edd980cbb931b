"""Markdown rendering of aggregated results (bench/RESULTS.md); standard library only.

Ratios are contender time / reference time, so 2.0x means "twice as slow as the
reference" and 0.5x "twice as fast". A ratio is shown only when both sides ran ok.
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
from bench.workloads import WORKLOADS

RATIO_METRICS = (
    ("ingest_s", "ingest"),
    ("cdc_s", "CDC"),
    ("read_s", "read"),
    ("lookup_p50_ms", "get p50"),
)
CPU_RATIO_METRICS = (
    ("ingest_cpu_s", "ingest"),
    ("cdc_cpu_s", "CDC"),
    ("read_cpu_s", "read"),
    ("get_cpu_ms", "get"),
)


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


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mib(value: Any) -> str:
    return fmt(value / 2**20, 1) if isinstance(value, (int, float)) else "—"


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def ratio(result: dict[str, Any], reference: dict[str, Any] | None, key: str) -> str:
    if reference is None or result.get("status") != "ok" or reference.get("status") != "ok":
        return "—"
    mine, theirs = result.get(key), reference.get(key)
    if not isinstance(mine, (int, float)) or not isinstance(theirs, (int, float)) or theirs <= 0:
        return "—"
    return f"{mine / theirs:.2f}x"


def status_cell(result: dict[str, Any]) -> str:
    status = result.get("status", "?")
    if status == "ok":
        runs = result.get("runs_ok", 1), result.get("runs", 1)
        return "ok" if runs[0] == runs[1] else f"ok ({runs[0]}/{runs[1]} runs)"
    if status == "timeout":
        done = len(result.get("batch_s") or [])
        return f"**timeout** after {fmt(result.get('timeout_s'), 0)} s ({done} commits done)"
    return f"**{status}**"


def check_cell(result: dict[str, Any]) -> str:
    check = result.get("check")
    if check == "ok":
        return "ok"
    if check is None:
        return "—"
    return f"**{check}**"


def median_batch(result: dict[str, Any]) -> Any:
    batches = sorted(result.get("batch_s") or [])
    return batches[len(batches) // 2] if batches else None


def lookup_cells(result: dict[str, Any]) -> list[str]:
    """p50 and p99; the sample size is shown when the time budget cut the lookups short."""
    cells = [fmt(result.get("lookup_p50_ms")), fmt(result.get("lookup_p99_ms"))]
    done, planned = result.get("lookups"), result.get("lookups_planned")
    if isinstance(done, int) and isinstance(planned, int) and done < planned:
        cells[1] += f" (n={done})"
    return cells


def main_table(order: list[str], results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| contender | status | ingest s | initial s | CDC s | commit s (median) | read s "
        "| get p50 ms | get p99 ms | rows | correct | disk MiB | peak RSS MiB | CPU s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    for name in order:
        r = results[name]
        cells = [
            name,
            status_cell(r),
            *(fmt(r.get(k)) for k in ("ingest_s", "initial_s", "cdc_s")),
            fmt(median_batch(r), 3),
            fmt(r.get("read_s")),
            *lookup_cells(r),
            f"{r['rows']:,}" if isinstance(r.get("rows"), int) else "—",
            check_cell(r),
            mib(r.get("disk_bytes")),
            fmt(r.get("peak_rss_mb"), 0),
            fmt(r.get("cpu_s"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cpu_table(order: list[str], results: dict[str, dict[str, Any]]) -> list[str]:
    """Process CPU seconds per phase: steadier than wall time when the machine is busy."""
    keys = ("ingest_cpu_s", "initial_cpu_s", "cdc_cpu_s", "read_cpu_s", "get_cpu_ms")
    lines = [
        "| contender | ingest CPU s | initial CPU s | CDC CPU s | read CPU s | CPU ms per get |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name in order:
        lines.append(f"| {name} | " + " | ".join(fmt(results[name].get(k)) for k in keys) + " |")
    return lines


def with_derived(result: dict[str, Any]) -> dict[str, Any]:
    """Add `get_cpu_ms`: CPU time per lookup (the run records the total over all lookups)."""
    cpu, done = result.get("lookup_cpu_s"), result.get("lookups")
    if isinstance(cpu, (int, float)) and isinstance(done, int) and done > 0:
        return {**result, "get_cpu_ms": cpu / done * 1000}
    return result


def ratio_table(
    order: list[str], results: dict[str, dict[str, Any]], metrics: tuple[tuple[str, str], ...]
) -> list[str]:
    floor, lsm3 = results.get("floor"), results.get("lsm3")
    heads = [f"{label} vs {ref}" for ref in ("floor", "lsm3") for _, label in metrics]
    lines = [
        "| contender | " + " | ".join(heads) + " |",
        "|---|" + "--:|" * len(heads),
    ]
    for name in order:
        cells = [
            ratio(results[name], reference, key)
            for reference in (floor, lsm3)
            for key, _ in metrics
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, recursively, so extras stay readable."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def store_requests(extra: dict[str, Any]) -> str:
    """Pop lsm3's per-phase `store_<phase>` counters and render them as one readable line."""
    phases = []
    for key in [k for k in extra if k.startswith("store_")]:
        stats = extra.pop(key)
        if not isinstance(stats, dict):
            continue
        requests, sizes = stats.get("requests") or {}, stats.get("bytes") or {}
        verbs = [
            f"{verb} {count:,}" + (f" ({human_bytes(sizes[verb])})" if sizes.get(verb) else "")
            for verb, count in requests.items()
        ]
        phases.append(f"{key.removeprefix('store_')}: {', '.join(verbs) or 'none'}")
    return "; ".join(phases)


def notes_section(order: list[str], results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name in order:
        r = results[name]
        spec = CONTENDERS.get(name)
        parts = [spec.summary] if spec else []
        if r.get("reason"):
            parts.append(f"reason: {r['reason']}")
        parts.extend(r.get("notes") or [])
        extra = dict(r.get("extra") or {})
        requests = store_requests(extra)
        if requests:
            parts.append(f"object-store requests: {requests}")
        if extra:
            parts.append(f"extra: `{json.dumps(rounded(extra), sort_keys=True, default=str)}`")
        versions = ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items())
        if versions:
            parts.append(f"versions: {versions}")
        if r.get("measured_at"):
            load = r.get("load_before")
            load_note = f", 1-min load average {load:.1f} before" if load is not None else ""
            parts.append(f"measured {r['measured_at']} over {r.get('runs', '?')} run(s){load_note}")
        lines.append(f"- **{name}**: " + "; ".join(parts))
    return lines


def workload_section(
    workload: str, manifest: dict[str, Any], results: dict[str, dict[str, Any]]
) -> list[str]:
    spec = WORKLOADS[workload]
    results = {name: with_derived(r) for name, r in results.items()}
    order = [name for name in CONTENDERS if name in results]
    order += sorted(name for name in results if name not in CONTENDERS)
    upd, ins, dele = spec.counts()
    mismatches = [n for n in order if results[n].get("check") not in (None, "ok")]
    lines = [f"## {workload}", "", spec.description, ""]
    if mismatches:
        lines += [
            f"> **WARNING: result mismatch for {', '.join(mismatches)}** (see `correct`).",
            "",
        ]
    lines += [
        f"Initial load {spec.initial_rows:,} rows, then {spec.batches} commits of "
        f"{spec.batch_rows:,} records ({upd:,} updates, {ins:,} inserts, {dele:,} deletes); "
        f"{spec.lookups:,} point lookups (half absent). Expected final table: "
        f"{manifest['expected']['rows']:,} rows, checksum `{manifest['expected']['checksum']}`.",
        "",
        *main_table(order, results),
        "",
        "Process CPU time by phase (all threads; lookups: all timed lookups together):",
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
    ]
    floor = results.get("floor", {}).get("extra") or {}
    if floor:
        lines += [
            f"Floor extras: writing the merged table as one id-sorted file took "
            f"{fmt(floor.get('compact_s'))} s; reading that one file took "
            f"{fmt(floor.get('read_merged_s'))} s ({mib(floor.get('merged_bytes'))} MiB).",
            "",
        ]
    lines += ["Per contender:", "", *notes_section(order, results), ""]
    return lines


def render(
    sections: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]], command: str
) -> str:
    """The whole RESULTS.md: header, machine, one section per workload."""
    machine = machine_info()
    lines = [
        "# lsm3 benchmark results",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}`.",
        f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory']} RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}.",
        "Timings are medians over the runs of each contender; each contender ran alone, "
        "in its own process and virtualenv, on local disk. How to read the figures: "
        "bench/README.md.",
        "",
    ]
    loads = [
        r["load_before"]
        for _, results in sections.values()
        for r in results.values()
        if isinstance(r.get("load_before"), (int, float))
    ]
    if loads and max(loads) > (os.cpu_count() or 1):
        lines += [
            f"> The machine was shared while measuring: the 1-minute load average before "
            f"the runs was {min(loads):.1f} to {max(loads):.1f} on {machine['nproc']} cores, so "
            "wall-clock figures are inflated by an unknown factor (CPU s less so); compare "
            "ratios from the same session and re-run on an idle machine for absolute figures.",
            "",
        ]
    for workload, (manifest, results) in sections.items():
        lines += workload_section(workload, manifest, results)
    return "\n".join(lines).rstrip() + "\n"
