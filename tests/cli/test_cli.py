"""The rpaccel command: listings, one-line errors with exit status 2, info, the results file."""

import datetime
import json
import subprocess
import sys

import pytest

from rpaccel.cli import main
from rpaccel.results import HEADLINES, format_table, git_commit, read_sections, write_section, write_status


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
    (["synth", "pe", "--preset", "paper"], "the paper preset has no synthesis target; give --target"),
    (["synth", "pe", "--set", "array_rows=x"], "--set: array_rows must be an integer, not 'x'"),
    (["synth", "pe", "--target", "ecp5-85f", "--clock", "-5"], "--clock must be a positive frequency"),
    (["synth", "pe", "--bogus"], "unrecognized arguments: --bogus"),
    (["synth", "pe", "--target", "ecp5-85f", "--placer", "quick"], "placer must be one of heap, static, sa"),
    (["synth", "pe", "--target", "ecp5-85f", "--router", "r3"], "router must be one of router1, router2"),
    (["bench", "gemm", "--synth-only", "--placer", "quick"], "--placer must be one of heap, static, sa"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    (["demo", "--k", "0"], "--k must be between 1 and the small preset's K_MAX 64, not 0"),
    (["demo", "--candidates", "-5"], "--candidates must be a positive integer, not -5"),
    # A negative seed is an argument error, not a failed scoreboard.
    (["demo", "--seed", "-1"], "argument --seed: must be a non-negative integer, not -1"),
    (["demo", "--preset", "tiny", "--k", "17"], "--k must be between 1 and the tiny preset's K_MAX 16, not 17"),
    (["demo", "--pause", "1"], "--pause must be in [0, 1), not 1.0"),
    # --preset and --set on every command that builds or simulates hardware.
    (["bench", "gemm", "--preset", "tiny", "--set", "array_row=8"],
     "--set: unknown configuration field 'array_row' in 'array_row=8'; did you mean array_rows, array_cols?"),
    (["bench", "gemm", "--preset", "tiny", "--set", "array_rows=6"],
     "--set: tiny with array_rows=6: A 6x4 array of 2x2 blocks cannot be split into 4 sub-arrays"),
    (["bench", "gemm", "--set", "splits=1,x"], "--set: splits must be comma-separated integers, not '1,x'"),
    (["bench", "gemm", "--set", "array_rows"], "--set: a setting must be field=value, not 'array_rows'"),
    (["bench", "gemm", "--preset", "huge"], "Unknown preset 'huge'; known presets: tiny, small, paper"),
    (["bench", "gemm", "--preset", "tiny", "--set", "array_rows=8", "--models", "rm-small"],
     "rm-small on the tiny+array_rows=8 configuration, split 1: The weights need 388 words"),
    (["bench", "gemm", "--models", "rm-huge"], "--models has an unknown model 'rm-huge' (known: rm-large, rm-small)"),
    (["bench", "gemm", "--splits", "3"], "--splits has 3, which is not one of the small configuration's splits"),
    (["bench", "gemm", "--batches", "16,0"], "--batches must be comma-separated positive integers, not '16,0'"),
    (["bench", "gemm", "--pause", "-0.1"], "--pause must be in [0, 1), not -0.1"),
    (["bench", "gemm", "--seed", "-3"], "argument --seed: must be a non-negative integer, not -3"),
    (["bench", "gemm", "--synth-only", "--synth-runs", "pe@virtex"], "--synth-runs: unknown run 'pe@virtex'"),
    (["bench", "gemm", "--synth-only", "--pnr-timeout", "0"], "--pnr-timeout must be a positive number of seconds"),
    (["bench", "embedding", "--set", "dyn_cache_sets=100"], "--set: small with dyn_cache_sets=100: dyn_cache_sets "
                                                            "must be a power of two, not 100"),
    (["bench", "embedding", "--preset", "tiny", "--dim", "32"], "--dim must be a power of two, a multiple of 16 "
                                                                "and at most 16, not 32"),
    (["bench", "topk", "--k-max", "16,0"], "--k-max must be comma-separated positive integers, not '16,0'"),
    (["bench", "topk", "--queries", "0"], "--queries must be a positive integer, not 0"),
    (["bench", "topk", "--set", "k_max=x"], "--set: k_max must be an integer, not 'x'"),
    (["bench", "chip", "--preset", "tiny"], "--preset tiny targets 'ice40-up5k'; the chip budget counts the ECP5"),
    (["bench", "synth", "--targets", "virtex"], "--targets has an unknown target 'virtex' (known: ice40-up5k, "
                                                "ecp5-85f)"),
    (["bench", "synth", "--preset", "paper"], "the paper configuration's target 'none' is not one of --targets"),
    (["bench", "synth", "--preset", "tiny", "--targets", "ecp5-85f"],
     "the tiny configuration's target 'ice40-up5k' is not one of --targets ecp5-85f"),
    (["bench", "synth", "--set", "array_rows=6", "--targets", "ice40-up5k"],
     "--set: tiny with array_rows=6: A 6x4 array of 2x2 blocks cannot be split into 4 sub-arrays"),
    (["bench", "synth", "--components", "nosuch"], "--components has an unknown component 'nosuch'"),
    (["bench", "blocks", "--player-count", "0"], "--player-count must be a positive integer, not 0"),
    (["bench", "quality", "--candidates", "64"], "--k must be at most 2, candidates/32"),
    (["bench", "sched", "--models", "rmc1,nope"], "--models has an unknown model 'nope' (known: rm-small"),
    (["bench", "sched", "--models", "rmc1,,wnd"], "--models must be comma-separated model names, not 'rmc1,,wnd'"),
    (["bench", "sched", "--target-x", "2"], "--target-x sets a target per model: give --models"),
    (["bench", "sched", "--models", "--target-x", "0"], "--target-x must be positive, not 0.0"),
    (["bench", "sched", "--models", "--device", "fpga"], "argument --device: invalid choice: 'fpga'"),
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
    write_section("x", "Section X", "old-figures", command="rpaccel bench x", commit="abc1234", path=path, today=day)
    write_section("y", "Section Y", "y-figures", command="rpaccel bench y", commit="abc1234", path=path, today=day)
    write_section("x", "Section X", "new-figures", command="rpaccel bench x --write", commit="def5678+dirty", path=path,
                  today=day)
    text = path.read_text()
    assert "Hand-written notes stay." in text and "y-figures" in text and "new-figures" in text
    assert "old-figures" not in text
    assert "Measured 2026-01-02 at commit `def5678+dirty` with `rpaccel bench x --write`." in text
    assert text.index("Hand-written") < text.index("## Status") < text.index("Section X") < text.index("Section Y")
    assert text.count("<!-- BEGIN status -->") == 1
    with pytest.raises(ValueError, match="letters, digits and dashes"):
        write_section("x y", "t", "b", path=path)
    with pytest.raises(ValueError, match="not 'status'"):
        write_section("status", "t", "b", path=path)


def test_sections_record_the_commit_and_whether_the_tree_was_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    assert git_commit(tmp_path) is None   # not a repository
    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == head + "+dirty"
    assert git_commit(tmp_path, ignore=(tmp_path / "f",)) == head     # the results file being written is ignored
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "plot.png").write_text("1")
    git("add", "img/plot.png")
    git("commit", "-qm", "two")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout.strip()
    (tmp_path / "img" / "plot.png").write_text("2")                  # and so are the plots a run draws
    assert git_commit(tmp_path, ignore=(tmp_path / "f", tmp_path / "img")) == head
    assert git_commit(tmp_path, ignore=(tmp_path / "img",)) == head + "+dirty"
    (tmp_path / "f").write_text("1")
    assert git_commit(tmp_path, ignore=(tmp_path / "img",)) == head


def test_status_table_reads_the_headline_figures_from_the_sections(tmp_path):
    path = tmp_path / "results.md"
    gemm = format_table(["model", "split", "batch", "utilisation"], [["rm-large", 1, 512, "91.5%"]])
    synth = format_table(["component", "target", "Fmax MHz", "meets"], [["mlp", "ecp5-85f", 104.2, "no"]])
    chip = format_table(["unit", "LUTs", "DSPs"], [["share", "85.5%", "101.3%"]])
    write_section("gemm", "MLP engine", gemm, command="rpaccel bench gemm", commit="abc1234", path=path)
    write_section("gemm-synth", "Synthesis", synth, command="rpaccel bench gemm --synth-only", commit="abc1234",
                  path=path)
    write_section("chip", "Chip", chip, command="rpaccel bench chip", commit="abc1234", path=path)
    accel = format_table(["pipeline", "mode", "cycles/query", "baseline/this"],
                         [["2-stage", "rpaccel", "7,728,209", "0.59x"], ["2-stage", "rpaccel-whole", "4,509,216",
                                                                        "1.01x"]])
    write_section("accel", "Chip", accel, command="rpaccel bench accel", commit="abc1234", path=path)
    rows = {row["figure"]: row for row in read_sections(path.read_text())["status"]["tables"][0]}
    split = rows["Chip (small, RTL): 2-stage query, baseline cycles over RPAccel mode's (split array)"]
    assert (split["measured"], split["met"]) == ("0.59x (7,728,209 cycles per query)", "**no**")
    whole = rows["Chip (small, RTL): 2-stage query, baseline cycles over RPAccel mode's on the whole array"]
    assert (whole["measured"], whole["met"]) == ("1.01x (4,509,216 cycles per query)", "yes")
    assert len(rows) == len(HEADLINES)
    utilisation = rows["MLP engine utilisation, RM-large bottom MLP, batch 512, whole array"]
    assert (utilisation["measured"], utilisation["met"]) == ("91.5%", "yes")
    assert utilisation["section"].startswith("[`gemm`](#mlp-engine), ") and utilisation["section"].endswith(
        " at `abc1234`")
    fmax = rows["MLP engine Fmax on the ECP5-85F (small), routed"]
    assert (fmax["measured"], fmax["met"]) == ("104.2 MHz", "floor only (100)")
    fits = rows["Small preset's units on the ECP5-85F, added up"]
    assert (fits["measured"], fits["met"]) == ("101.3% of the DSPs, the fullest", "**no**")
    assert rows["Top-k: candidates per cycle sustained per unit"]["measured"] == "not measured"
    # Regenerating from what is there changes nothing.
    before = path.read_text()
    write_status(path)
    assert path.read_text() == before


def test_format_table_aligns_numbers():
    table = format_table(["name", "n"], [["a", 1234], ["b", 0.5]])
    assert table.splitlines()[1] == "| --- | ---: |"
    assert "1,234" in table


#: ``rpaccel bench gemm --preset tiny --set array_rows=8 ...`` (the issue's example), with room for RM-small.
GEMM_TINY8 = ["bench", "gemm", "--preset", "tiny", "--set", "array_rows=8", "--set", "weight_buffer_words=512",
              "--models", "rm-small", "--batches", "16", "--splits", "1"]


@pytest.mark.verilator
def test_bench_gemm_at_a_custom_configuration_writes_its_section(tmp_path, capsys):
    results = tmp_path / "results.md"
    assert main([*GEMM_TINY8, "--write", "--results", str(results), "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out[out.index("{"):out.index("\n}\n") + 2])
    assert [(r["model"], r["split"], r["batch"], r["mismatches"]) for r in data["runs"]] == [("rm-small", 1, 16, 0)]
    assert "| model | split | batch |" in out and f"written to {results}" in out
    text = results.read_text()
    assert "<!-- BEGIN gemm -->" in text and "Preset `tiny+array_rows=8+weight_buffer_words=512` (8x4 array" in text
    assert "<!-- BEGIN gemm-synth -->" not in text


@pytest.mark.verilator
def test_a_failed_check_exits_1_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import rpaccel.host.reference as golden

    forward = golden.mlp_forward
    monkeypatch.setattr(golden, "mlp_forward", lambda layers, x: forward(layers, x) + 1)   # a planted bug
    results = tmp_path / "results.md"
    assert main([*GEMM_TINY8, "--write", "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert err == "rpaccel bench gemm: failed: rm-small, split 1, batch 16: 64 outputs differ from the golden model\n"
    assert not results.exists()


def test_status_table_reads_the_replay_scale(tmp_path):
    path = tmp_path / "results.md"
    scale = format_table(["queries", "windows", "CPU s", "host s per query", "projected for 100,000"],
                         [["24", "3", "96.0", "4.00", "111.1 h"]])
    write_section("replay-scale", "Scale", scale, command="rpaccel bench replay --parts scale", commit="abc1234",
                  path=path)
    rows = {row["figure"]: row for row in read_sections(path.read_text())["status"]["tables"][0]}
    row = rows["Model backend: 100,000 two-stage queries of 4,096 candidates, host time"]
    assert (row["measured"], row["met"]) == ("111.1 h projected (24 queries replayed, 4.00 s each)", "**no**")
