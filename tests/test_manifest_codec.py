"""The manifest codec (lsm3/format/manifest_codec.py): the lean decoder gives back exactly the
entries that were encoded, for every key kind, applies the path rule of FORMAT.md section 4
in full (its shortcut only for paths that plainly pass), and leaves the garbage collector as
it found it, also when decoding fails."""

from __future__ import annotations

import gc
import json
import random
from dataclasses import replace

import pyarrow as pa
import pytest

from lsm3.errors import CorruptMetadata
from lsm3.format.manifest_codec import decode_manifest, encode_manifest
from lsm3.format.metadata import ManifestEntry
from tests.test_manifest_lists import synthetic

KINDS = {
    "int": ([pa.int64(), pa.int32()], lambda r: [r.randint(-(2**40), 2**40), r.randint(0, 9)]),
    "str": ([pa.string(), pa.int64()], lambda r: [r.choice(["", "é", "a/b"]), r.randint(0, 9)]),
    "bin": ([pa.binary(), pa.large_string()], lambda r: [r.randbytes(r.randint(0, 5)), "k"]),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoding_gives_back_what_was_encoded(kind: str) -> None:
    types, value = KINDS[kind]
    rng = random.Random(kind)
    entries = []
    for i in range(50):
        lo, hi = tuple(value(rng)), tuple(value(rng))
        f = replace(synthetic(i), partition=(i % 4,), min_key=lo, max_key=hi, run_id=str(i % 3))
        entries.append(ManifestEntry(rng.choice(["add", "remove"]), f))
    raw = encode_manifest(entries, types, [pa.int64()])
    assert decode_manifest(raw, types, [pa.int64()], "m") == entries
    based = [ManifestEntry(e.op, e.file.with_offset(e.file.seq_offset + 7)) for e in entries]
    assert decode_manifest(raw, types, [pa.int64()], "m", seq_base=7) == based


def _doc_with_path(path: str) -> bytes:
    f = synthetic(1)
    entry = {"op": "add", "file": {**f.to_json([pa.int64()] * 2, [pa.int64()]), "path": path}}
    return json.dumps({"format": "lsm3-manifest", "format_version": 1, "entries": [entry]}).encode()


def test_long_valid_paths_pass_and_every_bad_path_is_refused() -> None:
    types = ([pa.int64()] * 2, [pa.int64()])
    long_ok = "data/" + "/".join(["a" * 200] * 4) + ".parquet"
    assert decode_manifest(_doc_with_path(long_ok), *types, "m")[0].file.path == long_ok
    for bad in ["data/./x", "data/../x", "data//x", "manifest/x", "data/" + "a" * 256, "data/x y"]:
        with pytest.raises(CorruptMetadata, match="not inside the table root"):
            decode_manifest(_doc_with_path(bad), *types, "m")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(enabled: bool) -> None:
    types = ([pa.int64()] * 2, [pa.int64()])
    (gc.enable if enabled else gc.disable)()
    try:
        decode_manifest(_doc_with_path("data/x.parquet"), *types, "m")
        assert gc.isenabled() == enabled
        with pytest.raises(CorruptMetadata):
            decode_manifest(_doc_with_path("data/../x"), *types, "m")
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
