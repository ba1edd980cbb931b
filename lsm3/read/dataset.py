"""A ``pyarrow.dataset.Dataset`` of the merged view, for DuckDB, Polars and pandas.

pyarrow has no hook for a custom merge inside a dataset scan, so the dataset is built from two
kinds of pieces:

* Buckets already *clean* (their files do not overlap in key and hold no tombstones, which is
  what full compaction produces) become lazy Parquet fragments: engines push filters down to
  row-group statistics and read only the columns they need. They are read through
  :class:`StoreFileSystem`, so every request goes through the counted storage layer and works
  for every backend (S3, local, memory). These reads are ranged, so the whole-file checksum
  cannot be checked; what is checked instead (docs/FORMAT.md, section 4): the object's size
  on every read, each file's footer against its ``footer_checksum`` when the dataset is
  built (before any fragment exists), and every data page against its page CRC as it is
  decoded (a mismatch fails the scan with an error, never rows).
* Every other bucket is merged on construction (exactly as ``to_batches`` does) and held in
  memory.

The union of both is the table at one snapshot. The cost of building it is the merge of the
dirty buckets; compact the table to make the dataset fully lazy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from lsm3.format.metadata import DataFile
from lsm3.format.schema import TableSchema
from lsm3.io.store import ObjectStore
from lsm3.read.runindex import FOOTERS
from lsm3.read.scan import group_files, make_request, non_overlapping, scan_batches


class _StoreHandler(pafs.FileSystemHandler):
    """Read-only pyarrow filesystem over an ObjectStore, knowing sizes from the manifest."""

    def __init__(self, store: ObjectStore, sizes: dict[str, int]) -> None:
        self.store = store
        self.sizes = sizes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StoreHandler) and other.store is self.store

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "lsm3"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        out = []
        for p in paths:
            size = self.sizes.get(p)
            if size is None:
                out.append(pafs.FileInfo(p, pafs.FileType.NotFound))
            else:
                out.append(pafs.FileInfo(p, pafs.FileType.File, size=size))
        return out

    def get_file_info_selector(self, selector: Any) -> list[pafs.FileInfo]:
        return self.get_file_info(sorted(self.sizes))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.store.open_ranged(path, self.sizes[path])

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("an lsm3 dataset is read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only


def StoreFileSystem(store: ObjectStore, files: Sequence[DataFile]) -> pafs.PyFileSystem:
    """A pyarrow filesystem exposing ``files`` of ``store`` (read-only)."""
    return pafs.PyFileSystem(_StoreHandler(store, {f.path: f.size for f in files}))


def _is_clean(group: Sequence[DataFile], schema: TableSchema) -> bool:
    """Readable by plain Parquet fragments: disjoint, no tombstones, current schema."""
    ordered = sorted(group, key=lambda f: f.min_key)
    return (
        non_overlapping(ordered)
        and all(f.deletes == 0 for f in group)
        and all(f.schema_id == schema.schema_id for f in group)
    )


def merged_dataset(
    store: ObjectStore, schema: TableSchema, files: Sequence[DataFile]
) -> ds.Dataset:
    """The dataset described in the module docstring."""
    out_schema = pa.schema([f.with_nullable(True) for f in schema.arrow])
    clean: list[DataFile] = []
    dirty: list[DataFile] = []
    for group in group_files(files).values():
        (clean if _is_clean(group, schema) else dirty).extend(group)
    children: list[ds.Dataset] = []
    if clean:
        for f in clean:  # a damaged footer is refused here, not parsed by an engine's scan
            FOOTERS.get(store, f, schema.primary_key[0])
        filesystem = StoreFileSystem(store, clean)
        fmt = ds.ParquetFileFormat(
            default_fragment_scan_options=ds.ParquetFragmentScanOptions(
                page_checksum_verification=True
            )
        )
        fragments = [
            fmt.make_fragment(f.path, filesystem=filesystem, file_size=f.size)
            for f in sorted(clean, key=lambda f: (repr(f.partition), f.bucket, f.min_key))
        ]
        children.append(ds.FileSystemDataset(fragments, out_schema, fmt, filesystem))
    if dirty or not children:
        request = make_request(schema, None, None)
        batches = [
            b.cast(out_schema) for b in scan_batches(store, schema, dirty, request) if b.num_rows
        ]
        children.append(ds.InMemoryDataset(pa.Table.from_batches(batches, schema=out_schema)))
    return children[0] if len(children) == 1 else ds.UnionDataset(out_schema, children)
