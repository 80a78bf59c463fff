"""The PE's ECP5 multiplier (a MULT18X18D with its own registers): elaboration, and the Yosys-mapped netlist
checked cycle for cycle against the generic PE (with planted bugs that the check must catch)."""

import pytest
from amaranth.hdl import Const, Fragment, Instance

from rpaccel.rtl import pe as pe_module
from rpaccel.rtl.pe import ProcessingElement
from rpaccel.sim.equivalence import ECP5_STAND_IN, EquivalenceFailure, check_ecp5_equivalence

PSUM_BITS = 20  # as in the small preset's 16-row array
CYCLES = 20_000


def dsp_instances(platform, multiplier="dsp"):
    fragment = Fragment.get(ProcessingElement(multiplier=multiplier, psum_bits=PSUM_BITS), platform)
    return [sub for sub, _, _ in fragment.subfragments if isinstance(sub, Instance)]


def test_dsp_instance_only_on_ecp5():
    (dsp,) = dsp_instances(ECP5_STAND_IN)
    assert dsp.type == "MULT18X18D"
    for register in ("INPUTA", "INPUTB", "OUTPUT"):
        assert dsp.parameters[f"REG_{register}_CLK"] == "CLK0"
        assert dsp.parameters[f"REG_{register}_CE"] == "CE0"
    assert dsp.parameters["REG_PIPELINE_CLK"] == "NONE"
    assert dsp_instances(None) == []
    assert dsp_instances(ECP5_STAND_IN, multiplier="lut") == []


@pytest.mark.synth
def test_mapped_ecp5_pe_matches_generic_pe():
    result = check_ecp5_equivalence(ProcessingElement(psum_bits=PSUM_BITS), ProcessingElement(psum_bits=PSUM_BITS),
                                    cycles=CYCLES, seed=3)
    assert result.cycles == CYCLES
    (dsp,) = result.dsp_parameters
    assert {dsp[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")} == {"CLK0"}
    assert dsp["REG_PIPELINE_CLK"] == "NONE"
    # The fabric keeps the two weights, a_out, bank_out and psum_out; `selected` and `product` live in the DSP.
    assert result.cells["TRELLIS_FF"] == 2 * 8 + 8 + 1 + PSUM_BITS
    assert result.cells["MULT18X18D"] == 1


def planted(change):
    """``ecp5_registered_multiplier`` with ``change(instance)`` applied to its MULT18X18D."""
    original = pe_module.ecp5_registered_multiplier

    def build(*args):
        instance = original(*args)
        change(instance)
        return instance
    return build


def output_register_always_enabled(instance):
    instance.parameters["REG_OUTPUT_CE"] = "CE1"
    instance.ports["CE1"] = (Const(1), "i")


def weight_register_bypassed(instance):
    instance.parameters["REG_INPUTB_CLK"] = "NONE"


@pytest.mark.synth
@pytest.mark.parametrize("bug", [output_register_always_enabled, weight_register_bypassed])
def test_check_catches_planted_bug(monkeypatch, bug):
    monkeypatch.setattr(pe_module, "ecp5_registered_multiplier", planted(bug))
    with pytest.raises(EquivalenceFailure, match="MISMATCH cycle="):
        check_ecp5_equivalence(ProcessingElement(psum_bits=PSUM_BITS), ProcessingElement(psum_bits=PSUM_BITS),
                               cycles=CYCLES, seed=3)
