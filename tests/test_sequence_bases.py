"""Sequence bases (docs/FORMAT.md, section 4b): a delta manifest holds local sequence numbers
and the snapshot that commits it gives it its base, so a commit that loses the race for a
snapshot id is rebased without writing its delta again; the effective sequence numbers
readers see are the same as when the offset was baked into the entries; tables written in
the earlier layouts (offsets in the entries, version-1 lists, version-2 snapshots) still
read; readers of the earlier versions refuse what they would misread."""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsm3
from lsm3.errors import CorruptMetadata, UnsupportedFormatVersion
from lsm3.format import manifest_list as manifest_list_module
from lsm3.format import metadata as metadata_module
from lsm3.format.manifest_list import ManifestList, ManifestMeta
from lsm3.format.manifests import write_manifest
from lsm3.format.metadata import DataFile, ManifestEntry, Snapshot
from lsm3.testing.faults import FaultyStore
from lsm3.write.log import snapshot_key
from tests.test_manifest_lists import SCHEMA, SMALL, commit, synthetic

KV = pa.schema([("id", pa.int64()), ("v", pa.string())])


def delta_puts(store: FaultyStore) -> list[str]:
    return [k for op, k in store.calls if op.startswith("put") and k.startswith("manifest/mani")]


@pytest.mark.parametrize("races", [1, 3])
def test_a_rebase_reuses_its_delta_and_orders_after_the_winners(races: int) -> None:
    uri = f"memory://{uuid.uuid4().hex}"
    lsm3.create_table(uri, KV, ["id"], options={"manifest_merge_threshold": 100})  # no folds
    rival = lsm3.open_table(uri).writer("rival")
    won: list[int] = []

    def rival_commits() -> None:  # runs just before each of our snapshot puts
        rival.upsert(pa.table({"id": [1, 2], "v": [f"rival{len(won)}", "rival"]}, schema=KV))
        won.append(rival.commit().snapshot_id)

    store = FaultyStore(lsm3.open_table(uri).store, record=True)
    store.pause("put_if_absent", "snapshot/*", rival_commits, times=races)
    ours = lsm3.open_table(store).writer("ours")
    ours.upsert(pa.table({"id": [1, 3], "v": ["ours", "ours"]}, schema=KV))
    ours.upsert(pa.table({"id": [3], "v": ["ours again"]}, schema=KV))
    snap = ours.commit()

    assert len(won) == races and snap.snapshot_id == won[-1] + 1
    assert len(delta_puts(store)) == 1  # written once, reused by every rebase
    parent = lsm3.open_table(uri).snapshot(won[-1])
    assert parent is not None and snap.delta_offset == parent.next_sequence
    fresh = lsm3.open_table(uri)
    rows = {r["id"]: r["v"] for r in fresh.to_arrow().to_pylist()}
    assert rows == {1: "ours", 2: "rival", 3: "ours again"}  # our commit landed last
    mine = {e.file.path for e in fresh.manifests.delta_entries(snap, fresh.table_schema)}
    seqs = [f.effective_min_seq for f in fresh.files_of(snap) if f.path in mine]
    assert seqs and min(seqs) >= parent.next_sequence


def test_every_snapshot_read_equals_the_same_history_written_by_hand() -> None:
    """A model of sequence numbering: every append of k local numbers takes the parent's
    ``next_sequence`` as its offset; compaction output keeps the numbers it has. The
    live files' effective offsets of every snapshot, across folds, size-tier merges,
    compactor rewrites and lost races, are the model's."""
    run_sequence_model(random.Random(7), steps=60)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_effective_sequence_numbers_follow_a_model(seed: int) -> None:
    run_sequence_model(random.Random(seed), steps=30)


def run_sequence_model(rng: random.Random, steps: int) -> None:
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=SMALL)
    offsets: dict[str, int] = {}  # live path -> effective seq offset
    files: dict[str, DataFile] = {}
    history: dict[int, dict[str, int]] = {}
    next_seq, n = 0, 0

    def append(t: lsm3.Table, k: int) -> Snapshot:
        nonlocal next_seq, n
        added = [synthetic(n + i) for i in range(k)]
        n += k
        snap = commit(t, added, writer_id=rng.choice([None, "a"]))
        offsets.update((f.path, next_seq) for f in added)
        files.update((f.path, f) for f in added)
        next_seq += 1
        history[snap.snapshot_id] = dict(offsets)
        return snap

    for _ in range(steps):
        op = rng.choices(["append", "race", "compact"], [6, 3, 2])[0]
        if op == "append":  # 7 files: a large manifest, listed with its base, never merged
            append(table, rng.choice([1, 2, 3, 7]))
        elif op == "race":  # a rival appends just before our snapshot put: we rebase
            store = FaultyStore(lsm3.open_table(uri).store)
            rival = lsm3.open_table(uri)
            store.pause("put_if_absent", "snapshot/*", lambda r=rival: append(r, 1))
            append(lsm3.open_table(store), rng.choice([1, 2, 7]))
        elif offsets:
            gone = rng.sample(sorted(offsets), rng.randint(1, min(4, len(offsets))))
            keep = max(offsets[p] for p in gone)
            out = synthetic(n).with_offset(keep)  # compaction keeps effective numbers
            n += 1
            snap = commit(table, [out], [files[p].with_offset(offsets[p]) for p in gone])
            for p in gone:
                del offsets[p]
            offsets[out.path] = keep
            files[out.path] = out
            history[snap.snapshot_id] = dict(offsets)
        table = lsm3.open_table(uri)
    for sid, expected in history.items():
        got = {f.path: f.seq_offset for f in table.files_of(table.snapshot(sid))}
        assert got == expected, sid
    snap = table.current_snapshot()
    assert snap is not None and snap.next_sequence == next_seq


def _old_file(i: int, offset: int) -> DataFile:
    return synthetic(i).with_offset(offset)


def test_a_table_in_the_version_2_layout_still_reads_and_accepts_commits() -> None:
    """Offsets baked into the entries, a version-1 list, a version-2 snapshot: what lsm3
    wrote before sequence bases. Its files keep their offsets; new commits build on it."""
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=SMALL)
    schema = table.table_schema
    listed = [_old_file(i, i) for i in range(4)]
    tail = [_old_file(10 + i, 4 + i) for i in range(2)]
    m_listed = write_manifest(table.store, [ManifestEntry("add", f) for f in listed], schema)
    m_tail = [write_manifest(table.store, [ManifestEntry("add", f)], schema) for f in tail]
    list_doc = {
        "format": "lsm3-manifest-list",
        "format_version": 1,
        "manifests": [{"path": m_listed, "entries": 4, "removes": 0}],
        "writers": {"w": {"commit_id": "c0", "snapshot_id": 1, "metadata": {"offset": 3}}},
    }
    list_path = "manifest/list-" + uuid.uuid4().hex + ".json"
    table.store.put_if_absent(list_path, json.dumps(list_doc).encode())
    doc = {
        "format": "lsm3",
        "format_version": 2,
        "snapshot_id": 1,
        "parent_id": None,
        "schema_id": 0,
        "timestamp_ms": 1,
        "kind": "APPEND",
        "manifest_list": list_path,
        "manifests": m_tail,
        "next_sequence": 6,
        "writer_id": None,
        "commit_id": "c1",
        "metadata": {},
        "summary": {"total_files": 6, "total_rows": 6, "total_bytes": 600},
        "writers": {},
        "compactor": None,
        "delta_manifest": m_tail[-1],
    }
    table.store.put_if_absent(snapshot_key(1), json.dumps(doc).encode())
    table = lsm3.open_table(uri)
    expected = {f.path: f.seq_offset for f in [*listed, *tail]}
    assert {f.path: f.seq_offset for f in table.files_of(table.current_snapshot())} == expected
    current = table.current_snapshot()
    assert current is not None
    assert [e.file.seq_offset for e in table.manifests.delta_entries(current, schema)] == [5]
    new = [synthetic(100 + i) for i in range(3)]
    snaps = [commit(table, [f]) for f in new]  # folds the old tail into a new list
    expected.update((f.path, 6 + i) for i, f in enumerate(new))
    fresh = lsm3.open_table(uri)
    assert {f.path: f.seq_offset for f in fresh.files_of(fresh.current_snapshot())} == expected
    assert any(s.manifest_list != list_path for s in snaps)
    assert fresh.last_commit("w").metadata == {"offset": 3}  # type: ignore[union-attr]


def test_version_rules_old_readers_refuse_what_they_would_misread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=SMALL)
    first = commit(table, [synthetic(0)])
    second = commit(table, [synthetic(1)])
    assert first.format_version == 1 and first.delta_offset == 0  # nothing to give a base
    assert second.format_version == 3 and second.delta_offset == 1
    raw = json.loads(table.store.get(snapshot_key(2)))
    assert raw["format_version"] == 3 and raw["delta_offset"] == 1
    entries = json.loads(table.store.get(second.delta_manifest or ""))["entries"]
    assert [e["file"]["seq_offset"] for e in entries] == [0]  # local: the base is the snapshot's
    for i in range(2, 8):
        commit(table, [synthetic(i)])
    snap = table.current_snapshot()
    assert snap is not None and snap.manifest_list is not None
    listed = table.manifests.listed(snap)
    raw_list = json.loads(table.store.get(snap.manifest_list))
    if any(m.seq_base for m in listed.manifests):
        assert raw_list["format_version"] == 2
    # A reader of snapshot version 2 refuses version 3; one of list version 1 refuses 2.
    monkeypatch.setattr(metadata_module, "SNAPSHOT_FORMAT_VERSION", 2)
    with pytest.raises(UnsupportedFormatVersion):
        Snapshot.decode(table.store.get(snapshot_key(2)), "snapshot 2")
    monkeypatch.setattr(manifest_list_module, "MANIFEST_LIST_VERSION", 1)
    based = ManifestList((ManifestMeta("manifest/manifest-x.json", 1, 0, 5),))
    with pytest.raises(UnsupportedFormatVersion):
        ManifestList.decode(based.encode(), "list")
    ManifestList.decode(ManifestList((ManifestMeta("manifest/m.json", 1),)).encode(), "list")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"manifest_offsets": [1, 2]}, id="offsets-length"),
        pytest.param({"manifest_offsets": [-1]}, id="negative-base"),
        pytest.param({"manifest_offsets": ["1"]}, id="string-base"),
        pytest.param({"delta_offset": -3}, id="negative-delta-offset"),
        pytest.param({"delta_offset": True}, id="bool-delta-offset"),
    ],
)
def test_malformed_sequence_bases_are_refused(change: dict[str, Any]) -> None:
    snap = Snapshot(1, None, 0, 1, "APPEND", ("manifest/manifest-a.json",), 1)
    doc = {**snap.to_json(), **change, "format_version": 3}
    with pytest.raises(CorruptMetadata):
        Snapshot.decode(json.dumps(doc).encode(), "snapshot 1")


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param({"seq_base": -1}, id="negative-base"),
        pytest.param({"partition_min": [1]}, id="min-without-max"),
        pytest.param({"partition_min": 1, "partition_max": 2}, id="bounds-not-lists"),
    ],
)
def test_malformed_list_entries_are_refused(meta: dict[str, Any]) -> None:
    doc = {
        "format": "lsm3-manifest-list",
        "format_version": 2,
        "manifests": [{"path": "manifest/m.json", "entries": 1, **meta}],
        "writers": {},
    }
    with pytest.raises(CorruptMetadata):
        ManifestList.decode(json.dumps(doc).encode(), "list")


def test_a_lost_fold_leaves_its_list_and_merge_to_the_winner() -> None:
    """Committers that fold the same parent derive the same list, parts and merged manifest
    and name them by their content: the one that loses the race wrote nothing that is wasted,
    and no second copy is written."""
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=SMALL)
    commit(table, [synthetic(i) for i in range(3)])
    parent = commit(table, [synthetic(i) for i in range(3, 6)])
    assert len(parent.manifests) == SMALL["manifest_merge_threshold"]  # the next one folds
    inner = table.store
    objects_before = {o.key for o in inner.list("manifest/")}
    rival = lsm3.open_table(uri)
    landed: list[Snapshot] = []
    store = FaultyStore(lsm3.open_table(uri).store)
    store.pause("put_if_absent", "snapshot/*", lambda: landed.append(commit(rival, [synthetic(6)])))
    ours = commit(lsm3.open_table(store), [synthetic(7), synthetic(8)])
    (theirs,) = landed
    assert (
        theirs.snapshot_id == parent.snapshot_id + 1 and ours.snapshot_id == theirs.snapshot_id + 1
    )
    assert theirs.manifest_list is not None and ours.manifest_list == theirs.manifest_list
    new = {o.key for o in inner.list("manifest/")} - objects_before
    lists = [k for k in new if k.startswith("manifest/list-")]
    deltas = {theirs.delta_manifest, ours.delta_manifest}
    merged = [k for k in new if k.startswith("manifest/manifest-") and k not in deltas]
    parts = {m.path for m in table.manifests.manifest_list(ours.manifest_list).parts}
    assert set(lists) == {ours.manifest_list, *parts} and len(merged) == 1, (lists, merged)
    fresh = lsm3.open_table(uri)
    assert len(fresh.files()) == 9
    got = {f.path: f.seq_offset for f in fresh.files_of(fresh.current_snapshot())}
    assert sorted(got.values()) == [0, 0, 0, 1, 1, 1, 2, 3, 3]


def test_a_shared_object_older_than_the_commit_is_not_reused() -> None:
    """Orphan cleanup may be deleting an unreferenced object older than its grace period; a
    commit reuses a content-named object only if it is no older than the commit's own oldest
    upload, else it writes the same bytes under a fresh name."""
    table = lsm3.create_table(f"memory://{uuid.uuid4().hex}", SCHEMA, ["p", "id"])
    listed = ManifestList((ManifestMeta("manifest/manifest-a.json", 1),))
    first = table.manifests.write_list(listed, reuse_since_ms=0)
    assert table.manifests.write_list(listed, reuse_since_ms=0) == first  # reused
    later = time.time_ns() // 1_000_000 + 600_000
    fresh = table.manifests.write_list(listed, reuse_since_ms=later)
    assert fresh != first and table.store.get(fresh) == table.store.get(first)


def test_a_fold_written_by_a_rival_between_look_and_put_is_reused() -> None:
    """Two committers folding one parent may both find the list absent and both put it: the
    one whose put is refused uses the rival's object (same name, same bytes) and writes no
    second copy under a fresh name."""
    table = lsm3.create_table(f"memory://{uuid.uuid4().hex}", SCHEMA, ["p", "id"])
    listed = ManifestList((ManifestMeta("manifest/manifest-a.json", 1),))
    inner = table.store
    store = FaultyStore(inner)
    rival = lsm3.open_table(inner)
    store.pause("put_if_absent", "manifest/list-*", lambda: rival.manifests.write_list(listed, 0))
    ours = lsm3.open_table(store).manifests.write_list(listed, reuse_since_ms=0)
    assert [o.key for o in inner.list("manifest/list-")] == [ours]


def test_a_retried_commit_reuses_the_delta_its_failed_attempt_wrote() -> None:
    """A writer settling a failed commit (a new call of the commit path with the same files)
    finds the delta manifest of the failed attempt, named by its content, and refers to it
    instead of uploading another copy."""
    uri = f"memory://{uuid.uuid4().hex}"
    lsm3.create_table(uri, KV, ["id"], options={"commit_retries": 1})
    store = FaultyStore(lsm3.open_table(uri).store, record=True)
    w = lsm3.open_table(store).writer("w")
    w.upsert(pa.table({"id": [1, 2], "v": ["a", "b"]}, schema=KV))
    store.script("reset", "put_if_absent", "snapshot/*", nth=1, times=None)
    with pytest.raises(lsm3.Lsm3Error):
        w.commit("c1")
    store.clear()
    (written,) = set(delta_puts(store))
    snap = w.commit("c1")
    assert snap is not None and snap.delta_manifest == written
    assert [o.key for o in store.inner.list("manifest/")] == [written]
    assert {r["id"] for r in lsm3.open_table(uri).to_arrow().to_pylist()} == {1, 2}


def test_a_lost_race_waits_up_to_the_length_of_the_race_it_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a lost race the committer waits a uniformly random time up to the losing
    attempt's window (reading its base to its failed put), not a fixed few milliseconds:
    racers then spread their retries over a span as long as the race, so they do not lose
    again in lockstep (bench/README.md, "Metadata at scale")."""
    uri = f"memory://{uuid.uuid4().hex}"
    lsm3.create_table(uri, KV, ["id"])
    rival = lsm3.open_table(uri).writer("rival")

    def slow_rival() -> None:  # the race we lose lasts at least 50 ms
        time.sleep(0.05)
        rival.upsert(pa.table({"id": [1], "v": ["rival"]}, schema=KV))
        rival.commit()

    spans: list[float] = []
    uniform = random.uniform
    monkeypatch.setattr(random, "uniform", lambda lo, hi: spans.append(hi) or uniform(lo, hi))
    store = FaultyStore(lsm3.open_table(uri).store)
    store.pause("put_if_absent", "snapshot/*", slow_rival)
    ours = lsm3.open_table(store).writer("ours")
    ours.upsert(pa.table({"id": [2], "v": ["ours"]}, schema=KV))
    assert ours.commit().snapshot_id == 2
    assert len(spans) == 1 and 0.05 <= spans[0] <= 1.0


def test_a_manifest_decoded_with_its_base_reads_back_with_any_base() -> None:
    """The reader decodes a manifest with the base its first referrer gives it (a cold open
    builds each entry once) and still gives the stored offsets, or another base, on request."""
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p")
    schema = table.table_schema
    stored = [ManifestEntry("add", synthetic(i).with_offset(i)) for i in range(3)]
    path = write_manifest(table.store, stored, schema)
    reader = lsm3.open_table(table.store).manifests
    reader.entries(path, schema, 5)  # decoded with base 5 and cached so
    assert [e.file.seq_offset for e in reader.entries(path, schema, 5)] == [5, 6, 7]
    assert reader.entries(path, schema) == stored
    assert [e.file.seq_offset for e in reader.entries(path, schema, 2)] == [2, 3, 4]
