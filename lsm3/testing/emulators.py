"""Local Azure and GCS emulators for tests and examples: Azurite and gcp-storage-emulator.

* **Azurite** (npm package ``azurite``, run with Node.js): Azure Blob Storage on
  ``127.0.0.1``, account ``devstoreaccount1`` with its well-known key. It enforces
  ``If-None-Match: *``: racing creators of one blob get exactly one winner, so the commit race
  tests run against it. ``make`` installs it into ``tests/.azurite`` (:data:`AZURITE_DIR`;
  override with ``LSM3_AZURITE_DIR``).
* **gcp-storage-emulator** (PyPI): GCS's JSON API in memory. It ignores
  ``ifGenerationMatch=0`` (8 of 8 racers won), so it serves functional tests only.

Each server runs in its own process group under the watchdog of :mod:`lsm3.testing.process`,
like the S3 servers of :mod:`lsm3.testing.devserver`. POSIX only. Example::

    with start_azurite() as azure:
        azure.create_container("demo")
        uri, options = "az://demo/t", azure.storage_options()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from lsm3.testing.process import (
    LOOPBACK,
    PortReservation,
    leader_exited,
    remove_path,
    signal_group,
    start_watchdog,
    tail,
    wait_leader,
)

#: Where ``make`` installs Azurite (``npm install --prefix``); ``LSM3_AZURITE_DIR`` overrides.
AZURITE_DIR = Path(__file__).resolve().parents[2] / "tests" / ".azurite"
#: The version ``make`` installs.
AZURITE_VERSION = "3.37.0"
AZURITE_ACCOUNT = "devstoreaccount1"
#: Azurite's documented development key (public; it guards nothing).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 30.0


def azurite_script() -> Path:
    """Azurite's blob server script; FileNotFoundError (saying how to install) if absent."""
    base = Path(os.environ.get("LSM3_AZURITE_DIR") or AZURITE_DIR)
    script = base / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
    if not script.is_file():
        raise FileNotFoundError(
            f"Azurite is not installed at {base}: run `make .venv/.installed-dev` (npm install "
            f"--prefix {base} azurite@{AZURITE_VERSION}) or set LSM3_AZURITE_DIR"
        )
    if shutil.which("node") is None:
        raise FileNotFoundError("Azurite needs Node.js (`node`), which is not on PATH")
    return script


@dataclass(frozen=True)
class LocalAzure:
    """Where Azurite listens and the credentials it accepts."""

    endpoint_url: str

    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint_url};"
        )

    def storage_options(self) -> dict[str, str]:
        """Options for ``az://`` URIs (adlfs): the connection string."""
        return {"connection_string": self.connection_string()}

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.connection_string())
        with contextlib.suppress(Exception):  # already there
            client.create_container(name)


@dataclass(frozen=True)
class LocalGcs:
    """Where gcp-storage-emulator listens."""

    endpoint_url: str

    def storage_options(self) -> dict[str, str]:
        """Options for ``gs://`` URIs (gcsfs): the endpoint, anonymous access, a project."""
        return {"endpoint_url": self.endpoint_url, "token": "anon", "project": "lsm3-test"}

    def create_bucket(self, name: str) -> None:
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(**self.storage_options(), skip_instance_cache=True)
        with contextlib.suppress(FileExistsError):
            fs.mkdir(name)


class EmulatorServer:
    """A running emulator process; a context manager whose ``stop`` is idempotent."""

    def __init__(self, kind: str, endpoint_url: str, command: list[str], run_dir: Path) -> None:
        self.kind = kind
        self.endpoint_url = endpoint_url
        self.run_dir = run_dir
        self.log_path = run_dir / f"{kind}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            start_new_session=True,
        )
        self._watchdog = start_watchdog(self._process.pid, [run_dir])
        self._stopped = False
        atexit.register(self.stop)

    def wait_ready(self, port: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if leader_exited(self._process):
                self.stop()
                raise RuntimeError(f"{self.kind} exited during start-up:\n{tail(self.log_path)}")
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not listen on {port} in {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._process.returncode is None:
            signal_group(self._process.pid, signal.SIGTERM)
            if not wait_leader(self._process, 2.0):  # nothing to save: do not wait long
                signal_group(self._process.pid, signal.SIGKILL)
                wait_leader(self._process, 5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5.0)
        self._log.close()
        if self._watchdog is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.write(b"stopped\n")
                self._watchdog.stdin.close()
                self._watchdog.wait(timeout=5.0)
        with contextlib.suppress(OSError):
            remove_path(self.run_dir)

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class AzuriteServer(EmulatorServer):
    azure: LocalAzure


class GcsEmulatorServer(EmulatorServer):
    gcs: LocalGcs


def start_azurite() -> AzuriteServer:
    """Start Azurite's blob service on a free loopback port (FileNotFoundError if absent)."""
    script = azurite_script()
    with PortReservation() as ports:
        port = ports.any_port()
    run_dir = Path(tempfile.mkdtemp(prefix="lsm3-azurite-"))
    command = [
        "node", str(script), "--silent", "--location", str(run_dir / "data"),
        "--blobHost", LOOPBACK, "--blobPort", str(port), "--skipApiVersionCheck",
    ]  # fmt: skip
    server = AzuriteServer(
        "azurite", f"http://{LOOPBACK}:{port}/{AZURITE_ACCOUNT}", command, run_dir
    )
    server.azure = LocalAzure(server.endpoint_url)
    server.wait_ready(port)
    return server


def start_gcs_emulator() -> GcsEmulatorServer:
    """Start gcp-storage-emulator (in memory) on a free loopback port."""
    with PortReservation() as ports:
        port = ports.any_port()
    run_dir = Path(tempfile.mkdtemp(prefix="lsm3-gcs-"))
    code = "from gcp_storage_emulator.__main__ import main; main()"
    command = [
        sys.executable, "-c", code, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory"
    ]  # fmt: skip
    server = GcsEmulatorServer("gcs-emulator", f"http://{LOOPBACK}:{port}", command, run_dir)
    server.gcs = LocalGcs(server.endpoint_url)
    server.wait_ready(port)
    return server
