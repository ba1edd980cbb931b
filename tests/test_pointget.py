"""One-key gets from the lookup caches (lsm3/read/pointget.py) against a dict model and the
general lookup path: same answers, and the fast path really answers once the caches are
warm."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import compactor
import lsm3
from lsm3.format.keys import bucket_of
from lsm3.read.lookup import lookup
from lsm3.read.pointget import MISS, get_one, key_bucket


def _fast(t: lsm3.Table, key: Any, columns: list[str] | None = None) -> Any:
    snap = t.current_snapshot()
    schema = t.table_schema
    return get_one(t.store, schema, snap, lambda: t.files_of(snap), key, columns)


def test_key_bucket_is_the_format_hash() -> None:
    """The scalar hash agrees with the vectorised one of the format (section 5), test
    vectors included."""
    assert key_bucket(1, 16) == 2 and key_bucket(-1, 16) == 13 and key_bucket("a", 16) == 12
    rng = random.Random(3)
    ints = [rng.randrange(-(2**63), 2**63) for _ in range(300)] + [0, -1, 2**63 - 1, -(2**63)]
    strings = ["", "a", "é", "日本語", "x" * 100] + [
        "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(12)))
        for _ in range(200)
    ]
    for buckets in (1, 7, 16, 65536):
        got = [key_bucket(v, buckets) for v in ints]
        assert got == bucket_of([pa.array(ints, pa.int64())], buckets).tolist()
        got = [key_bucket(v, buckets) for v in strings]
        assert got == bucket_of([pa.array(strings, pa.string())], buckets).tolist()
    big = [2**64 - 1, 2**63, 5]
    assert [key_bucket(v, 9) for v in big] == bucket_of([pa.array(big, pa.uint64())], 9).tolist()


@pytest.mark.parametrize(
    ("key_type", "buckets", "seed"),
    [(pa.int64(), 1, 1), (pa.int32(), 3, 2), (pa.string(), 2, 3), (pa.int64(), 4, 4)],
)
def test_gets_match_a_model_through_commits_and_compactions(
    tmp_path: Path, key_type: pa.DataType, buckets: int, seed: int
) -> None:
    """Random upserts and deletes over several commits and compactions (universal, which
    keeps deletes above older data, and full): after each step every key, present, deleted
    or never written, gets the model's row from the general path, and then the same row
    from the fast path, which must answer (not MISS) once the first get warmed the caches."""
    rng = random.Random(seed)
    schema = pa.schema([("id", key_type), ("v", pa.string()), ("n", pa.int64())])
    t = lsm3.create_table(
        str(tmp_path / "t"),
        schema,
        primary_key=["id"],
        buckets=buckets,
        options={"row_group_rows": 16, "num_sorted_run_trigger": 3},
    )

    def key(i: int) -> Any:
        return f"k{i:04d}" if pa.types.is_string(key_type) else i - 100

    model: dict[Any, dict[str, Any]] = {}
    universe = [key(i) for i in range(300)]
    for step in range(8):
        with t.writer() as w:
            ups = rng.sample(universe[:250], 60)
            rows = [{"id": k, "v": f"s{step}", "n": rng.randrange(1000)} for k in ups]
            w.upsert(rows)
            model.update({row["id"]: row for row in rows})
            gone = rng.sample(universe[:250], 20)
            w.delete(gone)
            for k in gone:
                model.pop(k, None)
        if step in (3, 6):
            compactor.compact(t)
        if step == 5:
            compactor.compact(t, policy="full")
        sample = rng.sample(universe, 80)
        for k in sample:
            assert t.get(k) == model.get(k), (step, k)
        answered = 0
        for k in sample:
            fast = _fast(t, k)
            if fast is not MISS:
                answered += 1
                assert fast == model.get(k), (step, k)
            assert lookup(t.store, t.table_schema, t.files_of(t.current_snapshot()), [k]) == [
                model.get(k)
            ]
        assert answered == len(sample), step  # every cache it needs was loaded by the gets
    k = next(iter(model))
    assert _fast(t, k, ["n"]) == {"n": model[k]["n"]}


def test_the_fast_path_declines_what_it_does_not_cover(tmp_path: Path) -> None:
    """Composite keys, sequence fields and other merge engines are the general path's, and
    so are keys of another Python type than the column's (the general path validates)."""
    base = pa.schema([("id", pa.int64()), ("s", pa.string()), ("n", pa.int64())])
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"primary_key": ["id", "s"]}, (1, "a")),
        ({"primary_key": ["id"], "options": {"sequence_field": "n"}}, 1),
        ({"primary_key": ["id"], "options": {"merge_engine": "first_row"}}, 1),
        ({"primary_key": ["id"]}, np.int64(1)),
        ({"primary_key": ["id"]}, 2**70),
    ]
    for i, (kwargs, key) in enumerate(cases):
        t = lsm3.create_table(str(tmp_path / f"t{i}"), base, **kwargs)
        with t.writer() as w:
            w.upsert([{"id": 1, "s": "a", "n": 5}])
        if key != 2**70:
            assert t.get(key) == {"id": 1, "s": "a", "n": 5}
        assert _fast(t, key) is MISS, kwargs


def test_a_file_of_an_older_schema_goes_the_general_way(tmp_path: Path) -> None:
    t = lsm3.create_table(
        str(tmp_path / "t"), pa.schema([("id", pa.int64()), ("v", pa.string())]), "id"
    )
    with t.writer() as w:
        w.upsert([{"id": 1, "v": "a"}])
    t.add_column("w", pa.int64())
    assert t.get(1) == {"id": 1, "v": "a", "w": None}
    assert _fast(t, 1) is MISS
    with t.writer() as w:
        w.upsert([{"id": 2, "v": "b", "w": 3}])
    compactor.compact(t, policy="full")
    assert t.get(2) == {"id": 2, "v": "b", "w": 3}
    assert _fast(t, 2) == {"id": 2, "v": "b", "w": 3}  # rewritten with the new schema
