"""Manifest lists (docs/FORMAT.md, section 4a): random commits, compactions, expiries, tags
and reopenings give the live file sets of a plain-Python model of adds and removes across
folds, size-tier merges and compactor rewrites; version-1 tables still read; maintenance
keeps every object a retained or tagged snapshot needs."""

from __future__ import annotations

import json
import random
import uuid

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lsm3
from compactor.maintenance import expire_snapshots, remove_orphan_files
from lsm3.format.manifest_list import ManifestMeta
from lsm3.format.manifests import write_manifest
from lsm3.format.metadata import DataFile, ManifestEntry, Snapshot
from lsm3.write.commit import commit_files
from lsm3.write.log import snapshot_key
from lsm3.write.manifest_merge import merge_entries, small_suffix_to_merge

SCHEMA = pa.schema([("p", pa.int64()), ("id", pa.int64()), ("v", pa.string())])
SMALL = {
    "manifest_merge_threshold": 2,
    "manifest_target_entries": 6,
    "manifest_merge_min_count": 3,
    "manifest_list_part_size": 2,  # lists with parts (version 3) in every test here
}


def synthetic(i: int) -> DataFile:
    return DataFile(
        path=f"data/p={i % 3}/bucket-0/{uuid.uuid4().hex}.parquet",
        level=0,
        partition=(i % 3,),
        bucket=0,
        min_key=(i % 3, i),
        max_key=(i % 3, i),
        min_seq=0,
        max_seq=0,
        seq_offset=0,
        rows=1,
        deletes=0,
        size=100,
        checksum="crc32:00000000",
        footer_checksum="crc32:00000000",
        schema_id=0,
        created_ms=0,
    )


def commit(
    table: lsm3.Table,
    added: list[DataFile],
    removed: list[DataFile] | None = None,
    writer_id: str | None = None,
) -> Snapshot:
    return commit_files(
        table,
        added=added,
        removed=removed or [],
        seq_count=1 if not removed else 0,
        kind="COMPACT" if removed else "APPEND",
        writer_id=writer_id,
        commit_id=uuid.uuid4().hex,
        metadata={},
        assign_offset=not removed,
    )


def live_paths(table: lsm3.Table, snap: Snapshot | None) -> set[str]:
    return {f.path for f in table.files_of(snap)}


def check_needed_objects_exist(table: lsm3.Table, snaps: list[Snapshot]) -> None:
    for snap in snaps:
        for path in table.manifests.referenced(snap):
            assert table.store.head(path) is not None, f"{path} of snapshot {snap.snapshot_id}"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_live_files_follow_a_model_across_merges_compactions_and_expiry(seed: int) -> None:
    rng = random.Random(seed)
    uri = f"memory://manifest-lists-{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=SMALL)
    live: set[str] = set()
    files: dict[str, DataFile] = {}
    history: dict[int, set[str]] = {}
    last: dict[str, str] = {}
    tags: dict[str, int] = {}
    n = 0
    for _step in range(40):
        op = rng.choices(["append", "compact", "expire", "reopen", "tag"], [8, 3, 2, 1, 1])[0]
        if op == "append":
            k = rng.randint(1, 4)
            added = [synthetic(n + i) for i in range(k)]
            n += k
            writer = rng.choice([None, "a", "b", "c"])
            snap = commit(table, added, writer_id=writer)
            if writer is not None:
                last[writer] = snap.commit_id or ""
            live |= {f.path for f in added}
            files.update((f.path, f) for f in added)
            history[snap.snapshot_id] = set(live)
        elif op == "compact" and live:
            gone = rng.sample(sorted(live), rng.randint(1, min(5, len(live))))
            out = synthetic(n)
            n += 1
            snap = commit(table, [out], [files[p] for p in gone])
            live = (live - set(gone)) | {out.path}
            files[out.path] = out
            history[snap.snapshot_id] = set(live)
        elif op == "expire":
            expire_snapshots(table, retain_last=rng.randint(1, 4), older_than=0)
            if rng.random() < 0.5:
                remove_orphan_files(table, older_than=0)
        elif op == "reopen":
            table = lsm3.open_table(uri)
        elif op == "tag" and table.current_snapshot() is not None:
            name = f"t{len(tags)}"
            tags[name] = table.create_tag(name)
        assert live_paths(table, table.current_snapshot()) == live
        assert live_paths(lsm3.open_table(uri), table.refresh()) == live
    fresh = lsm3.open_table(uri)
    for sid in fresh.snapshot_ids():
        assert live_paths(fresh, fresh.snapshot(sid)) == history[sid], sid
    for name, sid in tags.items():
        assert live_paths(fresh, fresh.snapshot(tag=name)) == history[sid], name
    for writer, commit_id in last.items():
        record = fresh.last_commit(writer)
        assert record is not None and record.commit_id == commit_id
    check_needed_objects_exist(fresh, [*fresh.snapshots(), *fresh.tagged_snapshots().values()])
    snap = fresh.current_snapshot()
    assert snap is not None and len(snap.manifests) <= SMALL["manifest_merge_threshold"]
    assert snap.summary["total_files"] == len(live)


def test_snapshots_stay_small_and_lists_are_shared() -> None:
    table = lsm3.create_table(
        f"memory://{uuid.uuid4().hex}", SCHEMA, ["p", "id"], partition_by="p", options=SMALL
    )
    snaps = [commit(table, [synthetic(i)], writer_id=f"w{i}") for i in range(60)]
    assert all(len(s.manifests) <= 2 and len(s.writers) <= 3 for s in snaps)
    assert {s.format_version for s in snaps} == {1, 3}  # 3: deltas get a sequence base
    lists = [s.manifest_list for s in snaps if s.manifest_list]
    assert len(set(lists)) < len(lists)  # consecutive snapshots reuse one list
    assert len(table.files()) == 60
    for i in range(60):  # every writer's record survives folding into lists
        record = table.last_commit(f"w{i}")
        assert record is not None and record.snapshot_id == snaps[i].snapshot_id
    listed = table.manifests.listed(snaps[-1])
    assert len(listed.manifests) < 30  # small manifests were merged by size tier


def test_a_version_1_table_still_reads_and_accepts_commits() -> None:
    """A table whose snapshots were written by the version-1 layout (every manifest and
    every writer record in the snapshot itself)."""
    uri = f"memory://{uuid.uuid4().hex}"
    table = lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=SMALL)
    schema = table.table_schema
    old = [synthetic(i) for i in range(40)]
    manifests = [write_manifest(table.store, [ManifestEntry("add", f)], schema) for f in old]
    doc = {
        "format": "lsm3",
        "format_version": 1,
        "snapshot_id": 1,
        "parent_id": None,
        "schema_id": 0,
        "timestamp_ms": 1,
        "kind": "APPEND",
        "manifests": manifests,
        "next_sequence": 1,
        "writer_id": "w0",
        "commit_id": "c0",
        "metadata": {},
        "summary": {},
        "writers": {
            f"w{i}": {"commit_id": f"c{i}", "snapshot_id": 1, "metadata": {"offset": i}}
            for i in range(40)
        },
        "compactor": None,
        "delta_manifest": manifests[-1],
    }
    table.store.put_if_absent(snapshot_key(1), json.dumps(doc).encode())
    table = lsm3.open_table(uri)
    assert {f.path for f in table.files_of(table.current_snapshot())} == {f.path for f in old}
    record = table.last_commit("w7")
    assert record is not None and record.metadata == {"offset": 7}
    new = synthetic(99)
    snap = commit(table, [new], writer_id="w1")
    assert snap.format_version == 3 and snap.manifest_list is not None  # folded at once
    assert json.loads(table.store.get(snapshot_key(2)))["format_version"] == 3
    fresh = lsm3.open_table(uri)
    assert len(fresh.files()) == 41 and len(fresh.files(snapshot_id=1)) == 40
    assert fresh.last_commit("w7").metadata == {"offset": 7}  # type: ignore[union-attr]
    assert fresh.last_commit("w1").snapshot_id == 2  # type: ignore[union-attr]
    assert snap.summary["total_files"] == 41  # counted once from the old snapshot


def test_merging_entries_keeps_replay_effect() -> None:
    a, b, c = synthetic(1), synthetic(2), synthetic(3)
    runs = [
        [ManifestEntry("add", a), ManifestEntry("add", b)],
        [ManifestEntry("remove", a), ManifestEntry("remove", c)],
    ]
    merged = merge_entries(runs)
    assert [(e.op, e.file.path) for e in merged] == [("add", b.path), ("remove", c.path)]


def test_size_tier_merges_only_the_small_suffix() -> None:
    metas = [
        ManifestMeta("manifest/a.json", 100),
        *(ManifestMeta(f"manifest/s{i}.json", 2) for i in range(3)),
    ]
    assert small_suffix_to_merge(metas, 10, 5) is None
    assert small_suffix_to_merge(metas, 10, 3) == 1
    assert small_suffix_to_merge(metas, 6, 50) == 1
    assert small_suffix_to_merge(metas[:2], 10, 1) is None  # one small manifest: nothing to merge
