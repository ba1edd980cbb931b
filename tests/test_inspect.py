"""``lsm3 inspect``: answered from the manifests (no data file read unless ``--exact``), and the
tree drawn as a self-contained HTML page that headless Chromium renders to a non-blank PNG."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pytest

import lsm3
from lsm3.cli import main
from lsm3.cli.treeview import find_chromium, key_positions


@pytest.fixture
def layered(tmp_path: Path) -> lsm3.Table:
    """Three overlapping commits (one with deletes) over two buckets."""
    t = lsm3.create_table(
        str(tmp_path / "t"), pa.schema([("id", pa.int64()), ("v", pa.string())]), "id", buckets=2
    )
    for start in (0, 500, 900):
        with t.writer() as w:
            w.upsert({"id": list(range(start, start + 1000)), "v": ["x" * 50] * 1000})
    with t.writer() as w:
        w.delete(list(range(0, 100)))
    return t


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_reads_manifests_not_data(
    layered: lsm3.Table, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "inspect", layered.uri, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (
        report["rows_live"] is None and report["rows_live_at_most"] == 3000
    )  # 3100 stored, 100 deletes
    data_bytes = report["bytes"]
    assert report["requests"]["bytes"].get("GET", 0) < data_bytes / 2, report["requests"]
    assert report["read_amplification"]["max_sorted_runs"] == 4
    assert report["write_amplification"] == 1.0
    code, out, _ = run(capsys, "inspect", layered.uri)
    assert "at most 3000 live row(s) (approximately" in out
    code, out, _ = run(capsys, "inspect", layered.uri, "--json", "--exact")
    assert json.loads(out)["rows_live"] == 1900 - 100


def test_inspect_is_exact_without_overlaps_or_deletes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), pa.schema([("id", pa.int64())]), "id")
    with t.writer() as w:
        w.upsert({"id": list(range(10))})
    _code, out, _ = run(capsys, "inspect", t.uri, "--json")
    assert json.loads(out)["rows_live"] == 10


def test_key_positions_by_value_or_rank() -> None:
    assert key_positions([(0,), (10,), (5,)]) == {(0,): 0.0, (5,): 0.5, (10,): 1.0}
    assert key_positions([("b",), ("a",), ("z",)]) == {("a",): 0.0, ("b",): 0.5, ("z",): 1.0}


def test_html_report_is_self_contained(
    layered: lsm3.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "tree.html"
    code, _out, err = run(capsys, "inspect", layered.uri, "--html", str(page))
    assert code == 0, err
    text = page.read_text()
    assert "<svg" in text and "L0 run 1" in text and "bucket 1" in text
    assert "read amplification" in text and "write amplification" in text
    without_namespace = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http" not in without_namespace and "<script" not in text  # no network, no code


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB(A) non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytes(width * channels)
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa_, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa_ <= pb and pa_ <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = bytes(line)
    return width, height, rows


@pytest.mark.skipif(
    find_chromium() is None, reason="no Chromium (apt-get install chromium; .ci/run installs it)"
)
def test_png_of_the_tree_is_not_blank(
    layered: lsm3.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "tree.png"
    code, _out, err = run(capsys, "inspect", layered.uri, "--png", str(png))
    assert code == 0, err
    width, height, rows = _png_pixels(png)
    assert width >= 900 and height >= 200
    colored = sum(
        1 for row in rows[::4] for i in range(0, len(row) - 3, 12) if len(set(row[i : i + 3])) > 1
    )
    dark = sum(
        1 for row in rows[::4] for i in range(0, len(row) - 3, 12) if max(row[i : i + 3]) < 100
    )
    assert colored > 500, "no colored boxes in the picture"
    assert dark > 50, "no text in the picture"
