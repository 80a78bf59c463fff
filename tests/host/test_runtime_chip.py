"""The accelerator backend on the chip's RTL: queries sent at their arrival, queueing inside the chip, exact
rankings."""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.host.quant import quantize
from rpaccel.host.runtime.chip import replay_on_chip
from rpaccel.host.runtime.cpu import CpuRanker
from rpaccel.host.runtime.pipeline import PipelineError, parse_pipeline
from rpaccel.host.train import FloatModel

from host_fixtures import tiny_data, tiny_dot

TINY = preset("tiny").with_settings(["weight_buffer_words=512"])


@pytest.fixture(scope="module")
def models():
    a, b = tiny_dot(name="a"), tiny_dot(name="b", bottom=(6, 4), top=(5, 1))
    calib = tiny_data(a, 1500)
    return {spec.name: quantize(FloatModel.initial(spec, seed=i + 3), calib) for i, spec in enumerate((a, b))}


@pytest.fixture(scope="module")
def device():
    from rpaccel.sim.chip import chip_device

    return chip_device(TINY)


@pytest.mark.verilator
@pytest.mark.slow
def test_queries_at_their_arrival_queue_inside_the_chip(models, device):
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=9000 + 48 * q) for q in range(4)]
    # Queries 0 and 1 far apart, 2 and 3 together (3 waits for 2 inside the chip).
    apart = replay_on_chip(device, TINY, models, stages, queries[:2], [0, 10**9])
    service = int(apart.finishes[0] - apart.arrivals[0])
    gap_ns = 10 * service * 1000 // int(TINY.clock_mhz)
    run = replay_on_chip(device, TINY, models, stages, queries, [0, gap_ns, 2 * gap_ns, 2 * gap_ns])
    assert not run.mismatches
    ranker = CpuRanker(stages, models)
    for records, ranking in zip(queries, run.rankings):
        indices, scores = ranker.rank(ranker.prepare(records))
        assert ranking == list(zip(scores.tolist(), indices.tolist()))
    latency = run.finishes - run.arrivals
    assert latency[0] == service and latency[1] == pytest.approx(service, rel=0.05)
    assert latency[3] > 1.5 * service      # waited for query 2
    assert run.latencies_ns[0] == pytest.approx(service * 1000 / TINY.clock_mhz)
    assert (np.diff(run.finishes) > 0).all()
    # The counters cover time zero to the end: every query's lookups, the lanes busy no longer than the window.
    lookups = sum(len(records) * models["a"].spec.num_tables for records in queries) + sum(
        12 * models["b"].spec.num_tables for _ in queries)
    assert run.counters["EMB_LOOKUPS"] == lookups
    assert run.end_cycle >= run.finishes.max() and 0 < run.counters["BUSY_LANE0"] <= run.end_cycle


def test_refused_before_anything_runs(models):
    stages = parse_pipeline("a:48:12,b:12:4")
    query = tiny_data(models["a"].spec, 48)
    with pytest.raises(PipelineError, match="Query 0: A query of 60 candidates does not fit stage 0"):
        replay_on_chip(None, TINY, models, stages, [tiny_data(models["a"].spec, 60)], [0])
    with pytest.raises(PipelineError, match="k = 40 is outside"):
        replay_on_chip(None, TINY, models, parse_pipeline("a:48:40"), [query], [0])
    with pytest.raises(PipelineError, match="non-decreasing"):
        replay_on_chip(None, TINY, models, stages, [query, query], [5, 0])
