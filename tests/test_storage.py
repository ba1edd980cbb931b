"""The object-store layer (``lsm3.io``) on every backend: a local directory, memory://, moto S3
through boto3 and through s3fs, fsspec's memory filesystem, Azurite (adlfs) and the GCS emulator
(gcsfs; it ignores preconditions, so the conditional-put tests skip it)."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lsm3
from lsm3.errors import (
    InvalidInput,
    ObjectNotFound,
    PreconditionFailed,
    SizeMismatch,
    StorageError,
)
from lsm3.io.fsspec import FsspecStore
from lsm3.io.local import LocalStore
from lsm3.io.memory import MemoryStore
from lsm3.io.s3 import S3Store
from lsm3.io.store import ObjectStore, open_store
from lsm3.testing.devserver import LocalS3

BACKENDS = ["local", "memory", "s3", "s3fs", "fsspec-memory", "az", "gs"]
_URI_FIXTURES = {"s3": "s3_bucket_uri", "s3fs": "s3_bucket_uri", "az": "az_container_uri"}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A fresh, empty store on each backend."""
    if request.param == "local":
        return open_store(str(tmp_path / "root"))
    if request.param == "memory":
        return open_store(f"memory://storage-test-{uuid.uuid4().hex}")
    if request.param == "fsspec-memory":
        return open_store(f"memory://storage-test-{uuid.uuid4().hex}/t", {"backend": "fsspec"})
    if request.param == "gs":
        uri, options = request.getfixturevalue("gs_bucket_uri")
        return open_store(uri, options)
    uri, options = request.getfixturevalue(_URI_FIXTURES[request.param])
    if request.param == "s3fs":
        options = {**options, "backend": "s3fs"}
    return open_store(uri, options)


def needs_preconditions(store: ObjectStore) -> None:
    """gcp-storage-emulator ignores ifGenerationMatch=0 (every create wins): skip there."""
    if store.url.startswith("gs://"):
        pytest.skip("gcp-storage-emulator does not enforce preconditions")


def _delta(before: dict, after: dict) -> dict:
    """Counter changes between two ``stats.snapshot()`` results (zeros left out)."""
    out: dict = {}
    for section in ("requests", "bytes"):
        for op, value in after[section].items():
            d = value - before[section][op]
            if d:
                out[(section, op)] = d
    return out


# --------------------------------------------------------------------------- opening


def test_open_store_picks_backend_by_uri(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert open_store(f"file://{tmp_path}").root == str(tmp_path)
    assert isinstance(open_store("memory://abc"), MemoryStore)
    s3 = open_store(
        "s3://bucket/some/prefix/",
        {"endpoint_url": "http://127.0.0.1:9", "access_key_id": "a", "secret_access_key": "b"},
    )
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix/")


@pytest.mark.parametrize(
    "uri", ["", "s3:///no-bucket", "gs:///no-bucket", "az:///x", "ftp://host/x", "nosuch://x/y"]
)
def test_open_store_refuses_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidInput):
        open_store(uri)


def test_memory_stores_with_the_same_name_share_objects() -> None:
    name = f"memory://shared-{uuid.uuid4().hex}"
    open_store(name).put("k", b"v")
    assert open_store(name).get("k") == b"v"
    assert open_store(f"memory://other-{uuid.uuid4().hex}").head("k") is None


# --------------------------------------------------------------------------- basic operations


def test_put_get_head_delete(store: ObjectStore) -> None:
    store.put("a/b/c.bin", b"hello")
    assert store.get("a/b/c.bin") == b"hello"
    store.put("a/b/c.bin", pa.py_buffer(b"bye"))  # unconditional put replaces, accepts buffers
    assert store.get("a/b/c.bin") == b"bye"
    assert store.get_buffer("a/b/c.bin").to_pybytes() == b"bye"
    info = store.head("a/b/c.bin")
    assert info is not None
    assert info.key == "a/b/c.bin"
    assert info.size == 3
    assert info.last_modified_ms > 0
    assert store.head("a/b/missing") is None
    store.delete("a/b/c.bin")
    assert store.head("a/b/c.bin") is None
    with pytest.raises(ObjectNotFound):
        store.get("a/b/c.bin")
    store.delete("a/b/c.bin")  # deleting a missing object is not an error


def test_get_missing_is_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.get("nope/x.json")
    assert isinstance(info.value, StorageError)
    assert "nope/x.json" in str(info.value)
    with pytest.raises(ObjectNotFound):
        store.get_buffer("nope/x.json")
    with pytest.raises(ObjectNotFound):
        store.get_range("nope/x.json", 0, 4)


def test_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    info = store.head("empty")
    assert info is not None and info.size == 0


def test_get_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put("blob", data)
    assert store.get_range("blob", 0, 10) == data[:10]
    assert store.get_range("blob", 1000, 300) == data[1000:1300]
    assert store.get_range("blob", len(data) - 8, 8) == data[-8:]
    # A range running past the end returns what is there.
    assert store.get_range("blob", len(data) - 5, 100) == data[-5:]


def test_get_range_into_fills_the_view_and_counts_one_get(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put("blob", data)
    image = bytearray(len(data))
    store.stats.reset()
    store.get_range_into("blob", 1000, memoryview(image)[1000:1300], expected_size=len(data))
    assert image[1000:1300] == data[1000:1300]
    assert image[:1000] == bytes(1000) and image[1300:] == bytes(len(data) - 1300)
    assert store.stats.snapshot()["requests"]["GET"] == 1
    assert store.stats.snapshot()["bytes"]["GET"] == 300
    with pytest.raises(SizeMismatch):  # the object is not the size the caller expects
        store.get_range_into("blob", 0, memoryview(image)[:10], expected_size=len(data) + 1)
    with pytest.raises(SizeMismatch):  # the object ends inside the range: an error
        store.get_range_into("blob", len(data) - 5, memoryview(bytearray(100)))
    with pytest.raises(ObjectNotFound):
        store.get_range_into("nope/x.json", 0, memoryview(bytearray(4)))


def test_map_range_maps_a_local_file_and_counts_the_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put("blob", data)
    store.stats.reset()
    mapped = store.map_range("blob", 1000, 1300, len(data))
    if not isinstance(store, LocalStore):
        assert mapped is None  # the caller copies the range instead (get_range_into)
        return
    assert mapped is not None and mapped.to_pybytes()[1000:1300] == data[1000:1300]
    assert store.stats.snapshot()["requests"]["GET"] == 1
    assert store.stats.snapshot()["bytes"]["GET"] == 300
    with pytest.raises(SizeMismatch):
        store.map_range("blob", 0, 10, len(data) + 1)
    with pytest.raises(ObjectNotFound):
        store.map_range("nope/x.json", 0, 4, 4)


def test_get_buffer_of_known_size_fetches_large_objects_in_parts(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the object's size, S3 fetches a large object as ranged GETs of PART_BYTES, several
    at once, into one buffer; every backend returns the same bytes, counted once each."""
    import lsm3.io.s3

    monkeypatch.setattr(lsm3.io.s3, "PART_BYTES", 1000)
    data = bytes(range(256)) * 40  # 10,240 bytes: 11 parts
    store.put("blob", data)
    store.stats.reset()
    assert store.get_buffer("blob", len(data)).to_pybytes() == data
    parted = isinstance(store, S3Store)
    assert store.stats.snapshot()["requests"]["GET"] == (11 if parted else 1)
    assert store.stats.snapshot()["bytes"]["GET"] == len(data)
    assert store.get_buffer("blob").to_pybytes() == data  # size unknown: one GET
    if parted:
        with pytest.raises(SizeMismatch):  # the object is not the size the caller expects
            store.get_buffer("blob", len(data) + 1)
    with pytest.raises(ObjectNotFound):
        store.get_buffer("nope/x.parquet", 5000)


def test_open_ranged_reads_parquet_with_ranged_gets(store: ObjectStore) -> None:
    n = 100_000
    table = pa.table({"x": list(range(n)), "y": [f"value-{i * 7919 % n}" for i in range(n)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=20_000, compression="none")
    body = sink.getvalue()
    store.put("f.parquet", body)
    before = store.stats.snapshot()
    with store.open_ranged("f.parquet", body.size) as source:
        pf = pq.ParquetFile(source)
        assert pf.metadata.num_row_groups == 5
        part = pf.read_row_groups([2], columns=["x"])
    assert part.column("x").to_pylist() == list(range(40_000, 60_000))
    delta = _delta(before, store.stats.snapshot())
    assert delta[("requests", "GET")] >= 2  # footer and one row group, not one whole GET
    assert delta[("bytes", "GET")] < body.size / 2


def test_list_prefix_start_after_and_sizes(store: ObjectStore) -> None:
    keys = ["a/1", "a/2", "a/3/x", "ab/1", "b/1", "top"]
    for i, k in enumerate(keys):
        store.put(k, b"x" * (i + 1))
    listed = store.list()
    assert [i.key for i in listed] == sorted(keys)
    assert {i.key: i.size for i in listed} == {k: i + 1 for i, k in enumerate(keys)}
    assert [i.key for i in store.list("a/")] == ["a/1", "a/2", "a/3/x"]
    # A prefix is a string prefix, not a directory: "a" also matches "ab/...".
    assert [i.key for i in store.list("a")] == ["a/1", "a/2", "a/3/x", "ab/1"]
    assert [i.key for i in store.list("a/3")] == ["a/3/x"]
    assert [i.key for i in store.list("zzz/")] == []
    assert [i.key for i in store.list("a/", start_after="a/1")] == ["a/2", "a/3/x"]
    assert [i.key for i in store.list("a/", start_after="a/2")] == ["a/3/x"]
    assert [i.key for i in store.list("", start_after="ab/1")] == ["b/1", "top"]
    assert [i.key for i in store.list("a/", start_after="a/3/x")] == []
    store.delete("a/2")
    assert [i.key for i in store.list("a/")] == ["a/1", "a/3/x"]


def test_list_empty_store(store: ObjectStore) -> None:
    assert store.list() == []
    assert store.list("snapshot/snapshot-") == []


def test_child_store_shares_counters_and_scopes_keys(store: ObjectStore) -> None:
    child = store.child("tables/t1")
    child.put("x/y", b"123")
    assert store.get("tables/t1/x/y") == b"123"
    assert [i.key for i in child.list("x/")] == ["x/y"]
    assert [i.key for i in child.list("", start_after="x/a")] == ["x/y"]
    head = child.head("x/y")
    assert head is not None and head.key == "x/y"
    assert child.stats is store.stats


# --------------------------------------------------------------------------- conditional puts


def test_put_if_absent(store: ObjectStore) -> None:
    needs_preconditions(store)
    store.put_if_absent("snapshot/1", b"first")
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("snapshot/1", b"second")
    assert store.get("snapshot/1") == b"first"
    assert [i.key for i in store.list("snapshot/")] == ["snapshot/1"]


def test_put_if_match(store: ObjectStore) -> None:
    if isinstance(store, FsspecStore):
        with pytest.raises(NotImplementedError, match="put_if_absent only"):
            store.put_if_match("hint", b"v2", '"x"')
        return
    store.put("hint", b"v1")
    data, etag = store.get_with_etag("hint")
    assert data == b"v1" and etag
    store.put_if_match("hint", b"v2", etag)
    assert store.get("hint") == b"v2"
    # The old ETag is now stale.
    with pytest.raises(PreconditionFailed):
        store.put_if_match("hint", b"v3", etag)
    assert store.get("hint") == b"v2"
    _, etag2 = store.get_with_etag("hint")
    assert etag2 != etag
    store.put_if_match("hint", b"v3", etag2)
    assert store.get("hint") == b"v3"


def test_put_if_match_on_missing_key_fails(store: ObjectStore) -> None:
    if isinstance(store, FsspecStore):
        pytest.skip("no put_if_match over fsspec (see test_put_if_match)")
    with pytest.raises(PreconditionFailed):
        store.put_if_match("never-written", b"x", '"0123456789abcdef0123456789abcdef"')
    assert store.head("never-written") is None


def test_put_if_absent_thread_race_has_one_winner_local(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "race"))
    threads = 8
    for round_ in range(20):
        key = f"snapshot/snapshot-{round_:020d}.json"
        barrier = threading.Barrier(threads)
        payloads = [f"writer-{i}-{'x' * (i * 1000)}".encode() for i in range(threads)]

        def attempt(
            i: int,
            key: str = key,
            barrier: threading.Barrier = barrier,
            payloads: list[bytes] = payloads,
        ) -> bool:
            barrier.wait()
            try:
                store.put_if_absent(key, payloads[i])
            except PreconditionFailed:
                return False
            return True

        with ThreadPoolExecutor(threads) as pool:
            won = list(pool.map(attempt, range(threads)))
        assert won.count(True) == 1, f"round {round_}: winners {won}"
        assert store.get(key) == payloads[won.index(True)]
    # No temporary files are left behind.
    leftovers = [p for p in (tmp_path / "race").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_put_if_absent_thread_race_has_one_winner_memory() -> None:
    store = open_store(f"memory://race-{uuid.uuid4().hex}")
    barrier = threading.Barrier(8)

    def attempt(i: int) -> bool:
        barrier.wait()
        try:
            store.put_if_absent("k", str(i).encode())
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(attempt, range(8)))
    assert won.count(True) == 1
    assert store.get("k") == str(won.index(True)).encode()


# --------------------------------------------------------------------------- counters


def test_counters_count_each_request_and_its_bytes(store: ObjectStore) -> None:
    needs_preconditions(store)
    stats = store.stats
    stats.reset()
    assert stats.total_requests() == 0

    def step(fn, expected: dict) -> None:  # type: ignore[no-untyped-def]
        before = stats.snapshot()
        fn()
        assert _delta(before, stats.snapshot()) == expected, fn

    step(lambda: store.put("k1", b"12345"), {("requests", "PUT"): 1, ("bytes", "PUT"): 5})
    step(
        lambda: store.put_if_absent("k2", b"abc"),
        {("requests", "PUT"): 1, ("bytes", "PUT"): 3},
    )
    step(lambda: store.get("k1"), {("requests", "GET"): 1, ("bytes", "GET"): 5})
    step(lambda: store.get_range("k1", 1, 2), {("requests", "GET"): 1, ("bytes", "GET"): 2})
    step(lambda: store.head("k1"), {("requests", "HEAD"): 1})
    step(lambda: store.head("missing"), {("requests", "HEAD"): 1})
    step(lambda: store.list(""), {("requests", "LIST"): 1})
    step(lambda: store.delete("k2"), {("requests", "DELETE"): 1})

    def failed_get() -> None:
        with pytest.raises(ObjectNotFound):
            store.get("missing")

    step(failed_get, {("requests", "GET"): 1})

    def failed_conditional_put() -> None:
        with pytest.raises(PreconditionFailed):
            store.put_if_absent("k1", b"zz")

    step(failed_conditional_put, {("requests", "PUT"): 1, ("bytes", "PUT"): 2})
    snap = stats.snapshot()
    assert snap["requests"] == {"PUT": 3, "GET": 3, "LIST": 1, "HEAD": 2, "DELETE": 1}
    assert stats.total_requests() == 10
    stats.reset()
    assert stats.total_requests() == 0
    assert all(v == 0 for v in stats.snapshot()["bytes"].values())


def test_failed_ranged_get_is_counted(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_range("missing", 0, 10)
    assert store.stats.snapshot()["requests"]["GET"] == 1


def test_table_store_stats_counts_table_requests(tmp_path: Path) -> None:
    t = lsm3.create_table(str(tmp_path / "t"), pa.schema([("id", pa.int64())]), ["id"])
    before = t.store_stats()
    assert set(before) == {"requests", "bytes"}
    assert set(before["requests"]) == {"PUT", "GET", "LIST", "HEAD", "DELETE"}
    with t.writer() as w:
        w.upsert({"id": [1, 2, 3]})
    after = t.store_stats()
    # at least one run, one manifest and one snapshot were uploaded
    assert after["requests"]["PUT"] - before["requests"]["PUT"] >= 3
    assert after["bytes"]["PUT"] > before["bytes"]["PUT"]


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/passwd", "..", "a/.."])
def test_local_store_refuses_keys_escaping_the_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = open_store(str(root))
    with pytest.raises(InvalidInput):
        store.put(key, b"x")
    with pytest.raises(InvalidInput):
        store.put_if_absent(key, b"x")
    with pytest.raises(InvalidInput):
        store.get(key)
    with pytest.raises(InvalidInput):
        store.delete(key)
    assert not (tmp_path / "escape").exists()
    assert sorted(os.listdir(tmp_path)) in ([], ["root"])


def test_s3_missing_bucket_is_a_clear_storage_error(moto_server: LocalS3) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    store = open_store(f"s3://{bucket}/t", moto_server.storage_options())
    for op in (
        lambda: store.get("schema/schema-0.json"),
        lambda: store.put("x", b"1"),
        lambda: store.put_if_absent("x", b"1"),
        lambda: store.list("snapshot/"),
    ):
        with pytest.raises(StorageError) as info:
            op()
        # Not "object missing": the bucket is, and the message says so.
        assert not isinstance(info.value, ObjectNotFound)
        assert bucket in str(info.value)
        assert "does not exist" in str(info.value) or "NoSuchBucket" in str(info.value)
    with pytest.raises(StorageError) as info:
        lsm3.open_table(f"s3://{bucket}/t", storage_options=moto_server.storage_options())
    assert not isinstance(info.value, lsm3.TableNotFound)
    assert bucket in str(info.value)


def test_s3_list_paginates_past_1000_keys(
    seaweed_bucket_uri: tuple[str, dict[str, str]], seaweed_server: LocalS3
) -> None:
    """S3 returns at most 1000 keys per LIST page; the store must follow the continuation."""
    uri, options = seaweed_bucket_uri
    store = open_store(uri, options)
    assert isinstance(store, S3Store)
    client = seaweed_server.client()
    keys = [f"many/{i:05d}" for i in range(1010)]

    def put(k: str) -> None:
        client.put_object(Bucket=store.bucket, Key=store.prefix + k, Body=b"v")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))
    store.put("other/x", b"v")  # outside the prefix

    store.stats.reset()
    listed = store.list("many/")
    assert [i.key for i in listed] == keys
    assert store.stats.snapshot()["requests"]["LIST"] == 2  # one request per page
    # start_after in the first page, with the rest spanning the page boundary
    assert [i.key for i in store.list("many/", start_after=keys[3])] == keys[4:]
    assert [i.key for i in store.list("many/", start_after=keys[-2])] == keys[-1:]
    assert len(store.list("")) == 1011


def test_s3_list_follows_continuation_tokens_with_start_after(
    s3_bucket_uri: tuple[str, dict[str, str]],
) -> None:
    """The same pagination on moto, with pages forced small so many boundaries are crossed."""
    uri, options = s3_bucket_uri
    store = open_store(uri, options)
    assert isinstance(store, S3Store)
    keys = [f"p/{i:03d}" for i in range(23)]
    for k in keys:
        store.put(k, b"v")
    real = store._client.list_objects_v2
    store._client.list_objects_v2 = lambda **kw: real(MaxKeys=4, **kw)
    store.stats.reset()
    assert [i.key for i in store.list("p/")] == keys
    assert store.stats.snapshot()["requests"]["LIST"] == 6
    assert [i.key for i in store.list("p/", start_after=keys[5])] == keys[6:]
    assert [i.key for i in store.list("p/", start_after=keys[21])] == keys[22:]
    assert [i.key for i in store.list("p/", start_after=keys[22])] == []


def test_s3_store_etag_and_head(s3_bucket_uri: tuple[str, dict[str, str]]) -> None:
    uri, options = s3_bucket_uri
    store = open_store(uri, options)
    store.put("k", b"hello")
    head = store.head("k")
    _, etag = store.get_with_etag("k")
    assert head is not None and head.etag == etag
    # The S3 store's prefix scopes everything: a second table in the same bucket is separate.
    other = open_store(uri + "-other", options)
    assert other.head("k") is None
    assert other.list() == []


def test_unknown_storage_option_is_named(moto_server: LocalS3) -> None:
    options = {**moto_server.storage_options(), "endpoint": "http://typo"}
    with pytest.raises(InvalidInput) as info:
        open_store("s3://bucket/t", options)
    assert "'endpoint'" in str(info.value)


def test_create_table_in_a_missing_bucket(moto_server: LocalS3) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:12]}"
    with pytest.raises(StorageError) as info:
        lsm3.create_table(
            f"s3://{bucket}/t",
            pa.schema([("id", pa.int64())]),
            ["id"],
            storage_options=moto_server.storage_options(),
        )
    assert bucket in str(info.value)
    assert not isinstance(info.value, lsm3.TableAlreadyExists)
