"""The picture of ``lsm3 inspect --html`` / ``--png``: the LSM tree as people draw it.

One panel per (partition, bucket): levels as rows, level 0 on top with one lane per sorted
run (newest first), each deeper level one lane. Each file is a box placed by its key range
(x: the rank of its first and last key among the bucket's file boundaries, so boxes that
overlap in keys overlap on screen), and, at the right, a bar whose width is its size. A
header gives files, bytes, rows and the read and write amplification, and a small chart the
live files and bytes over the retained snapshots. The page is one HTML file with inline SVG:
no script, no font or style from the network. ``--png`` has headless Chromium photograph it.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import tempfile
from typing import Any

import lsm3
from lsm3.cli.args import CliError
from lsm3.cli.io import human_bytes

WIDTH = 960
KEYS_X, KEYS_W = 150, 560  # where key ranges are drawn
SIZE_X, SIZE_W = 730, 210  # where file sizes are drawn
LANE = 16
MAX_PANELS = 12
MAX_L0_LANES = 24
COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"]


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{html.escape(s)}</text>"
    )


def _lanes(files: list[lsm3.FileInfo]) -> list[tuple[str, int, list[lsm3.FileInfo]]]:
    """(label, level, files) per lane: level 0 one lane per run (newest first), then levels."""
    l0: dict[tuple[int, int], list[lsm3.FileInfo]] = {}
    deeper: dict[int, list[lsm3.FileInfo]] = {}
    for f in files:
        if f.level == 0:
            l0.setdefault((f.max_seq, f.min_seq), []).append(f)
        else:
            deeper.setdefault(f.level, []).append(f)
    runs = sorted(l0.items(), reverse=True)
    lanes = [(f"L0 run {i + 1}", 0, fs) for i, (_, fs) in enumerate(runs[:MAX_L0_LANES])]
    if len(runs) > MAX_L0_LANES:
        rest = [f for _, fs in runs[MAX_L0_LANES:] for f in fs]
        lanes.append((f"L0 +{len(runs) - MAX_L0_LANES} runs", 0, rest))
    lanes += [(f"L{lv}", lv, deeper[lv]) for lv in sorted(deeper)]
    return lanes


def _number(key: tuple[Any, ...]) -> float | None:
    if len(key) != 1:
        return None
    value = key[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "timestamp"):  # datetime
        return float(value.timestamp())
    if hasattr(value, "toordinal"):  # date
        return float(value.toordinal())
    return None


def key_positions(keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], float]:
    """Each key's place in [0, 1]: by value for a single numeric or time key, else by rank
    among the distinct keys (strings, composite keys)."""
    distinct = sorted(set(keys))
    numbers = [_number(k) for k in distinct]
    if distinct and all(n is not None for n in numbers):
        lo, hi = numbers[0], numbers[-1]
        assert lo is not None and hi is not None
        span = (hi - lo) or 1.0
        return {k: ((n or 0.0) - lo) / span for k, n in zip(distinct, numbers, strict=True)}
    last = max(len(distinct) - 1, 1)
    return {k: i / last for i, k in enumerate(distinct)}


def _panel(title: str, files: list[lsm3.FileInfo], top: float) -> tuple[list[str], float]:
    """The SVG elements of one bucket's tree starting at ``top``; returns them and the height."""
    place = key_positions([k for f in files for k in (f.min_key, f.max_key)])
    biggest = max(f.bytes for f in files) or 1
    out = [_text(10, top + 14, title, 13, font_weight="bold")]
    y = top + 22
    for label, level, lane_files in _lanes(files):
        color = COLORS[level % len(COLORS)]
        out.append(_text(KEYS_X - 8, y + LANE - 4, label, 11, "end"))
        out.append(
            f'<rect x="{KEYS_X}" y="{y:.1f}" width="{KEYS_W}" height="{LANE - 2}" fill="#f4f4f4"/>'
        )
        size_x = float(SIZE_X)
        for f in sorted(lane_files, key=lambda f: f.min_key):
            x0 = KEYS_X + KEYS_W * place[f.min_key]
            w = max(KEYS_W * (place[f.max_key] - place[f.min_key]), 3.0)
            tip = (
                f"{f.path}\nlevel {f.level}, {f.rows} rows ({f.deletes} deletes), "
                f"{human_bytes(f.bytes)}\nkeys {f.min_key} .. {f.max_key}"
            )
            out.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" height="{LANE - 2}" '
                f'fill="{color}" fill-opacity="0.75" stroke="#222" stroke-width="0.5">'
                f"<title>{html.escape(tip)}</title></rect>"
            )
            sw = max(SIZE_W * f.bytes / biggest / max(len(lane_files), 1), 2.0)
            out.append(
                f'<rect x="{size_x:.1f}" y="{y:.1f}" width="{sw:.1f}" height="{LANE - 2}" '
                f'fill="{color}" stroke="#fff" stroke-width="0.5"/>'
            )
            size_x += sw
        y += LANE
    return out, y - top + 8


def _history_chart(history: list[dict[str, Any]], top: float) -> tuple[list[str], float]:
    if len(history) < 2:
        return [], 0
    out = [_text(10, top + 14, "live files (blue) and bytes (orange) per snapshot", 13)]
    x0, w, y0, h = KEYS_X, KEYS_W + SIZE_W, top + 24, 80
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>')
    for key, color in (("total_files", COLORS[0]), ("total_bytes", COLORS[1])):
        peak = max(p[key] for p in history) or 1
        points = " ".join(
            f"{x0 + w * i / (len(history) - 1):.1f},{y0 + h - h * p[key] / peak:.1f}"
            for i, p in enumerate(history)
        )
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
    first, last = history[0]["id"], history[-1]["id"]
    out.append(_text(x0, y0 + h + 14, f"snapshot {first}", 11))
    out.append(_text(x0 + w, y0 + h + 14, f"snapshot {last}", 11, "end"))
    return out, h + 44


def render_svg(report: dict[str, Any], files: list[lsm3.FileInfo]) -> tuple[str, int]:
    """The tree as an SVG document and its height in pixels."""
    ra, wa = report["read_amplification"], report["write_amplification"]
    live = report["rows_live"]
    rows = (
        f"{live:,} live rows"
        if live is not None
        else (f"at most {report['rows_live_at_most']:,} live rows")
    )
    snap = report["snapshot"]
    parts = [
        _text(10, 22, f"lsm3 table {report['uri']}", 16, font_weight="bold"),
        _text(
            10,
            42,
            f"snapshot {snap['id'] if snap else 0}: {report['files']} files, "
            f"{human_bytes(report['bytes'])}, {report['rows_stored']:,} rows stored "
            f"({report['deletes_stored']:,} deletes), {rows}",
        ),
        _text(
            10,
            60,
            f"read amplification: up to {ra['max_sorted_runs']} sorted runs per bucket (mean "
            f"{ra['mean_sorted_runs']}); write amplification: "
            + (f"{wa:.2f}x over {report['retained_snapshots']} snapshots" if wa else "-"),
        ),
        _text(KEYS_X, 84, "key range (files placed by their first and last key)", 11, fill="#555"),
        _text(SIZE_X, 84, "size (width = bytes)", 11, fill="#555"),
    ]
    y = 92.0
    groups: dict[tuple[Any, int], list[lsm3.FileInfo]] = {}
    for f in files:
        groups.setdefault((f.partition, f.bucket), []).append(f)
    for (partition, bucket), group in sorted(groups.items(), key=lambda kv: repr(kv[0]))[
        :MAX_PANELS
    ]:
        where = f"partition {'/'.join(map(str, partition))}, " if partition else ""
        size = human_bytes(sum(f.bytes for f in group))
        title = f"{where}bucket {bucket}: {len(group)} files, {size}"
        elements, height = _panel(title, group, y)
        parts += elements
        y += height
    if len(groups) > MAX_PANELS:
        parts.append(_text(10, y + 14, f"... {len(groups) - MAX_PANELS} more buckets", 12))
        y += 24
    if not files:
        parts.append(_text(10, y + 16, "no data files (nothing committed, or all deleted)"))
        y += 28
    chart, height = _history_chart(report["history"], y)
    parts += chart
    y += height + 10
    total = int(y)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" '
        f'viewBox="0 0 {WIDTH} {total}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(parts) + "</svg>"
    )
    return svg, total


def render_html(report: dict[str, Any], files: list[lsm3.FileInfo]) -> str:
    svg, _ = render_svg(report, files)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>lsm3 inspect {html.escape(report['uri'])}</title>"
        "<style>body{margin:0;background:#fff}</style></head>\n<body>" + svg + "</body></html>\n"
    )


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: str, png_path: str, height: int | None = None) -> None:
    """Photograph an HTML page with headless Chromium (no network, a throw-away profile)."""
    chromium = find_chromium()
    if chromium is None:
        raise CliError(
            "--png needs Chromium (Debian: apt-get install chromium); --html draws the same "
            "picture without it"
        )
    if height is None:
        marker = 'height="'
        start = page.index(marker, page.index("<svg")) + len(marker)
        height = int(page[start : page.index('"', start)])
    with tempfile.TemporaryDirectory(prefix="lsm3-png-") as tmp:
        page_path = os.path.join(tmp, "page.html")
        with open(page_path, "w", encoding="utf-8") as f:
            f.write(page)
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={os.path.join(tmp, 'profile')}",
            f"--window-size={WIDTH},{height}",
            f"--screenshot={os.path.abspath(png_path)}",
            "file://" + page_path,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not os.path.exists(png_path):
        tail = " ".join(result.stderr.split()[-40:])
        raise CliError(f"Chromium could not draw {png_path} (exit {result.returncode}): {tail}")
