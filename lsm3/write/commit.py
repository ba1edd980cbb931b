"""Committing a change of a table: the one commit path of writers, the compactor and schema
changes.

A commit is built on the latest snapshot (``build``) and appended with the log's conditional
put; on a conflict it is rebuilt on the new latest snapshot. Rebuilding is cheap: the data
files are already uploaded, only the delta manifest (new sequence offsets) and the snapshot
are written again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lsm3.errors import CommitConflict, CommitUncertain, PreconditionFailed
from lsm3.format.evolution import SCHEMAS, SchemaUpdate, schema_key
from lsm3.format.metadata import CompactorLease, DataFile, ManifestEntry, Snapshot, WriterRecord

if TYPE_CHECKING:
    from lsm3.table import Table


def commit_files(
    table: Table,
    *,
    added: Sequence[DataFile],
    removed: Sequence[DataFile],
    seq_count: int,
    kind: str,
    writer_id: str | None,
    commit_id: str,
    metadata: dict[str, Any],
    assign_offset: bool = True,
    compactor: Callable[[Snapshot | None], CompactorLease | None] | None = None,
    schema_update: SchemaUpdate | None = None,
    since: int | None = None,
) -> Snapshot:
    """Commit a change of the live file set through the conditional put, rebasing on
    conflicts. ``added`` files carry local sequence numbers and receive the parent's
    ``next_sequence`` as offset, unless ``assign_offset`` is false (compaction output keeps
    its effective sequence numbers). ``removed`` files must all still be live.
    ``compactor`` computes the new snapshot's compactor lease from its parent (and may
    raise to fence a stale compactor); by default the parent's lease is carried over."""
    removed_paths = {f.path for f in removed}
    added_paths = {f.path for f in added}
    built_live: dict[int, list[DataFile]] = {}

    def already_committed(
        base: Snapshot | None, live: Sequence[DataFile] | None
    ) -> Snapshot | None:
        """This commit, if an earlier attempt landed (docs/FORMAT.md, section 6, "commit
        identity"): a named writer's last commit (recorded in every snapshot), any of the
        files it adds being live (their names are fresh, so only this commit adds them), or
        a snapshot after ``since`` (an earlier call's attempt) carrying its identity. Returns
        the snapshot that landed, or ``base`` when that one was expired since."""
        if base is None:
            return None
        rec = base.writers.get(writer_id) if writer_id else None
        if rec is not None and rec.commit_id == commit_id:
            return table.log.try_load(rec.snapshot_id) or base
        if live is not None and added_paths and any(f.path in added_paths for f in live):
            return base
        if since is None or base.snapshot_id <= since:
            return None
        floor = table.log.expired_through(since)
        unchecked = floor > since
        for sid in range(max(since, floor) + 1, base.snapshot_id + 1):
            snap = table.log.try_load(sid)
            if snap is None:
                unchecked = True
            elif snap.commit_id == commit_id and snap.writer_id == writer_id:
                return snap
        if unchecked and not writer_id:  # a named writer's record above is authoritative
            raise CommitUncertain(
                f"cannot tell whether the earlier attempt of commit {commit_id} landed: "
                f"snapshots after {since} that could record it were expired meanwhile, and "
                "none of its files is live now (they may have been compacted); nothing was "
                "committed now. Call abort() on the writer to drop the batch, or write it again "
                "with a named writer (table.writer(writer_id=...)), whose last commit every "
                "snapshot records"
            )
        return None

    def build(base: Snapshot | None) -> Snapshot | None:
        schema = table.schema_at(base.schema_id if base else 0)
        live = table.manifests.live_files(base, schema)
        if already_committed(base, live) is not None:
            return None
        schema_id = schema.schema_id
        if schema_update is not None:
            schema_id = write_schema(table, schema_update.replay_onto(schema))
        if removed_paths:
            live_paths = {f.path for f in live}
            gone = removed_paths - live_paths
            if gone:
                raise CommitConflict(
                    f"{len(gone)} input file(s) of this commit were removed by another "
                    "commit (a concurrent compaction); this commit is abandoned"
                )
        offset = base.next_sequence if base else 0
        lease = compactor(base) if compactor else (base.compactor if base else None)
        entries = [
            ManifestEntry("add", f.with_offset(offset) if assign_offset else f) for f in added
        ]
        entries += [ManifestEntry("remove", f) for f in removed]
        manifests = list(base.manifests) if base else []
        delta = table.manifests.write(entries, schema) if entries else None
        if delta is not None:
            manifests.append(delta)
        new_live = [f for f in live if f.path not in removed_paths] + [
            e.file for e in entries if e.op == "add"
        ]
        if len(manifests) > schema.option("manifest_merge_threshold"):
            merged = [ManifestEntry("add", f) for f in new_live]
            manifests = [table.manifests.write(merged, schema)]
        writers = dict(base.writers) if base else {}
        snapshot_id = (base.snapshot_id if base else 0) + 1
        if writer_id is not None:
            writers[writer_id] = WriterRecord(commit_id, snapshot_id, metadata)
        summary = {
            "added_files": len(added),
            "removed_files": len(removed),
            "added_rows": sum(f.rows for f in added),
            "added_deletes": sum(f.deletes for f in added),
            "added_bytes": sum(f.size for f in added),
            "total_files": len(new_live),
            "total_rows": sum(f.rows for f in new_live),
            "total_bytes": sum(f.size for f in new_live),
        }
        built_live[snapshot_id] = new_live
        return Snapshot(
            snapshot_id=snapshot_id,
            parent_id=base.snapshot_id if base else None,
            schema_id=schema_id,
            timestamp_ms=max(time.time_ns() // 1_000_000, base.timestamp_ms if base else 0),
            kind=kind,
            manifests=tuple(manifests),
            next_sequence=offset + seq_count if assign_offset else offset,
            writer_id=writer_id,
            commit_id=commit_id,
            metadata=metadata,
            summary=summary,
            writers=writers,
            compactor=lease,
            delta_manifest=delta,
        )

    schema = table.table_schema

    def is_mine(s: Snapshot) -> bool:
        return s.commit_id == commit_id and s.writer_id == writer_id

    result = table.log.commit(
        build,
        retries=schema.option("commit_retries"),
        is_mine=is_mine,
        hint_interval=schema.option("latest_hint_interval"),
        known=table.current_snapshot(),
    )
    if result is not None and is_mine(result):
        mine: Snapshot | None = result
    else:
        live = (
            table.manifests.live_files(result, table.schema_at(result.schema_id))
            if result
            else None
        )
        mine = already_committed(result, live)
    if mine is None:
        raise CommitConflict("internal error: commit finished without a snapshot")
    if mine.snapshot_id in built_live and mine.commit_id == commit_id:
        table.manifests.remember_live(mine.snapshot_id, built_live[mine.snapshot_id])
    table.advance(mine)
    return mine


def write_schema(table: Table, update: SchemaUpdate) -> int:
    """Store the updated schema under the first free id above its base."""
    for schema_id in range(update.base.schema_id + 1, update.base.schema_id + 1000):
        candidate = update.result(schema_id)
        try:
            table.store.put_if_absent(schema_key(schema_id), candidate.encode())
        except PreconditionFailed:
            continue
        SCHEMAS.put(table.store, candidate)
        return schema_id
    raise CommitConflict("could not find a free schema id; the schema/ prefix is crowded")
