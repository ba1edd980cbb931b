"""Partition pruning of manifests (docs/FORMAT.md, section 4a): a filtered scan replays only
the listed manifests whose partition bounds its filter admits, and gets exactly the live files
of the partitions the filter admits, across appends, compactions, folds, merges and manifest
rewrites; after ``rewrite_manifests`` a scan of one partition fetches only its manifests."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsm3
from compactor import rewrite_manifests
from lsm3.format.metadata import DataFile
from lsm3.read.prune import live_files_for
from lsm3.testing.faults import FaultyStore
from tests.test_manifest_lists import SCHEMA, SMALL, commit, synthetic

TWO = pa.schema([("p", pa.int64()), ("q", pa.string()), ("id", pa.int64())])


def two_part_file(i: int, p: int, q: str) -> DataFile:
    return replace(
        synthetic(i),
        path=f"data/p={p}/q={q}/bucket-0/{uuid.uuid4().hex}.parquet",
        partition=(p, q),
        min_key=(p, q, i),
        max_key=(p, q, i),
    )


def one_part_file(i: int, p: int) -> DataFile:
    return replace(
        synthetic(i),
        path=f"data/p={p}/bucket-0/{uuid.uuid4().hex}.parquet",
        partition=(p,),
        min_key=(p, i),
        max_key=(p, i),
    )


FILTERS = [
    pc.field("p") == 1,
    pc.field("p") >= 2,
    (pc.field("p") == 0) & (pc.field("q") == "b"),
    pc.field("q") == "a",
    pc.field("p").isin([0, 3]),
    (pc.field("p") == 2) & (pc.field("id") > 5),
    pc.field("id") > 5,
]


def matches(f: DataFile, expr: pc.Expression) -> bool:
    """Whether some row of the file's partition can pass ``expr`` (ids 0, 6 and 100 witness
    every id condition of FILTERS)."""
    p, q = f.partition
    probe = pa.table({"p": [p] * 3, "q": [q] * 3, "id": [0, 6, 100]})
    return probe.filter(expr).num_rows > 0


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_pruned_live_files_are_exactly_those_of_admitted_partitions(seed: int) -> None:
    rng = random.Random(seed)
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, TWO, ["p", "q", "id"], partition_by=["p", "q"], options=SMALL)
    live: dict[str, DataFile] = {}
    n = 0
    for _ in range(30):
        op = rng.choices(["append", "compact", "rewrite"], [8, 3, 1])[0]
        if op == "append":
            p = rng.randint(0, 3)  # a commit touches one or two partitions
            added = [two_part_file(n + i, p, rng.choice("ab")) for i in range(rng.randint(1, 7))]
            if rng.random() < 0.3:
                added.append(two_part_file(n + 9, rng.randint(0, 3), "a"))
            n += 10
            commit(table, added)
            live.update((f.path, f) for f in added)
        elif op == "compact" and live:
            gone = rng.sample(sorted(live), rng.randint(1, min(6, len(live))))
            keep = live[gone[0]]
            out = two_part_file(n, keep.partition[0], keep.partition[1])
            n += 1
            commit(table, [out], [live.pop(p) for p in gone if p in live])
            live[out.path] = out
        elif op == "rewrite":
            rewrite_manifests(table)
        fresh = lsm3.open_table(uri)
        snap = fresh.current_snapshot()
        for expr in FILTERS:
            got = {f.path for f in live_files_for(fresh.manifests, snap, fresh.table_schema, expr)}
            wanted = {p for p, f in live.items() if matches(f, expr)}
            assert wanted <= got <= set(live), (expr, got - set(live), wanted - got)


def test_after_a_rewrite_a_scan_of_one_partition_fetches_its_manifests_only() -> None:
    uri = f"memory://{uuid.uuid4().hex}"
    options = {**SMALL, "manifest_target_entries": 8}
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=options)
    n = 0
    for _ in range(12):  # every commit touches all 4 partitions
        added = [one_part_file(n + i, i % 4) for i in range(8)]
        n += 8
        commit(table, added)
    expr = pc.field("p") == 2

    def manifest_gets() -> tuple[int, int]:
        store = FaultyStore(lsm3.open_table(uri).store, record=True)
        fresh = lsm3.open_table(store)
        snap = fresh.current_snapshot()
        store.calls.clear()
        files = live_files_for(fresh.manifests, snap, fresh.table_schema, expr)
        gets = [k for op, k in store.calls if op == "get" and k.startswith("manifest/manifest-")]
        every = fresh.files_of(snap)
        assert {f.path for f in every if f.partition == (2,)} <= {f.path for f in files}
        return len(gets), len(fresh.manifests.all_manifests(snap))  # type: ignore[arg-type]

    before, total = manifest_gets()
    assert before == total  # writers' manifests hold every partition: nothing to skip
    rewrite_manifests(table)
    after, total = manifest_gets()
    assert total == 12 and after == 3  # 24 files of p=2, cut at 8 per manifest
