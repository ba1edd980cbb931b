"""Committing a change of a table: the one commit path of writers, the compactor and schema
changes.

A commit is built on the latest snapshot (``build``) and appended with the log's conditional
put; on a conflict it is rebuilt on the new latest snapshot. Rebuilding is cheap: the data
files and the delta manifest are already uploaded (the delta's entries hold local sequence
numbers; the snapshot gives the delta its base, docs/FORMAT.md section 4b), so only the
snapshot is written again, and a fold's manifest list when the new parent needs one. A
writer's commit never reads the table's live file set: its cost is its delta plus, every
``manifest_merge_threshold`` commits, a fold of recent manifests
(``lsm3/write/manifest_merge.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lsm3.errors import CommitConflict, CommitUncertain, PreconditionFailed
from lsm3.format.evolution import SCHEMAS, SchemaUpdate, schema_key
from lsm3.format.metadata import CompactorLease, DataFile, ManifestEntry, Snapshot, WriterRecord
from lsm3.format.schema import TableSchema
from lsm3.write.manifest_merge import Layout, fold, needs_rewrite, rewrite

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
    changelog: Callable[[Snapshot | None], Sequence[DataFile]] | None = None,
    rewrite_manifests: bool = False,
) -> Snapshot:
    """Commit a change of the live file set through the conditional put, rebasing on
    conflicts. ``added`` files carry local sequence numbers and receive the parent's
    ``next_sequence`` as offset, unless ``assign_offset`` is false (compaction output keeps
    its effective sequence numbers). ``removed`` files must all still be live.
    ``compactor`` computes the new snapshot's compactor lease from its parent (and may
    raise to fence a stale compactor); by default the parent's lease is carried over.
    ``changelog`` gives the changelog files of the commit as built on a parent (called on
    every attempt, so changes computed against a parent can be redone after a rebase); they
    are listed in the snapshot's ``changelog_manifest`` (docs/FORMAT.md, section 16).
    ``rewrite_manifests`` (maintenance) writes a new manifest list of the live files grouped
    by partition, as a compactor commit does when dead entries pile up."""
    removed_paths = {f.path for f in removed}
    added_paths = {f.path for f in added}
    # The delta's entries do not depend on the parent: added files carry local sequence
    # numbers (offset 0) and the snapshot gives the delta its base (``delta_offset``).
    entries = [ManifestEntry("add", f.with_offset(0) if assign_offset else f) for f in added]
    entries += [ManifestEntry("remove", f) for f in removed]
    written: dict[int, str] = {}  # schema id -> the delta manifest written with it
    # A shared fold object may be reused if it is no older than this commit's oldest upload.
    reuse_since_ms = min([time.time_ns() // 1_000_000, *(f.created_ms for f in added)])
    # Set once a put may have landed: only then can an added file already be live.
    uncertain = [since is not None]

    def live_of(base: Snapshot | None) -> dict[str, DataFile]:
        return table.manifests.live_map(base, table.schema_at(base.schema_id if base else 0))

    def already_committed(base: Snapshot | None) -> Snapshot | None:
        """This commit, if an earlier attempt landed (docs/FORMAT.md, section 6, "commit
        identity"): a named writer's last commit (recorded in every snapshot or its manifest
        list), any of the files it adds being live (their names are fresh, so only this
        commit adds them), or a snapshot after ``since`` (an earlier call's attempt) carrying
        its identity. Returns the snapshot that landed, or ``base`` when that one was expired
        since. Before any attempt could have landed it costs nothing."""
        if base is None:
            return None
        rec = table.manifests.writer_record(base, writer_id) if writer_id else None
        if rec is not None and rec.commit_id == commit_id:
            return table.log.try_load(rec.snapshot_id) or base
        if not uncertain[0]:
            return None
        if added_paths:
            live = live_of(base)
            if any(p in live for p in added_paths):
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
        if already_committed(base) is not None:
            return None
        schema_id = schema.schema_id
        if schema_update is not None:
            schema_id = write_schema(table, schema_update.replay_onto(schema))
        live = live_of(base) if removed_paths or rewrite_manifests else None
        if live is not None:
            gone = [p for p in removed_paths if p not in live]
            if gone:
                raise CommitConflict(
                    f"{len(gone)} input file(s) of this commit were removed by another "
                    "commit (a concurrent compaction); this commit is abandoned"
                )
        offset = base.next_sequence if base else 0
        lease = compactor(base) if compactor else (base.compactor if base else None)
        delta = written.get(schema.schema_id)
        if delta is None and entries:
            # Written once and reused by every rebase onto a parent of the same schema; named
            # by its content, so a later call retrying this batch (a writer settling a failed
            # commit) finds it written too.
            delta = written[schema.schema_id] = table.manifests.write(
                entries, schema, reuse_since_ms, shared=False
            )
        delta_offset = offset if assign_offset and delta else 0
        changelog_manifest = logged(base, schema) if changelog is not None else None
        snapshot_id = (base.snapshot_id if base else 0) + 1
        own = {writer_id: WriterRecord(commit_id, snapshot_id, metadata)} if writer_id else {}
        summary = _summary(table, base, added, removed)
        layout = _layout(
            table,
            schema,
            base,
            (delta, delta_offset) if delta else None,
            own,
            live,
            entries,
            summary,
            rewrite_manifests,
            reuse_since_ms,
        )
        return Snapshot(
            snapshot_id=snapshot_id,
            parent_id=base.snapshot_id if base else None,
            schema_id=schema_id,
            timestamp_ms=max(time.time_ns() // 1_000_000, base.timestamp_ms if base else 0),
            kind=kind,
            manifests=layout.paths,
            manifest_offsets=layout.offsets,
            delta_offset=delta_offset,
            next_sequence=offset + seq_count if assign_offset else offset,
            writer_id=writer_id,
            commit_id=commit_id,
            metadata=metadata,
            summary=summary,
            writers=layout.writers,
            compactor=lease,
            delta_manifest=delta,
            manifest_list=layout.manifest_list,
            changelog_manifest=changelog_manifest,
        )

    changelog_written: dict[tuple[str, ...], str] = {}

    def logged(base: Snapshot | None, schema: TableSchema) -> str | None:
        """The changelog manifest for a commit on ``base`` (reused while the files are)."""
        assert changelog is not None
        files = list(changelog(base))
        if not files:
            return None
        names = tuple(f.path for f in files)
        if names not in changelog_written:
            listed = [ManifestEntry("add", f) for f in files]
            changelog_written[names] = table.manifests.write(listed, schema)
        return changelog_written[names]

    schema = table.table_schema

    def is_mine(s: Snapshot) -> bool:
        return s.commit_id == commit_id and s.writer_id == writer_id

    def ambiguous() -> None:
        uncertain[0] = True

    result = table.log.commit(
        build,
        retries=schema.option("commit_retries"),
        is_mine=is_mine,
        hint_interval=schema.option("latest_hint_interval"),
        known=table.current_snapshot(),
        on_ambiguous=ambiguous,
    )
    if result is not None and is_mine(result):
        mine: Snapshot | None = result
    else:
        uncertain[0] = True  # build found the commit already there: say where
        mine = already_committed(result)
    if mine is None:
        raise CommitConflict("internal error: commit finished without a snapshot")
    table.advance(mine)
    return mine


def _summary(
    table: Table, base: Snapshot | None, added: Sequence[DataFile], removed: Sequence[DataFile]
) -> dict[str, int]:
    """The commit's counts and the table's totals, from the parent's totals (O(files the
    commit changes); a parent without totals has its live set counted once)."""
    if base is None:
        totals = {"total_files": 0, "total_rows": 0, "total_bytes": 0}
    elif all(k in base.summary for k in ("total_files", "total_rows", "total_bytes")):
        totals = {k: base.summary[k] for k in ("total_files", "total_rows", "total_bytes")}
    else:
        live = table.files_of(base)
        totals = {
            "total_files": len(live),
            "total_rows": sum(f.rows for f in live),
            "total_bytes": sum(f.size for f in live),
        }
    added_rows = sum(f.rows for f in added)
    added_bytes = sum(f.size for f in added)
    return {
        "added_files": len(added),
        "removed_files": len(removed),
        "added_rows": added_rows,
        "added_deletes": sum(f.deletes for f in added),
        "added_bytes": added_bytes,
        "total_files": totals["total_files"] + len(added) - len(removed),
        "total_rows": totals["total_rows"] + added_rows - sum(f.rows for f in removed),
        "total_bytes": totals["total_bytes"] + added_bytes - sum(f.size for f in removed),
    }


def _layout(
    table: Table,
    schema: TableSchema,
    base: Snapshot | None,
    delta: tuple[str, int] | None,
    own: dict[str, WriterRecord],
    live: dict[str, DataFile] | None,
    entries: Sequence[ManifestEntry],
    summary: dict[str, int],
    force_rewrite: bool,
    reuse_since_ms: int,
) -> Layout:
    """Where the new snapshot's manifests and writer records go (docs/FORMAT.md, 4a)."""
    recent = dict(base.writers) if base else {}
    if live is not None and base is not None and (force_rewrite or base.manifest_list):
        # A compactor commit (it knows the live set): shed dead entries when they pile up.
        listed = table.manifests.listed(base)
        target = schema.option("manifest_target_entries")
        if force_rewrite or needs_rewrite(listed, summary["total_files"], target):
            new_live = dict(live)
            for e in entries:
                if e.op == "add":
                    base_of_delta = delta[1] if delta else 0
                    new_live[e.file.path] = e.file.with_offset(e.file.seq_offset + base_of_delta)
                else:
                    new_live.pop(e.file.path, None)
            writers = {**listed.writers, **recent}
            return rewrite(table.manifests, schema, list(new_live.values()), writers, own)
    return fold(table.manifests, schema, base, delta, own, reuse_since_ms)


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


class SchemaCommit:
    """The context manager ``Table.update_schema`` returns: the changes made inside it are
    committed together as a new schema version and a SCHEMA snapshot (nothing if none)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.update: SchemaUpdate | None = None

    def __enter__(self) -> SchemaUpdate:
        self.table.refresh()
        self.update = SchemaUpdate(self.table.table_schema)
        return self.update

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or self.update is None or not self.update.changed:
            return
        self.update.result(self.update.base.schema_id + 1)  # validate before writing anything
        commit_files(
            self.table,
            added=[],
            removed=[],
            seq_count=0,
            kind="SCHEMA",
            writer_id=None,
            commit_id=uuid.uuid4().hex,
            metadata={},
            assign_offset=False,
            schema_update=self.update,
        )
