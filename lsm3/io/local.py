"""A local directory as an object store: ``file:///path`` or a plain path.

Creating an object is atomic: the data goes to a temporary file that is then ``os.link``-ed to
its name, which fails if the name exists (on Windows too, on NTFS); ``put_if_match`` compares
ETags (MD5) under an exclusive lock on a ``.lock`` file beside the object: ``fcntl.flock`` on
POSIX, ``msvcrt.locking`` on Windows, both released by the OS if the process dies. Neither is
imported before a lock is taken, so ``import lsm3`` works where ``fcntl`` does not exist. Reads
check sizes against what the manifest says.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pyarrow as pa

from lsm3.errors import (
    InvalidInput,
    ObjectNotFound,
    PreconditionFailed,
    SizeMismatch,
    StorageError,
)
from lsm3.io.store import ObjectInfo, ObjectStore, StoreStats, check_size, etag_of


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
        with open(path + ".lock", "a+b") as lock, exclusive_lock(lock.fileno(), self.url):
            yield

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        path = self._path(key)
        with self._locked(path):
            try:
                with open(path, "rb") as f:
                    current = etag_of(f.read())
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
        buf = self._mapped(key)
        self.stats.record("GET", buf.size)
        return buf

    def map_range(self, key: str, start: int, end: int, size: int) -> pa.Buffer | None:
        buf = self._mapped(key)
        check_size(key, buf.size, size)
        self.stats.record("GET", end - start)
        return buf

    def _mapped(self, key: str) -> pa.Buffer:
        """The whole file, memory-mapped (its pages are read when touched)."""
        try:
            with pa.memory_map(self._path(key), "r") as mm:
                return mm.read_buffer()
        except (FileNotFoundError, NotADirectoryError):
            self.stats.record("GET")
            raise ObjectNotFound(f"{self.url}/{key} does not exist") from None

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
                check_size(key, os.fstat(fd).st_size, expected_size)
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


@contextlib.contextmanager
def exclusive_lock(fd: int, where: str) -> Iterator[None]:
    """Hold an exclusive lock on the open file ``fd`` (blocking): ``fcntl.flock`` on POSIX,
    ``msvcrt.locking`` of its first byte on Windows; the OS drops either if the process dies."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return
    try:
        import msvcrt
    except ImportError:
        raise StorageError(
            f"{where}: put_if_match needs a file lock and this platform has neither fcntl nor "
            "msvcrt; lsm3's tables do not use put_if_match (commits use put_if_absent, "
            "an os.link, which works here)"
        ) from None
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            break
        except OSError:  # LK_LOCK gives up after about 10 s of contention: keep waiting
            continue
    try:
        yield
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
