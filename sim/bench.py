"""Helpers for cocotb bench modules (imported inside the simulator process).

A bench reads the arguments :func:`rpaccel.sim.verilator.run_cocotb` passed with :func:`bench_args`, starts the
clock and reset with :func:`start`, and hands figures back with :func:`write_report`.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

__all__ = ["CLOCK_PERIOD_NS", "bench_args", "start", "write_report"]

#: Clock period of simulated benches (the value is arbitrary: benches count cycles).
CLOCK_PERIOD_NS = 10


def bench_args():
    """The arguments the bench was started with (a dict)."""
    return json.loads(os.environ.get("RPACCEL_BENCH_ARGS") or "{}")


def write_report(report):
    """Hand a JSON-serialisable dict back to the caller of :func:`~rpaccel.sim.verilator.run_cocotb`.

    Reports of several tests in one bench are merged (later keys win).
    """
    path = os.environ.get("RPACCEL_BENCH_REPORT")
    if not path:
        return
    merged = {}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f)
    merged.update(report)
    with open(path, "w") as f:
        json.dump(merged, f, indent=1)


async def start(dut, *, reset_cycles=2):
    """Start ``dut.clk`` and hold ``dut.rst`` (Amaranth's synchronous reset) for ``reset_cycles`` edges."""
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, reset_cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def cycle_count(dut):
    """Cycles elapsed since time zero (from cocotb's simulation time)."""
    return int(cocotb.utils.get_sim_time("ns") // CLOCK_PERIOD_NS)
