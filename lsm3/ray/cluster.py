"""Ray itself: connecting to a cluster, and the table and store as a worker opens them."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import ray

import lsm3
from lsm3.errors import InvalidInput
from lsm3.io.retry import with_retries
from lsm3.io.store import ObjectStore, open_store
from lsm3.table import Table


def ensure_ray() -> None:
    """Connect to Ray if this process is not connected: the cluster ``RAY_ADDRESS`` names,
    else a new local one."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)


def open_shared_table(uri: str, storage_options: Mapping[str, Any] | None) -> Table:
    """The table, opened as a worker will open it: refuses what other processes cannot see."""
    if not isinstance(uri, str):
        raise InvalidInput(
            "Ray needs a table URI (workers reopen the table), not an opened store or Table"
        )
    if uri.lower().startswith("memory://"):
        raise InvalidInput(
            f"{uri!r} lives in this process's memory, which Ray workers cannot see; use a "
            "path shared by the workers or an s3:// URI"
        )
    return lsm3.open_table(uri, storage_options)


@functools.lru_cache(maxsize=64)
def _worker_store(uri: str, options_key: str) -> ObjectStore:
    """One store per table and options in a worker process, so its footer and metadata caches
    serve every task the worker runs."""
    options = json.loads(options_key)
    return with_retries(open_store(uri, options or None))


def store_for(uri: str, storage_options: Mapping[str, Any] | None) -> ObjectStore:
    """This worker's store for ``uri`` (shared by its tasks; options compared by value)."""
    return _worker_store(uri, json.dumps(dict(storage_options or {}), sort_keys=True, default=str))
