"""MLP engine: random MLPs on the tiny engine in the Amaranth simulator, and on the small engine in Verilator
(file-driven player), under random idle inputs and back-pressure, every output compared with the golden model."""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.rtl.mlp import EngineGeometry
from rpaccel.sim.golden.mlp import mlp_forward, random_input, random_mlp
from rpaccel.sim.mlp_harness import play_plan, simulate_plan
from rpaccel.sim.mlp_layout import chunk_limit, plan_engine

TINY, SMALL = preset("tiny"), preset("small")
# Widths the random shapes draw from: primes, powers of two and their neighbours, widths under the array's.
WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 31, 32, 33, 61, 64, 97, 100]


def random_jobs(rng, config, split, *, widths, max_layers, max_items):
    """A different random MLP and batch for every lane, and a random chunk size the lanes can all hold."""
    jobs = {}
    for lane in range(split):
        dims = [int(rng.choice(widths)) for _ in range(int(rng.integers(1, max_layers + 1)) + 1)]
        layers = random_mlp(rng, dims, raw_last=bool(rng.random() < 0.7))
        jobs[lane] = (layers, random_input(rng, int(rng.integers(1, max_items + 1)), dims[0]))
    geometry = EngineGeometry(config)
    limit = min(chunk_limit(geometry, split, layers) for layers, _ in jobs.values())
    return jobs, int(rng.integers(1, limit + 1))


def check(plan, jobs, outputs):
    for lane, (layers, inputs) in jobs.items():
        expected = mlp_forward(layers, inputs)
        assert outputs[lane].shape == expected.shape
        assert np.array_equal(outputs[lane], expected), f"lane {lane}: {np.argwhere(outputs[lane] != expected)[:5]}"


@pytest.mark.parametrize(("split", "pause", "seed"), [(1, 0.3, 1), (2, 0.0, 2), (4, 0.4, 3)])
def test_tiny_engine_in_the_amaranth_simulator(split, pause, seed):
    rng = np.random.default_rng(seed)
    jobs, chunk = random_jobs(rng, TINY, split, widths=[1, 2, 3, 4, 5, 7, 9], max_layers=3, max_items=12)
    plan = plan_engine(TINY, split, jobs, chunk=chunk)
    outputs, _ = simulate_plan(TINY, plan, pause=pause, seed=seed)
    check(plan, jobs, outputs)


@pytest.mark.verilator
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_small_engine_random_shapes_under_stalls(seed):
    rng = np.random.default_rng(seed)
    jobs, chunk = random_jobs(rng, SMALL, 1, widths=WIDTHS, max_layers=4, max_items=100)
    plan = plan_engine(SMALL, 1, jobs, chunk=chunk)
    outputs, result = play_plan(SMALL, plan, pause=0.3, seed=seed)
    check(plan, jobs, outputs)
    assert result.cycles > plan.tiles  # the stalls happened and every tile passed


@pytest.mark.verilator
@pytest.mark.parametrize(("split", "seed"), [(2, 21), (4, 22)])
def test_small_engine_sub_arrays_run_different_mlps_at_once(split, seed):
    rng = np.random.default_rng(seed)
    jobs, chunk = random_jobs(rng, SMALL, split, widths=WIDTHS, max_layers=3, max_items=60)
    plan = plan_engine(SMALL, split, jobs, chunk=chunk)
    outputs, result = play_plan(SMALL, plan, pause=0.25, seed=seed)
    check(plan, jobs, outputs)
    busy = [(result.ports[f"cmd{lane}"].first_cycle, result.ports[f"out{lane}"].last_cycle) for lane in jobs]
    assert max(start for start, _ in busy) < min(end for _, end in busy)  # the lanes overlapped in time


@pytest.mark.verilator
def test_scoreboard_catches_a_corrupted_weight():
    rng = np.random.default_rng(31)
    layers = random_mlp(rng, [20, 33, 5])
    jobs = {0: (layers, random_input(rng, 40, 20))}
    plan = plan_engine(SMALL, 1, jobs)
    plan.weights.words[plan.weights.bases[id(layers)][1] + 6, 3] ^= 0x10  # one weight of layer 1, n-tile 0
    outputs, _ = play_plan(SMALL, plan, seed=1)
    assert not np.array_equal(outputs[0], mlp_forward(layers, jobs[0][1]))
