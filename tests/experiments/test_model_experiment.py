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


def test_the_chip_model_runs_recpipes_pipeline_and_reports_recpipes_estimate():
    """The model alone (no RTL) on a small 2-stage query: responses checked against the golden model, RecPipe's
    estimate beside it."""
    from rpaccel.experiments.model import run_model_chip

    report = run_model_chip(candidates=64, pipelines=(2,), modes=("rpaccel", "baseline"), train_samples=600,
                            max_rows=300, rtl=False, paper=False)
    assert report.passed, report.failures
    assert [row["mode"] for row in report.rows] == ["rpaccel", "baseline"]
    assert all(row["model_checked"] and row["model_cycles"] > 0 and row["recpipe_cycles"] > 0 for row in report.rows)
    assert report.sections[0].name == "model-chip"


def test_the_chip_models_bench_refuses_an_unknown_pipeline():
    from rpaccel.experiments.model import run_model_chip

    with pytest.raises(ExperimentError, match="pipelines"):
        run_model_chip(pipelines=(4,), rtl=False, paper=False)


@pytest.mark.verilator
def test_the_regression_compares_every_response_of_a_random_program():
    """One random program on tiny's RTL and on the timed model: the same responses, the cycles compared. The model
    is transaction-level, not yet exact (issue 20's goal is 0): the bound here catches a model gone astray (a rule
    lost, a unit skipped), not its remaining error, which ``bench model --units regression`` reports."""
    from rpaccel.experiments.model import run_model_regression

    report = run_model_regression(("tiny",), programs=1, seed=3)
    assert report.passed, report.failures
    (row,) = report.rows
    assert row["responses"] > 0 and abs(row["error"]) < 0.15, row
    assert report.sections[0].name == "model-regression" and row["program"] in report.text
