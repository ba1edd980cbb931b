"""What docs/FORMAT.md specifies: the table schema and options, keys and the bucket hash, the
snapshot and manifest models with their JSON codecs, schema evolution and tags.

Imports: :mod:`lsm3.errors` and :mod:`lsm3.io` (to load schemas and manifests); never
``write``, ``read``, the table, ``cli`` or ``testing``.
"""
