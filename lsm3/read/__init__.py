"""The read path: run files (:mod:`~lsm3.read.runfile`, also written by the writer), their
bytes fetched and checked against the manifest (:mod:`~lsm3.read.runbytes`) and their footer
and key index, scan planning, the merge kernel (:mod:`lsm3.read.merge`: where rows of
overlapping runs are merged by key and sequence), point lookups, the pyarrow dataset adapter
and change (CDC) reads between snapshots.

Imports: ``lsm3.errors``, ``lsm3.io`` and ``lsm3.format``; the table only for type
annotations (its public methods); never ``write``, ``cli`` or ``testing``.
"""
