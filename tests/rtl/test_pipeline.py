"""The stream register slice: order and full throughput under stalls, registered handshakes, bad shapes. The sliced
FIFO: every entry in order, exact fill and read timing, bad parameters."""

import random
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data

from rpaccel.rtl.pipeline import RegisterSlice, SlicedFIFO
from rpaccel.sim.streams import run_simulation

from stream_fifo import pass_through

LAYOUT = data.StructLayout({"value": signed(12), "last": 1})


def run_slice(items, in_pause, out_pause):
    dut = RegisterSlice(LAYOUT)
    return pass_through(dut, items, in_pause, out_pause, after=lambda ctx: ctx.get(dut.idle))


def random_items(rng, count):
    return [{"value": int(v), "last": int(last)}
            for v, last in zip(rng.integers(-2048, 2048, count), rng.integers(0, 2, count))]


@pytest.mark.parametrize(("in_pause", "out_pause"), [(0.0, 0.0), (0.4, 0.0), (0.0, 0.4), (0.4, 0.4)])
def test_every_item_in_order_under_stalls(in_pause, out_pause):
    items = random_items(np.random.default_rng(5), 400)
    got, cycles, idle = run_slice(items, in_pause, out_pause)
    assert got == items
    assert idle
    if not in_pause and not out_pause:
        assert cycles <= len(items) + 3  # one transfer per cycle


def test_handshakes_come_from_registers():
    """``i.ready`` and ``o.valid`` are flip-flops: no combinational path from ``o.ready`` or ``i.valid``."""
    dut = RegisterSlice(8)
    # Driving o.ready or i.valid and reading i.ready/o.valid in the same cycle must not change them.
    seen = []

    async def bench(ctx):
        for ready, valid in [(0, 1), (1, 1), (0, 0), (1, 0), (0, 1), (0, 1), (0, 1)]:
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, len(seen))
            before = (ctx.get(dut.i.ready), ctx.get(dut.o.valid))
            ctx.set(dut.o.ready, 1 - ready)
            ctx.set(dut.i.valid, 1 - valid)
            seen.append(before == (ctx.get(dut.i.ready), ctx.get(dut.o.valid)))
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, valid)
            await ctx.tick()
        # Two items went in while the output stalled: the slice is full and says so.
        assert ctx.get(dut.i.ready) == 0 and ctx.get(dut.o.valid) == 1

    run_simulation(dut, [bench])
    assert all(seen)


def test_bad_shape():
    with pytest.raises(TypeError, match="Register slice payload must be a shape, not 'wide'"):
        RegisterSlice("wide")


@pytest.mark.parametrize(("widths", "depth", "write_rate", "read_rate"),
                         [([32, 32, 5], 16, 0.7, 0.5), ([32, 32, 5], 16, 0.5, 0.9), ([7], 2, 0.8, 0.8),
                          ([3, 9, 1, 4], 4, 1.0, 1.0)])
def test_sliced_fifo_against_a_queue(widths, depth, write_rate, read_rate):
    """Random writes and reads against a queue model, every cycle: level and w_rdy count what was accepted,
    r_rdy what was accepted two or more cycles ago, r_data is the oldest entry, and a write to a full FIFO or a
    read of an empty one changes nothing."""
    dut = SlicedFIFO(widths, depth=depth)
    rng = random.Random(sum(widths) + depth)
    width = sum(widths)
    errors, reads = [], [0]

    async def bench(ctx):
        queue = deque()  # (value, cycle accepted)
        for cycle in range(3000):
            w_en, r_en = int(rng.random() < write_rate), int(rng.random() < read_rate)
            value = rng.getrandbits(width)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, value)
            ctx.set(dut.r_en, r_en)
            readable = sum(1 for _, accepted in queue if accepted <= cycle - 2)
            state = (ctx.get(dut.level), ctx.get(dut.w_rdy), ctx.get(dut.r_rdy))
            expected = (len(queue), int(len(queue) < depth), int(readable > 0))
            if state != expected:
                errors.append((cycle, state, expected))
            if r_en and readable:
                if ctx.get(dut.r_data) != queue[0][0]:
                    errors.append((cycle, "r_data", ctx.get(dut.r_data), queue[0][0]))
                queue.popleft()
                reads[0] += 1
            if w_en and expected[1]:
                queue.append((value, cycle))
            await ctx.tick()

    run_simulation(dut, [bench])
    assert not errors, errors[:5]
    assert reads[0] > 1000


def test_sliced_fifo_bad_parameters():
    with pytest.raises(TypeError, match=r"widths must be a non-empty list of positive integers, not \[32, 0\]"):
        SlicedFIFO([32, 0], depth=4)
    with pytest.raises(TypeError, match="not 32"):
        SlicedFIFO(32, depth=4)
    with pytest.raises(ValueError, match="depth must be an integer of at least 2, not 1"):
        SlicedFIFO([8], depth=1)
