"""Order-independent checksum of a final table, identical across pyarrow versions.

The generator stores it for the expected table and every contender computes it on
what it reads back. It uses only integer sums that cannot overflow int64, so the
result is exact whatever the row order, chunking or summation order; this is why
the generator makes every `value` a multiple of 0.25 (exact as an integer times 4).
Requires pyarrow but not numpy (the main venv has no numpy).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Masks keep each factor below 2**20, so a product is below 2**40 and a sum of
# fewer than 2**23 products stays below 2**63.
_MASK = (1 << 20) - 1


def _int_sum(array: pa.ChunkedArray | pa.Array) -> int:
    value = pc.sum(array).as_py()
    return int(value) if value is not None else 0


def _masked(array: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.bit_wise_and(array, pa.scalar(_MASK, pa.int64()))


def table_checksum(table: pa.Table) -> dict[str, Any]:
    """Row count, distinct ids and exact id/value/ts/string sums, plus a short digest.

    Two tables with the same rows (in any order) get the same digest; a row with the
    wrong value, ts, a lost/duplicated row or a truncated string changes it.
    """
    ids = pc.cast(table.column("id"), pa.int64())
    ts = pc.cast(table.column("ts"), pa.int64())
    value4 = pc.multiply(pc.cast(table.column("value"), pa.float64()), 4.0)
    exact = table.num_rows == 0 or bool(pc.all(pc.equal(value4, pc.floor(value4))).as_py())
    value4_int = pc.cast(pc.floor(value4), pa.int64())
    detail: dict[str, Any] = {
        "rows": table.num_rows,
        "distinct_ids": int(pc.count_distinct(ids).as_py()),
        "sum_id": _int_sum(ids),
        "sum_value4": _int_sum(value4_int),
        "values_exact": exact,
        "mix_id_value": _int_sum(pc.multiply(_masked(ids), _masked(value4_int))),
        "mix_id_ts": _int_sum(pc.multiply(_masked(ids), _masked(ts))),
        "string_bytes": _int_sum(pc.binary_length(table.column("name")))
        + _int_sum(pc.binary_length(table.column("payload"))),
    }
    digest = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()[:16]
    return {"rows": table.num_rows, "checksum": digest, "detail": detail}


class StreamingChecksum:
    """The same sums as `table_checksum`, accumulated batch by batch in constant memory.

    Everything but `distinct_ids` (which needs every id at once) is exact; `matches`
    compares with the expected detail, leaving distinct ids to the full read's check.
    """

    def __init__(self) -> None:
        self.detail: dict[str, Any] = {
            "rows": 0,
            "sum_id": 0,
            "sum_value4": 0,
            "values_exact": True,
            "mix_id_value": 0,
            "mix_id_ts": 0,
            "string_bytes": 0,
        }

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        part = table_checksum(
            pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        )["detail"]
        for key, value in part.items():
            if key == "values_exact":
                self.detail[key] = self.detail[key] and value
            elif key in self.detail:
                self.detail[key] += value

    def matches(self, expected_detail: dict[str, Any]) -> bool:
        return all(expected_detail.get(k) == v for k, v in self.detail.items())
