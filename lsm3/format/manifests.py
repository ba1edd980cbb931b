"""Manifests: reading a snapshot's live file set, its manifest list and writer records.

A snapshot's manifests are those of its manifest list (version 2) followed by its own tail;
replaying their ``add`` and ``remove`` entries in order gives the live data files. A commit
writes one small delta manifest and appends it to the tail; how tails are folded into new
manifest lists is the committer's business (``lsm3/write/manifest_merge.py``). Manifests and
lists are immutable and cached forever.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from lsm3.errors import CorruptMetadata, ObjectNotFound, PreconditionFailed
from lsm3.format.manifest_codec import decode_manifest, encode_manifest
from lsm3.format.manifest_list import ManifestList
from lsm3.format.metadata import (
    DataFile,
    ManifestEntry,
    Snapshot,
    WriterRecord,
)
from lsm3.format.schema import TableSchema
from lsm3.io.store import ObjectStore


class ManifestReader:
    """Loads manifests and manifest lists through LRU caches and computes live file sets."""

    def __init__(self, store: ObjectStore, capacity: int = 1024) -> None:
        self.store = store
        # path -> (the sequence base applied to the entries, the entries): a manifest is
        # decoded with the base its first reader gives it, so a cold open builds each entry
        # once instead of decoding it and then copying it with its base.
        self._cache: OrderedDict[str, tuple[int, list[ManifestEntry]]] = OrderedDict()
        self._lists: OrderedDict[str, ManifestList] = OrderedDict()
        self._flat: OrderedDict[str, ManifestList] = OrderedDict()  # lists, parts expanded
        self._lock = threading.Lock()
        self._capacity = capacity
        self._live_cache: OrderedDict[int, tuple[Snapshot, dict[str, DataFile]]] = OrderedDict()
        self._list_live: OrderedDict[str, dict[str, DataFile]] = OrderedDict()

    def write(
        self,
        entries: Sequence[ManifestEntry],
        schema: TableSchema,
        reuse_since_ms: int | None = None,
        *,
        shared: bool = True,
    ) -> str:
        """Upload a new manifest and keep its entries cached (no GET to read it back).
        ``reuse_since_ms``: name it by its content (section 4a), so a committer that derives
        the same manifest again (a rival folding the same parent, or a retried commit writing
        the same delta) writes it once; see ``_put_by_content``. ``shared``: others may be
        writing it too (a fold), so look before putting; a delta (False) is only ever written
        again by a retry of its own commit, so it is put at once."""
        if reuse_since_ms is not None:
            raw = encode_manifest(entries, *_types(schema))
            path = self._put_by_content("manifest/manifest-", raw, reuse_since_ms, probe=shared)
        else:
            path = write_manifest(self.store, entries, schema)
        with self._lock:
            self._cache[path] = (0, list(entries))
        return path

    def write_list(self, manifest_list: ManifestList, reuse_since_ms: int | None = None) -> str:
        """Upload a new manifest list (a fresh name, or named by its content when
        ``reuse_since_ms`` is given) and keep it cached."""
        raw = manifest_list.encode()
        if reuse_since_ms is not None:
            path = self._put_by_content(MANIFEST_LIST_PREFIX, raw, reuse_since_ms)
        else:
            path = f"{MANIFEST_LIST_PREFIX}{uuid.uuid4().hex}.json"
            self.store.put_if_absent(path, raw)
        with self._lock:
            self._lists[path] = manifest_list
        return path

    def _put_by_content(
        self, prefix: str, raw: bytes, reuse_since_ms: int, *, probe: bool = True
    ) -> str:
        """Store ``raw`` under ``prefix`` + the first 32 hex digits of its SHA-256, unless an
        object of that name (hence that content) is there already, last modified at or after
        ``reuse_since_ms``: the oldest upload the commit makes live, so orphan cleanup's grace
        period covers the reused object as it covers that upload. An older one (which cleanup
        may be deleting) is not reused: the bytes go under a fresh name instead. ``probe``:
        HEAD first (worth it where a rival has likely written it); else put first, and HEAD
        only when the put finds the name taken."""
        path = f"{prefix}{hashlib.sha256(raw).hexdigest()[:32]}.json"
        found = self.store.head(path) if probe else None
        if found is None:
            try:
                self.store.put_if_absent(path, raw)
                return path
            except PreconditionFailed:  # written meanwhile (a rival, or an earlier attempt)
                found = self.store.head(path)
        if found is not None and found.last_modified_ms >= reuse_since_ms:
            return path
        path = f"{prefix}{uuid.uuid4().hex}.json"
        self.store.put_if_absent(path, raw)
        return path

    def forget(self, paths: list[str], snapshot_ids: list[int]) -> None:
        """Drop deleted manifests and expired snapshots' file lists from the caches."""
        with self._lock:
            for path in paths:
                self._cache.pop(path, None)
                self._lists.pop(path, None)
                self._flat.pop(path, None)
                self._list_live.pop(path, None)
            for sid in snapshot_ids:
                self._live_cache.pop(sid, None)

    def entries(self, path: str, schema: TableSchema, base: int = 0) -> list[ManifestEntry]:
        """The manifest's entries with sequence base ``base`` added to their ``seq_offset``
        (section 4b; 0: as stored)."""
        with self._lock:
            found = self._cache.get(path)
            if found is not None:
                self._cache.move_to_end(path)
        if found is not None:
            held, entries = found
            return entries if held == base else with_base(entries, base - held)
        try:
            raw = self.store.get(path)
        except ObjectNotFound:
            raise CorruptMetadata(f"manifest {path} is listed by a snapshot but missing") from None
        entries = decode_manifest(raw, *_types(schema), f"manifest {path}", seq_base=base)
        with self._lock:
            self._cache[path] = (base, entries)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return entries

    def manifest_list(self, path: str) -> ManifestList:
        """The manifest list at ``path`` (cached forever: lists are immutable)."""
        with self._lock:
            found = self._lists.get(path)
            if found is not None:
                self._lists.move_to_end(path)
                return found
        try:
            raw = self.store.get(path)
        except ObjectNotFound:
            raise CorruptMetadata(
                f"manifest list {path} is named by a snapshot but missing"
            ) from None
        found = ManifestList.decode(raw, f"manifest list {path}")
        with self._lock:
            self._lists[path] = found
            while len(self._lists) > 64:
                self._lists.popitem(last=False)
        return found

    def listed(self, snapshot: Snapshot) -> ManifestList:
        """The snapshot's manifest list with its parts' manifests in place (section 4a: the
        parts' manifests, then the list's own), as one list without parts; an empty one for
        a version-1 snapshot."""
        if snapshot.manifest_list is None:
            return EMPTY_LIST
        return self.flat_list(snapshot.manifest_list)

    def flat_list(self, path: str) -> ManifestList:
        """The list at ``path`` with its parts expanded (parts fetched in parallel)."""
        top = self.manifest_list(path)
        if not top.parts:
            return top
        with self._lock:
            found = self._flat.get(path)
        if found is not None:
            return found
        parts = self.parts_of(top)
        metas = [m for part in parts for m in part.manifests]
        flat = ManifestList((*metas, *top.manifests), top.writers)
        with self._lock:
            self._flat[path] = flat
            while len(self._flat) > 4:
                self._flat.popitem(last=False)
        return flat

    def parts_of(self, top: ManifestList) -> list[ManifestList]:
        """The lists ``top`` names as its parts, in order; a part that names parts itself is
        refused (section 4a: one level, so a reader needs one more round of requests)."""
        paths = [m.path for m in top.parts]
        if len(paths) > 1:
            with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
                parts = list(pool.map(self.manifest_list, paths))
        else:
            parts = [self.manifest_list(p) for p in paths]
        for path, part in zip(paths, parts, strict=True):
            if part.parts:
                raise CorruptMetadata(f"manifest list {path} is a part but names parts itself")
        return parts

    def all_manifests(self, snapshot: Snapshot) -> list[str]:
        """Every manifest of the snapshot in replay order: its list's, then its tail."""
        return [*self.listed(snapshot).paths, *snapshot.manifests]

    def delta_entries(self, snapshot: Snapshot, schema: TableSchema) -> list[ManifestEntry]:
        """The entries of the snapshot's own commit (its ``delta_manifest``, [] if none),
        with the snapshot's ``delta_offset`` added to their ``seq_offset`` (section 4b)."""
        if snapshot.delta_manifest is None:
            return []
        return self.entries(snapshot.delta_manifest, schema, snapshot.delta_offset)

    def referenced(self, snapshot: Snapshot) -> set[str]:
        """Every object under ``manifest/`` the snapshot needs: its manifest list and the
        lists it names as parts, the manifests they name, its tail and its delta manifest."""
        if snapshot.manifest_list is None:
            return set(snapshot.referenced_manifests)
        parts = self.manifest_list(snapshot.manifest_list).parts
        return {
            *snapshot.referenced_manifests,
            *(m.path for m in parts),
            *self.listed(snapshot).paths,
        }

    def writer_record(self, snapshot: Snapshot | None, writer_id: str) -> WriterRecord | None:
        """The last commit of a named writer as of ``snapshot``: the snapshot's own records
        override those its manifest list carries."""
        if snapshot is None:
            return None
        found = snapshot.writers.get(writer_id)
        if found is None and snapshot.manifest_list is not None:
            found = self.listed(snapshot).writers.get(writer_id)
        return found

    def all_writers(self, snapshot: Snapshot | None) -> dict[str, WriterRecord]:
        """Every named writer's last commit as of ``snapshot``."""
        if snapshot is None:
            return {}
        return {**self.listed(snapshot).writers, **snapshot.writers}

    def fetch(self, manifests: Sequence[tuple[str, int]], schema: TableSchema) -> None:
        """Load the manifests (paths with the sequence bases they will be read with) not
        cached yet, in parallel."""
        missing = [(p, b) for p, b in dict(reversed(manifests)).items() if p not in self._cache]
        if len(missing) > 1:
            with ThreadPoolExecutor(max_workers=min(16, len(missing))) as pool:
                list(pool.map(lambda m: self.entries(m[0], schema, m[1]), missing))

    def has_live(self, snapshot: Snapshot) -> bool:
        """Whether the snapshot's live set is cached (no request needed to compute it)."""
        with self._lock:
            found = self._live_cache.get(snapshot.snapshot_id)
        return found is not None and found[0] == snapshot

    def replay(
        self, manifests: Sequence[tuple[str, int]], schema: TableSchema
    ) -> dict[str, DataFile]:
        """Path -> data file after replaying ``manifests`` (paths with their sequence bases)
        in order, fetched in parallel; not cached (a part of a snapshot's manifests)."""
        self.fetch(manifests, schema)
        live: dict[str, DataFile] = {}
        for path, base in manifests:
            _replay(live, self.entries(path, schema, base))
        return live

    def live_files(self, snapshot: Snapshot | None, schema: TableSchema) -> list[DataFile]:
        """The data files visible in ``snapshot``, in commit order."""
        return list(self.live_map(snapshot, schema).values())

    def live_map(self, snapshot: Snapshot | None, schema: TableSchema) -> dict[str, DataFile]:
        """Path -> data file of the files visible in ``snapshot`` (do not modify it).

        Derived from the parent's cached set when the snapshot only appends its delta to the
        parent's manifests, else from the cached replay of its manifest list plus its tail.
        """
        if snapshot is None:
            return {}
        with self._lock:
            found = self._live_cache.get(snapshot.snapshot_id)
            parent = self._live_cache.get(snapshot.snapshot_id - 1)
        if found is not None and found[0] == snapshot:
            return found[1]
        if parent is not None and _extends(parent[0], snapshot):
            live = dict(parent[1])
            _replay(live, self.delta_entries(snapshot, schema))
        else:
            listed = self.listed(snapshot)
            self.fetch([*((m.path, m.seq_base) for m in listed.manifests), *snapshot.tail], schema)
            live = dict(self._list_replay(snapshot.manifest_list, listed, schema))
            for path, base in snapshot.tail:
                _replay(live, self.entries(path, schema, base))
        with self._lock:
            self._live_cache[snapshot.snapshot_id] = (snapshot, live)
            while len(self._live_cache) > 8:
                self._live_cache.popitem(last=False)
        return live

    def _list_replay(
        self, path: str | None, listed: ManifestList, schema: TableSchema
    ) -> dict[str, DataFile]:
        if path is None:
            return {}
        with self._lock:
            found = self._list_live.get(path)
        if found is not None:
            return found
        live: dict[str, DataFile] = {}
        for meta in listed.manifests:
            _replay(live, self.entries(meta.path, schema, meta.seq_base))
        with self._lock:
            self._list_live[path] = live
            while len(self._list_live) > 2:
                self._list_live.popitem(last=False)
        return live


#: Manifest lists live beside the manifests: ``manifest/list-<32 hex>.json``.
MANIFEST_LIST_PREFIX = "manifest/list-"
EMPTY_LIST = ManifestList(())


def with_base(entries: list[ManifestEntry], base: int) -> list[ManifestEntry]:
    """A manifest's entries as its referrer gives them: ``base`` (the manifest's sequence
    base, section 4b) added to each entry's ``seq_offset``."""
    if base == 0:
        return entries
    return [ManifestEntry(e.op, e.file.with_offset(e.file.seq_offset + base)) for e in entries]


def _replay(live: dict[str, DataFile], entries: Sequence[ManifestEntry]) -> None:
    for e in entries:
        if e.op == "add":
            live[e.file.path] = e.file
        else:
            live.pop(e.file.path, None)


def _extends(parent: Snapshot, child: Snapshot) -> bool:
    """True if ``child``'s manifests are exactly ``parent``'s plus its own delta (or the
    same, when it changed no file), so its live set is the parent's with the delta applied."""
    if child.manifest_list != parent.manifest_list:
        return False
    if child.delta_manifest is None:
        return child.tail == parent.tail
    return child.tail == (*parent.tail, (child.delta_manifest, child.delta_offset))


def write_manifest(
    store: ObjectStore, entries: Sequence[ManifestEntry], schema: TableSchema
) -> str:
    """Upload a new manifest (a fresh unique name: it is never overwritten) and return its path."""
    path = f"manifest/manifest-{uuid.uuid4().hex}.json"
    store.put_if_absent(path, encode_manifest(entries, *_types(schema)))
    return path


def _types(schema: TableSchema) -> tuple[list[pa.DataType], list[pa.DataType]]:
    """The key column types and the partition column types, as the manifest codec takes them."""
    key_types = [schema.arrow.field(k).type for k in schema.primary_key]
    part_types = [schema.arrow.field(k).type for k in schema.partition_by]
    return key_types, part_types
