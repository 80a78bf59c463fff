"""Scoreboard bench of the processing element: random inputs, random stalls (``en`` low), random weight loads.

Every output of every cycle is compared with :class:`~rpaccel.sim.golden.pe.PEModel`. Arguments: ``count``
(multiply-accumulates, i.e. enabled cycles), ``seed``, ``stall`` (probability of ``en`` low), ``shift``
(probability of a weight-chain shift).
"""

import time

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from rpaccel.sim.bench import bench_args, start, write_report
from rpaccel.sim.golden.pe import PEModel, random_pe_inputs

_SIGNED_OUTPUTS = {"a_out": 8, "psum_out": 32}


def _signed(value, width):
    return value - (1 << width) if value >> (width - 1) else value


def _read(dut, name):
    value = int(getattr(dut, name).value)
    if name == "w_out":  # both banks, bank 0 in the low byte
        return [_signed((value >> (8 * bank)) & 0xff, 8) for bank in range(2)]
    width = _SIGNED_OUTPUTS.get(name)
    return _signed(value, width) if width else value


def _write(dut, name, value):
    if name == "w_in":
        value = sum((weight & 0xff) << (8 * bank) for bank, weight in enumerate(value))
    getattr(dut, name).value = value


@cocotb.test()
async def scoreboard(dut):
    args = bench_args()
    seed = args.get("seed", 1)
    cycles = random_pe_inputs(np.random.default_rng(seed), args.get("count", 10_000),
                              stall=args.get("stall", 0.25), shift=args.get("shift", 0.3))
    model = PEModel()
    await start(dut)
    mismatches, macs = [], 0
    wall = time.perf_counter()
    for index, inputs in enumerate(cycles):
        for name, value in inputs.items():
            _write(dut, name, value)
        await ReadOnly()
        expected = model.outputs()
        got = {name: _read(dut, name) for name in expected}
        if got != expected and len(mismatches) < 10:
            mismatches.append(f"cycle {index} inputs {inputs}: got {got}, expected {expected}")
        model.step(inputs)
        macs += inputs["en"]
        await RisingEdge(dut.clk)
    wall = time.perf_counter() - wall
    write_report({"cycles": len(cycles), "transactions": macs, "mismatches": len(mismatches), "wall_seconds": wall,
                  "cycles_per_second": len(cycles) / wall if wall else 0.0})
    assert not mismatches, f"{len(mismatches)} mismatching cycles, first: " + "; ".join(mismatches)
