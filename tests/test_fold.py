"""The fold of stored versions (lsm3/read/fold.py) against a plain-Python fold, row by row.

The engine model tests (test_merge_engines.py) go through the table with eight keys, so nearly
every key has many versions. Here ``fold_versions`` gets random stored rows directly: many
keys with a single version (the common case of a merged read), reset and delete rows alone or
among upserts, columns with and without nulls (or with nulls in delete rows only, as stored
deletes hold), every aggregate function on the types that take a different code path (numpy
segment reductions, Arrow's hash aggregation, list concatenation), a sequence field and a
composite key, with and without ``drop_deletes``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsm3.format.schema import KIND_COLUMN, KIND_DELETE, KIND_RESET, SEQ_COLUMN, TableSchema
from lsm3.read.fold import fold_versions

#: column -> (type, aggregate function under the aggregation engine)
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "a": (pa.int64(), "sum"),
    "b": (pa.string(), "listagg"),
    "c": (pa.int64(), "count"),
    "d": (pa.bool_(), "bool_and"),
    "e": (pa.list_(pa.int64()), "collect"),
    "f": (pa.string(), "first_non_null_value"),
    "g": (pa.int64(), "last_value"),
    "h": (pa.string(), "max"),
    "i": (pa.float64(), "sum"),
    "j": (pa.float64(), "min"),
    "k": (pa.int64(), "product"),
    "l": (pa.string(), "last_non_null_value"),
    "m": (pa.int64(), "first_value"),
    "n": (pa.bool_(), "bool_or"),
    "o": (pa.int32(), "sum"),
    "p": (pa.decimal128(9, 2), "sum"),
    "q": (pa.timestamp("us"), "max"),
    "r": (pa.int32(), "min"),
}
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "a": st.integers(-3, 5),
    "b": st.sampled_from(["x", "yy", "é"]),
    "c": st.just(1),  # stored counts: 1 per non-null value, or a partial count
    "d": st.booleans(),
    "e": st.lists(st.integers(0, 3), max_size=2),
    "f": st.sampled_from(["x", "yy", "é"]),
    "g": st.integers(-3, 5),
    "h": st.sampled_from(["x", "yy", "é", "Z"]),
    "i": st.integers(-8, 8).map(lambda v: v / 2),
    "j": st.integers(-8, 8).map(lambda v: v / 4),
    "k": st.integers(-2, 3),
    "l": st.sampled_from(["x", "yy", "é"]),
    "m": st.integers(-3, 5),
    "n": st.booleans(),
    "o": st.integers(-3, 5),
    "p": st.integers(-300, 300).map(lambda v: Decimal(v).scaleb(-2)),
    "q": st.integers(0, 5).map(lambda v: np.datetime64(v, "us").item()),
    "r": st.integers(-3, 5),
}
ENGINES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "first_row": ({"merge_engine": "first_row"}, ["a", "b", "e", "i"]),
    "partial_update": (
        {"merge_engine": "partial_update", "fields.g.sequence_group": "h"},
        ["a", "b", "g", "h", "i", "l"],
    ),
    "aggregation": (
        {
            "merge_engine": "aggregation",
            "fields.b.listagg_delimiter": "/",
            **{f"fields.{c}.aggregate_function": f for c, (_, f) in COLUMNS.items()},
        },
        list(COLUMNS),
    ),
}


def _aggregate(function: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if function == "last_value":
        return values[-1]
    if function == "first_value":
        return values[0]
    if not present:
        return None
    if function in ("sum", "count"):
        return sum(present)
    if function == "product":
        return int(np.prod(present))
    if function in ("max", "min"):
        pick = max if function == "max" else min
        return pick(present, key=lambda v: v.encode() if isinstance(v, str) else v)
    if function in ("bool_and", "bool_or"):
        return all(present) if function == "bool_and" else any(present)
    if function == "listagg":
        return "/".join(present)
    if function == "collect":
        return [x for v in present for x in v]
    if function == "first_non_null_value":
        return present[0]
    assert function == "last_non_null_value"
    return present[-1]


def _fold_values(engine: str, names: list[str], ups: list[dict[str, Any]]) -> dict[str, Any]:
    if engine == "first_row":
        return {c: ups[0][c] for c in names}
    if engine == "aggregation":
        return {c: _aggregate(COLUMNS[c][1], [r[c] for r in ups]) for c in names}
    out = {c: _aggregate("last_non_null_value", [r[c] for r in ups]) for c in names}
    grouped = [(r["g"], i, r) for i, r in enumerate(ups) if r["g"] is not None]
    winner = max(grouped, key=lambda t: t[:2])[2] if grouped else {"g": None, "h": None}
    out["g"], out["h"] = winner["g"], winner["h"]
    return out


def reference(
    engine: str, keys: list[str], order: list[str], names: list[str], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """docs/FORMAT.md section 15, one key at a time: versions in order, a delete empties the
    fold, a reset row restarts it; the row kind says which barrier the window held."""
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: [r[c] for c in keys + order]):
        by_key.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, versions in by_key.items():
        ups: list[dict[str, Any]] = []
        barrier = False
        for v in versions:
            if v[KIND_COLUMN] != 0:
                barrier = True
                ups = [v] if v[KIND_COLUMN] == KIND_RESET else []
            else:
                ups.append(v)
        head = {**dict(zip(keys, key, strict=True)), **{c: versions[-1][c] for c in order}}
        if ups:
            values = _fold_values(engine, names, ups)
            kind = KIND_RESET if barrier else 0
        else:
            values = {c: None for c in names}
            kind = KIND_DELETE
        out.append({**head, **values, KIND_COLUMN: kind})
    return out


@st.composite
def stored_rows(draw: st.DrawFn, engine: str, composite_key: bool, sequence_field: bool) -> Any:
    names = ENGINES[engine][1]
    # "in deletes": only delete rows hold nulls, as stored deletes do (a fold takes none)
    nulls = draw(st.sampled_from(["no", "anywhere", "in deletes"]))
    count = draw(st.integers(1, 40))
    key_space = draw(st.integers(1, 30))
    seqs = draw(st.permutations(range(count)))
    rows = []
    for i in range(count):
        row: dict[str, Any] = {"id": draw(st.integers(0, key_space))}
        if composite_key:
            row["k2"] = draw(st.sampled_from(["u", "v"]))
        if sequence_field:
            row["sf"] = draw(st.integers(0, 3))
        kind = draw(st.sampled_from([0, 0, 0, 0, 0, KIND_DELETE, KIND_RESET]))
        for c in names:
            if nulls == "in deletes":
                row[c] = None if kind == KIND_DELETE else draw(VALUES[c])
            else:
                row[c] = draw(st.none() | VALUES[c] if nulls == "anywhere" else VALUES[c])
        row[SEQ_COLUMN] = seqs[i]
        row[KIND_COLUMN] = kind
        rows.append(row)
    return rows


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("variant", ["int key", "composite key", "sequence field"])
@settings(max_examples=60, deadline=None)
@given(data=st.data(), drop_deletes=st.booleans())
def test_the_fold_of_stored_rows_is_the_plain_fold(
    engine: str, variant: str, data: st.DataObject, drop_deletes: bool
) -> None:
    composite, seq_field = variant == "composite key", variant == "sequence field"
    options, names = ENGINES[engine]
    keys = ["id", "k2"] if composite else ["id"]
    fields = [pa.field("id", pa.int64(), nullable=False)]
    fields += [pa.field("k2", pa.string(), nullable=False)] if composite else []
    fields += [pa.field("sf", pa.int64())] if seq_field else []
    fields += [pa.field(c, COLUMNS[c][0]) for c in names]
    if seq_field:
        options = {**options, "sequence_field": "sf"}
    if engine == "aggregation":  # the functions of the columns this table has
        drop = [f"fields.{c}.aggregate_function" for c in COLUMNS if c not in names]
        options = {k: v for k, v in options.items() if k not in drop}
    schema = TableSchema(0, pa.schema(fields), tuple(keys), options=options)
    rows = data.draw(stored_rows(engine, composite, seq_field))
    table = pa.Table.from_pylist(rows, schema=schema.file_schema())
    order = (["sf"] if seq_field else []) + [SEQ_COLUMN]
    expected = reference(engine, keys, order, names, rows)
    if drop_deletes:
        expected = [{**r, KIND_COLUMN: 0} for r in expected if r[KIND_COLUMN] != KIND_DELETE]
    got = fold_versions(table, schema, drop_deletes=drop_deletes)
    assert got.schema == table.schema
    assert got.to_pylist() == [{c: r[c] for c in table.column_names} for r in expected]
