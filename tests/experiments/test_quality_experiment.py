"""RecPipe's quality experiment (``rpaccel bench quality``) called directly, at a toy size."""

import pytest

from rpaccel.experiments import ExperimentError
from rpaccel.experiments.quality import run_quality


@pytest.mark.slow
def test_run_quality_at_a_toy_size(tmp_path):
    report = run_quality(train_samples=4000, queries=2, candidates=64, k=2, max_rows=50, seed=3,
                         plot=tmp_path / "img" / "plot.png", workdir=tmp_path / "work", results=tmp_path / "results.md")
    assert (tmp_path / "img" / "plot.png").stat().st_size > 0
    assert [r["pipeline"] for r in report.rows if r["kind"] == "int8"] == [
        "1-stage rm-small", "1-stage rm-med", "1-stage rm-large", "2-stage rm-small -> rm-large",
        "3-stage rm-small -> rm-med -> rm-large"]
    [section] = report.sections
    assert section.name == "quality-pipelines"
    assert section.body.endswith("![quality vs MACs per query](img/plot.png)")   # relative to the results file
    assert report.data["settings"]["seed"] == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"candidates": 64}, "k must be at most 2, candidates/32 (the pipelines keep candidates/8 and candidates/32 "
                         "items), not 64"),
    ({"queries": 0}, "queries must be a positive integer, not 0"),
    ({"seed": -1}, "seed must be a non-negative integer, not -1"),
])
def test_run_quality_checks_its_arguments(kwargs, message):
    with pytest.raises(ExperimentError) as info:
        run_quality(**kwargs)
    assert str(info.value) == message
