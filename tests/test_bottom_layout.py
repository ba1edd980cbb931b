"""Row groups by level: compaction output that is the bottom of its key range is written in
larger row groups (``bottom_row_group_rows``), everything else in ``row_group_rows``; a
table holding both layouts reads, scans and looks up the same rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import compactor
import lsm3

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


def _row_groups(t: lsm3.Table, root: Path) -> dict[int, list[int]]:
    """Per level, the row counts of the row groups of its files (but the last of each)."""
    out: dict[int, list[int]] = {}
    for f in t.files_of(t.current_snapshot()):
        md = pq.read_metadata(root / f.path)
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups - 1)]
        out.setdefault(f.level, []).extend(sizes)
    return out


@pytest.mark.parametrize("bottom", [None, 48])
def test_bottom_output_has_its_own_row_groups(tmp_path: Path, bottom: int | None) -> None:
    options = {"row_group_rows": 10, "num_sorted_run_trigger": 3}
    if bottom is not None:
        options["bottom_row_group_rows"] = bottom
    root = tmp_path / "t"
    t = lsm3.create_table(str(root), SCHEMA, "id", options=options)
    for step in range(3):
        with t.writer() as w:
            w.upsert([{"id": i, "v": f"{step}-{i}"} for i in range(step, 500, 2)])
    expected = t.to_arrow().sort_by("id")
    assert set(_row_groups(t, root)[0]) == {10}  # writer flushes
    compactor.compact(t, policy="full")
    groups = _row_groups(t, root)
    assert set(groups) != {0}
    assert {n for sizes in groups.values() for n in sizes} <= {bottom or 40}
    with t.writer() as w:  # new runs above the bottom keep the small row groups
        w.upsert([{"id": i, "v": "new"} for i in range(0, 500, 7)])
        w.delete([3, 5])
    mixed = _row_groups(t, root)
    assert set(mixed[0]) == {10} and len(mixed) == 2
    new = {r["id"]: r for r in expected.to_pylist()}
    new.update({i: {"id": i, "v": "new"} for i in range(0, 500, 7)})
    new.pop(3), new.pop(5)
    assert t.to_arrow().sort_by("id").to_pylist() == sorted(new.values(), key=lambda r: r["id"])
    assert [t.get(i) for i in range(0, 60)] == [new.get(i) for i in range(0, 60)]


def test_bottom_row_group_rows_must_be_a_positive_integer(tmp_path: Path) -> None:
    for bad in (0, -1, "many", True, 2.5):
        with pytest.raises(lsm3.InvalidInput, match="bottom_row_group_rows"):
            lsm3.create_table(
                str(tmp_path / "t"), SCHEMA, "id", options={"bottom_row_group_rows": bad}
            )


def test_compression_by_level(tmp_path: Path) -> None:
    """Writer flushes use ``level0_compression`` (lz4 by default), compaction output
    ``compression`` (zstd); either can be set per table, and unknown codecs are refused."""
    root = tmp_path / "t"
    t = lsm3.create_table(str(root), SCHEMA, "id")
    with t.writer() as w:
        w.upsert([{"id": i, "v": str(i)} for i in range(100)])

    def codecs() -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for f in t.files_of(t.current_snapshot()):
            md = pq.read_metadata(root / f.path)
            out.setdefault(f.level, set()).update(
                md.row_group(0).column(c).compression for c in range(md.num_columns)
            )
        return out

    assert codecs() == {0: {"LZ4"}}
    compactor.compact(t, policy="full")
    (level,) = codecs()
    assert level > 0 and codecs()[level] == {"ZSTD"}
    other = lsm3.create_table(
        str(tmp_path / "u"),
        SCHEMA,
        "id",
        options={"level0_compression": "none", "compression": "snappy"},
    )
    with other.writer() as w:
        w.upsert([{"id": 1, "v": "a"}])
    (f,) = other.files_of(other.current_snapshot())
    md = pq.read_metadata(tmp_path / "u" / f.path)
    assert md.row_group(0).column(0).compression == "UNCOMPRESSED"
    assert other.to_arrow().to_pylist() == [{"id": 1, "v": "a"}]
    for name in ("level0_compression", "compression"):
        with pytest.raises(lsm3.InvalidInput, match=name):
            lsm3.create_table(str(tmp_path / "bad"), SCHEMA, "id", options={name: "lzo"})


def test_a_remote_run_read_in_spans_reads_exactly_and_refuses_damage(
    s3_bucket_uri: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From S3 a whole run is read in spans of row groups fetched while others decode (each
    span ranged-read and page-CRC checked): the rows are exactly those of a whole-file
    read, several GETs are made, and a damaged data page fails the read."""
    import lsm3.read.scan
    from lsm3.read.runfile import OpenRun

    monkeypatch.setattr(lsm3.read.scan, "SPAN_BYTES", 2000)
    uri, options = s3_bucket_uri
    t = lsm3.create_table(
        uri,
        SCHEMA,
        "id",
        storage_options=options,
        options={"row_group_rows": 50, "level0_compression": "none"},  # values stay legible
    )
    with t.writer() as w:
        w.upsert([{"id": i, "v": f"value-{i}" * 3} for i in range(2000)])
    (f,) = t.files_of(t.current_snapshot())
    assert f.size > 4 * 2000
    whole = OpenRun(t.store, f, t.table_schema).read(["id", "v"])
    fresh = lsm3.open_table(uri, storage_options=options)
    assert fresh.to_arrow().equals(whole)
    assert fresh.store.stats.requests["GET"] >= f.size // 2000 // 2
    body = bytearray(t.store.get(f.path))
    at = body.index(b"value-1001")  # in a data page (no page header states it as a bound)
    body[at] ^= 0x01
    t.store.put(f.path, bytes(body))
    from tests.helpers import clear_read_caches

    clear_read_caches()
    with pytest.raises(lsm3.CorruptDataFile):
        lsm3.open_table(uri, storage_options=options).to_arrow()


def test_a_table_written_in_the_old_layout_reads_with_new_files_on_top(tmp_path: Path) -> None:
    """Files as the code before per-level layouts wrote them (zstd everywhere, compaction
    output in ``row_group_rows`` groups) under files written now: reads, scans and gets
    give the model's rows, and a full compaction rewrites everything in the new layout."""
    root = tmp_path / "t"
    old = {"level0_compression": "zstd", "bottom_row_group_rows": 10, "row_group_rows": 10}
    t = lsm3.create_table(str(root), SCHEMA, "id", options=old)
    model = {}
    for step in range(2):
        with t.writer() as w:
            rows = [{"id": i, "v": f"old{step}-{i}"} for i in range(step, 300, 3)]
            w.upsert(rows)
            model.update({r["id"]: r for r in rows})
    compactor.compact(t, policy="full")
    t.set_options({"level0_compression": "lz4", "bottom_row_group_rows": None})
    with t.writer() as w:
        rows = [{"id": i, "v": f"new-{i}"} for i in range(0, 300, 7)]
        w.upsert(rows)
        w.delete([1, 4])
    model.update({r["id"]: r for r in rows})
    model.pop(1), model.pop(4)
    expected = sorted(model.values(), key=lambda r: r["id"])
    codecs = set()
    for f in t.files_of(t.current_snapshot()):
        md = pq.read_metadata(root / f.path)
        codecs.add(md.row_group(0).column(1).compression)
    assert codecs == {"ZSTD", "LZ4"}
    assert t.to_arrow().sort_by("id").to_pylist() == expected
    assert sum(b.num_rows for b in t.to_batches()) == len(expected)
    assert [t.get(i) for i in range(300)] == [model.get(i) for i in range(300)]
    compactor.compact(t, policy="full")
    assert t.to_arrow().sort_by("id").to_pylist() == expected
    assert set(_row_groups(t, root)) != {0}
    assert {n for sizes in _row_groups(t, root).values() for n in sizes} <= {40}
