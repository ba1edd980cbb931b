"""Manifest maintenance: rewrite a table's manifests into a list of manifests of live files
grouped by partition and bucket (docs/FORMAT.md, section 4a), off the writers' path.

Writers append small delta manifests that hold whatever partitions their commits touched, and
merge them by size tier; a scan that prunes to one partition can then skip few of them. A
compactor commit rewrites the manifests when dead entries pile up; this does the same on
demand (after a bulk load, or on a schedule), so a pruned scan fetches only the manifests of
its partitions. It changes no file and takes no lease: it commits like any writer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import lsm3
from lsm3.format.metadata import Snapshot
from lsm3.write.commit import commit_files


def rewrite_manifests(
    table_or_uri: lsm3.Table | str, *, storage_options: Mapping[str, Any] | None = None
) -> Snapshot | None:
    """Commit a snapshot (kind ``COMPACT``, no file changed) whose manifest list holds the
    live files of the latest snapshot, grouped by partition and bucket, cut at
    ``manifest_target_entries`` per manifest. Returns it (None for an empty table). Costs
    O(live files); concurrent commits are rebased onto it as usual."""
    if isinstance(table_or_uri, str):
        table = lsm3.open_table(table_or_uri, storage_options=storage_options)
    else:
        table = table_or_uri
    if table.refresh() is None:
        return None
    return commit_files(
        table,
        added=[],
        removed=[],
        seq_count=0,
        kind="COMPACT",
        writer_id=None,
        commit_id=uuid.uuid4().hex,
        metadata={},
        assign_offset=False,
        rewrite_manifests=True,
    )
