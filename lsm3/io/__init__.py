"""Object storage: the only layer that talks to S3 or the file system.

:mod:`lsm3.io.store` defines the ``ObjectStore`` interface (put, conditional puts, get, head,
list, delete), ``ObjectInfo``, the request and byte counters (``StoreStats``) and
``open_store``, which picks a backend by URL scheme. One module per backend (local directory,
memory, S3); a new backend (Azure, GCS) is a new module here. :mod:`lsm3.io.retry` retries
transient failures of any backend.

Imports: the standard library, pyarrow and :mod:`lsm3.errors` only (boto3 only when an S3
store is opened); never ``lsm3.format``, ``write``, ``read``, the table, ``cli`` or
``testing``.
"""
