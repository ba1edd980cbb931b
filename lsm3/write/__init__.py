"""The write path: the memtable, the writer that flushes it into sorted runs
(:mod:`lsm3.write.flush`: sorting, encoding and uploading them), and the commit through the
conditional-put log (:mod:`lsm3.write.log`: ``VersionLog`` and the table's ``SnapshotLog``;
:mod:`lsm3.write.commit`: the one commit path of writers, the compactor and schema changes;
:mod:`lsm3.write.manifest_merge`: folding manifest lists) and the tags that name snapshots
(:mod:`lsm3.write.tags`).

Imports: ``lsm3.errors``, ``lsm3.io``, ``lsm3.format`` and the run-file codec and merge kernel
of ``lsm3.read``; the table only for type annotations (its public methods), never ``cli`` or
``testing``.
"""
