"""The demo's ranking query: two RTL blocks on Verilator glued by the host, checked against the golden models."""

from argparse import Namespace

from rpaccel.cli.demo import SCORING_MLP, run_query
from rpaccel.host.reference import mlp_forward
from rpaccel.numeric import topk
from rpaccel.sim.golden.mlp import random_input, random_mlp


def test_ranking_query_on_the_rtl_matches_the_golden_ranking():
    import numpy as np

    args = Namespace(candidates=97, k=10, seed=5, pause=0.3)
    report = run_query(args)
    assert report["ranking_matches_golden"], report
    assert [stage["mismatches"] for stage in report["stages"]] == [0, 0]
    assert report["stages"][1]["transactions"] == 10
    # The reported ranking is the golden one (same seed, same draws as run_query).
    rng = np.random.default_rng(5)
    layers = random_mlp(rng, SCORING_MLP, raw_last=True)
    logits = mlp_forward(layers, random_input(rng, 97, SCORING_MLP[0]))[:, 0]
    scores, indices = topk(logits, 10, np.arange(97))
    assert report["top"] == list(zip(scores.tolist(), indices.tolist()))[:5]
