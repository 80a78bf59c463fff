"""The stream drivers themselves: ordering, stalls, back-pressure, in the Amaranth simulator and in cocotb."""

import numpy as np
import pytest

from rpaccel.sim.streams import SimulationTimeout, StreamSink, pauses, run_simulation
from rpaccel.sim.verilator import run_cocotb
from rpaccel.sim.verilog import generate_verilog

from stream_fifo import StreamFIFO, pass_through, random_items


def test_pause_patterns():
    assert [next(pauses(0.0)) for _ in range(5)] == [False] * 5
    pattern = pauses([True, False])
    assert [next(pattern) for _ in range(4)] == [True, False, True, False]
    seeded = [next(p) for p in [pauses(0.5, seed=3)] * 100]
    assert seeded == [next(p) for p in [pauses(0.5, seed=3)] * 100]
    assert 30 < sum(seeded) < 70
    with pytest.raises(ValueError, match=r"Pause probability must be in \[0, 1\), not 1.0"):
        pauses(1.0)
    with pytest.raises(ValueError, match="at least one cycle without a stall"):
        pauses([True])


def run_fifo(items, in_pause, out_pause):
    got, cycles, _ = pass_through(StreamFIFO(), items, in_pause, out_pause)
    return got, cycles


@pytest.mark.parametrize(("in_pause", "out_pause"), [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.4, 0.4)])
def test_amaranth_drivers_keep_order_under_stalls(in_pause, out_pause):
    items = random_items(np.random.default_rng(0), 300)
    got, cycles = run_fifo(items, in_pause, out_pause)
    assert got == items
    stalled = max(in_pause, out_pause)
    # Stalls really happen: the transfer takes longer when either side pauses.
    assert cycles >= len(items) / (1 - stalled) * 0.85


def test_full_speed_without_stalls():
    items = random_items(np.random.default_rng(1), 200)
    _, cycles = run_fifo(items, 0.0, 0.0)
    assert cycles <= len(items) + 5


def test_simulation_timeout_reports_a_stuck_testbench():
    dut = StreamFIFO()

    async def wait_forever(ctx):
        await StreamSink(dut.o).receive(ctx, 1)  # nothing is ever sent

    with pytest.raises(SimulationTimeout, match="did not finish within 100 cycles"):
        run_simulation(dut, [wait_forever], max_cycles=100)


@pytest.mark.verilator
def test_cocotb_drivers_keep_order_under_stalls(cocotb_record):
    result = run_cocotb(generate_verilog(StreamFIFO, 4), "bench_fifo",
                        args={"seed": 5, "count": 2000, "pause": 0.4}, quiet=True)
    cocotb_record(result, "stream drivers through a FIFO, 2000 items, 40% stalls")
    assert result.report["received"] == 2000
    assert result.report["cycles"] > 2000 / 0.6 * 0.85  # the stalls really happened


@pytest.mark.parametrize("pause, seed, count", [(0.0, 1, 10), (0.3, 7, 1), (0.4, 12345, 5_000), (0.95, 2, 777)])
def test_stall_pattern_is_the_players_drawn_at_once(pause, seed, count):
    from itertools import islice

    from rpaccel.sim.streams import stall_pattern, xorshift_stalls

    want = np.fromiter(islice(xorshift_stalls(pause, seed), count), dtype=bool, count=count)
    assert np.array_equal(stall_pattern(pause, seed, count), want)
