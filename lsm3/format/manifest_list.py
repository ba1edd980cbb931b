"""Manifest lists: the immutable object a format-version-2 snapshot points at (docs/FORMAT.md,
section 4a).

A manifest list names the manifests that hold a snapshot's older entries, in replay order,
with their entry counts (so a committer can merge small ones by size tier without reading
the large ones), and the records of every named writer as of the list. Snapshots reuse one
list until a commit folds its tail of recent delta manifests into a new one, so a snapshot
stays small however long the table's history.

A list may also name *parts* (version 3): other lists whose manifests come before its own.
A fold rewrites the list that names the newest, small manifests and keeps the parts, which
hold the large manifests and change rarely, so a fold costs what recently changed, not one
entry per large manifest of the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lsm3.errors import CorruptMetadata
from lsm3.format.metadata import (
    WriterRecord,
    check_header,
    check_relative_path,
    load_json,
    metadata_int,
    seq_base,
    writers_from_json,
    writers_to_json,
)

MANIFEST_LIST_FORMAT = "lsm3-manifest-list"
#: A list that gives a manifest a non-zero ``seq_base`` is version 2 (section 4b); readers of
#: version 1 would ignore the base, so they must refuse it. A list with parts is version 3
#: (older readers would see only its own manifests). Others stay version 1.
MANIFEST_LIST_VERSION = 3
#: Lists are the only objects a list's ``parts`` may name.
LIST_PREFIX = "manifest/list-"


@dataclass(frozen=True)
class ManifestMeta:
    """One manifest of a list: its path, how many entries it holds and how many of them are
    ``remove`` entries (what a merge or a rewrite would shed), the sequence base added to
    its entries' ``seq_offset`` (section 4b), and the per-column least and greatest
    partition values of its entries (JSON storage values; None: unknown), which let a scan
    that prunes partitions skip the manifest."""

    path: str
    entries: int
    removes: int = 0
    seq_base: int = 0
    partition_min: tuple[Any, ...] | None = None
    partition_max: tuple[Any, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "entries": self.entries, "removes": self.removes}
        if self.seq_base:
            out["seq_base"] = self.seq_base
        if self.partition_min is not None and self.partition_max is not None:
            out["partition_min"] = list(self.partition_min)
            out["partition_max"] = list(self.partition_max)
        return out

    @staticmethod
    def from_json(m: dict[str, Any], what: str) -> ManifestMeta:
        low, high = m.get("partition_min"), m.get("partition_max")
        if (low is None) != (high is None) or not all(
            x is None or isinstance(x, list) for x in (low, high)
        ):
            raise CorruptMetadata(f"{what}: partition_min and partition_max must be lists")
        return ManifestMeta(
            check_relative_path(m["path"], "manifest/", what),
            metadata_int(m["entries"]),
            metadata_int(m.get("removes", 0)),
            seq_base(m.get("seq_base", 0)),
            None if low is None else tuple(low),
            None if high is None else tuple(high),
        )


@dataclass(frozen=True)
class ManifestList:
    """The manifests before a snapshot's tail, and the writer records folded with them.
    ``parts``: lists whose manifests come first, in order (their ``entries`` and ``removes``
    are sums over their manifests, their ``seq_base`` 0; a part names no parts itself)."""

    manifests: tuple[ManifestMeta, ...]
    writers: dict[str, WriterRecord] = field(default_factory=dict)
    parts: tuple[ManifestMeta, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(m.path for m in self.manifests)

    def encode(self) -> bytes:
        version = 3 if self.parts else 2 if any(m.seq_base for m in self.manifests) else 1
        doc: dict[str, Any] = {"format": MANIFEST_LIST_FORMAT, "format_version": version}
        if self.parts:
            doc["parts"] = [m.to_json() for m in self.parts]
        doc["manifests"] = [m.to_json() for m in self.manifests]
        doc["writers"] = writers_to_json(self.writers)
        return json.dumps(doc, separators=(",", ":")).encode()

    @staticmethod
    def decode(raw: bytes, what: str) -> ManifestList:
        doc = load_json(raw, what)
        check_header(doc, MANIFEST_LIST_FORMAT, what, MANIFEST_LIST_VERSION)
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise CorruptMetadata(f"{what} has no manifests list")
        parts = doc.get("parts", [])
        if not isinstance(parts, list):
            raise CorruptMetadata(f"{what}: parts must be a list")
        try:
            metas = tuple(ManifestMeta.from_json(m, what) for m in items)
            writers = writers_from_json(doc.get("writers") or {}, what)
            named = tuple(ManifestMeta.from_json(m, what) for m in parts)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CorruptMetadata(f"{what} is malformed: {exc}") from None
        for part in named:
            if not part.path.startswith(LIST_PREFIX) or part.seq_base:
                raise CorruptMetadata(f"{what}: part {part.path} is not a list with base 0")
        return ManifestList(metas, writers, named)
