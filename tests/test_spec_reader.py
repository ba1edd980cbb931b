"""docs/FORMAT.md is enough to write a compatible reader: tests/spec_reader.py, written from
the spec alone, reads tables that lsm3 wrote (random commits with deletes, nulls, repeated
keys, CDC, partial and full compactions) and must agree with ``Table.to_arrow`` at every
snapshot under every merge engine, and with ``Table.changelog`` for every producer."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lsm3
from compactor.compact import compact
from compactor.expiry import expire_snapshots
from tests.spec_reader import SpecError, SpecTable

UTC = dt.timezone.utc
#: each scenario seeds its generator from its name and this (SPEC_READER_SEED=n to vary)
SEED = int(os.environ.get("SPEC_READER_SEED", "1"))


def ts(i: int | None) -> dt.datetime | None:
    return None if i is None else dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i)


def maybe(rng: random.Random, value: Any, p: float = 0.25) -> Any:
    return None if rng.random() < p else value


#: small manifests, lists and parts, so that folds, merges and list parts happen
SMALL = {
    "row_group_rows": 8,
    "manifest_merge_threshold": 3,
    "manifest_target_entries": 4,
    "manifest_merge_min_count": 2,
    "manifest_list_part_size": 2,
}
BASE = [("p", pa.string()), ("k", pa.int64())]
AGG_FUNCS = {
    "a_sum": (pa.int64(), "sum"),
    "a_prod": (pa.int64(), "product"),
    "a_min": (pa.string(), "min"),
    "a_max": (pa.int32(), "max"),
    "a_mints": (pa.timestamp("us", "UTC"), "min"),
    "a_maxbin": (pa.binary(), "max"),
    "a_cnt": (pa.int64(), "count"),
    "a_lv": (pa.string(), "last_value"),
    "a_lnn": (pa.int64(), None),  # the default, last_non_null_value
    "a_fv": (pa.int64(), "first_value"),
    "a_fnn": (pa.string(), "first_non_null_value"),
    "a_band": (pa.bool_(), "bool_and"),
    "a_bor": (pa.bool_(), "bool_or"),
    "a_list": (pa.string(), "listagg"),
    "a_coll": (pa.list_(pa.int64()), "collect"),
}


KEY_DATES = [dt.date(1969, 12, 31), dt.date(2026, 12, 2)]
KEY_BYTES = [b"", b"\x00", b"\xff\x01", b"a", b"a\x00"]
KEY_TIMES = [
    dt.datetime(1969, 12, 31, 23, 59, 59, 999000),
    dt.datetime(1970, 1, 1),
    ts(1).replace(tzinfo=None),
]


def key_value(rng: random.Random, typ: pa.DataType) -> Any:
    if pa.types.is_string(typ):
        return rng.choice(["a", "b"])
    if pa.types.is_date32(typ):
        return rng.choice(KEY_DATES)
    if pa.types.is_binary(typ):
        return rng.choice(KEY_BYTES)
    if pa.types.is_timestamp(typ):
        return rng.choice(KEY_TIMES)
    return rng.randint(0, 25)


def value_of(rng: random.Random, name: str, typ: pa.DataType) -> Any:
    if pa.types.is_list(typ):
        return maybe(rng, [rng.randint(0, 9) for _ in range(rng.randint(0, 2))])
    if pa.types.is_timestamp(typ):
        return maybe(rng, ts(rng.randint(0, 50)))
    if pa.types.is_boolean(typ):
        return maybe(rng, rng.random() < 0.7)
    if pa.types.is_string(typ):
        return maybe(rng, rng.choice(["x", "yy", "é", "Z", "a", ""]))
    if pa.types.is_binary(typ):
        return maybe(rng, rng.randbytes(rng.randint(0, 2)))
    if name == "a_prod":
        return maybe(rng, rng.choice([1, 2, -1]))
    return maybe(rng, rng.randint(-5, 20))


SCENARIOS: dict[str, dict[str, Any]] = {
    "deduplicate": {"cols": [("v", pa.int64()), ("s", pa.string())], "options": {}},
    "dedup_seqfield": {
        "cols": [("v", pa.int64()), ("ver", pa.int64())],
        "options": {"sequence_field": "ver"},
    },
    "first_row": {
        "cols": [("v", pa.int64()), ("s", pa.string())],
        "options": {"merge_engine": "first_row"},
    },
    "partial_update": {
        "cols": [
            ("v", pa.int64()),
            ("s", pa.string()),
            ("g", pa.int64()),
            ("g1", pa.string()),
            ("g2", pa.int64()),
            ("t", pa.timestamp("us", "UTC")),
            ("t1", pa.int64()),
        ],
        "options": {
            "merge_engine": "partial_update",
            "fields.g.sequence_group": "g1,g2",
            "fields.t.sequence_group": "t1",
        },
    },
    "aggregation": {  # one key column: see test_changelog_with_composite_key_and_list_column
        "key": ["k"],
        "cols": [(n, t) for n, (t, _) in AGG_FUNCS.items()],
        "options": {
            "merge_engine": "aggregation",
            "fields.a_list.listagg_delimiter": "|",
            **{f"fields.{n}.aggregate_function": f for n, (_, f) in AGG_FUNCS.items() if f},
        },
    },
    "input": {
        "cols": [("v", pa.int64()), ("s", pa.string())],
        "options": {"changelog_producer": "input"},
    },
    "lookup_partial": {
        "cols": [("v", pa.int64()), ("s", pa.string())],
        "options": {"changelog_producer": "lookup", "merge_engine": "partial_update"},
    },
    "lookup_agg": {
        "cols": [("a_sum", pa.int64()), ("a_list", pa.string())],
        "options": {
            "changelog_producer": "lookup",
            "merge_engine": "aggregation",
            "fields.a_sum.aggregate_function": "sum",
            "fields.a_list.aggregate_function": "listagg",
        },
    },
    "key_types": {  # section 7: date32, binary and timestamp keys as JSON storage values
        "base": [
            ("d", pa.date32()),
            ("bk", pa.binary()),
            ("t", pa.timestamp("ms")),
            ("i", pa.int16()),
        ],
        "cols": [("v", pa.int64())],
        "options": {"changelog_producer": "lookup"},
    },
    "evolution": {
        "cols": [("v", pa.int32()), ("s", pa.string()), ("d", pa.int64())],
        "options": {},
        "evolve": True,
    },
    "full_compaction": {
        "cols": [("v", pa.int64()), ("s", pa.string())],
        "options": {"changelog_producer": "full_compaction", "num_levels": 3},
    },
}


def build(uri: str, name: str, seed: int) -> tuple[lsm3.Table, list[int]]:
    """A table of random commits and compactions; returns it and the snapshot ids."""
    sc = SCENARIOS[name]
    rng = random.Random(f"{name}-{seed}")
    cols = list(sc["cols"])
    base = sc.get("base", BASE)
    schema = pa.schema(base + cols)
    names = [n for n, _ in base]
    key = sc.get("key", names)
    table = lsm3.create_table(
        uri,
        schema,
        key,
        partition_by=names[0] if names[0] in key else None,
        buckets=3,
        options={**SMALL, **sc["options"]},
    )
    seq_field = sc["options"].get("sequence_field")
    ver = 0

    def rows(n: int) -> list[dict[str, Any]]:
        nonlocal ver
        out = []
        for _ in range(n):
            row = {n: key_value(rng, t) for n, t in base}
            for col, typ in cols:
                row[col] = value_of(rng, col, typ)
            if seq_field:  # mostly rising, sometimes late
                ver += 1
                row[seq_field] = ver - rng.choice([0, 0, 0, 5])
            out.append(row)
        return out

    def keys_of(rows: list[dict[str, Any]]) -> pa.Table:
        names = [*key, *([seq_field] if seq_field else [])]
        return pa.Table.from_pylist(rows, schema=pa.schema([schema.field(n) for n in names]))

    for step in range(10):
        if step == 5 and sc.get("evolve"):  # files of schema 0 are read by field id
            table.rename_column("s", "s2")
            table.widen_column("v", pa.int64())
            table.add_column("n", pa.int64())
            cols = [("v", pa.int64()), ("s2", pa.string()), ("d", pa.int64()), ("n", pa.int64())]
            schema = pa.schema(base + cols)
        if step == 8 and sc.get("evolve"):  # changes computed before are not recomputed
            table.drop_column("d")
            cols = [c for c in cols if c[0] != "d"]
            schema = pa.schema(base + cols)
        w = table.writer()
        for _ in range(rng.randint(1, 3)):  # several flushes per commit
            what = rng.random()
            if what < 0.15:  # delete then upsert keys in one flush: reset rows
                again = rows(rng.randint(1, 5))
                w.delete(keys_of(again))
                if seq_field:
                    for r in again:
                        r[seq_field] += 1
                w.upsert(pa.Table.from_pylist(again, schema=schema))
            elif what < 0.55:
                w.upsert(pa.Table.from_pylist(rows(rng.randint(1, 15)), schema=schema))
            elif what < 0.75:
                w.delete(keys_of(rows(rng.randint(1, 5))))
            else:
                cdc = rows(rng.randint(1, 8))
                for r in cdc:
                    r["op"] = rng.choice(["c", "r", "u", "d", "+I", "+U", "-U", "-D"])
                w.apply_cdc(
                    pa.Table.from_pylist(cdc, schema=schema.append(pa.field("op", pa.string())))
                )
            if rng.random() < 0.5:
                w.flush()
        w.commit()
        if step % 4 == 3:
            compact(table, policy="full")
        elif step % 3 == 2:
            compact(table, policy="universal", options={"num_sorted_run_trigger": 2})
        elif step in (1, 6):  # levels 1 and up, below a full compaction's last level
            compact(
                table, policy="leveled", options={"l0_file_trigger": 2, "level_base_bytes": 4096}
            )
    table.refresh()
    return table, table.snapshot_ids()


def sort(t: pa.Table, key: list[str]) -> pa.Table:
    return t.sort_by([(k, "ascending") for k in key])


def stored(root: Path) -> dict[str, int]:
    """What the table's objects exercise: list parts, sequence bases, row kinds, changelogs."""
    seen = {"parts": 0, "bases": 0, "resets": 0, "deletes": 0, "changelog_files": 0}
    for f in (root / "manifest").glob("list-*.json"):
        doc = json.loads(f.read_text())
        seen["parts"] += len(doc.get("parts") or [])
        seen["bases"] += sum(1 for m in doc["manifests"] if m.get("seq_base"))
    for f in (root / "snapshot").glob("snapshot-*.json"):
        doc = json.loads(f.read_text())
        seen["bases"] += bool(doc.get("delta_offset")) + any(doc.get("manifest_offsets") or [])
    for f in (root / "data").rglob("*.parquet"):
        if f.name.startswith("changelog-"):
            seen["changelog_files"] += 1
            continue
        kinds = pq.read_table(f, columns=["_lsm3_kind"]).column(0).to_pylist()
        seen["resets"] += kinds.count(2)
        seen["deletes"] += kinds.count(1)
    return seen


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_spec_reader_agrees_with_lsm3(tmp_path: Path, name: str) -> None:
    root = tmp_path / "t"
    table, ids = build(str(root), name, SEED)
    spec = SpecTable(f"file://{root}")
    assert spec.latest_snapshot_id() == ids[-1]
    assert {"APPEND", "COMPACT"} <= {table.snapshot(i).kind for i in ids}
    seen = stored(root)
    assert seen["parts"] and seen["bases"] and seen["deletes"], seen
    engine = SCENARIOS[name]["options"].get("merge_engine", "deduplicate")
    assert seen["resets"] or engine == "deduplicate", seen
    producer = SCENARIOS[name]["options"].get("changelog_producer", "none")
    assert seen["changelog_files"] or producer == "none", seen
    for sid in ids:
        if table.snapshot(sid).delta_manifest is None:
            continue  # a compactor lease snapshot: the files of its parent
        want = sort(table.to_arrow(snapshot_id=sid), list(table.primary_key))
        got = spec.read(sid)
        assert got.schema == want.schema, sid
        assert got.to_pylist() == want.to_pylist(), (name, sid)
    pk = list(table.primary_key)
    every_key = sorted(
        {tuple(r[k] for k in pk) for sid in ids[2::4] for r in spec.read(sid).to_pylist()}
    )
    for sid in (ids[len(ids) // 2], ids[-1]):  # point lookups (section 15's early stop)
        by_key = {tuple(r[k] for k in pk): r for r in spec.read(sid).to_pylist()}
        keys = [k if len(k) > 1 else k[0] for k in every_key]
        got_rows = table.get_many(keys, snapshot_id=sid)
        assert got_rows == [by_key.get(k) for k in every_key], (name, sid)
    for a, b in [(0, ids[-1]), (ids[2], ids[-3])]:
        want = table.changelog(a, b)
        got = spec.changelog(a, b).select(want.column_names)
        assert got.schema == want.schema
        assert got.to_pylist() == want.to_pylist(), (name, a, b)


# -- code bugs found by the spec reader: the code disagrees with a clear rule of FORMAT.md ---


@pytest.mark.parametrize("producer", ["none", "lookup"])
def test_changelog_of_a_late_record_behind_a_delete(tmp_path: Path, producer: str) -> None:
    schema = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("ver", pa.int64())])
    options = {"sequence_field": "ver", "changelog_producer": producer}
    table = lsm3.create_table(str(tmp_path / "t"), schema, "k", options=options)
    for op, row in [("upsert", (1, 5)), ("delete", (None, 10)), ("upsert", (2, 7))]:
        w = table.writer()
        data = pa.table({"k": [1], "v": [row[0]], "ver": [row[1]]}, schema=schema)
        w.upsert(data) if op == "upsert" else w.delete(data.select(["k", "ver"]))
        w.commit()
    assert table.to_arrow().num_rows == 0  # the late upsert (ver 7) is older than the delete
    spec = SpecTable(f"file://{tmp_path / 't'}")  # absent at 2 and 3: no change (section 16)
    assert spec.read(2).num_rows == spec.read(3).num_rows == 0
    if producer == "none":
        assert spec.changelog(2, 3).num_rows == 0
    assert table.changelog(2, 3).to_pylist() == []


@pytest.mark.parametrize("producer", ["none", "lookup"])
def test_changes_with_composite_key_and_list_column(tmp_path: Path, producer: str) -> None:
    schema = pa.schema([("p", pa.string()), ("k", pa.int64()), ("l", pa.list_(pa.int64()))])
    table = lsm3.create_table(
        str(tmp_path / "t"), schema, ["p", "k"], options={"changelog_producer": producer}
    )
    for i in range(2):
        w = table.writer()
        w.upsert(pa.table({"p": ["a"], "k": [1], "l": [[i]]}, schema=schema))
        w.commit()
    want = SpecTable(f"file://{tmp_path / 't'}").changelog(0)
    assert (
        table.changelog(0).to_pylist() == want.select(table.changelog(0).column_names).to_pylist()
    )


def test_computed_changes_of_a_since_dropped_column(tmp_path: Path) -> None:
    """FORMAT.md section 16: computed changes compare values in the commit's schema, then
    project onto the end snapshot's, so a change of a dropped column stays a -U/+U pair."""
    schema = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("d", pa.int64())])
    table = lsm3.create_table(str(tmp_path / "t"), schema, "k")
    for d in (1, 2):
        w = table.writer()
        w.upsert(pa.table({"k": [1], "v": [1], "d": [d]}, schema=schema))
        w.commit()
    table.drop_column("d")
    want = table.changelog(0)
    assert want.column("_row_kind").to_pylist() == ["+I", "-U", "+U"]
    got = SpecTable(f"file://{tmp_path / 't'}").changelog(0).select(want.column_names)
    assert got.to_pylist() == want.to_pylist()


def test_spec_reader_after_expiry(tmp_path: Path) -> None:
    """Section 12: the history is the run of ids above the largest expiry marker; a snapshot
    object put back below it (a paused committer's detached object) is not history."""
    root = tmp_path / "t"
    table, ids = build(str(root), "input", 3)
    detached = (root / "snapshot" / f"snapshot-{ids[1]:020d}.json").read_bytes()
    expire_snapshots(table, retain_last=6, older_than=0)
    (root / "snapshot" / f"snapshot-{ids[1]:020d}.json").write_bytes(detached)
    table = lsm3.open_table(str(root))
    kept = table.snapshot_ids()
    assert kept[0] > ids[1] and kept[-1] == ids[-1]
    spec = SpecTable(f"file://{root}")
    assert spec.history() == kept
    with pytest.raises(SpecError):
        spec.read(ids[1])
    for sid in kept:
        want = sort(table.to_arrow(snapshot_id=sid), ["p", "k"])
        assert spec.read(sid).to_pylist() == want.to_pylist()
    want = table.changelog(kept[0], kept[-1])
    assert (
        spec.changelog(kept[0], kept[-1]).select(want.column_names).to_pylist() == want.to_pylist()
    )


@pytest.mark.parametrize("producer", ["input", "lookup"])
def test_changelog_manifest_of_a_compact_snapshot_is_ignored(tmp_path: Path, producer: str) -> None:
    """Section 16: under input and lookup only APPEND commits' stored changes count; a
    COMPACT snapshot that names a changelog manifest (another writer's) adds no changes."""
    root = tmp_path / "t"
    schema = pa.schema([("k", pa.int64()), ("v", pa.int64())])
    table = lsm3.create_table(str(root), schema, "k", options={"changelog_producer": producer})
    for v in (1, 2):
        w = table.writer()
        w.upsert(pa.table({"k": [1, 2], "v": [v, v]}, schema=schema))
        w.commit()
    compact(table, policy="full")
    table.refresh()
    first = table.snapshot(1)
    compacted = [s for s in table.snapshots() if s.kind == "COMPACT" and s.delta_manifest]
    assert first.changelog_manifest and compacted
    path = root / "snapshot" / f"snapshot-{compacted[0].snapshot_id:020d}.json"
    doc = json.loads(path.read_text())
    doc["changelog_manifest"] = first.changelog_manifest  # as another writer might
    path.write_text(json.dumps(doc))
    last = compacted[0].snapshot_id
    spec = SpecTable(f"file://{root}").changelog(2, last)
    assert spec.num_rows == 0
    assert lsm3.open_table(str(root)).changelog(2, last).num_rows == 0


def test_a_staged_commit_has_the_computed_changes(tmp_path: Path) -> None:
    """Section 16: an APPEND under input or lookup that adds files but stores no changelog
    (runs staged by writers and committed by a coordinator) has the computed changes."""
    from lsm3.write.commit import commit_files

    root = tmp_path / "t"
    schema = pa.schema([("k", pa.int64()), ("v", pa.int64())])
    table = lsm3.create_table(str(root), schema, "k", options={"changelog_producer": "lookup"})
    w = table.writer()
    w.upsert(pa.table({"k": [1, 2, 3], "v": [1, 1, 1]}, schema=schema))
    w.commit()
    staged, count = [], 0
    for keys in ([1, 4], [2, 5]):  # two writers, disjoint keys
        w = table.writer()
        w.upsert(pa.table({"k": keys, "v": [2, 2]}, schema=schema))
        if keys[0] == 1:
            w.delete([3])
        files, n = w.stage()
        staged += files
        count = max(count, n)
    commit_files(
        table,
        added=staged,
        removed=[],
        seq_count=count,
        kind="APPEND",
        writer_id=None,
        commit_id="coordinator",
        metadata={},
    )
    table.refresh()
    assert table.snapshot(2).changelog_manifest is None
    want = table.changelog(0)
    got = SpecTable(f"file://{root}").changelog(0).select(want.column_names)
    assert got.to_pylist() == want.to_pylist()
    assert [r["_row_kind"] for r in want.to_pylist() if r["_snapshot_id"] == 2] == [
        "-U",
        "+U",
        "-U",
        "+U",
        "-D",
        "+I",
        "+I",
    ]


def test_point_lookup_past_a_late_delete(tmp_path: Path) -> None:
    """Section 15: with sequence_field a lookup may not stop at the newest run's delete (or
    reset) row: an older run may hold a version that orders after it."""
    root = tmp_path / "t"
    schema = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("ver", pa.int64())])
    table = lsm3.create_table(str(root), schema, "k", options={"sequence_field": "ver"})
    spec = SpecTable(f"file://{root}")
    writes = [
        [("upsert", 1, 20)],
        [("delete", None, 15)],
        [("delete", None, 16), ("upsert", 5, 17)],
    ]
    for batch in writes:
        w = table.writer()
        for op, v, ver in batch:
            if op == "upsert":
                w.upsert(pa.table({"k": [1], "v": [v], "ver": [ver]}, schema=schema))
            else:
                w.delete(pa.table({"k": [1], "ver": [ver]}))
        w.commit()
        want = spec.read().to_pylist()
        assert want and want[0]["ver"] == 20
        assert [table.get(1)] == [table.get_many([1])[0]] == want


def aggregate_over_commits(root: Path, typ: pa.DataType, fn: str, values: list[Any]) -> lsm3.Table:
    schema = pa.schema([("k", pa.int64()), ("a", typ)])
    options = {"merge_engine": "aggregation", "fields.a.aggregate_function": fn}
    table = lsm3.create_table(str(root), schema, "k", options=options)
    for v in values:  # one commit each: every commit is accepted
        w = table.writer()
        w.upsert(pa.table({"k": [1], "a": [v]}, schema=schema))
        w.commit()
    return table


@pytest.mark.parametrize(
    "typ, fn, values",
    [
        (pa.int64(), "sum", [2**63 - 1, 2]),
        (pa.int64(), "sum", [-(2**63), -1]),
        (pa.int64(), "product", [2**63 - 1, 2]),
        (pa.uint64(), "sum", [2**64 - 1, 2]),
        (pa.int32(), "sum", [2**31 - 1, 2]),
        (pa.int8(), "product", [100, 2]),
        (pa.uint64(), "product", [2**64 - 1, 2]),
    ],
)
def test_integer_sums_wrap(tmp_path: Path, typ: pa.DataType, fn: str, values: list[int]) -> None:
    """Section 15: integer sums and products wrap around in the column's width, so a table
    stays readable whatever its writers added up."""
    table = aggregate_over_commits(tmp_path / "t", typ, fn, values)
    want = SpecTable(f"file://{tmp_path / 't'}").read().to_pylist()
    assert table.to_arrow().to_pylist() == want
    compact(table, policy="full")
    assert table.to_arrow().to_pylist() == want


TOP = Decimal("9" * 37 + ".9")  # the largest decimal128(38, 1)
BOTTOM = Decimal("-" + "9" * 37 + ".9")  # not -TOP: the default context rounds to 28 digits


@pytest.mark.parametrize(
    "values, batches",
    [
        ([TOP, Decimal("0.2")], "separate"),  # wraps to -TOP + 0.1
        ([TOP, Decimal("0.1")], "separate"),  # one past the top: the bottom
        ([TOP, Decimal("0.2"), Decimal("-0.3")], "separate"),  # and back
        ([BOTTOM, Decimal("-5"), TOP, Decimal("1.5")], "separate"),
        ([BOTTOM, Decimal("-5"), Decimal("1.5")], "one commit"),
        ([TOP, TOP, TOP, Decimal("1")], "one commit"),
    ],
)
def test_a_decimal_sum_wraps_in_its_precision(
    tmp_path: Path, values: list[Decimal], batches: str
) -> None:
    """Section 15: a decimal sum beyond +-(10^38 - 1) units wraps around modulo
    2 * 10^38 - 1, in any grouping of the versions (it made every read of the key fail)."""
    root = tmp_path / "t"
    if batches == "separate":
        table = aggregate_over_commits(root, pa.decimal128(38, 1), "sum", values)
    else:
        table = aggregate_over_commits(root, pa.decimal128(38, 1), "sum", [])
        w = table.writer()
        for v in values:
            w.upsert(pa.table({"k": [1], "a": [v]}, schema=table.schema))
        w.commit()
    want = SpecTable(f"file://{root}").read().to_pylist()
    with localcontext(prec=100):  # exact: the default context rounds to 28 digits
        units, bound = int(sum(values) * 10), 10**38 - 1  # the exact sum, in tenths
        assert want[0]["a"] * 10 == (units + bound) % (2 * bound + 1) - bound
    assert table.to_arrow().to_pylist() == want and table.get(1) == want[0]
    compact(table, policy="full")
    assert table.to_arrow().to_pylist() == want


@pytest.mark.parametrize(
    "typ, fn, words",
    [
        (pa.decimal128(10, 2), "sum", "declare 'a' as decimal128(38, 2)"),
        (pa.decimal256(40, 2), "sum", "needs precision 38"),
        (pa.decimal128(38, 2), "product", "store the factors as float64"),
    ],
)
def test_decimal_aggregates_that_could_not_be_stored_are_refused(
    tmp_path: Path, typ: pa.DataType, fn: str, words: str
) -> None:
    """Section 15: a decimal sum needs precision 38 (room for totals); a decimal product is
    refused (rounding at each step made it depend on how versions were batched: 0.05 x 0.05
    x 20 gave 0.00 or 0.05)."""
    schema = pa.schema([("k", pa.int64()), ("a", typ)])
    options = {"merge_engine": "aggregation", "fields.a.aggregate_function": fn}
    with pytest.raises(lsm3.InvalidInput, match=re.escape(words)):
        lsm3.create_table(str(tmp_path / "t"), schema, "k", options=options)
    assert not (tmp_path / "t").exists()
