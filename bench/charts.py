"""PNG charts for bench/RESULTS.md (runs in the `report` venv: matplotlib).

Input: a JSON file {result key: [manifest, {contender: result}]} written by the runner.
Prints the names of the charts it wrote, one per line. Charts:
  batch_time.png       seconds per CDC commit against the table's size (cdc-1m and cdc-10m)
  scan_compaction.png  full read before and after a full compaction, per contender
  requests.png         object-store requests per million records written, by request class
  stream_runs.png      stream simulation: sorted runs and files a point read may touch
Usage: python -m bench.charts INPUT.json OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {
    "floor": "#555555",
    "lsm3": "#d62728",
    "lsm3-leveled": "#ff7f0e",
    "lsm3-full": "#8c564b",
    "deltalake": "#1f77b4",
    "paimon": "#2ca02c",
    "paimon-rust": "#17becf",
    "iceberg": "#9467bd",
    "slatedb": "#e377c2",
}
ORDER = list(COLORS)


def ok(r: dict[str, Any]) -> bool:
    return r.get("status") == "ok"


def ordered(results: dict[str, Any]) -> list[str]:
    return sorted(results, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


def kind(sections: dict[str, Any], key: str) -> str:
    return str(sections[key][0]["spec"].get("kind", "cdc"))


def local_keys(sections: dict[str, Any], wanted: str | None = None) -> list[str]:
    """Local-disk result keys (of one workload kind), smallest initial table first."""
    keys = [k for k in sections if "@" not in k and (wanted is None or kind(sections, k) == wanted)]
    return sorted(keys, key=lambda k: sections[k][0]["spec"]["initial_rows"])


def batch_time(sections: dict[str, Any], out: Path) -> str | None:
    keys = local_keys(sections, "cdc")[:2]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for key, style in zip(keys, ("-", "--"), strict=False):
        manifest, results = sections[key]
        live = manifest.get("live_rows") or []
        for name in ordered(results):
            r = results[name]
            batches = r.get("batch_s") or []
            if not ok(r) or not batches or len(live) < len(batches):
                continue
            ax.plot(
                [live[i] / 1e6 for i in range(len(batches))],
                batches,
                style,
                marker="o",
                markersize=3,
                color=COLORS.get(name, "black"),
                label=f"{name} ({key})",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("table size before the commit (million rows, log)")
    ax.set_ylabel("seconds per CDC commit of 100k records (log)")
    ax.set_title("CDC commit time as the table grows (flat = cost independent of table size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "batch_time.png", dpi=110)
    plt.close(fig)
    return "batch_time.png"


def scan_compaction(sections: dict[str, Any], out: Path) -> str | None:
    keys = (local_keys(sections, "cdc") + local_keys(sections, "stream"))[:3]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        _, results = sections[key]
        names = [n for n in ordered(results) if ok(results[n])]
        width = 0.4
        before = [results[n].get("read_s") or 0 for n in names]
        after = [results[n].get("read_compacted_s") or 0 for n in names]
        xs = range(len(names))
        ax.bar(
            [x - width / 2 for x in xs],
            before,
            width,
            label="before compaction",
            color=[COLORS.get(n, "gray") for n in names],
        )
        ax.bar(
            [x + width / 2 for x in xs],
            after,
            width,
            label="after full compaction",
            color=[COLORS.get(n, "gray") for n in names],
            alpha=0.45,
            hatch="//",
        )
        for x, a in zip(xs, after, strict=True):
            if not a:
                ax.text(
                    x + width / 2,
                    0.01,
                    "n/a",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    transform=ax.get_xaxis_transform(),
                )
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("seconds to read the merged table (log)")
        ax.set_title(f"{key}: full read", fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scan_compaction.png", dpi=110)
    plt.close(fig)
    return "scan_compaction.png"


def per_million(r: dict[str, Any], manifest: dict[str, Any]) -> dict[str, float]:
    spec = manifest["spec"]
    n = spec["initial_rows"] + spec["batches"] * spec["batch_rows"]
    total: dict[str, float] = {}
    for phase in ("ingest", "stream_compact"):
        for k, v in ((r.get("requests") or {}).get(phase) or {}).get("requests", {}).items():
            total[k] = total.get(k, 0) + v * 1e6 / n
    return total


def requests_chart(sections: dict[str, Any], out: Path) -> str | None:
    panels = []
    s3_keys = sorted((k for k in sections if k.endswith("@s3")), key=lambda k: kind(sections, k))
    for key in s3_keys + local_keys(sections, "stream"):
        if key.split("@")[0] in {p[0].split("@")[0] for p in panels}:
            continue  # the S3 panel of a workload already shows it
        manifest, results = sections[key]
        counted = {
            n: per_million(r, manifest)
            for n, r in results.items()
            if ok(r) and r.get("requests_source")
        }
        counted = {n: c for n, c in counted.items() if c}
        if counted:
            panels.append((key, counted))
    panels = panels[:3]
    if not panels:
        return None
    classes = ["PUT", "POST", "COPY", "LIST", "GET", "HEAD", "DELETE", "OTHER"]
    shades = dict(zip(classes, plt.cm.tab10.colors, strict=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (key, counted) in zip(axes[0], panels, strict=True):
        names = ordered(counted)
        bottom = [0.0] * len(names)
        for cls in classes:
            values = [counted[n].get(cls, 0) for n in names]
            if any(values):
                ax.bar(names, values, bottom=bottom, label=cls, color=shades[cls])
                bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for x, total in enumerate(bottom):
            ax.text(x, total, f"{total:,.0f}", ha="center", va="bottom", fontsize=7)
        ax.margins(y=0.08)
        ax.set_ylabel("requests per million records written")
        ax.set_title(f"{key}: ingest requests (incl. compaction)", fontsize=10)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "requests.png", dpi=110)
    plt.close(fig)
    return "requests.png"


def stream_runs(sections: dict[str, Any], out: Path) -> str | None:
    keys = local_keys(sections, "stream")
    if not keys:
        return None
    _, results = sections[keys[0]]
    probed = {n: r["probes"] for n, r in results.items() if ok(r) and r.get("probes")}
    if not probed:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for name in ordered(probed):
        commits = [p["commit"] for p in probed[name]]
        color = COLORS.get(name, "black")
        top.plot(commits, [p["sorted_runs"] for p in probed[name]], color=color, lw=0.8, label=name)
        bottom.plot(
            commits, [p["read_amp_mean"] for p in probed[name]], color=color, lw=0.8, label=name
        )
    top.axhline(8, color="black", ls=":", lw=1, label="stop trigger (8)")
    top.set_ylabel("sorted runs in the bucket")
    top.set_title(f"{keys[0]}: state after each commit (compactor between commits)")
    bottom.set_ylabel("files a point read may touch (mean)")
    bottom.set_xlabel("commit")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "stream_runs.png", dpi=110)
    plt.close(fig)
    return "stream_runs.png"


def main(argv: list[str]) -> int:
    sections = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for chart in (batch_time, scan_compaction, requests_chart, stream_runs):
        name = chart(sections, out)
        if name:
            print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
