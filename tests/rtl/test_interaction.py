"""Interaction unit: Amaranth-simulator scoreboard against host.reference.interact, throughput, a planted bug,
parameter errors of the unit and the driver layer, and Verilator runs (10,000 RM-small items, mixed models)."""

import numpy as np
import pytest
from amaranth.hdl import Fragment, Instance
from configs import SMALL16

from rpaccel.config import preset
from rpaccel.flow.equivalence import ECP5_STAND_IN, EquivalenceFailure, check_ecp5_equivalence
from rpaccel.host.driver.codec import codec, from_ints, to_ints
from rpaccel.host.driver.interaction import decode_items, encode_items, output_width, output_words
from rpaccel.rtl import interaction as rtl_interaction
from rpaccel.rtl.interaction import Interaction, interaction_in_layout, interaction_out_layout, item_cycles
from rpaccel.sim.golden.interaction import interaction_model, random_items
from rpaccel.sim.player import Player
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation


def make_batch(rng, mode, count, vectors, dim):
    """A batch of random items with random requantisation parameters, and its expected outputs."""
    items = random_items(rng, count, vectors, dim)
    m, s = (int(rng.integers(1, 1 << 16)), int(rng.integers(0, 30))) if mode == "dot" else (0, 0)
    return {"mode": mode, "items": items, "m": m, "s": s, "width": output_width(mode, vectors, dim),
            "expected": interaction_model(mode, items, m, s)}


def encode(batches, *, lanes, max_vectors, max_dim):
    return np.concatenate([encode_items(b["mode"], b["items"], b["m"], b["s"], lanes=lanes, max_vectors=max_vectors,
                                        max_dim=max_dim) for b in batches])


def run(dut, words, count, *, in_pause=0.0, out_pause=0.0, seed=0):
    """Stream packed input ``words`` into ``dut``; the ``count`` output words as ints and their cycles."""
    in_codec = codec(interaction_in_layout(dut.lanes, dut.max_vectors, dut.max_dim))
    out_codec = codec(interaction_out_layout(dut.lanes))
    values = [in_codec.unpack_value(word) for word in to_ints(words)]
    got, out_cycles = [], []

    async def send(ctx):
        await StreamSource(dut.i, pause=in_pause, seed=seed).send(ctx, values)

    async def receive(ctx):
        got.extend(await StreamSink(dut.o, pause=out_pause, seed=seed + 1).receive(ctx, count))

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(dut.o.valid, dut.o.ready):
            if valid and ready:
                out_cycles.append(cycle)
            cycle += 1

    run_simulation(dut, [send, receive], processes=[monitor], max_cycles=500_000, name="interaction")
    return [out_codec.pack_value(value) for value in got], out_cycles


def check(dut, batches, **kwargs):
    """Run the batches back to back and compare every item's output with the reference."""
    counts = [len(b["items"]) * -(-b["width"] // dut.lanes) for b in batches]
    words = encode(batches, lanes=dut.lanes, max_vectors=dut.max_vectors, max_dim=dut.max_dim)
    got, cycles = run(dut, words, sum(counts), **kwargs)
    start = 0
    for b, count in zip(batches, counts):
        out = decode_items(got[start:start + count], b["width"], lanes=dut.lanes)
        np.testing.assert_array_equal(out, b["expected"], err_msg=f"{b['mode']} items of shape "
                                      f"{b['items'].shape[1:]}")
        start += count
    return cycles


# --- the scoreboard ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lanes, pair_lanes, vectors, dim, multiplier", [
    (4, 2, 5, 4, "dsp"), (4, 3, 6, 3, "dsp"), (4, 2, 4, 10, "dsp"), (8, 1, 3, 8, "dsp"), (2, 2, 7, 5, "dsp"),
    (1, 1, 3, 2, "dsp"), (4, 2, 1, 4, "dsp"), (4, 4, 2, 4, "dsp"), (4, 4, 8, 4, "dsp"),
    (4, 2, 5, 4, "lut"), (4, 3, 6, 3, "lut"), (8, 1, 3, 8, "lut"),
])
def test_both_modes_bit_exact_under_stalls(lanes, pair_lanes, vectors, dim, multiplier):
    rng = np.random.default_rng(lanes * 1000 + pair_lanes * 100 + vectors * 10 + dim)
    dut = Interaction(lanes=lanes, max_vectors=8, max_dim=16, pair_lanes=pair_lanes, multiplier=multiplier)
    batches = [make_batch(rng, mode, int(rng.integers(1, 4)), vectors, dim)
               for mode in ("dot", "cat", "dot", "cat", "cat", "dot")]
    check(dut, batches, in_pause=0.3, out_pause=0.4, seed=vectors)


def test_items_of_different_shapes_follow_each_other():
    rng = np.random.default_rng(7)
    dut = Interaction(lanes=4, max_vectors=9, max_dim=12)
    shapes = [(9, 12), (2, 1), (5, 4), (1, 7), (9, 1), (3, 12), (6, 5)]
    batches = [make_batch(rng, mode, 2, vectors, dim) for vectors, dim in shapes for mode in ("dot", "cat")]
    rng.shuffle(batches)
    check(dut, batches, in_pause=0.2, out_pause=0.2, seed=3)


def test_rm_small_shape_on_the_small_preset_unit():
    # RM-small: d = 4, 26 tables, so 27 vectors and 351 pairs; the preset's unit (16 lanes, 33 vectors, d <= 64).
    rng = np.random.default_rng(11)
    dut = Interaction.for_config(SMALL16)
    assert (dut.lanes, dut.max_vectors, dut.max_dim) == (16, 33, 64)
    check(dut, [make_batch(rng, "dot", 3, 27, 4), make_batch(rng, "cat", 2, 27, 4),
                make_batch(rng, "dot", 2, 27, 16)], in_pause=0.2, out_pause=0.3, seed=5)


@pytest.mark.parametrize("mode, vectors, dim, pair_lanes", [("dot", 27, 4, 2), ("dot", 27, 4, 1), ("dot", 9, 16, 3),
                                                             ("cat", 9, 8, 2)])
def test_one_item_after_another_without_bubbles(mode, vectors, dim, pair_lanes):
    # No idle input, no back-pressure: the sequencer issues one operation per cycle, so items leave item_cycles
    # apart, and an item's words leave on consecutive cycles wherever the packer fills one per cycle.
    rng = np.random.default_rng(13)
    dut = Interaction(lanes=4, max_vectors=27, max_dim=16, pair_lanes=pair_lanes)
    count = 6
    batch = make_batch(rng, mode, count, vectors, dim)
    cycles = check(dut, [batch])
    per_item = output_words(mode, vectors, dim, dut.lanes)
    ends = np.array(cycles[per_item - 1::per_item])
    assert np.all(np.diff(ends) == item_cycles(mode, vectors, dim, dut.lanes, pair_lanes))


@pytest.mark.parametrize("vectors, dim", [(0, 4), (3, 0), (0, 0)])
def test_an_empty_item_is_dropped_and_the_next_items_are_right(vectors, dim):
    # An item of no vectors or of d = 0 (which the driver refuses) is one word that the unit drops: no output, no
    # hang, and the items around it come out right; the stall-free items still leave item_cycles apart.
    rng = np.random.default_rng(19)
    dut = Interaction(lanes=4, max_vectors=8, max_dim=16)
    in_codec = codec(interaction_in_layout(dut.lanes, dut.max_vectors, dut.max_dim))
    empty = in_codec.pack_value({"data": [1, 2, 3, 4], "params": {"mode": 0, "vectors": vectors, "dim": dim,
                                                                   "m": 7, "s": 1}})
    batches = [make_batch(rng, mode, 3, 5, 6) for mode in ("dot", "cat", "dot")]
    parts = [encode([b], lanes=dut.lanes, max_vectors=dut.max_vectors, max_dim=dut.max_dim) for b in batches]
    ints = [*to_ints(parts[0]), empty, empty, *to_ints(parts[1]), empty, *to_ints(parts[2]), empty]
    counts = [len(b["items"]) * output_words(b["mode"], 5, 6, dut.lanes) for b in batches]
    for pause in (0.3, 0.0):
        got, cycles = run(dut, from_ints(ints, in_codec.width), sum(counts), in_pause=pause, out_pause=pause, seed=2)
        for b, start, count in zip(batches, np.cumsum([0, *counts[:-1]]), counts):
            np.testing.assert_array_equal(decode_items(got[start:start + count], b["width"], lanes=dut.lanes),
                                          b["expected"])
    per_item = output_words("dot", 5, 6, dut.lanes)
    ends = np.array(cycles[per_item - 1:counts[0]:per_item])         # the stall-free run's first batch
    assert np.all(np.diff(ends) == item_cycles("dot", 5, 6, dut.lanes))


def test_scoreboard_catches_a_product_one_bit_too_narrow(monkeypatch):
    # Planted bug: the LUT multiplier's product kept in 15 bits, which only -128 * -128 = 16384 overflows.
    product = rtl_interaction.lut_product
    monkeypatch.setattr(rtl_interaction, "lut_product", lambda low, high: product(low, high)[:15].as_signed())
    rng = np.random.default_rng(17)
    dut = Interaction(lanes=4, max_vectors=8, max_dim=8, multiplier="lut")
    with pytest.raises(AssertionError, match="dot items"):
        check(dut, [make_batch(rng, "dot", 4, 6, 8)])


# --- parameter errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 3, "max_vectors": 4, "max_dim": 4}, "lanes must be a power of two, not 3"),
    ({"lanes": 0, "max_vectors": 4, "max_dim": 4}, "lanes must be a positive integer, not 0"),
    ({"lanes": 4, "max_vectors": True, "max_dim": 4}, "max_vectors must be a positive integer, not True"),
    ({"lanes": 4, "max_vectors": 4, "max_dim": 2.0}, "max_dim must be a positive integer, not 2.0"),
    ({"lanes": 4, "max_vectors": 4, "max_dim": 4, "pair_lanes": 0}, "pair_lanes must be a positive integer, not 0"),
    ({"lanes": 4, "max_vectors": 4, "max_dim": 4, "pair_lanes": 5}, r"pair_lanes must be at most lanes \(4\), not 5"),
    ({"lanes": 4, "max_vectors": 4, "max_dim": 4, "multiplier": "mac"},
     "multiplier must be one of dsp, lut, not 'mac'"),
])
def test_unit_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Interaction(**kwargs)


def test_the_array_has_the_first_claim_on_the_dsp_blocks():
    # Hard multipliers only where every PE has one: small's 8 x 8 array (64 DSP PEs) and paper; not tiny (no DSP
    # PEs) nor the 16 x 8 array of 124 DSP PEs.
    assert Interaction.for_config(preset("small")).multiplier == "dsp"
    assert Interaction.for_config(preset("paper")).multiplier == "dsp"
    assert Interaction.for_config(preset("tiny")).multiplier == "lut"
    assert Interaction.for_config(SMALL16).multiplier == "lut"


def _pair_lane_multipliers(platform, multiplier):
    fragment = Fragment.get(rtl_interaction._PairLane(4, multiplier), platform)
    return [sub for sub, _, _ in fragment.subfragments if isinstance(sub, Instance)]


def test_hard_multipliers_are_dsp_blocks_only_on_ecp5():
    assert [dsp.type for dsp in _pair_lane_multipliers(ECP5_STAND_IN, "dsp")] == ["MULT18X18D"] * 4
    assert _pair_lane_multipliers(None, "dsp") == []
    assert _pair_lane_multipliers(ECP5_STAND_IN, "lut") == []


def _mapped_pair_lane_check():
    return check_ecp5_equivalence(rtl_interaction._PairLane(4, "dsp"), rtl_interaction._PairLane(4, "dsp"),
                                  cycles=20_000, seed=5, prove=False)


@pytest.mark.synth
def test_mapped_ecp5_pair_lane_matches_generic_pair_lane():
    """A pair lane's multipliers are MULT18X18D blocks with their own input and output registers on the ECP5 (its
    requantiser's two more): the Yosys-mapped netlist against the generic form over random cycles (simulation
    only, as for the PostProcessor inside it)."""
    result = _mapped_pair_lane_check()
    assert result.cycles == 20_000
    assert result.cells["MULT18X18D"] == 4 + 2
    for dsp in result.dsp_parameters:
        assert {dsp[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")} == {"CLK0"}


@pytest.mark.synth
def test_pair_lane_equivalence_catches_a_bypassed_input_register(monkeypatch):
    """Planted bug: the DSP blocks' A registers bypassed, so the products come a cycle early."""
    original = rtl_interaction.ecp5_registered_multiplier

    def planted(*args, **kwargs):
        instance = original(*args, **kwargs)
        instance.parameters["REG_INPUTA_CLK"] = "NONE"
        return instance
    monkeypatch.setattr(rtl_interaction, "ecp5_registered_multiplier", planted)
    with pytest.raises(EquivalenceFailure):
        _mapped_pair_lane_check()


@pytest.mark.parametrize("mode, shape, m, s, error, message", [
    ("sum", (1, 3, 4), 1, 0, ValueError, "mode must be one of dot, cat, not 'sum'"),
    ("dot", (1, 9, 4), 1, 0, ValueError, r"vectors per item must be in \[1, 8\], not 9"),
    ("cat", (1, 3, 17), 1, 0, ValueError, r"dimension must be in \[1, 16\], not 17"),
    ("dot", (1, 3, 0), 1, 0, ValueError, r"dimension must be in \[1, 16\], not 0"),
    ("dot", (3, 4), 1, 0, ValueError, r"shape \(n, F, d\), not \(3, 4\)"),
    ("dot", (1, 3, 4), 1 << 16, 0, ValueError, "multiplier"),
])
def test_driver_refuses_what_the_unit_cannot_take(mode, shape, m, s, error, message):
    with pytest.raises(error, match=message):
        encode_items(mode, np.zeros(shape, dtype=np.int64), m, s, lanes=4, max_vectors=8, max_dim=16)


def test_driver_refuses_values_outside_int8():
    with pytest.raises(OverflowError):
        encode_items("cat", np.full((1, 2, 2), 128), lanes=4, max_vectors=8, max_dim=16)


def test_decoder_checks_the_framing():
    out = codec(interaction_out_layout(4))
    words = [out.pack_value({"data": [1, 2, 3, 4], "last": 0}), out.pack_value({"data": [5, 0, 0, 0], "last": 1})]
    np.testing.assert_array_equal(decode_items(words, 5, lanes=4), [[1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match="not whole items of 2 words"):
        decode_items(words[:1], 5, lanes=4)
    with pytest.raises(ValueError, match="Output word 0 has last = 0, expected 1"):
        decode_items(words, 4, lanes=4)
    with pytest.raises(ValueError, match="Item 0 has non-zero padding after its 5 elements"):
        decode_items([words[0], out.pack_value({"data": [5, 6, 0, 0], "last": 1})], 5, lanes=4)


# --- Verilator ---------------------------------------------------------------------------------------------------

@pytest.mark.verilator
def test_small_preset_unit_long_rm_small_run_on_verilator():
    # 10,000 RM-small items (27 vectors of 4, 351 pairs) with idle input and back-pressure, then the cycles of
    # a stall-free stretch: one item per item_cycles.
    config = SMALL16
    rng = np.random.default_rng(23)
    items = random_items(rng, 10_000, 27, 4)
    m, s = 40_503, 21
    expected = interaction_model("dot", items, m, s)
    words = encode_items("dot", items, m, s, lanes=config.array_rows, max_vectors=config.max_tables + 1,
                         max_dim=config.max_emb_dim)
    per_item = output_words("dot", 27, 4, config.array_rows)
    player = Player(Interaction.for_config, config)
    result = player.run({"i": words}, expect={"o": len(items) * per_item}, pause=0.2, seed=4, packed=True,
                        words=True, direct=True)
    np.testing.assert_array_equal(decode_items(result.outputs["o"], expected.shape[1], lanes=config.array_rows),
                                  expected)
    assert result.cycles < len(items) * item_cycles("dot", 27, 4, config.array_rows) * 1.1


@pytest.mark.verilator
def test_small_preset_unit_mixed_models_on_verilator():
    # Batches of RM-med (27 x 16), RM-large (27 x 32: two chunks per vector) and rmc1-like cat (9 x 32) items
    # interleaved, the parameters travelling with each item's first word.
    config = SMALL16
    rng = np.random.default_rng(29)
    shapes = [("dot", 27, 16), ("dot", 27, 32), ("cat", 9, 32), ("cat", 33, 64)]
    batches = []
    for _ in range(60):
        mode, vectors, dim = shapes[int(rng.integers(len(shapes)))]
        batches.append(make_batch(rng, mode, int(rng.integers(1, 40)), vectors, dim))
    counts = [len(b["items"]) * output_words(b["mode"], *b["items"].shape[1:], config.array_rows) for b in batches]
    words = encode(batches, lanes=config.array_rows, max_vectors=config.max_tables + 1, max_dim=config.max_emb_dim)
    result = Player(Interaction.for_config, config).run({"i": words}, expect={"o": sum(counts)}, pause=0.3, seed=6,
                                                        packed=True, words=True, direct=True)
    words = result.outputs["o"]
    for b, start, count in zip(batches, np.cumsum([0, *counts[:-1]]), counts):
        np.testing.assert_array_equal(decode_items(words[start:start + count], b["width"], lanes=config.array_rows),
                                      b["expected"])
