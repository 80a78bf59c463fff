"""MLP engine: random MLPs on the tiny engine in the Amaranth simulator, and on the small engine in Verilator
(file-driven player), under random idle inputs and back-pressure, every output compared with the golden model."""

import numpy as np
import pytest
from configs import SMALL16

from rpaccel.config import preset
from rpaccel.host.driver.mlp import chunk_limit, plan_engine
from rpaccel.host.reference import mlp_forward
from rpaccel.rtl.mlp import EngineGeometry
from rpaccel.sim.golden.mlp import random_input, random_mlp
from rpaccel.sim.mlp_harness import play_plan, simulate_plan

TINY, SMALL = preset("tiny"), SMALL16     # the engine at the size its figures were measured at
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


@pytest.mark.parametrize("split", [1, 4])
def test_tiny_engine_one_item_chunks_accumulate_back_to_back(split):
    """Chunks of one item over layers of several k-tiles: every item comes back for its next k-tile while its
    accumulator row has just been written (read, add and write back in consecutive cycles), under stalls."""
    rng = np.random.default_rng(50 + split)
    layers = random_mlp(rng, [13, 9, 6])  # one image shared by the lanes: tiny's weight memory is small
    jobs = {lane: (layers, random_input(rng, 3, 13)) for lane in range(split)}
    plan = plan_engine(TINY, split, jobs, chunk=1)
    outputs, _ = simulate_plan(TINY, plan, pause=0.3, seed=split)
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


def test_tiny_engine_changes_its_split_between_batches():
    """Quarters run four MLPs, then (once every lane is idle) the whole array runs a fifth: the split is a run-time
    setting, and the lanes' completion counters carry over."""
    from rpaccel.host.driver.codec import unpack
    from rpaccel.rtl.mlp import MLPEngine
    from rpaccel.sim.streams import StreamSink, StreamSource, payload_shape, run_simulation

    rng = np.random.default_rng(41)
    first, _ = random_jobs(rng, TINY, 4, widths=[1, 3, 5, 8], max_layers=2, max_items=6)
    plans = [plan_engine(TINY, 4, first)]
    counters = {lane: (program.inputs_done, program.layers_done) for lane, program in plans[0].lanes.items()}
    second = {0: (random_mlp(rng, [6, 9, 2]), random_input(rng, 7, 6))}
    plans.append(plan_engine(TINY, 1, second, counters=counters))
    dut = MLPEngine(TINY)
    got = [{}, {}]

    async def bench(ctx):
        for phase, plan in enumerate(plans):
            ctx.set(dut.split, plan.split)
            values = plan.player_inputs()
            await StreamSource(dut.wload).send(ctx, [unpack(payload_shape(dut.wload), v) for v in values["wload"]])
            # One lane at a time, its streams in turn: each batch is one chunk, so its few commands fit the lane's
            # queues before its inputs arrive.
            for lane, program in plan.lanes.items():
                assert len(program.chunks) == 1
                for port in (f"cmd{lane}", f"act{lane}"):
                    stream = getattr(dut, port)
                    await StreamSource(stream).send(ctx, [unpack(payload_shape(stream), v) for v in values[port]])
                got[phase][lane] = await StreamSink(getattr(dut, f"out{lane}")).receive(ctx, program.outputs)
            for _ in range(20):
                await ctx.tick()
            assert ctx.get(dut.idle) == (1 << TINY.splits[-1]) - 1

    run_simulation(dut, [bench], max_cycles=200_000, name="mlp-split-change")
    for phase, (plan, jobs) in enumerate(zip(plans, (first, second))):
        outputs = {lane: program.decode(np.array(got[phase][lane])) for lane, program in plan.lanes.items()}
        check(plan, jobs, outputs)


@pytest.mark.parametrize("levels", [("items", "ktiles"), ("items", "ktiles", "ntiles"), ("ktiles", "ntiles")])
def test_counter_nest_counts_every_iteration_in_order(levels):
    """Two nests back to back, stepped with random gaps: every step shows the counts of a Python loop nest, the
    ``last`` and ``wrap`` flags, and ``running`` drops with the outermost wrap."""
    from rpaccel.rtl.mlp import CounterNest
    from rpaccel.sim.streams import run_simulation

    dut = CounterNest(levels)
    rng = np.random.default_rng(len(levels))
    runs = [{level: int(rng.integers(1, 4)) for level in levels} for _ in range(2)]

    async def bench(ctx):
        for limits in runs:
            assert not ctx.get(dut.running)
            for level, limit in limits.items():
                ctx.set(dut.limit[level], limit)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for counts in np.ndindex(*(limits[level] for level in reversed(levels))):
                counts = dict(zip(reversed(levels), counts))
                while rng.random() < 0.3:  # an idle cycle changes nothing
                    assert ctx.get(dut.running) and ctx.get(dut.wrap.as_value()) == 0
                    await ctx.tick()
                ctx.set(dut.step, 1)
                last = {level: counts[level] == limits[level] - 1 for level in levels}
                assert ctx.get(dut.running)
                assert {level: ctx.get(dut.count[level]) for level in levels} == counts
                assert {level: bool(ctx.get(dut.last[level])) for level in levels} == last
                wraps = [all(last[inner] for inner in levels[:k + 1]) for k in range(len(levels))]
                assert [bool(ctx.get(dut.wrap[level])) for level in levels] == wraps
                await ctx.tick()
                ctx.set(dut.step, 0)
            assert not ctx.get(dut.running)

    run_simulation(dut, [bench], max_cycles=2_000, name="counter-nest")


def test_counter_nest_refuses_unknown_levels():
    from rpaccel.rtl.mlp import CounterNest

    with pytest.raises(ValueError, match=r"Counter nest levels must be some of items, ktiles, ntiles, not \('items', "
                                         r"'items'\)"):
        CounterNest(("items", "items"))
