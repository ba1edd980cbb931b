"""Bounded retries of the object-store requests that are safe to repeat.

A table reaches its store through :class:`RetryingStore`. It repeats, with jittered
exponential backoff and a bound, every request whose repetition cannot change the outcome:
reads (GET, ranged GET, HEAD, LIST), puts of fresh never-reused names (data files,
manifests) and of the advisory ``LATEST`` hint, and deletes. It never repeats a conditional
put (``put_if_absent``, ``put_if_match``): whether such a failure was a lost race, a put
that landed with a lost response, or nothing at all is for the commit loop to find out
(``lsm3.write.log``), which it does by reading the log.

On S3 the boto3 client retries first (standard mode, 5 attempts); this layer adds a few
more attempts over a longer horizon (an S3 brownout, a throttled prefix) and gives the
local and in-memory stores, and any store a user passes in, the same behaviour. Errors that
cannot heal are raised at once: a missing object, a failed precondition, an object of the
wrong size.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import pyarrow as pa

from lsm3.errors import ObjectNotFound, PreconditionFailed, SizeMismatch, StorageError
from lsm3.io.store import ObjectInfo, ObjectStore

T = TypeVar("T")

#: Attempts in all (the first one included) and the backoff: attempt n waits a uniform
#: random time up to ``min(MAX_DELAY, BASE_DELAY * 2**n)`` seconds; at most about 0.7 s in all.
ATTEMPTS = 4
BASE_DELAY = 0.05
MAX_DELAY = 0.4

_PERMANENT = (ObjectNotFound, PreconditionFailed, SizeMismatch)


class RetryingStore(ObjectStore):
    """``inner`` with the safe requests retried; shares ``inner``'s request counters, so a
    retried request counts once per attempt."""

    def __init__(
        self,
        inner: ObjectStore,
        *,
        attempts: int = ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(inner.url, inner.stats)
        self.inner = inner
        self.attempts = attempts
        self.retries = 0  # attempts beyond the first, over the store's life
        self._sleep = sleep

    def _call(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except _PERMANENT:
                raise
            except StorageError:
                if attempt + 1 >= self.attempts:
                    raise
                self.retries += 1
                self._sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- retried

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        self._call(lambda: self.inner.put(key, data))

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get(key))

    def get_buffer(self, key: str, size: int | None = None) -> pa.Buffer:
        return self._call(lambda: self.inner.get_buffer(key, size))

    def get_with_etag(self, key: str) -> tuple[bytes, str | None]:
        return self._call(lambda: self.inner.get_with_etag(key))

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        return self._call(lambda: self.inner.get_range(key, start, length, expected_size))

    def get_range_into(
        self, key: str, start: int, out: memoryview, expected_size: int | None = None
    ) -> None:
        self._call(lambda: self.inner.get_range_into(key, start, out, expected_size))

    def map_range(self, key: str, start: int, end: int, size: int) -> pa.Buffer | None:
        return self._call(lambda: self.inner.map_range(key, start, end, size))

    def head(self, key: str) -> ObjectInfo | None:
        return self._call(lambda: self.inner.head(key))

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        return self._call(lambda: self.inner.list(prefix, start_after))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        self._call(lambda: self.inner.delete_many(keys))

    # ----------------------------------------------------------------- never retried

    def put_if_absent(self, key: str, data: bytes) -> None:
        self.inner.put_if_absent(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        self.inner.put_if_match(key, data, etag)

    def describe(self) -> str:
        return self.inner.describe()

    @property
    def unsafe_single_writer(self) -> bool:
        return self.inner.unsafe_single_writer

    def child(self, prefix: str) -> ObjectStore:
        """The child of ``inner``, retried the same way (never retried twice over)."""
        return RetryingStore(self.inner.child(prefix), attempts=self.attempts, sleep=self._sleep)


def with_retries(store: ObjectStore) -> ObjectStore:
    """``store`` behind a :class:`RetryingStore` (once: an already wrapped store is kept)."""
    return store if isinstance(store, RetryingStore) else RetryingStore(store)
