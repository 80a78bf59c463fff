"""``bench model``: the units' models against their RTL, every output cycle compared."""

import pytest

from rpaccel.experiments import ExperimentError
from rpaccel.experiments.model import run_model_units


@pytest.mark.verilator
@pytest.mark.slow
def test_the_engine_cases_are_exact_and_timed():
    report = run_model_units(interaction=False)
    assert report.passed, report.failures
    assert len(report.rows) == 3 and all(row["differing_outputs"] == 0 for row in report.rows)
    assert all(row["rtl_cycles"] == row["model_cycles"] and row["speedup"] > 0 for row in report.rows)
    assert report.sections[0].name == "model-units" and "speed-up" in report.text


def test_a_bad_seed_is_refused():
    with pytest.raises(ExperimentError, match="seed"):
        run_model_units(seed=-1)
