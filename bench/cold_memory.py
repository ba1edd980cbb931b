"""How much fresh memory costs on this machine: one merged read of a table, in a new process,
right after another process touched (and freed) 1.5 GiB, and after the machine sat idle.

On a virtual machine that hands free memory back to its host, a page touched for the first
time after a few idle seconds is slow to fault in; pages a process freed a moment ago are
not. Benchmark phases run in fresh processes, one after the other, so a phase that follows a
phase with a large footprint is flattered. Usage:
``python -m bench.cold_memory TABLE_URI [--idle-s 15] [--rounds 2]``
(a table: ``python -m bench.profile --workload cdc-1m --what initial,cdc --work-dir DIR``
leaves one in DIR/table).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.run import warm_memory

READ = (
    "import sys, time, lsm3; t = lsm3.open_table(sys.argv[1]); s = time.perf_counter(); "
    "t.to_arrow(); print(f'{time.perf_counter() - s:.2f}')"
)


def read_seconds(uri: str) -> str:
    out = subprocess.run([sys.executable, "-c", READ, uri], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri")
    parser.add_argument("--idle-s", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.rounds):
        warm_memory(1.5)
        print(f"read right after a process touched 1.5 GiB: {read_seconds(args.uri)} s")
        time.sleep(args.idle_s)
        print(f"read after {args.idle_s:g} s idle: {read_seconds(args.uri)} s")


if __name__ == "__main__":
    main()
