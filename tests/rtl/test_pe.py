"""Processing element: directed and random Amaranth-simulator tests, and the Verilator scoreboard."""

import numpy as np
import pytest

from rpaccel.numeric import INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN
from rpaccel.rtl.pe import ProcessingElement
from rpaccel.sim.golden.pe import PEModel, random_pe_inputs
from rpaccel.sim.streams import run_simulation
from rpaccel.sim.suite import run_scoreboard

IDLE = {"en": 0, "a_in": 0, "bank_in": 0, "psum_in": 0, "w_in": [0, 0], "w_shift": 0, "w_bank": 0}


def cycle(**inputs):
    """One cycle's inputs; a single ``w_in`` is offered to both banks' chains."""
    if isinstance(inputs.get("w_in"), int):
        inputs["w_in"] = [inputs["w_in"]] * 2
    return {**IDLE, **inputs}


def simulate(cycles):
    """Run ``cycles`` on the PE; return the outputs seen in every cycle, checked against :class:`PEModel`."""
    dut = ProcessingElement()
    model = PEModel()
    seen = []

    async def testbench(ctx):
        for index, inputs in enumerate(cycles):
            for name, value in inputs.items():
                ctx.set(getattr(dut, name), value)
            expected = model.outputs()
            got = {name: ctx.get(getattr(dut, name)) for name in expected}
            assert got == expected, f"cycle {index}, inputs {inputs}"
            seen.append(got)
            model.step(inputs)
            await ctx.tick()

    run_simulation(dut, [testbench], name="pe")
    return seen


def test_weight_chain_loads_each_bank_separately():
    out = simulate([
        cycle(w_shift=1, w_bank=0, w_in=[-7, 55]),
        cycle(w_shift=1, w_bank=1, w_in=[12, 100]),
        cycle(w_bank=0, w_in=[1, 2]), cycle(w_shift=0, w_bank=1, w_in=[3, 4]),
    ])
    assert out[1]["w_out"] == [-7, 0] and out[2]["w_out"] == [-7, 100] and out[3]["w_out"] == [-7, 100]


def test_multiply_accumulate_extremes_and_pipeline():
    top = INT32_MAX - INT8_MIN * INT8_MIN
    out = simulate([
        cycle(w_shift=1, w_bank=0, w_in=INT8_MIN),
        cycle(w_shift=1, w_bank=1, w_in=INT8_MAX),
        cycle(en=1, a_in=INT8_MIN, bank_in=0),                     # product -128 * -128 = 16384
        cycle(en=1, a_in=INT8_MIN, bank_in=1),
        cycle(en=1, psum_in=top),                                  # meets the first product
        cycle(en=1, psum_in=INT32_MIN + 16256),                    # meets -128 * 127 = -16256
        cycle(),
    ])
    assert out[5]["psum_out"] == INT32_MAX
    assert out[6]["psum_out"] == INT32_MIN
    assert out[4]["a_out"] == INT8_MIN and out[4]["bank_out"] == 1


def test_stall_holds_every_register():
    out = simulate([
        cycle(w_shift=1, w_in=3),
        cycle(en=1, a_in=5, psum_in=0),
        cycle(en=1, a_in=-1, psum_in=10),
        cycle(en=0, a_in=99, psum_in=1000),   # stalled: nothing moves
        cycle(en=0, a_in=98, psum_in=2000),
        cycle(en=1, psum_in=100),             # meets 5 * 3
        cycle(en=1, psum_in=1000),            # meets -1 * 3
        cycle(),
    ])
    assert [o["psum_out"] for o in out[3:]] == [10, 10, 10, 115, 997]
    assert [o["a_out"] for o in out[3:]] == [-1, -1, -1, 0, 0]


def test_loading_the_idle_bank_does_not_disturb_compute():
    cycles = [cycle(w_shift=1, w_bank=0, w_in=2)]
    for k in range(8):  # compute with bank 0 while bank 1 is rewritten every cycle
        cycles.append(cycle(en=1, a_in=k, bank_in=0, psum_in=1, w_shift=1, w_bank=1, w_in=k - 4))
    cycles += [cycle(en=1, psum_in=1), cycle(en=1), cycle()]
    out = simulate(cycles)
    assert [o["psum_out"] for o in out[4:11]] == [1 + 2 * k for k in range(7)]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_cycles_match_the_model(seed):
    simulate(random_pe_inputs(np.random.default_rng(seed), 1500, stall=0.3, shift=0.4))


@pytest.mark.verilator
def test_scoreboard_on_verilator(cocotb_record):
    report = run_scoreboard("pe", count=10_000, seed=11, pause=0.3)
    cocotb_record(report, "PE scoreboard, 10,000 MACs, 30% stalls")
    assert report["mismatches"] == 0
    assert report["transactions"] >= 10_000
    assert report["cycles"] > report["transactions"]  # stalls happened
