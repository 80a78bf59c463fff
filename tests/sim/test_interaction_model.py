"""The interaction unit's timing model (rpaccel.sim.model.interaction) against the RTL, cycle for cycle: every input
word's acceptance and every output word's cycle and value, in the Amaranth simulator (small programs) and on
Verilator through the Player (longer ones), with the output always ready and under back-pressure; a planted error
in the model that the regression catches."""

from itertools import islice

import numpy as np
import pytest
from amaranth.hdl import Module, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.config import preset
from rpaccel.host.driver.codec import codec, to_ints
from rpaccel.host.driver.interaction import encode_items, output_words
from rpaccel.rtl.interaction import MODES, Interaction, interaction_in_layout, interaction_out_layout, item_cycles
from rpaccel.sim.golden.interaction import random_items
from rpaccel.sim.model import interaction as model_interaction
from rpaccel.sim.model.interaction import InteractionModel, op_schedule
from rpaccel.sim.player import Player
from rpaccel.sim.streams import port_seed, run_simulation, xorshift_stalls

PRESETS = ("tiny", "small")


def unit_params(name):
    config = preset(name)
    return {"lanes": config.array_rows, "max_vectors": config.max_tables + 1, "max_dim": config.max_emb_dim}


def random_program(rng, params, batches, *, gaps, max_items=3, max_vectors=None):
    """Input words of ``batches`` random batches (either mode, random ``F``, ``d`` and ``(m, s)``), and per word a
    not-before cycle: 0, or with ``gaps`` a random later cycle from some items' first words on (idle stretches; the
    cycles never decrease, as the Player asks)."""
    lanes, max_dim = params["lanes"], params["max_dim"]
    max_vectors = max_vectors or params["max_vectors"]
    parts, firsts, cycles = [], [], 0
    for _ in range(batches):
        mode = ("dot", "cat")[int(rng.integers(2))]
        vectors = int(rng.integers(1, max_vectors + 1))
        dim = int(rng.choice([int(rng.integers(1, lanes + 1)), int(rng.integers(1, max_dim + 1)), lanes, max_dim]))
        count = int(rng.integers(1, max_items + 1))
        m, s = int(rng.integers(1, 1 << 16)), int(rng.integers(0, 30))
        words = encode_items(mode, random_items(rng, count, vectors, dim), m, s, **params)
        per_item = len(words) // count
        for item in range(count):
            cycles += item_cycles(mode, vectors, dim, lanes)
            firsts.append((sum(len(p) for p in parts) + item * per_item, cycles))
        parts.append(words)
    words = np.concatenate(parts)
    not_before = np.zeros(len(words), np.int64)
    if gaps:
        for first, cycle in firsts:
            if rng.random() < gaps:
                not_before[first] = int(rng.integers(0, cycle + 40))
    return words, np.maximum.accumulate(not_before)


def output_count(words, params):
    """Output words the unit puts out for input ``words`` (by the driver's rule, not the model's)."""
    columns = codec(interaction_in_layout(**params)).unpack(words)["params"]
    modes, vectors, dims = (columns[name].tolist() for name in ("mode", "vectors", "dim"))
    count, word = 0, 0
    while word < len(words):
        if vectors[word] and dims[word]:
            count += output_words(MODES[modes[word]], vectors[word], dims[word], params["lanes"])
            word += vectors[word] * -(-dims[word] // params["lanes"])
        else:
            word += 1
    return count


def ready_pattern(pause, seed, cycles):
    """The output's ready per cycle in a Player run with ``pause={"o": pause}`` and ``seed``."""
    return ~np.fromiter(islice(xorshift_stalls(pause, port_seed(seed, "o")), cycles), bool, cycles)


def simulate(params, words, not_before, ready=None, *, pair_lanes=2):
    """The RTL in the Amaranth simulator: every input word's acceptance cycle, the output words and their cycles
    (input words offered as the Player offers them, the output's ready from ``ready``, then always)."""
    dut = Interaction(**params, pair_lanes=pair_lanes)
    ints = to_ints(words)
    expected_outputs = output_count(words, params)
    accepted, out, out_cycles = [], [], []

    async def bench(ctx):
        payload, out_payload = Value.cast(dut.i.payload), Value.cast(dut.o.payload)
        word, cycle = 0, 0
        while len(out) < expected_outputs or word < len(ints):
            offer = bool(word < len(ints) and cycle >= not_before[word])
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(payload, ints[word])
            take = ready is None or cycle >= len(ready) or bool(ready[cycle])
            ctx.set(dut.o.ready, take)
            _, _, in_ready, valid, bits = await ctx.tick().sample(dut.i.ready, dut.o.valid, out_payload)
            if offer and in_ready:
                accepted.append(cycle)
                word += 1
            if take and valid:
                out.append(bits)
                out_cycles.append(cycle)
            cycle += 1

    run_simulation(dut, [bench], max_cycles=200_000, name="interaction-model")
    return np.array(accepted), out, np.array(out_cycles)


def check_against_amaranth(params, words, not_before, ready=None, *, pair_lanes=2):
    accepted, out, out_cycles = simulate(params, words, not_before, ready, pair_lanes=pair_lanes)
    run = InteractionModel(**params, pair_lanes=pair_lanes).run(words, not_before=not_before, ready=ready)
    np.testing.assert_array_equal(run.accepted, accepted, err_msg="input acceptance cycles")
    np.testing.assert_array_equal(run.output_cycles, out_cycles, err_msg="output cycles")
    assert to_ints(run.outputs) == out
    return run


# --- the ops and the packer's words of an item --------------------------------------------------------------------

@pytest.mark.parametrize("lanes, pair_lanes", [(4, 2), (8, 2), (4, 3), (1, 1), (16, 2)])
def test_op_schedule_counts_the_rtl_ops_and_words(lanes, pair_lanes):
    for mode in ("dot", "cat"):
        for vectors in (1, 2, 5, 9, 27):
            for dim in (1, 3, lanes, lanes + 1, 3 * lanes):
                schedule = op_schedule(mode, vectors, dim, lanes, pair_lanes)
                assert schedule.ops == item_cycles(mode, vectors, dim, lanes, pair_lanes)
                assert schedule.words == output_words(mode, vectors, dim, lanes)
                assert schedule.entry_op[-1] == schedule.ops - 1


# --- Amaranth simulator: every cycle of small programs -------------------------------------------------------------

@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", range(3))
def test_always_ready_matches_the_rtl(name, seed):
    params = unit_params(name)
    rng = np.random.default_rng(seed)
    words, not_before = random_program(rng, params, 6, gaps=0.3 if seed else 0.0, max_vectors=9)
    check_against_amaranth(params, words, not_before)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", range(2))
def test_back_pressure_matches_the_rtl(name, seed):
    # The Player's seeded random back-pressure (40%), and ready windows closed for up to 80 cycles at a time.
    params = unit_params(name)
    rng = np.random.default_rng(seed + 10)
    words, not_before = random_program(rng, params, 6, gaps=0.3, max_vectors=9)
    check_against_amaranth(params, words, not_before, ready_pattern(0.4, seed, 5000))
    windows = np.ones(2000, bool)
    for start in rng.integers(0, 1500, 8):
        windows[start:start + int(rng.integers(1, 80))] = False
    check_against_amaranth(params, words, not_before, windows)


@pytest.mark.parametrize("lanes, pair_lanes", [(4, 1), (4, 3), (4, 4), (2, 2), (1, 1)])
def test_other_unit_shapes_match_the_rtl(lanes, pair_lanes):
    # One, several and all pairs per op, one-lane words; gaps in the input and back-pressure.
    params = {"lanes": lanes, "max_vectors": 8, "max_dim": 9}
    rng = np.random.default_rng(lanes * 10 + pair_lanes)
    words, not_before = random_program(rng, params, 5, gaps=0.3)
    check_against_amaranth(params, words, not_before, pair_lanes=pair_lanes)
    check_against_amaranth(params, words, not_before, ready_pattern(0.3, pair_lanes, 4000), pair_lanes=pair_lanes)


@pytest.mark.parametrize("mode", ["dot", "cat"])
def test_a_job_of_one_item_matches_the_rtl(mode):
    # One item alone (the timed model asks for a job's timing alone; a sub-batch of one item crashed it), offered
    # at once and late.
    params = unit_params("tiny")
    words = encode_items(mode, random_items(np.random.default_rng(7), 1, 5, 4), 5, 4, **params)
    check_against_amaranth(params, words, np.zeros(len(words), np.int64))
    check_against_amaranth(params, words, np.arange(len(words), dtype=np.int64) * 3)


@pytest.mark.parametrize("mode, vectors, dim", [("cat", 2, 3), ("dot", 4, 3)])
def test_items_that_flush_back_to_back_run_out_of_credits(mode, vectors, dim):
    # Each item's last entry overflows its word: the packer takes a cycle more per item than the sequencer, so
    # after about 17 items the result queue's credits hold the sequencer back, and the input behind it (the
    # outputs keep the packer's pace either way).
    params = unit_params("tiny")
    assert op_schedule(mode, vectors, dim, params["lanes"], 2).flush
    words = encode_items(mode, random_items(np.random.default_rng(5), 60, vectors, dim), 5, 3, **params)
    run = check_against_amaranth(params, words, np.zeros(len(words), np.int64))
    unbound = InteractionModel(**params)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_interaction, "QUEUE_DEPTH", 1000)
        assert unbound.run(words).accepted[-1] < run.accepted[-1]


def test_empty_items_are_dropped_under_their_banks_gate():
    # Words of an item with no vectors or d = 0 (which the driver refuses) are taken under the gate of the next
    # item's bank and dropped.
    params = unit_params("tiny")
    unit = InteractionModel(**params)
    rng = np.random.default_rng(3)
    parts = [encode_items("dot", random_items(rng, 2, 5, 6), 9, 2, **params) for _ in range(3)]
    empty = unit._in.pack({"data": np.ones((1, params["lanes"]), np.int64),
                           "params": {"mode": 0, "vectors": 0, "dim": 3, "m": 1, "s": 0}})
    words = np.concatenate([parts[0], empty, empty, parts[1], empty, parts[2], empty])
    check_against_amaranth(params, words, np.zeros(len(words), np.int64))


# --- Verilator: longer programs ------------------------------------------------------------------------------------

class AcceptanceTap(wiring.Component):
    """A configuration's interaction unit with one more output stream, ``accepted``, that transfers in every cycle
    the unit takes an input word (never back-pressured: the Player's output cycles of it are the acceptances)."""

    def __init__(self, config):
        self.config = config
        lanes, max_vectors, max_dim = config.array_rows, config.max_tables + 1, config.max_emb_dim
        super().__init__({"i": In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim))),
                          "o": Out(stream.Signature(interaction_out_layout(lanes))),
                          "accepted": Out(stream.Signature(1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = Interaction.for_config(self.config)
        wiring.connect(m, wiring.flipped(self.i), unit.i)
        wiring.connect(m, unit.o, wiring.flipped(self.o))
        m.d.comb += self.accepted.valid.eq(self.i.valid & self.i.ready)
        return m


def check_against_player(name, words, not_before, pause, seed):
    """Run the preset's unit on Verilator and the model on the same words; every input word's acceptance, every
    output word and its cycle and the run's cycles must agree. Returns the Player's result and the model's run."""
    config = preset(name)
    unit = InteractionModel.for_config(config)
    result = Player(AcceptanceTap, config).run(
        {"i": words}, expect={"o": output_count(words, unit_params(name)), "accepted": len(words)},
        pause={"o": pause}, seed=seed, packed=True, words=True, direct=True, not_before={"i": not_before},
        output_cycles=True)
    ready = ready_pattern(pause, seed, result.cycles + 1) if pause else None
    run = unit.run(words, not_before=not_before, ready=ready)
    np.testing.assert_array_equal(run.accepted, result.output_cycles["accepted"], err_msg="input acceptance")
    np.testing.assert_array_equal(run.output_cycles, result.output_cycles["o"], err_msg="output cycles")
    np.testing.assert_array_equal(run.outputs, result.outputs["o"])
    assert run.cycles == result.cycles
    return result, run


@pytest.mark.verilator
@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_random_programs_match_verilator(name, pause):
    params = unit_params(name)
    for seed in range(12):
        rng = np.random.default_rng(100 * seed + int(pause * 10))
        words, not_before = random_program(rng, params, 30, gaps=0.3 if seed % 2 else 0.0, max_items=6)
        check_against_player(name, words, not_before, pause, seed + 1)


# --- planted errors, parameter errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("constant, change", [("ISSUE_TO_READ", -1), ("QUEUE_DEPTH", 1)])
def test_regression_catches_a_planted_error(monkeypatch, constant, change):
    # A datapath one stage shorter (every entry readable a cycle early), or a result queue one entry deeper (the
    # sequencer's credits one more): the Amaranth regression's cases, then items that run out of credits.
    params = unit_params("tiny")
    words, not_before = random_program(np.random.default_rng(1), params, 6, gaps=0.3, max_vectors=9)
    flushing = encode_items("cat", random_items(np.random.default_rng(5), 60, 2, 3), **params)
    cases = [(words, not_before), (flushing, np.zeros(len(flushing), np.int64))]
    expected = [simulate(params, w, nb) for w, nb in cases]
    monkeypatch.setattr(model_interaction, constant, getattr(model_interaction, constant) + change)
    wrong = 0
    for (w, nb), (accepted, _, out_cycles) in zip(cases, expected):
        run = InteractionModel(**params).run(w, not_before=nb)
        wrong += not (np.array_equal(run.accepted, accepted) and np.array_equal(run.output_cycles, out_cycles))
    assert wrong


@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 3, "max_vectors": 4, "max_dim": 4}, "lanes must be a power of two, not 3"),
    ({"lanes": 4, "max_vectors": 0, "max_dim": 4}, "max_vectors must be a positive integer, not 0"),
    ({"lanes": 4, "max_vectors": 4, "max_dim": 4, "pair_lanes": 5}, r"pair_lanes must be at most lanes \(4\), not 5"),
])
def test_model_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InteractionModel(**kwargs)


def test_run_refuses_what_the_unit_cannot_take():
    params = unit_params("tiny")
    unit = InteractionModel(**params)
    words = encode_items("dot", random_items(np.random.default_rng(2), 2, 3, 5), 3, 1, **params)
    with pytest.raises(ValueError, match=r"not_before must give one cycle per input word \(12\)"):
        unit.run(words, not_before=np.zeros(11, np.int64))
    with pytest.raises(ValueError, match=r"Item at input word 6 \(dot, 3 x 5\) needs 6 words, 5 are left"):
        unit.run(words[:-1])
    wide = unit._in.pack({"data": np.zeros((1, params["lanes"]), np.int64),
                          "params": {"mode": 1, "vectors": 10, "dim": 3, "m": 0, "s": 0}})
    with pytest.raises(ValueError, match=r"vectors per item must be in \[1, 9\], not 10"):
        unit.run(wide)
    with pytest.raises(ValueError, match="Ready pattern must be one-dimensional"):
        unit.run(words, ready=np.ones((2, 2), bool))


@pytest.mark.parametrize("lanes", [1, 4, 8, 16])
def test_timing_alone_reads_the_same_parameters(lanes):
    # values=False reads each word's parameters straight from its bits (at bit 8 * lanes: within a limb, across
    # two limbs, at a limb's start); the timing is the same.
    params = {"lanes": lanes, "max_vectors": 33, "max_dim": 64}
    words, not_before = random_program(np.random.default_rng(lanes), params, 20, gaps=0.3)
    unit = InteractionModel(**params, pair_lanes=min(lanes, 2))
    full, alone = unit.run(words, not_before=not_before), unit.run(words, not_before=not_before, values=False)
    assert alone.outputs is None
    np.testing.assert_array_equal(alone.accepted, full.accepted)
    np.testing.assert_array_equal(alone.output_cycles, full.output_cycles)


def test_no_words_no_cycles():
    run = InteractionModel(**unit_params("tiny")).run(np.zeros((0, 1), np.uint64))
    assert (run.accepted.size, run.output_cycles.size, run.outputs.shape, run.cycles) == (0, 0, (0, 1), 0)


@pytest.mark.verilator
@pytest.mark.parametrize("mode, vectors, dim, count", [("dot", 27, 4, 2000), ("cat", 33, 32, 400), ("cat", 5, 3, 3000)])
@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_long_runs_match_verilator(mode, vectors, dim, count, pause):
    # Long runs of one shape on the small preset's unit: RM-small's (the packer paced by back-pressure, the
    # sequencer by the credits), whole-word cat entries, and cat items that each flush.
    params = unit_params("small")
    words = encode_items(mode, random_items(np.random.default_rng(count), count, vectors, dim), 40_503, 21, **params)
    check_against_player("small", words, np.zeros(len(words), np.int64), pause, 7)


def test_all_items_at_once_equal_item_by_item(monkeypatch):
    # The leading items in closed form all at once (fixed points of the loader's and sequencer's recurrences)
    # against the same items one by one, on many random programs (the RTL checks of both are above).
    cases = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        params = unit_params(PRESETS[seed % 2])
        cases.append((params, *random_program(rng, params, 12, gaps=(0.0, 0.1, 0.5)[seed % 3], max_items=8)))
    runs = [InteractionModel(**params).run(words, not_before=nb, values=False) for params, words, nb in cases]
    for (params, words, nb), run in zip(cases, runs):
        # An all-ready pattern takes the items one by one through the packer's word loop.
        ready = InteractionModel(**params).run(words, not_before=nb, ready=np.ones(10, bool), values=False)
        np.testing.assert_array_equal(ready.accepted, run.accepted)
        np.testing.assert_array_equal(ready.output_cycles, run.output_cycles)
    monkeypatch.setattr(InteractionModel, "_leading", lambda self, items, state: (-1, [-1, -1], 0))
    for (params, words, nb), run in zip(cases, runs):
        alone = InteractionModel(**params).run(words, not_before=nb, values=False)
        np.testing.assert_array_equal(alone.accepted, run.accepted)
        np.testing.assert_array_equal(alone.output_cycles, run.output_cycles)
