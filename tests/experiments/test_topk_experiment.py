"""The top-k units' experiment (``rpaccel bench topk``) called directly, at the smallest size, no synthesis."""

import pytest

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.topk import run_topk
from rpaccel.rtl.topk import unit_latency


@pytest.mark.verilator
def test_run_topk_small_units_without_synthesis():
    config = preset("tiny").with_settings(["k_max=4"])
    report = run_topk(config, k_max=[4], lanes=[1, 2], candidates=40, queries=3, seed=4, synth=False)
    assert report.passed, report.failures
    assert [(r["k_max"], r["lanes"]) for r in report.rows] == [(4, 1), (4, 2)]
    for r in report.rows:
        assert r["mismatches"] == 0 and r["candidates"] == 120
        assert r["latency_cycles"] == r["designed_latency_cycles"] == unit_latency(4, lanes=r["lanes"])
    # Two lanes take two candidates per cycle.
    assert report.rows[1]["candidates_per_cycle"] > 1.5 * report.rows[0]["candidates_per_cycle"]
    assert report.data["synthesis"] == [] and report.data["pe"] is None
    [section] = report.sections
    assert section.name == "topk" and "queries of 40 random int32 scores" in section.body
    assert "Literature figures for comparison" in section.body


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k_max": [16, 0]}, "k_max must be positive integers, not [16, 0]"),
    ({"lanes": []}, "lanes must be positive integers, not []"),
    ({"candidates": 0}, "candidates must be a positive integer, not 0"),
    ({"queries": -1}, "queries must be a positive integer, not -1"),
    ({"seed": -2}, "seed must be a non-negative integer, not -2"),
])
def test_run_topk_checks_its_arguments(kwargs, message):
    with pytest.raises(ExperimentError) as info:
        run_topk(preset("small"), **kwargs)
    assert str(info.value) == message
