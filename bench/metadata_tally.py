"""What a commit's metadata bytes are made of: every PUT of ``bench.metadata``'s commit
phases counted by object kind and outcome.

``bench.metadata`` reports bytes per commit as one figure; this splits it into snapshots,
manifest lists, delta manifests (under 64 KB) and merged manifests, each as stored, refused
by a conditional put (a lost race: 412) or stored again under another name with bytes
already stored (a copy a content-named put should have reused). Fills a table to ``--live``
files, then runs ``--one`` commits by one writer and ``--four`` by four (8 files each),
printing one JSON line per phase.

Usage: ``python -m bench.metadata_tally --live 1000000 --one 1000 --four 400``
(``--options`` takes table options as JSON, e.g. to make folds frequent).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

import lsm3
from bench import metadata
from lsm3.errors import PreconditionFailed

#: (kind, outcome, "n" | "bytes") -> total, over the current phase.
TALLY: collections.Counter[tuple[str, str, str]] = collections.Counter()
_FIRST_NAME: dict[str, str] = {}  # sha-256 of stored bytes -> the first name they were stored under
_LOCK = threading.Lock()


def kind(key: str, size: int) -> str:
    if key.startswith("snapshot/LATEST"):
        return "hint"
    if key.startswith("snapshot/"):
        return "snapshot"
    if key.startswith("manifest/list-"):
        return "list"
    if key.startswith("manifest/"):
        return "manifest<64K" if size < 65536 else "manifest>=64K"
    return key.split("/")[0]


def _count(k: str, outcome: str, size: int) -> None:
    TALLY[(k, outcome, "n")] += 1
    TALLY[(k, outcome, "bytes")] += size


class TallyStore(metadata.LocalStore):
    """The benchmark's store, counting every PUT."""

    def put_if_absent(self, key: str, data: bytes) -> None:
        k, size = kind(key, len(data)), len(data)
        try:
            super().put_if_absent(key, data)
        except PreconditionFailed:
            with _LOCK:
                _count(k, "412", size)
            raise
        digest = hashlib.sha256(data).hexdigest()
        with _LOCK:
            _count(k, "ok", size)
            if k.startswith(("list", "manifest")) and _FIRST_NAME.get(digest, key) != key:
                _count(k, "copy", size)
            _FIRST_NAME.setdefault(digest, key)

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        super().put(key, data)
        size = len(memoryview(data))
        with _LOCK:
            _count(kind(key, size), "put", size)


def report(phase: str, result: dict[str, Any]) -> dict[str, Any]:
    fields = ("commits", "p50_ms", "p99_ms", "bytes_per_commit")
    out: dict[str, Any] = {"phase": phase, **{k: result[k] for k in fields}}
    out["delta_plus_snapshot_per_commit"] = result["delta_plus_snapshot_per_commit"]
    out["ratio"] = result["ratio"]
    by: dict[str, dict[str, int]] = {}
    for (k, outcome, measure), value in sorted(TALLY.items()):
        by.setdefault(f"{k}/{outcome}", {})[measure] = value
    commits = max(1, int(result["commits"]))
    out["bytes_per_commit_by_kind"] = {k: round(v.get("bytes", 0) / commits) for k, v in by.items()}
    out["puts_by_kind"] = {k: v.get("n", 0) for k, v in by.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=1000, help="live files before the phases")
    parser.add_argument("--one", type=int, default=1000, help="commits by one writer")
    parser.add_argument("--four", type=int, default=400, help="commits by four writers")
    parser.add_argument("--dir", help="keep the table here (default: a temporary directory)")
    parser.add_argument("--options", default="{}", help="table options, JSON")
    args = parser.parse_args()
    metadata.LocalStore = TallyStore  # type: ignore[misc]  # the phases open stores through it
    base = Path(args.dir or tempfile.mkdtemp(prefix="lsm3-metadata-tally-"))
    root = str(base / "table")
    try:
        lsm3.create_table(
            root,
            metadata.SCHEMA,
            ["p", "id"],
            partition_by="p",
            buckets=metadata.BUCKETS,
            options=json.loads(args.options),
        )
        counter = metadata.Counter()
        started = time.perf_counter()
        metadata.fill(root, counter, args.live)
        print(json.dumps({"fill_s": round(time.perf_counter() - started, 1)}), flush=True)
        for phase, writers, commits in (("one", 1, args.one), ("four", 4, args.four)):
            if commits:
                TALLY.clear()
                cpu = time.process_time()
                result = metadata.commit_phase(root, counter, writers, commits, 8)
                out = report(phase, result)
                out["cpu_s"] = round(time.process_time() - cpu, 1)
                print(json.dumps(out), flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
