"""The table facade: create and open tables, read them, and commit through the snapshot log.

A :class:`Table` pins the snapshot it last saw (``current_snapshot()``); reads use that
snapshot unless told otherwise and ``refresh()`` moves it forward. Writers made by
``table.writer()`` commit through :func:`lsm3.write.commit.commit_files`, which the compactor
also uses, so there is one commit path. The methods delegate to the packages that do the work:
reads to :mod:`lsm3.read`, schema changes to :class:`lsm3.write.commit.SchemaCommit`, tags to
:mod:`lsm3.write.tags`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lsm3.errors import (
    CommitConflict,
    InvalidInput,
    ObjectNotFound,
    PreconditionFailed,
    TableAlreadyExists,
    TableNotFound,
)
from lsm3.format.evolution import SCHEMAS, schema_key
from lsm3.format.manifests import ManifestReader
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import TableSchema, new_schema
from lsm3.io.retry import with_retries
from lsm3.io.store import ObjectStore, StoreStats, open_store
from lsm3.read.changelog import changelog_batches, changelog_table
from lsm3.read.changes import changes
from lsm3.read.consumer import Consumer, follow, list_consumers
from lsm3.read.dataset import merged_dataset
from lsm3.read.lookup import lookup
from lsm3.read.pointget import MISS, get_one
from lsm3.read.prune import live_files_for
from lsm3.read.scan import DEFAULT_SECTION_ROWS, make_request, scan_batches
from lsm3.write.commit import SchemaCommit
from lsm3.write.log import SnapshotLog
from lsm3.write.tags import add_tag, list_tags, load_tag, remove_tag
from lsm3.write.writer import Writer


@dataclass(frozen=True)
class FileInfo:
    """A live data file as ``Table.files()`` reports it."""

    path: str
    level: int
    partition: tuple[Any, ...]
    bucket: int
    min_key: tuple[Any, ...]
    max_key: tuple[Any, ...]
    rows: int
    deletes: int
    bytes: int
    min_seq: int
    max_seq: int


@dataclass(frozen=True)
class CommitRecord:
    """What ``Table.last_commit(writer_id)`` returns."""

    writer_id: str
    commit_id: str
    snapshot_id: int
    metadata: dict[str, Any]


class Table:
    """An lsm3 table at one root; cheap to create, safe to share between threads for reads."""

    def __init__(self, store: ObjectStore, schema0: TableSchema) -> None:
        self.store = store
        self.uri = store.url
        self.log = SnapshotLog(store)
        self.manifests = ManifestReader(store)
        SCHEMAS.put(store, schema0)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self.refresh()

    # ----------------------------------------------------------------- metadata

    def refresh(self) -> Snapshot | None:
        """Move to the newest committed snapshot and return it (None: nothing committed yet)."""
        latest = self.log.latest(self._snapshot)
        with self._lock:
            if latest is not None and (
                self._snapshot is None or latest.snapshot_id > self._snapshot.snapshot_id
            ):
                self._snapshot = latest
            return self._snapshot

    def current_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def advance(self, snapshot: Snapshot) -> None:
        """Move the pinned snapshot forward to one this process committed (never back)."""
        with self._lock:
            if self._snapshot is None or snapshot.snapshot_id > self._snapshot.snapshot_id:
                self._snapshot = snapshot

    def schema_at(self, schema_id: int) -> TableSchema:
        """Schema version ``schema_id`` (cached; versions never change)."""
        return SCHEMAS.get(self.store, schema_id)

    @property
    def table_schema(self) -> TableSchema:
        snap = self._snapshot
        return self.schema_at(snap.schema_id if snap else 0)

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the table's rows (user columns only)."""
        return self.table_schema.arrow

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.table_schema.primary_key

    def snapshot_ids(self) -> list[int]:
        """Ids of every retained snapshot of the history, oldest first (two LIST requests:
        the snapshots and the expiry marker)."""
        return self.log.history_ids()

    def snapshots(self) -> list[Snapshot]:
        """Every retained snapshot, oldest first."""
        found = (self.log.try_load(i) for i in self.snapshot_ids())
        return [s for s in found if s is not None]  # skip any expired while we read

    def snapshot(
        self, snapshot_id: int | None = None, as_of: Any = None, tag: str | None = None
    ) -> Snapshot | None:
        """Resolve ``snapshot_id``, ``as_of`` (ms since epoch or a datetime) or ``tag``."""
        if sum(x is not None for x in (snapshot_id, as_of, tag)) > 1:
            raise InvalidInput("pass only one of snapshot_id, as_of and tag")
        if tag is not None:
            return load_tag(self.store, tag)
        if snapshot_id is not None:
            if not isinstance(snapshot_id, int) or snapshot_id < 0:
                raise InvalidInput(
                    f"snapshot_id must be a non-negative integer, got {snapshot_id!r}"
                )
            if snapshot_id == 0:
                return None
            return self.log.load_history(snapshot_id)
        if as_of is not None:
            if hasattr(as_of, "timestamp"):
                as_of = int(as_of.timestamp() * 1000)
            return self.log.as_of(int(as_of))
        return self._snapshot

    def files_of(self, snap: Snapshot | None) -> list[DataFile]:
        """The live data files of ``snap`` (None: the empty table), as the manifests list them."""
        schema = self.schema_at(snap.schema_id if snap else 0)
        return self.manifests.live_files(snap, schema)

    def files_for(self, snap: Snapshot | None, filter: pc.Expression | None) -> list[DataFile]:
        """The live data files of ``snap`` in every partition where ``filter`` may hold (all
        of them without a filter), fetching only the manifests that can hold them."""
        schema = self.schema_at(snap.schema_id if snap else 0)
        return live_files_for(self.manifests, snap, schema, filter)

    def files(self, snapshot_id: int | None = None, tag: str | None = None) -> list[FileInfo]:
        """The live data files of a snapshot (default: the current one)."""
        snap = self.snapshot(snapshot_id, tag=tag)
        return [
            FileInfo(
                f.path,
                f.level,
                f.partition,
                f.bucket,
                f.min_key,
                f.max_key,
                f.rows,
                f.deletes,
                f.size,
                f.effective_min_seq,
                f.effective_max_seq,
            )
            for f in self.files_of(snap)
        ]

    def last_commit(self, writer_id: str) -> CommitRecord | None:
        """The last commit of the named writer, from the newest snapshot (refreshes first)."""
        snap = self.refresh()
        record = self.manifests.writer_record(snap, writer_id)
        if record is None:
            return None
        return CommitRecord(writer_id, record.commit_id, record.snapshot_id, dict(record.metadata))

    def store_stats(self) -> dict[str, dict[str, int]]:
        """Object-store requests and bytes by operation, since the store was opened."""
        return self.store.stats.snapshot()

    @property
    def stats(self) -> StoreStats:
        return self.store.stats

    # ----------------------------------------------------------------- reading

    def to_batches(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        snapshot_id: int | None = None,
        as_of: Any = None,
        section_rows: int = DEFAULT_SECTION_ROWS,
        tag: str | None = None,
    ) -> pa.RecordBatchReader:
        """The merged rows as a stream of record batches, with bounded memory."""
        return self._batches(columns, filter, snapshot_id, as_of, section_rows, tag, False)

    def _batches(
        self,
        columns: Sequence[str] | None,
        filter: pc.Expression | None,
        snapshot_id: int | None,
        as_of: Any,
        section_rows: int,
        tag: str | None,
        read_ahead: bool,
    ) -> pa.RecordBatchReader:
        snap = self.snapshot(snapshot_id, as_of, tag)
        schema = self.schema_at(snap.schema_id if snap else 0)
        request = make_request(schema, columns, filter)
        out_schema = pa.schema([schema.arrow.field(c).with_nullable(True) for c in request.columns])
        files = self.files_for(snap, request.filter)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in scan_batches(self.store, schema, files, request, section_rows, read_ahead):
                yield batch.cast(out_schema) if batch.schema != out_schema else batch

        return pa.RecordBatchReader.from_batches(out_schema, batches())

    def to_arrow(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        snapshot_id: int | None = None,
        as_of: Any = None,
        tag: str | None = None,
    ) -> pa.Table:
        """The merged rows (newest version per key, deletes hidden) as one Arrow table.

        Unlike a stream it decodes the next merge section while merging this one: it keeps
        every row anyway."""
        return self._batches(
            columns, filter, snapshot_id, as_of, DEFAULT_SECTION_ROWS, tag, True
        ).read_all()

    def to_pyarrow_dataset(
        self, snapshot_id: int | None = None, as_of: Any = None, tag: str | None = None
    ) -> ds.Dataset:
        """A ``pyarrow.dataset.Dataset`` of the merged view at a snapshot.

        Buckets that compaction left clean (no overlapping files, no tombstones) are lazy
        Parquet fragments with filter and projection pushdown; the other buckets are merged
        now and held in memory. See ``lsm3/read/dataset.py`` for the details and limits.
        """
        snap = self.snapshot(snapshot_id, as_of, tag)
        schema = self.schema_at(snap.schema_id if snap else 0)
        return merged_dataset(self.store, schema, self.files_of(snap))

    def get(
        self,
        key: Any,
        snapshot_id: int | None = None,
        columns: Sequence[str] | None = None,
        tag: str | None = None,
    ) -> dict[str, Any] | None:
        """The row with this primary key (a tuple for a composite key), or None."""
        return self.get_many([key], snapshot_id=snapshot_id, columns=columns, tag=tag)[0]

    def get_many(
        self,
        keys: Sequence[Any],
        snapshot_id: int | None = None,
        columns: Sequence[str] | None = None,
        tag: str | None = None,
    ) -> list[dict[str, Any] | None]:
        """Rows for many keys at once (None where absent), in the order of ``keys``."""
        snap = self.snapshot(snapshot_id, tag=tag)
        schema = self.schema_at(snap.schema_id if snap else 0)
        if len(keys) == 1:  # from the caches, when they hold what it needs
            row = get_one(self.store, schema, snap, lambda: self.files_of(snap), keys[0], columns)
            if row is not MISS:
                return [row]
        return lookup(self.store, schema, self.files_of(snap), list(keys), columns)

    def count(self, snapshot_id: int | None = None) -> int:
        """Live rows (merges the key columns only)."""
        reader = self.to_batches(columns=list(self.primary_key), snapshot_id=snapshot_id)
        return sum(b.num_rows for b in reader)

    def changes(
        self,
        from_snapshot_id: int,
        to_snapshot_id: int | None = None,
        include_update_before: bool = False,
    ) -> pa.Table:
        """The net change per key from one snapshot to another (default: the latest).

        One row per changed key with a ``_row_kind`` column: ``+I`` (new key), ``+U`` (new
        values of an existing key), ``-D`` (deleted key, with its old values) and, with
        ``include_update_before``, ``-U`` rows with the old values before each ``+U``.
        A consumer that remembers the last snapshot id it read sees every change exactly
        once; compaction contributes nothing.
        """
        return changes(self, from_snapshot_id, to_snapshot_id, include_update_before)

    def changelog(
        self,
        start_snapshot_id: int,
        end_snapshot_id: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Every change of the commits in (start, end], commit by commit, with ``_row_kind``
        (``+I -U +U -D``) and ``_snapshot_id`` (see :mod:`lsm3.read.changelog`)."""
        return changelog_table(self, start_snapshot_id, end_snapshot_id, columns)

    def changelog_batches(
        self,
        start_snapshot_id: int,
        end_snapshot_id: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`changelog`, streamed one commit at a time."""
        return changelog_batches(self, start_snapshot_id, end_snapshot_id, columns)

    def consumer(self, consumer_id: str, start_snapshot_id: int | None = None) -> Consumer:
        """The changelog consumer ``consumer_id`` (created at ``start_snapshot_id``, default
        the current snapshot, if new); expiry keeps what it has not consumed yet."""
        return Consumer(self, consumer_id, start_snapshot_id)

    def consumers(self) -> dict[str, int]:
        """Consumer id -> the last snapshot it has processed."""
        return {c: s.snapshot_id for c, s in list_consumers(self.store).items()}

    def follow(
        self, consumer_id: str, poll_interval: float = 1.0, stop: Any = None
    ) -> Iterator[tuple[int, pa.Table]]:
        """Yield ``(snapshot_id, changes)`` for each new commit as consumer ``consumer_id``
        (see :func:`lsm3.read.consumer.follow`)."""
        return follow(self, consumer_id, poll_interval, stop=stop)

    # ----------------------------------------------------------------- tags

    def tags(self) -> dict[str, int]:
        """Tag name -> snapshot id."""
        return {name: snap.snapshot_id for name, snap in self.tagged_snapshots().items()}

    def tagged_snapshots(self) -> dict[str, Snapshot]:
        """Tag name -> the tagged snapshot (embedded in the tag, so never expired)."""
        return list_tags(self.store)

    def create_tag(self, name: str, snapshot_id: int | None = None) -> int:
        """Name a snapshot (default: the current one); expiry never removes it."""
        return add_tag(self, name, snapshot_id)

    def delete_tag(self, name: str) -> None:
        remove_tag(self.store, name)

    # ----------------------------------------------------------------- schema evolution

    def schemas(self) -> list[TableSchema]:
        """Every schema version used by a retained snapshot, oldest first."""
        ids = {0} | {s.schema_id for s in self.snapshots()}
        return [self.schema_at(i) for i in sorted(ids)]

    def update_schema(self) -> SchemaCommit:
        """Change the schema: ``with t.update_schema() as u: u.add_column("x", pa.int64())``.

        The changes (add a nullable column, drop, rename, widen a type, set options) are
        committed together as a new schema version and a SCHEMA snapshot; no data is
        rewritten. Key, partition and sequence-field columns cannot change.
        """
        return SchemaCommit(self)

    def add_column(self, name: str, type: pa.DataType) -> Snapshot:
        with self.update_schema() as u:
            u.add_column(name, type)
        return self._require_snapshot()

    def drop_column(self, name: str) -> Snapshot:
        with self.update_schema() as u:
            u.drop_column(name)
        return self._require_snapshot()

    def rename_column(self, name: str, new_name: str) -> Snapshot:
        with self.update_schema() as u:
            u.rename_column(name, new_name)
        return self._require_snapshot()

    def widen_column(self, name: str, type: pa.DataType) -> Snapshot:
        with self.update_schema() as u:
            u.widen_column(name, type)
        return self._require_snapshot()

    def set_options(self, options: Mapping[str, Any]) -> Snapshot:
        with self.update_schema() as u:
            u.set_options(options)
        return self._require_snapshot()

    def _require_snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            raise CommitConflict("internal error: no snapshot after a schema commit")
        return snap

    # ----------------------------------------------------------------- writing

    def writer(self, writer_id: str | None = None) -> Writer:
        """A writer; name it (``writer_id``) to resume exactly once with ``last_commit``."""
        self.refresh()  # write against the newest schema
        return Writer(self, writer_id)

    def __repr__(self) -> str:
        snap = self._snapshot
        return f"lsm3.Table({self.uri!r}, snapshot={snap.snapshot_id if snap else 0})"


def create_table(
    uri: str | ObjectStore,
    schema: pa.Schema,
    primary_key: Sequence[str] | str,
    partition_by: Sequence[str] | str | None = None,
    buckets: int = 1,
    options: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Table:
    """Create a table at ``uri`` (or in an already opened ``ObjectStore``); fails with
    TableAlreadyExists if one is there."""
    store = _store(uri, storage_options)
    if store.unsafe_single_writer:  # the table says so to every later reader and writer
        options = {**(options or {}), "unsafe_single_writer": True}
    table_schema = new_schema(
        schema,
        list(primary_key) if not isinstance(primary_key, str) else [primary_key],
        partition_by,
        buckets,
        options,
    )
    try:
        store.put_if_absent(schema_key(0), table_schema.encode())
    except PreconditionFailed:
        raise TableAlreadyExists(
            f"a table already exists at {store.url}; open it with lsm3.open_table"
        ) from None
    return Table(store, table_schema)


def open_table(uri: str | ObjectStore, storage_options: Mapping[str, Any] | None = None) -> Table:
    """Open the table at ``uri`` (or in an ``ObjectStore``); TableNotFound if there is none."""
    store = _store(uri, storage_options)
    try:
        raw = store.get(schema_key(0))
    except ObjectNotFound:
        raise TableNotFound(
            f"no lsm3 table at {store.url} (no {schema_key(0)}); create one with lsm3.create_table"
        ) from None
    return Table(store, TableSchema.decode(raw, f"schema 0 of {store.url}"))


def _store(uri: str | ObjectStore, storage_options: Mapping[str, Any] | None) -> ObjectStore:
    if isinstance(uri, ObjectStore):
        if storage_options:
            raise InvalidInput("storage_options apply to URIs, not to an opened ObjectStore")
        return with_retries(uri)
    return with_retries(open_store(uri, dict(storage_options) if storage_options else None))
