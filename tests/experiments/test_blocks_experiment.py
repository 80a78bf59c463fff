"""The block scoreboards and the harness comparison (``rpaccel bench blocks``) called directly, briefly."""

import pytest

from rpaccel.experiments import ExperimentError
from rpaccel.experiments.blocks import run_blocks


@pytest.mark.verilator
@pytest.mark.slow
def test_run_blocks_briefly():
    report = run_blocks(count=40, player_count=300, seed=3, pause=0.3)
    assert report.passed, report.failures
    assert [(r["block"], r["harness"].split(",")[0]) for r in report.rows] == [
        ("pe", "cocotb drivers"), ("postproc", "cocotb drivers"), ("postproc", "player")]
    assert all(r["mismatches"] == 0 for r in report.rows)
    assert report.rows[-1]["transactions"] == 300
    assert report.data["player"]["transactions"] == 300
    assert report.sections[0].name == "blocks-harness"
    assert "seed 3, 30% idle input" in report.sections[0].body


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": 0}, "count must be a positive integer, not 0"),
    ({"player_count": 0}, "player_count must be a positive integer, not 0"),
    ({"seed": -1}, "seed must be a non-negative integer, not -1"),
    ({"pause": 1}, "pause must be in [0, 1), not 1"),
])
def test_run_blocks_checks_its_arguments(kwargs, message):
    with pytest.raises(ExperimentError) as info:
        run_blocks(**kwargs)
    assert str(info.value) == message
