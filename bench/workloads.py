"""Workload definitions, shared by the runner, the generator and every contender.

Standard library only: this module is imported from every benchmark virtualenv.
A workload is pure data (sizes, mix, seed); bench/datagen.py turns it into files
once, and all contenders then read the very same files, so differences in the
results come from the contenders and never from their inputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# Bump when the generator's output for the same spec changes, so stale caches are rebuilt.
# 2: initial.parquet in 131,072-row row groups (streamed input), live row counts per commit.
GENERATOR_VERSION = 2

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
DATA_DIR = OUT_DIR / "data"

SCHEMA_DOC = "id int64 (primary key), name string(16), value float64, ts int64, payload string(64)"


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """One CDC workload: an initial load followed by `batches` commits of mixed changes.

    Fractions are of `batch_rows`; ids within one batch are unique (an id is updated,
    inserted or deleted at most once per batch), so MERGE-style peers see no
    ambiguous matches and every contender has one well-defined final state.

    kind "cdc": a few large commits; the read phase also compacts fully and reads again.
    kind "stream": many small commits with the compactor (lsm3: the chosen policy; peers:
    their own maintenance, if any) run every `compact_every` commits during ingest.
    `scalable` workloads shrink their commit count and lookups with `--scale`.
    """

    name: str
    initial_rows: int
    batches: int
    batch_rows: int
    update_frac: float = 0.7
    insert_frac: float = 0.2
    delete_frac: float = 0.1
    lookups: int = 10_000
    seed: int = 20_260_101
    smoke: bool = False  # smoke workloads check plumbing; they are kept out of RESULTS.md
    description: str = ""
    kind: str = "cdc"  # "cdc" or "stream"
    compact_every: int = 0  # stream: run the compactor after every N commits (0: never)

    @property
    def records(self) -> int:
        """Records written in total: the initial rows plus every CDC record."""
        return self.initial_rows + self.batches * self.batch_rows

    def scaled(self, scale: float) -> WorkloadSpec:
        """This workload with commits (streams only) and lookups times `scale`.

        A scaled workload is its own (smoke) workload with its own files and results, named
        `<name>-x<scale>`, so a quick run never mixes with the real figures.
        """
        if scale == 1:
            return self
        batches = max(2, round(self.batches * scale)) if self.kind == "stream" else self.batches
        return dataclasses.replace(
            self,
            name=f"{self.name}-x{scale:g}",
            batches=batches,
            lookups=max(100, round(self.lookups * scale)),
            smoke=True,
            description=f"{self.description} Scaled by {scale:g} (commits of streams, lookups).",
        )

    def counts(self) -> tuple[int, int, int]:
        """Per-batch (updates, inserts, deletes); rounding slack goes to updates."""
        inserts = round(self.batch_rows * self.insert_frac)
        deletes = round(self.batch_rows * self.delete_frac)
        return self.batch_rows - inserts - deletes, inserts, deletes

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


WORKLOADS: dict[str, WorkloadSpec] = {
    spec.name: spec
    for spec in (
        WorkloadSpec(
            name="cdc-1m",
            initial_rows=1_000_000,
            batches=10,
            batch_rows=100_000,
            description="1M-row initial load, then 10 CDC commits of 100k records "
            "(70% update, 20% insert, 10% delete); 10,000 point lookups.",
        ),
        WorkloadSpec(
            name="cdc-10m",
            initial_rows=10_000_000,
            batches=10,
            batch_rows=100_000,
            description="The same at 10M initial rows: 10 CDC commits of 100k records "
            "(70% update, 20% insert, 10% delete); 10,000 point lookups.",
        ),
        WorkloadSpec(
            name="stream",
            initial_rows=100_000,
            batches=1_000,
            batch_rows=1_000,
            lookups=2_000,
            kind="stream",
            compact_every=4,
            description="Streaming: a 100k-row table, then 1,000 commits of 1,000 records "
            "(70% update, 20% insert, 10% delete), the compactor run every 4 commits.",
        ),
        WorkloadSpec(
            name="cdc-small",
            initial_rows=20_000,
            batches=3,
            batch_rows=2_000,
            lookups=200,
            smoke=True,
            description="Smoke test of the plumbing: 20k rows, 3 commits of 2k records.",
        ),
        WorkloadSpec(
            name="stream-small",
            initial_rows=5_000,
            batches=30,
            batch_rows=200,
            lookups=200,
            smoke=True,
            kind="stream",
            compact_every=4,
            description="Smoke test of the streaming plumbing: 5k rows, 30 commits of 200.",
        ),
    )
}


def get_workload(name: str, scale: float = 1.0) -> WorkloadSpec:
    """The spec called `name` (a base name, or an already scaled `<name>-x<scale>`)."""
    if name in WORKLOADS:
        return WORKLOADS[name].scaled(scale)
    base, _, factor = name.rpartition("-x")
    if base in WORKLOADS:
        return WORKLOADS[base].scaled(float(factor) * scale)
    raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def workload_dir(name: str) -> Path:
    """Cache directory holding one workload's generated files."""
    return DATA_DIR / name


def manifest_path(name: str) -> Path:
    return workload_dir(name) / "workload.json"


def load_manifest(directory: Path) -> dict[str, Any]:
    """Read the generator's manifest (file names, expected result, spec)."""
    with open(directory / "workload.json", encoding="utf-8") as fh:
        manifest: dict[str, Any] = json.load(fh)
    return manifest


def manifest_is_current(spec: WorkloadSpec) -> bool:
    """True when the cached files were produced from this exact spec and generator."""
    path = manifest_path(spec.name)
    if not path.exists():
        return False
    manifest = load_manifest(path.parent)
    return bool(
        manifest.get("generator_version") == GENERATOR_VERSION
        and manifest.get("spec") == spec.to_json()
    )
