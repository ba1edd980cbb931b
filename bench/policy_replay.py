"""Replay the stream workload through lsm3 and its compactor in memory, to compare policy options.

Writes the workload's initial rows and CDC batches to a ``memory://`` table, runs
``compactor.compact`` every ``--compact-every`` commits, and prints the LSM write
amplification ((bytes written by commits + bytes written by compactions) / bytes written by
commits, as RESULTS.md computes it), the most sorted runs a bucket held after a commit, and
the bytes compactions wrote by reason. Deterministic for a given workload and options, and
far quicker than the full benchmark (no subprocesses, no disk): a policy change can be
measured before the stream benchmark confirms it.

Usage: python -m bench.policy_replay [--workload stream] [--commits N] [--compact-every 4]
                                     [--option key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import uuid
from collections import Counter

import pyarrow.parquet as pq

import lsm3
from bench.workloads import get_workload, load_manifest, workload_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="stream")
    parser.add_argument("--commits", type=int, default=None, help="default: every batch")
    parser.add_argument("--compact-every", type=int, default=4)
    parser.add_argument("--policy", default="universal")
    parser.add_argument("--option", action="append", default=[], help="table option key=value")
    parser.add_argument(
        "--trace", action="store_true", help="print each compaction's picks and run sizes"
    )
    args = parser.parse_args(argv)
    import compactor

    logging.disable(logging.WARNING)  # write-stall warnings are expected between compactions
    spec = get_workload(args.workload)
    data = workload_dir(spec.name)
    manifest = load_manifest(data)
    options: dict[str, object] = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    initial = pq.read_table(data / manifest["files"]["initial"])
    table = lsm3.create_table(
        f"memory://replay-{uuid.uuid4().hex}", initial.schema, primary_key=["id"], options=options
    )

    def put_bytes() -> int:
        return table.store.stats.snapshot()["bytes"]["PUT"]

    with table.writer() as writer:
        writer.upsert(initial)
    committed, compacted, max_runs = put_bytes(), Counter[str](), 0
    for i, name in enumerate(manifest["files"]["batches"][: args.commits]):
        before = put_bytes()
        with table.writer() as writer:
            writer.apply_cdc(pq.read_table(data / name), op_column="op")
        committed += put_bytes() - before
        files = table.files()
        runs = sum(f.level == 0 for f in files) + len({f.level for f in files if f.level > 0})
        max_runs = max(max_runs, runs)
        if (i + 1) % args.compact_every == 0:
            before = put_bytes()
            result = compactor.compact(table, policy=args.policy)
            reasons = sorted({t.reason for t in result.tasks}) or ["none"]
            compacted["+".join(reasons)] += put_bytes() - before
            if args.trace:
                print(
                    f"commit {i + 1}: {' '.join(reasons)} -> runs (newest first, kB): "
                    f"{_run_sizes_kb(table.files())}"
                )
    amp = (committed + sum(compacted.values())) / committed
    print(
        f"options {options or 'defaults'}: write amplification {amp:.2f}, "
        f"max sorted runs {max_runs}"
    )
    for reason, nbytes in sorted(compacted.items()):
        print(f"  compactions ({reason}): {nbytes / 1e6:.1f} MB written")
    return 0


def _run_sizes_kb(files: list[lsm3.FileInfo]) -> str:
    """Sorted runs, newest first, as ``L<level>:<kB>`` (level-0 runs: one flush, one seq)."""
    level0: dict[int, int] = {}
    levels: dict[int, int] = {}
    for f in files:
        if f.level == 0:
            level0[f.max_seq] = level0.get(f.max_seq, 0) + f.bytes
        else:
            levels[f.level] = levels.get(f.level, 0) + f.bytes
    runs = [f"L0:{level0[seq] // 1000}" for seq in sorted(level0, reverse=True)]
    runs += [f"L{level}:{levels[level] // 1000}" for level in sorted(levels)]
    return " ".join(runs)


if __name__ == "__main__":
    raise SystemExit(main())
