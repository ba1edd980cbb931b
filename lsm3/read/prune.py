"""Partition pruning of manifests: the live files a filtered scan needs, from only the
manifests whose partition bounds the filter admits (docs/FORMAT.md, section 4a).

A manifest list gives each manifest the per-column bounds of the partitions of its entries.
A scan whose filter is false for every partition inside a manifest's bounds needs none of its
entries, so it does not fetch it. Replaying the others is exact except for a file whose
``remove`` sits in a skipped manifest; such a file's partition lies inside that manifest's
bounds, where the filter is false, so it is dropped, like every file there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lsm3.format.keys import key_from_json
from lsm3.format.manifest_list import ManifestMeta
from lsm3.format.manifests import ManifestReader
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.format.schema import TableSchema
from lsm3.read.scan import guarantees_kept, typed_array

Box = tuple[tuple[Any, ...], tuple[Any, ...]]


def admitted(schema: TableSchema, boxes: Sequence[Box | None], expr: pc.Expression) -> list[bool]:
    """For each box of partition values (per-column least and greatest storage values; None:
    unknown), whether ``expr`` may hold for a row of a partition inside it. Arrow's expression
    simplification decides, as for files in ``files_matching``; when it cannot reason about
    the types or the expression, every box is admitted."""
    known = [i for i, b in enumerate(boxes) if b is not None]
    out = [True] * len(boxes)
    if not known:
        return out
    types = [schema.arrow.field(c).type for c in schema.partition_by]
    try:
        guarantees = []
        for i in known:
            low, high = boxes[i]  # type: ignore[misc]
            g = pc.scalar(True)
            for name, t, lo, hi in zip(schema.partition_by, types, low, high, strict=True):
                field = pc.field(name)
                if lo == hi:
                    g = g & (field == typed_array(t, lo)[0])
                else:
                    g = g & (field >= typed_array(t, lo)[0]) & (field <= typed_array(t, hi)[0])
            guarantees.append(g)
        kept = {known[i] for i in guarantees_kept(schema, guarantees, expr)}
    except (pa.ArrowException, TypeError, ValueError):
        return out
    for i in known:
        out[i] = i in kept
    return out


def meta_box(schema: TableSchema, meta: ManifestMeta) -> Box | None:
    """A listed manifest's partition bounds as storage values (None: unknown)."""
    if meta.partition_min is None or meta.partition_max is None or not schema.partition_by:
        return None
    types = [schema.arrow.field(c).type for c in schema.partition_by]
    return key_from_json(list(meta.partition_min), types), key_from_json(
        list(meta.partition_max), types
    )


def live_files_for(
    reader: ManifestReader,
    snapshot: Snapshot | None,
    schema: TableSchema,
    expr: pc.Expression | None,
) -> list[DataFile]:
    """The live files of ``snapshot`` in every partition where ``expr`` may hold (all live
    files when nothing can be pruned), fetching only the manifests that can hold them."""
    if snapshot is None or expr is None or not schema.partition_by:
        return reader.live_files(snapshot, schema)
    if snapshot.manifest_list is None or reader.has_live(snapshot):
        return reader.live_files(snapshot, schema)
    listed = reader.listed(snapshot)
    boxes = [meta_box(schema, m) for m in listed.manifests]
    keep = admitted(schema, boxes, expr)
    if all(keep):
        return reader.live_files(snapshot, schema)
    kept = [(m.path, m.seq_base) for m, k in zip(listed.manifests, keep, strict=True) if k]
    live = reader.replay([*kept, *snapshot.tail], schema)
    skipped = [b for b, k in zip(boxes, keep, strict=True) if not k and b is not None]
    inside: dict[tuple[Any, ...], bool] = {}
    out = []
    for f in live.values():
        drop = inside.get(f.partition)
        if drop is None:
            drop = inside[f.partition] = any(_in_box(f.partition, b) for b in skipped)
        if not drop:
            out.append(f)
    return out


def _in_box(partition: tuple[Any, ...], box: Box) -> bool:
    low, high = box
    return all(lo <= v <= hi for v, lo, hi in zip(partition, low, high, strict=True))
