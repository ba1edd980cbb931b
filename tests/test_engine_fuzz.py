"""Merge engines and changelog producers, differential: seeded random histories against a
plain-Python model, on what tests/test_merge_engines.py and tests/test_changelog_producers.py
leave out (partitioned tables with several buckets, a ``sequence_field`` with equal and
out-of-order sequence values, sequence groups with deletes and partial
compactions, changelogs of every producer across compactions, consumers with snapshot expiry,
time travel after compactions, an added column), and rules at the edges of the value domain
(integer overflow, NaN, empty strings, nested lists), found by it and kept as plain tests."""

from __future__ import annotations

import math
import random
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from helpers import clear_read_caches, rows_by_key

import lsm3
from compactor import compact
from compactor.maintenance import expire_snapshots
from lsm3.write.writer import Writer

# --------------------------------------------------------------------------- edge values


def test_an_integer_sum_that_overflows_wraps_and_every_read_still_works(tmp_path: Path) -> None:
    """Two commits of int8 100 summed to 200 (and int64 sums past 2**63, uint64 sums past
    2**64): reads, lookups, the changelog and compaction raised ArrowInvalid from a checked
    narrowing, so two valid writes made the table unreadable, while a single-run int64 sum
    wrapped silently. docs/FORMAT.md section 15: integer sums wrap in the column's width."""
    types = {"s8": pa.int8(), "s64": pa.int64(), "u": pa.uint64(), "c8": pa.int8()}
    schema = pa.schema([("id", pa.int64()), *types.items(), ("p8", pa.int8())])
    functions = {"s8": "sum", "s64": "sum", "u": "sum", "c8": "count", "p8": "product"}
    options = {"merge_engine": "aggregation"}
    options.update({f"fields.{c}.aggregate_function": f for c, f in functions.items()})
    t = lsm3.create_table(str(tmp_path / "t"), schema, "id", options=options)
    row = {"id": 1, "s8": 100, "s64": 2**62, "u": 2**63 + 5, "c8": 1, "p8": 16}
    for _ in range(2):
        with t.writer() as w:
            w.upsert(pa.Table.from_pylist([row] * 100, schema=schema))
    # 200 records: s8 = 20000 mod 256, s64 = 200 * 2**62 mod 2**64, u = 200 * (2**63 + 5)
    expected = {
        "id": 1,
        "s8": 20000 % 256 - (256 if 20000 % 256 >= 128 else 0),
        "s64": 0,
        "u": (200 * (2**63 + 5)) % 2**64,
        "c8": 200 - 256,
        "p8": 0,  # 16**200 is a multiple of 2**8
    }
    assert t.to_arrow().to_pylist() == [expected]
    assert t.get(1) == expected
    assert t.changelog(0).to_pylist()[-1] == {**expected, "_row_kind": "+U", "_snapshot_id": 2}
    compact(t, policy="full")
    assert t.to_arrow().to_pylist() == [expected]


def test_nan_wins_a_float_min_max_and_sum(tmp_path: Path) -> None:
    """docs/FORMAT.md section 15: float folds follow IEEE 754 (NaN propagates), on every read
    path, and after compaction; a NaN then stays until the key is deleted."""
    schema = pa.schema([("id", pa.int64()), ("lo", pa.float64()), ("hi", pa.float64())])
    schema = schema.append(pa.field("s", pa.float32()))
    functions = {"lo": "min", "hi": "max", "s": "sum"}
    options = {"merge_engine": "aggregation"}
    options.update({f"fields.{c}.aggregate_function": f for c, f in functions.items()})
    t = lsm3.create_table(str(tmp_path / "t"), schema, "id", options=options)
    nan = float("nan")
    for v in (1.0, nan, 2.0):
        with t.writer() as w:
            w.upsert(pa.Table.from_pylist([{"id": 1, "lo": v, "hi": v, "s": v}], schema))
    for read in (t.get(1), t.to_arrow().to_pylist()[0]):
        assert all(math.isnan(read[c]) for c in functions), read
    compact(t, policy="full")
    assert all(math.isnan(t.get(1)[c]) for c in functions)
    with t.writer() as w:
        w.delete([1])
        w.upsert(pa.Table.from_pylist([{"id": 1, "lo": 3.0, "hi": 3.0, "s": 3.0}], schema))
    assert t.get(1) == {"id": 1, "lo": 3.0, "hi": 3.0, "s": 3.0}


@pytest.mark.parametrize("layout", ["one commit", "two commits", "after a delete"])
def test_an_infinite_float_min_or_max_is_not_replaced_by_the_largest_finite_float(
    tmp_path: Path, layout: str
) -> None:
    """min(+inf, null) and max(-inf, null) gave +-1.797e308: the fold filled nulls (and the
    versions before a delete) with the largest finite float as the value that never wins,
    and it beat infinity."""
    schema = pa.schema([("id", pa.int64()), ("lo", pa.float64()), ("hi", pa.float32())])
    options = {"merge_engine": "aggregation"}
    options.update({"fields.lo.aggregate_function": "min", "fields.hi.aggregate_function": "max"})
    t = lsm3.create_table(str(tmp_path / "t"), schema, "id", options=options)
    inf = float("inf")
    first, then = {"id": 1, "lo": inf, "hi": -inf}, {"id": 1, "lo": None, "hi": None}
    if layout == "after a delete":
        first, then = {"id": 1, "lo": 1.0, "hi": 1.0}, {"id": 1, "lo": inf, "hi": -inf}
    with t.writer() as w:
        w.upsert([first])
        if layout == "one commit":
            w.upsert([then])
        elif layout == "after a delete":
            w.delete([1])
    if layout != "one commit":
        with t.writer() as w:
            w.upsert([then])
    expected = {"id": 1, "lo": inf, "hi": -inf}
    assert t.get(1) == expected
    assert t.to_arrow().to_pylist() == [expected]


def test_listagg_of_a_large_string_column(tmp_path: Path) -> None:
    """listagg accepts large_string columns at create time, but joining them raised
    ArrowNotImplementedError (binary_join has no kernel for large_string values with a
    string delimiter): the first flush holding two records of a key failed, so the writer
    could not commit."""
    schema = pa.schema([("id", pa.int64()), ("s", pa.large_string())])
    options = {"merge_engine": "aggregation", "fields.s.aggregate_function": "listagg"}
    options["fields.s.listagg_delimiter"] = "|"
    t = lsm3.create_table(str(tmp_path / "t"), schema, "id", options=options)
    with t.writer() as w:
        w.upsert(pa.Table.from_pylist([{"id": 1, "s": "a"}, {"id": 1, "s": ""}], schema))
    with t.writer() as w:
        w.upsert(pa.Table.from_pylist([{"id": 1, "s": "é"}], schema))
    assert t.get(1) == {"id": 1, "s": "a||é"}
    compact(t, policy="full")
    assert t.to_arrow().to_pylist() == [{"id": 1, "s": "a||é"}]


# --------------------------------------------------------------------------- sequence field


@pytest.mark.parametrize("engine", ["aggregation", "first_row", "partial_update"])
def test_a_sequence_field_is_refused_with_a_folding_engine(tmp_path: Path, engine: str) -> None:
    """A stored row folds a window of versions at its newest version's order, so a record that
    arrives later with a sequence value inside that window cannot be folded back into place
    (docs/FORMAT.md section 15): the value would depend on how writes were batched into
    commits and compacted (runs seq 6 b='A', seq 5 b='B', seq 7 b=null read 'A' or 'B' under
    partial_update by where a compaction cut them). create_table refuses the combination and
    says what to use instead; nothing is written."""
    schema = pa.schema([("id", pa.int64()), ("seq", pa.int64()), ("b", pa.string())])
    options = {"sequence_field": "seq", "merge_engine": engine}
    with pytest.raises(lsm3.InvalidInput, match="sequence_field cannot be combined") as info:
        lsm3.create_table(str(tmp_path / "t"), schema, "id", options=options)
    assert "merge_engine='deduplicate'" in str(info.value)
    if engine == "partial_update":
        assert "sequence_group" in str(info.value)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("producer", ["none", "lookup"])
def test_a_late_record_behind_a_delete_is_no_insert(tmp_path: Path, producer: str) -> None:
    """Key 1 deleted at seq 11, then an upsert at seq 2: the delete still wins, the key stays
    absent, yet the computed and ``lookup`` changes said ``+I`` (the deleted key had no old
    value to order the late row against, so it looked new)."""
    schema = pa.schema([("id", pa.int64()), ("seq", pa.int64()), ("a", pa.int64())])
    options = {"sequence_field": "seq", "changelog_producer": producer}
    t = lsm3.create_table(str(tmp_path / "t"), schema, "id", options=options)
    with t.writer() as w:
        w.upsert([{"id": 1, "seq": 10, "a": 1}])
    with t.writer() as w:
        w.delete([{"id": 1, "seq": 11}])
    with t.writer() as w:
        w.upsert([{"id": 1, "seq": 2, "a": 5}])
    assert t.to_arrow().num_rows == 0
    assert t.changelog(2, 3).num_rows == 0
    assert t.changes(2, 3).num_rows == 0


@pytest.mark.parametrize("producer", ["none", "lookup"])
def test_changes_of_a_composite_key_table_with_list_struct_and_map_columns(
    tmp_path: Path, producer: str
) -> None:
    """The batched lookup of a commit's keys narrowed a composite key with an Arrow semi join
    of whole rows, which cannot carry list, struct or map columns: ``changelog`` (``none``)
    raised ArrowInvalid and, under ``lookup``, every commit after the first did."""
    types = {"e": pa.list_(pa.list_(pa.int64())), "s": pa.struct([("x", pa.int64())])}
    types["m"] = pa.map_(pa.string(), pa.int64())
    schema = pa.schema([("p", pa.string()), ("id", pa.int64()), *types.items()])
    options = {"changelog_producer": producer}
    t = lsm3.create_table(str(tmp_path / "t"), schema, ["p", "id"], options=options)
    old = {"p": "x", "id": 1, "e": [[1]], "s": {"x": 1}, "m": [("k", 1)]}
    new = {**old, "e": [[2], []]}
    with t.writer() as w:
        w.upsert(pa.Table.from_pylist([old, {**old, "p": "y"}], schema=schema))
    with t.writer() as w:
        w.upsert(pa.Table.from_pylist([new], schema=schema))
    got = [(r["p"], r["e"], r["_row_kind"]) for r in t.changelog(1).to_pylist()]
    assert got == [("x", [[1]], "-U"), ("x", [[2], []], "+U")]


# --------------------------------------------------------------------------- the differential run

KEY = ["p", "id"]
PARTS = ["x", "y"]
IDS = range(5)
WORDS = [None, "", "x", "yy"]  # the empty string is a value (listagg joins it)
FLOATS = [None, -1.5, 0.0, 2.5]
NESTED = [None, [], [[1]], [[2, 3], []], [None]]  # collect concatenates lists of lists
VALUE_TYPES = {
    "a": pa.int64(),
    "b": pa.string(),
    "c": pa.float64(),
    "e": pa.list_(pa.list_(pa.int64())),
    "g": pa.int64(),
    "h": pa.string(),
}
ADDED = "z"  # the column a run may add part way
FUZZ_AGGREGATES = {"a": "sum", "b": "listagg", "c": "min", "e": "collect", "g": "count"}
FUZZ_ENGINES: dict[str, dict[str, Any]] = {
    "deduplicate": {},
    "first_row": {"merge_engine": "first_row"},
    "partial_update": {"merge_engine": "partial_update", "fields.g.sequence_group": "h"},
    "aggregation": {
        "merge_engine": "aggregation",
        "fields.b.listagg_delimiter": "|",
        "fields.h.aggregate_function": "last_value",
        **{f"fields.{c}.aggregate_function": f for c, f in FUZZ_AGGREGATES.items()},
    },
}
FUZZ_OPTIONS = {
    "row_group_rows": 2,
    "memtable_bytes": 2048,
    "num_sorted_run_trigger": 2,
    "num_sorted_run_stop_trigger": 100,
    "l0_file_trigger": 2,
    "level_base_bytes": 1,
}
Version = tuple[tuple[int, ...], bool, dict[str, Any]]  # (order, is a delete, row as written)


def fuzz_fold(engine: str, versions: list[Version]) -> dict[str, Any] | None:
    """docs/FORMAT.md section 15: the upserts after the last delete, in order, folded."""
    ups: list[dict[str, Any]] = []
    for _, is_delete, row in sorted(versions, key=lambda v: v[0]):
        ups = [] if is_delete else [*ups, row]
    if not ups:
        return None
    newest, names = ups[-1], list(ups[-1])
    if engine == "deduplicate":
        return dict(newest)
    if engine == "first_row":
        return dict(ups[0])
    out = {c: newest[c] for c in [*KEY, "seq"] if c in newest}
    values = [c for c in names if c not in out]
    if engine == "partial_update":
        for c in values:
            given = [r[c] for r in ups if r.get(c) is not None]
            out[c] = given[-1] if given else None
        grouped = [r for r in ups if r.get("g") is not None]
        winner = max(enumerate(grouped), key=lambda p: (p[1]["g"], p[0]))[1] if grouped else {}
        out["g"], out["h"] = winner.get("g"), winner.get("h")
        return out
    for c in values:
        column = [r.get(c) for r in ups]
        present = [v for v in column if v is not None]
        function = FUZZ_AGGREGATES.get(c, "last_value" if c == "h" else "last_non_null_value")
        if function == "last_value":
            out[c] = column[-1]
        elif not present:
            out[c] = None
        elif function == "sum":
            out[c] = sum(present)
        elif function == "count":
            out[c] = len(present)
        elif function == "min":
            out[c] = min(present)
        elif function == "listagg":
            out[c] = "|".join(present)
        elif function == "collect":
            out[c] = [x for v in present for x in v]
        else:
            out[c] = present[-1]
    return out


class FuzzRun:
    """One seeded history on one table: writes (upserts, deletes, CDC; sometimes two
    writers on one base), compactions of every policy, an added column, reopenings,
    consumer reads and snapshot expiry; every read path is compared with the model after
    every step, and each snapshot's changelog with the states around it."""

    def __init__(self, root: Path, engine: str, producer: str, sequence: bool, seed: int):
        self.rng = random.Random(seed)
        self.engine, self.producer = engine, producer
        self.sequence = sequence
        fields = [("p", pa.string()), ("id", pa.int64()), *VALUE_TYPES.items()]
        options = {**FUZZ_OPTIONS, **FUZZ_ENGINES[engine], "changelog_producer": producer}
        if sequence:
            fields.insert(2, ("seq", pa.int64()))
            options["sequence_field"] = "seq"
        self.columns = [n for n, _ in fields]
        self.table = lsm3.create_table(
            str(root / "t"), pa.schema(fields), KEY, partition_by="p", buckets=2, options=options
        )
        self.versions: dict[tuple[str, int], list[Version]] = {}
        self.history: dict[int, dict[tuple[str, int], dict[str, Any]]] = {0: {}}
        self.written = 0  # records so far: the commit-order part of a version's order
        self.seq = 0
        self.full_state: dict[tuple[str, int], dict[str, Any]] = {}  # full_compaction's view
        self.consumer = self.table.consumer("fuzz", 0)
        self.consumed: dict[tuple[str, int], dict[str, Any]] = {}
        self.added = False

    # ----------------------------------------------------------------- the model

    def model(self) -> dict[tuple[str, int], dict[str, Any]]:
        out = {}
        for key, versions in self.versions.items():
            value = fuzz_fold(self.engine, versions)
            if value is not None:
                out[key] = self.norm(value)
        return out

    def rows(self, table: pa.Table) -> dict[tuple[str, int], dict[str, Any]]:
        """A read as ``{key: row}``, through :meth:`norm` (an older schema lacks a column)."""
        return {k: self.norm(r) for k, r in rows_by_key(table, KEY).items()}

    def norm(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row with every column of the newest schema (an added column reads as null)."""
        names = [*self.columns, *([ADDED] if self.added else [])]
        return {c: row.get(c) for c in names}

    def next_seq(self) -> int:
        """Sequence values: ties and, under deduplicate, late values (smaller than ones
        already written); the folding engines get non-decreasing values, as their folds
        depend on order (see the xfail tests above)."""
        if self.engine == "deduplicate":
            return self.rng.randrange(0, 12)
        self.seq += self.rng.choice([0, 0, 1, 2])
        return self.seq

    def record(self, key: tuple[str, int], is_delete: bool, row: dict[str, Any]) -> Version:
        self.written += 1
        order = (row["seq"], self.written) if self.sequence else (self.written,)
        return (order, is_delete, row)

    def new_row(self, key: tuple[str, int], omitted: set[str]) -> dict[str, Any]:
        row: dict[str, Any] = {"p": key[0], "id": key[1]}
        if self.sequence:
            row["seq"] = self.next_seq()
        choices = {"a": [None, -2, 0, 3, 7], "b": WORDS, "c": FLOATS, "e": NESTED}
        choices.update({"g": [None, 0, 1, 2], "h": WORDS, ADDED: [None, 1, 2]})
        for c in [*VALUE_TYPES, *([ADDED] if self.added else [])]:
            row[c] = None if c in omitted else self.rng.choice(choices[c])
        return row

    # ----------------------------------------------------------------- steps

    def write(
        self, writer: Writer
    ) -> tuple[list[tuple[tuple[str, int], Version]], list[dict[str, Any]]]:
        """Some calls on ``writer``; returns the keys' versions and what ``input`` logs."""
        rng = self.rng
        versions: list[tuple[tuple[str, int], Version]] = []
        logged: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 3)):
            keys = [(rng.choice(PARTS), rng.choice(IDS)) for _ in range(rng.randint(1, 4))]
            what = rng.choice(["upsert", "upsert", "delete", "cdc"])
            folding = self.engine in ("partial_update", "aggregation")
            omitted = {c for c in VALUE_TYPES if folding and rng.random() < 0.3}
            if what == "upsert":
                rows = [self.new_row(k, omitted) for k in keys]
                names = [c for c in rows[0] if c not in omitted]
                writer.upsert(pa.Table.from_pylist([{c: r[c] for c in names} for r in rows]))
                for k, r in zip(keys, rows, strict=True):
                    versions.append((k, self.record(k, False, r)))
                    logged.append({**r, "_row_kind": "+I"})
            elif what == "delete":
                rows = [{"p": p, "id": i} for p, i in keys]
                if self.sequence:
                    for r in rows:
                        r["seq"] = self.next_seq()
                writer.delete(rows)
                for k, r in zip(keys, rows, strict=True):
                    versions.append((k, self.record(k, True, r)))
                    logged.append({**r, "_row_kind": "-D"})
            else:
                events = []
                for k in keys:
                    op = rng.choice(["c", "u", "d", "+I", "+U", "-U", "-D"])
                    r = self.new_row(k, set())
                    events.append({**r, "op": op})
                    kind = {"c": "+I", "u": "+U", "d": "-D"}.get(op, op)
                    stored = r if kind != "-D" else {c: r[c] for c in ["p", "id", "seq"] if c in r}
                    logged.append({**r, "_row_kind": kind})
                    if kind != "-U":
                        versions.append((k, self.record(k, kind == "-D", stored)))
                writer.apply_cdc(events)
        return versions, logged

    def commit_writes(self) -> None:
        """One writer's commit, or (sometimes) two writers that built on one snapshot: the
        second commits after the first landed, so it rebases (and ``lookup`` recomputes)."""
        two = self.rng.random() < 0.3
        writers = [self.table.writer()]
        if two:
            writers.append(lsm3.open_table(self.table.uri).writer())
        done: list[tuple[list[tuple[tuple[str, int], Version]], list[dict[str, Any]]]] = []
        for w in writers:
            done.append(self.write(w))
        for w, (versions, logged) in zip(writers, done, strict=True):
            before = self.table.refresh()
            snap = w.commit()
            w.close()
            if snap is None:  # only before-images (-U) written: nothing to commit
                assert not versions
                continue
            assert before is None or snap.snapshot_id == before.snapshot_id + 1
            for key, version in versions:
                self.versions.setdefault(key, []).append(version)
            self.history[snap.snapshot_id] = self.model()
            self.check_commit_changelog(snap.snapshot_id, logged)

    def compact(self) -> None:
        policy = self.rng.choice(["universal", "leveled", "full"])
        compact(self.table, policy=policy, owner="fuzz", max_rounds=self.rng.randint(1, 2))
        snap = self.table.refresh()
        if snap is None or snap.snapshot_id in self.history:
            return
        newest = max(self.history)
        for sid in range(newest + 1, snap.snapshot_id + 1):
            self.history[sid] = self.model()
            self.check_compaction_changelog(sid)
        if policy == "full" and self.producer == "full_compaction":
            assert self.full_state == self.history[snap.snapshot_id]

    def add_column(self) -> None:
        sid = self.table.add_column(ADDED, pa.int64()).snapshot_id
        self.added = True
        self.history = {s: {k: self.norm(r) for k, r in h.items()} for s, h in self.history.items()}
        self.full_state = {k: self.norm(r) for k, r in self.full_state.items()}
        self.consumed = {k: self.norm(r) for k, r in self.consumed.items()}
        self.history[sid] = self.model()
        assert self.table.changelog(sid - 1, sid).num_rows == 0

    def consume(self) -> None:
        """The consumer reads everything new, applies it, commits; then snapshots expire
        (the consumer's position and later ones are kept)."""
        newest = self.table.refresh()
        if newest is None:
            return
        end = newest.snapshot_id
        changes = self.consumer.read(end)
        if self.producer == "full_compaction":
            return  # (the full results are checked at each full compaction)
        if self.producer != "input":
            self.consumed = self.apply(self.consumed, changes)
            assert self.consumed == self.history[end], "consumer"
        self.consumer.commit(end)
        if self.rng.random() < 0.5:
            expire_snapshots(self.table, retain_last=1, older_than=0)
            kept = {s.snapshot_id for s in self.table.snapshots()}
            assert end in kept and min(kept) <= end
            self.history = {s: h for s, h in self.history.items() if s in kept}

    # ----------------------------------------------------------------- checks

    def apply(
        self, state: dict[tuple[str, int], dict[str, Any]], changes: pa.Table
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """Complete changes applied to ``state``; every -U/-D carries the exact old values
        and a key changes at most once per snapshot."""
        out = dict(state)
        seen: dict[tuple[int, tuple[str, int]], list[str]] = {}
        for row in changes.to_pylist():
            kind, sid = row.pop("_row_kind"), row.pop("_snapshot_id")
            row = self.norm(row)
            key = (row["p"], row["id"])
            seen.setdefault((sid, key), []).append(kind)
            if kind in ("-U", "-D"):
                assert out.get(key) == row, f"{kind} at {sid} must carry the old values"
                if kind == "-D":
                    del out[key]
            else:
                assert (kind == "+I") == (key not in out), f"{kind} at {sid}: {row}"
                out[key] = row
        for (sid, key), kinds in seen.items():
            assert kinds in (["+I"], ["-U", "+U"], ["-D"]), f"{key} at {sid}: {kinds}"
        return out

    def check_commit_changelog(self, sid: int, logged: list[dict[str, Any]]) -> None:
        got = self.table.changelog(sid - 1, sid)
        assert set(got.column("_snapshot_id").to_pylist()) <= {sid}
        if self.producer == "full_compaction":
            assert got.num_rows == 0, "writers store no changes under full_compaction"
        elif self.producer == "input":  # each key's records in write order
            rows = [self.norm(r) | {"_row_kind": r["_row_kind"]} for r in got.to_pylist()]
            want = [self.norm(r) | {"_row_kind": r["_row_kind"]} for r in logged]
            per_key: dict[tuple[str, int], list[Any]] = {}
            for r in want:
                per_key.setdefault((r["p"], r["id"]), []).append(r)
            for r in rows:
                expected = per_key[(r["p"], r["id"])].pop(0)
                assert r == expected, "input stores the records as written"
            assert not any(per_key.values()), "every record logged"
        elif sid - 1 in self.history:
            applied = self.apply(self.history[sid - 1], got)
            assert applied == self.history[sid], (f"commit {sid}", got.to_pylist(), self.versions)

    def check_compaction_changelog(self, sid: int) -> None:
        got = self.table.changelog(sid - 1, sid)
        if self.producer == "full_compaction":
            self.full_state = self.apply(self.full_state, got)
        else:
            assert got.num_rows == 0, "a compaction changes no value"

    def check_reads(self) -> None:
        """Every read path gives the model; so does time travel to a snapshot kept."""
        table = self.table
        table.refresh()
        expected = self.model()
        assert self.history[max(self.history)] == expected
        assert rows_by_key(table.to_arrow(), KEY) == expected
        every = [(p, i) for p in PARTS for i in IDS]
        assert table.get_many(every) == [expected.get(k) for k in every]
        one = self.rng.choice(every)
        assert table.get(one) == expected.get(one)
        check = self.rng.choice(["batches", "dataset", "filter"])  # one of the slower paths
        if check == "batches":
            section = self.rng.randint(1, 4)
            got = table.to_batches(section_rows=section).read_all()
            assert rows_by_key(got, KEY) == expected
        elif check == "dataset":
            assert rows_by_key(table.to_pyarrow_dataset().to_table(), KEY) == expected
        else:
            part, below = self.rng.choice(PARTS), self.rng.choice(IDS)
            got = table.to_arrow(filter=(pc.field("p") == part) & (pc.field("id") <= below))
            want = {k: v for k, v in expected.items() if k[0] == part and k[1] <= below}
            assert rows_by_key(got, KEY) == want
        sid = self.rng.choice(sorted(self.history))
        if sid:
            assert self.rows(table.to_arrow(snapshot_id=sid)) == self.history[sid], sid
            back = self.rng.choice([s for s in self.history if s <= sid])
            self.check_net_changes(back, sid)

    def check_net_changes(self, a: int, b: int) -> None:
        """``changes(a, b)``: +I/+U with the values at b, -D with those at a, for every key
        whose value differs (a touched key whose value is equal may come as +U)."""
        before, after = self.history[a], self.history[b]
        got: dict[tuple[str, int], dict[str, Any]] = {}
        for row in self.table.changes(a, b).to_pylist():
            kind = row.pop("_row_kind")
            row = self.norm(row)
            key = (row["p"], row["id"])
            assert key not in got
            got[key] = row
            if kind == "-D":
                assert key in before and key not in after and row == before[key]
            else:
                assert (kind == "+I") == (key not in before) and row == after.get(key), kind
        for key in before.keys() | after.keys():
            if before.get(key) != after.get(key):
                assert key in got, f"changes({a}, {b}) lacks {key}"

    def run(self, steps: int) -> None:
        for _ in range(steps):
            step = self.rng.choice(["write"] * 5 + ["compact"] * 2 + ["consume", "reopen", "add"])
            if step == "write":
                self.commit_writes()
            elif step == "compact":
                self.compact()
            elif step == "consume":
                self.consume()
            elif step == "reopen":
                self.table = lsm3.open_table(self.table.uri)
            elif not self.added:
                self.add_column()
            self.check_reads()
        compact(self.table, policy="full", owner="fuzz")
        self.compact_history_after_full()

    def compact_history_after_full(self) -> None:
        snap = self.table.refresh()
        if snap is not None and snap.snapshot_id not in self.history:
            for sid in range(max(self.history) + 1, snap.snapshot_id + 1):
                self.history[sid] = self.model()
                self.check_compaction_changelog(sid)
            if self.producer == "full_compaction":
                assert self.full_state == self.model()
        self.check_reads()
        fresh = lsm3.open_table(self.table.uri)
        kept = {s.snapshot_id for s in fresh.snapshots()}
        for sid, expected in self.history.items():
            if sid in kept:
                assert self.rows(fresh.to_arrow(snapshot_id=sid)) == expected, sid


@pytest.mark.parametrize(
    "engine, sequence",
    [(e, False) for e in sorted(FUZZ_ENGINES)] + [("deduplicate", True)],
    ids=[*sorted(FUZZ_ENGINES), "deduplicate-sequence-field"],
)
@pytest.mark.parametrize("producer", ["none", "input", "lookup", "full_compaction"])
def test_a_seeded_history_reads_as_the_model(
    tmp_path: Path, engine: str, producer: str, sequence: bool
) -> None:
    clear_read_caches()  # process-wide caches: a rerun must not depend on earlier tests
    seed = zlib.crc32(f"{engine}/{producer}/{sequence}".encode())
    FuzzRun(tmp_path, engine, producer, sequence, seed).run(STEPS)


STEPS = 12
