"""The fsspec backend (``lsm3.io.fsspec``): which filesystems are trusted to commit, the
``unsafe_single_writer`` escape, error mapping, and tables on Azurite, the GCS emulator and
s3fs. The storage suite itself runs on these backends in test_storage.py."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.exceptions
import pyarrow as pa
import pytest

import lsm3
from lsm3.errors import InvalidInput, ObjectNotFound, PreconditionFailed, StorageError
from lsm3.io.fsspec import FsspecStore, open_fsspec_store
from lsm3.io.store import ObjectStore, open_store

Location = tuple[str, dict[str, Any] | None]
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


def _one_winner(store: ObjectStore, key: str, racers: int = 8) -> int:
    """Race ``racers`` threads to create ``key``; the number that won."""
    barrier = threading.Barrier(racers)

    def attempt(i: int) -> bool:
        barrier.wait()
        try:
            store.put_if_absent(key, f"racer-{i}".encode())
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(racers) as pool:
        return sum(pool.map(attempt, range(racers)))


def _round_trip(uri: str, options: dict[str, Any] | None) -> lsm3.Table:
    t = lsm3.create_table(uri, SCHEMA, "id", storage_options=options)
    with t.writer() as w:
        w.upsert({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    with t.writer() as w:
        w.delete({"id": [2]})
        w.upsert({"id": [3], "v": ["C"]})
    again = lsm3.open_table(uri, storage_options=options)
    assert again.to_arrow().sort_by("id").to_pylist() == [
        {"id": 1, "v": "a"},
        {"id": 3, "v": "C"},
    ]
    return again


# --------------------------------------------------------------------------- what is trusted


def test_a_filesystem_without_atomic_create_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        open_store(f"local://{tmp_path}/t")
    message = str(info.value)
    assert "LocalFileSystem" in message and "exists-then-write" in message
    assert "unsafe_single_writer" in message
    with pytest.raises(InvalidInput, match="unsafe_single_writer"):
        lsm3.create_table(f"local://{tmp_path}/t", SCHEMA, "id")
    assert not (tmp_path / "t").exists()


def test_unsafe_single_writer_allows_one_writer_and_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"local://{tmp_path}/t"
    options = {"unsafe_single_writer": True}
    with caplog.at_level(logging.WARNING, logger="lsm3"):
        t = _round_trip(uri, options)
    assert "unsafe_single_writer" in caplog.text
    assert t.table_schema.options["unsafe_single_writer"] is True
    store = open_store(uri, options)
    assert store.unsafe_single_writer
    store.put_if_absent("k", b"1")
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("k", b"2")


def test_unsafe_single_writer_is_not_recorded_where_creation_is_atomic(tmp_path: Path) -> None:
    t = lsm3.create_table(
        str(tmp_path / "t"), SCHEMA, "id", storage_options={"unsafe_single_writer": True}
    )
    assert "unsafe_single_writer" not in t.table_schema.options
    with pytest.raises(InvalidInput, match="unsafe_single_writer must be true or false"):
        open_store(f"local://{tmp_path}/u", {"unsafe_single_writer": "maybe"})


def test_fsspec_memory_filesystem_creates_atomically_under_a_lock() -> None:
    uri = f"memory://fsspec-{uuid.uuid4().hex}/t"
    store = open_store(uri, {"backend": "fsspec"})
    assert isinstance(store, FsspecStore) and not store.unsafe_single_writer
    for round_ in range(5):
        assert _one_winner(store, f"snapshot/{round_}") == 1
    _round_trip(f"memory://fsspec-{uuid.uuid4().hex}/t", {"backend": "fsspec"})


@pytest.mark.parametrize(
    ("uri", "options", "problem"),
    [
        ("az://c/t", {"backend": "s3fs"}, "does not apply"),
        ("s3://b/t", {"backend": "fsspec"}, "does not apply"),
        ("s3://b/t", {"backend": "nope"}, "unknown S3 backend"),
        ("/tmp/t", {"backend": "s3fs"}, "does not apply"),
        ("az://c/t", {"no_such_option": 1}, "no_such_option.*connection_string"),
    ],
)
def test_bad_backend_options_are_named(uri: str, options: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        open_store(uri, options)


def test_gcs_with_an_endpoint_skips_the_grpc_bucket_probe() -> None:
    """gcsfs's extended class probes each bucket over gRPC (about 60 s against an emulator)."""
    store = open_fsspec_store(
        "gs://b/t", {"endpoint_url": "http://127.0.0.1:9", "token": "anon", "project": "p"}
    )
    assert type(store.fs).__module__ == "gcsfs.core"


def test_s3fs_takes_the_boto3_backends_option_names() -> None:
    store = open_fsspec_store(
        "s3://b/t",
        {
            "endpoint_url": "http://127.0.0.1:9",
            "access_key_id": "a",
            "secret_access_key": "s",
            "region": "eu-west-1",
        },
    )
    assert (store.fs.key, store.fs.secret) == ("a", "s")
    assert store.fs.client_kwargs["region_name"] == "eu-west-1"
    assert store.root == "b/t"


# --------------------------------------------------------------------------- errors


class _FailingFs:
    """A filesystem double whose every call raises ``error``."""

    protocol = "memory"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    @staticmethod
    def _strip_protocol(path: str) -> str:
        return path

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


def _failing_store(error: BaseException) -> FsspecStore:
    return FsspecStore(_FailingFs(error), "bucket/t", "x://bucket/t", unsafe_single_writer=True)


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "PutObject")


def _wrapped(cause: BaseException) -> OSError:
    """s3fs's translation of an error it has no class for (an OSError caused by it)."""
    try:
        raise OSError(22, "Invalid argument") from cause
    except OSError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "expected", "words"),
    [
        (FileExistsError("k"), PreconditionFailed, "already exists"),
        (
            _wrapped(_client_error("PreconditionFailed", 412)),
            PreconditionFailed,
            "PreconditionFailed",
        ),
        (FileNotFoundError("no bucket"), StorageError, "create it first"),
        (PermissionError("denied"), StorageError, "credentials"),
        (TimeoutError("slow"), StorageError, "TimeoutError: slow"),
    ],
)
def test_put_errors_map_to_lsm3_errors(
    error: BaseException, expected: type[Exception], words: str
) -> None:
    with pytest.raises(expected, match=words) as info:
        _failing_store(error).put("k", b"x")
    assert type(info.value) is expected
    assert info.value.__cause__ is error


def test_read_errors_map_to_lsm3_errors() -> None:
    missing = _failing_store(FileNotFoundError("gone"))
    with pytest.raises(ObjectNotFound):
        missing.get("k")
    with pytest.raises(ObjectNotFound):
        missing.get_range("k", 0, 4)
    assert missing.head("k") is None
    missing.delete("k")  # deleting a missing object is not an error
    assert missing.stats.snapshot()["requests"] == {
        "PUT": 0,
        "GET": 2,
        "LIST": 0,
        "HEAD": 1,
        "DELETE": 1,
    }
    with pytest.raises(StorageError, match="ConnectionError"):
        _failing_store(ConnectionError("reset")).list("a/")


# --------------------------------------------------------------------------- real servers


def test_azure_table_round_trip_and_one_winner(az_container_uri: Location) -> None:
    uri, options = az_container_uri
    _round_trip(uri, options)
    store = open_store(uri.rsplit("/", 1)[0] + "/race", options)
    winners = [_one_winner(store, f"snapshot/{i}") for i in range(5)]
    assert winners == [1] * 5  # 8 racers, 5 rounds


def test_abfs_url_names_the_same_container(az_container_uri: Location) -> None:
    uri, options = az_container_uri
    open_store(uri, options).put("k", b"v")
    assert open_store(uri.replace("az://", "abfs://"), options).get("k") == b"v"


def test_gcs_table_round_trip_on_the_emulator(gs_bucket_uri: Location) -> None:
    """Functional only: the emulator lets every racer win (no race test on GCS here)."""
    uri, options = gs_bucket_uri
    _round_trip(uri, options)


def test_s3fs_table_round_trip(s3_bucket_uri: Location) -> None:
    uri, options = s3_bucket_uri
    _round_trip(uri, {**(options or {}), "backend": "s3fs"})


def test_s3fs_create_has_one_winner_on_seaweedfs(seaweed_bucket_uri: Location) -> None:
    uri, options = seaweed_bucket_uri
    store = open_store(uri, {**(options or {}), "backend": "s3fs"})
    assert [_one_winner(store, f"snapshot/{i}") for i in range(3)] == [1, 1, 1]
