"""The object-store interface every backend implements, its request counters and ``open_store``.

Everything above this layer sees a flat key space under a table (or warehouse) root and seven
operations: put, put-if-absent, put-if-match, get (whole or ranged), head, list and delete.
The conditional puts are the single point of agreement between concurrent processes; they are
atomic on S3 (``If-None-Match: *`` / ``If-Match``) and on a local directory (``os.link`` of a
fully written temporary file, which fails if the target exists). Every request and every byte
is counted, in :class:`StoreStats`, because requests are what S3 bills.

The backends live beside this module, one each: :mod:`lsm3.io.local`, :mod:`lsm3.io.memory`
and :mod:`lsm3.io.s3`. ``open_store`` imports the one a URL names on first use (so boto3 loads
only for ``s3://``); a new backend is a new module plus one line there.
"""

from __future__ import annotations

import hashlib
import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from lsm3.errors import InvalidInput, SizeMismatch

OPERATIONS = ("PUT", "GET", "LIST", "HEAD", "DELETE")


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a HEAD tells about one object."""

    key: str
    size: int
    etag: str | None
    last_modified_ms: int


class StoreStats:
    """Request and byte counters per operation kind; thread-safe, shared by a store's users."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self.bytes: dict[str, int] = dict.fromkeys(OPERATIONS, 0)

    def record(self, op: str, nbytes: int = 0, requests: int = 1) -> None:
        with self._lock:
            self.requests[op] += requests
            self.bytes[op] += nbytes

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the counters: ``{"requests": {...}, "bytes": {...}}``."""
        with self._lock:
            return {"requests": dict(self.requests), "bytes": dict(self.bytes)}

    def reset(self) -> None:
        with self._lock:
            for op in OPERATIONS:
                self.requests[op] = 0
                self.bytes[op] = 0

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())


class ObjectStore(ABC):
    """A flat key space under one root. Keys use ``/`` and never start with it."""

    def __init__(self, url: str, stats: StoreStats | None = None) -> None:
        self.url = url.rstrip("/")
        self.stats = stats if stats is not None else StoreStats()

    @abstractmethod
    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        """Write an object unconditionally (only for keys no one else can choose)."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create the object; raise :class:`PreconditionFailed` if it already exists."""

    @abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        """Replace the object only if its ETag is still ``etag``; else PreconditionFailed."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; raise :class:`ObjectNotFound` if it does not exist."""

    @abstractmethod
    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        """``length`` bytes from offset ``start``; with ``expected_size``, raise SizeMismatch
        if the object's total size differs (checked for free from the response)."""

    def get_range_into(
        self, key: str, start: int, out: memoryview, expected_size: int | None = None
    ) -> None:
        """Fill ``out`` with the ``len(out)`` bytes from offset ``start`` (see ``get_range``):
        a backend that can read straight into memory the caller already holds saves a copy
        and a fresh allocation of the range (a local file: one ``preadv``)."""
        data = self.get_range(key, start, len(out), expected_size)
        if len(data) != len(out):
            raise SizeMismatch(f"{key} gave {len(data)} bytes from {start}, expected {len(out)}")
        out.cast("B")[:] = memoryview(data).cast("B")

    def map_range(self, key: str, start: int, end: int, size: int) -> pa.Buffer | None:
        """The whole object (of ``size`` bytes, else SizeMismatch) as a zero-copy buffer of
        which the caller reads only bytes ``start:end``, where the backend can map it (a local
        file: pages are read from the page cache when touched and unmapped with the buffer,
        with no copy into fresh memory); None where it cannot (use ``get_range_into``)."""
        return None

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and age of the object, or None if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (and sorts after ``start_after``), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    def get_buffer(self, key: str, size: int | None = None) -> pa.Buffer:
        """The whole object as an Arrow buffer (zero-copy where the backend allows).

        ``size``: the object's size, when the caller knows it (a data file's manifest entry).
        A backend that then fetches it in parts at once (S3) raises SizeMismatch if the
        object has another size; the others return the object as it is (the caller compares
        sizes)."""
        return pa.py_buffer(self.get(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove many objects (S3 batches them: one request per 1000 keys)."""
        for key in keys:
            self.delete(key)

    def open_ranged(self, key: str, size: int) -> pa.NativeFile:
        """A random-access file whose reads become ranged GETs (for Parquet footers, row groups)."""
        return pa.PythonFile(_RangedReader(self, key, size), mode="r")

    def get_with_etag(self, key: str) -> tuple[bytes, str | None]:
        """The object and its ETag, for a later :meth:`put_if_match`."""
        data = self.get(key)
        return data, etag_of(data)

    def child(self, prefix: str) -> ObjectStore:
        """A store rooted at ``prefix`` below this root, sharing the counters."""
        return _PrefixedStore(self, prefix)

    def describe(self) -> str:
        return self.url

    @property
    def unsafe_single_writer(self) -> bool:
        """True if this store has no atomic create-only put and was opened anyway, for a
        single writer (``storage_options={"unsafe_single_writer": True}``; see
        :mod:`lsm3.io.fsspec`). A table created on such a store records it in its options."""
        return False


def check_size(key: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise SizeMismatch(f"{key} has {actual} bytes, expected {expected}")


def etag_of(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class _RangedReader(io.RawIOBase):
    """A read-only file over ranged GETs; the Parquet reader asks for the footer, then chunks."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._store.get_range(self._key, self._pos, end - self._pos, self._size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


class _PrefixedStore(ObjectStore):
    """A view of another store below a key prefix (a table inside a warehouse)."""

    def __init__(self, parent: ObjectStore, prefix: str) -> None:
        prefix = prefix.strip("/")
        super().__init__(f"{parent.url}/{prefix}", parent.stats)
        self._parent = parent
        self._prefix = prefix + "/"

    def _k(self, key: str) -> str:
        return self._prefix + key

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        self._parent.put(self._k(key), data)

    def put_if_absent(self, key: str, data: bytes) -> None:
        self._parent.put_if_absent(self._k(key), data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        self._parent.put_if_match(self._k(key), data, etag)

    def get(self, key: str) -> bytes:
        return self._parent.get(self._k(key))

    def get_with_etag(self, key: str) -> tuple[bytes, str | None]:
        return self._parent.get_with_etag(self._k(key))

    def get_buffer(self, key: str, size: int | None = None) -> pa.Buffer:
        return self._parent.get_buffer(self._k(key), size)

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        return self._parent.get_range(self._k(key), start, length, expected_size)

    def get_range_into(
        self, key: str, start: int, out: memoryview, expected_size: int | None = None
    ) -> None:
        self._parent.get_range_into(self._k(key), start, out, expected_size)

    def map_range(self, key: str, start: int, end: int, size: int) -> pa.Buffer | None:
        return self._parent.map_range(self._k(key), start, end, size)

    def open_ranged(self, key: str, size: int) -> pa.NativeFile:
        return self._parent.open_ranged(self._k(key), size)

    def head(self, key: str) -> ObjectInfo | None:
        info = self._parent.head(self._k(key))
        if info is None:
            return None
        return ObjectInfo(key, info.size, info.etag, info.last_modified_ms)

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        after = self._k(start_after) if start_after is not None else None
        n = len(self._prefix)
        return [
            ObjectInfo(i.key[n:], i.size, i.etag, i.last_modified_ms)
            for i in self._parent.list(self._k(prefix), after)
        ]

    def delete(self, key: str) -> None:
        self._parent.delete(self._k(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        self._parent.delete_many([self._k(k) for k in keys])

    @property
    def unsafe_single_writer(self) -> bool:
        return self._parent.unsafe_single_writer


#: URL schemes served by :mod:`lsm3.io.fsspec` (adlfs, gcsfs) without being asked.
FSSPEC_SCHEMES = ("az", "abfs", "abfss", "gs", "gcs")


def open_store(uri: str, storage_options: dict[str, Any] | None = None) -> ObjectStore:
    """The store for a URI: ``s3://bucket/prefix``, ``file:///path``, a plain path, ``memory://x``,
    ``az://container/prefix``, ``gs://bucket/prefix`` or any other fsspec URL.

    ``storage_options["backend"]`` picks a backend where there is a choice: ``"s3fs"`` for
    ``s3://`` (default ``"boto3"``), ``"fsspec"`` for ``memory://`` (fsspec's memory
    filesystem; default lsm3's own). ``unsafe_single_writer`` lets a filesystem without an
    atomic create-only put be used by one writer (see :mod:`lsm3.io.fsspec`)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput(f"a table URI must be a non-empty string, got {uri!r}")
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    options = dict(storage_options or {})
    backend = options.get("backend")
    if scheme in FSSPEC_SCHEMES or backend in ("s3fs", "fsspec"):
        if backend not in (None, "fsspec", "s3fs") or (backend == "s3fs") != (
            scheme in ("s3", "s3a")
        ):
            raise InvalidInput(
                f"storage option backend={backend!r} does not apply to {scheme}:// URIs; "
                "use backend='s3fs' with s3://, 'fsspec' with memory:// or other fsspec URLs"
            )
        return _fsspec_store(uri, options)
    if backend not in (None, "boto3") and scheme in ("s3", "s3a"):
        raise InvalidInput(f"unknown S3 backend {backend!r}; use 'boto3' (default) or 's3fs'")
    if backend is not None and scheme not in ("s3", "s3a"):
        raise InvalidInput(f"storage option backend={backend!r} does not apply to {uri!r}")
    options.pop("backend", None)
    # Every store below creates atomically: the option changes nothing for them.
    options.pop("unsafe_single_writer", None)
    if scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise InvalidInput(f"{uri!r} names no bucket; use s3://bucket/path")
        from lsm3.io.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path, options)
    if scheme == "file":
        from lsm3.io.local import LocalStore

        return LocalStore(parsed.path)
    if scheme == "memory":
        from lsm3.io.memory import MemoryStore

        # The first component names the space; the rest is a prefix inside it, so a table's
        # URI below a memory:// warehouse opens the same objects the warehouse holds.
        store: ObjectStore = MemoryStore(parsed.netloc)
        path = parsed.path.strip("/")
        return store.child(path) if path else store
    if scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        from lsm3.io.local import LocalStore

        return LocalStore(uri)
    # Anything else: fsspec, if it knows the scheme (and refuses it if it cannot create
    # atomically, unless unsafe_single_writer).
    return _fsspec_store(uri, storage_options)


def _fsspec_store(uri: str, storage_options: dict[str, Any] | None) -> ObjectStore:
    parsed = urlparse(uri)
    if parsed.scheme.lower() in (*FSSPEC_SCHEMES, "s3", "s3a") and not parsed.netloc:
        raise InvalidInput(f"{uri!r} names no bucket or container; use {parsed.scheme}://name/path")
    from lsm3.io.fsspec import open_fsspec_store

    return open_fsspec_store(uri, storage_options)
