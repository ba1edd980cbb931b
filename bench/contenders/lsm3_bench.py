"""lsm3 through its public API only (runs in the main venv).

create_table -> writer().upsert(initial) -> per batch writer().apply_cdc(op_column="op")
+ commit() -> to_arrow() -> get(key). Like the peers, the read and the lookups use a
fresh handle (`lsm3.open_table`) when the package has one, so nothing cached by the
writing handle flatters them; otherwise they reuse the handle from create_table.
`store_stats()` (object-store request counters) is reported per phase when the
package has it. A missing package or API is reported as "not supported" (with what
is missing) instead of failing the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.harness import DATA_COLUMNS, Contender, NotSupported, run

REQUIRED = ("create_table",)
TABLE_METHODS = ("writer", "to_arrow", "get")


def import_lsm3() -> Any:
    try:
        import lsm3
    except Exception as exc:  # any import-time failure means "not available yet"
        raise NotSupported(f"import lsm3 failed: {type(exc).__name__}: {exc}") from exc
    missing = [name for name in REQUIRED if not hasattr(lsm3, name)]
    if missing:
        raise NotSupported(f"lsm3 API incomplete: missing {', '.join(missing)}")
    return lsm3


def counter_delta(now: Any, before: Any) -> Any:
    """`now - before` for (nested) dicts of numbers, dropping zeros; `now` if not such."""
    if isinstance(now, dict):
        before = before if isinstance(before, dict) else {}
        delta = {k: counter_delta(v, before.get(k)) for k, v in now.items()}
        return {k: v for k, v in delta.items() if v not in (0, {}, None)}
    if isinstance(now, (int, float)) and isinstance(before, (int, float)):
        return now - before
    return now


class Lsm3(Contender):
    name = "lsm3"
    packages = ("lsm3",)

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.uri = str(self.work_dir / "table")
        self.lsm3: Any = None
        self.table: Any = None
        self.last_stats: dict[int, Any] = {}

    def _stats(self, phase: str) -> None:
        """Request counters `phase` spent on the current handle (delta to its last snapshot)."""
        if self.table is None or not hasattr(self.table, "store_stats"):
            return
        stats = self.table.store_stats()
        self.extra[f"store_{phase}"] = counter_delta(stats, self.last_stats.get(id(self.table)))
        self.last_stats[id(self.table)] = stats

    def _fresh_handle(self) -> None:
        if hasattr(self.lsm3, "open_table"):
            self.table = self.lsm3.open_table(self.uri)

    def setup(self, schema: pa.Schema) -> None:
        self.lsm3 = import_lsm3()
        self.table = self.lsm3.create_table(self.uri, schema, primary_key=["id"])
        missing = [name for name in TABLE_METHODS if not hasattr(self.table, name)]
        if missing:
            raise NotSupported(f"lsm3 table API incomplete: missing {', '.join(missing)}")

    def load_initial(self, table: pa.Table) -> None:
        with self.table.writer() as writer:
            writer.upsert(table)

    def apply_batch(self, batch: pa.Table) -> None:
        with self.table.writer() as writer:
            writer.apply_cdc(batch, op_column="op")
            writer.commit()

    def finish_ingest(self) -> None:
        self._stats("ingest")

    def read_all(self) -> pa.Table:
        self._fresh_handle()
        return self.table.to_arrow().select(DATA_COLUMNS)

    def after_read(self, table: pa.Table) -> None:
        self._stats("read")
        self.extra["fresh_handles"] = hasattr(self.lsm3, "open_table")

    def open_lookups(self) -> None:
        self._fresh_handle()
        self._stats("open")

    def lookup(self, key: int) -> dict[str, Any] | None:
        row = self.table.get(key)
        return dict(row) if row is not None else None

    def close(self) -> None:
        self._stats("lookups")

    def data_paths(self) -> list[Path]:
        return [Path(self.uri)]


if __name__ == "__main__":
    raise SystemExit(run(Lsm3))
