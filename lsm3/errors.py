"""The error hierarchy of lsm3, in one place.

Every error a user can meet derives from :class:`Lsm3Error`, and its message says what went
wrong and what to do about it. Nothing that raises one of these has changed committed state.
"""

from __future__ import annotations


class Lsm3Error(Exception):
    """Base class of every error lsm3 raises on purpose."""


class StorageError(Lsm3Error):
    """The object store failed a request (after the retries that were safe to make)."""


class ObjectNotFound(StorageError):
    """A requested object does not exist."""


class PreconditionFailed(StorageError):
    """A conditional put lost: the object already exists (or its ETag changed)."""


class SizeMismatch(StorageError):
    """A ranged read found the object's size different from what the manifest recorded."""


class TableNotFound(Lsm3Error):
    """The URI holds no lsm3 table."""


class TableAlreadyExists(Lsm3Error):
    """``create_table`` found a table already at the URI."""


class CommitConflict(Lsm3Error):
    """A commit could not land after the bounded number of retries, or can never land."""


class CommitUncertain(CommitConflict):
    """An earlier attempt of a commit failed ambiguously and whether it landed can no longer
    be decided (the snapshots that could tell were expired); nothing was committed now."""


class SchemaMismatch(Lsm3Error):
    """Data does not fit the table schema (missing column, unsafe cast, null key...)."""


class InvalidInput(Lsm3Error):
    """An argument or a record is malformed (unknown CDC op, bad option, bad key...)."""


class CorruptMetadata(Lsm3Error):
    """A snapshot, manifest or schema object cannot be decoded or violates the format."""


class UnsupportedFormatVersion(CorruptMetadata):
    """Metadata was written by a newer format version than this code reads."""


class CorruptDataFile(Lsm3Error):
    """A data file's size or checksum disagrees with its manifest entry, or it is unreadable."""


class WriteStalled(Lsm3Error):
    """A bucket has reached the sorted-run stop trigger and the table is set to stall writes."""


class SnapshotNotFound(Lsm3Error):
    """The requested snapshot id or timestamp does not exist (or was expired)."""
