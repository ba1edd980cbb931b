"""A run's bytes, fetched and checked against its manifest entry.

A manifest entry carries a data file's size, its CRC-32 and the CRC-32 of its Parquet footer
(``checksum_of``, ``footer_checksum_of``: the writer records them, a reader checks them), so a
reader never returns data from a damaged or swapped file. A run is fetched whole (size and CRC
checked, the CRC on a thread of its own while the first read decodes) or as the span of some of
its row groups (one ranged request, every page checked against its own CRC).
:mod:`lsm3.read.runfile` encodes and decodes the runs these bytes hold.
"""

from __future__ import annotations

import threading
import zlib

import pyarrow as pa
import pyarrow.parquet as pq

from lsm3.errors import CorruptDataFile, ObjectNotFound, SizeMismatch
from lsm3.format.metadata import DataFile
from lsm3.io.store import ObjectStore


def checksum_of(data: bytes | pa.Buffer | memoryview) -> str:
    return f"crc32:{zlib.crc32(memoryview(data)) & 0xFFFFFFFF:08x}"


def footer_checksum_of(body: bytes | pa.Buffer | memoryview) -> str:
    """CRC-32 of a Parquet file's footer: the metadata, its 4-byte length and ``PAR1``."""
    view = memoryview(body)
    length = int.from_bytes(view[-8:-4], "little")
    return checksum_of(view[-(8 + length) :])


def fetch_sized(store: ObjectStore, f: DataFile) -> pa.Buffer:
    """The whole object of ``f``, its size checked against the manifest entry."""
    try:
        buf = store.get_buffer(f.path, f.size)
    except ObjectNotFound:
        raise CorruptDataFile(
            f"data file {f.path} listed in the manifest is missing from {store.url}; the table "
            "was damaged outside lsm3 (objects deleted by hand?)"
        ) from None
    except SizeMismatch as exc:
        raise CorruptDataFile(
            f"data file {f.path} does not have the size its manifest entry says ({exc}); "
            "refusing to read it"
        ) from None
    if buf.size != f.size:
        raise CorruptDataFile(
            f"data file {f.path} has {buf.size} bytes but its manifest entry says {f.size}; "
            "refusing to read it"
        )
    return buf


def check_checksum(f: DataFile, actual: str) -> None:
    """Refuse ``f`` (CorruptDataFile) if ``actual`` is not the checksum its entry records."""
    if actual != f.checksum:
        raise CorruptDataFile(
            f"data file {f.path} has checksum {actual} but its manifest entry says {f.checksum}; "
            "refusing to read it"
        )


def footer_verified(buf: pa.Buffer, f: DataFile) -> bool:
    """Whether the run's footer matches its ``footer_checksum`` (False for an entry without
    one, or a buffer too short to hold a footer)."""
    return (
        bool(f.footer_checksum) and buf.size >= 12 and footer_checksum_of(buf) == f.footer_checksum
    )


class ChecksumThread(threading.Thread):
    """The CRC of a buffer, computed on a thread of its own (``zlib.crc32`` releases the GIL).

    A thread per run rather than a shared pool: a process forked while a pool's threads
    exist (the crash tests fork compactors) inherits a pool without threads, and a result
    it waits for never comes."""

    def __init__(self, data: pa.Buffer) -> None:
        super().__init__(name="lsm3-crc", daemon=True)
        self._data = data
        self._result = ""
        self.start()

    def run(self) -> None:
        self._result = checksum_of(self._data)

    def result(self) -> str:
        self.join()
        return self._result


def fetch_verified(store: ObjectStore, f: DataFile) -> pa.Buffer:
    """A whole object fetched and checked against its manifest entry (size and CRC-32), for
    files read at once rather than decoded while their CRC runs (changelog files)."""
    buf = fetch_sized(store, f)
    check_checksum(f, checksum_of(buf))
    return buf


def fetch_row_groups(
    store: ObjectStore, f: DataFile, metadata: pq.FileMetaData, row_groups: list[int]
) -> pq.ParquetFile:
    """The bytes of ``row_groups`` (contiguous in the file) in one ranged GET, placed at
    their offsets in a zero-filled buffer the size of the file, opened for decoding (a
    local file is memory-mapped instead: no copy, and only the span's pages are read).

    Why not hand Arrow the ranged reader: that is a Python file object, and Arrow's
    decoding threads reading through one can abort the process at exit
    (apache/arrow#50482); from memory they are safe, and run in parallel. The buffer's
    untouched pages are never written, so memory holds only the span. Arrow reads only
    inside the column chunks of the requested groups (their bounds were checked against
    the span above), and checks every page's CRC."""
    lo, hi = row_groups_span(f, metadata, row_groups)
    # A local file is mapped, not copied: copying a span into fresh memory faulted in
    # and zeroed new pages on every section (a third of a stream's system time)
    image = store.map_range(f.path, lo, hi, f.size)
    if image is None:
        # Arrow's allocator, not np.zeros: numpy asks for transparent huge pages on large
        # arrays, and zeroing whole 2 MiB pages for a small span cost ~1.5 ms per call
        # here (the bytes outside the span are never read, so they need no zeroing); and
        # not an anonymous map either: faulting in fresh pages cost ~10 ms of CPU per
        # 6 MB span here, against ~1.3 ms for memory the allocator reuses
        image = pa.allocate_buffer(f.size)
        store.get_range_into(f.path, lo, memoryview(image)[lo:hi], expected_size=f.size)
    return pq.ParquetFile(
        pa.BufferReader(image), metadata=metadata, page_checksum_verification=True
    )


def row_groups_span(
    f: DataFile, metadata: pq.FileMetaData, row_groups: list[int]
) -> tuple[int, int]:
    """The byte range ``[lo, hi)`` of the file that holds the column chunks of
    ``row_groups``, checked to lie inside the file."""
    starts: list[int] = []
    ends: list[int] = []
    for i in row_groups:
        group = metadata.row_group(i)
        for c in range(group.num_columns):
            chunk = group.column(c)
            start = (
                chunk.dictionary_page_offset
                if chunk.has_dictionary_page
                else chunk.data_page_offset
            )
            starts.append(start)
            ends.append(start + chunk.total_compressed_size)
    lo, hi = min(starts), max(ends)
    if lo < 0 or hi > f.size:
        raise CorruptDataFile(f"data file {f.path} has row groups outside the file")
    return lo, hi
