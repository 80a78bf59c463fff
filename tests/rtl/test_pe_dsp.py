"""The PE's ECP5 multiplier (a MULT18X18D with its own registers): elaboration, and the Yosys-mapped netlist
proved equivalent to the generic PE and compared with it over random cycles (with planted bugs that both the
proof and the simulation must catch)."""

import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Const, Fragment, Instance

from rpaccel.config import preset
from rpaccel.flow.equivalence import ECP5_STAND_IN, EquivalenceFailure, check_ecp5_equivalence, sign_extended
from rpaccel.flow.synth import TARGETS, tool_env
from rpaccel.rtl import pe as pe_module
from rpaccel.rtl.array import SystolicArray
from rpaccel.rtl.pe import ProcessingElement

PSUM_BITS = 20  # as in the small preset's 16-row array
CYCLES = 20_000
# The DSP block's input registers hold sign-extended copies of a_out and selected (gold names: a_out is in both
# designs, selected only in the generic one; the gate's are wires of the MULT18X18D model). The product register
# is `product` in both.
CORRESPONDENCES = [*sign_extended("a_out", 8, "multiplier.a_q_gate", 18),
                   *sign_extended("selected_gold", 8, "multiplier.b_q_gate", 18)]


def check(**kwargs):
    return check_ecp5_equivalence(ProcessingElement(psum_bits=PSUM_BITS), ProcessingElement(psum_bits=PSUM_BITS),
                                  correspondences=CORRESPONDENCES, cycles=CYCLES, seed=3, **kwargs)


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
    result = check()
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

    def build(*args, **kwargs):
        instance = original(*args, **kwargs)
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
    with pytest.raises(EquivalenceFailure, match=r"proof: \d+ unproven pairs.*simulation \(seed 3\): MISMATCH"):
        check()


@pytest.mark.synth
def test_small_array_maps_every_dsp_pe_to_a_registered_mult18x18d(tmp_path):
    """Yosys alone (no place and route): the ``small`` array's DSP PEs keep their registered MULT18X18D through
    flattening, and no unregistered one appears."""
    config = preset("small")
    (tmp_path / "array.il").write_text(
        rtlil.convert(SystolicArray(config), name="top", platform=ECP5_STAND_IN, emit_src=False))
    registered = "t:MULT18X18D " + " ".join(f"r:REG_{r}_CLK=CLK0 %i" for r in ("INPUTA", "INPUTB", "OUTPUT"))
    script = (f"read_rtlil array.il; synth_ecp5 -top top; select -assert-count {config.array_dsp_pes} "
              f"{registered}; select -assert-count {config.array_dsp_pes} t:MULT18X18D")
    yosys = tool_env(TARGETS["ecp5-85f"])["YOSYS"]
    done = subprocess.run([yosys, "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
