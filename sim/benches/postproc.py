"""Scoreboard bench of the post-processing unit: random inputs, random idle cycles and back-pressure.

Arguments: ``count`` (transactions), ``seed``, ``in_pause`` and ``out_pause`` (stall probabilities),
``edge_cases`` (prepend :data:`~rpaccel.sim.golden.postproc.EDGE_CASES`).
"""

import time

import cocotb
import numpy as np
from amaranth.hdl import signed

from rpaccel.numeric import ACC_BITS
from rpaccel.rtl.postproc import PostProcessIn
from rpaccel.sim.bench import bench_args, cycle_count, start, write_report
from rpaccel.sim.cocotb_streams import StreamSink, StreamSource
from rpaccel.sim.golden.postproc import EDGE_CASES, postprocess_payloads, random_postprocess_payloads


@cocotb.test()
async def scoreboard(dut):
    args = bench_args()
    seed = args.get("seed", 1)
    rng = np.random.default_rng(seed)
    payloads = (list(EDGE_CASES) if args.get("edge_cases", True) else []) + \
        random_postprocess_payloads(rng, args.get("count", 10_000))
    expected = postprocess_payloads(payloads)

    await start(dut)
    source = StreamSource(dut, "i", PostProcessIn, pause=args.get("in_pause", 0.3), seed=seed + 1)
    sink = StreamSink(dut, "o", signed(ACC_BITS), pause=args.get("out_pause", 0.3), seed=seed + 2)
    mismatches = []

    def check(index, value):
        if value != expected[index] and len(mismatches) < 10:
            mismatches.append(f"#{index} {payloads[index]}: got {value}, expected {expected[index]}")

    first_cycle = cycle_count(dut)
    wall = time.perf_counter()
    sending = cocotb.start_soon(source.send(payloads))
    await sink.receive(len(payloads), on_value=check)
    await sending
    wall = time.perf_counter() - wall
    cycles = cycle_count(dut) - first_cycle
    write_report({"transactions": len(payloads), "mismatches": len(mismatches), "cycles": cycles,
                  "wall_seconds": wall, "cycles_per_second": cycles / wall if wall else 0.0,
                  "in_pause": args.get("in_pause", 0.3), "out_pause": args.get("out_pause", 0.3)})
    assert not mismatches, f"{len(mismatches)} mismatches, first: " + "; ".join(mismatches)
