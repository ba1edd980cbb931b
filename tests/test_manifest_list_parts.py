"""Parts of manifest lists (docs/FORMAT.md, section 4a, list version 3): a fold moves the
large manifests into part lists of ``manifest_list_part_size`` manifests and rewrites only
the list of small ones, full parts are never rewritten, the live files are those of a plain
replay, and lists written before parts existed keep reading and are settled by the next fold.
"""

from __future__ import annotations

import json
import uuid

import pytest

import lsm3
import lsm3.write.manifest_merge as manifest_merge
from compactor.maintenance import expire_snapshots, remove_orphan_files
from compactor.manifests import rewrite_manifests
from lsm3.errors import CorruptMetadata
from lsm3.format.manifest_list import ManifestList, ManifestMeta
from lsm3.format.metadata import Snapshot
from tests.test_manifest_lists import SCHEMA, commit, synthetic

#: Every delta of 4 files is large; a fold every 2 commits; parts of 3 manifests.
OPTIONS = {
    "manifest_merge_threshold": 2,
    "manifest_target_entries": 4,
    "manifest_merge_min_count": 3,
    "manifest_list_part_size": 3,
}


def new_table() -> lsm3.Table:
    uri = f"memory://{uuid.uuid4().hex}"
    return lsm3.create_table(uri, SCHEMA, ["p", "id"], partition_by="p", options=OPTIONS)


def top_of(table: lsm3.Table, snap: Snapshot) -> ManifestList:
    assert snap.manifest_list is not None
    return table.manifests.manifest_list(snap.manifest_list)


def test_folds_keep_full_parts_and_rewrite_only_the_small_list() -> None:
    table = new_table()
    added: set[str] = set()
    seen_parts: dict[str, tuple[str, ...]] = {}
    snaps = []
    for i in range(40):
        files = [synthetic(4 * i + j) for j in range(4)]
        added |= {f.path for f in files}
        snaps.append(commit(table, files, writer_id=f"w{i % 3}"))
    for snap in snaps:
        if snap.manifest_list is None:
            continue
        top = top_of(table, snap)
        # Only the trailing small manifests stay in the list itself; none are small here.
        assert all(m.entries < OPTIONS["manifest_target_entries"] for m in top.manifests)
        parts = table.manifests.parts_of(top)
        for meta, part in zip(top.parts, parts, strict=True):
            assert len(part.manifests) <= OPTIONS["manifest_list_part_size"]
            assert meta.entries == sum(m.entries for m in part.manifests)
            seen_parts.setdefault(meta.path, part.paths)
        full = [m.path for m, p in zip(top.parts, parts, strict=True) if len(p.manifests) == 3]
        assert len(full) >= len(top.parts) - 1
    last = top_of(table, snaps[-1])
    # 40 large deltas, minus the tail: about 13 parts, each a few hundred bytes of JSON.
    assert len(last.parts) >= 12 and len(snaps[-1].manifest_list or "") > 0
    assert len(table.store.get(snaps[-1].manifest_list or "")) < 4000
    # A full part, once written, is named by every later list (never rewritten).
    first_full = next(m.path for m in top_of(table, snaps[10]).parts)
    assert first_full in [m.path for m in last.parts]
    fresh = lsm3.open_table(table.uri)
    assert {f.path for f in fresh.files()} == added
    assert fresh.last_commit("w0").snapshot_id == 40  # type: ignore[union-attr]


def test_the_open_part_is_filled_up_and_replaced() -> None:
    """Small commits: merges make a large manifest now and then; each joins the last part
    until it is full, and the list's own manifests are the small ones not merged yet."""
    table = new_table()
    added: set[str] = set()
    for i in range(60):
        f = synthetic(i)
        added.add(f.path)
        snap = commit(table, [f])
    top = top_of(table, snap)
    assert top.parts
    sizes = [len(p.manifests) for p in table.manifests.parts_of(top)]
    assert all(s == 3 for s in sizes[:-1]) and 1 <= sizes[-1] <= 3
    assert all(m.entries < OPTIONS["manifest_target_entries"] for m in top.manifests)
    assert {f.path for f in lsm3.open_table(table.uri).files()} == added


def test_a_list_without_parts_reads_and_the_next_fold_settles_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lists written before parts existed (version 1 or 2: every manifest in the list)."""
    table = new_table()
    with monkeypatch.context() as m:
        m.setattr(manifest_merge, "settle", lambda _r, _s, parts, metas, _t: (parts, metas))
        old = [commit(table, [synthetic(4 * i + j) for j in range(4)]) for i in range(20)]
    raw = json.loads(table.store.get(old[-1].manifest_list or ""))
    assert "parts" not in raw and raw["format_version"] <= 2 and len(raw["manifests"]) >= 17
    fresh = lsm3.open_table(table.uri)
    assert len(fresh.files()) == 80
    new = [commit(fresh, [synthetic(100 + i)]) for i in range(3)]
    top = top_of(fresh, new[-1])
    assert top.parts and len(top.manifests) < 3
    assert json.loads(fresh.store.get(new[-1].manifest_list or ""))["format_version"] == 3
    again = lsm3.open_table(table.uri)
    assert len(again.files()) == 83 and len(again.files(snapshot_id=20)) == 80


def test_maintenance_keeps_parts_and_a_rewrite_writes_them() -> None:
    table = new_table()
    for i in range(30):
        commit(table, [synthetic(4 * i + j) for j in range(4)])
    snap = table.current_snapshot()
    assert snap is not None
    parts = {m.path for m in top_of(table, snap).parts}
    assert parts <= table.manifests.referenced(snap)
    expire_snapshots(table, retain_last=1, older_than=0)
    remove_orphan_files(table, older_than=0)
    fresh = lsm3.open_table(table.uri)
    assert len(fresh.files()) == 120
    rewritten = rewrite_manifests(fresh)
    assert rewritten is not None
    assert len(top_of(fresh, rewritten).parts) >= 10  # 30 manifests of 4, parts of 3
    assert len(lsm3.open_table(table.uri).files()) == 120


def _list_doc(**extra: object) -> bytes:
    doc = {
        "format": "lsm3-manifest-list",
        "format_version": 3,
        "manifests": [],
        "writers": {},
        **extra,
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([{"path": "manifest/manifest-a.json", "entries": 1}], id="not-a-list"),
        pytest.param([{"path": "manifest/list-a.json", "entries": 1, "seq_base": 2}], id="base"),
        pytest.param({"path": "manifest/list-a.json"}, id="not-an-array"),
        pytest.param([{"path": "data/list-a.json", "entries": 1}], id="outside-manifest"),
    ],
)
def test_malformed_parts_are_refused(parts: object) -> None:
    with pytest.raises(CorruptMetadata):
        ManifestList.decode(_list_doc(parts=parts), "list")


def test_a_part_that_names_parts_is_refused() -> None:
    table = new_table()
    inner = table.manifests.write_list(ManifestList((ManifestMeta("manifest/manifest-a.json", 1),)))
    nested = table.manifests.write_list(ManifestList((), {}, (ManifestMeta(inner, 1),)))
    top = ManifestList((), {}, (ManifestMeta(nested, 1),))
    with pytest.raises(CorruptMetadata, match="names parts itself"):
        table.manifests.parts_of(top)


def test_a_newer_list_version_is_refused() -> None:
    with pytest.raises(CorruptMetadata):
        ManifestList.decode(_list_doc(format_version=4), "list")
