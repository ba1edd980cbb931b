"""The local S3 servers of :mod:`lsm3.testing.devserver` behave like S3 where lsm3 relies on it.

Object round trips, conditional puts (``If-None-Match: *``), ranged GETs, and - on SeaweedFS,
which has real concurrency - a conditional-put race with exactly one winner per key.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lsm3.testing import process
from lsm3.testing.devserver import LocalS3, LocalS3Server, reset_moto

SERVERS = ["moto", "seaweedfs"]


def _bucket_name() -> str:
    return f"devserver-{uuid.uuid4().hex[:12]}"


def _is_precondition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") == "PreconditionFailed" or status == 412


def _port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _port_of(s3: LocalS3) -> int:
    return int(s3.endpoint_url.rsplit(":", 1)[1])


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> LocalS3:
    fixture = "moto_server" if request.param == "moto" else "seaweed_server"
    s3: LocalS3 = request.getfixturevalue(fixture)
    return s3


@pytest.fixture
def bucket(server: LocalS3) -> tuple[Any, str]:
    """``(boto3 client, fresh bucket name)`` on the parametrized server."""
    name = _bucket_name()
    server.create_bucket(name)
    return server.client(), name


def test_storage_options(moto_server: LocalS3) -> None:
    assert moto_server.storage_options() == {
        "endpoint_url": moto_server.endpoint_url,
        "region": "us-east-1",
        "access_key_id": moto_server.access_key_id,
        "secret_access_key": moto_server.secret_access_key,
    }
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")


def test_put_get_roundtrip(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    payload = os.urandom(100_000)
    client.put_object(Bucket=name, Key="dir/sub/object.bin", Body=payload)
    assert client.get_object(Bucket=name, Key="dir/sub/object.bin")["Body"].read() == payload
    assert client.head_object(Bucket=name, Key="dir/sub/object.bin")["ContentLength"] == 100_000
    listed = client.list_objects_v2(Bucket=name, Prefix="dir/")
    assert [obj["Key"] for obj in listed.get("Contents", [])] == ["dir/sub/object.bin"]


def test_conditional_put_rejects_existing_key(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="snapshot/1", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=name, Key="snapshot/1", Body=b"second", IfNoneMatch="*")
    assert _is_precondition_failed(excinfo.value), excinfo.value.response
    assert client.get_object(Bucket=name, Key="snapshot/1")["Body"].read() == b"first"


def test_ranged_get(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    payload = bytes(range(256)) * 4
    client.put_object(Bucket=name, Key="run.parquet", Body=payload)

    def get_range(spec: str) -> bytes:
        body: bytes = client.get_object(Bucket=name, Key="run.parquet", Range=spec)["Body"].read()
        return body

    assert get_range("bytes=10-19") == payload[10:20]
    assert get_range("bytes=1000-") == payload[1000:]
    assert get_range("bytes=-8") == payload[-8:]


def test_create_bucket_is_idempotent(server: LocalS3) -> None:
    name = _bucket_name()
    server.create_bucket(name)
    server.create_bucket(name)
    buckets = [b["Name"] for b in server.client().list_buckets()["Buckets"]]
    assert name in buckets


def test_conditional_put_race_has_one_winner(seaweed_server: LocalS3) -> None:
    writers, rounds = 4, 6
    name = _bucket_name()
    seaweed_server.create_bucket(name)
    clients = [seaweed_server.client() for _ in range(writers)]
    barrier = threading.Barrier(writers)
    unexpected: list[Any] = []

    def attempt(writer: int, key: str) -> bool:
        barrier.wait(timeout=60)
        try:
            clients[writer].put_object(
                Bucket=name, Key=key, Body=f"writer-{writer}".encode(), IfNoneMatch="*"
            )
        except ClientError as exc:
            if not _is_precondition_failed(exc):
                unexpected.append(exc.response)
            return False
        return True

    with ThreadPoolExecutor(max_workers=writers) as pool:
        for round_ in range(rounds):
            key = f"log/{round_:08d}.json"
            results = list(pool.map(attempt, range(writers), [key] * writers))
            winners = [writer for writer, won in enumerate(results) if won]
            assert unexpected == []
            assert len(winners) == 1, f"round {round_}: winners {winners}"
            stored = clients[0].get_object(Bucket=name, Key=key)["Body"].read()
            assert stored == f"writer-{winners[0]}".encode()


def test_moto_lifecycle_and_reset() -> None:
    server = LocalS3Server.start_moto()
    with server:
        port = _port_of(server.s3)
        run_dir = server.log_path.parent
        assert server.running
        server.s3.create_bucket("lifecycle")
        reset_moto(server.s3.endpoint_url)
        assert server.s3.client().list_buckets()["Buckets"] == []
    assert not server.running
    server.stop()  # idempotent
    assert not run_dir.exists()
    assert not _port_is_open(port)
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_start_failure_reports_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, not listening: the port is taken
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"(?i)address already in use"):
            LocalS3Server.start_moto(port=port)


def test_start_retries_when_picked_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        real_any_port = process.PortReservation.any_port
        picks: list[int] = []

        def first_pick_is_taken(self: process.PortReservation) -> int:
            picks.append(taken if not picks else real_any_port(self))
            return picks[-1]

        monkeypatch.setattr(process.PortReservation, "any_port", first_pick_is_taken)
        with LocalS3Server.start_moto() as server:
            assert _port_of(server.s3) != taken
            assert server.s3.client().list_buckets()["Buckets"] is not None
    assert picks[0] == taken and len(picks) == 2


def test_seaweedfs_data_dir_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "weed-data"
    with LocalS3Server.start_seaweedfs(data_dir=str(data_dir)) as first:
        first.s3.create_bucket("durable")
        first.s3.client().put_object(Bucket="durable", Key="k", Body=b"kept")
        run_dir = first.log_path.parent
    assert not first.running
    assert not run_dir.exists()
    assert any(data_dir.iterdir())
    with LocalS3Server.start_seaweedfs(data_dir=str(data_dir)) as second:
        assert second.s3.client().get_object(Bucket="durable", Key="k")["Body"].read() == b"kept"
    assert not _port_is_open(_port_of(second.s3))
