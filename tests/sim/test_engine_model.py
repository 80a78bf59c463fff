"""The MLP engine's timing model (:mod:`rpaccel.sim.model.engine`) against the RTL engine on Verilator: every output
transfer's cycle and the run's cycles equal, over random plans on ``tiny`` (every split, one to four lanes at once
with their own or a shared MLP, partial tiles, chunks, up to the chunk limit) and ``small``, long random plans (many
chunks, n-tiles and k-tiles), plans whose steps repeat (the model's shortcuts), tiny's quarters with long chunks
(results faster than the post-processors: the sub-array stalls), a lane of 900 commands (the 8-bit completion
counters wrap), lanes of different lengths (the last one left alone), lanes busy on the weight memory together
(robust runs), not-before cycles on weight words, commands and input words, back-pressured outputs, and the
Player's pause on every port. Planted errors the regression catches: one cycle less of post-processing, a sub-array
that never stalls, an accumulator FIFO without credits, a lane firing alone one cycle past its horizon, robust
bounds one competitor short, timed words offered a cycle early, a result FIFO without credits, inputs that never
idle."""

from itertools import islice
from types import SimpleNamespace

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.host.driver.device import NO_CYCLE, TraceError
from rpaccel.host.driver.mlp import chunk_limit, plan_engine
from rpaccel.host.reference import MLPError
from rpaccel.rtl.mlp import EngineGeometry
from rpaccel.sim.golden.mlp import random_input, random_mlp
from rpaccel.sim.mlp_harness import play_plan
from rpaccel.sim.model import engine
from rpaccel.sim.model.engine import engine_timing
from rpaccel.sim.streams import port_seed, xorshift_stalls

TINY, SMALL = preset("tiny"), preset("small")
# Primes, powers of two and their neighbours, widths under the sub-arrays': partial tiles in K and N.
WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 31, 33]
TINY_SEEDS = range(24)
SMALL_SEEDS = range(100, 106)
# Tiny's quarters with full chunks (results faster than the two-beat post-processors for long): (layer widths,
# items a lane, lanes).
STALL_CASES = [([3, 6], 32, 1), ([9, 6, 5], 32, 2), ([4, 8], 30, 4), ([5, 8, 4], 32, 1), ([2, 10], 32, 3)]


def random_plan(config, seed):
    """A random plan: a split, a random set of its lanes, each with its own MLP or all sharing one, a random batch
    (1 to 40 items) and, in most plans, a random chunk size; the weight image must fit."""
    geometry = EngineGeometry(config)
    rng = np.random.default_rng(seed)
    while True:
        split = int(rng.choice(list(geometry.splits)))
        lanes = sorted(rng.choice(split, int(rng.integers(1, split + 1)), replace=False).tolist())
        shared = rng.random() < 0.5
        jobs, layers = {}, None
        for lane in lanes:
            if layers is None or not shared:
                dims = [int(rng.choice(WIDTHS)) for _ in range(int(rng.integers(2, 5)))]
                layers = random_mlp(rng, dims, raw_last=bool(rng.random() < 0.7))
            jobs[lane] = (layers, random_input(rng, int(rng.integers(1, 41)), layers[0].shape[0]))
        try:
            limit = min(chunk_limit(geometry, split, mlp) for mlp, _ in jobs.values())
            chunk = int(rng.integers(1, limit + 1)) if rng.random() < 0.6 else None
            return plan_engine(config, split, jobs, chunk=chunk)
        except MLPError:  # the image does not fit the weight memory: draw again
            continue


def random_long_plan(config, seed):
    """A random long plan: 2 to 5 layers of widths up to 128, 50 to 400 items a lane (one lane in most plans,
    sharing one MLP otherwise), any chunk size: many chunks, n-tiles and k-tiles for the model's repeats."""
    geometry = EngineGeometry(config)
    rng = np.random.default_rng(seed)
    widths = [3, 8, 13, 16, 17, 24, 32, 33, 48, 64, 100, 128]
    while True:
        split = int(rng.choice(list(geometry.splits)))
        lanes = int(rng.integers(1, split + 1)) if rng.random() < 0.3 else 1
        layers = random_mlp(rng, [int(rng.choice(widths)) for _ in range(int(rng.integers(3, 7)))])
        jobs = {lane: (layers, random_input(rng, int(rng.integers(50, 401)), layers[0].shape[0]))
                for lane in range(lanes)}
        try:
            chunk = int(rng.integers(1, chunk_limit(geometry, split, layers) + 1)) if rng.random() < 0.5 else None
            return plan_engine(config, split, jobs, chunk=chunk)
        except MLPError:
            continue


_RTL = {}


def stall_plan(case):
    """The plan of ``STALL_CASES[case]`` on tiny's quarters, the lanes sharing one MLP, each its own batch."""
    dims, items, lanes = STALL_CASES[case]
    rng = np.random.default_rng(case)
    layers = random_mlp(rng, dims)
    return plan_engine(TINY, 4, {lane: (layers, random_input(rng, items, dims[0])) for lane in range(lanes)})


def rtl_run(config, seed):
    """The plan of ``seed`` (``("stall", case)``: a stall case; ``("long", seed)``: a long plan) and its Verilator
    run (cached: the planted-error tests reuse the runs)."""
    key = (config.name, seed)
    if key not in _RTL:
        if isinstance(seed, tuple):
            plan = stall_plan(seed[1]) if seed[0] == "stall" else random_long_plan(config, seed[1])
        else:
            plan = random_plan(config, seed)
        _RTL[key] = plan, play_plan(config, plan, output_cycles=True)[1]
    return _RTL[key]


def mismatches(timing, result):
    """``{port: (first index, model cycle, RTL cycle)}`` of every stream whose cycles differ, and the run's cycles
    if they differ."""
    found = {}
    for port, cycles in result.output_cycles.items():
        rtl = np.asarray(cycles, dtype=np.int64)
        model = timing.outputs.get(port, np.zeros(0, dtype=np.int64))
        if len(model) != len(rtl):
            found[port] = ("count", len(model), len(rtl))
        elif not np.array_equal(model, rtl):
            first = int(np.flatnonzero(model != rtl)[0])
            found[port] = (first, int(model[first]), int(rtl[first]))
    if timing.cycles != result.cycles:
        found["cycles"] = (timing.cycles, result.cycles)
    return found


@pytest.mark.verilator
@pytest.mark.parametrize(("config", "seed"), [(TINY, seed) for seed in TINY_SEEDS]
                         + [(TINY, ("stall", case)) for case in range(len(STALL_CASES))]
                         + [(SMALL, seed) for seed in SMALL_SEEDS]
                         + [(TINY, ("long", seed)) for seed in range(12)]
                         + [(SMALL, ("long", seed)) for seed in range(4)])
def test_every_output_cycle_equals_the_rtl(config, seed):
    plan, result = rtl_run(config, seed)
    assert mismatches(engine_timing(plan), result) == {}


def test_the_regression_covers_splits_lanes_chunks_and_partial_tiles():
    plans = [random_plan(TINY, seed) for seed in TINY_SEEDS]
    assert {plan.split for plan in plans} == set(EngineGeometry(TINY).splits)
    assert any(len(plan.lanes) > 1 for plan in plans)
    assert any(len(plan.lanes) == 1 and plan.split > 1 for plan in plans)
    assert any(len(program.chunks) > 1 for plan in plans for program in plan.lanes.values())
    assert any(min(size for _, size in program.chunks) == 1 for plan in plans for program in plan.lanes.values())
    assert any(plan.geometry.splits[plan.split].beats > 1 for plan in plans)
    shapes = {command["ktiles"] > 1 for plan in plans for program in plan.lanes.values()
              for command in program.commands if command["op"]}
    assert shapes == {True, False}
    assert any(program.out_features % program.cols for plan in plans for program in plan.lanes.values())


@pytest.mark.verilator
def test_a_model_with_one_cycle_less_of_post_processing_is_caught(monkeypatch):
    monkeypatch.setattr(engine, "TO_WRITER", engine.TO_WRITER - 1)
    wrong = [seed for seed in TINY_SEEDS[:4] if mismatches(engine_timing(rtl_run(TINY, seed)[0]),
                                                            rtl_run(TINY, seed)[1])]
    assert wrong == list(TINY_SEEDS[:4])


def caught(cases):
    """The stall cases whose cycles the (patched) model gets wrong."""
    return [case for case in cases if mismatches(engine_timing(rtl_run(TINY, ("stall", case))[0]),
                                                 rtl_run(TINY, ("stall", case))[1])]


@pytest.mark.verilator
def test_a_model_whose_sub_array_never_stalls_is_caught(monkeypatch):
    """Rule 13: four lanes of 30 items, each result two beats of the post-processors: the accumulator FIFO's
    credits run out and the sub-arrays stall while their output FIFOs hold two results."""
    monkeypatch.setattr(engine._Stalls, "add", lambda self, start, end: None)
    assert caught([2]) == [2]


@pytest.mark.verilator
def test_a_model_without_the_accumulator_credits_is_caught(monkeypatch):
    monkeypatch.setattr(engine, "Accumulator", SimpleNamespace(ACC_FIFO=1 << 20))
    assert caught([0, 2]) == [0, 2]


@pytest.mark.verilator
def test_waits_past_the_counters_wrap():
    """Chunks of one item: 300 INPUT and 600 LAYER commands on one lane, so the 8-bit completion counters the
    commands wait on wrap around (rtl.mlp.satisfied)."""
    rng = np.random.default_rng(9)
    plan = plan_engine(TINY, 2, {0: (random_mlp(rng, [5, 3, 2]), random_input(rng, 300, 5))}, chunk=1)
    _, result = play_plan(TINY, plan, output_cycles=True)
    assert mismatches(engine_timing(plan), result) == {}


# Plans long enough for the model's shortcuts (a lane alone): repeating middle k-tiles, n-tiles and chunks.
# (configuration, split, layer widths, items, chunk).
REPEATING = [(SMALL, 1, [13, 64, 4], 300, 20), (SMALL, 2, [40, 100, 9], 120, 24), (TINY, 4, [4, 12], 120, 8),
             (TINY, 1, [9, 24, 5], 200, 16), (TINY, 2, [13, 30, 6], 60, None)]


@pytest.mark.verilator
@pytest.mark.parametrize("case", range(len(REPEATING)))
def test_repeating_steps_are_taken_in_one_go_exactly(case, monkeypatch):
    config, split, dims, items, chunk = REPEATING[case]
    rng = np.random.default_rng(case)
    plan = plan_engine(config, split, {0: (random_mlp(rng, dims), random_input(rng, items, dims[0]))}, chunk=chunk)
    jumps = []
    shift = engine._Lane._shift
    monkeypatch.setattr(engine._Lane, "_shift", lambda self, *args: jumps.append(args) or shift(self, *args))
    timing = engine_timing(plan)
    assert jumps
    _, result = play_plan(config, plan, output_cycles=True)
    assert mismatches(timing, result) == {}


def test_layers_complete_in_order_after_their_outputs():
    plan = random_plan(TINY, 3)
    timing = engine_timing(plan)
    for lane, program in plan.lanes.items():
        done = timing.layers_done[lane]
        assert len(done) == sum(1 for command in program.commands if command["op"])
        assert np.all(np.diff(done) > 0)
        assert done[-1] == timing.outputs[f"out{lane}"][-1] + 1  # two cycles after the writer took the last one
    later = engine_timing(plan, release=len(plan.weights.words) + 100)
    assert later.cycles == timing.cycles + 100


def test_the_model_runs_configurations_too_large_for_the_rtl():
    paper = preset("paper")
    rng = np.random.default_rng(7)
    layers = random_mlp(rng, [13, 512, 256, 64])
    plan = plan_engine(paper, 1, {0: (layers, random_input(rng, 300, 13))})
    timing = engine_timing(plan)
    assert len(timing.outputs["out0"]) == plan.lanes[0].outputs
    assert np.all(np.diff(timing.outputs["out0"]) > 0)


def test_a_negative_release_is_refused():
    with pytest.raises(ValueError, match="release cycle must not be negative, not -1"):
        engine_timing(random_plan(TINY, 0), release=-1)


def mixed_lanes_plan(config, split, case):
    """Lanes running different MLPs of different lengths (as RecPipe's stages on separate lanes): the short ones
    finish first, the last one then runs alone on the weight memory."""
    rng = np.random.default_rng(case)
    short, long = random_mlp(rng, [7, 8, 3]), random_mlp(rng, [7, 24, 16, 5])
    geometry = EngineGeometry(config)
    chunk = min(chunk_limit(geometry, split, short), chunk_limit(geometry, split, long), 16)
    jobs = {lane: (short, random_input(rng, 24 + 8 * lane, 7)) for lane in range(split - 1)}
    jobs[split - 1] = (long, random_input(rng, 150, 7))
    return plan_engine(config, split, jobs, chunk=chunk)


@pytest.mark.verilator
@pytest.mark.parametrize(("config", "split"), [(TINY, 2), (TINY, 4), (SMALL, 2)])
def test_a_lane_left_alone_repeats_its_steps_exactly(config, split, monkeypatch):
    plan = mixed_lanes_plan(config, split, split)
    jumps = []
    shift = engine._Lane._shift
    monkeypatch.setattr(engine._Lane, "_shift", lambda self, *args: jumps.append(args) or shift(self, *args))
    timing = engine_timing(plan)
    assert jumps
    assert mismatches(timing, play_plan(config, plan, output_cycles=True)[1]) == {}


@pytest.mark.verilator
def test_a_lane_alone_one_cycle_too_long_is_caught(monkeypatch):
    """A lane that fires alone up to one cycle after another lane's request: the arbiter's choice in that cycle is
    missed."""
    late = property(lambda self: self.__dict__["late"] + 1,
                    lambda self, value: self.__dict__.__setitem__("late", value))
    monkeypatch.setattr(engine._Lane, "horizon", late, raising=False)
    cases = [(TINY, 0), (TINY, 7), (TINY, 9), (SMALL, 100)]  # plans of several lanes where it matters
    assert all(len(random_plan(config, seed).lanes) > 1 for config, seed in cases)
    assert [case for case in cases if mismatches(engine_timing(rtl_run(*case)[0]), rtl_run(*case)[1])] == cases


# Lanes busy on the weight memory together for long: (configuration, split, per lane (layer widths, items), chunk).
# The model runs them exactly until their word FIFOs are ahead, then robust (each lane alone, with the bounds the
# arbiter keeps each word's fire in).
CONTENDED = [(SMALL, 2, [([13, 64, 32, 8], 200), ([13, 64, 32, 8], 200)], None),
             (SMALL, 2, [([13, 64, 4], 900), ([13, 96, 64, 16], 150)], None),
             (TINY, 4, [([7, 16, 5], 120), ([9, 12, 6], 150), ([7, 16, 5], 100), ([5, 12, 8, 3], 160)], 8),
             (TINY, 2, [([9, 24, 6], 300), ([6, 16, 4], 250)], None)]


def contended_plan(case):
    """``(configuration, plan)`` of ``CONTENDED[case]``."""
    config, split, lanes, chunk = CONTENDED[case]
    rng = np.random.default_rng(case)
    mlps = {}  # lanes of the same widths share one MLP
    for dims, _ in lanes:
        if tuple(dims) not in mlps:
            mlps[tuple(dims)] = random_mlp(rng, dims)
    jobs = {lane: (mlps[tuple(dims)], random_input(rng, items, dims[0])) for lane, (dims, items) in enumerate(lanes)}
    return config, plan_engine(config, split, jobs, chunk=chunk)


@pytest.mark.verilator
@pytest.mark.parametrize("case", range(len(CONTENDED)))
def test_lanes_busy_together_run_robust_exactly(case, monkeypatch):
    config, plan = contended_plan(case)
    tries = []
    arbitrate = engine._arbitrate
    monkeypatch.setattr(engine, "_arbitrate", lambda lanes, robust_from, done: tries.append(robust_from)
                        or arbitrate(lanes, robust_from, done))
    timing = engine_timing(plan)
    assert tries[-1] < timing.cycles // 2  # robust for most of the run
    assert mismatches(timing, play_plan(config, plan, output_cycles=True)[1]) == {}


@pytest.mark.verilator
def test_a_robust_bound_one_cycle_short_is_caught(monkeypatch):
    """Robust lanes that take the arbiter to grant a waiting lane within one decision fewer than there are lanes:
    a word they take as safe moves."""
    competitors = engine._Lane.competitors
    monkeypatch.setattr(engine._Lane, "competitors", lambda self, t: competitors(self, t) - 1)
    cases = [(TINY, 0), (TINY, 2)]
    assert [case for case in cases if mismatches(engine_timing(rtl_run(*case)[0]), rtl_run(*case)[1])] == cases


def not_before(plan, seed, spread):
    """Random not-before cycles (up to ``spread``) on about a third of each lane's commands and input words and,
    in half the plans, a twentieth of the weight words."""
    rng = np.random.default_rng(seed)
    ports = {"wload": len(plan.weights.words)} if rng.random() < 0.5 else {}
    for lane, program in plan.lanes.items():
        ports[f"cmd{lane}"], ports[f"act{lane}"] = len(program.commands), len(program.inputs)
    cycles = {}
    for port, count in ports.items():
        cycles[port] = np.full(count, NO_CYCLE, dtype=np.int64)
        pick = rng.random(count) < (0.05 if port == "wload" else 0.3)
        cycles[port][pick] = np.sort(rng.integers(0, spread, int(pick.sum())))
    return cycles


# Plans with not-before cycles: (configuration, seed of a random plan, or ("long", seed)).
TIMED = [(TINY, 3), (TINY, 7), (TINY, 17), (TINY, ("long", 1)), (TINY, ("long", 8)), (SMALL, 101), (SMALL, 104),
         (SMALL, ("long", 2))]


def timed_run(case):
    """A plan of ``TIMED[case]``, its not-before cycles and its Verilator run."""
    config, seed = TIMED[case]
    key = (config.name, ("timed", case))
    if key not in _RTL:
        plan = random_long_plan(config, seed[1]) if isinstance(seed, tuple) else random_plan(config, seed)
        cycles = not_before(plan, case, engine_timing(plan).cycles + 100)
        _RTL[key] = (plan, cycles), play_plan(config, plan, output_cycles=True, not_before=cycles)[1]
    return _RTL[key]


@pytest.mark.verilator
@pytest.mark.parametrize("case", range(len(TIMED)))
def test_not_before_cycles_keep_every_output_cycle_exact(case):
    (plan, cycles), result = timed_run(case)
    assert mismatches(engine_timing(plan, not_before=cycles), result) == {}


@pytest.mark.verilator
def test_a_model_that_offers_timed_words_a_cycle_early_is_caught(monkeypatch):
    checked = engine.not_before_array
    monkeypatch.setattr(engine, "not_before_array", lambda *args: np.where(
        checked(*args) > 0, checked(*args) - 1, checked(*args)))
    assert all(mismatches(engine_timing(timed_run(case)[0][0], not_before=timed_run(case)[0][1]), timed_run(case)[1])
               for case in range(len(TIMED)))


def test_not_before_cycles_are_checked():
    plan = random_plan(TINY, 0)
    with pytest.raises(ValueError, match="'cmd7', which is not an input port of the plan"):
        engine_timing(plan, not_before={"cmd7": [1]})
    with pytest.raises(TraceError, match="cmd"):
        engine_timing(plan, not_before={f"cmd{min(plan.lanes)}": [5, 3]})
    with pytest.raises(ValueError, match="either the release cycle or the weight words"):
        engine_timing(plan, release=10, not_before={"wload": [None] * len(plan.weights.words)})


# Plans with back-pressured outputs: (configuration, seed of a random plan, or ("long", seed), pause per lane).
PAUSED = [(TINY, 3, 0.3), (TINY, 7, 0.9), (TINY, 17, 0.6), (TINY, ("long", 1), 0.5), (TINY, ("stall", 2), 0.8),
          (SMALL, 101, 0.3), (SMALL, ("long", 2), 0.9)]


def paused_run(case):
    """A plan of ``PAUSED[case]``, its ports' pause, not-before cycles in every other case, and its Verilator run
    (seeded with the case)."""
    config, seed, probability = PAUSED[case]
    key = (config.name, ("paused", case))
    if key not in _RTL:
        plan = rtl_run(config, seed)[0] if isinstance(seed, tuple) else random_plan(config, seed)
        pause = {f"out{lane}": probability for lane in plan.lanes}
        cycles = not_before(plan, case, engine_timing(plan).cycles) if case % 2 else {}
        _RTL[key] = ((plan, pause, cycles),
                     play_plan(config, plan, output_cycles=True, pause=pause, seed=case + 1, not_before=cycles)[1])
    return _RTL[key]


def paused_mismatches(case):
    (plan, pause, cycles), result = paused_run(case)
    return mismatches(engine_timing(plan, pause=pause, seed=case + 1, not_before=cycles), result)


@pytest.mark.verilator
@pytest.mark.parametrize("case", range(len(PAUSED)))
def test_back_pressured_outputs_keep_every_output_cycle_exact(case):
    assert paused_mismatches(case) == {}


# Plans run with the Player's pause on every port (idle inputs, back-pressured outputs): (configuration, seed of a
# random plan, or ("long", seed), or ("stall", case), pause).
IDLE = [(TINY, 5, 0.3), (TINY, 13, 0.6), (TINY, ("long", 6), 0.3), (TINY, ("stall", 1), 0.5), (SMALL, 102, 0.3),
        (SMALL, ("long", 0), 0.6)]


def idle_mismatches(case):
    """Where the model's cycles of ``IDLE[case]`` differ from its Verilator run's."""
    config, seed, pause = IDLE[case]
    key = (config.name, ("idle", case))
    if key not in _RTL:
        plan = rtl_run(config, seed)[0] if isinstance(seed, tuple) else random_plan(config, seed)
        _RTL[key] = plan, play_plan(config, plan, output_cycles=True, pause=pause, seed=case + 7)[1]
    plan, result = _RTL[key]
    return mismatches(engine_timing(plan, pause=pause, seed=case + 7), result)


@pytest.mark.verilator
@pytest.mark.parametrize("case", range(len(IDLE)))
def test_idle_inputs_and_back_pressure_keep_every_output_cycle_exact(case):
    assert idle_mismatches(case) == {}


@pytest.mark.verilator
def test_a_model_whose_inputs_never_idle_is_caught(monkeypatch):
    first = engine._Pattern.first
    monkeypatch.setattr(engine._Pattern, "first",
                        lambda self, t: first(self, t) if self.port.startswith("out") else t)
    assert all(idle_mismatches(case) for case in range(len(IDLE)))


@pytest.mark.verilator
def test_a_result_fifo_without_credits_is_caught(monkeypatch):
    """Outputs held long enough fill the result FIFO: the beat issuer waits for its credits, the accumulator FIFO
    fills, the sub-array stalls."""
    monkeypatch.setattr(engine, "BeatIssuer", SimpleNamespace(RESULT_FIFO=1 << 20))
    assert [case for case in (1, 6) if paused_mismatches(case)] == [1, 6]


def test_pause_is_for_the_plans_ports():
    plan = random_plan(TINY, 0)
    with pytest.raises(ValueError, match="'cmd7', which is not a port of the plan"):
        engine_timing(plan, pause={"cmd7": 0.5})
    with pytest.raises(ValueError, match="either the release cycle or the weight words' not-before cycles or pause"):
        engine_timing(plan, release=10, pause=0.5)


@pytest.mark.parametrize(("pause", "seed", "cycles"), [(0.3, 1, 1), (0.6, 5, 17), (0.9, 12345, 5000), (0.1, 7, 70001)])
def test_the_models_stall_pattern_is_the_players(pause, seed, cycles):
    """The model draws the Player's xorshift stall pattern vectorised (streams a jump apart); every cycle's ready
    equals :func:`~rpaccel.sim.streams.xorshift_stalls`'s, and each cycle's next ready cycle follows."""
    stalled = np.fromiter(islice(xorshift_stalls(pause, port_seed(seed, "out1")), cycles), dtype=bool)
    ready = engine._Pattern(pause, seed, "out1")
    firsts = [ready.first(t) for t in range(cycles)]
    assert np.array_equal(np.array(firsts) == np.arange(cycles), ~stalled)
    assert all(first >= cycles or not stalled[first] for first in firsts)
