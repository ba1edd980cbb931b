"""deltalake (delta-rs): initial write, then one MERGE per CDC batch.

MERGE clauses, in order: delete when matched and op = 'd'; update all columns when
matched and op != 'd'; insert when not matched and op != 'd'. delta-rs rewrites
every data file that holds a matched row (copy-on-write); that is what it costs.
Files are written with zstd like every other contender (delta-rs defaults to snappy).
Lookups build the pyarrow dataset once (file stats attached to fragments, so files
are pruned) and run one filtered `to_table` per key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, WriterProperties, write_deltalake

from bench.harness import DATA_COLUMNS, Contender, run


class DeltaLake(Contender):
    name = "deltalake"
    packages = ("deltalake",)

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.path = self.work_dir / "table"
        self.props = WriterProperties(compression="ZSTD")
        self.table: DeltaTable | None = None
        self.dataset: ds.Dataset | None = None
        self.notes.append("MERGE is copy-on-write: matched files are rewritten each commit")

    def setup(self, schema: pa.Schema) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def load_initial(self, table: pa.Table) -> None:
        write_deltalake(str(self.path), table, mode="error", writer_properties=self.props)
        self.table = DeltaTable(str(self.path))

    def apply_batch(self, batch: pa.Table) -> None:
        assert self.table is not None
        values = {c: f"s.{c}" for c in DATA_COLUMNS}
        metrics = (
            self.table.merge(
                batch,
                predicate="t.id = s.id",
                source_alias="s",
                target_alias="t",
                writer_properties=self.props,
            )
            .when_matched_delete(predicate="s.op = 'd'")
            .when_matched_update(updates=values, predicate="s.op != 'd'")
            .when_not_matched_insert(updates=values, predicate="s.op != 'd'")
            .execute()
        )
        rewritten = self.extra.setdefault("files_rewritten", 0)
        self.extra["files_rewritten"] = rewritten + int(metrics.get("num_target_files_removed", 0))

    def read_all(self) -> pa.Table:
        return DeltaTable(str(self.path)).to_pyarrow_table(columns=DATA_COLUMNS)

    def after_read(self, table: pa.Table) -> None:
        fresh = DeltaTable(str(self.path))
        self.extra["version"] = fresh.version()
        self.extra["live_files"] = len(fresh.file_uris())

    def open_lookups(self) -> None:
        self.dataset = DeltaTable(str(self.path)).to_pyarrow_dataset()

    def lookup(self, key: int) -> dict[str, Any] | None:
        assert self.dataset is not None
        hit = self.dataset.to_table(columns=DATA_COLUMNS, filter=ds.field("id") == key)
        return hit.to_pylist()[0] if hit.num_rows else None

    def data_paths(self) -> list[Path]:
        return [self.path]


if __name__ == "__main__":
    raise SystemExit(run(DeltaLake))
