"""Seeded CDC workload generator (numpy-vectorised; runs in the `datagen` venv).

Writes, under bench/out/data/<workload>/:
  initial.parquet        the initial load, rows in random order, no `op` column
  batch-000.parquet ...  one file per CDC commit, random order, with `op` in {c,u,d}
  expected.parquet       the final merged table, sorted by id
  keys.parquet           lookup keys: `key`, `present`, `value` (expected value or null)
  workload.json          manifest: spec, files, expected row count + checksum

Ids are even numbers (slot * 2), so odd ids are keys that never existed; deleted
ids are never reused, so "deleted" keys are absent at the end too. Half of the
lookup keys are present, a quarter deleted, a quarter never existed.
Usage: python -m bench.datagen --workload cdc-1m [--force]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.checksum import table_checksum
from bench.workloads import (
    GENERATOR_VERSION,
    WORKLOADS,
    WorkloadSpec,
    get_workload,
    manifest_is_current,
    workload_dir,
)

# Row groups of initial.parquet: the harness streams the initial load group by group, so
# a writer that can take batches never has to hold the whole input.
INITIAL_ROW_GROUP_ROWS = 131_072

ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
NAME_LEN = 16
PAYLOAD_LEN = 64
TS_BASE = 1_767_225_600_000_000  # 2026-01-01 in microseconds
TS_STEP = 3_600_000_000  # one hour between commits
VALUE_STEPS = 4_000_000  # value = k / 4 with k < 4M: exact in float64 and in the checksum

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("ts", pa.int64()),
        ("payload", pa.string()),
    ]
)
BATCH_SCHEMA = SCHEMA.append(pa.field("op", pa.string()))


@dataclasses.dataclass
class State:
    """Current image of every slot ever used; a slot's id is slot * 2."""

    name: np.ndarray  # (slots, NAME_LEN) uint8
    value: np.ndarray  # float64
    ts: np.ndarray  # int64
    payload: np.ndarray  # (slots, PAYLOAD_LEN) uint8
    alive: np.ndarray  # bool
    deleted: np.ndarray  # bool: was alive once, deleted since
    next_slot: int


def random_text(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    """(rows, width) uint8 matrix of random [a-z0-9] characters."""
    return ALPHABET[rng.integers(0, ALPHABET.size, size=(rows, width), dtype=np.uint8)]


def text_array(chars: np.ndarray) -> pa.Array:
    """Fixed-width character matrix to an Arrow string array, without per-row Python."""
    rows, width = chars.shape
    offsets = np.arange(rows + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(chars).tobytes()
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))


def random_values(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.integers(0, VALUE_STEPS, size=rows).astype(np.float64) / 4.0


def random_ts(rng: np.random.Generator, rows: int, commit: int) -> np.ndarray:
    """Event times inside commit `commit`'s hour (commit 0 is the initial load)."""
    return TS_BASE + commit * TS_STEP + rng.integers(0, TS_STEP, size=rows, dtype=np.int64)


def initial_state(spec: WorkloadSpec, rng: np.random.Generator) -> State:
    _, inserts, _ = spec.counts()
    slots = spec.initial_rows + spec.batches * inserts
    state = State(
        name=np.zeros((slots, NAME_LEN), dtype=np.uint8),
        value=np.zeros(slots, dtype=np.float64),
        ts=np.zeros(slots, dtype=np.int64),
        payload=np.zeros((slots, PAYLOAD_LEN), dtype=np.uint8),
        alive=np.zeros(slots, dtype=bool),
        deleted=np.zeros(slots, dtype=bool),
        next_slot=0,
    )
    insert_rows(state, rng, spec.initial_rows, commit=0)
    return state


def insert_rows(state: State, rng: np.random.Generator, rows: int, commit: int) -> np.ndarray:
    """Fill `rows` fresh slots with new random rows; return the slots."""
    slots = np.arange(state.next_slot, state.next_slot + rows)
    state.next_slot += rows
    state.name[slots] = random_text(rng, rows, NAME_LEN)
    state.payload[slots] = random_text(rng, rows, PAYLOAD_LEN)
    state.value[slots] = random_values(rng, rows)
    state.ts[slots] = random_ts(rng, rows, commit)
    state.alive[slots] = True
    return slots


def update_rows(state: State, rng: np.random.Generator, slots: np.ndarray, commit: int) -> None:
    """A CDC update: new value, ts and payload; the name is kept (a partial change)."""
    state.value[slots] = random_values(rng, slots.size)
    state.ts[slots] = random_ts(rng, slots.size, commit)
    state.payload[slots] = random_text(rng, slots.size, PAYLOAD_LEN)


def rows_table(state: State, slots: np.ndarray, op: np.ndarray | None = None) -> pa.Table:
    """Arrow table of the current image of `slots` (plus an `op` column if given)."""
    arrays = [
        pa.array(slots.astype(np.int64) * 2),
        text_array(state.name[slots]),
        pa.array(state.value[slots]),
        pa.array(state.ts[slots]),
        text_array(state.payload[slots]),
    ]
    if op is None:
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
    return pa.Table.from_arrays([*arrays, pa.array(op)], schema=BATCH_SCHEMA)


def cdc_batch(spec: WorkloadSpec, state: State, rng: np.random.Generator, commit: int) -> pa.Table:
    """Draw one batch against the live set, apply it to `state`, return it shuffled.

    Deletes carry the row's before-image, like Debezium's delete events.
    """
    n_upd, n_ins, n_del = spec.counts()
    live = np.flatnonzero(state.alive)
    picked = live[rng.choice(live.size, size=n_upd + n_del, replace=False)]
    upd, dele = picked[:n_upd], picked[n_upd:]
    delete_image = rows_table(state, dele, np.full(n_del, "d", dtype=object))
    update_rows(state, rng, upd, commit)
    state.alive[dele] = False
    state.deleted[dele] = True
    ins = insert_rows(state, rng, n_ins, commit)
    changed = rows_table(
        state,
        np.concatenate([upd, ins]),
        np.repeat(np.array(["u", "c"], dtype=object), [n_upd, n_ins]),
    )
    batch = pa.concat_tables([changed, delete_image])
    return batch.take(pa.array(rng.permutation(batch.num_rows)))


def lookup_keys(spec: WorkloadSpec, state: State, rng: np.random.Generator) -> pa.Table:
    """Half present keys, a quarter deleted, a quarter never-existed (odd) ids; shuffled."""
    n_present = spec.lookups // 2
    n_deleted = min(spec.lookups // 4, int(state.deleted.sum()))
    n_never = spec.lookups - n_present - n_deleted
    present = rng.choice(np.flatnonzero(state.alive), size=n_present, replace=False)
    deleted = rng.choice(np.flatnonzero(state.deleted), size=n_deleted, replace=False)
    never = rng.choice(state.next_slot, size=n_never, replace=False) * 2 + 1
    keys = np.concatenate([present * 2, deleted * 2, never]).astype(np.int64)
    values = np.concatenate([state.value[present], np.full(n_deleted + n_never, np.nan)])
    order = rng.permutation(keys.size)
    return pa.table(
        {
            "key": pa.array(keys[order]),
            "present": pa.array(np.arange(keys.size)[order] < n_present),
            "value": pa.array(values[order], mask=np.isnan(values[order])),
        }
    )


def write_parquet(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    pq.write_table(table, path, compression="zstd", row_group_size=row_group_size)


def generate(spec: WorkloadSpec, out: Path) -> dict[str, Any]:
    """Generate every file of `spec` into `out` and return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    state = initial_state(spec, rng)
    initial = rows_table(state, np.arange(spec.initial_rows))
    write_parquet(
        initial.take(pa.array(rng.permutation(spec.initial_rows))),
        out / "initial.parquet",
        INITIAL_ROW_GROUP_ROWS,
    )
    del initial
    batch_files = []
    live_rows = [spec.initial_rows]  # live rows after the initial load and after each commit
    width = max(3, len(str(spec.batches - 1)))
    for commit in range(1, spec.batches + 1):
        name = f"batch-{commit - 1:0{width}d}.parquet"
        write_parquet(cdc_batch(spec, state, rng, commit), out / name)
        batch_files.append(name)
        live_rows.append(live_rows[-1] + spec.counts()[1] - spec.counts()[2])
    expected = rows_table(state, np.flatnonzero(state.alive))
    write_parquet(expected, out / "expected.parquet")
    keys = lookup_keys(spec, state, rng)
    write_parquet(keys, out / "keys.parquet")
    manifest = {
        "workload": spec.name,
        "spec": spec.to_json(),
        "generator_version": GENERATOR_VERSION,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {
            "initial": "initial.parquet",
            "batches": batch_files,
            "expected": "expected.parquet",
            "keys": "keys.parquet",
        },
        "expected": table_checksum(expected),
        "live_rows": live_rows,
        "input_bytes": sum((out / f).stat().st_size for f in ["initial.parquet", *batch_files]),
        "lookups": {"keys": keys.num_rows, "present": int(pc.sum(keys.column("present")).as_py())},
    }
    (out / "workload.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="cdc-1m", help=f"one of {', '.join(WORKLOADS)}")
    parser.add_argument("--scale", type=float, default=1.0, help="see bench/workloads.py")
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    spec = get_workload(args.workload, args.scale)
    if manifest_is_current(spec) and not args.force:
        print(f"{spec.name}: cached in {workload_dir(spec.name)}")
        return 0
    started = time.perf_counter()
    manifest = generate(spec, workload_dir(spec.name))
    took = time.perf_counter() - started
    print(
        f"{spec.name}: generated in {took:.1f}s, expected {manifest['expected']}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
