"""The demo's experiment: the ranking query through two RTL blocks on Verilator glued by the host, and the checks
of its arguments."""

import pytest

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.demo import SCORING_MLP, run_demo, run_query
from rpaccel.host.reference import mlp_forward
from rpaccel.numeric import topk
from rpaccel.sim.golden.mlp import random_input, random_mlp


@pytest.mark.verilator
def test_ranking_query_on_the_rtl_matches_the_golden_ranking():
    import numpy as np

    report = run_query(preset("small"), candidates=97, k=10, seed=5, pause=0.3)
    assert report["ranking_matches_golden"], report
    assert [stage["mismatches"] for stage in report["stages"]] == [0, 0]
    assert report["stages"][1]["transactions"] == 10
    # The reported ranking is the golden one (same seed, same draws as run_query).
    rng = np.random.default_rng(5)
    layers = random_mlp(rng, SCORING_MLP, raw_last=True)
    logits = mlp_forward(layers, random_input(rng, 97, SCORING_MLP[0]))[:, 0]
    scores, indices = topk(logits, 10, np.arange(97))
    assert report["top"] == list(zip(scores.tolist(), indices.tolist()))[:5]


@pytest.mark.parametrize(("kwargs", "parameter", "message"), [
    ({"seed": -1}, "seed", "seed must be a non-negative integer, not -1"),
    ({"k": 65}, "k", "k must be between 1 and the small preset's K_MAX 64, not 65"),
    ({"candidates": 0}, "candidates", "candidates must be a positive integer, not 0"),
    ({"pause": 1.0}, "pause", "pause must be in [0, 1), not 1.0"),
    ({"count": 0}, "count", "count must be a positive integer, not 0"),
])
def test_demo_checks_its_arguments_before_running(kwargs, parameter, message):
    with pytest.raises(ExperimentError) as info:
        run_demo(preset("small"), **kwargs)
    assert info.value.parameter == parameter
    assert str(info.value) == message
