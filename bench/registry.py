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
    timeout_s: int = 900  # per run (all three processes); overridable with --timeout
    summary: str = ""
    kinds: tuple[str, ...] = ("cdc", "stream")  # workload kinds it runs by default


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
            summary="lsm3 public API: upsert, apply_cdc + commit, to_arrow, get; "
            "compactor (universal between stream commits, full after the read)",
        ),
        ContenderSpec(
            "lsm3-leveled",
            "bench.contenders.lsm3_bench",
            "main",
            args=("--policy", "leveled"),
            tags=("policies",),
            timeout_s=1200,
            summary="lsm3 with the leveled compaction policy between stream commits",
            kinds=("stream",),
        ),
        ContenderSpec(
            "lsm3-full",
            "bench.contenders.lsm3_bench",
            "main",
            args=("--policy", "full"),
            tags=("policies",),
            timeout_s=1200,
            summary="lsm3 with the full compaction policy between stream commits",
            kinds=("stream",),
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
