"""Which tables a pass of the compactor job works on: the URIs on the command line, then
every table of the ``--warehouse`` catalog (or of its ``--namespace`` ones), listed afresh at
each pass. A :class:`Target` opens a fresh ``Table`` each time, so no cached view of the
snapshot log outlives a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lsm3
from catalog import Catalog, connect
from compactor.job_args import JobConfig
from lsm3.table import Table


@dataclass(frozen=True)
class Target:
    """One table the job works on: a URI, or a ``namespace.table`` name in a catalog."""

    name: str  # how the output names the table: its URI, or namespace.table
    storage_options: dict[str, Any] | None = None
    catalog: Catalog | None = None  # set for a table of a warehouse

    def open(self) -> Table:
        if self.catalog is not None:
            return self.catalog.load_table(self.name)
        return lsm3.open_table(self.name, self.storage_options)


def targets(config: JobConfig) -> list[Target]:
    """The tables of one pass: the URIs on the command line, then the warehouse's tables.
    Every source of tables resolves here, once per pass, so tables that appear between
    passes are picked up; raises if the warehouse cannot be listed."""
    return uri_targets(config) + warehouse_targets(config)


def uri_targets(config: JobConfig) -> list[Target]:
    return [Target(uri, config.storage_options) for uri in config.uris]


def warehouse_targets(config: JobConfig) -> list[Target]:
    """Every table of the warehouse (of ``config.namespaces`` if any), by name, sharing one
    catalog connection for the pass."""
    if config.warehouse is None:
        return []
    cat = connect(config.warehouse, config.storage_options)
    if not config.namespaces:
        names = cat.list_tables()
    else:
        names = [name for ns in config.namespaces for name in cat.list_tables(ns)]
    return [Target(name, catalog=cat) for name in names]
