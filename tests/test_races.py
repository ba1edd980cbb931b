"""Races: writer processes, a compactor process and readers on one table at once.

On SeaweedFS and Azurite (real HTTP, atomic conditional puts; moto's are not atomic) writer
processes commit plans that touch shared keys, ``python -m compactor --interval`` compacts
and expires nothing, and reader threads read the latest and older snapshots (scans and point
lookups) for a bounded time. Then the checker in ``tests/soak.py`` requires: a linear history
(contiguous ids, each parent the previous id, no (writer, commit id) twice); every commit
whose call returned in the chain at the snapshot it returned; and every snapshot, and every
read a reader made, equal to the model replayed in snapshot order. SeaweedFS makes the loser
of a conditional put wait 1-3 s, so contention is kept modest. ``make soak`` runs longer
races, on SeaweedFS and on a local directory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from soak import run_races

Location = tuple[str, dict | None]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.getLogger("lsm3").setLevel(logging.ERROR)
    yield
    logging.getLogger("lsm3").setLevel(logging.NOTSET)


def test_writers_compactor_and_readers_race_on_seaweedfs(seaweed_bucket_uri: Location) -> None:
    uri, options = seaweed_bucket_uri
    figures = run_races(uri, options, seconds=8, writers=3, readers=2, verify_all=False)
    assert figures.anomalies == []
    # At least as many commits as writers and one checked read: the race took place. (Counts,
    # not rates: on a loaded machine a process takes seconds to start.)
    assert figures.commits >= 3 and figures.reads_checked >= 1, figures


def test_aggregating_writers_with_stored_changes_race_on_seaweedfs(
    seaweed_bucket_uri: Location,
) -> None:
    """The race on a table that sums and concatenates and stores complete changes
    (``lookup``): a commit applied twice or rebased onto the wrong parent shows in every later
    value, and the changelog applied commit by commit must give each snapshot's table."""
    uri, options = seaweed_bucket_uri
    figures = run_races(
        uri, options, seconds=8, writers=3, readers=1, verify_all=False, aggregate=True
    )
    assert figures.anomalies == []
    assert figures.commits >= 3 and figures.reads_checked >= 1, figures


def test_writers_compactor_and_readers_race_on_azurite(az_container_uri: Location) -> None:
    """The same race on Azure Blob Storage (Azurite; adlfs ``If-None-Match: *``)."""
    uri, options = az_container_uri
    figures = run_races(uri, options, seconds=6, writers=2, readers=1, verify_all=False)
    assert figures.anomalies == []
    assert figures.commits >= 2 and figures.reads_checked >= 1, figures
