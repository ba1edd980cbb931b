"""What a writer stores for the changelog producers ``input`` and ``lookup``.

``input``: the records the writer received, every row kind, in write order, are written as
changelog files at each flush, beside that flush's runs.

``lookup``: at commit time, for the parent the commit is built on, the writer reads the
current values of exactly the keys its runs hold (one batched, vectorised lookup of those
keys through a cache of decoded runs: :mod:`lsm3.read.batch_lookup`), folds its runs on top with the
table's merge engine, and stores the complete changes (``+I``, ``-U``/``+U``, ``-D``; nothing
for a key whose values did not change). Several records of one key in one commit give one net
change. A rebase onto a parent that an APPEND commit made recomputes them, so the
before-images are those of the actual parent even with concurrent writers.

Both lists live in the snapshot's ``changelog_manifest`` (docs/FORMAT.md, section 16).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.errors import CorruptDataFile, CorruptMetadata
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import KIND_COLUMN, KIND_UPSERT, TableSchema
from lsm3.read.batch_lookup import remember
from lsm3.read.changelog_file import ROW_KIND, run_as_changelog, write_changelog
from lsm3.read.changes import values_before_after
from lsm3.read.diff import compare
from lsm3.read.runfile import OpenRun

if TYPE_CHECKING:
    from lsm3.table import Table

#: A piece of a flush's run: (partition, bucket, row indices in the memtable, run id).
Piece = tuple[tuple[Any, ...], int, pa.Array, str]

#: Row kinds of the ops ``apply_cdc`` takes, as stored by the ``input`` producer.
CDC_ROW_KINDS = {
    "c": "+I",
    "r": "+I",
    "+I": "+I",
    "u": "+U",
    "+U": "+U",
    "d": "-D",
    "-D": "-D",
    "-U": "-U",
}


@dataclass
class CommitChangelog:
    """The changelog material of one commit: ``input`` files, or ``lookup`` runs (the rows of
    each run the commit wrote, or None when they were dropped from memory: then they are read
    back from storage)."""

    files: list[DataFile] = field(default_factory=list)
    runs: list[pa.Table] | None = field(default_factory=list)
    run_files: list[DataFile] = field(default_factory=list)
    file_rows: dict[str, pa.Table] = field(default_factory=dict)
    _cached: tuple[int, list[DataFile]] | None = None

    def for_parent(
        self, table: Table, schema: TableSchema, base: Snapshot | None
    ) -> list[DataFile]:
        """The changelog files of this commit built on ``base`` (``commit_files``'s hook)."""
        if schema.option("changelog_producer") != "lookup":
            return self.files
        if not self.run_files:
            return []
        base_id = base.snapshot_id if base else 0
        if self._cached is not None and _unchanged_since(table, self._cached[0], base_id):
            return self._cached[1]
        runs = self.runs
        if runs is None:  # read back what the commit wrote (its local sequence numbers)
            columns = schema.file_schema().names
            runs = [OpenRun(table.store, f, schema).read(columns) for f in self.run_files]
        files = lookup_changes(table, schema, base, runs, self.run_files)
        self._cached = (base_id, files)
        return files

    def computed_on(self, base_id: int, files: list[DataFile]) -> None:
        """Record changes computed ahead (``lookup_changes`` of this commit's runs on
        snapshot ``base_id``), used if the commit is built on a parent no APPEND changed."""
        self._cached = (base_id, files)

    def committed(self, table: Table, schema: TableSchema, snap: Snapshot, seq_count: int) -> None:
        """The commit landed as ``snap``: its runs, already decoded, go to the batched
        lookup's cache, so the next commit does not read them back."""
        offset = snap.next_sequence - seq_count
        for f in self.run_files:
            rows = self.file_rows.get(f.path)
            if rows is not None:
                remember(table.store, schema, f.with_offset(offset), rows)


def compute_changes(
    table: Table, schema: TableSchema, base: Snapshot | None, runs: list[pa.Table]
) -> tuple[pa.Table, bool]:
    """``lookup``: the complete changes of ``runs`` (a commit's, local sequence numbers)
    built on ``base``, and whether they are exactly the runs' rows as ``+I``: every key is
    new at ``base`` and every stored row an upsert, as in a table's initial load. Then the
    commit's changelog names its runs instead of storing the same rows again (section 16)."""
    runs = [r.cast(schema.file_schema()) for r in runs]
    before, after = values_before_after(table, schema, base, runs)
    changes = compare(before, after, schema)
    rows = sum(r.num_rows for r in runs)
    inserts_only = (
        changes.num_rows == rows
        and all(pc.all(pc.equal(r.column(KIND_COLUMN), KIND_UPSERT)).as_py() for r in runs)
        and pc.all(pc.equal(changes.column(ROW_KIND), "+I")).as_py() is not False
    )
    return changes, inserts_only


def lookup_changes(
    table: Table,
    schema: TableSchema,
    base: Snapshot | None,
    runs: list[pa.Table],
    run_files: list[DataFile],
) -> list[DataFile]:
    """``lookup``: store the complete changes of ``runs`` (stored as ``run_files``) built on
    ``base``: their changelog entries."""
    changes, inserts_only = compute_changes(table, schema, base, runs)
    if inserts_only:
        return [run_as_changelog(f) for f in run_files]
    return write_changelog(table.store, schema, changes)


def upload_computing_changes(
    table: Table,
    schema: TableSchema,
    runs: list[Piece],
    gather: Callable[[Piece], pa.Table],
    upload: Callable[[Piece, pa.Table], DataFile],
    workers: int,
) -> tuple[list[DataFile], tuple[int, list[DataFile]]]:
    """``lookup``, a commit's only flush (``runs``, the pieces of its runs in key order):
    gather the pieces' rows, then encode and upload them in a pool while this thread
    computes and stores their changes on the current snapshot (a CDC commit's run is one
    piece: its encoding and the changes, one thread each, overlap). Returns the runs' files
    and (the snapshot id, the changelog files); the commit uses them if its parent is that
    snapshot or only compactions followed it (``CommitChangelog.for_parent``)."""
    base = table.current_snapshot()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        gathered = list(pool.map(gather, runs))
        uploads = [pool.submit(upload, r, g) for r, g in zip(runs, gathered, strict=True)]
        flushed = pa.concat_tables(gathered)  # one flush holds each key once, in key order
        try:
            changes, inserts_only = compute_changes(table, schema, base, [flushed])
        except (CorruptDataFile, CorruptMetadata):
            # A long-lived writer's snapshot may be long gone: a compaction replaced its
            # files, expiry dropped it and deleted them (and its manifests). Compute on the
            # newest instead (the commit's parent is at least that new); a file missing
            # there too is damage, and raises.
            base = table.refresh()
            changes, inserts_only = compute_changes(table, schema, base, [flushed])
        # stored while the runs still upload, unless the runs themselves are the changes
        stored = [] if inserts_only else write_changelog(table.store, schema, changes)
        files = [u.result() for u in uploads]
    if inserts_only:
        stored = [run_as_changelog(f) for f in files]
    return files, (base.snapshot_id if base else 0, stored)


def _unchanged_since(table: Table, computed_on: int, base_id: int) -> bool:
    """True if no commit between the two snapshots can have changed a value (only
    compactions and schema changes landed)."""
    for sid in range(computed_on + 1, base_id + 1):
        snap = table.log.try_load(sid)
        if snap is None or snap.kind == "APPEND":
            return False
    return base_id >= computed_on


class ChangelogRecorder:
    """A writer's changelog material between commits (nothing under ``none`` and
    ``full_compaction``)."""

    def __init__(self, schema: TableSchema, memory_budget: int) -> None:
        self.producer = schema.option("changelog_producer")
        self.schema = schema
        self._budget = memory_budget
        self._input: list[pa.Table] = []
        self.input_bytes = 0
        self._commit = CommitChangelog()
        self._run_bytes = 0

    @property
    def pending(self) -> bool:
        """Changelog files of the commit being made (``input``: before-images alone give a
        commit of their own)."""
        return bool(self._commit.files)

    @property
    def records_input(self) -> bool:
        return self.producer == "input"

    @property
    def stores(self) -> bool:
        """Whether this producer's writers store changelog files."""
        return self.producer in ("input", "lookup")

    def log_input(self, rows: pa.Table, kinds: str | pa.Array | pa.ChunkedArray) -> None:
        """Keep received records (table columns) in write order with their row kind: one for
        all, or each record's CDC op (``CDC_ROW_KINDS``)."""
        if not self.records_input or rows.num_rows == 0:
            return
        if isinstance(kinds, str):
            kinds = pa.repeat(pa.scalar(kinds, pa.string()), rows.num_rows)
        else:
            index = pc.index_in(kinds, value_set=pa.array(list(CDC_ROW_KINDS)))
            kinds = pc.take(pa.array(list(CDC_ROW_KINDS.values())), index)
        names = self.schema.arrow.names
        logged = rows.select(names).append_column(ROW_KIND, kinds.cast(pa.string()))
        self._input.append(logged)
        self.input_bytes += logged.nbytes

    def flush_input(self, table: Table) -> list[DataFile]:
        """Upload the records kept since the last flush as changelog files (kept on failure)."""
        if not self._input:
            return []
        rows = pa.concat_tables(self._input)
        files = write_changelog(table.store, self.schema, rows)
        self._input = []
        self.input_bytes = 0
        self._commit.files.extend(files)
        return files

    def add_runs(self, files: list[DataFile], rows: dict[str, list[pa.Table]]) -> None:
        """``lookup``: the runs of a flush and their rows by path, in key order (dropped past
        the memory budget)."""
        if self.producer != "lookup":
            return
        self._commit.run_files.extend(files)
        if self._commit.runs is None:
            return
        self._run_bytes += sum(t.nbytes for pieces in rows.values() for t in pieces)
        if self._run_bytes > self._budget:
            self._commit.runs = None  # read back at commit instead
            self._commit.file_rows = {}
            return
        # in the order of ``files`` (key order), so a single flush stays sorted by key
        by_file = {f.path: pa.concat_tables(rows[f.path]) for f in files if f.path in rows}
        self._commit.file_rows.update(by_file)
        if by_file:  # one flush holds each key once: one table, whatever the files' order
            self._commit.runs.append(pa.concat_tables(list(by_file.values())))

    def can_compute_ahead(self) -> bool:
        """``lookup``: whether a flush's runs are all of the commit (nothing flushed before
        in it), so their changes may be computed while they upload."""
        return self.producer == "lookup" and not self._commit.run_files

    def computed_ahead(self, base_id: int, files: list[DataFile]) -> None:
        self._commit.computed_on(base_id, files)

    def take(self) -> CommitChangelog:
        """The material of the commit being made; the recorder starts a new one."""
        taken, self._commit = self._commit, CommitChangelog()
        self._run_bytes = 0
        return taken

    def clear(self) -> None:
        self._input = []
        self.input_bytes = 0
        self.take()
