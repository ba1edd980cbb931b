"""An in-process object store: ``memory://name``, a process-wide dict per name.

For tests and notebooks; conditional puts are atomic under one lock.
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from lsm3.errors import ObjectNotFound, PreconditionFailed
from lsm3.io.store import ObjectInfo, ObjectStore, StoreStats, check_size, etag_of

_MEMORY_SPACES: dict[str, dict[str, tuple[bytes, int]]] = {}
_MEMORY_LOCK = threading.Lock()


class MemoryStore(ObjectStore):
    """Objects in a process-wide dict, named by ``memory://name``; for tests and notebooks."""

    def __init__(self, name: str, stats: StoreStats | None = None) -> None:
        super().__init__("memory://" + name, stats)
        with _MEMORY_LOCK:
            self._objects = _MEMORY_SPACES.setdefault(name, {})

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        raw = bytes(memoryview(data))
        with _MEMORY_LOCK:
            self._objects[key] = (raw, time.time_ns() // 1_000_000)
        self.stats.record("PUT", len(raw))

    def put_if_absent(self, key: str, data: bytes) -> None:
        self.stats.record("PUT", len(data))
        with _MEMORY_LOCK:
            if key in self._objects:
                raise PreconditionFailed(f"{key} already exists")
            self._objects[key] = (bytes(data), time.time_ns() // 1_000_000)

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        self.stats.record("PUT", len(data))
        with _MEMORY_LOCK:
            current = self._objects.get(key)
            if current is None or etag_of(current[0]) != etag:
                raise PreconditionFailed(f"{key} changed since it was read")
            self._objects[key] = (bytes(data), time.time_ns() // 1_000_000)

    def get(self, key: str) -> bytes:
        with _MEMORY_LOCK:
            found = self._objects.get(key)
        if found is None:
            self.stats.record("GET")
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        self.stats.record("GET", len(found[0]))
        return found[0]

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        with _MEMORY_LOCK:
            found = self._objects.get(key)
        if found is None:
            self.stats.record("GET")
            raise ObjectNotFound(f"{self.url}/{key} does not exist")
        if expected_size is not None:
            check_size(key, len(found[0]), expected_size)
        data = found[0][start : start + length]
        self.stats.record("GET", len(data))
        return data

    def head(self, key: str) -> ObjectInfo | None:
        self.stats.record("HEAD")
        with _MEMORY_LOCK:
            found = self._objects.get(key)
        if found is None:
            return None
        return ObjectInfo(key, len(found[0]), etag_of(found[0]), found[1])

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        self.stats.record("LIST")
        with _MEMORY_LOCK:
            items = [(k, v) for k, v in self._objects.items() if k.startswith(prefix)]
        return sorted(
            (
                ObjectInfo(k, len(v[0]), etag_of(v[0]), v[1])
                for k, v in items
                if start_after is None or k > start_after
            ),
            key=lambda i: i.key,
        )

    def delete(self, key: str) -> None:
        self.stats.record("DELETE")
        with _MEMORY_LOCK:
            self._objects.pop(key, None)
