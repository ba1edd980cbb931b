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
GENERATOR_VERSION = 1

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
    """

    name: str
    initial_rows: int
    batches: int
    batch_rows: int
    update_frac: float = 0.7
    insert_frac: float = 0.2
    delete_frac: float = 0.1
    lookups: int = 1000
    seed: int = 20_260_101
    smoke: bool = False  # smoke workloads check plumbing; they are kept out of RESULTS.md
    description: str = ""

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
            "(70% update, 20% insert, 10% delete).",
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
    )
}


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
