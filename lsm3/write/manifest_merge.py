"""What a commit writes besides its delta manifest: folding the snapshot's tail into a new
manifest list, merging small manifests by size tier, and (compactor commits only) rewriting
manifests that carry many dead entries (docs/FORMAT.md, section 4a).

A writer's commit appends its delta to the parent's tail. Once the tail is longer than
``manifest_merge_threshold`` the commit folds it (and the recent writer records) into a new
manifest list, which then lists the tail's manifests unchanged; only the newest run of small
manifests is merged, when it holds ``manifest_target_entries`` entries or
``manifest_merge_min_count`` manifests. Large manifests are never rewritten by writers, and
their entries in the list move into *parts* (lists the new list names, filled up to
``manifest_list_part_size`` manifests and then left alone), so a commit's work depends on what
recent commits changed, not on the table's size. Remove
entries that point into large manifests are shed only by a compactor commit, which rewrites
all manifests when they make up half of the listed entries (amortised O(1) per removal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsm3.format.keys import key_to_json
from lsm3.format.manifest_list import ManifestList, ManifestMeta
from lsm3.format.metadata import DataFile, ManifestEntry, Snapshot, WriterRecord
from lsm3.format.schema import TableSchema

if TYPE_CHECKING:
    from lsm3.format.manifests import ManifestReader


@dataclass(frozen=True)
class Layout:
    """Where a new snapshot's manifests (with their sequence bases) and writer records live."""

    manifest_list: str | None
    tail: tuple[tuple[str, int], ...]
    writers: dict[str, WriterRecord]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.tail)

    @property
    def offsets(self) -> tuple[int, ...]:
        """The tail's sequence bases, () when all are 0 (as a snapshot stores them)."""
        bases = tuple(b for _, b in self.tail)
        return bases if any(bases) else ()


def merge_entries(runs: Sequence[Sequence[ManifestEntry]]) -> list[ManifestEntry]:
    """One manifest's entries with the effect of replaying ``runs`` in order, after any
    manifests before them. A data file path is added at most once in a table's history
    (names are fresh), so an add and a later remove of one path inside ``runs`` cancel; a
    remove of a path not added inside ``runs`` is kept (it undoes an older manifest's add)."""
    net: dict[str, ManifestEntry] = {}
    for entries in runs:
        for e in entries:
            before = net.get(e.file.path)
            if e.op == "remove" and before is not None and before.op == "add":
                del net[e.file.path]
            else:
                net[e.file.path] = e
    return list(net.values())


def small_suffix_to_merge(
    metas: Sequence[ManifestMeta], target_entries: int, min_count: int
) -> int | None:
    """The index where the run of small manifests (fewer than ``target_entries`` entries)
    at the end of ``metas`` starts, if that run should be merged into one manifest: it
    holds ``target_entries`` entries in all or ``min_count`` manifests. Only a suffix is
    merged, so replay order is kept; large manifests are left alone."""
    start = len(metas)
    while start > 0 and metas[start - 1].entries < target_entries:
        start -= 1
    run = metas[start:]
    if len(run) >= 2 and (sum(m.entries for m in run) >= target_entries or len(run) >= min_count):
        return start
    return None


def fold(
    reader: ManifestReader,
    schema: TableSchema,
    base: Snapshot | None,
    delta: tuple[str, int] | None,
    own: dict[str, WriterRecord],
    reuse_since_ms: int,
) -> Layout:
    """The layout of a new snapshot on ``base`` that adds the manifest ``delta`` (path and
    sequence base) and this commit's writer record ``own``. Its tail is ``base``'s plus the
    delta, unless ``base``'s tail or writer records have reached
    ``manifest_merge_threshold``: then ``base``'s list, tail and records are folded into a
    new list and the tail is the delta alone. The fold depends on ``base`` only, and its
    list and merged manifest are named by their content, so committers racing on one parent
    write them once and a rebase finds them written (docs/FORMAT.md, section 4a), if they
    were written at or after ``reuse_since_ms`` (the commit's oldest upload)."""
    threshold = schema.option("manifest_merge_threshold")
    listed_path = base.manifest_list if base else None
    parent_tail = list(base.tail) if base else []
    writers = dict(base.writers) if base else {}
    mine = (delta,) if delta is not None else ()
    if len(parent_tail) < threshold and len(writers) < threshold:
        return Layout(listed_path, (*parent_tail, *mine), {**writers, **own})
    listed = reader.manifest_list(listed_path) if listed_path else ManifestList(())
    reader.fetch(parent_tail, schema)
    metas = [
        *listed.manifests,
        *(manifest_meta(p, reader.entries(p, schema, b), schema, b) for p, b in parent_tail),
    ]
    metas = merge_small(reader, schema, metas, reuse_since_ms)
    parts, metas = settle(reader, schema, listed.parts, metas, reuse_since_ms)
    folded = ManifestList(tuple(metas), {**listed.writers, **writers}, parts)
    return Layout(reader.write_list(folded, reuse_since_ms), mine, dict(own))


def settle(
    reader: ManifestReader,
    schema: TableSchema,
    parts: Sequence[ManifestMeta],
    metas: Sequence[ManifestMeta],
    reuse_since_ms: int | None,
) -> tuple[tuple[ManifestMeta, ...], list[ManifestMeta]]:
    """Move the manifests before the trailing run of small ones (those a later merge may
    still rewrite) from ``metas`` into the parts (lists of ``manifest_list_part_size``
    manifests; the last part is filled up before a new one starts). A fold then rewrites the
    small manifests' entries and the parts' names, not one entry per large manifest."""
    target = schema.option("manifest_target_entries")
    size = schema.option("manifest_list_part_size")
    start = len(metas)
    while start > 0 and metas[start - 1].entries < target:
        start -= 1
    if start == 0:
        return tuple(parts), list(metas)
    kept = list(parts)
    moved = list(metas[:start])
    if kept:
        last = reader.manifest_list(kept[-1].path).manifests
        if len(last) < size:
            kept.pop()
            moved = [*last, *moved]
    for first in range(0, len(moved), size):
        chunk = tuple(moved[first : first + size])
        path = reader.write_list(ManifestList(chunk), reuse_since_ms)
        removes = sum(m.removes for m in chunk)
        kept.append(ManifestMeta(path, sum(m.entries for m in chunk), removes))
    return tuple(kept), list(metas[start:])


def merge_small(
    reader: ManifestReader,
    schema: TableSchema,
    metas: list[ManifestMeta],
    reuse_since_ms: int | None = None,
) -> list[ManifestMeta]:
    """Merge the small manifests at the end of ``metas`` if the size-tier rule says so."""
    start = small_suffix_to_merge(
        metas,
        schema.option("manifest_target_entries"),
        schema.option("manifest_merge_min_count"),
    )
    if start is None:
        return metas
    run = metas[start:]
    reader.fetch([(m.path, m.seq_base) for m in run], schema)
    # The merged manifest holds effective offsets: its own sequence base is 0.
    merged = merge_entries([reader.entries(m.path, schema, m.seq_base) for m in run])
    if not merged:
        return metas[:start]
    path = reader.write(merged, schema, reuse_since_ms)
    return [*metas[:start], manifest_meta(path, merged, schema)]


def needs_rewrite(listed: ManifestList, live_files: int, target_entries: int) -> bool:
    """True when remove entries (each with the add it cancels) make up half the listed
    entries: then a compactor commit rewrites the manifests to the live files only."""
    removes = sum(m.removes for m in listed.manifests)
    return removes >= target_entries and 4 * removes >= live_files + 2 * removes


def rewrite(
    reader: ManifestReader,
    schema: TableSchema,
    live: Sequence[DataFile],
    writers: dict[str, WriterRecord],
    own: dict[str, WriterRecord],
) -> Layout:
    """A new manifest list of ``add`` entries for exactly the ``live`` files, grouped by
    partition and bucket and cut at ``manifest_target_entries`` (compactor commits only:
    this is O(live files))."""
    target = schema.option("manifest_target_entries")
    ordered = sorted(live, key=lambda f: (repr(f.partition), f.bucket, f.path))
    metas = []
    for start in range(0, len(ordered), target):
        chunk = [ManifestEntry("add", f) for f in ordered[start : start + target]]
        metas.append(manifest_meta(reader.write(chunk, schema), chunk, schema))
    parts, rest = settle(reader, schema, (), metas, None)
    folded = ManifestList(tuple(rest), writers, parts)
    return Layout(reader.write_list(folded), (), dict(own))


def manifest_meta(
    path: str, entries: Sequence[ManifestEntry], schema: TableSchema, seq_base: int = 0
) -> ManifestMeta:
    """A list's description of a manifest: counts, sequence base and partition bounds."""
    removes = sum(1 for e in entries if e.op == "remove")
    low, high = partition_bounds(entries, schema)
    return ManifestMeta(path, len(entries), removes, seq_base, low, high)


def partition_bounds(
    entries: Sequence[ManifestEntry], schema: TableSchema
) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
    """Per partition column, the least and greatest value among ``entries`` (adds and
    removes), as JSON storage values; (None, None) for an unpartitioned table or no entries.
    Storage values compare as Python values compare: integers, UTF-8 strings by code point
    (the same order as their bytes), binary by bytes."""
    if not schema.partition_by or not entries:
        return None, None
    columns = list(zip(*(e.file.partition for e in entries), strict=True))
    types = [schema.arrow.field(k).type for k in schema.partition_by]
    low = tuple(key_to_json([min(c) for c in columns], types))
    high = tuple(key_to_json([max(c) for c in columns], types))
    return low, high
