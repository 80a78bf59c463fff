"""Post-processing unit: Amaranth-simulator unit tests and the Verilator scoreboard."""

import numpy as np
import pytest
from amaranth.hdl import C, Cat, Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.flow.equivalence import EquivalenceFailure, check_ecp5_equivalence
from rpaccel.rtl import postproc as postproc_module
from rpaccel.rtl.postproc import PostProcessIn, PostProcessor
from rpaccel.sim.golden.postproc import EDGE_CASES, postprocess_payloads, random_postprocess_payloads
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation
from rpaccel.sim.suite import run_scoreboard
from rpaccel.sim.verilator import CocotbFailure, run_cocotb
from rpaccel.sim.verilog import generate_verilog


def run(payloads, *, in_pause=0.0, out_pause=0.0, seed=0, dut=None):
    dut = dut or PostProcessor()
    got = []
    cycles = {}

    async def send(ctx):
        await StreamSource(dut.i, pause=in_pause, seed=seed).send(ctx, payloads)

    async def receive(ctx):
        sink = StreamSink(dut.o, pause=out_pause, seed=seed + 1)
        got.extend(await sink.receive(ctx, len(payloads)))
        cycles["sink"] = sink.cycles

    run_simulation(dut, [send, receive], name="postproc")
    return got, cycles["sink"]


def test_edge_cases():
    got, _ = run(EDGE_CASES)
    assert got == postprocess_payloads(EDGE_CASES)


@pytest.mark.parametrize(("in_pause", "out_pause"), [(0.0, 0.0), (0.5, 0.0), (0.0, 0.6), (0.3, 0.3)])
def test_random_inputs_under_stalls(in_pause, out_pause):
    payloads = random_postprocess_payloads(np.random.default_rng(3), 800)
    got, _ = run(payloads, in_pause=in_pause, out_pause=out_pause, seed=4)
    assert got == postprocess_payloads(payloads)


def test_one_result_per_cycle_without_stalls():
    payloads = random_postprocess_payloads(np.random.default_rng(5), 300)
    got, cycles = run(payloads)
    assert got == postprocess_payloads(payloads)
    assert cycles == len(payloads) + PostProcessor.LATENCY


class _Broken(wiring.Component):
    """A post-processor with a planted bug: the result's lowest bit flips when bit 4 of it is set."""

    i: In(stream.Signature(PostProcessIn))
    o: Out(stream.Signature(signed(32)))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = PostProcessor()
        wiring.connect(m, wiring.flipped(self.i), inner.i)
        m.d.comb += [
            self.o.valid.eq(inner.o.valid),
            inner.o.ready.eq(self.o.ready),
            self.o.payload.eq(inner.o.payload ^ inner.o.payload[4]),
        ]
        return m


def test_unit_tests_catch_a_planted_bug():
    payloads = random_postprocess_payloads(np.random.default_rng(6), 200)
    got, _ = run(payloads, dut=_Broken())
    assert got != postprocess_payloads(payloads)


@pytest.mark.verilator
def test_scoreboard_on_verilator(cocotb_record):
    report = run_scoreboard("postproc", count=10_000, seed=21, pause=0.3)
    cocotb_record(report, "post-processor scoreboard, 10,030 transactions, 30% idle/back-pressure")
    assert report["mismatches"] == 0
    assert report["transactions"] >= 10_000
    assert report["cycles"] > report["transactions"] * 1.3  # stalls and back-pressure happened


@pytest.mark.verilator
def test_scoreboard_catches_a_planted_bug():
    with pytest.raises(CocotbFailure, match=r"scoreboard FAILED: \d+ mismatches, first: #\d+"):
        run_cocotb(generate_verilog(_Broken), "rpaccel.sim.benches.postproc", args={"count": 500}, quiet=True)


def _mapped_check():
    return check_ecp5_equivalence(PostProcessor(), PostProcessor(), cycles=20_000, seed=4, prove=False)


@pytest.mark.synth
def test_mapped_ecp5_postprocessor_matches_generic_postprocessor():
    """On the ECP5 the two multipliers of stage 1 are MULT18X18D with their own registers: the Yosys-mapped
    netlist against the generic form over random cycles with random back-pressure (simulation only: Yosys's
    mapping drops register bits nothing reads, which leaves the proof of `sim.equivalence` unpaired wires)."""
    result = _mapped_check()
    assert result.cycles == 20_000
    assert result.cells["MULT18X18D"] == 2
    for dsp in result.dsp_parameters:
        assert {dsp[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")} == {"CLK0"}


@pytest.mark.synth
def test_postprocessor_equivalence_catches_a_zero_extended_high_half(monkeypatch):
    """Planted bug: the high half of the sum reaches its DSP block zero-extended, as if unsigned."""
    original = postproc_module.ecp5_registered_multiplier

    def planted(a, b, product, en):
        return original(Cat(a, C(0, 2)) if len(a) == 16 else a, b, product, en)
    monkeypatch.setattr(postproc_module, "ecp5_registered_multiplier", planted)
    with pytest.raises(EquivalenceFailure, match=r"simulation \(seed 4\): MISMATCH"):
        _mapped_check()
