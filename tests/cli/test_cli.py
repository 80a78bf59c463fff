"""The rpaccel command: listings, one-line errors with exit status 2, info, the results file."""

import datetime
import json
import subprocess
import sys

import pytest

from rpaccel.cli import main
from rpaccel.results import format_table, write_section


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "rpaccel", *argv], capture_output=True, text=True)


def test_synth_list(capsys):
    assert main(["synth", "--list"]) == 0
    out = capsys.readouterr().out
    assert "postproc" in out and "pe" in out and "ecp5-85f" in out and "ice40-up5k" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["synth", "nosuch", "--target", "ecp5-85f"], "unknown component 'nosuch' (known: pe, postproc"),
    (["synth", "pe", "--target", "virtex7"], "unknown target 'virtex7' (known: ice40-up5k, ecp5-85f)"),
    (["synth", "pe", "--target", "ecp5-85f", "--preset", "huge"], "Unknown preset 'huge'"),
    (["synth", "pe"], "give --target"),
    (["synth", "pe", "--target", "ecp5-85f", "--clock", "-5"], "--clock must be a positive frequency"),
    (["synth", "pe", "--bogus"], "unrecognized arguments: --bogus"),
    (["synth", "pe", "--target", "ecp5-85f", "--placer", "quick"], "placer must be one of heap, static, sa"),
    (["synth", "pe", "--target", "ecp5-85f", "--router", "r3"], "router must be one of router1, router2"),
    (["bench", "gemm", "--synth-only", "--placer", "quick"], "--placer must be one of heap, static, sa"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    (["demo", "--count", "0"], "--count must be a positive integer, not 0"),
    (["demo", "--k", "0"], "--k must be between 1 and the small preset's K_MAX 64, not 0"),
    (["demo", "--candidates", "-5"], "--candidates must be a positive integer, not -5"),
])
def test_bad_arguments_are_one_line_with_status_2(argv, message):
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_info_reports_every_tool(capsys):
    assert main(["info", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    for name in ("amaranth", "cocotb", "verilator", "yosys", "nextpnr-ice40", "nextpnr-ecp5"):
        assert rows[name]["version"] and "not found" not in rows[name]["version"], rows[name]
        assert rows[name]["where"]
    assert rows["yosys"]["version"].startswith("Yosys 0.69")


def test_results_sections_are_replaced_in_place(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nHand-written notes stay.\n")
    day = datetime.date(2026, 1, 2)
    write_section("x", "Section X", "old", command="rpaccel bench x", path=path, today=day)
    write_section("y", "Section Y", "why", command="rpaccel bench y", path=path, today=day)
    write_section("x", "Section X", "new", command="rpaccel bench x --write", path=path, today=day)
    text = path.read_text()
    assert "Hand-written notes stay." in text and "why" in text and "new" in text and "old" not in text
    assert "Measured 2026-01-02 with `rpaccel bench x --write`." in text
    assert text.index("Section X") < text.index("Section Y")
    with pytest.raises(ValueError, match="letters, digits and dashes"):
        write_section("x y", "t", "b", path=path)


def test_format_table_aligns_numbers():
    table = format_table(["name", "n"], [["a", 1234], ["b", 0.5]])
    assert table.splitlines()[1] == "| --- | ---: |"
    assert "1,234" in table
