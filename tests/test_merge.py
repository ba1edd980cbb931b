"""The merge kernel against a plain-dict model, on both of its paths (runs merged in sequence
order alone, and the general sort by key and sequence), and run reads whose hidden columns
come from the manifest entry rather than the file."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

import lsm3
from lsm3.format.schema import (
    KIND_COLUMN,
    KIND_DELETE,
    KIND_RESET,
    KIND_UPSERT,
    SEQ_COLUMN,
    TableSchema,
)
from lsm3.read.fold import fold_versions
from lsm3.read.merge import _newest_first_if_disjoint, merge_runs
from lsm3.read.runfile import OpenRun


def _schema(key_type: pa.DataType) -> TableSchema:
    arrow = pa.schema([("id", key_type), ("v", pa.int64())])
    return lsm3.create_table(f"memory://merge-{uuid.uuid4().hex}", arrow, ["id"]).table_schema


# One run: sorted distinct keys, each with (value, is_delete).
runs_strategy = st.lists(
    st.dictionaries(
        st.integers(0, 40), st.tuples(st.integers(-(2**63), 2**63 - 1), st.booleans()), max_size=30
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    runs=runs_strategy,
    interleaved=st.booleans(),
    string_keys=st.booleans(),
    drop_deletes=st.booleans(),
    split=st.booleans(),
    order_seed=st.randoms(use_true_random=False),
)
def test_merge_runs_equals_the_newest_version_per_key(
    runs: list[dict[int, tuple[int, bool]]],
    interleaved: bool,
    string_keys: bool,
    drop_deletes: bool,
    split: bool,
    order_seed: Any,
) -> None:
    """``split`` cuts runs into key-disjoint pieces that share their sequence numbers, as a
    flush or a compaction output cut into several files."""
    schema = _schema(pa.string() if string_keys else pa.int64())
    key = (lambda k: f"k{k:03d}") if string_keys else (lambda k: k)
    model: dict[Any, tuple[int, int, bool]] = {}  # key -> (seq, value, is_delete)
    seqs = list(range(1, 1 + sum(len(r) for r in runs)))
    if interleaved:
        order_seed.shuffle(seqs)  # one run's versions may be older than another's and newer
    tables, next_seq = [], iter(seqs)
    for i, run in enumerate(runs):
        keys = sorted(run)
        row_seqs = [next(next_seq) for _ in keys] if interleaved else [i] * len(keys)
        for k, s in zip(keys, row_seqs, strict=True):
            if k not in model or model[k][0] < s:
                model[k] = (s, run[k][0], run[k][1])
        table = pa.table(
            {
                "id": pa.array([key(k) for k in keys], schema.arrow.field("id").type),
                "v": pa.array([run[k][0] for k in keys], pa.int64()),
                SEQ_COLUMN: pa.array(row_seqs, pa.int64()),
                KIND_COLUMN: pa.array(
                    [KIND_DELETE if run[k][1] else KIND_UPSERT for k in keys], pa.int8()
                ),
            },
            schema=schema.file_schema(),
        )
        cut = order_seed.randrange(1, len(keys)) if split and len(keys) > 1 else len(keys)
        tables += [table.slice(0, cut), table.slice(cut)] if cut < len(keys) else [table]
    order_seed.shuffle(tables)  # the kernel must not rely on the order runs come in
    merged = merge_runs(tables, schema, drop_deletes=drop_deletes)
    expected = [
        (key(k), value, KIND_DELETE if deleted else KIND_UPSERT)
        for k, (_, value, deleted) in sorted(model.items())
        if not (drop_deletes and deleted)
    ]
    got = list(
        zip(
            merged.column("id").to_pylist(),
            merged.column("v").to_pylist(),
            merged.column(KIND_COLUMN).to_pylist(),
            strict=True,
        )
    )
    assert got == expected


def test_the_sequence_order_path_is_taken_only_when_it_decides_every_key() -> None:
    def run(schema: TableSchema, keys: list[Any], seqs: list[int]) -> pa.Table:
        columns = {"id": keys, "v": [1] * len(keys), SEQ_COLUMN: seqs}
        columns[KIND_COLUMN] = pa.array([0] * len(keys), pa.int8())
        return pa.table(columns, schema=schema.file_schema())

    ints = _schema(pa.int64())
    older, newer = run(ints, [1, 2], [1, 2]), run(ints, [2, 3], [3, 3])
    assert _newest_first_if_disjoint([older, newer], ints) == [newer, older]
    overlapping = run(ints, [2, 3], [2, 5])  # seq 2 is not newer than the older run's 2
    assert _newest_first_if_disjoint([older, overlapping], ints) is None
    # pieces of one flush (same sequence number) share a place when their keys are disjoint
    piece_a, piece_b = run(ints, [4, 5], [3, 3]), run(ints, [6], [3])
    assert _newest_first_if_disjoint([older, piece_b, piece_a], ints) == [piece_a, piece_b, older]
    same_keys = run(ints, [5, 6], [3, 3])  # never written by lsm3: the general merge decides
    assert _newest_first_if_disjoint([older, piece_a, same_keys], ints) is None
    strings = _schema(pa.string())
    assert (
        _newest_first_if_disjoint([run(strings, ["a"], [1]), run(strings, ["a"], [2])], strings)
        is None
    )


def test_hidden_columns_from_the_manifest_equal_the_stored_ones() -> None:
    """A run of one flush without deletes is read without decoding its sequence and row-kind
    columns; the values filled in are exactly the stored ones (plus the commit's offset)."""
    arrow = pa.schema([("id", pa.int64()), ("v", pa.string())])
    t = lsm3.create_table(f"memory://merge-{uuid.uuid4().hex}", arrow, ["id"])
    for start in (0, 100):  # the second commit's file has a non-zero sequence offset
        with t.writer() as w:
            w.upsert({"id": list(range(start, start + 50)), "v": ["x"] * 50})
    files = t.files_of(t.current_snapshot())
    assert len(files) == 2 and any(f.seq_offset for f in files)
    columns = ["id", "v", SEQ_COLUMN, KIND_COLUMN]
    for f in files:
        assert f.min_seq == f.max_seq and f.deletes == 0
        run = OpenRun(t.store, f, t.table_schema)
        filled = run.read(columns)
        assert run._constant_columns(columns).keys() == {SEQ_COLUMN, KIND_COLUMN}
        stored = run.read(columns[:2])
        assert filled.schema == t.table_schema.file_schema()
        assert filled.column("id").equals(stored.column("id"))
        assert pc.all(pc.equal(filled.column(SEQ_COLUMN), f.effective_min_seq)).as_py()
        assert pc.all(pc.equal(filled.column(KIND_COLUMN), KIND_UPSERT)).as_py()
        raw = OpenRun(t.store, f, t.table_schema)
        raw._constant_columns = lambda columns: {}  # type: ignore[method-assign]
        assert raw.read(columns).equals(filled)


# One stored run of a first_row table: sorted distinct keys, each with (value or None, kind).
first_row_runs = st.lists(
    st.dictionaries(
        st.integers(0, 30),
        st.tuples(
            st.none() | st.integers(-5, 5),
            st.sampled_from([KIND_UPSERT, KIND_UPSERT, KIND_UPSERT, KIND_DELETE, KIND_RESET]),
        ),
        max_size=20,
    ),
    min_size=2,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    runs=first_row_runs,
    columns=st.sampled_from([None, ["id", "v"], ["v", "id"], ["id", SEQ_COLUMN, KIND_COLUMN]]),
    order_seed=st.randoms(use_true_random=False),
)
def test_first_row_runs_merged_by_sequence_order_equal_their_fold(
    runs: list[dict[int, tuple[int | None, int]]], columns: list[str] | None, order_seed: Any
) -> None:
    """A first_row reader's merge of runs ordered by sequence alone (the path that picks the
    oldest upsert after the newest delete or reset of each key, one gather as deduplicate's)
    gives the rows of the engines' fold."""
    arrow = pa.schema([("id", pa.int64()), ("v", pa.int64())])
    uri = f"memory://merge-{uuid.uuid4().hex}"
    schema = lsm3.create_table(uri, arrow, ["id"], options={"merge_engine": "first_row"})
    schema = schema.table_schema
    tables = []
    for seq, run in enumerate(runs):
        keys = sorted(run)
        columns_of_run = {
            "id": pa.array(keys, pa.int64()),
            "v": pa.array([run[k][0] for k in keys], pa.int64()),
            SEQ_COLUMN: pa.array([seq] * len(keys), pa.int64()),
            KIND_COLUMN: pa.array([run[k][1] for k in keys], pa.int8()),
        }
        tables.append(pa.table(columns_of_run, schema=schema.file_schema()))
    order_seed.shuffle(tables)
    nonempty = [t for t in tables if t.num_rows]
    if len(nonempty) >= 2:
        assert _newest_first_if_disjoint(nonempty, schema) is not None
    expected = fold_versions(pa.concat_tables(tables), schema, drop_deletes=True, columns=columns)
    assert merge_runs(tables, schema, drop_deletes=True, columns=columns).equals(expected)
