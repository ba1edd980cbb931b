"""Tags of a table: resolving, listing, creating and deleting the ``tag/<name>.json`` objects
(their names and codec: :mod:`lsm3.format.tags`); the ``Table`` tag methods delegate here.

A tag is created with put-if-absent, then checked against expiry: a snapshot that expiry
detached while it was being tagged may be losing its files, so that tag is deleted again and
refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsm3.errors import InvalidInput, ObjectNotFound, PreconditionFailed, SnapshotNotFound
from lsm3.format.metadata import Snapshot
from lsm3.format.tags import check_tag_name, decode_tag, encode_tag, tag_key
from lsm3.io.store import ObjectStore

if TYPE_CHECKING:
    from lsm3.table import Table


def load_tag(store: ObjectStore, tag: str) -> Snapshot:
    """The snapshot tagged ``tag`` (SnapshotNotFound if there is no such tag)."""
    check_tag_name(tag)
    try:
        raw = store.get(tag_key(tag))
    except ObjectNotFound:
        raise SnapshotNotFound(f"no tag {tag!r} on {store.url}") from None
    return decode_tag(raw, f"tag {tag} of {store.url}")


def list_tags(store: ObjectStore) -> dict[str, Snapshot]:
    """Tag name -> the tagged snapshot (embedded in the tag, so never expired)."""
    out = {}
    for info in store.list("tag/"):
        if not info.key.endswith(".json"):
            continue  # e.g. the temporary file of an interrupted local put
        name = info.key[len("tag/") :].removesuffix(".json")
        out[name] = decode_tag(store.get(info.key), f"tag {name} of {store.url}")
    return out


def add_tag(table: Table, name: str, snapshot_id: int | None = None) -> int:
    """Name a snapshot of ``table`` (default: its newest); expiry never removes it."""
    check_tag_name(name)
    snap = table.snapshot(snapshot_id) if snapshot_id is not None else table.refresh()
    if snap is None:
        raise InvalidInput("the table has no snapshot to tag yet")
    try:
        table.store.put_if_absent(tag_key(name), encode_tag(snap))
    except PreconditionFailed:
        raise InvalidInput(f"tag {name!r} already exists; delete it first") from None
    if table.log.is_detached(snap.snapshot_id):
        # Expiry removed the snapshot after we read it and may have listed the tags
        # before ours landed, so its files may be on their way out: refuse the tag.
        table.store.delete(tag_key(name))
        raise SnapshotNotFound(
            f"snapshot {snap.snapshot_id} was expired while it was being tagged; "
            "tag a retained snapshot (see table.snapshot_ids())"
        )
    return snap.snapshot_id


def remove_tag(store: ObjectStore, name: str) -> None:
    """Remove tag ``name`` (SnapshotNotFound if there is none)."""
    check_tag_name(name)
    if store.head(tag_key(name)) is None:
        raise SnapshotNotFound(f"no tag {name!r} on {store.url}")
    store.delete(tag_key(name))
