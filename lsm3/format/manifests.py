"""Manifests: reading a snapshot's live file set and writing delta and merged manifests.

A snapshot lists manifests in order; replaying their ``add`` and ``remove`` entries gives the
live data files. A commit writes one small delta manifest and appends it to its parent's list,
so no commit rewrites the whole file list. When the list grows past the table option
``manifest_merge_threshold`` the committer writes one merged manifest of the live files and the
new snapshot lists only that one. Manifests are immutable and cached forever.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from lsm3.errors import CorruptMetadata, ObjectNotFound
from lsm3.format.metadata import DataFile, ManifestEntry, Snapshot, decode_manifest, encode_manifest
from lsm3.format.schema import TableSchema
from lsm3.io.store import ObjectStore


class ManifestReader:
    """Loads manifests through a small LRU cache and computes live file sets."""

    def __init__(self, store: ObjectStore, capacity: int = 1024) -> None:
        self.store = store
        self._cache: OrderedDict[str, list[ManifestEntry]] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        self._live_cache: OrderedDict[int, list[DataFile]] = OrderedDict()

    def write(self, entries: Sequence[ManifestEntry], schema: TableSchema) -> str:
        """Upload a new manifest and keep its entries cached (no GET to read it back)."""
        path = write_manifest(self.store, entries, schema)
        with self._lock:
            self._cache[path] = list(entries)
        return path

    def remember_live(self, snapshot_id: int, files: list[DataFile]) -> None:
        """Seed the live-file cache for a snapshot this process just committed."""
        with self._lock:
            self._live_cache[snapshot_id] = files

    def forget(self, paths: list[str], snapshot_ids: list[int]) -> None:
        """Drop deleted manifests and expired snapshots' file lists from the caches."""
        with self._lock:
            for path in paths:
                self._cache.pop(path, None)
            for sid in snapshot_ids:
                self._live_cache.pop(sid, None)

    def entries(self, path: str, schema: TableSchema) -> list[ManifestEntry]:
        with self._lock:
            found = self._cache.get(path)
            if found is not None:
                self._cache.move_to_end(path)
                return found
        try:
            raw = self.store.get(path)
        except ObjectNotFound:
            raise CorruptMetadata(f"manifest {path} is listed by a snapshot but missing") from None
        key_types = [schema.arrow.field(k).type for k in schema.primary_key]
        part_types = [schema.arrow.field(k).type for k in schema.partition_by]
        entries = decode_manifest(raw, key_types, part_types, f"manifest {path}")
        with self._lock:
            self._cache[path] = entries
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return entries

    def live_files(self, snapshot: Snapshot | None, schema: TableSchema) -> list[DataFile]:
        """The data files visible in ``snapshot``, in commit order."""
        if snapshot is None:
            return []
        with self._lock:
            found = self._live_cache.get(snapshot.snapshot_id)
        if found is not None:
            return found
        missing = [m for m in snapshot.manifests if m not in self._cache]
        if len(missing) > 1:  # cold start: fetch in parallel
            with ThreadPoolExecutor(max_workers=min(16, len(missing))) as pool:
                list(pool.map(lambda m: self.entries(m, schema), missing))
        live: dict[str, DataFile] = {}
        for path in snapshot.manifests:
            for e in self.entries(path, schema):
                if e.op == "add":
                    live[e.file.path] = e.file
                else:
                    live.pop(e.file.path, None)
        files = list(live.values())
        with self._lock:
            self._live_cache[snapshot.snapshot_id] = files
            while len(self._live_cache) > 64:
                self._live_cache.popitem(last=False)
        return files


def write_manifest(
    store: ObjectStore, entries: Sequence[ManifestEntry], schema: TableSchema
) -> str:
    """Upload a new manifest (a fresh unique name: it is never overwritten) and return its path."""
    key_types = [schema.arrow.field(k).type for k in schema.primary_key]
    part_types = [schema.arrow.field(k).type for k in schema.partition_by]
    path = f"manifest/manifest-{uuid.uuid4().hex}.json"
    store.put_if_absent(path, encode_manifest(entries, key_types, part_types))
    return path
