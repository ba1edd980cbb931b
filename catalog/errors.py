"""Errors of the catalog, all derived from :class:`lsm3.Lsm3Error`.

Table-level errors are lsm3's own (``lsm3.TableNotFound``, ``lsm3.TableAlreadyExists``,
``lsm3.CorruptMetadata``, ``lsm3.CommitConflict``), re-exported here, so one ``except`` clause
catches a missing table whether it was opened by URI or by name. Only what has no lsm3
counterpart is new.
"""

from __future__ import annotations

from lsm3.errors import (
    CommitConflict,
    CorruptMetadata,
    InvalidInput,
    Lsm3Error,
    TableAlreadyExists,
    TableNotFound,
    UnsupportedFormatVersion,
)


class CatalogError(Lsm3Error):
    """Base class of the errors only the catalog raises."""


class InvalidIdentifier(CatalogError, InvalidInput):
    """A namespace or table name breaks the identifier rules (docs/FORMAT.md, Catalog)."""


class NamespaceNotFound(CatalogError):
    """The namespace is not registered in the catalog."""


class NamespaceAlreadyExists(CatalogError):
    """``create_namespace`` (or a concurrent process) already registered this namespace."""


class NamespaceNotEmpty(CatalogError):
    """``drop_namespace`` refuses a namespace that still holds tables."""


__all__ = [
    "CatalogError",
    "CommitConflict",
    "CorruptMetadata",
    "InvalidIdentifier",
    "NamespaceAlreadyExists",
    "NamespaceNotEmpty",
    "NamespaceNotFound",
    "TableAlreadyExists",
    "TableNotFound",
    "UnsupportedFormatVersion",
]
