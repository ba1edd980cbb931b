"""Processes of the local test servers: free loopback ports, process groups and the watchdog.

Nothing here knows S3: :mod:`lsm3.testing.devserver` starts servers with these helpers, and
:mod:`lsm3.testing.moto` and :mod:`lsm3.testing.seaweedfs` say what to start. POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class PortInUse(RuntimeError):
    """The server could not bind one of its ports."""


class PortReservation:
    """Holds bound loopback sockets until closed, so that every port it picks is distinct.

    The ports are released just before the server starts; the tiny window in which another
    process could grab one is covered by retrying the start-up (see ``PortInUse``).
    """

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def __enter__(self) -> PortReservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sock in self._held:
            sock.close()
        self._held.clear()

    def try_port(self, port: int) -> bool:
        """Reserve ``port`` if it is free."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            sock.close()
            return False
        self._held.append(sock)
        return True

    def any_port(self) -> int:
        """Reserve a free port chosen by the kernel."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._held.append(sock)
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])

    def pair(self, offset: int) -> tuple[int, int]:
        """Reserve two free ports ``(p, p + offset)``."""
        for _ in range(200):
            probe = self.any_port()
            for low in (probe, probe - offset):
                high = low + offset
                if low >= 1024 and high <= 65535 and self.try_port(high if low == probe else low):
                    return low, high
        raise RuntimeError(f"found no free pair of loopback ports {offset} apart")


def tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<log unavailable: {exc}>"


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def leader_exited(process: subprocess.Popen[bytes]) -> bool:
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


def wait_leader(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not leader_exited(process):
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


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def start_watchdog(pgid: int, cleanup_paths: list[Path]) -> subprocess.Popen[bytes] | None:
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
