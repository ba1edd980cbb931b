"""Snapshot expiry and orphan removal (``compactor.maintenance``), on a local directory and on
moto S3: what is deleted, what must survive, and that reads of retained snapshots never change.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from typing import Any

import pyarrow as pa
import pytest
from helpers import model_rows, sorted_rows, table_dir

import lsm3
from compactor import compact
from compactor.maintenance import expire_snapshots, remove_orphan_files
from lsm3.format.manifests import write_manifest
from lsm3.format.metadata import ManifestEntry, Snapshot
from lsm3.write.log import LATEST_HINT, snapshot_key

Location = tuple[str, dict[str, str] | None]
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
# Small manifest lists: commits merge them often, so expiry has manifests and files to free.
OPTIONS = {"manifest_merge_threshold": 4, "latest_hint_interval": 5}


def build(
    location: Location, commits: int = 8, keep: int | None = 3
) -> tuple[lsm3.Table, dict[int, Any]]:
    """A table with ``commits`` writer commits (upserts and deletes) then a full compaction;
    returns it with ``{snapshot id: rows}`` for every snapshot (rows only for the newest
    ``keep`` ones, None for the others; all with ``keep=None``)."""
    uri, options = location
    t = lsm3.create_table(
        uri, SCHEMA, primary_key="id", buckets=2, options=OPTIONS, storage_options=options
    )
    model: dict[Any, dict] = {}
    for i in range(commits):
        with t.writer() as w:
            rows = [{"id": k, "v": f"{i}-{k}"} for k in range(i * 4, i * 4 + 8)]
            w.upsert(rows)
            model.update({r["id"]: r for r in rows})
            if i % 3 == 2:
                w.delete([i, i + 1])
                model.pop(i, None)
                model.pop(i + 1, None)
        time.sleep(0.002)  # distinct commit timestamps (ms) for the age tests
    compact(t, policy="full", owner="test")
    assert t.files() and len(t.files()) == 2
    ids = [s.snapshot_id for s in t.snapshots()]
    read = ids if keep is None else ids[len(ids) - keep :]
    states = {sid: rows_at(t, sid) if sid in read else None for sid in ids}
    assert states[max(states)] == model_rows(model)
    return t, states


def kept_ids(t: lsm3.Table, ids: list[int], retain_last: int) -> list[int]:
    """The ids ``retain_last`` keeps: the newest ``retain_last`` snapshots that are not
    compactor lease changes, and every snapshot after the oldest of them."""
    lease_only = {s.snapshot_id for s in t.snapshots() if s.is_lease_only}
    counted = 0
    for index in range(len(ids) - 1, -1, -1):
        counted += ids[index] not in lease_only
        if counted == retain_last:
            return ids[index:]
    return ids


def rows_at(t: lsm3.Table, snapshot_id: int) -> list[dict]:
    return sorted_rows(t.to_arrow(snapshot_id=snapshot_id), t.primary_key)


def reopen(t: lsm3.Table, location: Location) -> lsm3.Table:
    return lsm3.open_table(location[0], storage_options=location[1])


def objects(t: lsm3.Table) -> dict[str, int]:
    return {i.key: i.size for i in t.store.list("")}


def referenced(t: lsm3.Table) -> set[str]:
    """Every manifest (list) a snapshot present needs and every data file
    live in one of them: what time travel and incremental reads can still touch."""
    out: set[str] = set()
    for snap in t.snapshots():
        out.update(t.manifests.referenced(snap))
        out.update(f.path for f in t.files(snap.snapshot_id))
    return out


# --------------------------------------------------------------------------- expiry


def test_expiry_keeps_retain_last_and_retained_reads(table_location: Location) -> None:
    t, states = build(table_location, keep=None)
    for i in range(2):  # two commits after the compaction: it is the third newest
        with t.writer() as w:
            w.upsert([{"id": 100 + i, "v": "after"}])
        states[t.current_snapshot().snapshot_id] = rows_at(t, t.current_snapshot().snapshot_id)
    ids = sorted(states)
    kept = kept_ids(t, ids, 3)
    assert len(kept) == 4, "the lease release between is not counted"
    gone = ids[: -len(kept)]
    before = objects(t)
    result = expire_snapshots(t, retain_last=3, older_than=0)

    assert result.expired == gone
    assert result.retained == len(kept) and result.oldest_retained == kept[0]
    fresh = reopen(t, table_location)
    assert [s.snapshot_id for s in fresh.snapshots()] == kept
    for sid in kept:
        assert rows_at(fresh, sid) == states[sid]
        assert rows_at(t, sid) == states[sid]
    for sid in gone:
        with pytest.raises(lsm3.SnapshotNotFound):
            fresh.to_arrow(snapshot_id=sid)
        with pytest.raises(lsm3.SnapshotNotFound):  # the expiring Table object forgot it too
            t.to_arrow(snapshot_id=sid)
    # What was deleted is exactly what the report says, and nothing still referenced.
    after = objects(t)
    removed = set(before) - set(after)
    reported = {snapshot_key(i) for i in result.expired}
    reported |= set(result.manifests) | set(result.data_files)
    assert removed == reported
    assert result.data_files, "the compaction's inputs should have been freed"
    assert result.files == len(removed)
    assert result.bytes == sum(before[k] for k in removed)
    assert result.data_bytes == sum(before[k] for k in result.data_files)
    assert referenced(fresh) <= set(after)
    assert result.requests > 0


def test_expiry_never_deletes_the_newest_snapshot(table_location: Location) -> None:
    t, states = build(table_location, commits=5)
    newest = max(states)
    kept = kept_ids(t, sorted(states), 1)
    result = expire_snapshots(t, retain_last=1, older_than=0)
    assert result.expired == sorted(states)[: -len(kept)] and newest in kept
    fresh = reopen(t, table_location)
    assert [s.snapshot_id for s in fresh.snapshots()] == kept
    assert rows_at(fresh, newest) == states[newest]
    assert expire_snapshots(t, retain_last=1, older_than=0).files == 0
    with pytest.raises(lsm3.InvalidInput):
        expire_snapshots(t, retain_last=0, older_than=0)
    with pytest.raises(lsm3.InvalidInput):
        expire_snapshots(t, retain_last=1, older_than=-1)


def test_expiry_respects_age(local_uri: Location) -> None:
    t, states = build(local_uri)
    ids = sorted(states)
    assert expire_snapshots(t, retain_last=1, older_than=dt.timedelta(days=1)).expired == []
    assert expire_snapshots(t, retain_last=1).expired == []  # default age: one hour

    # A cutoff in the middle of the history: exactly the snapshots committed at or before it.
    pivot = t.snapshot(ids[3])
    assert pivot is not None
    cutoff = dt.datetime.fromtimestamp(pivot.timestamp_ms / 1000, tz=dt.timezone.utc)
    expected = [i for i in ids[:-1] if t.log.load(i).timestamp_ms <= pivot.timestamp_ms]
    result = expire_snapshots(t, retain_last=1, older_than=cutoff)
    assert result.expired == expected and ids[3] in expected and ids[-2] not in expected
    assert [s.snapshot_id for s in reopen(t, local_uri).snapshots()] == ids[len(expected) :]


def test_expiry_dry_run_deletes_nothing(table_location: Location) -> None:
    t, _ = build(table_location)
    before = objects(t)
    dry = expire_snapshots(t, retain_last=2, older_than=0, dry_run=True)
    assert dry.dry_run and dry.expired and dry.data_files
    assert objects(t) == before
    kept = kept_ids(t, sorted(s.snapshot_id for s in t.snapshots()), 2)
    assert len(reopen(t, table_location).snapshots()) == len(dry.expired) + len(kept)
    real = expire_snapshots(t, retain_last=2, older_than=0)
    assert (real.expired, real.manifests, real.data_files, real.bytes) == (
        dry.expired,
        dry.manifests,
        dry.data_files,
        dry.bytes,
    )
    assert set(before) - set(objects(t)) == {
        *map(snapshot_key, dry.expired),
        *dry.manifests,
        *dry.data_files,
    }


def test_expiry_interrupted_leaves_a_contiguous_suffix(
    local_uri: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    t, states = build(local_uri, keep=None)
    ids = sorted(states)
    real_delete = t.store.delete
    calls = {"n": 0}

    def crash_after_three(key: str) -> None:
        calls["n"] += key.startswith("snapshot/snapshot-")  # the three oldest snapshots
        if calls["n"] > 3:
            raise lsm3.StorageError("injected crash")
        real_delete(key)

    monkeypatch.setattr(t.store, "delete", crash_after_three)
    with pytest.raises(lsm3.StorageError):
        expire_snapshots(t, retain_last=2, older_than=0)
    monkeypatch.undo()

    # The expiry marker went first: the snapshots it did not get to delete are no longer
    # history (time travel refuses them), but their objects are still there.
    fresh = reopen(t, local_uri)
    kept = kept_ids(fresh, ids, 2)
    assert [s.snapshot_id for s in fresh.snapshots()] == kept
    for sid in kept:
        assert rows_at(fresh, sid) == states[sid]
    with pytest.raises(lsm3.SnapshotNotFound):
        fresh.to_arrow(snapshot_id=ids[3])
    assert sorted(fresh.log.list_ids()) == ids[3:]  # the three oldest went first
    # The next run deletes the leftovers as detached (their files are left to orphan
    # removal, which keeps everything a retained snapshot references).
    result = expire_snapshots(fresh, retain_last=2, older_than=0)
    assert result.detached == ids[3 : -len(kept)] and result.expired == []
    assert [s.snapshot_id for s in reopen(t, local_uri).snapshots()] == kept
    orphans = remove_orphan_files(fresh, older_than=0, dry_run=True)
    assert set(orphans.removed).isdisjoint(referenced(fresh))
    assert rows_at(reopen(t, local_uri), ids[-1]) == states[ids[-1]]


def test_expiry_repoints_a_stale_latest_hint(table_location: Location) -> None:
    t, states = build(table_location)
    hint_before = int(t.store.get(LATEST_HINT))
    result = expire_snapshots(t, retain_last=1, older_than=0)
    assert hint_before in result.expired
    assert int(t.store.get(LATEST_HINT)) == max(states)
    cold = reopen(t, table_location)
    snap = cold.current_snapshot()
    assert snap is not None and snap.snapshot_id == max(states)


def test_expiry_removes_detached_snapshots(local_uri: Location) -> None:
    """A snapshot below a gap in the ids (what a process committing on a long-expired base
    leaves behind) is not history: it is expired whatever its age; its files are left to
    orphan removal (its committer may commit them again in a later snapshot)."""
    t, states = build(local_uri)
    ids = sorted(states)
    kept = kept_ids(t, ids, 3)
    stale = t.snapshot(ids[2])
    assert stale is not None
    expire_snapshots(t, retain_last=3, older_than=0)
    # A zombie commit on top of expired snapshot ids[2]: a fresh run, manifest and snapshot.
    w = t.writer()
    w.upsert([{"id": 10_000, "v": "zombie"}])
    (run,) = w.flush()
    w.abort()
    manifest = write_manifest(t.store, [ManifestEntry("add", run)], t.table_schema)
    zombie = Snapshot(
        snapshot_id=ids[3],
        parent_id=ids[2],
        schema_id=0,
        timestamp_ms=time.time_ns() // 1_000_000,
        kind="APPEND",
        manifests=(*stale.manifests, manifest),
        next_sequence=stale.next_sequence + 1,
        commit_id=uuid.uuid4().hex,
    )
    t.store.put_if_absent(snapshot_key(ids[3]), zombie.encode())

    # Orphan removal copes with the zombie's missing manifests and keeps what it names.
    orphans = remove_orphan_files(t, older_than=0)
    assert run.path not in orphans.removed and manifest not in orphans.removed
    result = expire_snapshots(t, retain_last=3, older_than=dt.timedelta(days=1))
    assert result.detached == [ids[3]] and result.expired == []
    assert run.path not in result.data_files and manifest not in result.manifests
    fresh = reopen(t, local_uri)
    assert [s.snapshot_id for s in fresh.snapshots()] == kept
    assert rows_at(fresh, ids[-1]) == states[ids[-1]]
    orphans = remove_orphan_files(t, older_than=0)
    assert run.path in orphans.removed and manifest in orphans.removed
    assert not (table_dir(local_uri[0]) / run.path).exists()


def test_a_table_opened_before_expiry_commits_onto_the_newest_snapshot(
    local_uri: Location,
) -> None:
    uri, options = local_uri
    t = lsm3.create_table(uri, SCHEMA, primary_key="id", storage_options=options)
    with t.writer() as w:
        w.upsert([{"id": 1, "v": "a"}])
    stale = lsm3.open_table(uri)  # pinned at snapshot 1
    for i in range(2, 7):
        with t.writer() as w:
            w.upsert([{"id": i, "v": "b"}])
    expire_snapshots(t, retain_last=2, older_than=0)
    with stale.writer() as w:
        w.upsert([{"id": 99, "v": "late"}])
    fresh = lsm3.open_table(uri)
    ids = [s.snapshot_id for s in fresh.snapshots()]
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"snapshot ids with a gap: {ids}"
    assert fresh.get(99) == {"id": 99, "v": "late"}


# --------------------------------------------------------------------------- orphans


def test_orphans_in_flight_upload_survives_the_grace_period(table_location: Location) -> None:
    t, states = build(table_location, commits=5)
    w = t.writer()
    w.upsert([{"id": 500, "v": "in flight"}])
    in_flight = w.flush()
    assert in_flight
    before = objects(t)

    result = remove_orphan_files(t)  # default grace: one day
    assert result.removed == [] and result.bytes == 0
    assert result.young >= len(in_flight)
    assert objects(t) == before
    w.commit()  # the upload is still there, so the commit is readable
    fresh = reopen(t, table_location)
    assert fresh.get(500) == {"id": 500, "v": "in flight"}
    assert rows_at(fresh, max(states)) == states[max(states)]


def test_orphans_grace_zero_removes_exactly_the_unreferenced(table_location: Location) -> None:
    t, states = build(table_location)
    w = t.writer()
    w.upsert([{"id": 600, "v": "aborted"}])
    aborted = w.flush()
    w.abort()
    before = objects(t)
    refs = referenced(t)
    expected = {k for k in before if k.startswith(("data/", "manifest/")) and k not in refs}
    assert {f.path for f in aborted} <= expected

    dry = remove_orphan_files(t, older_than=0, dry_run=True)
    assert set(dry.removed) == expected and objects(t) == before
    result = remove_orphan_files(t, older_than=0)
    assert set(result.removed) == expected
    assert result.files == len(expected)
    assert result.bytes == sum(before[k] for k in expected)
    assert result.referenced == len([k for k in before if k in refs])
    assert set(objects(t)) == set(before) - expected
    fresh = reopen(t, table_location)
    for sid, rows in states.items():
        if rows is not None:
            assert rows_at(fresh, sid) == rows
    assert remove_orphan_files(fresh, older_than=0).files == 0


def test_orphans_only_older_than_the_grace_period(local_uri: Location) -> None:
    t, _ = build(local_uri, commits=3)
    old_writer = t.writer()
    old_writer.upsert([{"id": 700, "v": "old"}])
    (old,) = old_writer.flush()
    old_writer.abort()
    two_days_ago = time.time() - 2 * 86400
    os.utime(table_dir(local_uri[0]) / old.path, (two_days_ago, two_days_ago))
    young_writer = t.writer()
    young_writer.upsert([{"id": 701, "v": "young"}])
    (young,) = young_writer.flush()

    result = remove_orphan_files(t)
    assert result.removed == [old.path]
    assert (table_dir(local_uri[0]) / young.path).exists()
    young_writer.commit()
    assert reopen(t, local_uri).get(701) == {"id": 701, "v": "young"}


def test_orphans_never_touch_schema_or_snapshot_objects(table_location: Location) -> None:
    t, states = build(table_location, commits=3)
    t.store.put("snapshot/not-a-snapshot", b"x")
    t.store.put("schema/notes.txt", b"x")
    t.store.put("data/stray.bin", b"x")
    result = remove_orphan_files(t, older_than=0)
    assert "data/stray.bin" in result.removed
    keys = set(objects(t))
    assert {"snapshot/not-a-snapshot", "schema/notes.txt", "schema/schema-0.json"} <= keys
    assert all(snapshot_key(i) in keys for i in states)


def test_expiry_without_file_deletion_leaves_orphans(table_location: Location) -> None:
    t, states = build(table_location)
    dry = expire_snapshots(t, retain_last=2, older_than=0, dry_run=True)
    result = expire_snapshots(t, retain_last=2, older_than=0, delete_files=False)
    assert result.expired == dry.expired and result.data_files == []
    orphans = remove_orphan_files(t, older_than=0)
    assert set(dry.data_files) | set(dry.manifests) <= set(orphans.removed)
    fresh = reopen(t, table_location)
    for sid in sorted(states)[-2:]:
        assert rows_at(fresh, sid) == states[sid]
