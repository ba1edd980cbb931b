"""moto, the in-memory S3 emulator, as a local test server: how to start it, when it is ready,
how to wipe it.

Fast to start, supports conditional puts (``If-None-Match: *``) and ranged GETs. It always runs
as a *subprocess* (:meth:`lsm3.testing.devserver.LocalS3Server.start_moto`): an in-process
(threaded) moto server makes pyarrow hang or abort at interpreter exit.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable


def reset_moto(endpoint_url: str, timeout: float = 10.0) -> None:
    """Wipe all state (buckets, objects) of the moto server at ``endpoint_url``."""
    request = urllib.request.Request(
        endpoint_url.rstrip("/") + "/moto-api/reset", data=b"", method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def moto_command(host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``python -m moto.server`` on ``host:port``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOTO_PORT": str(port)}
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], env


def moto_ready(endpoint: str) -> Callable[[], bool]:
    """A probe that is true once moto answers at ``endpoint``."""

    def ready() -> bool:
        # A moto-specific URL, so another HTTP server squatting on the port does not count.
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return ready
