"""Scan planning by file statistics (``files_matching``): sharing one decision among files of
the same partition and first-key range, or among the files of a partition when the filter
does not reference the first key column, keeps exactly the files that deciding file by file
keeps."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import lsm3
from lsm3.format.metadata import DataFile
from lsm3.read.scan import files_matching, guarantees_kept, typed_array
from tests.test_manifest_lists import synthetic

FILTERS = [
    pc.field("p") == 1,
    pc.field("id") == 5,
    (pc.field("p") == 2) & (pc.field("id") > 40),
    pc.field("id").isin([3, 70]),
    pc.field("v") == "x",
    (pc.field("p") >= 2) | (pc.field("v") == "x"),
]


def one_by_one(table: lsm3.Table, files: list[DataFile], expr: pc.Expression) -> set[str]:
    """The reference: one guarantee per file, as the planner did before."""
    schema = table.table_schema
    key0 = schema.primary_key[0]
    t = schema.arrow.field(key0).type
    guarantees = []
    for f in files:
        g = (pc.field(key0) >= typed_array(t, f.min_key[0])[0]) & (
            pc.field(key0) <= typed_array(t, f.max_key[0])[0]
        )
        for name, value in zip(schema.partition_by, f.partition, strict=True):
            g = g & (pc.field(name) == typed_array(schema.arrow.field(name).type, value)[0])
        guarantees.append(g)
    return {files[i].path for i in guarantees_kept(schema, guarantees, expr)}


@pytest.mark.parametrize("key", [["p", "id"], ["id", "p"]], ids=["partition-first", "id-first"])
@pytest.mark.parametrize("seed", range(3))
def test_shared_decisions_keep_what_per_file_decisions_keep(key: list[str], seed: int) -> None:
    rng = random.Random(seed)
    schema = pa.schema([("p", pa.int64()), ("id", pa.int64()), ("v", pa.string())])
    table = lsm3.create_table(f"memory://{uuid.uuid4().hex}", schema, key, partition_by="p")
    files = []
    for i in range(200):
        p, lo = rng.randint(0, 3), rng.randint(0, 90)
        hi = lo + rng.choice([0, 0, 5, 30])
        bounds = ((p, lo), (p, hi)) if key[0] == "p" else ((lo, p), (hi, p))
        files.append(replace(synthetic(i), partition=(p,), min_key=bounds[0], max_key=bounds[1]))
    for expr in FILTERS:
        got = {f.path for f in files_matching(table.table_schema, files, expr)}
        assert got == one_by_one(table, files, expr), expr
