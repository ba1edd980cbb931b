"""Shared pytest fixtures: local S3 servers (moto, SeaweedFS) and table locations.

* ``moto_server`` / ``seaweed_server``: one server per test session, as a :class:`LocalS3`.
* ``s3_bucket_uri`` / ``seaweed_bucket_uri``: a fresh bucket per test, as ``(uri, options)``.
* ``local_uri``: a not-yet-existing directory under ``tmp_path``, as ``(path, None)``.
* ``table_location``: parametrized over ``local`` and ``s3`` (moto), so a table test suite that
  takes it runs against both backends.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsm3.testing.devserver import LocalS3, LocalS3Server, find_weed_binary

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
logging.getLogger("werkzeug").setLevel(logging.ERROR)

#: ``(uri, storage_options)``; ``storage_options`` is ``None`` for local paths.
Location = tuple[str, dict[str, str] | None]


def _unique_bucket_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[LocalS3]:
    """A moto S3 server subprocess shared by the whole session."""
    with LocalS3Server.start_moto() as server:
        yield server.s3


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[LocalS3]:
    """A SeaweedFS ``weed mini`` server shared by the whole session (skips if not installed)."""
    try:
        find_weed_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with LocalS3Server.start_seaweedfs() as server:
        yield server.s3


@pytest.fixture
def s3_bucket_uri(moto_server: LocalS3) -> Location:
    """A fresh, uniquely named moto bucket: ``("s3://<bucket>/t", storage_options)``."""
    bucket = _unique_bucket_name()
    moto_server.create_bucket(bucket)
    return f"s3://{bucket}/t", moto_server.storage_options()


@pytest.fixture
def seaweed_bucket_uri(seaweed_server: LocalS3) -> Location:
    """A fresh, uniquely named SeaweedFS bucket: ``("s3://<bucket>/t", storage_options)``."""
    bucket = _unique_bucket_name()
    seaweed_server.create_bucket(bucket)
    return f"s3://{bucket}/t", seaweed_server.storage_options()


@pytest.fixture
def local_uri(tmp_path: Path) -> Location:
    """A local table location that does not exist yet: ``(str(tmp_path / "t"), None)``."""
    return str(tmp_path / "t"), None


@pytest.fixture(params=["local", "s3"])
def table_location(request: pytest.FixtureRequest) -> Location:
    """``(uri, storage_options)`` for a local directory, then for a fresh moto bucket."""
    fixture = "local_uri" if request.param == "local" else "s3_bucket_uri"
    location: Location = request.getfixturevalue(fixture)
    return location


@pytest.fixture
def quiet_lsm3() -> Iterator[None]:
    """lsm3's warnings (retries, write stalls) silenced: for tests that provoke them."""
    logging.getLogger("lsm3").setLevel(logging.ERROR)
    yield
    logging.getLogger("lsm3").setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard) shared by the whole session. A test module whose
    functions or classes run in workers registers itself with
    ``ray.cloudpickle.register_pickle_by_value`` (workers cannot import test modules)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
