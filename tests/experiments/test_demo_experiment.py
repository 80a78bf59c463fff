"""The demo's experiment: RecPipe's 2-stage query on the chip's RTL (tiny models), checked against the golden model
and the host's reference pipeline, a planted disagreement caught, and the checks of its arguments."""

import pytest

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.demo import run_demo

from host_fixtures import tiny_dot

TINY = preset("tiny").with_settings(["weight_buffer_words=512"])
SPECS = {"small": tiny_dot(name="tiny-s"), "med": tiny_dot(name="tiny-m", bottom=(6, 4), top=(5, 1)),
         "large": tiny_dot(name="tiny-l", bottom=(8, 8, 4), top=(6, 3, 1))}


@pytest.mark.verilator
@pytest.mark.slow
def test_the_two_stage_query_runs_on_the_chip_in_both_modes():
    report = run_demo(TINY, candidates=96, k=5, specs=SPECS, train_samples=1500, pause=0.2)
    assert report.passed, report.failures
    data = report.data
    assert (data["kept"], data["k"]) == (12, 5) and data["ranking_matches_host_pipeline"]
    assert [row["mode"] for row in report.rows] == ["rpaccel", "baseline"]
    assert all(row["checked"] for row in report.rows)
    assert len(data["ranking"]) == 5 and data["ranking"] == sorted(data["ranking"], key=lambda r: (-r[0], r[1]))
    (first, second) = data["stages"]
    assert first[1] == "96 -> 12" and second[1] == "12 -> 5"
    # Stage cycles of the baseline add up to its query (the last LOGIT ends the query).
    assert first[4] + second[4] == report.rows[1]["cycles_per_query"]
    assert "baseline/this" in report.text and "tiny-s scores 96 candidates and keeps 12" in report.text
    # RecPipe's analytical model beside the measured cycles, for both modes.
    assert data["recpipe_model"] in report.text
    for row in report.rows:
        assert f"against {row['cycles_per_query']:,} measured" in data["recpipe_model"]


@pytest.mark.verilator
@pytest.mark.slow
def test_a_ranking_other_than_the_host_pipelines_fails(monkeypatch):
    """Planted: the host's reference pipeline answers its ranking reversed; the demo must fail."""
    import rpaccel.host.quality as quality

    original = quality.run_pipeline
    monkeypatch.setattr(quality, "run_pipeline", lambda *args: original(*args)[:, ::-1])
    report = run_demo(TINY, candidates=64, k=4, specs=SPECS, train_samples=1500)
    assert report.failures == ("the chip's ranking differs from the host's reference pipeline",)
    assert "MISMATCH" in report.text


@pytest.mark.parametrize(("kwargs", "parameter", "message"), [
    ({"seed": -1}, "seed", "seed must be a non-negative integer, not -1"),
    ({"k": 65}, "k", "k must be between 1 and the small preset's K_MAX 64, not 65"),
    ({"candidates": 256, "k": 40}, "k", "k must be at most 32, the candidates stage 1 keeps, not 40"),
    ({"candidates": 0}, "candidates", "candidates must be a positive integer, not 0"),
    ({"candidates": 7}, "candidates", "candidates must be at least 8 (stage 1 keeps an eighth), not 7"),
    ({"pause": 1.0}, "pause", "pause must be in [0, 1), not 1.0"),
    ({"train_samples": 0}, "train_samples", "train_samples must be a positive integer, not 0"),
])
def test_demo_checks_its_arguments_before_running(kwargs, parameter, message):
    with pytest.raises(ExperimentError) as info:
        run_demo(preset("small"), **kwargs)
    assert info.value.parameter == parameter
    assert str(info.value) == message
