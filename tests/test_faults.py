"""Issue 10's fault table as a test (slow: each case starts a Python process; `python -m
tests.faults` prints the table). No case may end silent, as a crash without the file named, or
leave a run directory behind."""

import pytest

from common.projects import discover
from tests.faults import CASES, World, classify, new_run_records, run_records

pytestmark = pytest.mark.slow
PRESENT = set(discover()) | {"common"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.project}:{c.what[:50]}" for c in CASES])
def test_fault_case(case, world):
    if case.project not in PRESENT:
        pytest.skip(f"{case.project} is not in this checkout")
    before = run_records(world.root)
    outcome = case.run(world)
    verdict = classify(case, world, outcome, new_run_records(world, before))
    assert verdict in ("clear error", "handled"), f"{verdict}\n$ {' '.join(outcome.cmd)}\n{outcome.out[-3000:]}"
