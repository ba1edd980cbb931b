"""Ray Data connectors: read an lsm3 table into a ``ray.data.Dataset``, write one into a table.

``pip install lsm3[ray]``. ``import lsm3`` never imports this package (nor Ray).

- :mod:`lsm3.ray.source`: :func:`read_lsm3`, one read task per independent unit of the scan.
- :mod:`lsm3.ray.sink`: :func:`write_lsm3`, write tasks that stage runs and one commit on
  the driver.
- :mod:`lsm3.ray.cluster`: connecting to Ray and opening a table as every worker will.
"""

from lsm3.ray.cluster import ensure_ray, open_shared_table
from lsm3.ray.sink import Lsm3Datasink, StagedRuns, write_grouped, write_lsm3, write_part
from lsm3.ray.source import Lsm3Datasource, read_lsm3

__all__ = [
    "Lsm3Datasink",
    "Lsm3Datasource",
    "StagedRuns",
    "ensure_ray",
    "open_shared_table",
    "read_lsm3",
    "write_grouped",
    "write_lsm3",
    "write_part",
]
