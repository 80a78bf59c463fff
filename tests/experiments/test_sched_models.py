"""``bench sched --models``: DeepRecSched across the zoo's models, its checks, a short run, and its section read by
the results file's status and claims tables."""

import math

import pytest

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.sched import models_section, run_sched_models
from rpaccel.results import read_sections, write_section


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"models": ["rmc1", "nope"]}, "models has an unknown model 'nope'"),
    ({"models": ["rmc1", "rmc1"]}, "models must be one or more distinct zoo models"),
    ({"models": []}, "models must be one or more distinct zoo models"),
    ({"device": "board"}, "device must be one of rtl, model, not 'board'"),
    ({"check_rtl": -1}, "check_rtl must be a non-negative integer or None"),
    ({"target_ms": -2}, "target_ms must be positive"), ({"target_x": 0}, "target_x must be positive"),
    ({"target_ms": 5, "target_x": 2}, "give target_ms or target_x, not both"),
    ({"train_samples": 0}, "train_samples must be a positive integer"),
    ({"cpu_sizes": (4,)}, "cpu_sizes must be two or more increasing"),
])
def test_bad_settings_are_refused_before_measuring(kwargs, message):
    with pytest.raises(ExperimentError, match=message):
        run_sched_models(preset("small"), **kwargs)


def test_a_short_run_over_four_kinds_of_model(tmp_path):
    report = run_sched_models(preset("small"), models=["rm-small", "wnd", "mt-wnd", "ncf"], queries=400,
                              cpu_sizes=(1, 64, 256), accel_sizes=(16, 64), check_rtl=0, train_samples=400)
    rows = {row["model"]: row for row in report.rows}
    # The chip runs RM-small and WnD (its dense inputs past the joiner); MT-WnD's 43 tables are more than small's
    # chip takes for a model (CPU alone); NCF has no float model.
    for name in ("rm-small", "wnd"):
        assert rows[name]["chip"] is None and set(rows[name]["accel_ns"]) == {16, 64}
        assert rows[name]["accel_ns"][64] > rows[name]["accel_ns"][16] > 0
    assert "43 tables exceed the 32 of a model" in rows["mt-wnd"]["chip"]
    assert rows["mt-wnd"]["accel_ns"] is None and rows["mt-wnd"]["ratio"] is None
    assert "no float implementation" in rows["ncf"]["refused"] and rows["ncf"]["cpu_ns"] is None
    cpu_ratios = [rows[name]["ratio_cpu"] for name in ("rm-small", "wnd", "mt-wnd")]
    for name in ("rm-small", "wnd", "mt-wnd"):
        assert rows[name]["ratio_cpu"] == pytest.approx(rows[name]["cpu_qps"] / rows[name]["static_qps"])
    # With the chip, DeepRecSched's best is at least its best on the CPU alone (the threshold climb adds settings).
    for name in ("rm-small", "wnd"):
        assert rows[name]["best_qps"] >= rows[name]["cpu_qps"]
    assert report.data["geomean_cpu"] == pytest.approx(math.prod(cpu_ratios) ** (1 / 3))
    assert report.data["geomean"] == pytest.approx(math.sqrt(rows["rm-small"]["ratio"] * rows["wnd"]["ratio"]))
    assert "| ncf | not run: no float implementation" in report.text
    assert "| wnd | runs |" in report.text and "| mt-wnd | cannot run: 43 tables exceed" in report.text
    # The section's table is what the status and claims tables read.
    path = tmp_path / "results.md"
    (section,) = report.sections
    write_section(section.name, section.title, section.body, command="rpaccel bench sched --models --write",
                  commit="abc1234", path=path)
    text = path.read_text()
    status = {row["figure"]: row for row in read_sections(text)["status"]["tables"][0]}
    measured = status["DeepRecSched over the static scheduler across the zoo's models, CPU cores alone"]["measured"]
    assert measured == f"{report.data['geomean_cpu']:.2f}x (geometric mean over 3 models)"
    claims = {row["claim"]: row for row in read_sections(text)["seed-claims"]["tables"][0]}
    on_chip = next(row for claim, row in claims.items() if claim.startswith("DeepRecSys: DeepRecSched with an "
                                                                             "accelerator") and "across" in claim)
    assert on_chip["ours"] == f"{report.data['geomean']:.2f}x (geometric mean over 2 models)"


def test_the_paper_chip_runs_a_model_too_large_for_small(tmp_path):
    """RMC3's 2,560 dense features do not fit a FETCH on small (its reason in the row); on paper's 128-wide words
    they do, and the chip's service times come from the timed model (paper has no RTL to check it against); the
    paper run's section is its own."""
    small = run_sched_models(preset("small"), models=["rmc3"], queries=300, cpu_sizes=(1, 64),
                             accel_sizes=(16, 64), check_rtl=0, train_samples=400)
    assert "dense_words" in small.rows[0]["chip"] and small.rows[0]["accel_ns"] is None
    paper = run_sched_models(preset("paper"), models=["rmc3"], queries=300, cpu_sizes=(1, 64),
                             accel_sizes=(16, 64), check_rtl=0, train_samples=400)
    (row,) = paper.rows
    assert row["chip"] is None and row["accel_ns"][64] > row["accel_ns"][16] > 0 and row["ratio"] is not None
    assert row["best_qps"] >= row["cpu_qps"] and "| rmc3 | runs |" in paper.text
    (section,) = paper.sections
    assert section.name == "sched-models-paper" and "the paper chip" in section.title


def test_a_multi_task_model_runs_on_a_chip_that_takes_its_tables():
    """MT-WnD's 43 tables fit paper's 48: the chip ranks by task 0's logit (its tower alone), which the section
    says."""
    assert preset("paper").max_tables == 48
    report = run_sched_models(preset("paper"), models=["mt-wnd"], queries=300,
                              cpu_sizes=(1, 64), accel_sizes=(16, 64), check_rtl=0, train_samples=400)
    (row,) = report.rows
    assert row["chip"] is None and row["accel_ns"][64] > row["accel_ns"][16] > 0 and row["ratio"] is not None
    assert "The chip ranks mt-wnd by task 0's logit and runs task 0's tower alone" in report.text


def test_a_configuration_for_modelling_only_has_no_rtl_to_check():
    with pytest.raises(ExperimentError, match="check_rtl=64: the paper configuration is for modelling only"):
        run_sched_models(preset("paper"), check_rtl=64)
    with pytest.raises(ExperimentError, match="device='rtl': the paper configuration"):
        run_sched_models(preset("paper"), device="rtl", check_rtl=0)
    assert models_section(preset("small")) == "sched-models"
    assert models_section(preset("paper")) == "sched-models-paper"
    assert models_section(preset("small").with_settings(["array_cols=16"])) == "sched-models-small-array-cols-16"


def test_the_geometric_mean_counts_a_ratio_of_zero():
    """A model where DeepRecSched meets the target at no load (ratio 0) is not dropped from the mean."""
    from rpaccel.experiments.sched import _geomean

    assert _geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert _geomean([2.0, 0.0]) == 0.0
    assert _geomean([None, 4.0]) == 4.0 and _geomean([None]) is None
