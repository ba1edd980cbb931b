"""The on-disk format matches docs/FORMAT.md: bucket hash, layout and metadata fields."""

from __future__ import annotations

import itertools
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lsm3
from lsm3.format.keys import bucket_of

M = 2**64


def fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) % M
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) % M
    k ^= k >> 33
    return k


def value_hash(v: int | str | bytes) -> int:
    if isinstance(v, int):
        return fmix64(v % M)
    data = v.encode() if isinstance(v, str) else v
    f = 0xCBF29CE484222325
    for b in data:
        f = ((f ^ b) * 0x100000001B3) % M
    return fmix64(f)


def reference_bucket(key: tuple[int | str | bytes, ...], buckets: int) -> int:
    """FORMAT.md section 5, transcribed literally, one key at a time."""
    h = 0
    for v in key:
        h = fmix64((h * 31 + value_hash(v)) % M)
    return h % buckets


def test_bucket_test_vectors_from_the_spec() -> None:
    assert bucket_of([pa.array([1], pa.int64())], 16).tolist() == [2]
    assert bucket_of([pa.array(["a"])], 16).tolist() == [12]
    assert bucket_of([pa.array([7], pa.int64()), pa.array(["x"])], 16).tolist() == [6]
    assert bucket_of([pa.array([-1], pa.int64())], 16).tolist() == [13]


@settings(max_examples=60, deadline=None)
@given(
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40),
    strs=st.lists(st.text(max_size=20), min_size=40, max_size=40),
    buckets=st.integers(1, 1000),
)
def test_vectorised_bucket_hash_equals_the_spec(
    ints: list[int], strs: list[str], buckets: int
) -> None:
    strs = strs[: len(ints)]
    got = bucket_of([pa.array(ints, pa.int64()), pa.array(strs)], buckets).tolist()
    want = [reference_bucket((i, s), buckets) for i, s in zip(ints, strs, strict=True)]
    assert got == want
    got_bin = bucket_of([pa.array([s.encode() for s in strs], pa.binary())], buckets).tolist()
    assert got_bin == [reference_bucket((s.encode(),), buckets) for s in strs]


def test_bucket_hash_handles_sliced_and_chunked_strings() -> None:
    arr = pa.array(["alpha", "", "beta", "gamma", "δέλτα"])
    chunked = pa.chunked_array([arr.slice(0, 2), arr.slice(2)])
    want = [reference_bucket((s,), 7) for s in arr.to_pylist()]
    assert bucket_of([chunked], 7).tolist() == want
    assert bucket_of([arr.slice(1, 3)], 7).tolist() == want[1:4]


def test_layout_and_metadata_fields_follow_the_spec(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(str(tmp_path), "t")
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.float64())])
    t = lsm3.create_table(
        root, schema, primary_key=["region", "id"], partition_by=["region"], buckets=4
    )
    with t.writer("w") as w:
        w.upsert({"region": ["eu", "us", "eu"], "id": [1, 2, 3], "v": [1.0, 2.0, 3.0]})
        w.commit(commit_id="c-1", metadata={"offset": 3})

    with open(os.path.join(root, "schema", "schema-0.json")) as f:
        schema_doc = json.load(f)
    assert schema_doc["format_version"] == 1
    assert [fld["id"] for fld in schema_doc["fields"]] == [1, 2, 3]
    assert schema_doc["primary_key"] == ["region", "id"]

    with open(os.path.join(root, "snapshot", "snapshot-00000000000000000001.json")) as f:
        snap = json.load(f)
    assert snap["format"] == "lsm3" and snap["snapshot_id"] == 1 and snap["parent_id"] is None
    # one flush, one local sequence number: every row of its runs stores 0
    assert snap["kind"] == "APPEND" and snap["next_sequence"] == 1
    assert snap["writers"] == {
        "w": {"commit_id": "c-1", "snapshot_id": 1, "metadata": {"offset": 3}}
    }
    assert not os.path.exists(os.path.join(root, "snapshot", "LATEST"))  # every 16th only

    (manifest_path,) = snap["manifests"]
    with open(os.path.join(root, manifest_path)) as f:
        manifest = json.load(f)
    assert manifest["format"] == "lsm3-manifest"
    files = [e["file"] for e in manifest["entries"]]
    assert {tuple(f["partition"]) for f in files} == {("eu",), ("us",)}
    for entry in files:
        region = entry["partition"][0]
        bucket = reference_bucket((region, entry["min_key"][1]), 4)
        assert entry["path"].startswith(f"data/region={region}/bucket-{bucket}/")
        assert entry["checksum"].startswith("crc32:") and len(entry["checksum"]) == 14
        assert entry["size"] == os.path.getsize(os.path.join(root, entry["path"]))
        assert entry["seq_offset"] == 0
        assert entry["min_seq"] == entry["max_seq"] == 0
        stored = pq.read_table(os.path.join(root, entry["path"]), columns=["_lsm3_seq"])
        assert set(stored.column(0).to_pylist()) == {0}


def test_latest_hint_is_advisory(tmp_path: os.PathLike[str]) -> None:
    """A stale or missing hint never hides newer snapshots; a wrong one is only a lower bound."""
    root = os.path.join(str(tmp_path), "t")
    schema = pa.schema([("id", pa.int64())])
    t = lsm3.create_table(root, schema, primary_key=["id"], options={"latest_hint_interval": 2})
    for i in range(5):
        with t.writer() as w:
            w.upsert({"id": [i]})
    hint = os.path.join(root, "snapshot", "LATEST")
    with open(hint) as f:
        assert f.read().strip() == "4"
    assert lsm3.open_table(root).current_snapshot().snapshot_id == 5
    with open(hint, "w") as f:
        f.write("2")
    assert lsm3.open_table(root).current_snapshot().snapshot_id == 5
    os.unlink(hint)
    assert lsm3.open_table(root).to_arrow().num_rows == 5


def test_a_large_flush_is_one_run_of_key_disjoint_pieces(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big flushes are cut into pieces encoded in parallel; they share a run id, so the
    compactor and the write-stall count see one sorted run, and reads are unchanged."""
    import lsm3.write.flush
    from compactor.policy import sorted_runs

    monkeypatch.setattr(lsm3.write.flush, "_PIECE_ROWS", 100)
    monkeypatch.setattr(lsm3.write.flush.os, "cpu_count", lambda: 3)
    t = lsm3.create_table(os.path.join(str(tmp_path), "t"), pa.schema([("id", pa.int64())]), "id")
    with t.writer() as w:
        w.upsert({"id": list(range(1000, 0, -1))})
    with t.writer() as w:
        w.upsert({"id": [5, 2000]})
    files = t.files_of(t.current_snapshot())
    first = [f for f in files if f.rows > 2]
    assert len(first) == 3 and len({f.run_id for f in first}) == 1 and first[0].run_id
    spans = sorted((f.min_key, f.max_key) for f in first)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert [r.level for r in sorted_runs(files)] == [0, 0]
    assert t.count() == 1001 and t.get(5) == {"id": 5} and t.get(999) == {"id": 999}


def test_a_flush_gathers_in_key_order_from_many_memtable_chunks(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memtable keeps writes as separate chunks and a flush gathers each run's rows from
    all of them: every run must come out sorted by key with the newest version of each key,
    whatever chunk it sits in."""
    import lsm3.write.flush
    import lsm3.write.memtable

    monkeypatch.setattr(lsm3.write.memtable, "CHUNK_BYTES", 3000)
    monkeypatch.setattr(lsm3.write.flush, "_PIECE_ROWS", 50)
    monkeypatch.setattr(lsm3.write.flush, "_GATHER_ROW_GROUPS", 2)
    monkeypatch.setattr(lsm3.write.flush.os, "cpu_count", lambda: 4)
    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    t = lsm3.create_table(
        os.path.join(str(tmp_path), "t"), schema, "id", options={"row_group_rows": 16}
    )
    rng = random.Random(7)
    model: dict[int, str] = {}
    with t.writer() as w:
        for batch in range(30):
            ids = rng.sample(range(600), rng.randrange(1, 80))
            values = [f"{batch}-{i}-" + "x" * rng.randrange(40) for i in ids]
            w.upsert({"id": ids, "v": values})
            model.update(zip(ids, values, strict=True))
            gone = rng.sample(range(600), 5)
            w.delete(gone)
            for i in gone:
                model.pop(i, None)
    files = t.files_of(t.current_snapshot())
    assert len(files) > 3  # several pieces, each gathered from several chunks
    for f in files:
        run = pq.read_table(os.path.join(str(tmp_path), "t", f.path))
        ids = run.column("id").to_pylist()
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert (ids[0], ids[-1]) == (f.min_key[0], f.max_key[0])
    got = t.to_arrow().to_pydict()
    assert dict(zip(got["id"], got["v"], strict=True)) == model
