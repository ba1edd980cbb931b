"""The contenders the runner knows: which script, which venv, which flags, how long.

Adding a contender = one module under bench/contenders/ (a `harness.Contender`
subclass) + one `ContenderSpec` here (+ a requirements file if it needs its own venv).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ContenderSpec:
    name: str
    module: str  # run as `python -m <module>`
    env: str  # "main" (the project's .venv) or a bench/requirements/<env>.txt venv
    args: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # e.g. "slow": excluded by `--skip slow`
    timeout_s: int = 900  # per run; overridable with --timeout
    summary: str = ""


CONTENDERS: dict[str, ContenderSpec] = {
    spec.name: spec
    for spec in (
        ContenderSpec(
            "floor",
            "bench.contenders.floor_bench",
            "main",
            timeout_s=600,
            summary="plain pyarrow: one id-sorted zstd Parquet file per commit, Arrow merge",
        ),
        ContenderSpec(
            "lsm3",
            "bench.contenders.lsm3_bench",
            "main",
            timeout_s=1200,
            summary="lsm3 public API: upsert, apply_cdc + commit, to_arrow, get",
        ),
        ContenderSpec(
            "deltalake",
            "bench.contenders.deltalake_bench",
            "deltalake",
            timeout_s=1200,
            summary="delta-rs: write_deltalake + one MERGE per batch",
        ),
        ContenderSpec(
            "paimon",
            "bench.contenders.paimon_bench",
            "paimon",
            timeout_s=1800,
            summary="pypaimon primary-key table, bucket=1, pure Python",
        ),
        ContenderSpec(
            "paimon-rust",
            "bench.contenders.paimon_bench",
            "paimon",
            args=("--native",),
            timeout_s=1800,
            summary="pypaimon with pypaimon-rust (write/read/commit.native.enabled)",
        ),
        ContenderSpec(
            "iceberg",
            "bench.contenders.iceberg_bench",
            "iceberg",
            tags=("slow",),
            timeout_s=900,
            summary="pyiceberg + SQLite catalog: delete + upsert per batch",
        ),
        ContenderSpec(
            "slatedb",
            "bench.contenders.slatedb_bench",
            "slatedb",
            timeout_s=900,
            summary="slatedb KV: WriteBatch of put/delete per commit, scan, get",
        ),
    )
}
