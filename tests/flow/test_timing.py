"""Static timing over nextpnr's SDF (rpaccel.flow.timing, rpaccel timing)."""

import json

import pytest

from rpaccel.cli.main import main
from rpaccel.flow.timing import (
    NetlistError,
    SdfError,
    analyse,
    estimate_netlist,
    name_pattern,
    read_placement,
    read_sdf,
)

# Two registers a -> b through a LUT, b -> c through two LUTs and a long net, a pad straight into c's clock
# enable (not timed: no launching register), and a combinational loop between two LUTs feeding d.
SDF = r"""(DELAYFILE
  (SDFVERSION "3.0")
  (DESIGN "top")
  (DIVIDER /)
  (TIMESCALE 1ps)
  (CELL
    (CELLTYPE "top")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
        (INTERCONNECT a\[0\]_TRELLIS_FF_Q/Q lut1/A (100:150:200) (100:150:200))
        (INTERCONNECT lut1/F b\[3\]_TRELLIS_FF_Q/DI (100:150:300) (100:150:300))
        (INTERCONNECT b\[3\]_TRELLIS_FF_Q/Q lut2/B (100:150:400) (100:150:400))
        (INTERCONNECT a\[0\]_TRELLIS_FF_Q/Q lut2/A (100:150:100) (100:150:100))
        (INTERCONNECT lut2/F lut3/C (100:150:5000) (100:150:5000))
        (INTERCONNECT lut3/F c_TRELLIS_FF_Q/DI (100:150:200) (100:150:200))
        (INTERCONNECT pad/O c_TRELLIS_FF_Q/CE (100:150:9000) (100:150:9000))
        (INTERCONNECT b\[3\]_TRELLIS_FF_Q/Q loop1/A (1:1:100) (1:1:100))
        (INTERCONNECT loop1/F loop2/A (1:1:100) (1:1:100))
        (INTERCONNECT loop2/F loop1/B (1:1:100) (1:1:100))
        (INTERCONNECT loop2/F d_TRELLIS_FF_Q/DI (1:1:100) (1:1:100))
      )
    )
  )
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE a\[0\]_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE
        (IOPATH CLK Q (400:450:500) (400:450:500))
    ))
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (0:0:50) (1:1:1))
    )
  )
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE b\[3\]_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE
        (IOPATH CLK Q (400:450:500) (400:450:500))
    ))
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (0:0:50) (1:1:1))
    )
  )
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE c_TRELLIS_FF_Q)
    (DELAY (ABSOLUTE
        (IOPATH CLK Q (400:450:500) (400:450:500))
    ))
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (0:0:50) (1:1:1))
      (SETUPHOLD (posedge CE) (posedge CLK) (0:0:150) (1:1:1))
    )
  )
  (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE d_TRELLIS_FF_Q)
    (TIMINGCHECK
      (SETUPHOLD (posedge DI) (posedge CLK) (0:0:50) (1:1:1))
    )
  )
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE lut1)
    (DELAY (ABSOLUTE (IOPATH A F (100:200:250) (100:200:250)))))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE lut2)
    (DELAY (ABSOLUTE
        (IOPATH A F (100:200:250) (100:200:250))
        (IOPATH B F (100:200:300) (100:200:300))
    )))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE lut3)
    (DELAY (ABSOLUTE (IOPATH C F (100:200:250) (100:200:250)))))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE loop1)
    (DELAY (ABSOLUTE
        (IOPATH A F (100:200:250) (100:200:250))
        (IOPATH B F (100:200:250) (100:200:250))
    )))
  (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE loop2)
    (DELAY (ABSOLUTE (IOPATH A F (100:200:250) (100:200:250)))))
)
"""


@pytest.fixture
def sdf(tmp_path):
    path = tmp_path / "top.sdf"
    path.write_text(SDF)
    return path


def test_arrival_times_use_the_slow_corner(sdf):
    report = analyse(read_sdf(sdf), period_ns=5.0)
    # a -> b: 0.5 clock-to-output + 0.2 + 0.25 + 0.3, setup 0.05; b -> c: 0.5 + 0.4 + 0.3 + 5.0 + 0.25 + 0.2 + 0.05.
    assert report.endpoints == 3  # b, c and d (through the loop); a's DI has no driver, c's CE only a pad
    worst = report.worst
    assert worst.start == "b[3]_TRELLIS_FF_Q/Q" and worst.end == "c_TRELLIS_FF_Q/DI"
    assert worst.delay_ns == pytest.approx(6.7)
    assert worst.slack_ns == pytest.approx(-1.7)
    assert worst.launch_ns == pytest.approx(0.5)
    assert worst.logic_ns == pytest.approx(0.55)
    assert worst.routing_ns == pytest.approx(5.6)
    assert worst.logic_levels == 2
    assert report.fmax_mhz == pytest.approx(1000 / 6.7)
    assert [step[2] for step in worst.steps] == ["launch", "net", "cell", "net", "cell", "net"]
    assert report.failing == 1
    assert [(g.start, g.end, g.endpoints) for g in report.groups] == [("b[]", "c", 1)]
    assert report.histogram() == [(-2.0, 1)]


def test_slack_against_a_longer_period(sdf):
    report = analyse(read_sdf(sdf), period_ns=10.0)
    assert report.failing == 0 and report.groups == ()
    # c; d through the loop b -> loop1 -> loop2 (cut where the search meets it); b
    assert report.slacks == pytest.approx((10 - 6.7, 10 - 1.35, 10 - 1.3))


def test_name_patterns_drop_bits_and_packing_suffixes():
    assert name_pattern("dut.lane1.total3[7]_TRELLIS_FF_Q/DI") == "dut.lane#.total#[]"
    assert name_pattern("dut.pp[2]_CCU2C_S1$CCU2_COMB0/A") == "dut.pp[]"
    assert name_pattern("dut.multiplier/P0") == "dut.multiplier"


def test_errors_name_the_file_and_line(sdf, tmp_path):
    with pytest.raises(SdfError, match="no such SDF file"):
        read_sdf(tmp_path / "missing.sdf")
    empty = tmp_path / "empty.sdf"
    empty.write_text("(DELAYFILE)\n")
    with pytest.raises(SdfError, match="no CELL entries"):
        read_sdf(empty)
    bad = tmp_path / "bad.sdf"
    bad.write_text(SDF.replace("(IOPATH C F (100:200:250) (100:200:250))", "(IOPATH C F (oops))"))
    line = SDF.splitlines().index(next(x for x in SDF.splitlines() if "IOPATH C F" in x)) + 1
    with pytest.raises(SdfError, match=rf"bad.sdf, line {line}: cannot read"):
        read_sdf(bad)
    with pytest.raises(ValueError, match="positive number of ns"):
        analyse(read_sdf(sdf), 0)


def test_cli_lists_groups_and_paths(sdf, capsys):
    assert main(["timing", str(sdf), "--period", "5", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 endpoints fail; worst slack -1.700 ns" in out
    assert "b[] -> c" in out and "lut3/F" in out
    assert main(["timing", str(sdf.parent), "--period", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["failing"] == 1 and data["groups"][0]["worst"]["routing_ns"] == pytest.approx(5.6)
    assert main(["timing", str(sdf.parent / "nothing")]) == 2
    assert "no SDF file" in capsys.readouterr().err


# A placed design: a block of four cells (one of them a packed flip-flop name), one of two, a cell without a
# placement (skipped) and a cell at the top level.
PLACED = {"modules": {"top": {"cells": {
    "dut.lane0.acc_fifo.storage.0.0$DPRAM_COMB_TRELLIS_DPR16X4": {"type": "TRELLIS_DPR16X4",
                                                                 "attributes": {"NEXTPNR_BEL": "X10/Y20/SLICEA"}},
    "dut.lane0.acc_fifo.level[1]_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X12/Y22/FF0"}},
    "dut.lane0.beat_LUT4_Z": {"type": "TRELLIS_COMB", "attributes": {"NEXTPNR_BEL": "X30/Y20/SLICEB"}},
    "dut.lane0.beat_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X40/Y40/FF1"}},
    "dut.array.pe_0_0.multiplier": {"type": "MULT18X18D", "attributes": {"NEXTPNR_BEL": "X4/Y10/MULT18_0"}},
    "dut.array.en0_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X6/Y10/FF0"}},
    "dut.unplaced": {"type": "TRELLIS_FF", "attributes": {}},
    "capture[3]_TRELLIS_FF_Q": {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": "X1/Y1/FF0"}},
}}}}


@pytest.fixture
def placed(tmp_path):
    path = tmp_path / "placed.json"
    path.write_text(json.dumps(PLACED))
    return path


def test_placement_by_block(placed):
    blocks = {b.block: b for b in read_placement(placed)}
    assert list(blocks) == ["dut.lane0", "dut.array", "capture[3]"]
    lane = blocks["dut.lane0"]
    assert lane.cells == 4 and lane.centre == (23.0, 25.5)
    assert lane.x_span == (10, 30) and lane.y_span == (20, 22)  # 10th and 90th percentiles of 4 values
    deeper = {b.block for b in read_placement(placed, depth=3)}
    assert {"dut.lane0.acc_fifo", "dut.lane0", "dut.array.pe_0_0", "dut.array"} <= deeper


def test_placement_errors(placed, tmp_path, capsys):
    from rpaccel.flow.timing import PlacementError

    with pytest.raises(PlacementError, match="no placed design.*--placement"):
        read_placement(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlacementError, match="bad.json: not a design JSON"):
        read_placement(tmp_path / "bad.json")
    (tmp_path / "early.json").write_text(json.dumps({"modules": {"top": {"cells": {"a": {"attributes": {}}}}}}))
    with pytest.raises(PlacementError, match="no placed cells"):
        read_placement(tmp_path / "early.json")
    with pytest.raises(ValueError, match="positive integer"):
        read_placement(placed, depth=0)
    assert main(["timing", str(placed.parent), "--placement"]) == 0
    out = capsys.readouterr().out
    assert "dut.lane0" in out and "10-30" in out
    assert main(["timing", str(placed), "--placement", "--json", "--depth", "3"]) == 0
    assert {b["block"] for b in json.loads(capsys.readouterr().out)} >= {"dut.lane0.acc_fifo"}
    assert main(["timing", str(tmp_path / "missing.json"), "--placement"]) == 1
    assert "no placed design" in capsys.readouterr().err
    assert main(["timing", str(placed), "--placement", "--depth", "0"]) == 2


# A synthesised netlist (Yosys JSON): flip-flop a -> LUT -> carry cell c1 -> carry chain -> c2 -> flip-flop b; a
# block RAM's output -> LUT -> b's clock enable; a multiplier with registered outputs and unregistered inputs fed by
# a; a constant input.
def _cell(kind, connections, directions, parameters=None):
    return {"type": kind, "connections": connections, "port_directions": directions, "parameters": parameters or {}}


NETLIST = {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "cells": {
    "a_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"Q": [2], "DI": [9]}, {"Q": "output", "DI": "input"}),
    "l1": _cell("LUT4", {"A": [2], "B": ["0"], "C": ["1"], "D": [2], "Z": [3]},
                {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"}),
    "c1": _cell("CCU2C", {"A0": [3], "CIN": ["0"], "COUT": [4], "S0": [10]},
                {"A0": "input", "CIN": "input", "COUT": "output", "S0": "output"}),
    "c2": _cell("CCU2C", {"CIN": [4], "S0": [5]}, {"CIN": "input", "S0": "output"}),
    "b_TRELLIS_FF_Q": _cell("TRELLIS_FF", {"DI": [5], "CE": [7], "Q": [9]},
                            {"DI": "input", "CE": "input", "Q": "output"}),
    "ram": _cell("DP16KD", {"DOA0": [6], "ADA3": [2]}, {"DOA0": "output", "ADA3": "input"}),
    "l2": _cell("LUT4", {"A": [6], "Z": [7]}, {"A": "input", "Z": "output"}),
    "mul": _cell("MULT18X18D", {"A0": [2], "B0": [2], "P0": [8]}, {"A0": "input", "B0": "input", "P0": "output"},
                 {"REG_INPUTA_CLK": "NONE", "REG_OUTPUT_CLK": "CLK0"}),
    "scope": {"type": "$scopeinfo", "connections": {}, "port_directions": {}},
}}}}


@pytest.fixture
def netlist(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(NETLIST))
    return path


def test_netlist_estimates_follow_the_cells_and_wires(netlist):
    graph = estimate_netlist(netlist, wire_ns=0.7)
    report = analyse(graph, 3.0)
    worst = {group.worst.end: group.worst for group in report.groups}
    # a (0.4) + wire + LUT (0.45) + wire + A0 -> COUT (0.3) + carry (0) + CIN -> S0 (0.25) + wire, then setup 0.1.
    path = worst["b_TRELLIS_FF_Q/DI"]
    assert path.start == "a_TRELLIS_FF_Q/Q" and path.logic_levels == 3
    assert path.delay_ns == pytest.approx(0.4 + 0.7 + 0.45 + 0.7 + 0.3 + 0.0 + 0.25 + 0.7 + 0.1)
    # The block RAM launches (2.5) into b's clock enable (setup 0.2); the multiplier's unregistered inputs are
    # checked 4.0 ns before its output register, and its output launches.
    assert worst["b_TRELLIS_FF_Q/CE"].delay_ns == pytest.approx(2.5 + 0.7 + 0.45 + 0.7 + 0.2)
    assert worst["mul/A0"].delay_ns == pytest.approx(0.4 + 0.7 + 4.0) == report.worst.delay_ns
    assert "mul/P0" in graph.launch and (report.endpoints, report.failing) == (6, 4)
    assert analyse(estimate_netlist(netlist, wire_ns=0.0), 3.0).worst.delay_ns == pytest.approx(4.4)


def test_netlist_errors_name_the_file(netlist, tmp_path, capsys):
    with pytest.raises(NetlistError, match="no such netlist"):
        estimate_netlist(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(NetlistError, match=r"bad.json: not a Yosys JSON netlist"):
        estimate_netlist(bad)
    foreign = json.loads(netlist.read_text())
    foreign["modules"]["top"]["cells"]["x"] = _cell("SB_LUT4", {}, {})
    bad.write_text(json.dumps(foreign))
    with pytest.raises(NetlistError, match=r"cell x is a 'SB_LUT4', which has no delay estimates"):
        estimate_netlist(bad)
    assert main(["timing", str(netlist.parent), "--netlist", "--period", "3"]) == 0
    assert "4 of 6 endpoints fail" in capsys.readouterr().out
    assert main(["timing", str(tmp_path / "nothing"), "--netlist"]) == 2
    assert "no synthesised netlist" in capsys.readouterr().err
    assert main(["timing", str(netlist), "--netlist", "--wire", "-1"]) == 2
