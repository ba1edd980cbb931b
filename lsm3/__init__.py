"""lsm3: an LSM-tree table format for change data on S3-compatible object storage.

Writers upload sorted Parquet runs and commit them with one conditional put of the next JSON
snapshot; readers merge runs at read time into PyArrow. See README.md and docs/FORMAT.md.

This module is the public API only. The code lives in layers that import downwards:
:mod:`lsm3.io` (object stores), :mod:`lsm3.format` (what FORMAT.md specifies),
:mod:`lsm3.read` and :mod:`lsm3.write`, then :mod:`lsm3.table` (the facade) and
:mod:`lsm3.cli` (the command). :mod:`lsm3.testing` (local S3 servers, fault injection) is
for tests and examples; importing ``lsm3`` loads neither it, the CLI nor boto3.
"""

from lsm3.errors import (
    CommitConflict,
    CommitUncertain,
    CorruptDataFile,
    CorruptMetadata,
    InvalidInput,
    Lsm3Error,
    SchemaMismatch,
    SnapshotNotFound,
    StorageError,
    TableAlreadyExists,
    TableNotFound,
    UnsupportedFormatVersion,
    WriteStalled,
)
from lsm3.format.metadata import DataFile, Snapshot
from lsm3.read.runindex import set_cache_limits
from lsm3.table import CommitRecord, FileInfo, Table, create_table, open_table
from lsm3.write.writer import Writer

__version__ = "0.1.0"

__all__ = [
    "CommitConflict",
    "CommitRecord",
    "CommitUncertain",
    "CorruptDataFile",
    "CorruptMetadata",
    "DataFile",
    "FileInfo",
    "InvalidInput",
    "Lsm3Error",
    "SchemaMismatch",
    "Snapshot",
    "SnapshotNotFound",
    "StorageError",
    "Table",
    "TableAlreadyExists",
    "TableNotFound",
    "UnsupportedFormatVersion",
    "WriteStalled",
    "Writer",
    "create_table",
    "open_table",
    "set_cache_limits",
]
