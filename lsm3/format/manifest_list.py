"""Manifest lists: the immutable object a format-version-2 snapshot points at (docs/FORMAT.md,
section 4a).

A manifest list names the manifests that hold a snapshot's older entries, in replay order,
with their entry counts (so a committer can merge small ones by size tier without reading
the large ones), and the records of every named writer as of the list. Snapshots reuse one
list until a commit folds its tail of recent delta manifests into a new one, so a snapshot
stays small however long the table's history.
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
    writers_from_json,
    writers_to_json,
)

MANIFEST_LIST_FORMAT = "lsm3-manifest-list"
MANIFEST_LIST_VERSION = 1


@dataclass(frozen=True)
class ManifestMeta:
    """One manifest of a list: its path, how many entries it holds and how many of them are
    ``remove`` entries (what a merge or a rewrite would shed)."""

    path: str
    entries: int
    removes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "entries": self.entries, "removes": self.removes}


@dataclass(frozen=True)
class ManifestList:
    """The manifests before a snapshot's tail, and the writer records folded with them."""

    manifests: tuple[ManifestMeta, ...]
    writers: dict[str, WriterRecord] = field(default_factory=dict)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(m.path for m in self.manifests)

    def encode(self) -> bytes:
        doc = {
            "format": MANIFEST_LIST_FORMAT,
            "format_version": MANIFEST_LIST_VERSION,
            "manifests": [m.to_json() for m in self.manifests],
            "writers": writers_to_json(self.writers),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @staticmethod
    def decode(raw: bytes, what: str) -> ManifestList:
        doc = load_json(raw, what)
        check_header(doc, MANIFEST_LIST_FORMAT, what, MANIFEST_LIST_VERSION)
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise CorruptMetadata(f"{what} has no manifests list")
        try:
            metas = tuple(
                ManifestMeta(
                    check_relative_path(m["path"], "manifest/", what),
                    metadata_int(m["entries"]),
                    metadata_int(m.get("removes", 0)),
                )
                for m in items
            )
            writers = writers_from_json(doc.get("writers") or {}, what)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CorruptMetadata(f"{what} is malformed: {exc}") from None
        return ManifestList(metas, writers)
