"""Fetching the byte spans of a sectioned merge ahead of their decoding (remote stores).

A merge of overlapping runs decodes one key-range section at a time (``lsm3.read.scan``), and
reads its largest runs by ranges (past ``WHOLE_READ_BYTES``). From a remote store the row
groups each of those runs gives the coming sections are fetched on I/O threads while the
current section decodes and merges, in the order the sections will ask for them, up to a
bound on bytes fetched and not yet taken by a decode: the fetch overlaps the decoding, and
memory stays flat whatever the size of the table. Consecutive small spans of a run share one
request (``MIN_REQUEST_BYTES``). Each span is verified as every ranged read is (footer
checksum, page CRCs; docs/FORMAT.md section 4).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from lsm3.read.runfile import OpenRun

#: Bytes of spans fetched ahead and not yet taken by a decode: about one section of the
#: uncompacted cdc-1m table read wholly by ranges (12 runs, 204 MB in 8 sections). Each span
#: is held in a buffer the size of its file (only the span written), which the allocator
#: backs with memory it reuses: 64 MiB ahead raised a stream's peak RSS by ~300 MiB.
PREFETCH_BYTES = 32 * 1024 * 1024
#: Consecutive spans of one run are fetched as one request until it holds this many bytes: a
#: small run gives each section ~1 MB, and a request costs the client ~1-2 ms of CPU.
MIN_REQUEST_BYTES = 4 * 1024 * 1024
#: Requests in flight at once (the S3 client pools 32 connections; on 2 cores more threads
#: only competed with decoding).
FETCH_THREADS = 2


@dataclass(eq=False)
class _Fetch:
    """One request: consecutive row groups of a run that several decodes take in turn."""

    run: OpenRun
    groups: list[int] = field(default_factory=list)
    nbytes: int = 0
    reads: int = 0  # decodes that have not taken it yet
    future: Future[pq.ParquetFile] | None = None


class SpanPrefetcher:
    """Fetches ``(run, row groups)`` spans in the given order, ahead of ``take``, holding
    at most ``budget`` bytes (default ``PREFETCH_BYTES``) fetched and not taken, or one
    request."""

    def __init__(
        self,
        spans: Sequence[tuple[OpenRun, list[int]]],
        budget: int | None = None,
        threads: int | None = None,
        min_request: int | None = None,
    ) -> None:
        min_request = MIN_REQUEST_BYTES if min_request is None else min_request
        self._budget = PREFETCH_BYTES if budget is None else budget
        order: list[_Fetch] = []  # in the order of their first decode
        self._of_read: dict[tuple[str, int], _Fetch] = {}
        filling: dict[str, _Fetch] = {}  # per run, the request that spans are added to
        for run, groups in spans:
            fetch = filling.get(run.file.path)
            if fetch is None or fetch.nbytes >= min_request:
                fetch = filling[run.file.path] = _Fetch(run)
                order.append(fetch)
            fetch.groups.extend(groups)
            lo, hi = run.span_of(fetch.groups)
            fetch.nbytes = hi - lo
            fetch.reads += 1
            self._of_read[(run.file.path, groups[0])] = fetch
        # Requests not submitted yet; a submitted one is referenced only by the decodes that
        # will take it, so its bytes are freed as soon as the last of them is done.
        self._waiting = deque(order)
        self.requests = len(order)
        self._inflight = 0  # bytes of requests submitted and not taken by all their decodes
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=threads or FETCH_THREADS, thread_name_prefix="lsm3-fetch"
        )
        with self._lock:
            self._top_up()

    def take(self, run: OpenRun, groups: list[int]) -> Future[pq.ParquetFile] | None:
        """The fetch that holds ``groups`` of ``run`` (started now if it was not yet), or
        None if it was not planned (the caller fetches it itself)."""
        with self._lock:
            fetch = self._of_read.pop((run.file.path, groups[0]), None)
            if fetch is None:
                return None
            while fetch.future is None:
                self._submit_next()  # a decode runs ahead of the budget: never wait for it
            future = fetch.future
            fetch.reads -= 1
            if fetch.reads == 0:
                self._inflight -= fetch.nbytes
                self._top_up()
            return future

    @property
    def bytes_ahead(self) -> int:
        """Bytes of requests submitted and not taken by all their decodes yet."""
        with self._lock:
            return self._inflight

    def close(self) -> None:
        """Stop fetching (a scan closed early): requests not started are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._of_read.clear()
            self._waiting.clear()

    def _top_up(self) -> None:
        while self._waiting and (
            self._inflight == 0 or self._inflight + self._waiting[0].nbytes <= self._budget
        ):
            self._submit_next()

    def _submit_next(self) -> None:
        fetch = self._waiting.popleft()
        fetch.future = self._pool.submit(fetch.run.fetch_span, list(fetch.groups))
        self._inflight += fetch.nbytes
