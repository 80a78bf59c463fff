"""The stream register slice: order and full throughput under stalls, registered handshakes, bad shapes."""

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data

from rpaccel.rtl.pipeline import RegisterSlice
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
