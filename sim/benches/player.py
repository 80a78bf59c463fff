"""The cocotb side of :class:`rpaccel.sim.player.Player`: wake once, when the testbench says it is done.

The testbench clocks itself, releases reset, moves every stream and writes the results and a summary file; this
bench only waits for ``done`` (one wake-up of Python for the whole run) and reports the wall time.
"""

import time

import cocotb
from cocotb.triggers import RisingEdge

from rpaccel.sim.bench import write_report


@cocotb.test()
async def play(dut):
    started = time.perf_counter()
    await RisingEdge(dut.done)
    write_report({"wall_seconds": time.perf_counter() - started, "timeout": int(dut.timeout.value)})
