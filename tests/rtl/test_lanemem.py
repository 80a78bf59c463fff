"""The activation memory shared by the lanes (rpaccel.rtl.lanemem.LaneMemory)."""

import numpy as np
import pytest
from amaranth.hdl import signed

from rpaccel.rtl.lanemem import LaneMemory
from rpaccel.sim.streams import run_simulation


def _memory():
    # The small preset's shape, shallow: 4 slices of 8 elements; whole array 16-element words, halves 16, quarters 8.
    return LaneMemory(word_elems={1: 16, 2: 16, 4: 8}, slices=4, slice_elems=8, elem_shape=signed(8), depth=16)


@pytest.mark.parametrize("split", [1, 2, 4])
def test_every_lane_reads_back_its_own_words(split):
    """Random element-masked writes and reads on every lane of a split, all lanes at once: each read returns
    READ_LATENCY cycles later the lane's word as written (a write lands a cycle after it is presented), and the
    lanes' words never mix."""
    dut = _memory()
    rng = np.random.default_rng(split)
    elems = dict.fromkeys(range(split), dut.word_elems[split])
    words = {lane: dut.capacity(split) for lane in range(split)}
    contents = {lane: np.zeros((words[lane], elems[lane]), int) for lane in range(split)}
    expected = {lane: [] for lane in range(split)}

    async def bench(ctx):
        ctx.set(dut.split, split)
        await ctx.tick().repeat(2)
        checked = 0
        pending_writes = []
        for cycle in range(600):
            # The writes presented last cycle land now.
            for lane, addr, mask, values in pending_writes:
                contents[lane][addr][mask] = values[mask]
            pending_writes = []
            for lane in range(split):
                read, write = getattr(dut, f"read{lane}"), getattr(dut, f"write{lane}")
                r_en, r_addr = int(rng.random() < 0.7), int(rng.integers(words[lane]))
                ctx.set(read.en, r_en)
                ctx.set(read.addr, r_addr)
                expected[lane].append(contents[lane][r_addr].copy() if r_en else None)
                w_mask = rng.random(elems[lane]) < 0.5 if rng.random() < 0.5 else np.zeros(elems[lane], bool)
                w_addr, values = int(rng.integers(words[lane])), rng.integers(-128, 128, elems[lane])
                if w_addr == r_addr:
                    w_mask[:] = False  # a read of the word being written is not defined
                ctx.set(write.addr, w_addr)
                ctx.set(write.en, int(sum(1 << e for e in range(elems[lane]) if w_mask[e])))
                ctx.set(write.data, [int(v) for v in values] + [0] * (len(write.data) - elems[lane]))
                pending_writes.append((lane, w_addr, w_mask, values))
            await ctx.tick()
            for lane in range(split):
                k = cycle + 1 - LaneMemory.READ_LATENCY
                if k >= 0 and expected[lane][k] is not None:
                    got = [int(v) for v in ctx.get(getattr(dut, f"read{lane}").data)][:elems[lane]]
                    assert got == list(expected[lane][k]), f"lane {lane}, cycle {cycle}"
                    checked += 1
        assert checked > 300 * split

    run_simulation(dut, [bench], max_cycles=1000)


def test_lane_words_must_be_made_of_slices():
    with pytest.raises(ValueError, match="cannot be made of 8-element slices"):
        LaneMemory(word_elems={1: 12}, slices=4, slice_elems=8, elem_shape=signed(8), depth=16)
    with pytest.raises(ValueError, match="power of two, not 12"):
        LaneMemory(word_elems={1: 16}, slices=4, slice_elems=8, elem_shape=signed(8), depth=12)
