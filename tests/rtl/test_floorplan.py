"""The array's multiplier floorplan: the layout rules, the PEs' BEL attributes, and nextpnr accepting every site
of the ECP5-85F table."""

import json
import re
import subprocess

import pytest
from amaranth.hdl import Fragment, Instance
from configs import SMALL16

from rpaccel.flow.synth import TARGETS, tool_env
from rpaccel.rtl.array import SystolicArray
from rpaccel.rtl.floorplan import ECP5_DSP_SITES, array_dsp_sites, dsp_rows
from rpaccel.rtl.pe import ProcessingElement

SITES = ECP5_DSP_SITES["LFE5U-85F"]


class _Platform:
    family = "ecp5"

    def __init__(self, device):
        self.device = device


def _xy(site):
    x, y = re.match(r"X(\d+)/Y(\d+)/MULT18_\d$", site).groups()
    return int(x), int(y)


def test_ecp5_85f_table():
    assert [len(row) for row in SITES] == [52, 52, 52]
    assert len({site for row in SITES for site in row}) == 156
    for row in SITES:
        xs = [_xy(site)[0] for site in row]
        assert xs == sorted(xs) and len({_xy(site)[1] for site in row}) == 1


def test_small_array_layout():
    config = SMALL16
    rows, cols = config.array_rows, config.array_cols
    placed = array_dsp_sites(rows, cols, config.array_dsp_pes, SITES)
    assert len(placed) == config.array_dsp_pes == len(set(placed.values()))
    assert all(r * cols + c < config.array_dsp_pes for r, c in placed)
    index = {site: (k, i) for k, row in enumerate(SITES) for i, site in enumerate(row)}
    for (r, c), site in placed.items():
        k, i = index[site]
        assert k == c // 3  # three 16-PE columns to a row of 52 multipliers
        width = min(3, cols - 3 * k)
        if (r + 1, c) in placed:  # partial sums: the same column of the group, one PE row on
            assert index[placed[r + 1, c]] == (k, i + width)
        if (r, c + 1) in placed and (c + 1) % 3:  # activations: the next site of the same row
            assert index[placed[r, c + 1]] == (k, i + 1)
    # Each group's sites are centred in its row.
    for k, row in enumerate(SITES):
        used = sorted(index[site][1] for site in placed.values() if index[site][0] == k)
        assert used and used[0] >= 2 and len(row) - 1 - used[-1] >= 2


def test_no_layout_without_a_table_or_room():
    assert array_dsp_sites(16, 8, 124, None) == {}
    assert array_dsp_sites(16, 16, 256, SITES) == {}  # 16 columns need 6 rows of 3
    assert array_dsp_sites(64, 2, 128, SITES) == {}  # a column longer than a row
    assert dsp_rows(_Platform("LFE5U-45F")) is None
    assert dsp_rows(None) is None
    assert dsp_rows(_Platform("LFE5UM5G-85F")) == SITES


def _bels(fragment):
    for sub, _, _ in fragment.subfragments:
        if isinstance(sub, Instance):
            yield sub.type, sub.attrs.get("BEL")
        else:
            yield from _bels(sub)


def test_array_pes_carry_their_site():
    config = SMALL16
    bels = list(_bels(Fragment.get(SystolicArray(config), _Platform("LFE5U-85F"))))
    expected = array_dsp_sites(config.array_rows, config.array_cols, config.array_dsp_pes, SITES)
    assert sorted(bel for kind, bel in bels if kind == "MULT18X18D") == sorted(expected.values())
    # On a device without a table the placer chooses.
    bels = list(_bels(Fragment.get(SystolicArray(config), _Platform("LFE5U-45F"))))
    assert [bel for kind, bel in bels if kind == "MULT18X18D"] == [None] * config.array_dsp_pes


def test_pe_site_errors():
    with pytest.raises(ValueError, match="PE multiplier site must be a BEL name of a PE with multiplier='dsp', "
                                         "not 'X8/Y10/MULT18_4'"):
        ProcessingElement(multiplier="lut", dsp_site="X8/Y10/MULT18_4")
    with pytest.raises(ValueError, match="not 7"):
        ProcessingElement(dsp_site=7)


@pytest.mark.synth
def test_nextpnr_places_a_multiplier_on_every_site(tmp_path):
    """Yosys and nextpnr (placement only): 156 registered multipliers, each fixed to one site of the table, are
    placed exactly there."""
    sites = [site for row in SITES for site in row]
    lines = ["module top(input clk, input [17:0] a, input [17:0] b, output reg [35:0] o);",
             f"wire [35:0] p [0:{len(sites) - 1}];"]
    inputs = ",".join(f".A{i}(a[{i}]),.B{i}(b[{i}])" for i in range(18))
    for k, site in enumerate(sites):
        outputs = ",".join(f".P{j}(p[{k}][{j}])" for j in range(36))
        lines.append(f'(* BEL="{site}" *) MULT18X18D #(.REG_OUTPUT_CLK("CLK0")) m{k} '
                     f"(.CLK0(clk),.CE0(1'b1),.RST0(1'b0),.SIGNEDA(1'b1),.SIGNEDB(1'b1),{inputs},{outputs});")
    lines.append("integer k; reg [35:0] x; always @(posedge clk) begin x = 0; "
                 f"for (k = 0; k < {len(sites)}; k = k + 1) x = x ^ p[k]; o <= x; end")
    lines.append("endmodule")
    (tmp_path / "top.v").write_text("\n".join(lines))
    env = tool_env(TARGETS["ecp5-85f"])
    done = subprocess.run([env["YOSYS"], "-q", "-p", "read_verilog top.v; synth_ecp5 -top top -json top.json"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    done = subprocess.run([env["NEXTPNR_ECP5"], "--85k", "--package", "CABGA381", "--json", "top.json",
                           "--lpf-allow-unconstrained", "--no-route", "--write", "placed.json", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    cells = json.loads((tmp_path / "placed.json").read_text())["modules"]["top"]["cells"]
    placed = {cell["attributes"]["NEXTPNR_BEL"] for cell in cells.values() if cell["type"] == "MULT18X18D"}
    assert placed == set(sites)
