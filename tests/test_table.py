"""The public table API end to end, on a local directory and on moto S3 (``table_location``)."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from helpers import model_rows, rows_by_key, sorted_rows

import lsm3

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("n", pa.int32())])

MakeTable = Callable[..., lsm3.Table]


@pytest.fixture
def location(table_location: tuple[str, dict | None]) -> tuple[str, dict | None]:
    return table_location


@pytest.fixture
def make_table(location: tuple[str, dict | None]) -> MakeTable:
    """Create tables under the test's location (a fresh root each call)."""
    uri, options = location
    counter = itertools.count()

    def make(schema: pa.Schema = SCHEMA, primary_key: Any = ("id",), **kwargs: Any) -> lsm3.Table:
        n = next(counter)
        return lsm3.create_table(
            uri if n == 0 else f"{uri}-{n}",
            schema,
            primary_key=list(primary_key),
            storage_options=options,
            **kwargs,
        )

    return make


def reopen(t: lsm3.Table, location: tuple[str, dict | None]) -> lsm3.Table:
    return lsm3.open_table(t.uri, storage_options=location[1])


def rows(t: lsm3.Table, **kwargs: Any) -> list[dict]:
    return sorted_rows(t.to_arrow(**kwargs), t.primary_key)


def r(i: int, v: str | None = None, n: int | None = None) -> dict:
    return {"id": i, "v": v if v is not None else f"v{i}", "n": n if n is not None else i}


# --------------------------------------------------------------------------- upsert & delete


def test_upsert_accepts_every_input_form(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert(pa.table({"id": [1, 2], "v": ["a", "b"], "n": pa.array([1, 2], pa.int32())}))
        w.upsert(pa.record_batch({"id": [3], "v": ["c"], "n": pa.array([3], pa.int32())}))
        w.upsert([{"id": 4, "v": "d", "n": 4}, {"id": 5, "v": None, "n": None}])
        w.upsert({"id": [6], "v": ["f"], "n": [6]})  # int64 -> int32 cast is safe here
        # columns in another order are fine
        w.upsert(pa.table({"n": pa.array([7], pa.int32()), "v": ["g"], "id": [7]}))
    out = t.to_arrow()
    assert out.schema.names == ["id", "v", "n"]
    assert out.schema.field("n").type == pa.int32()
    assert rows(t) == [
        {"id": 1, "v": "a", "n": 1},
        {"id": 2, "v": "b", "n": 2},
        {"id": 3, "v": "c", "n": 3},
        {"id": 4, "v": "d", "n": 4},
        {"id": 5, "v": None, "n": None},
        {"id": 6, "v": "f", "n": 6},
        {"id": 7, "v": "g", "n": 7},
    ]


def test_newer_upsert_replaces_whole_row(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1), r(2), r(3)])
    with t.writer() as w:
        w.upsert([{"id": 2, "v": "new", "n": None}])
    assert rows(t) == [r(1), {"id": 2, "v": "new", "n": None}, r(3)]


def test_duplicate_keys_in_one_batch_last_wins(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1, "first"), r(2), r(1, "second"), r(1, "third")])
        w.upsert([r(2, "later batch")])
    assert rows(t) == [r(1, "third"), r(2, "later batch")]


def test_delete_forms(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(i) for i in range(10)])
    with t.writer() as w:
        w.delete([0, 1])  # a list of keys
        w.delete([{"id": 2}])  # rows with the key column
        w.delete({"id": [3]})  # a dict of lists
        w.delete(pa.table({"id": [4], "v": ["ignored"], "n": pa.array([0], pa.int32())}))
        w.delete([100, 101])  # absent keys: no effect
    assert [x["id"] for x in rows(t)] == [5, 6, 7, 8, 9]


def test_delete_and_upsert_order_within_and_across_commits(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1), r(2), r(3)])
    with t.writer() as w:
        w.delete([1])
        w.upsert([r(1, "back")])  # upsert after delete in the same commit: present
        w.upsert([r(2, "gone")])
        w.delete([2])  # delete after upsert in the same commit: absent
    assert rows(t) == [r(1, "back"), r(3)]
    with t.writer() as w:
        w.upsert([r(2, "resurrected")])
    assert rows(t) == [r(1, "back"), r(2, "resurrected"), r(3)]


def test_delete_everything_then_reinsert(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(i) for i in range(5)])
    with t.writer() as w:
        w.delete(list(range(5)))
    assert t.to_arrow().num_rows == 0
    assert t.to_arrow().schema.names == ["id", "v", "n"]
    assert t.get_many(list(range(5))) == [None] * 5
    with t.writer() as w:
        w.upsert([r(3, "again")])
    assert rows(t) == [r(3, "again")]


# --------------------------------------------------------------------------- CDC


def test_apply_cdc_debezium_ops(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.apply_cdc(
            {
                "op": ["r", "r", "c", "c"],
                "id": [1, 2, 3, 4],
                "v": ["a", "b", "c", "d"],
                "n": [1, 2, 3, 4],
            }
        )
    assert [x["id"] for x in rows(t)] == [1, 2, 3, 4]
    with t.writer() as w:
        w.apply_cdc(
            {
                "op": ["u", "d", "c", "u", "d"],
                "id": [1, 2, 5, 5, 4],
                "v": ["a2", None, "e", "e2", "d"],  # a delete may carry its before-image
                "n": [10, None, 5, 50, 4],
            }
        )
    assert rows(t) == [
        {"id": 1, "v": "a2", "n": 10},
        {"id": 3, "v": "c", "n": 3},
        {"id": 5, "v": "e2", "n": 50},
    ]


def test_cdc_deletes_are_stored_without_their_before_image(tmp_path: Path) -> None:
    """docs/FORMAT.md section 3, rule 5: a stored delete row holds its key and sequence
    field only, whatever values the CDC delete carried."""
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("ts", pa.int64())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, "id", options={"sequence_field": "ts"})
    with t.writer() as w:
        w.apply_cdc({"op": ["c", "c"], "id": [1, 2], "v": ["a", "b"], "ts": [1, 1]})
    with t.writer() as w:
        w.apply_cdc({"op": ["d", "u"], "id": [1, 2], "v": ["a", "b2"], "ts": [2, 2]})
    stored = [pq.read_table(p) for p in sorted((tmp_path / "t").rglob("*.parquet"))]
    deletes = [row for run in stored for row in run.to_pylist() if row["_lsm3_kind"] == 1]
    assert [(d["id"], d["v"], d["ts"]) for d in deletes] == [(1, None, 2)]
    assert t.to_arrow().to_pylist() == [{"id": 2, "v": "b2", "ts": 2}]


def test_apply_cdc_row_kinds_and_update_before_is_ignored(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.apply_cdc(
            pa.table(
                {
                    "id": [1, 2, 3],
                    "v": ["a", "b", "c"],
                    "n": pa.array([1, 2, 3], pa.int32()),
                    "op": ["+I", "+I", "+I"],
                }
            )
        )
    with t.writer() as w:
        w.apply_cdc(
            [
                # an update: before image (-U) then after image (+U)
                {"op": "-U", "id": 1, "v": "a", "n": 1},
                {"op": "+U", "id": 1, "v": "a2", "n": 11},
                # a -U after the +U must not undo it, nor delete the key
                {"op": "+U", "id": 2, "v": "b2", "n": 22},
                {"op": "-U", "id": 2, "v": "b", "n": 2},
                # a -U for a key that does not exist must not create it
                {"op": "-U", "id": 9, "v": "x", "n": 9},
                {"op": "-D", "id": 3, "v": "c", "n": 3},
            ]
        )
    assert rows(t) == [{"id": 1, "v": "a2", "n": 11}, {"id": 2, "v": "b2", "n": 22}]
    assert t.get(9) is None


def test_cdc_batch_of_only_update_before_commits_nothing(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1)])
    sid = t.current_snapshot().snapshot_id
    w = t.writer()
    w.apply_cdc({"op": ["-U"], "id": [1], "v": ["zzz"], "n": [0]})
    assert w.commit() is None
    assert t.refresh().snapshot_id == sid
    assert rows(t) == [r(1)]


def test_apply_cdc_custom_op_column_and_nullable_delete_images(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.apply_cdc({"__op": ["c", "c"], "id": [1, 2], "v": ["a", "b"], "n": [1, 2]}, "__op")
        w.apply_cdc({"__op": ["d"], "id": [1], "v": [None], "n": [None]}, op_column="__op")
    assert rows(t) == [{"id": 2, "v": "b", "n": 2}]


def test_cdc_mixed_with_upserts_in_one_commit_arrival_order_wins(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1, "u1")])
        w.apply_cdc({"op": ["d", "c"], "id": [1, 2], "v": [None, "c2"], "n": [None, 2]})
        w.upsert([r(2, "u2")])
        w.apply_cdc({"op": ["+I"], "id": [1], "v": ["i1"], "n": [1]})
    assert rows(t) == [r(1, "i1", 1), r(2, "u2", 2)]


# --------------------------------------------------------------------------- keys & partitions


COMPOSITE = pa.schema([("tenant", pa.int32()), ("name", pa.string()), ("score", pa.float64())])


def test_composite_primary_key(make_table: MakeTable) -> None:
    t = make_table(COMPOSITE, ("tenant", "name"))
    with t.writer() as w:
        w.upsert(
            {
                "tenant": [1, 1, 2, 2, 10],
                "name": ["a", "b", "a", "b", "a"],
                "score": [1.0, 2.0, 3.0, 4.0, 5.0],
            }
        )
    with t.writer() as w:
        w.upsert(
            [{"tenant": 1, "name": "b", "score": 20.0}, {"tenant": 2, "name": "c", "score": 6}]
        )
        w.delete([(2, "a")])
        w.delete([{"tenant": 10, "name": "a"}])
        w.delete([(2, "zz")])  # absent
    assert rows(t) == [
        {"tenant": 1, "name": "a", "score": 1.0},
        {"tenant": 1, "name": "b", "score": 20.0},
        {"tenant": 2, "name": "b", "score": 4.0},
        {"tenant": 2, "name": "c", "score": 6.0},
    ]
    assert t.get((1, "b")) == {"tenant": 1, "name": "b", "score": 20.0}
    assert t.get((1, "B")) is None
    assert t.get((2, "a")) is None  # deleted
    assert t.get_many([(2, "c"), (3, "a"), (1, "a")]) == [
        {"tenant": 2, "name": "c", "score": 6.0},
        None,
        {"tenant": 1, "name": "a", "score": 1.0},
    ]
    # a filter on the second key column alone
    got = rows(t, filter=pc.field("name") == "b")
    assert [(x["tenant"], x["name"]) for x in got] == [(1, "b"), (2, "b")]
    with pytest.raises(lsm3.InvalidInput):
        t.get(1)  # a composite key needs a tuple


def test_partitioned_bucketed_table(make_table: MakeTable) -> None:
    schema = pa.schema([("region", pa.string()), ("id", pa.int64()), ("v", pa.int64())])
    t = make_table(schema, ("region", "id"), partition_by=["region"], buckets=4)
    regions = ["eu", "us", "ap/south"]  # a value that needs escaping in a path
    model: dict[tuple, dict] = {}
    with t.writer() as w:
        batch = [{"region": rg, "id": i, "v": i} for rg in regions for i in range(60)]
        w.upsert(batch)
        model.update({(x["region"], x["id"]): x for x in batch})
    with t.writer() as w:
        upd = [{"region": "eu", "id": i, "v": -i} for i in range(0, 60, 3)]
        w.upsert(upd)
        model.update({(x["region"], x["id"]): x for x in upd})
        w.delete([("us", i) for i in range(0, 60, 2)])
        for i in range(0, 60, 2):
            model.pop(("us", i))
    assert rows_by_key(t.to_arrow(), t.primary_key) == model

    files = t.files()
    assert {f.level for f in files} == {0}
    assert {f.bucket for f in files} <= {0, 1, 2, 3}
    assert len({f.bucket for f in files}) > 1  # 60 keys per region do not all hash alike
    assert {f.partition for f in files} == {(rg,) for rg in regions}
    for f in files:
        assert f.path.startswith("data/region=")
        assert f"/bucket-{f.bucket}/" in f.path
        assert f.path.endswith(".parquet")
        assert "ap/south" not in f.path  # the partition value is escaped into one segment
        assert f.min_key[0] == f.partition[0] == f.max_key[0]
    # (partition, bucket) groups: one file per group per commit
    per_commit = [(f.partition, f.bucket, f.min_seq) for f in files]
    assert len(per_commit) == len(set(per_commit))

    # partition filters prune, and return exactly the partition
    eu = rows(t, filter=pc.field("region") == "eu")
    assert eu == [model[k] for k in sorted(model) if k[0] == "eu"]
    assert rows(t, filter=pc.field("region") == "nowhere") == []
    odd_us = rows(t, filter=(pc.field("region") == "us") & (pc.field("v") > 50))
    assert odd_us == [model[k] for k in sorted(model) if k[0] == "us" and model[k]["v"] > 50]
    keys = [("eu", 3), ("us", 2), ("us", 3), ("ap/south", 59), ("xx", 1)]
    assert t.get_many(keys) == [model.get(k) for k in keys]


# --------------------------------------------------------------------------- reading


def test_filters_key_and_non_key(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(i, "old") for i in range(20)])
    with t.writer() as w:
        w.upsert([r(i, "new") for i in range(0, 20, 2)])
        w.delete([1, 3])
    # non-key filter: the older version of 0, 2, 4... matched "old" and must not come back
    old = rows(t, filter=pc.field("v") == "old")
    assert [x["id"] for x in old] == [5, 7, 9, 11, 13, 15, 17, 19]
    new = rows(t, filter=pc.field("v") == "new")
    assert [x["id"] for x in new] == list(range(0, 20, 2))
    # key-only filters; a deleted key does not come back
    assert [x["id"] for x in rows(t, filter=pc.field("id") < 4)] == [0, 2]
    assert [x["id"] for x in rows(t, filter=pc.field("id").isin([1, 2, 3, 99]))] == [2]
    # mixed key and non-key
    mixed = rows(t, filter=(pc.field("id") >= 10) & (pc.field("v") == "old"))
    assert [x["id"] for x in mixed] == [11, 13, 15, 17, 19]
    # filter on a column that is not projected
    proj = t.to_arrow(columns=["id"], filter=pc.field("n") > 15)
    assert proj.schema.names == ["id"]
    assert sorted(proj.column("id").to_pylist()) == [16, 17, 18, 19]
    # nulls do not match comparisons
    with t.writer() as w:
        w.upsert([{"id": 50, "v": None, "n": None}])
    assert [x["id"] for x in rows(t, filter=pc.field("v").is_null())] == [50]


def test_filters_skip_files_whose_key_range_cannot_match(make_table: MakeTable) -> None:
    """Five commits of disjoint id ranges: a filter that bounds the key reads only the files
    whose range can hold a match (counted in GETs), and what it returns is unchanged."""
    t = make_table()
    for c in range(5):
        with t.writer() as w:
            w.upsert([r(i) for i in range(c * 100, c * 100 + 100)])
    with t.writer() as w:  # a run spanning every range: always read
        w.upsert([r(0, "late"), r(499, "late")])
    model = {x["id"]: x for x in rows(t)}
    t.store.stats.reset()
    rows(t)
    full_read_gets = t.store.stats.requests["GET"]  # six data files and the metadata
    cases = [
        (pc.field("id") == 250, [250]),
        ((pc.field("id") >= 120) & (pc.field("id") < 130), range(120, 130)),
        ((pc.field("id") < 5) & (pc.field("v") == "late"), [0]),
        (pc.field("id").isin([3, 420]) | (pc.field("id") == 499), [3, 420, 499]),
    ]
    for expr, ids in cases:
        t.store.stats.reset()
        got = rows(t, filter=expr)
        assert got == [model[i] for i in ids], expr
        # at most two of the five range files are read, plus the spanning run
        assert t.store.stats.requests["GET"] <= full_read_gets - 3, expr
    # a filter on a non-key column alone prunes nothing and stays exact
    assert rows(t, filter=pc.field("v") == "late") == [model[0], model[499]]


def test_sectioned_scan_fetches_each_whole_run_once(make_table: MakeTable) -> None:
    """Planning sections needs every run's footer; a run read whole brings its footer along,
    so a sectioned read costs the requests of an unsectioned one: one GET per run (on S3,
    a separate footer request per run was a round trip each)."""
    t = make_table(options={"row_group_rows": 64})
    rng = random.Random(4)
    for _ in range(4):
        with t.writer() as w:
            w.upsert([r(rng.randrange(2000), f"v{rng.random()}") for _ in range(600)])
    runs = len(t.files_of(t.current_snapshot()))
    t.store.stats.reset()
    sectioned = t.to_batches(section_rows=300).read_all()  # footers not cached yet
    sectioned_gets = t.store.stats.requests["GET"]
    t.store.stats.reset()
    whole = t.to_batches(section_rows=1 << 30).read_all()
    assert t.store.stats.requests["GET"] == sectioned_gets
    assert sectioned_gets <= runs + 3  # the runs, plus the snapshot pointer and metadata
    assert sorted_rows(sectioned, t.primary_key) == sorted_rows(whole, t.primary_key)


def test_sectioned_scan_reads_large_runs_by_ranges(
    make_table: MakeTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past WHOLE_READ_BYTES in all, the largest runs are read row group by row group with
    ranged requests (footer and page CRCs checked) instead of whole: same rows, fewer bytes
    held per section."""
    t = make_table(options={"row_group_rows": 64})
    rng = random.Random(3)
    for _ in range(4):
        with t.writer() as w:
            w.upsert([r(rng.randrange(2000), f"v{rng.random()}") for _ in range(600)])
            w.delete([rng.randrange(2000) for _ in range(50)])
    expected = rows(t)
    import lsm3.read.scan

    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 0)
    t.store.stats.reset()
    got = sorted_rows(t.to_batches(section_rows=300).read_all(), t.primary_key)
    assert got == expected
    ranged = t.store.stats.snapshot()
    # as to_arrow reads: runs decoded in parallel, the next section while one merges
    ahead = t._batches(None, None, None, None, 300, None, read_ahead=True).read_all()
    assert sorted_rows(ahead, t.primary_key) == expected
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 1 << 40)
    t.store.stats.reset()
    assert sorted_rows(t.to_batches(section_rows=300).read_all(), t.primary_key) == expected
    whole = t.store.stats.snapshot()
    assert ranged["requests"]["GET"] > whole["requests"]["GET"]  # one GET per section range
    # a damaged page of a run read by ranges is refused, not decoded into wrong rows
    import pyarrow.parquet as pq

    f = max(t.files_of(t.current_snapshot()), key=lambda f: f.size)
    original = t.store.get(f.path)
    chunk = pq.ParquetFile(pa.BufferReader(original)).metadata.row_group(1).column(1)
    at = chunk.data_page_offset + chunk.total_compressed_size - 3  # inside the page body
    t.store.put(f.path, original[:at] + bytes([original[at] ^ 0xFF]) + original[at + 1 :])
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 0)
    with pytest.raises(lsm3.CorruptDataFile):
        t.to_batches(section_rows=300).read_all()
    with pytest.raises(lsm3.CorruptDataFile):  # raised in a decoding thread, reported here
        t._batches(None, None, None, None, 300, None, read_ahead=True).read_all()
    t.store.put(f.path, original)


def test_the_largest_runs_are_read_by_ranges_until_the_rest_fit_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lsm3.read.scan

    files = [
        SimpleNamespace(path=name, size=size) for name, size in [("a", 5), ("b", 40), ("c", 30)]
    ]
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 75)
    assert lsm3.read.scan.ranged_runs(files) == set()  # type: ignore[arg-type]
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 40)
    assert lsm3.read.scan.ranged_runs(files) == {"b"}  # type: ignore[arg-type]
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 4)
    assert lsm3.read.scan.ranged_runs(files) == {"a", "b", "c"}  # type: ignore[arg-type]


def test_non_key_filter_is_applied_after_merge_on_overlapping_runs(make_table: MakeTable) -> None:
    """The older version matches the predicate and lives in a run that overlaps the newer."""
    t = make_table(options={"row_group_rows": 100})
    with t.writer() as w:
        w.upsert([r(i, n=1) for i in range(500)])
    with t.writer() as w:
        w.upsert([r(i, n=2) for i in range(0, 500, 5)])
        w.delete(list(range(1, 500, 5)))
    batches = t.to_batches(filter=pc.field("n") == 1, section_rows=150)
    got = sorted(row["id"] for b in batches for row in b.to_pylist())
    assert got == [i for i in range(500) if i % 5 not in (0, 1)]


def test_columns_projection(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1), r(2)])
    out = t.to_arrow(columns=["n", "id"])
    assert out.schema.names == ["n", "id"]
    assert sorted(out.to_pylist(), key=lambda x: x["id"]) == [
        {"n": 1, "id": 1},
        {"n": 2, "id": 2},
    ]
    only_v = t.to_arrow(columns=["v"])
    assert only_v.schema.names == ["v"]
    assert sorted(only_v.column("v").to_pylist()) == ["v1", "v2"]
    # no columns: still one (empty) row per live key, as pyarrow.dataset does
    assert t.to_arrow(columns=[]).num_rows == 2
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(columns=["nope"])
    with pytest.raises(lsm3.InvalidInput):
        t.to_arrow(filter=pc.field("nope") == 1)


def test_to_batches_streams_sections_equal_to_arrow(make_table: MakeTable) -> None:
    t = make_table(options={"row_group_rows": 500})
    rng = random.Random(7)
    model: dict[int, dict] = {}
    n = 20_000
    with t.writer() as w:
        batch = [r(i, f"base{i}", 0) for i in range(n)]
        w.upsert(batch)
        model.update({x["id"]: x for x in batch})
    for c in range(1, 5):
        with t.writer() as w:
            ids = rng.sample(range(n + 2000), 3000)
            batch = [r(i, f"c{c}-{i}", c) for i in ids[:2500]]
            w.upsert(batch)
            model.update({x["id"]: x for x in batch})
            w.delete(ids[2500:])
            for i in ids[2500:]:
                model.pop(i, None)
    assert len(t.files()) == 5
    reader = t.to_batches(section_rows=1000)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema.names == ["id", "v", "n"]
    batches = list(reader)
    assert len(batches) > 5  # streamed in pieces, not one table
    streamed = pa.Table.from_batches(batches, schema=reader.schema)
    whole = t.to_arrow()
    assert streamed.num_rows == whole.num_rows == len(model)
    assert rows_by_key(streamed, ["id"]) == model
    assert sorted_rows(streamed, ["id"]) == sorted_rows(whole, ["id"])
    # key order within the (single) bucket is preserved across sections
    ids = streamed.column("id").to_pylist()
    assert ids == sorted(ids)
    # with a filter and a projection too
    flt = (pc.field("n") >= 3) & (pc.field("id") < 15_000)
    small = t.to_batches(columns=["id", "v"], filter=flt, section_rows=1000).read_all()
    expected = sorted(
        ({"id": k, "v": x["v"]} for k, x in model.items() if x["n"] >= 3 and k < 15_000),
        key=lambda x: x["id"],
    )
    assert sorted_rows(small, ["id"]) == expected


def test_get_and_get_many(make_table: MakeTable) -> None:
    t = make_table(options={"row_group_rows": 50})
    with t.writer() as w:
        w.upsert([r(i) for i in range(0, 1000, 2)])
    with t.writer() as w:
        w.upsert([r(10, "ten")])
        w.delete([20, 22])
    assert t.get(10) == r(10, "ten")
    assert t.get(12) == r(12)
    assert t.get(11) is None  # never written
    assert t.get(20) is None  # deleted
    assert t.get(-5) is None
    assert t.get(10**12) is None
    keys = [998, 11, 10, 20, 0, 10, 501]
    assert t.get_many(keys) == [r(998), None, r(10, "ten"), None, r(0), r(10, "ten"), None]
    assert t.get_many([]) == []
    assert t.get_many(range(100, 110)) == [r(i) if i % 2 == 0 else None for i in range(100, 110)]
    first = t.snapshots()[0].snapshot_id
    assert t.get(10, snapshot_id=first) == r(10)
    assert t.get(20, snapshot_id=first) == r(20)


def test_lookup_caches_are_bounded_and_answer_hot_keys_without_requests(
    make_table: MakeTable,
) -> None:
    t = make_table(options={"row_group_rows": 100})
    with t.writer() as w:
        w.upsert([r(i) for i in range(1000)])
    with t.writer() as w:
        w.upsert([r(i, "new") for i in range(0, 1000, 3)])
    model = {x["id"]: x for x in rows(t)}
    from lsm3.read.runindex import ROW_BLOCKS

    try:
        limits = lsm3.set_cache_limits(row_block_bytes=64 * 1024)
        assert limits["row_block_bytes"] == 64 * 1024
        assert t.get(7) == model[7] and t.get(9) == model[9]  # 9 is in the newer run
        t.store.stats.reset()
        for _ in range(3):  # a hot key: footers, key blocks and its row group are cached
            assert t.get(7) == model[7] and t.get(9) == model[9]
        assert t.store.stats.total_requests() == 0
        for i in range(0, 1000, 7):  # many row groups: the cache stays within its bound
            assert t.get(i) == model[i]
        assert 0 < ROW_BLOCKS.nbytes <= 64 * 1024
        lsm3.set_cache_limits(row_block_bytes=0)  # off: every hit reads its row group
        assert ROW_BLOCKS.nbytes == 0
        t.store.stats.reset()
        assert t.get(7) == model[7]
        assert t.store.stats.requests["GET"] >= 1
        with pytest.raises(lsm3.InvalidInput, match="row_block_bytes"):
            lsm3.set_cache_limits(row_block_bytes=-1)
    finally:
        lsm3.set_cache_limits(row_block_bytes=128 * 1024 * 1024)


def test_a_run_probed_often_has_its_whole_key_column_cached(make_table: MakeTable) -> None:
    """After a few key-block misses a run's key blocks are loaded in one whole-run GET: then
    a key the run lacks costs no request and one it holds a single ranged GET."""
    from lsm3.read.lookup import KEY_INDEX_AFTER_MISSES
    from lsm3.read.runindex import KEY_BLOCKS, ROW_BLOCKS

    t = make_table(options={"row_group_rows": 20})
    with t.writer() as w:
        w.upsert([r(i) for i in range(0, 2000, 2)])  # one run, 50 row groups
    (run,) = t.files_of(t.current_snapshot())
    KEY_BLOCKS.clear()
    ROW_BLOCKS.clear()
    t.files()
    for i in range(KEY_INDEX_AFTER_MISSES - 1):  # absent keys in distinct row groups
        assert t.get(40 * i + 1) is None
    t.store.stats.reset()
    assert t.get(40 * KEY_INDEX_AFTER_MISSES + 1) is None  # the miss that loads the index
    assert t.store.stats.requests["GET"] == 1
    assert t.store.stats.bytes["GET"] == run.size
    t.store.stats.reset()
    for k in range(1, 2000, 38):  # absent keys all over the run: answered from memory
        assert t.get(k) is None
    assert t.store.stats.total_requests() == 0
    assert t.get(1500) == r(1500) and t.get(1502) == r(1502)  # one row group: one GET
    assert t.store.stats.requests["GET"] == 1
    try:  # a cache too small for the run's keys: blocks stay lazy, no whole-run GETs
        lsm3.set_cache_limits(key_block_bytes=1024)
        KEY_BLOCKS.clear()
        t.store.stats.reset()
        for i in range(3 * KEY_INDEX_AFTER_MISSES):
            assert t.get(40 * i + 1) is None
        assert t.store.stats.bytes["GET"] < run.size
    finally:
        lsm3.set_cache_limits(key_block_bytes=256 * 1024 * 1024)


def test_a_deleted_key_is_answered_from_its_key_block(make_table: MakeTable) -> None:
    """A lookup that lands on a delete reads the key block (keys and row kinds) and no row
    group; a key the same run does not delete still reads its row group."""
    from lsm3.read.runindex import KEY_BLOCKS, ROW_BLOCKS

    t = make_table(options={"row_group_rows": 20})
    with t.writer() as w:
        w.upsert([r(i) for i in range(0, 400, 2)])
    with t.writer() as w:
        w.delete(list(range(0, 400, 4)))
        w.upsert([r(2, "two")])
    assert t.get(1) is None  # loads both runs' footers
    KEY_BLOCKS.clear()
    ROW_BLOCKS.clear()
    t.store.stats.reset()
    assert t.get(8) is None and t.get(100) is None  # deleted, in two row groups
    assert t.store.stats.requests["GET"] == 2  # one key block each, no row group
    t.store.stats.reset()
    assert t.get(8) is None and t.get_many([100, 104]) == [None, None]
    assert t.store.stats.total_requests() == 0
    assert t.get(2) == r(2, "two")  # in the newest run: its row group is read
    assert t.get(6) == r(6)  # only in the older run
    assert t.get_many([4, 6, 2]) == [None, r(6), r(2, "two")]


def test_deletes_kept_by_compaction_hide_older_versions_from_lookups(
    make_table: MakeTable,
) -> None:
    """A compaction output that keeps deletes (older data lies below it) spans several
    sequence numbers, so its key blocks carry them: a lookup of a key it deletes must stop
    there, not find the older version underneath."""
    import compactor
    from lsm3.read.runindex import KEY_BLOCKS, ROW_BLOCKS

    t = make_table(options={"num_sorted_run_trigger": 3, "row_group_rows": 50})
    with t.writer() as w:
        w.upsert([r(i) for i in range(3000)])
    compactor.compact(t, policy="full")  # the old versions, at the bottom level
    with t.writer() as w:
        w.delete(list(range(0, 100, 10)))
    with t.writer() as w:
        w.upsert([r(i, "new") for i in range(1, 100, 10)])
    compactor.compact(t)
    files = t.files_of(t.current_snapshot())
    kept = [f for f in files if f.deletes]
    assert len(files) == 2 and len(kept) == 1 and kept[0].min_seq < kept[0].max_seq
    KEY_BLOCKS.clear()
    ROW_BLOCKS.clear()
    for _ in range(2):  # key blocks loaded, then cached
        assert t.get_many([0, 10, 1, 2]) == [None, None, r(1, "new"), r(2)]
        assert [t.get(k) for k in (20, 11, 12)] == [None, r(11, "new"), r(12)]


def test_get_on_empty_table(make_table: MakeTable) -> None:
    t = make_table()
    assert t.current_snapshot() is None
    assert t.get(1) is None
    assert t.get_many([1, 2]) == [None, None]
    assert t.to_arrow().num_rows == 0
    assert t.to_arrow().schema.names == ["id", "v", "n"]
    assert t.snapshots() == []
    assert t.files() == []


def test_time_travel_by_snapshot_id_and_as_of(make_table: MakeTable) -> None:
    t = make_table()
    states: list[tuple[int, list[dict]]] = []
    model: dict[int, dict] = {}
    for c in range(4):
        with t.writer() as w:
            batch = [r(i, f"c{c}") for i in range(c, c + 3)]
            w.upsert(batch)
            model.update({x["id"]: x for x in batch})
            w.delete([c - 1])
            model.pop(c - 1, None)
        states.append((t.current_snapshot().snapshot_id, model_rows(model)))
        time.sleep(0.002)  # distinct commit timestamps for as_of
    for sid, expected in states:
        assert rows(t, snapshot_id=sid) == expected
        assert t.get_many(list(range(8)), snapshot_id=sid) == [
            next((x for x in expected if x["id"] == i), None) for i in range(8)
        ]
    snaps = t.snapshots()
    by_id = dict(states)
    for s in snaps:
        # as_of a snapshot's own timestamp: the newest snapshot committed at or before it
        newest = max(x.snapshot_id for x in snaps if x.timestamp_ms <= s.timestamp_ms)
        assert rows(t, as_of=s.timestamp_ms) == by_id[newest]
        as_dt = dt.datetime.fromtimestamp(s.timestamp_ms / 1000, tz=dt.timezone.utc)
        assert rows(t, as_of=as_dt) == by_id[newest]
    assert rows(t, as_of=snaps[-1].timestamp_ms + 10_000) == states[-1][1]
    with pytest.raises(lsm3.SnapshotNotFound):
        t.to_arrow(as_of=snaps[0].timestamp_ms - 1)
    with pytest.raises(lsm3.SnapshotNotFound):
        t.to_arrow(snapshot_id=snaps[-1].snapshot_id + 1)
    with pytest.raises(lsm3.SnapshotNotFound):
        t.get(1, snapshot_id=999)
    assert t.to_arrow(snapshot_id=0).num_rows == 0  # before the first commit
    # time travel does not move the table
    assert t.current_snapshot().snapshot_id == states[-1][0]
    assert rows(t) == states[-1][1]


def test_reopen_sees_the_same_table(make_table: MakeTable, location: tuple) -> None:
    t = make_table(COMPOSITE, ("tenant", "name"), buckets=2, options={"row_group_rows": 1000})
    with t.writer("w1") as w:
        w.upsert({"tenant": [1, 2, 3], "name": ["x", "y", "z"], "score": [0.5, 1.5, 2.5]})
    with t.writer("w1") as w:
        w.delete([(2, "y")])
        w.commit(commit_id="c2", metadata={"offset": 42})
    t2 = reopen(t, location)
    assert t2.schema == t.schema
    assert t2.primary_key == ("tenant", "name")
    assert t2.current_snapshot() == t.current_snapshot()
    assert [s.snapshot_id for s in t2.snapshots()] == [1, 2]
    assert t2.to_arrow().sort_by("tenant") == t.to_arrow().sort_by("tenant")
    assert t2.files() == t.files()
    assert t2.get((1, "x")) == {"tenant": 1, "name": "x", "score": 0.5}
    assert t2.get((2, "y")) is None
    assert t2.last_commit("w1") == lsm3.CommitRecord("w1", "c2", 2, {"offset": 42})
    assert rows(t2, snapshot_id=1) == rows(t, snapshot_id=1)


def test_table_pins_its_snapshot_until_refresh(make_table: MakeTable, location: tuple) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1)])
    other = reopen(t, location)
    with other.writer() as w:
        w.upsert([r(2)])
    assert t.current_snapshot().snapshot_id == 1
    assert rows(t) == [r(1)]
    assert t.refresh().snapshot_id == 2
    assert rows(t) == [r(1), r(2)]
    # a writer of a stale table object still commits on top of the newest snapshot
    stale = lsm3.open_table(t.uri, storage_options=location[1])
    with other.writer() as w:
        w.upsert([r(3)])
    with stale.writer() as w:
        w.upsert([r(4)])
    assert stale.current_snapshot().snapshot_id == 4
    assert rows(stale) == [r(1), r(2), r(3), r(4)]


# --------------------------------------------------------------------------- metadata


def test_snapshots_order_parents_kinds_and_summary(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer("alpha") as w:
        w.upsert([r(i) for i in range(10)])
        s1 = w.commit(commit_id="a-1", metadata={"lsn": 100})
    with t.writer() as w:
        w.upsert([r(1, "x")])
        w.delete([2, 3])
    with t.writer("alpha") as w:
        w.upsert([r(20)])
        s3 = w.commit(commit_id="a-2")
    snaps = t.snapshots()
    assert [s.snapshot_id for s in snaps] == [1, 2, 3]
    assert [s.parent_id for s in snaps] == [None, 1, 2]
    assert {s.kind for s in snaps} == {"APPEND"}
    assert s1 is not None and s1.snapshot_id == 1 and s3 is not None and s3.snapshot_id == 3
    assert snaps[0].writer_id == "alpha" and snaps[0].commit_id == "a-1"
    assert snaps[0].metadata == {"lsn": 100}
    assert snaps[1].writer_id is None and snaps[1].commit_id  # anonymous gets a fresh id
    assert snaps[2].commit_id == "a-2"
    assert len({s.commit_id for s in snaps}) == 3
    ts = [s.timestamp_ms for s in snaps]
    assert ts == sorted(ts)
    assert snaps[0].summary["added_rows"] == 10
    assert snaps[0].summary["added_deletes"] == 0
    assert snaps[1].summary["added_rows"] == 3
    assert snaps[1].summary["added_deletes"] == 2
    assert snaps[1].summary["added_files"] == 1
    assert [s.summary["total_files"] for s in snaps] == [1, 2, 3]
    assert snaps[2].summary["total_rows"] == 14
    assert t.current_snapshot() == snaps[-1]


def test_files_levels_and_key_ranges(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(i) for i in (5, 3, 9, 7)])
    with t.writer() as w:
        w.upsert([r(100), r(-4)])
        w.delete([7])
    first = t.files(snapshot_id=1)
    assert len(first) == 1
    f1 = first[0]
    assert (f1.min_key, f1.max_key, f1.rows, f1.deletes, f1.level) == ((3,), (9,), 4, 0, 0)
    assert f1.partition == () and f1.bucket == 0
    assert f1.path.startswith("data/bucket-0/") and f1.path.endswith(".parquet")
    assert f1.bytes > 0
    files = t.files()
    assert len(files) == 2
    f2 = next(f for f in files if f.path != f1.path)
    assert (f2.min_key, f2.max_key, f2.rows, f2.deletes) == ((-4,), (100,), 3, 1)
    # sequence numbers of the later commit are all above the earlier one's
    assert f2.min_seq > f1.max_seq
    assert t.files(snapshot_id=0) == []


def test_file_layout_under_the_root(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, ["id"], options={"latest_hint_interval": 1})
    with t.writer() as w:
        w.upsert([r(1)])
    root = Path(uri)
    assert (root / "schema" / "schema-0.json").is_file()
    assert (root / "snapshot" / "snapshot-00000000000000000001.json").is_file()
    assert (root / "snapshot" / "LATEST").read_text().strip() == "1"
    assert len(list((root / "manifest").glob("manifest-*.json"))) == 1
    assert len(list((root / "data" / "bucket-0").glob("*.parquet"))) == 1


@pytest.mark.parametrize("hint", [b"1", b"99", b"garbage", b""])
def test_latest_hint_is_only_advisory(tmp_path: Path, hint: bytes) -> None:
    """A stale, wrong or unreadable LATEST never hides or invents snapshots."""
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, ["id"], options={"latest_hint_interval": 1})
    for i in range(3):
        with t.writer() as w:
            w.upsert([r(i)])
    (Path(uri) / "snapshot" / "LATEST").write_bytes(hint)
    t2 = lsm3.open_table(uri)
    assert t2.current_snapshot().snapshot_id == 3
    assert rows(t2) == [r(0), r(1), r(2)]
    with t2.writer() as w:
        w.upsert([r(3)])
    assert [s.snapshot_id for s in lsm3.open_table(uri).snapshots()] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- options


def test_sequence_field_orders_versions(make_table: MakeTable) -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("lsn", pa.int64())])
    t = make_table(schema, options={"sequence_field": "lsn"})

    def state() -> dict:
        return {x["id"]: (x["v"], x["lsn"]) for x in t.to_arrow().to_pylist()}

    with t.writer() as w:
        w.upsert([{"id": 1, "v": "a", "lsn": 10}, {"id": 2, "v": "b", "lsn": 10}])
    with t.writer() as w:
        w.upsert([{"id": 1, "v": "stale", "lsn": 5}])  # older, arrives later: ignored
        w.upsert([{"id": 2, "v": "tie", "lsn": 10}])  # same lsn, later commit: wins
    assert state() == {1: ("a", 10), 2: ("tie", 10)}
    assert t.get(1) == {"id": 1, "v": "a", "lsn": 10}
    with t.writer() as w:
        w.delete([{"id": 1, "lsn": 3}])  # an old delete does not remove a newer row
    assert state() == {1: ("a", 10), 2: ("tie", 10)}
    with t.writer() as w:
        w.delete([{"id": 1, "lsn": 11}])
    assert state() == {2: ("tie", 10)}
    with t.writer() as w:
        w.upsert([{"id": 1, "v": "before-delete", "lsn": 9}])  # older than the tombstone
    assert state() == {2: ("tie", 10)}
    assert t.get(1) is None
    # out of order inside one batch and across batches of one commit: highest lsn wins
    with t.writer() as w:
        w.upsert(
            [
                {"id": 3, "v": "x30", "lsn": 30},
                {"id": 3, "v": "x20", "lsn": 20},
                {"id": 4, "v": "y1", "lsn": 1},
            ]
        )
        w.upsert([{"id": 3, "v": "x25", "lsn": 25}, {"id": 4, "v": "y2", "lsn": 2}])
        w.apply_cdc({"op": ["u", "d"], "id": [4, 3], "v": ["y0", None], "lsn": [0, 29]})
    assert state() == {2: ("tie", 10), 3: ("x30", 30), 4: ("y2", 2)}
    assert t.get_many([3, 4, 1]) == [
        {"id": 3, "v": "x30", "lsn": 30},
        {"id": 4, "v": "y2", "lsn": 2},
        None,
    ]
    with t.writer() as w:
        w.apply_cdc({"op": ["-D", "+U"], "id": [3, 2], "v": [None, "t2"], "lsn": [31, 11]})
    assert state() == {2: ("t2", 11), 4: ("y2", 2)}
    # deletes must carry the sequence field
    with pytest.raises(lsm3.SchemaMismatch) as info:
        t.writer().delete([4])
    assert "lsn" in str(info.value)


def test_small_memtable_flushes_several_runs_per_commit(make_table: MakeTable) -> None:
    t = make_table(options={"memtable_bytes": 4096})
    model: dict[int, dict] = {}
    rng = random.Random(3)
    with t.writer() as w:
        for b in range(12):
            ids = [rng.randrange(400) for _ in range(150)]
            batch = [r(i, f"b{b}-{j}") for j, i in enumerate(ids)]
            w.upsert(batch)
            model.update({x["id"]: x for x in batch})
            dels = [rng.randrange(400) for _ in range(20)]
            w.delete(dels)
            for i in dels:
                model.pop(i, None)
    snap = t.current_snapshot()
    assert snap.summary["added_files"] > 3
    assert len(t.files()) == snap.summary["added_files"]
    assert rows_by_key(t.to_arrow(), ["id"]) == model
    assert rows_by_key(t.to_batches(section_rows=100).read_all(), ["id"]) == model
    keys = list(range(0, 400, 7))
    assert t.get_many(keys) == [model.get(k) for k in keys]


def test_last_commit(make_table: MakeTable, location: tuple) -> None:
    t = make_table()
    assert t.last_commit("w1") is None
    with t.writer("w1") as w:
        w.upsert([r(1)])
        s = w.commit(commit_id="offset-10", metadata={"kafka_offset": 10})
    with t.writer("w2") as w:
        w.upsert([r(2)])
        w.commit(commit_id="x")
    with t.writer() as w:
        w.upsert([r(3)])
    assert t.last_commit("w1") == lsm3.CommitRecord(
        "w1", "offset-10", s.snapshot_id, {"kafka_offset": 10}
    )
    assert t.last_commit("w2") == lsm3.CommitRecord("w2", "x", 2, {})
    assert t.last_commit("nobody") is None
    # another process committing for w1 is visible (last_commit refreshes)
    other = reopen(t, location)
    with other.writer("w1") as w:
        w.upsert([r(4)])
        w.commit(commit_id="offset-20", metadata={"kafka_offset": 20})
    assert t.last_commit("w1") == lsm3.CommitRecord("w1", "offset-20", 4, {"kafka_offset": 20})


def test_commit_retried_with_same_commit_id_lands_once(
    make_table: MakeTable, location: tuple
) -> None:
    t = make_table()
    stale = reopen(t, location)  # opened before the first attempt landed
    with t.writer("ingest") as w:
        w.upsert([r(1, "first attempt")])
        s1 = w.commit(commit_id="batch-7")
    assert s1 is not None
    # another writer commits in between
    with t.writer("other") as w:
        w.upsert([r(2)])
    n_snapshots = len(t.snapshots())
    # the retry (from the same or a stale table object) finds its commit and adds nothing
    for table in (t, stale, reopen(t, location)):
        w = table.writer("ingest")
        w.upsert([r(1, "retry must not land")])
        again = w.commit(commit_id="batch-7")
        assert again is not None and again.snapshot_id == s1.snapshot_id
        assert len(t.snapshots()) == n_snapshots
    t.refresh()
    assert rows(t) == [r(1, "first attempt"), r(2)]
    # the next commit id does land
    with t.writer("ingest") as w:
        w.upsert([r(1, "next")])
        s3 = w.commit(commit_id="batch-8")
    assert s3.snapshot_id == n_snapshots + 1
    assert t.get(1) == r(1, "next")


def test_explicit_commit_id_needs_a_named_writer(make_table: MakeTable) -> None:
    """Exactly-once is keyed by (writer_id, commit_id): an anonymous writer cannot promise it."""
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1, "first")])
    w = t.writer()
    w.upsert([r(1, "second")])
    with pytest.raises(lsm3.InvalidInput) as info:
        w.commit(commit_id="once")
    assert "writer_id" in str(info.value)
    w.abort()
    assert len(t.snapshots()) == 1
    assert t.get(1) == r(1, "first")


def test_empty_batches_are_a_noop(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1)])
    before = (t.current_snapshot().snapshot_id, rows(t))
    with t.writer() as w:
        w.upsert([])
        w.upsert({"id": [], "v": [], "n": []})
        w.upsert(SCHEMA.empty_table())
        w.upsert(pa.RecordBatch.from_pylist([], schema=SCHEMA))
        w.delete([])
        w.delete({"id": []})
        w.apply_cdc({"op": [], "id": [], "v": [], "n": []})
        assert w.pending_rows == 0
        assert w.commit() is None
    with t.writer():
        pass
    assert t.refresh().snapshot_id == before[0]
    assert len(t.snapshots()) == 1
    assert (t.current_snapshot().snapshot_id, rows(t)) == before


def test_commit_with_metadata_only_records_progress(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer("src") as w:
        w.upsert([r(1)])
    w = t.writer("src")
    snap = w.commit(commit_id="heartbeat-1", metadata={"offset": 99})
    assert snap is not None and snap.snapshot_id == 2
    assert rows(t) == [r(1)]
    assert t.last_commit("src") == lsm3.CommitRecord("src", "heartbeat-1", 2, {"offset": 99})


def test_exception_in_writer_block_commits_nothing(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(1)])
    with pytest.raises(RuntimeError), t.writer() as w:
        w.upsert([r(2)])
        w.flush()  # even runs already uploaded stay invisible
        raise RuntimeError("boom")
    assert rows(t) == [r(1)]
    assert len(t.snapshots()) == 1
    with pytest.raises(lsm3.InvalidInput):
        w.upsert([r(3)])  # closed


def test_several_commits_from_one_writer(make_table: MakeTable) -> None:
    t = make_table()
    w = t.writer("loop")
    for i in range(3):
        w.upsert([r(i)])
        w.commit(commit_id=f"c{i}")
    w.close()
    assert rows(t) == [r(0), r(1), r(2)]
    assert [s.commit_id for s in t.snapshots()] == ["c0", "c1", "c2"]


def test_pyarrow_dataset(make_table: MakeTable) -> None:
    t = make_table()
    with t.writer() as w:
        w.upsert([r(i, "old") for i in range(10)])
    with t.writer() as w:
        w.upsert([r(i, "new") for i in range(5)])
        w.delete([9])
    dataset = t.to_pyarrow_dataset()
    assert isinstance(dataset, ds.Dataset)
    assert dataset.count_rows() == 9
    got = dataset.to_table(filter=pc.field("v") == "old", columns=["id"])
    assert got.schema.names == ["id"]
    assert sorted(got.column("id").to_pylist()) == [5, 6, 7, 8]
    got = dataset.to_table(filter=pc.field("id") >= 3, columns=["id", "v"])
    assert sorted_rows(got, ["id"]) == [
        {"id": i, "v": "new" if i < 5 else "old"} for i in range(3, 9)
    ]
    old = t.to_pyarrow_dataset(snapshot_id=1)
    assert old.to_table(filter=pc.field("v") == "old").num_rows == 10


KEY_TYPES = [
    pytest.param(pa.int8(), [-128, -1, 0, 1, 127], id="int8"),
    pytest.param(pa.uint32(), [0, 1, 2**31, 2**32 - 1], id="uint32"),
    pytest.param(pa.uint64(), [0, 1, 2**63 - 1, 2**63, 2**64 - 1], id="uint64"),
    pytest.param(
        pa.date32(), [dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(2024, 2, 29)], id="date32"
    ),
    pytest.param(
        pa.timestamp("us", tz="UTC"),
        [
            dt.datetime(1960, 1, 1, tzinfo=dt.timezone.utc),
            dt.datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc),
        ],
        id="timestamp",
    ),
    pytest.param(pa.binary(), [b"", b"\x00", b"\xff\xfe", b"abc"], id="binary"),
    pytest.param(pa.string(), ["", "a", "é", "\U0001f600", "Z"], id="string"),
    pytest.param(pa.large_string(), ["", "a", "zz"], id="large_string"),
]


@pytest.mark.parametrize("buckets", [1, 3])
@pytest.mark.parametrize(("key_type", "values"), KEY_TYPES)
def test_key_types_roundtrip(
    tmp_path: Path, key_type: pa.DataType, values: list, buckets: int
) -> None:
    schema = pa.schema([("k", key_type), ("v", pa.int64())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["k"], buckets=buckets)
    with t.writer() as w:
        w.upsert(pa.table({"k": pa.array(values, key_type), "v": list(range(len(values)))}))
    with t.writer() as w:
        w.upsert(pa.table({"k": pa.array(values[:1], key_type), "v": [100]}))
        w.delete([values[-1]])
    expected = [100, *range(1, len(values) - 1), None]
    assert [g and g["v"] for g in t.get_many(values)] == expected
    out = t.to_arrow()
    assert out.schema.field("k").type == key_type
    assert sorted(out.column("v").to_pylist()) == sorted(v for v in expected if v is not None)


def test_string_keys_longer_than_4_kib(tmp_path: Path) -> None:
    schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["k"])
    keys = ["a" * 5000 + str(i) for i in range(3)] + ["b"]
    with t.writer() as w:
        w.upsert({"k": keys, "v": [0, 1, 2, 3]})
    with t.writer() as w:
        w.upsert({"k": keys[:1], "v": [10]})
        w.delete([keys[2]])
    assert sorted(t.to_arrow().column("v").to_pylist()) == [1, 3, 10]
    assert [x and x["v"] for x in t.get_many(keys)] == [10, 1, None, 3]
    streamed = t.to_batches(section_rows=1).read_all()
    assert sorted(streamed.column("v").to_pylist()) == [1, 3, 10]


@pytest.mark.parametrize(
    "part_type",
    [
        pa.date32(),
        pa.timestamp("ms"),
        pa.int16(),
        pa.string(),
    ],
    ids=str,
)
def test_filter_on_partition_column_of_each_key_type(
    tmp_path: Path, part_type: pa.DataType
) -> None:
    values = {
        "date32[day]": [dt.date(2024, 1, 1), dt.date(2024, 1, 2)],
        "timestamp[ms]": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 3)],
        "int16": [-1, 7],
        "string": ["a", "b"],
    }[str(part_type)]
    schema = pa.schema([("p", part_type), ("id", pa.int64()), ("v", pa.int64())])
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["p", "id"], partition_by=["p"], buckets=2)
    with t.writer() as w:
        w.upsert(
            pa.table(
                {
                    "p": pa.array([values[0]] * 3 + [values[1]] * 3, part_type),
                    "id": [1, 2, 3, 1, 2, 3],
                    "v": [1, 2, 3, 4, 5, 6],
                }
            )
        )
    second = pa.scalar(values[1], part_type)
    got = t.to_arrow(filter=pc.field("p") == second)
    assert sorted(got.column("v").to_pylist()) == [4, 5, 6]
    got = t.to_arrow(filter=(pc.field("p") == second) & (pc.field("id") > 1))
    assert sorted(got.column("v").to_pylist()) == [5, 6]
    assert t.get((values[0], 2)) == {"p": values[0], "id": 2, "v": 2}


class _FlakyNetwork:
    """Wraps a table's store: the snapshot PUT lands but its response is lost, optionally
    followed by an outage during which every GET and conditional PUT fails."""

    def __init__(self, table: lsm3.Table, outage: bool) -> None:
        self.store = table.store
        self.outage = outage
        self.down = False
        self.real_put = self.store.put_if_absent
        self.real_get = self.store.get
        self.store.put_if_absent = self.put_if_absent  # type: ignore[method-assign]
        self.store.get = self.get  # type: ignore[method-assign]

    def put_if_absent(self, key: str, data: bytes) -> None:
        if self.down:
            raise lsm3.StorageError("network is down")
        self.real_put(key, data)
        if key.startswith("snapshot/snapshot-"):
            self.down = self.outage
            raise lsm3.StorageError(f"timeout after sending PUT {key}")

    def get(self, key: str) -> bytes:
        if self.down:
            raise lsm3.StorageError("network is down")
        return self.real_get(key)

    def restore(self) -> None:
        self.store.put_if_absent = self.real_put  # type: ignore[method-assign]
        self.store.get = self.real_get  # type: ignore[method-assign]


def test_commit_whose_response_was_lost_lands_once(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), SCHEMA, ["id"])
    with t.writer("ingest") as w:
        w.upsert([r(0)])
    flaky = _FlakyNetwork(t, outage=False)
    w = t.writer("ingest")
    w.upsert([r(1, "once")])
    snap = w.commit(commit_id="c2")  # the writer finds its own snapshot and stops
    flaky.restore()
    assert snap is not None and snap.snapshot_id == 2
    assert [s.commit_id for s in lsm3.open_table(t.uri).snapshots()][1:] == ["c2"]
    assert rows(t) == [r(0), r(1, "once")]


def test_commit_failing_ambiguously_then_retried_lands_once(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, SCHEMA, ["id"])
    with t.writer("ingest") as w:
        w.upsert([r(0)])
    flaky = _FlakyNetwork(t, outage=True)
    w = t.writer("ingest")
    w.upsert([r(1, "once")])
    with pytest.raises(lsm3.Lsm3Error):
        w.commit(commit_id="c2", metadata={"offset": 2})
    flaky.restore()
    # the same writer retries its commit...
    again = w.commit(commit_id="c2", metadata={"offset": 2})
    assert again is not None and again.snapshot_id == 2
    # ...and so does a restarted process that does not know whether it landed
    fresh = lsm3.open_table(uri)
    assert fresh.last_commit("ingest") == lsm3.CommitRecord("ingest", "c2", 2, {"offset": 2})
    w2 = fresh.writer("ingest")
    w2.upsert([r(1, "once")])
    assert w2.commit(commit_id="c2", metadata={"offset": 2}).snapshot_id == 2
    assert [s.commit_id for s in fresh.snapshots()][1:] == ["c2"]
    assert rows(fresh) == [r(0), r(1, "once")]


VALUE_TYPES = [
    pytest.param(pa.list_(pa.int32()), [[1, 2], None, []], id="list"),
    pytest.param(pa.large_list(pa.string()), [["a"], ["b", None], None], id="large_list"),
    pytest.param(
        pa.struct([("a", pa.int64()), ("b", pa.string())]),
        [{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}],
        id="struct",
    ),
    pytest.param(pa.map_(pa.string(), pa.int64()), [[("k", 1)], None, []], id="map"),
    pytest.param(
        pa.decimal128(10, 2), [decimal.Decimal("1.25"), None, decimal.Decimal("-3.10")], id="dec"
    ),
    pytest.param(
        pa.timestamp("ns", tz="Europe/Paris"),
        [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), None, dt.datetime(1900, 1, 1)],
        id="timestamp_tz",
    ),
    pytest.param(pa.binary(3), [b"abc", None, b"xyz"], id="fixed_size_binary"),
    pytest.param(pa.time64("us"), [dt.time(1, 2, 3), None, dt.time(0)], id="time64"),
    pytest.param(pa.duration("s"), [dt.timedelta(seconds=5), None, dt.timedelta(0)], id="dur"),
    pytest.param(pa.date64(), [dt.date(2020, 1, 1), None, dt.date(1970, 1, 1)], id="date64"),
    pytest.param(pa.bool_(), [True, None, False], id="bool"),
    pytest.param(pa.float16(), [None, None, None], id="float16"),
    pytest.param(pa.large_binary(), [b"", None, b"\x00"], id="large_binary"),
    pytest.param(pa.null(), [None, None, None], id="null"),
]


@pytest.mark.parametrize(("value_type", "values"), VALUE_TYPES)
def test_value_column_types_roundtrip(
    tmp_path: Path, value_type: pa.DataType, values: list
) -> None:
    uri = str(tmp_path / "t")
    t = lsm3.create_table(uri, pa.schema([("id", pa.int64()), ("x", value_type)]), ["id"])
    with t.writer() as w:
        w.upsert(pa.table({"id": [1, 2, 3], "x": pa.array(values, value_type)}))
    with t.writer() as w:
        w.upsert(pa.table({"id": [2], "x": pa.array(values[:1], value_type)}))
    expected = pa.array([values[0], values[0], values[2]], value_type).to_pylist()
    for table in (t, lsm3.open_table(uri)):
        out = table.to_arrow().sort_by("id")
        assert out.schema.field("x").type == value_type
        assert out.column("x").to_pylist() == expected
        assert [row["x"] for row in table.get_many([1, 2, 3])] == expected


def test_a_local_run_read_by_ranges_is_mapped_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying each section's span into fresh memory cost a stream a third of its system
    time; a local file is mapped instead (ObjectStore.map_range), its page CRCs checked."""
    import lsm3.read.scan
    from lsm3.io.local import LocalStore

    t = lsm3.create_table(
        f"file://{tmp_path}/t",
        schema=pa.schema([("id", pa.int64()), ("v", pa.string())]),
        primary_key=["id"],
        options={"row_group_rows": 100},
    )
    for step in (1, 2, 3):
        with t.writer() as w:
            ids = list(range(0, 3000, step))
            w.upsert(pa.table({"id": ids, "v": [f"r{step}"] * len(ids)}))
    expected = t.to_arrow()

    def no_copy(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a local run was copied, not mapped")

    monkeypatch.setattr(LocalStore, "get_range_into", no_copy)
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 0)  # every run by ranges
    fresh = lsm3.open_table(f"file://{tmp_path}/t")
    assert fresh.to_batches(section_rows=1000).read_all().equals(expected)
