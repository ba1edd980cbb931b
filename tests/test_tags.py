"""Tags: names for snapshots that survive snapshot expiry, with their files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

import compactor
import lsm3
from compactor.maintenance import expire_snapshots, remove_orphan_files

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64())])


def rows(t: lsm3.Table, **at: object) -> list[dict]:
    return sorted(t.to_arrow(**at).to_pylist(), key=lambda r: r["id"])  # type: ignore[arg-type]


def test_tagged_snapshot_outlives_expiry_and_compaction(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, primary_key="id")
    for i in range(6):
        with t.writer() as w:
            w.upsert({"id": [i, 100], "v": [i, i]})
        if i == 2:
            assert t.create_tag("v3") == t.current_snapshot().snapshot_id
        if i == 3:
            compactor.compact(t, policy="full")
    tagged = rows(t, tag="v3")
    assert tagged == [{"id": 0, "v": 0}, {"id": 1, "v": 1}, {"id": 2, "v": 2}, {"id": 100, "v": 2}]
    expire_snapshots(t, retain_last=1, older_than=0)
    remove_orphan_files(t, older_than=dt.timedelta(0))
    fresh = lsm3.open_table(str(tmp_path / "t"))
    assert len(fresh.snapshot_ids()) == 1
    assert rows(fresh, tag="v3") == tagged
    assert fresh.get(1, tag="v3") == {"id": 1, "v": 1}
    assert fresh.tags() == {"v3": t.tags()["v3"]}
    # Untagged, its files are only orphans now, and go.
    fresh.delete_tag("v3")
    removed = remove_orphan_files(fresh, older_than=dt.timedelta(0))
    assert removed.files >= 1
    assert rows(fresh) == [{"id": i, "v": i} for i in range(6)] + [{"id": 100, "v": 5}]
    with pytest.raises(lsm3.SnapshotNotFound):
        fresh.to_arrow(tag="v3")


def test_tag_names_and_conflicts(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, primary_key="id")
    with pytest.raises(lsm3.InvalidInput, match="no snapshot"):
        t.create_tag("early")
    with t.writer() as w:
        w.upsert({"id": [1], "v": [1]})
    t.create_tag("release-1.0")
    with pytest.raises(lsm3.InvalidInput, match="already exists"):
        t.create_tag("release-1.0")
    for bad in ["", "../x", "a/b", "..", "x" * 200, "tést", " space"]:
        with pytest.raises(lsm3.InvalidInput, match="invalid tag name"):
            t.create_tag(bad)
    with pytest.raises(lsm3.SnapshotNotFound):
        t.delete_tag("nope")
    with pytest.raises(lsm3.InvalidInput, match="only one"):
        t.to_arrow(snapshot_id=1, tag="release-1.0")
