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
    load_manifest,
    manifest_is_current,
    workload_dir,
)

RESULTS_MD = BENCH_DIR / "RESULTS.md"
# Per-run figures that are not timings: taken from the runs as they are (not medians).
NOT_MEDIANS = {"rows", "commits", "lookups", "lookup_wrong"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="cdc-1m", choices=sorted(WORKLOADS))
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="comma-separated (default: all)"
    )
    parser.add_argument("--skip", default="", help="comma-separated contender names or tags")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--timeout", type=int, help="seconds per run (default: per contender)")
    parser.add_argument(
        "--lookup-budget-s", type=float, default=30.0, help="per-run lookup time budget (0: none)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the last run's table")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    parser.add_argument("--list", action="store_true", help="list contenders and workloads")
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> tuple[list[ContenderSpec], list[ContenderSpec]]:
    """(contenders to run, contenders left out by --skip)."""
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contender(s): {', '.join(unknown)}; try --list")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    specs = [CONTENDERS[n] for n in names]
    skipped = [s for s in specs if s.name in skip or skip.intersection(s.tags)]
    return [s for s in specs if s not in skipped], skipped


def record_skipped(specs: list[ContenderSpec], args: argparse.Namespace, expected: str) -> None:
    """Keep skipped contenders in the report: as 'skipped' unless an older result exists."""
    for spec in specs:
        path = results_dir(args.workload) / f"{spec.name}.json"
        if not path.exists():
            result = {"contender": spec.name, "status": "skipped", "expected": expected,
                      "reason": f"left out by --skip {args.skip}"}  # fmt: skip
            path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def prepare_workload(name: str) -> Path:
    """Generate the workload files in the datagen venv unless the cache is current."""
    if not manifest_is_current(WORKLOADS[name]):
        python = envs.ensure_env("datagen")
        print(f"[data] generating {name} ...", flush=True)
        cmd = [str(python), "-m", "bench.datagen", "--workload", name]
        subprocess.run(cmd, cwd=REPO_DIR, check=True)
    return workload_dir(name)


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


def launch(cmd: list[str], log: Path, timeout: int) -> tuple[int | None, str]:
    """Run `cmd` in its own process group; on timeout kill that group. (rc or None, stdout)."""
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out


def run_once(spec: ContenderSpec, data: Path, run_no: int, args: argparse.Namespace) -> dict:
    """One run of one contender in a fresh work dir; always returns a result dict."""
    work = OUT_DIR / "work" / spec.name
    logs = OUT_DIR / "logs" / data.name
    shutil.rmtree(work, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    progress = logs / f"{spec.name}-{run_no}.progress.json"
    progress.unlink(missing_ok=True)
    log = logs / f"{spec.name}-{run_no}.log"
    cmd = [
        str(envs.env_python(spec.env)), "-m", spec.module,
        "--workload-dir", str(data), "--work-dir", str(work),
        "--progress", str(progress), "--variant", spec.name,
        "--lookup-budget-s", str(args.lookup_budget_s), *spec.args,
    ]  # fmt: skip
    timeout = args.timeout or spec.timeout_s
    load_before = os.getloadavg()[0]  # other work on the machine skews wall-clock figures
    started = time.perf_counter()
    rc, out = launch(cmd, log, timeout)
    wall = time.perf_counter() - started
    result = last_json_line(out)
    if rc is None:
        result = {**read_progress(progress), "status": "timeout", "timeout_s": timeout}
    elif result is None:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        result = {**read_progress(progress), "status": "error", "reason": " | ".join(tail)}
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    log_name = str(log.relative_to(REPO_DIR))
    return {**result, "wall_s": wall, "load_before": load_before, "log": log_name}


def median_of(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(numbers) if numbers else None


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the ok runs (or over all runs if none was ok); raw runs kept alongside."""
    ok = [r for r in runs if r.get("status") == "ok"]
    pool = ok or runs
    merged: dict[str, Any] = dict(pool[-1])
    for key, value in pool[-1].items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and key not in NOT_MEDIANS:
            merged[key] = median_of([r.get(key) for r in pool])
    batches = [r.get("batch_s") or [] for r in pool]
    width = min((len(b) for b in batches), default=0)
    merged["batch_s"] = [median_of([b[i] for b in batches]) for i in range(width)]
    merged["runs"], merged["runs_ok"] = len(runs), len(ok)
    merged["correct_all_runs"] = all(r.get("correct") for r in ok) if ok else None
    merged["raw_runs"] = runs
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
    if result.get("lookup_wrong"):
        problems.append(f"{result['lookup_wrong']} wrong lookups")
    return "MISMATCH: " + ", ".join(problems) if problems else "ok"


def results_dir(workload: str) -> Path:
    return OUT_DIR / "results" / workload


def run_contender(
    spec: ContenderSpec, data: Path, manifest: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    try:
        envs.ensure_env(spec.env)
    except envs.EnvError as exc:
        return {"contender": spec.name, "status": "not supported", "reason": f"venv: {exc}"}
    timeout = args.timeout or spec.timeout_s
    runs = []
    for run_no in range(1, args.repeat + 1):
        print(f"[run] {spec.name} {run_no}/{args.repeat} (timeout {timeout}s) ...", flush=True)
        runs.append(run_once(spec, data, run_no, args))
        print(f"      {summary_line(runs[-1])}", flush=True)
        if runs[-1].get("status") in ("not supported", "timeout"):
            break  # repeating cannot change the outcome; save the machine's time
    result = aggregate(runs)
    result["check"] = check(result, manifest)
    result["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["expected"] = manifest["expected"]["checksum"]
    return result


def summary_line(r: dict[str, Any]) -> str:
    keys = ("ingest_s", "cdc_s", "read_s", "lookup_p50_ms", "lookup_p99_ms", "wall_s")
    figures = ", ".join(f"{k}={r[k]:.3f}" for k in keys if isinstance(r.get(k), (int, float)))
    reason = f" ({r['reason']})" if r.get("reason") else ""
    return f"{r.get('status')}{reason} {figures} correct={r.get('correct')}"


def stored_results(workload: str, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Latest stored result per contender, ignoring those made from other inputs."""
    found = {}
    for path in sorted(results_dir(workload).glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("expected") == manifest["expected"]["checksum"]:
            found[path.stem] = result
    return found


def write_report(workload: str, command: str) -> Path:
    """RESULTS.md for real workloads; smoke workloads go to bench/out/RESULTS-<name>.md."""
    names = (
        [workload]
        if WORKLOADS[workload].smoke
        else [w for w, spec in WORKLOADS.items() if not spec.smoke and manifest_is_current(spec)]
    )
    sections = {}
    for name in names:
        manifest = load_manifest(workload_dir(name))
        results = stored_results(name, manifest)
        if results:
            sections[name] = (manifest, results)
    target = OUT_DIR / f"RESULTS-{workload}.md" if WORKLOADS[workload].smoke else RESULTS_MD
    target.write_text(report.render(sections, command), encoding="utf-8")
    return target


def list_all() -> None:
    for spec in CONTENDERS.values():
        tags = f" [{', '.join(spec.tags)}]" if spec.tags else ""
        print(f"{spec.name:12} env={spec.env:10} timeout={spec.timeout_s}s{tags}  {spec.summary}")
    for w in WORKLOADS.values():
        print(f"workload {w.name}: {w.description}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_all()
        return 0
    specs, skipped = selected(args)
    data = prepare_workload(args.workload)
    manifest = load_manifest(data)
    results_dir(args.workload).mkdir(parents=True, exist_ok=True)
    record_skipped(skipped, args, manifest["expected"]["checksum"])
    for spec in specs:
        result = run_contender(spec, data, manifest, args)
        path = results_dir(args.workload) / f"{spec.name}.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        if result.get("check") not in (None, "ok"):
            print(f"!!! {spec.name}: {result['check']} !!!", file=sys.stderr, flush=True)
    if not args.no_report:
        command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"[report] {write_report(args.workload, command.strip())}")
    return 0
