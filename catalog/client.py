"""``Catalog``: namespaces and tables by name over a warehouse root, with no service to run.

The catalog's state is the log of JSON objects in catalog/log.py. Each table lives in a
fresh directory ``<warehouse>/<namespace>/<table>-<uuid>/`` chosen at creation, so renaming is
a metadata-only change and a dropped-then-recreated name never sees the old table's files.
Tables are opened through a child of the warehouse store, so all of them share one S3 client
and one set of request counters.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

import lsm3
from catalog.errors import (
    NamespaceAlreadyExists,
    NamespaceNotEmpty,
    NamespaceNotFound,
    TableAlreadyExists,
    TableNotFound,
)
from catalog.identifiers import Identifier, check_namespace, format_table, parse_table
from catalog.log import Change, StateLog
from catalog.state import CatalogState, NamespaceEntry, TableEntry, new_location
from lsm3.io.local import LocalStore
from lsm3.io.retry import with_retries
from lsm3.io.store import ObjectStore, open_store
from lsm3.table import Table


@dataclass(frozen=True)
class TableInfo:
    """What the catalog knows about one table (``Catalog.describe_table``)."""

    identifier: str
    namespace: str
    name: str
    location: str  # relative to the warehouse root
    uri: str  # the table's root, usable with lsm3.open_table (except for memory:// warehouses)
    uuid: str
    created_ms: int


def connect(
    warehouse_uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    commit_retries: int = 32,
) -> Catalog:
    """The catalog of the warehouse at ``warehouse_uri`` (``s3://bucket/prefix``, a path,
    ``file://`` or ``memory://``). Connecting writes nothing; an empty root is an empty
    catalog."""
    store = open_store(warehouse_uri, dict(storage_options) if storage_options else None)
    return Catalog(store, commit_retries=commit_retries)


class Catalog:
    """Namespaces and tables of one warehouse. Safe to share between threads; every read sees
    the latest committed catalog state (one GET when nothing changed)."""

    def __init__(self, store: ObjectStore, *, commit_retries: int = 32) -> None:
        self._local = store if isinstance(store, LocalStore) else None
        self.store = with_retries(store)  # safe requests retried (lsm3.io.retry)
        self.uri = store.url
        self._log = StateLog(self.store, retries=commit_retries)
        self._lock = threading.Lock()
        self._state: CatalogState | None = None

    # ----------------------------------------------------------------- state

    def refresh(self) -> CatalogState:
        """The newest catalog state (also remembered as the base of the next read)."""
        latest = self._log.latest(self._state)
        return self._advance(latest)

    def _advance(self, state: CatalogState) -> CatalogState:
        with self._lock:
            if self._state is None or state.state_id > self._state.state_id:
                self._state = state
            return self._state

    def _commit(self, operation: str, change: Change) -> CatalogState:
        return self._advance(self._log.commit(operation, change, known=self._state))

    # ----------------------------------------------------------------- namespaces

    def create_namespace(self, namespace: str) -> None:
        """Register ``namespace``; NamespaceAlreadyExists if it is there."""
        ns = check_namespace(namespace)

        def change(base: CatalogState) -> Mapping[str, NamespaceEntry]:
            if ns in base.namespaces:
                raise NamespaceAlreadyExists(f"namespace {ns!r} already exists in {self.uri}")
            return {**base.namespaces, ns: NamespaceEntry(_now_ms(), {})}

        self._commit(f"create_namespace {ns}", change)

    def list_namespaces(self) -> list[str]:
        return sorted(self.refresh().namespaces)

    def namespace_exists(self, namespace: str) -> bool:
        return check_namespace(namespace) in self.refresh().namespaces

    def drop_namespace(self, namespace: str) -> None:
        """Unregister an empty namespace; NamespaceNotEmpty while it holds tables."""
        ns = check_namespace(namespace)

        def change(base: CatalogState) -> Mapping[str, NamespaceEntry]:
            tables = _namespace(base, ns, self.uri).tables
            if tables:
                raise NamespaceNotEmpty(
                    f"namespace {ns!r} still holds {len(tables)} table(s) "
                    f"({', '.join(sorted(tables)[:5])}); drop them first"
                )
            return {k: v for k, v in base.namespaces.items() if k != ns}

        self._commit(f"drop_namespace {ns}", change)

    # ----------------------------------------------------------------- tables

    def list_tables(self, namespace: str | None = None) -> list[str]:
        """``"namespace.table"`` identifiers, sorted; all namespaces when none is given."""
        state = self.refresh()
        if namespace is None:
            names = [(ns, t) for ns, e in state.namespaces.items() for t in e.tables]
        else:
            ns = check_namespace(namespace)
            names = [(ns, t) for t in _namespace(state, ns, self.uri).tables]
        return [format_table(ns, t) for ns, t in sorted(names)]

    def table_exists(self, identifier: Identifier) -> bool:
        ns, name = parse_table(identifier)
        entry = self.refresh().namespaces.get(ns)
        return entry is not None and name in entry.tables

    def describe_table(self, identifier: Identifier) -> TableInfo:
        """Location, UUID and creation time of a registered table."""
        ns, name = parse_table(identifier)
        return self._info(ns, name, _table(self.refresh(), ns, name, self.uri))

    def _info(self, ns: str, name: str, entry: TableEntry) -> TableInfo:
        return TableInfo(
            format_table(ns, name),
            ns,
            name,
            entry.location,
            f"{self.uri}/{entry.location}",
            entry.uuid,
            entry.created_ms,
        )

    def create_table(
        self,
        identifier: Identifier,
        schema: pa.Schema,
        primary_key: Sequence[str] | str,
        partition_by: Sequence[str] | str | None = None,
        buckets: int = 1,
        options: Mapping[str, Any] | None = None,
    ) -> Table:
        """Create a table in a fresh location and register it under ``identifier``.

        The table's schema object is written first and the name registered second, so a
        registered name always points at a complete table. If another process registers the
        same name in between, this raises TableAlreadyExists and deletes the schema object it
        wrote (nobody else knows the fresh location).
        """
        ns, name = parse_table(identifier)
        _check_absent(self.refresh(), ns, name, self.uri)  # fail before writing anything
        table_uuid = uuid.uuid4()
        entry = TableEntry(new_location(ns, name, table_uuid), str(table_uuid), _now_ms())
        table_store = self.store.child(entry.location)
        try:
            table = lsm3.create_table(
                table_store, schema, primary_key, partition_by, buckets, options
            )
        except lsm3.TableAlreadyExists:  # a UUID4 collision: not expected in this universe
            raise TableAlreadyExists(f"location {table_store.url} is already in use") from None

        def change(base: CatalogState) -> Mapping[str, NamespaceEntry]:
            _check_absent(base, ns, name, self.uri)
            nse = base.namespaces[ns]
            return {**base.namespaces, ns: _with_tables(nse, {**nse.tables, name: entry})}

        try:
            self._commit(f"create_table {ns}.{name}", change)
        except (TableAlreadyExists, NamespaceNotFound):
            # Refused on a state that already holds the id our put aimed at, so our entry can
            # never land: the fresh location is ours alone and safe to delete. On any other
            # failure the outcome may be unknown, and an unreferenced location is harmless.
            self._purge(entry.location)
            raise
        return table

    def load_table(self, identifier: Identifier) -> Table:
        """Open the table registered under ``identifier``."""
        ns, name = parse_table(identifier)
        entry = _table(self.refresh(), ns, name, self.uri)
        table_store = self.store.child(entry.location)
        try:
            return lsm3.open_table(table_store)
        except lsm3.TableNotFound:
            raise TableNotFound(
                f"catalog entry {ns}.{name} points at {table_store.url}, which holds no lsm3 "
                "table (were its objects deleted outside the catalog?)"
            ) from None

    def rename_table(self, old: Identifier, new: Identifier) -> None:
        """Give a table a new name (possibly in another namespace); its files do not move."""
        old_ns, old_name = parse_table(old)
        new_ns, new_name = parse_table(new)

        def change(base: CatalogState) -> Mapping[str, NamespaceEntry]:
            entry = _table(base, old_ns, old_name, self.uri)
            _check_absent(base, new_ns, new_name, self.uri)
            namespaces = dict(base.namespaces)
            src = namespaces[old_ns]
            namespaces[old_ns] = _with_tables(
                src, {k: v for k, v in src.tables.items() if k != old_name}
            )
            dst = namespaces[new_ns]
            namespaces[new_ns] = _with_tables(dst, {**dst.tables, new_name: entry})
            return namespaces

        self._commit(f"rename_table {old_ns}.{old_name} {new_ns}.{new_name}", change)

    def drop_table(self, identifier: Identifier, purge: bool = False) -> None:
        """Unregister a table; with ``purge`` also delete its objects.

        The name is released first (one conditional put), then the objects are deleted, so no
        reader ever resolves the name to a half-deleted table. A writer still running on the
        table can leave objects behind after a purge: stop writers first.
        """
        ns, name = parse_table(identifier)
        dropped: list[TableEntry] = []

        def change(base: CatalogState) -> Mapping[str, NamespaceEntry]:
            entry = _table(base, ns, name, self.uri)
            dropped[:] = [entry]
            nse = base.namespaces[ns]
            tables = {k: v for k, v in nse.tables.items() if k != name}
            return {**base.namespaces, ns: _with_tables(nse, tables)}

        self._commit(f"drop_table {ns}.{name}", change)
        if purge:
            self._purge(dropped[0].location)

    def _purge(self, location: str) -> None:
        """Delete every object of an unregistered table location (and, locally, its dirs)."""
        store = self.store.child(location)
        for info in store.list(""):
            store.delete(info.key)
        if self._local is not None:
            _remove_empty_dirs(os.path.join(self._local.root, *location.split("/")))

    def __repr__(self) -> str:
        return f"catalog.Catalog({self.uri!r})"


# --------------------------------------------------------------------------- helpers


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _with_tables(entry: NamespaceEntry, tables: Mapping[str, TableEntry]) -> NamespaceEntry:
    return NamespaceEntry(entry.created_ms, tables)


def _namespace(state: CatalogState, ns: str, uri: str) -> NamespaceEntry:
    entry = state.namespaces.get(ns)
    if entry is None:
        raise NamespaceNotFound(
            f"namespace {ns!r} does not exist in {uri}; create it with create_namespace"
        )
    return entry


def _table(state: CatalogState, ns: str, name: str, uri: str) -> TableEntry:
    """The entry of an existing table; TableNotFound also when its namespace is missing, so
    one ``except lsm3.TableNotFound`` covers every way a name can fail to resolve."""
    nse = state.namespaces.get(ns)
    entry = nse.tables.get(name) if nse is not None else None
    if entry is None:
        why = "" if nse is not None else f" (namespace {ns!r} does not exist either)"
        raise TableNotFound(f"table {ns}.{name} does not exist in the catalog at {uri}{why}")
    return entry


def _check_absent(state: CatalogState, ns: str, name: str, uri: str) -> None:
    if name in _namespace(state, ns, uri).tables:
        raise TableAlreadyExists(
            f"table {ns}.{name} already exists in the catalog at {uri}; load it with "
            "load_table, or drop it first"
        )


def _remove_empty_dirs(root: str) -> None:
    """Remove the empty directories a purge leaves behind in a local warehouse."""
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
