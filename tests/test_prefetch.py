"""Sectioned merges from a remote store: the row-group spans of the coming sections are fetched
while the current one decodes, within a bound on bytes fetched ahead, and verified as every
ranged read is (footer checksum, page CRCs)."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pyarrow as pa
import pytest

import lsm3
from lsm3.read.prefetch import SpanPrefetcher

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


class _StubRun:
    """A run whose spans are ``size`` bytes per row group and whose fetches wait for a gate."""

    def __init__(self, path: str, size: int, gate: threading.Event) -> None:
        self.file = SimpleNamespace(path=path)
        self.size = size
        self.gate = gate
        self.fetched: list[list[int]] = []

    def span_of(self, groups: list[int]) -> tuple[int, int]:
        return groups[0] * self.size, (groups[-1] + 1) * self.size

    def fetch_span(self, groups: list[int]) -> str:
        self.fetched.append(groups)
        self.gate.wait(5)
        return f"{self.file.path}:{groups}"


def test_spans_are_fetched_in_order_within_the_byte_bound() -> None:
    gate = threading.Event()
    a, b = _StubRun("a", 10, gate), _StubRun("b", 10, gate)
    order = [(a, [0]), (b, [0]), (a, [1]), (b, [1, 2]), (a, [2])]
    prefetch = SpanPrefetcher(order, budget=25, threads=8, min_request=0)  # type: ignore[arg-type]
    try:
        # two spans of 10 fit in 25, the third would not: it waits for a take
        assert prefetch.bytes_ahead == 20
        first = prefetch.take(a, [0])  # type: ignore[arg-type]
        assert prefetch.bytes_ahead == 20  # 10 taken, (a, [1]) submitted
        # a decode that runs ahead of the bound gets its span at once, in order
        last = prefetch.take(a, [2])  # type: ignore[arg-type]
        assert last is not None and first is not None
        assert prefetch.take(a, [5]) is None  # type: ignore[arg-type]  # not planned
        gate.set()
        assert first.result() == "a:[0]" and last.result() == "a:[2]"
    finally:
        gate.set()
        prefetch.close()
    assert sorted(a.fetched) == [[0], [1], [2]] and sorted(b.fetched) == [[0], [1, 2]]


def test_small_spans_of_a_run_share_a_request() -> None:
    gate = threading.Event()
    gate.set()
    a, b = _StubRun("a", 10, gate), _StubRun("b", 10, gate)
    order = [(a, [0]), (b, [0]), (a, [1]), (b, [1, 2]), (a, [2])]
    prefetch = SpanPrefetcher(order, budget=100, min_request=15)  # type: ignore[arg-type]
    try:
        assert prefetch.requests == 3  # a [0, 1], b [0, 1, 2], a [2]
        first = prefetch.take(a, [0])  # type: ignore[arg-type]
        assert first is not None and first.result() == "a:[0, 1]"
        assert prefetch.bytes_ahead == 60  # a [0, 1] still has a decode to serve
        assert prefetch.take(a, [1]) is first  # type: ignore[arg-type]
        assert prefetch.bytes_ahead == 40
    finally:
        prefetch.close()
    assert sorted(a.fetched) == [[0, 1], [2]] and b.fetched == [[0, 1, 2]]


def _overlapping_table(uri: str, options: dict[str, str] | None) -> lsm3.Table:
    t = lsm3.create_table(
        uri,
        SCHEMA,
        "id",
        storage_options=options,
        options={"row_group_rows": 64, "level0_compression": "none"},
    )
    rng = random.Random(5)
    pad = "x" * 100  # runs of ~360 KB: their 64 KiB footer reads are a small part
    for step in range(6):
        with t.writer() as w:
            ids = rng.sample(range(20000), 3000)
            w.upsert([{"id": i, "v": f"value-{step}-{i}{pad}"} for i in ids])
            w.delete([rng.randrange(20000) for _ in range(40)])
    return t


def test_a_remote_merge_fetches_the_next_sections_not_whole_runs(
    s3_bucket_uri: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first section of a merged stream arrives after its own spans and those fetched
    ahead within the bound, not after every run was fetched whole; the rows are those of a
    whole-run read, as a stream and as ``to_arrow`` reads (the next section decoding while
    one merges)."""
    import lsm3.read.prefetch
    import lsm3.read.scan
    from tests.helpers import clear_read_caches

    uri, options = s3_bucket_uri
    t = _overlapping_table(uri, options)
    files = t.files_of(t.current_snapshot())
    total = sum(f.size for f in files)
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 1 << 40)
    expected = lsm3.open_table(uri, storage_options=options).to_arrow()
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 0)
    monkeypatch.setattr(lsm3.read.prefetch, "PREFETCH_BYTES", total // 8)
    monkeypatch.setattr(lsm3.read.prefetch, "MIN_REQUEST_BYTES", 0)  # a request per span
    clear_read_caches()
    fresh = lsm3.open_table(uri, storage_options=options)
    stream = fresh.to_batches(section_rows=2000)
    first = stream.read_next_batch()
    assert first.num_rows
    fetched = fresh.store.stats.bytes["GET"]
    assert fetched < total // 2, (fetched, total)
    rest = stream.read_all()
    got = pa.concat_tables([pa.Table.from_batches([first]), rest])
    assert got.equals(expected)
    assert fresh.store.stats.requests["GET"] > len(files) * 2  # a span per run and section
    ahead = lsm3.open_table(uri, storage_options=options)  # as to_arrow reads, sectioned
    assert ahead._batches(None, None, None, None, 400, None, read_ahead=True).read_all() == expected


def test_a_remote_merge_refuses_a_damaged_page_and_stops_fetching_when_closed(
    s3_bucket_uri: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans fetched ahead are checked as they decode (page CRCs): a damaged page fails the
    read, in the stream and in a decoding thread; a stream closed early stops fetching."""
    import lsm3.read.scan
    from lsm3.read.scan import make_request, scan_batches
    from tests.helpers import clear_read_caches

    uri, options = s3_bucket_uri
    t = _overlapping_table(uri, options)
    monkeypatch.setattr(lsm3.read.scan, "WHOLE_READ_BYTES", 0)
    schema = t.table_schema
    files = t.files_of(t.current_snapshot())
    request = make_request(schema, None, None)
    batches = scan_batches(t.store, schema, files, request, section_rows=2000)
    assert next(batches).num_rows
    batches.close()  # the stream's consumer stops early: no fetch thread outlives it
    assert not [th for th in threading.enumerate() if th.name.startswith("lsm3-fetch")]

    f = max(files, key=lambda f: f.size)
    body = bytearray(t.store.get(f.path))
    at = body.index(b"value-", len(body) // 2)  # inside a data page, past the first sections
    body[at] ^= 0x01
    t.store.put(f.path, bytes(body))
    clear_read_caches()
    for read in (
        lambda table: table.to_batches(section_rows=2000).read_all(),
        # as to_arrow reads: raised in a decoding thread, reported here
        lambda table: table._batches(None, None, None, None, 400, None, read_ahead=True).read_all(),
    ):
        with pytest.raises(lsm3.CorruptDataFile):
            read(lsm3.open_table(uri, storage_options=options))
