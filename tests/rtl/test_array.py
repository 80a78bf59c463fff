"""Reconfigurable systolic array: geometry, and Amaranth-simulator scoreboards on 2x2 and 4x4 arrays."""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator
from configs import SMALL16

from rpaccel.config import ConfigError, preset
from rpaccel.rtl.array import ArrayGeometry, Rect, SystolicArray, subarray_rects
from rpaccel.rtl.pe import ProcessingElement, lut_multiply
from rpaccel.sim.golden.array import array_results, random_slot_stimulus
from rpaccel.sim.golden.pe import PEModel, random_pe_inputs
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

TINY = preset("tiny")  # 4x4 of 2x2 blocks, splits 1, 2, 4
TWO = replace(TINY, array_rows=2, array_cols=2, block=1, array_dsp_pes=2)  # quarters of a single PE


def test_lut_multiplier_is_exact_for_every_pair():
    a, w, p = Signal(signed(8)), Signal(signed(8)), Signal(signed(16))
    m = Module()
    m.d.comb += p.eq(lut_multiply(a, w))
    wrong = []

    async def bench(ctx):
        for x in range(-128, 128):
            ctx.set(a, x)
            for y in range(-128, 128):
                ctx.set(w, y)
                if ctx.get(p) != x * y:
                    wrong.append((x, y))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert wrong == []


def test_pe_with_lut_multiplier_matches_the_model():
    dut = ProcessingElement(multiplier="lut")
    model = PEModel()

    async def bench(ctx):
        for inputs in random_pe_inputs(np.random.default_rng(4), 800, stall=0.3, shift=0.4):
            for name, value in inputs.items():
                ctx.set(getattr(dut, name), value)
            assert {name: ctx.get(getattr(dut, name)) for name in ("a_out", "bank_out", "psum_out", "w_out")} \
                == model.outputs()
            model.step(inputs)
            await ctx.tick()

    run_simulation(dut, [bench], name="pe-lut")


def test_pe_refuses_an_unknown_multiplier():
    with pytest.raises(ValueError, match="PE multiplier must be one of dsp, lut, not 'booth'"):
        ProcessingElement(multiplier="booth")


def test_geometry_of_the_splits():
    g = ArrayGeometry(SMALL16)
    assert g.rects[1] == (Rect(0, 0, 16, 8),)
    assert g.rects[2] == (Rect(0, 0, 16, 4), Rect(0, 4, 16, 4))
    assert g.rects[4] == (Rect(0, 0, 8, 4), Rect(0, 4, 8, 4), Rect(8, 0, 8, 4), Rect(8, 4, 8, 4))
    assert (g.slot_rows, g.slot_cols) == ([16, 16, 8, 8], [8, 4, 4, 4])
    assert [g.owner(4, r, c) for r, c in [(0, 0), (7, 4), (8, 3), (15, 7)]] == [0, 1, 2, 3]
    assert g.latency(1) == 28  # 16 rows + 8 columns + 3 PE stages + the result register
    paper = subarray_rects(preset("paper"), 64)
    assert len(paper) == 64 and paper[9] == Rect(16, 16, 16, 16)


def test_invalid_configurations_are_refused():
    with pytest.raises(ConfigError, match="array_rows must be a multiple of block"):
        replace(TINY, array_rows=6, block=4)
    with pytest.raises(ConfigError, match="A 8x8 array of 4x4 blocks cannot be split into 16 sub-arrays"):
        replace(TINY, array_rows=8, array_cols=8, block=4, splits=(1, 4, 16))
    with pytest.raises(ConfigError, match="Sub-array count must be 1, 2 or a power of four, not 3"):
        replace(TINY, splits=(1, 3))
    with pytest.raises(TypeError, match="must be an AccelConfig"):
        SystolicArray({"rows": 4})


def run_array(config, split, stimuli, *, pause=0.0, dut=None, max_cycles=20_000):
    """Drive every slot's streams; return ``{slot: results}`` and the cycles until the last result."""
    dut = dut or SystolicArray(config, tag_shape=unsigned(8))
    got, finished = {}, {}

    async def setup(ctx):
        ctx.set(dut.split, split)

    benches = [setup]
    for slot, stimulus in stimuli.items():
        async def weights(ctx, slot=slot, stimulus=stimulus):
            await StreamSource(dut.port("w", slot), pause=pause, seed=slot).send(ctx, stimulus.weights)

        async def items(ctx, slot=slot, stimulus=stimulus):
            await StreamSource(dut.port("x", slot), pause=pause, seed=10 + slot).send(ctx, stimulus.items)

        async def results(ctx, slot=slot, stimulus=stimulus):
            sink = StreamSink(dut.port("y", slot), pause=pause, seed=20 + slot)
            got[slot] = await sink.receive(ctx, len(stimulus.expected))
            finished[slot] = sink.cycles

        benches += [weights, items, results]
    run_simulation(dut, benches, max_cycles=max_cycles, name=f"array-{split}")
    return got, max(finished.values())


def stimuli_for(config, split, seed, tiles=6, **kwargs):
    g = ArrayGeometry(config)
    rng = np.random.default_rng(seed)
    rows, cols = g.shape(split)
    return {slot: random_slot_stimulus(rng, rows, cols, tiles=tiles, port_rows=g.slot_rows[slot],
                                       port_cols=g.slot_cols[slot], **kwargs)
            for slot in range(split)}


@pytest.mark.parametrize("config", [TWO, TINY], ids=["2x2", "4x4"])
@pytest.mark.parametrize("split", [1, 2, 4])
@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_every_split_is_bit_exact_under_stalls(config, split, pause):
    stimuli = stimuli_for(config, split, seed=split * 10 + int(pause * 10))
    got, _ = run_array(config, split, stimuli, pause=pause)
    for slot, stimulus in stimuli.items():
        assert got[slot] == stimulus.expected, f"slot {slot}"


def back_to_back(seed, tiles, items):
    """Tiles of ``items`` items each, all weights available at once: every bank is reloaded as early as the
    array allows."""
    rng = np.random.default_rng(seed)
    stimulus = random_slot_stimulus(rng, 4, 4, tiles=tiles, max_items=1)
    stimulus.items = [{"a": [int(v) for v in rng.integers(-128, 128, 4)], "last": int(i % items == items - 1),
                       "tag": i % 256} for i in range(tiles * items)]
    matrices = [np.reshape(stimulus.weights[t * 4:(t + 1) * 4], (4, 4)) for t in range(tiles)]
    stimulus.expected = [{"psum": psum, "tag": tag} for psum, tag in
                         array_results(matrices, [(x["a"], x["last"], x["tag"]) for x in stimulus.items])]
    return stimulus


def test_one_result_per_cycle_and_the_latency():
    # Tiles of 2 * rows - 2 items never wait for the next tile's weights.
    g = ArrayGeometry(TINY)
    rows, _ = g.shape(1)
    stimulus = back_to_back(5, 6, 2 * rows - 2)
    got, cycles = run_array(TINY, 1, {0: stimulus})
    assert got[0] == stimulus.expected
    # The split registered on the way in, settling it after reset, the first tile's weights, one item per cycle,
    # the latency: no bubble.
    settle = g.settle_cycles
    assert cycles == 1 + settle + 1 + rows + len(stimulus.items) + g.latency(1)


def test_changing_the_split_between_runs():
    # One tile at a time: its weights, then its items, on every slot of the quarters, then the whole array.
    dut = SystolicArray(TINY, tag_shape=unsigned(8))
    quarters = stimuli_for(TINY, 4, seed=3, tiles=3)
    whole = stimuli_for(TINY, 1, seed=4, tiles=3)
    got = {}

    async def interleaved(ctx):
        for name, split, stimuli in (("quarters", 4, quarters), ("whole", 1, whole)):
            ctx.set(dut.split, split)
            await ctx.tick()
            for slot, stimulus in stimuli.items():
                rows = len(stimulus.weights) // 3
                sink = StreamSink(dut.port("y", slot))
                tile, results = 0, []
                await StreamSource(dut.port("w", slot)).send(ctx, stimulus.weights[:rows])
                for item in stimulus.items:
                    await StreamSource(dut.port("x", slot)).send(ctx, [item])
                    results += await sink.receive(ctx, 1)
                    if item["last"] and tile < 2:
                        tile += 1
                        await StreamSource(dut.port("w", slot)).send(ctx, stimulus.weights[tile * rows:
                                                                                            (tile + 1) * rows])
                got[name, slot] = results

    run_simulation(dut, [interleaved], max_cycles=20_000)
    for name, stimuli in (("quarters", quarters), ("whole", whole)):
        for slot, stimulus in stimuli.items():
            assert got[name, slot] == stimulus.expected


class _EarlyRelease(SystolicArray):
    """Planted bug: a released bank starts loading one cycle too early."""

    _GUARD = 3


def test_scoreboard_catches_a_bank_released_one_cycle_early():
    stimulus = back_to_back(9, 8, 6)
    got, _ = run_array(TINY, 1, {0: stimulus}, dut=_EarlyRelease(TINY, tag_shape=unsigned(8)))
    assert got[0] != stimulus.expected
    got, _ = run_array(TINY, 1, {0: stimulus})
    assert got[0] == stimulus.expected
