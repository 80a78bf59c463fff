"""RecPipe's pipelines on the chip's RTL (``rpaccel bench accel``) on tiny models: every program checked against the
golden model, the figures against what the programs must do, RM-large's fallback said, a planted wrong answer
caught, and the arguments checked before anything runs."""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.accel import pipeline_stages, run_accel
from rpaccel.host.quality import Pipeline, run_pipeline
from rpaccel.host.quality import Stage as QualityStage

from host_fixtures import tiny_dot

TINY = preset("tiny").with_settings(["weight_buffer_words=512"])    # three models' weights at once
SPECS = {"small": tiny_dot(name="tiny-s"), "med": tiny_dot(name="tiny-m", bottom=(6, 4), top=(5, 1)),
         "large": tiny_dot(name="tiny-l", bottom=(8, 8, 4), top=(6, 3, 1))}
RUN = {"specs": SPECS, "train_samples": 1500, "sub_batch": 8}


def test_pipeline_stages_scale_recpipes_kept_counts():
    assert pipeline_stages(3, 4096, 64) == [("small", 512), ("med", 128), ("large", 64)]
    assert pipeline_stages(2, 1024, 64) == [("small", 128), ("large", 16)]
    assert pipeline_stages(1, 4096, 16) == [("large", 16)]      # the final k at most K_MAX
    assert pipeline_stages(3, 64, 16) == [("small", 8), ("med", 2), ("large", 1)]


@pytest.mark.verilator
@pytest.mark.slow
def test_pipelines_in_both_modes_are_checked_and_measured():
    report = run_accel(TINY, candidates=96, queries=2, **RUN)
    assert report.passed, report.failures
    assert [(r["pipeline"], r["mode"]) for r in report.rows] == [
        (p, mode) for p in (1, 2, 3) for mode in ("rpaccel", "baseline")]
    for row in report.rows:
        plan = pipeline_stages(row["pipeline"], 96, TINY.k_max)
        items = [96] + [kept for _, kept in plan[:-1]]
        assert row["checked"] and row["note"] == ""
        # Every candidate a stage scores is gathered once: tables x pooling lookups per item, both queries.
        assert row["cache"]["lookups"] == 2 * 4 * sum(items)
        assert row["split"] == (1 if row["mode"] == "baseline" else min(row["pipeline"], 2))
        assert 0 < row["cycles_per_query"] < row["sim_cycles"]
        assert row["latency_us"] == pytest.approx(row["cycles_per_query"] / TINY.clock_mhz)
        assert all(0 <= share <= 1 for share in row["utilisation"].values())
        assert row["utilisation"]["lane0"] > 0 and row["utilisation"]["embedding"] > 0
        # Lists the baseline host writes (one 16-bit index per candidate of a later stage) are the only writes.
        assert row["mem_write_lines"] == (0 if row["mode"] == "rpaccel" else 2 * sum(
            -(-n * 2 // 16) for n in items[1:]))
        assert row["ratio"] == pytest.approx(
            next(r for r in report.rows if r["pipeline"] == row["pipeline"] and r["mode"] == "baseline")[
                "cycles_per_query"] / row["cycles_per_query"])
    assert "| 3-stage | rpaccel |" in report.sections[0].body and "baseline/this" in report.text
    assert report.sections[0].name == "accel-queries-2" and "2 queries back to back" in report.sections[0].title


@pytest.mark.verilator
@pytest.mark.slow
def test_the_chips_ranking_is_the_host_pipelines():
    """The rpaccel mode's ranking, as the chip answered it, equals the host's RecPipe pipeline
    (:func:`rpaccel.host.quality.run_pipeline` on the integer reference's scores) for the same candidates."""
    from rpaccel.experiments.accel import train_models
    from rpaccel.host.reference import run

    report = run_accel(TINY, candidates=80, pipelines=(3,), modes=("rpaccel",), **RUN)
    assert report.passed
    models, generator, _ = train_models(SPECS, train_samples=1500, seed=1)
    records = generator.generate(80, start=1500 + 2_000)
    scores = {role: run(model, *model.inputs(records))[None, :] for role, model in models.items()}
    plan = pipeline_stages(3, 80, TINY.k_max)
    pipeline = Pipeline("3-stage", tuple(QualityStage(role, kept) for role, kept in plan))
    want = run_pipeline(pipeline, scores, plan[-1][1])[0]
    got = [index for _, index in report.rows[0]["rankings"][0]]
    assert got == want.tolist()


@pytest.mark.verilator
@pytest.mark.slow
def test_rm_large_refused_falls_back_to_rm_med_and_says_so():
    specs = {**SPECS, "large": tiny_dot(name="tiny-xl", bottom=(16, 16, 4), top=(16, 16, 1))}
    config = preset("tiny")
    report = run_accel(config, candidates=64, pipelines=(2,), modes=("rpaccel",), **{**RUN, "specs": specs})
    assert report.passed
    (row,) = report.rows
    assert row["note"].startswith("RM-med in place of RM-large: the compiler refused RM-large (")
    assert "tiny-m" in row["stages"] and "tiny-xl" not in row["stages"]
    assert "| RM-med in place of RM-large |" in report.text and "2-stage: RM-med in place" in report.text


@pytest.mark.verilator
@pytest.mark.slow
def test_a_wrong_answer_is_a_failed_check(monkeypatch):
    """Planted: the golden model's best score is one higher than the chip's; the run must fail the check."""
    import rpaccel.host.driver.chip as chip
    from rpaccel.rtl.accel.isa import ResponseKind

    original = chip.expected_responses

    def planted(program):
        expected = original(program)
        rows = np.flatnonzero(expected.responses.kind == ResponseKind.RANK.value)
        expected.responses.score[rows[0]] += 1
        return expected

    monkeypatch.setattr(chip, "expected_responses", planted)
    report = run_accel(TINY, candidates=48, pipelines=(1,), modes=("rpaccel",), **RUN)
    assert not report.passed and not report.rows[0]["checked"]
    assert report.failures[0].startswith("1-stage rpaccel: tag 0:")
    assert "| NO |" in report.text


@pytest.mark.verilator
@pytest.mark.slow
def test_the_schedules_that_separate_the_causes():
    """``rpaccel-whole`` runs RPAccel mode on split 1, ``baseline-overlapped`` the baseline without SYNCs: both
    checked, each with its ratio to the baseline; the baseline answers a DONE per sub-batch that the overlapped
    one does not."""
    modes = ("baseline", "rpaccel-whole", "baseline-overlapped")
    report = run_accel(TINY, candidates=64, pipelines=(2,), modes=modes, **RUN)
    assert report.passed, report.failures
    rows = {row["mode"]: row for row in report.rows}
    assert list(rows) == list(modes) and rows["rpaccel-whole"]["split"] == 1
    assert rows["baseline"]["ratio"] == 1.0
    for mode in modes[1:]:
        assert rows[mode]["ratio"] == pytest.approx(rows["baseline"]["cycles_per_query"] /
                                                    rows[mode]["cycles_per_query"])
    assert rows["baseline"]["counters"]["COMMANDS"] == rows["baseline-overlapped"]["counters"]["COMMANDS"] + 8 + 1

@pytest.mark.parametrize(("kwargs", "parameter", "message"), [
    ({"pipelines": (4,)}, "pipelines", "pipelines must be of [1, 2, 3], not 4"),
    ({"pipelines": (2, 2)}, "pipelines", "pipelines must be distinct values of [1, 2, 3], not [2, 2]"),
    ({"modes": ("tpu",)}, "modes", "modes must be distinct values of rpaccel, baseline, rpaccel-whole, "
     "baseline-overlapped, not ['tpu']"),
    ({"candidates": 0}, "candidates", "candidates must be a positive integer, not 0"),
    ({"queries": 254}, "queries", "queries must be between 1 and 253, not 254"),
    ({"sub_batch": 0}, "sub_batch", "sub_batch must be a positive integer, not 0"),
    ({"pause": 1.0}, "pause", "pause must be in [0, 1), not 1.0"),
    ({"seed": -1}, "seed", "seed must be a non-negative integer, not -1"),
])
def test_arguments_are_checked_before_anything_runs(kwargs, parameter, message):
    with pytest.raises(ExperimentError) as info:
        run_accel(TINY, **{**RUN, **kwargs})
    assert info.value.parameter == parameter
    assert str(info.value) == message
