"""Any fsspec filesystem as an object store: Azure (adlfs), GCS (gcsfs), S3 through s3fs.

URLs: ``az://container/path`` and ``abfs://container/path`` (adlfs), ``gs://bucket/path`` and
``gcs://bucket/path`` (gcsfs), ``s3://bucket/path`` with ``storage_options={"backend":
"s3fs"}``, ``memory://name`` with ``{"backend": "fsspec"}`` (fsspec's memory filesystem), and
any other protocol fsspec knows. ``storage_options`` go to the filesystem's constructor, and
credentials come from each library's usual environment.

A commit needs an atomic create-only put. fsspec's generic ``mode="create"`` / ``"xb"`` checks
for the object and then writes it, which two writers can both pass; so only the filesystems in
:data:`ATOMIC_CREATE`, whose create-only put is a server-side precondition, are trusted. Any
other filesystem is refused unless ``unsafe_single_writer=True`` says that one process writes
the table (its puts-if-absent are then exists-then-write under a process lock).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from lsm3.errors import (
    InvalidInput,
    Lsm3Error,
    ObjectNotFound,
    PreconditionFailed,
    SizeMismatch,
    StorageError,
)
from lsm3.io.store import ObjectInfo, ObjectStore, StoreStats, check_size

log = logging.getLogger(__name__)

#: Filesystem classes whose create-only put the server decides atomically, and how.
ATOMIC_CREATE: dict[str, str] = {
    "s3fs.core.S3FileSystem": "s3fs pipe_file(mode='create') sends If-None-Match: *",
    "gcsfs.core.GCSFileSystem": "gcsfs pipe_file(mode='create') sends ifGenerationMatch=0",
    "gcsfs.extended_gcsfs.ExtendedGcsFileSystem": "gcsfs sends ifGenerationMatch=0",
    "adlfs.spec.AzureBlobFileSystem": "adlfs upload_blob(overwrite=False): If-None-Match: *",
}
#: Filesystems that live in this process only: a process-wide lock makes create atomic.
LOCKED_CREATE: dict[str, str] = {
    "fsspec.implementations.memory.MemoryFileSystem": "one dict per process, under a lock",
}

#: Which library each URL scheme needs, for the error when it is not installed.
EXTRAS = {
    "az": "lsm3[azure] (adlfs)",
    "abfs": "lsm3[azure] (adlfs)",
    "abfss": "lsm3[azure] (adlfs)",
    "gs": "lsm3[gcs] (gcsfs)",
    "gcs": "lsm3[gcs] (gcsfs)",
    "s3": "lsm3[s3fs] (s3fs)",
    "s3a": "lsm3[s3fs] (s3fs)",
}

#: lsm3's own storage options, never passed to a filesystem.
OWN_OPTIONS = ("backend", "unsafe_single_writer")

# Per service: (objects per LIST page, keys per batched DELETE, single-PUT limit, part size).
_SERVICES: dict[str, tuple[int, int, int, int]] = {
    "s3": (1000, 1000, 100 * 2**20, 50 * 2**20),
    "gcs": (1000, 100, 50 * 2**20, 50 * 2**20),
    "azure": (5000, 256, 64 * 2**20, 4 * 2**20),
}
# The option names of lsm3's boto3 backend, as s3fs spells them.
_S3FS_OPTIONS = {
    "access_key_id": "key",
    "secret_access_key": "secret",
    "session_token": "token",
}
_CREATE_LOCK = threading.Lock()


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def open_fsspec_store(uri: str, storage_options: dict[str, Any] | None) -> FsspecStore:
    """The store for ``uri`` over the fsspec filesystem its scheme names (see module doc)."""
    options = dict(storage_options or {})
    unsafe = _flag(options.pop("unsafe_single_writer", False))
    options.pop("backend", None)
    scheme = urlparse(uri).scheme.lower()
    cls = _filesystem_class(scheme, options)
    if create_guarantee(cls) is None and not unsafe:
        raise InvalidInput(_refusal(uri, cls))
    if scheme in ("s3", "s3a"):
        options = _s3fs_options(options)
    options.setdefault("use_listings_cache", False)  # other writers change listings
    kwargs = {**cls._get_kwargs_from_urls(uri), **options}
    try:
        fs = cls(**kwargs)
    except (TypeError, ValueError) as exc:  # unknown options, missing credentials
        raise InvalidInput(
            f"cannot open {uri!r} with {class_name(cls)} and storage_options "
            f"{sorted(options)}: {exc}"
        ) from None
    root = cls._strip_protocol(uri)
    return FsspecStore(fs, root, uri, unsafe_single_writer=unsafe)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.lower() in ("true", "1", "yes")
    raise InvalidInput(f"storage option unsafe_single_writer must be true or false, not {value!r}")


def _filesystem_class(scheme: str, options: dict[str, Any]) -> Any:
    extra = EXTRAS.get(scheme, f"the fsspec implementation of {scheme}://")
    try:
        import fsspec
    except ImportError:
        raise InvalidInput(f"{scheme}:// needs fsspec; pip install {extra}") from None
    if scheme in ("gs", "gcs") and (
        options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST")
    ):
        # An emulator has no gRPC control plane: gcsfs's extended class would wait about
        # 60 s per bucket probing it (unless GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false).
        try:
            from gcsfs.core import GCSFileSystem
        except ImportError:
            raise InvalidInput(f"{scheme}:// needs gcsfs; pip install {extra}") from None
        return GCSFileSystem
    try:
        return fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        raise InvalidInput(f"{scheme}:// needs a library: pip install {extra} ({exc})") from None
    except ValueError:
        raise InvalidInput(
            f"unsupported URI scheme {scheme!r}: neither lsm3 nor fsspec knows it; use s3://, "
            "az://, abfs://, gs://, file://, memory:// or a path"
        ) from None


def create_guarantee(cls: type) -> str | None:
    """How ``cls`` makes a create-only put atomic, or None if it cannot."""
    name = class_name(cls)
    return ATOMIC_CREATE.get(name) or LOCKED_CREATE.get(name)


def _refusal(uri: str, cls: type) -> str:
    return (
        f"{uri!r}: the fsspec filesystem {class_name(cls)} has no atomic create-only put "
        "(its 'xb' mode checks, then writes: two writers can both win a commit), and lsm3 never "
        "falls back to exists-then-write. Use a store with an atomic create (S3, Azure, GCS, a "
        "local directory), or, if exactly one process ever writes this table, pass "
        "storage_options={'unsafe_single_writer': True} (recorded in the table's options)"
    )


def _s3fs_options(options: dict[str, Any]) -> dict[str, Any]:
    """lsm3's S3 option names (those of the boto3 backend) as s3fs wants them."""
    out = {_S3FS_OPTIONS.get(k, k): v for k, v in options.items() if k != "region"}
    if "region" in options:
        out.setdefault("client_kwargs", {}).setdefault("region_name", options["region"])
    if out.get("endpoint_url"):
        # S3-compatible servers want plain payload checksums, as in lsm3.io.s3.
        config = out.setdefault("config_kwargs", {})
        config.setdefault("request_checksum_calculation", "when_required")
        config.setdefault("response_checksum_validation", "when_required")
    return out


def _service(fs: Any) -> str:
    name = class_name(type(fs))
    if name.startswith("s3fs."):
        return "s3"
    if name.startswith("gcsfs."):
        return "gcs"
    if name.startswith("adlfs."):
        return "azure"
    return "other"


def _status(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, service error code) found along the exception's cause chain."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict):  # botocore ClientError (s3fs)
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return status, str(response.get("Error", {}).get("Code", ""))
        found = getattr(seen, "status_code", None) or getattr(seen, "code", None)
        if isinstance(found, int):  # azure-core HttpResponseError, gcsfs HttpError
            return found, str(getattr(seen, "error_code", "") or "")
        seen = seen.__cause__ or seen.__context__
    return 0, ""


class FsspecStore(ObjectStore):
    """Objects under ``root`` of an fsspec filesystem; see the module doc for what is trusted."""

    def __init__(
        self,
        fs: Any,
        root: str,
        url: str | None = None,
        *,
        unsafe_single_writer: bool = False,
        stats: StoreStats | None = None,
    ) -> None:
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        super().__init__(url or f"{protocol}://{root.strip('/')}", stats)
        self.fs = fs
        self.root = fs._strip_protocol(root).rstrip("/")
        self.create = create_guarantee(type(fs))
        if self.create is None and not unsafe_single_writer:
            raise InvalidInput(_refusal(self.url, type(fs)))
        self._unsafe = self.create is None
        self._service = _service(fs)
        self._sizes: dict[str, int] = {}  # object sizes seen, for ranged reads' size checks
        if self._unsafe:
            log.warning(
                "%s: %s has no atomic create-only put; unsafe_single_writer is set, so commits "
                "are safe only while this one process writes the table",
                self.url,
                class_name(type(fs)),
            )

    @property
    def unsafe_single_writer(self) -> bool:
        return self._unsafe

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise InvalidInput(f"object key {key!r} escapes the store root")
        return f"{self.root}/{key}" if self.root else key

    def _fail(self, exc: BaseException, what: str, key: str) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        where = f"{self.url}/{key}"
        status, code = _status(exc)
        if isinstance(exc, FileExistsError) or status == 412 or code == "BlobAlreadyExists":
            return PreconditionFailed(f"{key}: already exists or changed ({code or status})")
        if isinstance(exc, FileNotFoundError) or status == 404:
            if what == "GET" or what == "HEAD":
                return ObjectNotFound(f"{where} does not exist")
            return StorageError(
                f"{what} {where} failed: {exc or code}; does the bucket or container exist? "
                "lsm3 does not create it: create it first"
            )
        if isinstance(exc, PermissionError) or status in (401, 403):
            return StorageError(
                f"{what} {where} was refused ({exc}); check the credentials "
                f"(storage_options or {class_name(type(self.fs))}'s usual environment)"
            )
        return StorageError(f"{what} {where} failed: {type(exc).__name__}: {exc}")

    @contextlib.contextmanager
    def _calling(self, what: str, key: str) -> Iterator[None]:
        try:
            yield
        except Lsm3Error:
            raise
        except Exception as exc:
            raise self._fail(exc, what, key) from exc

    def _put_requests(self, size: int) -> int:
        if self._service not in _SERVICES:
            return 1
        _page, _batch, single, part = _SERVICES[self._service]
        if size < single:
            return 1
        return math.ceil(size / part) + (2 if self._service == "s3" else 1)

    # ----------------------------------------------------------------- writes

    def _make_parent(self, path: str) -> None:
        """Filesystems with real directories (not object stores) need the parent first."""
        if self._service == "other" and self.create is None:
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        path = self._path(key)
        body = data if isinstance(data, bytes) else bytes(memoryview(data))
        self._sizes.pop(key, None)
        self.stats.record("PUT", len(body), requests=self._put_requests(len(body)))
        with self._calling("PUT", key):
            self._make_parent(path)
            self.fs.pipe_file(path, body)

    def put_if_absent(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.stats.record("PUT", len(data), requests=self._put_requests(len(data)))
        with self._calling("PUT", key):
            if self.create in ATOMIC_CREATE.values():
                self.fs.pipe_file(path, data, mode="create")
                return
            # In-process filesystems, and unsafe_single_writer: exists-then-write, made
            # atomic among this process's threads only.
            with _CREATE_LOCK:
                if self.fs.exists(path):
                    raise PreconditionFailed(f"{key} already exists")
                self._make_parent(path)
                self.fs.pipe_file(path, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        raise NotImplementedError(
            f"{self.url}: put_if_match is not offered over fsspec (no filesystem exposes a "
            "conditional replace); lsm3's tables and catalogs commit with put_if_absent only"
        )

    # ----------------------------------------------------------------- reads

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with self._calling("GET", key):
                data = bytes(self.fs.cat_file(path))
        except StorageError:
            self.stats.record("GET")
            raise
        self.stats.record("GET", len(data))
        self._sizes[key] = len(data)
        return data

    def _size(self, key: str) -> int:
        """The object's size (one HEAD the first time: objects lsm3 range-reads are
        immutable, so the answer is kept)."""
        size = self._sizes.get(key)
        if size is None:
            info = self.head(key)
            if info is None:
                raise ObjectNotFound(f"{self.url}/{key} does not exist")
            size = info.size
            if len(self._sizes) > 100_000:
                self._sizes.clear()
            self._sizes[key] = size
        return size

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        path = self._path(key)
        try:
            if expected_size is not None:
                check_size(key, self._size(key), expected_size)
            if length <= 0:
                return b""
            with self._calling("GET", key):
                data = bytes(self.fs.cat_file(path, start=start, end=start + length))
        except (StorageError, SizeMismatch):
            self.stats.record("GET")
            raise
        self.stats.record("GET", len(data))
        return data

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        self.stats.record("HEAD")
        try:
            with self._calling("HEAD", key):
                info = self.fs.info(path)
        except ObjectNotFound:
            return None
        if info.get("type") != "file":
            return None
        return _object_info(key, info)

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        # fsspec lists directories: list the deepest one the prefix names, then filter.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_key) if base_key else self.root
        with self._calling("LIST", prefix):
            found = self.fs.find(base, detail=True) if base else {}
        page = _SERVICES.get(self._service, (0, 0, 0, 0))[0]
        self.stats.record("LIST", requests=max(1, math.ceil(len(found) / page)) if page else 1)
        cut = len(self.root) + 1 if self.root else 0
        out = []
        for name, info in found.items():
            key = self.fs._strip_protocol(name)[cut:]
            if info.get("type") != "file" or not key.startswith(prefix):
                continue
            if start_after is not None and key <= start_after:
                continue
            out.append(_object_info(key, info))
        out.sort(key=lambda i: i.key)
        return out

    # ----------------------------------------------------------------- deletes

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._sizes.pop(key, None)
        self.stats.record("DELETE")
        with self._calling("DELETE", key), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        paths = [self._path(k) for k in keys]
        for k in keys:
            self._sizes.pop(k, None)
        batch = _SERVICES.get(self._service, (0, 1, 0, 0))[1]
        self.stats.record("DELETE", requests=math.ceil(len(paths) / batch))
        try:
            with self._calling("DELETE", keys[0]):
                self.fs.rm(paths)
        except StorageError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            for k in keys:  # some filesystems refuse a batch naming a missing object
                self.delete(k)

    def describe(self) -> str:
        return f"{self.url} ({class_name(type(self.fs))})"


def _object_info(key: str, info: dict[str, Any]) -> ObjectInfo:
    etag = info.get("ETag") or info.get("etag")
    modified = (
        info.get("LastModified") or info.get("last_modified") or info.get("mtime")
    ) or info.get("created")
    if isinstance(modified, datetime):
        ms = int(modified.timestamp() * 1000)
    elif isinstance(modified, (int, float)):
        ms = int(modified * 1000)
    else:
        ms = 0
    return ObjectInfo(key, int(info.get("size") or 0), str(etag) if etag else None, ms)
