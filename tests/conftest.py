"""Shared pytest fixtures: local S3 servers (moto, SeaweedFS) and table locations.

* ``moto_server`` / ``seaweed_server``: one server per test session, as a :class:`LocalS3`.
* ``s3_bucket_uri`` / ``seaweed_bucket_uri``: a fresh bucket per test, as ``(uri, options)``.
* ``local_uri``: a not-yet-existing directory under ``tmp_path``, as ``(path, None)``.
* ``azurite_server`` / ``az_container_uri``: Azurite (Azure Blob Storage) and a fresh container
  per test; skipped where Azurite or Node.js is missing, an error under CI (``CI=true``).
* ``gcs_server`` / ``gs_bucket_uri``: gcp-storage-emulator and a fresh bucket per test.
* ``table_location``: parametrized over ``local``, ``s3`` (moto) and ``az`` (Azurite), so a
  table test suite that takes it runs against each backend. The ``az`` cases run in the
  suites of :data:`AZURE_TABLE_SUITES`, less a few slow parametrisations (:data:`AZURE_ONE_OF`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsm3.testing.devserver import LocalS3, LocalS3Server, find_weed_binary
from lsm3.testing.emulators import LocalAzure, LocalGcs, start_azurite, start_gcs_emulator

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


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[LocalAzure]:
    """Azurite's blob service shared by the whole session."""
    try:
        server = start_azurite()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):  # CI installs it (make's setup): a missing install is a bug
            raise
        pytest.skip(f"Azure tests need Azurite: {exc}")
    with server:
        yield server.azure


@pytest.fixture
def az_container_uri(azurite_server: LocalAzure) -> Location:
    """A fresh Azurite container: ``("az://<container>/t", storage_options)``."""
    container = _unique_bucket_name()
    azurite_server.create_container(container)
    return f"az://{container}/t", azurite_server.storage_options()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[LocalGcs]:
    """gcp-storage-emulator shared by the whole session (it ignores preconditions)."""
    with start_gcs_emulator() as server:
        yield server.gcs


@pytest.fixture
def gs_bucket_uri(gcs_server: LocalGcs) -> Location:
    """A fresh emulated GCS bucket: ``("gs://<bucket>/t", storage_options)``."""
    bucket = _unique_bucket_name()
    gcs_server.create_bucket(bucket)
    return f"gs://{bucket}/t", gcs_server.storage_options()


@pytest.fixture
def local_uri(tmp_path: Path) -> Location:
    """A local table location that does not exist yet: ``(str(tmp_path / "t"), None)``."""
    return str(tmp_path / "t"), None


#: Table suites whose ``table_location`` tests also run on Azurite: the public table API, the
#: catalog, merge engines, faults, the CLI, compaction, maintenance (expiry, orphans), commit
#: identity, the compactor job and the warehouse CLI: every suite that takes ``table_location``.
#: The commit race runs on Azurite in test_concurrency.py.
AZURE_TABLE_SUITES = frozenset(
    {
        "test_table.py",
        "test_catalog.py",
        "test_engines.py",
        "test_faults.py",
        "test_cli.py",
        "test_compaction.py",
        "test_maintenance.py",
        "test_commit_identity.py",
        "test_compactor_job.py",
        "test_warehouse_cli.py",
    }
)
#: Parametrisations left out on Azurite to keep ``make test`` fast (they run on local and
#: S3): the identity harness with one seed of three (each seed took 20-60 s there), the
#: compaction-invariance test with the universal policy only (leveled and full ~5 s each).
AZURE_ONE_OF = frozenset(
    {
        "test_continued_writers_and_paused_committers_lose_nothing[az-0]",
        "test_continued_writers_and_paused_committers_lose_nothing[az-2]",
        "test_compaction_changes_no_read_result_at_any_snapshot[az-leveled]",
        "test_compaction_changes_no_read_result_at_any_snapshot[az-full]",
    }
)
#: Parametrisations run on the local directory only: the identity harness's seeds 1 and 2
#: took 28-52 s each on moto in CI; seed 0 runs on every backend (the seeds differ only in
#: the random faults and interleavings, which the local runs and ``make soak`` cover).
SERVER_ONE_OF = frozenset(
    {
        "test_continued_writers_and_paused_committers_lose_nothing[s3-1]",
        "test_continued_writers_and_paused_committers_lose_nothing[s3-2]",
    }
)
_LOCATION_FIXTURES = {"local": "local_uri", "s3": "s3_bucket_uri", "az": "az_container_uri"}


@pytest.fixture(params=list(_LOCATION_FIXTURES))
def table_location(request: pytest.FixtureRequest) -> Location:
    """``(uri, storage_options)`` for a local directory, a fresh moto bucket, a fresh Azurite
    container."""
    location: Location = request.getfixturevalue(_LOCATION_FIXTURES[request.param])
    return location


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the Azure cases of ``table_location`` to :data:`AZURE_TABLE_SUITES`, less
    :data:`AZURE_ONE_OF`, and drop :data:`SERVER_ONE_OF`."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_azure = callspec is not None and callspec.params.get("table_location") == "az"
        if item.name in SERVER_ONE_OF or (
            on_azure and (item.path.name not in AZURE_TABLE_SUITES or item.name in AZURE_ONE_OF)
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
