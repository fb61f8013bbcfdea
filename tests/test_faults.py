"""One repetition of every fault of ``benchmarks/faults.py``: each kill lands where the
network announces it is waiting (a file it writes), never at a guessed moment."""

from __future__ import annotations

import pytest

from tests.test_benchmarks import _load

pytestmark = pytest.mark.slow

faults = _load("faults")


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    """Final metrics of the searches without a fault, per worker count."""
    root = tmp_path_factory.mktemp("uninterrupted")
    with faults.joined_ray():
        return {workers: faults.reference(workers, root) for workers in (1, 2)}


@pytest.mark.parametrize("name", list(faults.FAULTS))
def test_the_search_survives_the_fault(name, uninterrupted, tmp_path):
    with faults.joined_ray():
        outcome = faults.attempt(name, tmp_path, uninterrupted[faults.FAULTS[name].workers])
    assert outcome.survived, outcome.reason
    assert outcome.seconds < faults.BOUND_S
