"""Benchmark runner: generate the workload once, run each contender alone, report.

Usage (from the repository root, with the main venv):
  python -m bench [--workload cdc-1m] [--contenders floor,lsm3,...] [--skip slow]
                  [--repeat 3] [--timeout SECONDS] [--keep-work] [--no-report] [--list]

Each contender runs `--repeat` times as `python -m bench.contenders.<x>_bench` under
its own venv, one process at a time. Timings are the medians of the runs; the final
table of every run is checked against the generator's expected row count and
checksum. The aggregated result of each contender is stored in
bench/out/results/<workload>/<contender>.json, and RESULTS.md is rendered from the
latest stored result of every contender, so contenders can be re-run one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import envs, report
from bench.registry import CONTENDERS, ContenderSpec
from bench.workloads import (
    BENCH_DIR,
    OUT_DIR,
    REPO_DIR,
    WORKLOADS,
    WorkloadSpec,
    get_workload,
    load_manifest,
    manifest_is_current,
    workload_dir,
)

RESULTS_MD = BENCH_DIR / "RESULTS.md"
CHARTS_DIR = BENCH_DIR / "charts"
# Per-run figures that are not timings: taken from the runs as they are (not medians).
NOT_MEDIANS = {"rows", "commits", "lookups", "lookup_wrong", "lookups_compacted",
               "lookup_compacted_wrong", "files_end", "files_ingest", "live_files", "scan_rows",
               "rows_compacted", "compact_every", "lookups_planned"}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="cdc-1m", help=f"one of {', '.join(WORKLOADS)}")
    parser.add_argument(
        "--scale", type=float, default=1.0,
        help="scale stream commits and lookups (e.g. 0.1 for a quick run; own results)",
    )  # fmt: skip
    parser.add_argument("--storage", default="local", choices=("local", "s3"))
    parser.add_argument(
        "--s3-server", default="seaweedfs", choices=("seaweedfs", "moto"),
        help="local S3 server behind the counting proxy (with --storage s3)",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", help="comma-separated (default: all that run this workload kind)"
    )
    parser.add_argument("--skip", default="", help="comma-separated contender names or tags")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--timeout", type=int, help="seconds per run (default: per contender)")
    parser.add_argument(
        "--lookup-budget-s", type=float, default=30.0, help="per-run lookup time budget (0: none)"
    )
    parser.add_argument("--max-lookups", type=int, default=0, help="at most N lookups (0: all)")
    parser.add_argument("--compact-every", type=int, help="stream: compactor every N commits")
    parser.add_argument(
        "--warm-memory-gib", type=float, default=WARM_MEMORY_GIB,
        help="touch this much memory in a throwaway process before every phase (0: never)",
    )  # fmt: skip
    parser.add_argument("--keep-work", action="store_true", help="keep the last run's table")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    parser.add_argument("--no-charts", action="store_true", help="do not redraw the PNG charts")
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite RESULTS.md and the charts"
    )
    parser.add_argument("--list", action="store_true", help="list contenders and workloads")
    return parser.parse_args(argv)


def selected(
    args: argparse.Namespace, spec: WorkloadSpec
) -> tuple[list[ContenderSpec], list[ContenderSpec]]:
    """(contenders to run, contenders left out by --skip)."""
    if args.contenders:
        names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    else:
        names = [c.name for c in CONTENDERS.values() if spec.kind in c.kinds]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contender(s): {', '.join(unknown)}; try --list")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    specs = [CONTENDERS[n] for n in names]
    skipped = [s for s in specs if s.name in skip or skip.intersection(s.tags)]
    return [s for s in specs if s not in skipped], skipped


def result_key(workload: str, storage: str) -> str:
    """Results of one workload on one storage: `cdc-1m` (local) or `cdc-1m@s3`."""
    return workload if storage == "local" else f"{workload}@{storage}"


def record_skipped(specs: list[ContenderSpec], key: str, args: argparse.Namespace,
                   expected: str) -> None:  # fmt: skip
    """Keep skipped contenders in the report: as 'skipped' unless an older result exists."""
    for spec in specs:
        path = results_dir(key) / f"{spec.name}.json"
        if not path.exists():
            result = {"contender": spec.name, "status": "skipped", "expected": expected,
                      "reason": f"left out by --skip {args.skip}"}  # fmt: skip
            path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def prepare_workload(spec: WorkloadSpec) -> Path:
    """Generate the workload files in the datagen venv unless the cache is current."""
    if not manifest_is_current(spec):
        python = envs.ensure_env("datagen")
        print(f"[data] generating {spec.name} ...", flush=True)
        cmd = [str(python), "-m", "bench.datagen", "--workload", spec.name]
        subprocess.run(cmd, cwd=REPO_DIR, check=True)
    return workload_dir(spec.name)


def last_json_line(text: str) -> dict[str, Any] | None:
    """The contender's result: the last stdout line that parses as a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def read_progress(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def launch(
    cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Run `cmd` in its own process group; on timeout kill that group. (rc or None, stdout)."""
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out


PROCESS_PHASES = ("write", "scan", "read")

#: This machine is a virtual machine that hands idle memory back to its host: a page first
#: touched after a few idle seconds costs far more than one freed a moment ago
#: (``python -m bench.cold_memory``: the same 1M-row read 0.48-0.68 s against 1.28-1.38 s).
#: Each phase runs in a fresh process, so without a warm-up a phase's timing would depend on
#: how much memory the phase before it happened to touch. A throwaway process touches this
#: much memory right before every phase of every contender, so all start on warm memory;
#: peak RSS is unaffected (the warm-up is a separate process).
WARM_MEMORY_GIB = 4.0
WARM_MEMORY = (
    "import sys, numpy as np; a = np.ones(int(float(sys.argv[1]) * 2**30) // 8); a[::512] += 1"
)


def warm_memory(gib: float) -> None:
    """Touch ``gib`` GiB in a throwaway process (see ``WARM_MEMORY_GIB``)."""
    if gib > 0:
        subprocess.run([sys.executable, "-c", WARM_MEMORY, str(gib)], check=True)


FIRST_WINS = {"versions", "base_rss_mb", "lookup_budget_s", "workload", "expected", "phase"}


def merge_phase(merged: dict[str, Any], result: dict[str, Any]) -> None:
    """Fold one process's result into the run's result."""
    for key, value in result.items():
        if key == "notes":
            merged.setdefault("notes", [])
            merged["notes"] += [n for n in value if n not in merged["notes"]]
        elif key in ("extra", "requests") and isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        elif key == "status":
            if merged.get("status") in (None, "ok"):
                merged["status"] = value
        elif key in FIRST_WINS:
            merged.setdefault(key, value)
        else:
            merged[key] = value
    merged["cpu_s"] = sum(merged.get(f"{p}_process_cpu_s") or 0 for p in PROCESS_PHASES)


def run_once(spec: ContenderSpec, data: Path, run_no: int, args: argparse.Namespace,
             backend: Any) -> dict:  # fmt: skip
    """One run of one contender (write, scan, read processes) in a fresh work dir."""
    work = OUT_DIR / "work" / spec.name
    logs = OUT_DIR / "logs" / result_key(data.name, args.storage)
    shutil.rmtree(work, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(envs.env_python(spec.env)), "-m", spec.module,
        "--workload-dir", str(data), "--work-dir", str(work), "--variant", spec.name,
        "--lookup-budget-s", str(args.lookup_budget_s), "--max-lookups", str(args.max_lookups),
        *spec.args,
    ]  # fmt: skip
    if args.compact_every is not None:
        cmd += ["--compact-every", str(args.compact_every)]
    env = None
    if backend is not None:
        cmd += backend.args(backend.new_bucket(spec.name))
        env = backend.env()
    timeout = args.timeout or spec.timeout_s
    load_before = os.getloadavg()[0]  # other work on the machine skews wall-clock figures
    started = time.perf_counter()
    merged: dict[str, Any] = {}
    for phase in PROCESS_PHASES:
        progress = logs / f"{spec.name}-{run_no}-{phase}.progress.json"
        progress.unlink(missing_ok=True)
        log = logs / f"{spec.name}-{run_no}-{phase}.log"
        remaining = timeout - (time.perf_counter() - started)
        warm_memory(args.warm_memory_gib)
        phase_started = time.perf_counter()
        rc, out = launch([*cmd, "--phase", phase, "--progress", str(progress)], log,
                         max(1.0, remaining), env)  # fmt: skip
        merged[f"{phase}_wall_s"] = time.perf_counter() - phase_started
        result = last_json_line(out)
        if rc is None:
            result = {**read_progress(progress), "status": "timeout", "timeout_s": timeout,
                      "timeout_phase": phase}  # fmt: skip
        elif result is None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            result = {**read_progress(progress), "status": "error", "reason": " | ".join(tail)}
        merge_phase(merged, result)
        merged.setdefault("logs", []).append(str(log.relative_to(REPO_DIR)))
        if merged.get("status") != "ok":
            break
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - started
    return {**merged, "wall_s": wall, "load_before": load_before, "load_after": os.getloadavg()[0],
            "warm_memory_gib": args.warm_memory_gib}  # fmt: skip


def median_of(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(numbers) if numbers else None


def elementwise_median(lists: list[list[Any]]) -> list[Any]:
    width = min((len(b) for b in lists), default=0)
    return [median_of([b[i] for b in lists]) for i in range(width)]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the ok runs (or over all runs if none was ok); raw runs kept alongside.

    Counts (rows, requests, probes, files) come from the last run: they do not vary.
    """
    ok = [r for r in runs if r.get("status") == "ok"]
    pool = ok or runs
    merged: dict[str, Any] = dict(pool[-1])
    for key, value in pool[-1].items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and key not in NOT_MEDIANS:
            merged[key] = median_of([r.get(key) for r in pool])
    for key in ("batch_s", "stream_compact_s"):
        merged[key] = elementwise_median([r.get(key) or [] for r in pool])
    merged["runs"], merged["runs_ok"] = len(runs), len(ok)
    merged["correct_all_runs"] = all(r.get("correct") for r in ok) if ok else None
    merged["raw_runs"] = [
        {k: v for k, v in r.items() if k not in ("probes", "batch_s", "stream_compact_s")}
        for r in runs
    ]
    return merged


def check(result: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """'ok', a loud mismatch description, or None when nothing was read back."""
    if "checksum" not in result:
        return None
    expected = manifest["expected"]
    problems = []
    if result.get("rows") != expected["rows"]:
        problems.append(f"rows {result.get('rows')} != {expected['rows']}")
    if result.get("checksum") != expected["checksum"] or result.get("correct_all_runs") is False:
        problems.append("checksum mismatch")
    if result.get("scan_correct") is False:
        problems.append("streaming scan mismatch")
    if result.get("correct_compacted") is False:
        problems.append("mismatch after compaction")
    for key in ("lookup_wrong", "lookup_compacted_wrong"):
        if result.get(key):
            problems.append(f"{result[key]} wrong lookups ({key})")
    return "MISMATCH: " + ", ".join(problems) if problems else "ok"


def results_dir(key: str) -> Path:
    return OUT_DIR / "results" / key


def run_contender(spec: ContenderSpec, data: Path, manifest: dict[str, Any],
                  args: argparse.Namespace, backend: Any) -> dict[str, Any]:  # fmt: skip
    try:
        envs.ensure_env(spec.env)
    except envs.EnvError as exc:
        return {"contender": spec.name, "status": "not supported", "reason": f"venv: {exc}"}
    timeout = args.timeout or spec.timeout_s
    runs = []
    for run_no in range(1, args.repeat + 1):
        print(f"[run] {spec.name} {run_no}/{args.repeat} (timeout {timeout}s) ...", flush=True)
        runs.append(run_once(spec, data, run_no, args, backend))
        print(f"      {summary_line(runs[-1])}", flush=True)
        if runs[-1].get("status") in ("not supported", "timeout"):
            break  # repeating cannot change the outcome; save the machine's time
    result = aggregate(runs)
    result["check"] = check(result, manifest)
    result["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["expected"] = manifest["expected"]["checksum"]
    result["command"] = args.command
    if backend is not None:
        result["s3_server"] = backend.version()
    return result


def summary_line(r: dict[str, Any]) -> str:
    keys = ("ingest_s", "cdc_s", "scan_s", "read_s", "lookup_p50_ms", "compact_s",
            "read_compacted_s", "wall_s")  # fmt: skip
    figures = ", ".join(f"{k}={r[k]:.3f}" for k in keys if isinstance(r.get(k), (int, float)))
    reason = f" ({r['reason']})" if r.get("reason") else ""
    return f"{r.get('status')}{reason} {figures} correct={r.get('correct')}"


def stored_results(key: str, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Latest stored result per contender, ignoring those made from other inputs."""
    found = {}
    for path in sorted(results_dir(key).glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("expected") == manifest["expected"]["checksum"]:
            found[path.stem] = result
    return found


def collect_sections(smoke: WorkloadSpec | None = None) -> dict[str, tuple[dict, dict]]:
    """{result key: (manifest, results)} for every real workload (or one smoke workload)."""
    specs = [smoke] if smoke is not None else [w for w in WORKLOADS.values() if not w.smoke]
    sections = {}
    for spec in specs:
        if not manifest_is_current(spec):
            continue
        manifest = load_manifest(workload_dir(spec.name))
        for storage in ("local", "s3"):
            key = result_key(spec.name, storage)
            results = stored_results(key, manifest)
            if results:
                sections[key] = (manifest, results)
    return sections


def write_report(spec: WorkloadSpec, charts: bool = True) -> Path:
    """RESULTS.md (and the charts) for real workloads; smoke/scaled ones go to bench/out/."""
    sections = collect_sections(spec if spec.smoke else None)
    if spec.smoke:
        target = OUT_DIR / f"RESULTS-{spec.name}.md"
        chart_dir = OUT_DIR / f"charts-{spec.name}"
    else:
        target, chart_dir = RESULTS_MD, CHARTS_DIR
    chart_files: list[str] = []
    if charts:
        chart_files = draw_charts(sections, chart_dir)
    rel = os.path.relpath(chart_dir, target.parent)
    target.write_text(report.render(sections, [f"{rel}/{c}" for c in chart_files]),
                      encoding="utf-8")  # fmt: skip
    return target


def draw_charts(sections: dict[str, Any], chart_dir: Path) -> list[str]:
    """Render the PNG charts in the `report` venv (matplotlib); [] if that fails."""
    try:
        python = envs.ensure_env("report")
    except envs.EnvError as exc:
        print(f"[charts] skipped: {exc}", file=sys.stderr)
        return []
    chart_dir.mkdir(parents=True, exist_ok=True)
    payload = chart_dir / "input.json"
    payload.write_text(json.dumps(sections, default=str), encoding="utf-8")
    done = subprocess.run(
        [str(python), "-m", "bench.charts", str(payload), str(chart_dir)],
        cwd=REPO_DIR, capture_output=True, text=True, check=False,
    )  # fmt: skip
    payload.unlink(missing_ok=True)
    if done.returncode != 0:
        print(f"[charts] failed: {done.stderr.strip()[-800:]}", file=sys.stderr)
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip().endswith(".png")]


def list_all() -> None:
    for spec in CONTENDERS.values():
        tags = f" [{', '.join(spec.tags)}]" if spec.tags else ""
        print(f"{spec.name:13} env={spec.env:10} timeout={spec.timeout_s}s "
              f"kinds={','.join(spec.kinds)}{tags}  {spec.summary}")  # fmt: skip
    for w in WORKLOADS.values():
        print(f"workload {w.name} ({w.kind}{', smoke' if w.smoke else ''}): {w.description}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.list:
        list_all()
        return 0
    try:
        spec = get_workload(args.workload, args.scale)
    except KeyError as exc:
        raise SystemExit(str(exc)) from None
    if args.report_only:
        print(f"[report] {write_report(spec, charts=not args.no_charts)}")
        return 0
    specs, skipped = selected(args, spec)
    data = prepare_workload(spec)
    manifest = load_manifest(data)
    key = result_key(spec.name, args.storage)
    results_dir(key).mkdir(parents=True, exist_ok=True)
    record_skipped(skipped, key, args, manifest["expected"]["checksum"])
    backend = None
    if args.storage == "s3":
        from bench.s3env import S3Backend

        print(f"[s3] starting {args.s3_server} and the counting proxy ...", flush=True)
        backend = S3Backend(args.s3_server)
        print(f"[s3] {backend.version()} at {backend.s3.endpoint_url}, proxy {backend.endpoint}")
    try:
        for contender in specs:
            result = run_contender(contender, data, manifest, args, backend)
            path = results_dir(key) / f"{contender.name}.json"
            path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
            if result.get("check") not in (None, "ok"):
                print(f"!!! {contender.name}: {result['check']} !!!", file=sys.stderr, flush=True)
    finally:
        if backend is not None:
            backend.stop()
    if not args.no_report:
        print(f"[report] {write_report(spec, charts=not args.no_charts)}")
    return 0
