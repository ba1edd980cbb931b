"""Object store access: the only module that talks to S3 or the file system.

Everything above this layer sees a flat key space under a table (or warehouse) root and seven
operations: put, put-if-absent, put-if-match, get (whole or ranged), head, list and delete.
The conditional puts are the single point of agreement between concurrent processes; they are
atomic on S3 (``If-None-Match: *`` / ``If-Match``) and on a local directory (``os.link`` of a
fully written temporary file, which fails if the target exists). Every request and every byte
is counted here, in :class:`StoreStats`, because requests are what S3 bills.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from lsm3.errors import (
    InvalidInput,
    ObjectNotFound,
    PreconditionFailed,
    SizeMismatch,
    StorageError,
)

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
        return data, _etag_of(data)

    def child(self, prefix: str) -> ObjectStore:
        """A store rooted at ``prefix`` below this root, sharing the counters."""
        return _PrefixedStore(self, prefix)

    def describe(self) -> str:
        return self.url


def _check_size(key: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise SizeMismatch(f"{key} has {actual} bytes, expected {expected}")


def _etag_of(data: bytes) -> str:
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


# --------------------------------------------------------------------------- local directory


class LocalStore(ObjectStore):
    """Objects as files under a directory; creation is atomic by ``os.link`` of a temp file."""

    def __init__(self, root: str, stats: StoreStats | None = None, fsync: bool = True) -> None:
        root = os.path.abspath(root)
        super().__init__("file://" + root, stats)
        self.root = root
        self.fsync = fsync

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise InvalidInput(f"object key {key!r} escapes the store root")
        return os.path.join(self.root, *key.split("/"))

    def _write_temp(self, path: str, data: bytes | pa.Buffer) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(memoryview(data))
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)
        self.stats.record("PUT", len(memoryview(data)))

    def put_if_absent(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise PreconditionFailed(f"{key} already exists") from None
        finally:
            os.unlink(tmp)
            self.stats.record("PUT", len(data))

    @contextlib.contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        path = self._path(key)
        with self._locked(path):
            try:
                with open(path, "rb") as f:
                    current = _etag_of(f.read())
            except FileNotFoundError:
                raise PreconditionFailed(f"{key} does not exist") from None
            if current != etag:
                raise PreconditionFailed(f"{key} changed since it was read")
            tmp = self._write_temp(path, data)
            os.replace(tmp, path)
        self.stats.record("PUT", len(data))

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            self.stats.record("GET")
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
        self.stats.record("GET", len(data))
        return data

    def get_buffer(self, key: str, size: int | None = None) -> pa.Buffer:
        try:
            with pa.memory_map(self._path(key), "r") as mm:
                buf = mm.read_buffer()
        except (FileNotFoundError, NotADirectoryError):
            self.stats.record("GET")
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
        self.stats.record("GET", buf.size)
        return buf

    @contextlib.contextmanager
    def _open_sized(self, key: str, expected_size: int | None) -> Iterator[int]:
        """The object's file descriptor, for a ranged read, after checking its size."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            self.stats.record("GET")
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None
        try:
            if expected_size is not None:
                _check_size(key, os.fstat(fd).st_size, expected_size)
            yield fd
        finally:
            os.close(fd)

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        with self._open_sized(key, expected_size) as fd:
            data = os.pread(fd, length, start)
        self.stats.record("GET", len(data))
        return data

    def get_range_into(
        self, key: str, start: int, out: memoryview, expected_size: int | None = None
    ) -> None:
        with self._open_sized(key, expected_size) as fd:
            got = os.preadv(fd, [out], start)
        self.stats.record("GET", got)
        if got != len(out):
            raise SizeMismatch(f"{key} gave {got} bytes from {start}, expected {len(out)}")

    def head(self, key: str) -> ObjectInfo | None:
        self.stats.record("HEAD")
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, None, st.st_mtime_ns // 1_000_000)

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        self.stats.record("LIST")
        # Walk only the deepest directory the prefix names, not the whole root.
        base_dir_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_dir_key) if base_dir_key else self.root
        out: list[ObjectInfo] = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(".lock"):  # put_if_match's lock files are not objects
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(key, st.st_size, None, st.st_mtime_ns // 1_000_000))
        out.sort(key=lambda i: i.key)
        return out

    def delete(self, key: str) -> None:
        self.stats.record("DELETE")
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # Like S3, a "directory" exists only while it holds objects.
        parent = os.path.dirname(path)
        while parent != self.root and parent.startswith(self.root):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)


# --------------------------------------------------------------------------- memory

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
            if current is None or _etag_of(current[0]) != etag:
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
            _check_size(key, len(found[0]), expected_size)
        data = found[0][start : start + length]
        self.stats.record("GET", len(data))
        return data

    def head(self, key: str) -> ObjectInfo | None:
        self.stats.record("HEAD")
        with _MEMORY_LOCK:
            found = self._objects.get(key)
        if found is None:
            return None
        return ObjectInfo(key, len(found[0]), _etag_of(found[0]), found[1])

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        self.stats.record("LIST")
        with _MEMORY_LOCK:
            items = [(k, v) for k, v in self._objects.items() if k.startswith(prefix)]
        return sorted(
            (
                ObjectInfo(k, len(v[0]), _etag_of(v[0]), v[1])
                for k, v in items
                if start_after is None or k > start_after
            ),
            key=lambda i: i.key,
        )

    def delete(self, key: str) -> None:
        self.stats.record("DELETE")
        with _MEMORY_LOCK:
            self._objects.pop(key, None)


# --------------------------------------------------------------------------- S3

_MULTIPART_THRESHOLD = 64 * 1024 * 1024
_MULTIPART_CHUNK = 16 * 1024 * 1024
_STORAGE_OPTION_KEYS = {
    "endpoint_url": "endpoint_url",
    "region": "region_name",
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
}


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _s3_client(storage_options: dict[str, Any]) -> Any:
    """A boto3 S3 client for these options, shared per distinct options (boto3 clients are
    thread-safe and take a quarter of a second to build)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    cache_key = repr((sorted(storage_options.items(), key=repr), sorted(env.items())))
    with _CLIENTS_LOCK:
        found = _CLIENTS.get(cache_key)
    if found is not None:
        return found
    client = _new_s3_client(storage_options)
    with _CLIENTS_LOCK:
        return _CLIENTS.setdefault(cache_key, client)


def _new_s3_client(storage_options: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    options = dict(storage_options)
    client_kwargs: dict[str, Any] = {}
    for name, boto_name in _STORAGE_OPTION_KEYS.items():
        value = options.pop(name, None)
        if value is not None:
            client_kwargs[boto_name] = value
    endpoint = (
        client_kwargs.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or (os.environ.get("AWS_ENDPOINT_URL"))
    )
    if "region_name" not in client_kwargs and not (
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    ):
        client_kwargs["region_name"] = "us-east-1"
    profile = options.pop("profile", None)
    config_kwargs: dict[str, Any] = {
        "retries": {"max_attempts": 5, "mode": "standard"},
        "max_pool_connections": 32,
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if endpoint:
        # S3-compatible servers (MinIO, SeaweedFS, moto) want path-style addressing and
        # plain payload checksums rather than aws-chunked trailers.
        config_kwargs["s3"] = {"addressing_style": "path"}
        config_kwargs["request_checksum_calculation"] = "when_required"
        config_kwargs["response_checksum_validation"] = "when_required"
    try:
        session = boto3.session.Session(profile_name=profile)
        return session.client("s3", config=Config(**config_kwargs), **client_kwargs, **options)
    except TypeError as exc:
        raise InvalidInput(
            f"unknown storage option(s) {sorted(options)} ({exc}); known: "
            f"{sorted([*_STORAGE_OPTION_KEYS, 'profile'])}, other keys go to boto3.client()"
        ) from None


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


#: Part size of an S3 object fetched in parallel ranged GETs (``S3Store.get_buffer``); objects
#: under twice this size are fetched with one GET.
PART_BYTES = 8 * 1024 * 1024

_PART_POOL: ThreadPoolExecutor | None = None
_PART_POOL_LOCK = threading.Lock()


def _part_pool() -> ThreadPoolExecutor:
    """One pool for every part fetch in the process, so that runs fetched at once share
    8 connections rather than each opening its own (the client pools 32)."""
    global _PART_POOL
    with _PART_POOL_LOCK:
        if _PART_POOL is None:
            _PART_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lsm3-s3-part")
        return _PART_POOL


class S3Store(ObjectStore):
    """Objects in an S3 bucket below a prefix, through boto3 (conditional puts need it)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        storage_options: dict[str, Any] | None = None,
        stats: StoreStats | None = None,
    ) -> None:
        prefix = prefix.strip("/")
        super().__init__(f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}", stats)
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self._client = _s3_client(storage_options or {})

    def _k(self, key: str) -> str:
        return self.prefix + key

    def _fail(self, exc: Exception, what: str, key: str) -> StorageError:
        code, status = _error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            if code == "NoSuchBucket":
                return StorageError(f"bucket {self.bucket!r} does not exist; create it first")
            return ObjectNotFound(f"s3://{self.bucket}/{self._k(key)} does not exist")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return PreconditionFailed(f"{key}: {code or status}")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"{what} s3://{self.bucket}/{self._k(key)} was refused ({code}); check the "
                "credentials (storage_options or the AWS environment) and the bucket policy"
            )
        return StorageError(f"{what} s3://{self.bucket}/{self._k(key)} failed: {exc}")

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        size = len(memoryview(data))
        try:
            if size > _MULTIPART_THRESHOLD:
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_threshold=_MULTIPART_THRESHOLD, multipart_chunksize=_MULTIPART_CHUNK
                )
                self._client.upload_fileobj(
                    io.BytesIO(memoryview(data)), self.bucket, self._k(key), Config=config
                )
                parts = -(-size // _MULTIPART_CHUNK)
                self.stats.record("PUT", size, requests=parts + 2)
                return
            self._client.put_object(Bucket=self.bucket, Key=self._k(key), Body=bytes(data))
        except Exception as exc:
            self.stats.record("PUT", size)
            raise self._fail(exc, "PUT", key) from exc
        self.stats.record("PUT", size)

    def put_if_absent(self, key: str, data: bytes) -> None:
        self.stats.record("PUT", len(data))
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._k(key), Body=data, IfNoneMatch="*"
            )
        except Exception as exc:
            raise self._fail(exc, "PUT", key) from exc

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        self.stats.record("PUT", len(data))
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, IfMatch=etag)
        except Exception as exc:
            err = self._fail(exc, "PUT", key)
            if isinstance(err, ObjectNotFound):  # moto answers 404 where S3 answers 412
                err = PreconditionFailed(f"{key} does not exist")
            raise err from exc

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_buffer(self, key: str, size: int | None = None) -> pa.Buffer:
        """Of a large object whose size is known: ranged GETs of ``PART_BYTES``, several at
        once, straight into one buffer. One GET streams through a single connection and
        grows its bytes as it reads (a 74 MB run from SeaweedFS on 127.0.0.1: 0.16-0.49 s;
        as nine 8 MiB parts: 0.11-0.15 s, with a fraction of the client CPU)."""
        if size is None or size < 2 * PART_BYTES:
            return pa.py_buffer(self.get(key))
        out = pa.allocate_buffer(size)
        view = memoryview(out)
        starts = range(0, size, PART_BYTES)
        list(
            _part_pool().map(
                lambda start: self.get_range_into(
                    key, start, view[start : start + PART_BYTES], expected_size=size
                ),
                starts,
            )
        )
        return out

    def get_with_etag(self, key: str) -> tuple[bytes, str | None]:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._k(key))
            data = response["Body"].read()
        except Exception as exc:
            self.stats.record("GET")
            raise self._fail(exc, "GET", key) from exc
        self.stats.record("GET", len(data))
        return data, response.get("ETag")

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        if length <= 0:
            return b""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self._k(key), Range=f"bytes={start}-{start + length - 1}"
            )
            data = response["Body"].read()
            content_range = str(response.get("ContentRange") or "")
            if expected_size is not None and "/" in content_range:
                total = content_range.rsplit("/", 1)[1]
                if total.isdigit():
                    _check_size(key, int(total), expected_size)
        except SizeMismatch:
            self.stats.record("GET")
            raise
        except Exception as exc:
            self.stats.record("GET")
            raise self._fail(exc, "GET", key) from exc
        self.stats.record("GET", len(data))
        return bytes(data)

    def head(self, key: str) -> ObjectInfo | None:
        self.stats.record("HEAD")
        try:
            r = self._client.head_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            err = self._fail(exc, "HEAD", key)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from exc
        modified = int(r["LastModified"].timestamp() * 1000)
        return ObjectInfo(key, int(r["ContentLength"]), r.get("ETag"), modified)

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._k(prefix)}
        if start_after is not None:
            kwargs["StartAfter"] = self._k(start_after)
        n = len(self.prefix)
        while True:
            self.stats.record("LIST")
            try:
                page = self._client.list_objects_v2(**kwargs)
            except Exception as exc:
                raise self._fail(exc, "LIST", prefix) from exc
            for item in page.get("Contents", []):
                modified = int(item["LastModified"].timestamp() * 1000)
                out.append(
                    ObjectInfo(item["Key"][n:], int(item["Size"]), item.get("ETag"), modified)
                )
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)
        return out

    def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self.stats.record("DELETE")
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._k(k)} for k in chunk], "Quiet": True},
                )
            except Exception as exc:
                raise self._fail(exc, "DELETE", chunk[0]) from exc
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"deleting {len(errors)} object(s) under s3://{self.bucket}/{self.prefix} "
                    f"failed, e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def delete(self, key: str) -> None:
        self.stats.record("DELETE")
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            err = self._fail(exc, "DELETE", key)
            if not isinstance(err, ObjectNotFound):
                raise err from exc


def open_store(uri: str, storage_options: dict[str, Any] | None = None) -> ObjectStore:
    """The store for a URI: ``s3://bucket/prefix``, ``file:///path``, a plain path, ``memory://x``."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput(f"a table URI must be a non-empty string, got {uri!r}")
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise InvalidInput(f"{uri!r} names no bucket; use s3://bucket/path")
        return S3Store(parsed.netloc, parsed.path, storage_options)
    if scheme == "file":
        return LocalStore(parsed.path)
    if scheme == "memory":
        # The first component names the space; the rest is a prefix inside it, so a table's
        # URI below a memory:// warehouse opens the same objects the warehouse holds.
        store: ObjectStore = MemoryStore(parsed.netloc)
        path = parsed.path.strip("/")
        return store.child(path) if path else store
    if scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return LocalStore(uri)
    raise InvalidInput(
        f"unsupported URI scheme {scheme!r} in {uri!r}; use s3://, file://, memory:// or a path"
    )
