"""lsm3 catalog: namespaces and tables by name over a warehouse root, with no service to run.

Its state is a log of immutable JSON objects under ``<warehouse>/catalog/``, committed with
the same conditional put as table snapshots, so concurrent processes creating, renaming or
dropping tables never corrupt it and never both win the same name. See docs/FORMAT.md
(section Catalog)::

    import catalog
    cat = catalog.connect("s3://bucket/warehouse")
    cat.create_namespace("sales")
    t = cat.create_table("sales.orders", schema, primary_key=["id"])
"""

from catalog.client import Catalog, TableInfo, connect
from catalog.errors import (
    CatalogError,
    CommitConflict,
    CorruptMetadata,
    InvalidIdentifier,
    NamespaceAlreadyExists,
    NamespaceNotEmpty,
    NamespaceNotFound,
    TableAlreadyExists,
    TableNotFound,
    UnsupportedFormatVersion,
)
from catalog.state import CatalogState

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogState",
    "CommitConflict",
    "CorruptMetadata",
    "InvalidIdentifier",
    "NamespaceAlreadyExists",
    "NamespaceNotEmpty",
    "NamespaceNotFound",
    "TableAlreadyExists",
    "TableInfo",
    "TableNotFound",
    "UnsupportedFormatVersion",
    "connect",
]
