"""What the row-group size costs a merged read and buys a point lookup, on a table's data.

Rewrites the live runs of a local lsm3 table (in memory, as lsm3 writes them: zstd, no
dictionary, page CRCs) at several row-group sizes, then times decoding all of them (Arrow's
threads, as a whole-run read) and decoding one row group (what a lookup that hits pays).
Usage: ``python -m bench.rowgroups TABLE_DIR [--sizes 4096,16384,65536]``
(a table: ``python -m bench.profile --workload cdc-1m --what initial,cdc --work-dir DIR``
leaves one in DIR/table).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

import lsm3


def median_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(runs: list[pa.Table], size: int) -> tuple[float, float]:
    """(ms to decode every run, ms to decode one row group) at ``size`` rows per group."""
    bodies = []
    for run in runs:
        sink = io.BytesIO()
        pq.write_table(
            run, sink, row_group_size=size, compression="zstd", use_dictionary=False,
            write_page_checksum=True,
        )  # fmt: skip
        bodies.append(pa.py_buffer(sink.getvalue()))

    def decode_all() -> None:
        for body in bodies:
            pq.read_table(pa.BufferReader(body), page_checksum_verification=True)

    largest = pq.ParquetFile(
        pa.BufferReader(max(bodies, key=lambda b: b.size)), page_checksum_verification=True
    )
    groups = min(20, largest.num_row_groups)

    def decode_groups() -> None:
        for i in range(groups):
            largest.read_row_group(i, use_threads=False)

    return median_ms(decode_all), median_ms(decode_groups) / groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table_dir")
    parser.add_argument("--sizes", default="4096,16384,65536")
    args = parser.parse_args()
    files = lsm3.open_table(args.table_dir).files()
    runs = [pq.read_table(os.path.join(args.table_dir, f.path)) for f in files]
    print(f"{len(runs)} runs, {sum(r.num_rows for r in runs):,} stored rows")
    for size in (int(s) for s in args.sizes.split(",")):
        decode, one = measure(runs, size)
        print(
            f"row groups of {size:>6} rows: decode all runs {decode:6.0f} ms, "
            f"one row group {one:5.2f} ms"
        )


if __name__ == "__main__":
    main()
