"""The seeds' claims table of the results file: the verdict rules, each verdict reached from a section's figures,
the table remade when a section changes, and missing sections."""

import pytest

from rpaccel.results import (
    CLAIMS,
    FACTOR_SHARE,
    VERDICTS,
    format_table,
    judge_agreement,
    judge_factor,
    judge_iso_quality,
    read_sections,
    write_section,
    write_status,
)


def claims(path):
    """The claims table of the results file at ``path``: ``{claim: row}``."""
    return {row["claim"]: row for row in read_sections(path.read_text())["seed-claims"]["tables"][0]}


def claim(path, section, index=0):
    """The row of the ``index``-th claim read from ``section``."""
    text = [each for each in CLAIMS if each.section == section][index].claim
    return claims(path)[text]


@pytest.mark.parametrize(("ours", "claimed", "verdict"), [
    (3.0, 3, "reproduced"), (FACTOR_SHARE * 3, 3, "reproduced"), (2.6, 3, "partly"), (1.01, 6, "partly"),
    (1.0, 2, "refuted"), (0.5, 2, "refuted"),
])
def test_a_claimed_factor(ours, claimed, verdict):
    got, reason = judge_factor(ours, claimed)
    assert got == verdict and f"{ours:.2f}x" in reason and reason.endswith(".")


@pytest.mark.parametrize(("change", "error", "share", "verdict"), [
    (0.65, 0.2, 0.159, "reproduced"), (0.0, 0.1, 0.9, "reproduced"), (-0.3, 0.2, 0.2, "partly"),
    (-0.5, 0.2, 0.2, "refuted"), (0.4, 0.1, 1.0, "refuted"),
])
def test_iso_quality_at_less_compute(change, error, share, verdict):
    assert judge_iso_quality(change, error, share)[0] == verdict


@pytest.mark.parametrize(("errors", "verdict", "said"), [
    ([0.06, -0.071, 0.0], "reproduced", "3 of 3 cases within 10% (worst -7.1%)"),
    ([0.06, -0.231], "partly", "1 of 2 cases within 10% (worst -23.1%)"),
    ([-0.75, 0.4], "refuted", "0 of 2 cases within 10% (worst -75.0%)"),
])
def test_a_model_against_a_measurement(errors, verdict, said):
    assert judge_agreement(errors) == (verdict, said + ".")


def claims_paper(baseline_us, rpaccel_us, baseline_qps, rpaccel_qps, iso=("yes", "yes")):
    """A ``claims-paper`` timing table as ``rpaccel bench claims`` writes it (the columns the claims table reads):
    the baseline, a 2-stage row at ``rpaccel_us`` and ``rpaccel_qps``, a 3-stage row, faster than the baseline
    still and at the highest throughput, and a 2-stage row faster than both that is never at iso-quality;
    ``iso``: the first two RPAccel rows' iso-quality cells."""
    return format_table(
        ["pipeline", "stages", "mode", "split", "sub-batch", "p95 latency (us)", "queries/s", "NDCG@64",
         "vs baseline (points, 95% CI)", "iso-quality", "RecPipe model (us)"],
        [["1-stage", "rm-large:4096:64", "baseline", 1, 64, baseline_us, baseline_qps, "0.8767", "0", "-",
          "2,107.6"],
         ["2-stage", "rm-small:4096:1024,rm-large:1024:64", "rpaccel", 1, 64, rpaccel_us, rpaccel_qps, "0.8771",
          "+0.04 [-0.16, +0.24]", iso[0], "852.0"],
         ["3-stage", "rm-small:4096:512,rm-med:512:128,rm-large:128:64", "rpaccel", 4, 32, "7,000.0", "200",
          "0.8700", "-0.67 [-1.07, -0.27]", iso[1], "1,268.0"],
         ["2-stage", "rm-small:4096:512,rm-large:512:64", "rpaccel", 1, 64, "100.0", "9,000", "0.8000",
          "-7.67 [-8.60, -6.74]", "no", "600.0"]])


def test_every_verdict_is_reached_from_the_figures(tmp_path):
    path = tmp_path / "results.md"
    write_section("claims-paper", "Claims", claims_paper("8,313.9", "2,500.0", "120", "148"),
                  command="rpaccel bench claims --write", commit="abc1234", path=path)
    latency, throughput = claim(path, "claims-paper", 0), claim(path, "claims-paper", 1)
    # The fastest row is not at iso-quality: the factors are the iso-quality rows' (latency: the 2-stage row's;
    # throughput: the 3-stage row's, 200 / 120).
    assert (latency["ours"], latency["verdict"]) == ("3.33x (rm-small:4096:1024,rm-large:1024:64, split 1)",
                                                     "**reproduced**")
    assert (throughput["ours"], throughput["verdict"]) == (
        "1.67x (rm-small:4096:512,rm-med:512:128,rm-large:128:64, split 4)", "**partly**")
    assert throughput["measured by"].startswith("`rpaccel bench claims --write` ([`claims-paper`](#claims), ")
    # RecPipe's model against the timed model on RPAccel's rows (the baseline's is not RPAccel's latency): 852 / 2,500,
    # 1,268 / 7,000 and 600 / 100, none within 10%.
    model = claim(path, "claims-paper", 2)
    assert model["verdict"] == "**refuted**" and model["reason"] == "0 of 3 cases within 10% (worst +500.0%)."
    # The same claim refuted when no pipeline is at iso-quality: the closest is the one whose interval reaches
    # highest.
    write_section("claims-paper", "Claims", claims_paper("8,313.9", "2,500.0", "120", "148", iso=("no", "no")),
                  command="rpaccel bench claims --write", commit="abc1234", path=path)
    latency = claim(path, "claims-paper", 0)
    closest = "closest: rm-small:4096:1024,rm-large:1024:64, +0.04 [-0.16, +0.24] points of NDCG against the baseline"
    assert latency["ours"] == f"no RPAccel configuration at iso-quality ({closest})"
    assert latency["verdict"] == "**refuted**" and "nothing to compare at iso-quality" in latency["reason"]
    status = {row["figure"]: row for row in read_sections(path.read_text())["status"]["tables"][0]}
    assert status["RecPipe's claim on paper (timed model): p95 latency at iso-quality over the TPU-like baseline"][
        "measured"] == f"no RPAccel row at iso-quality ({closest})"
    # And a throughput below the baseline's is no improvement.
    write_section("claims-paper", "Claims", claims_paper("8,313.9", "9,500.0", "220", "60", iso=("yes", "no")),
                  command="rpaccel bench claims --write", commit="abc1234", path=path)
    assert claim(path, "claims-paper", 1)["verdict"] == "**refuted**"


def test_the_quality_claim_takes_the_best_verdict_then_the_cheapest(tmp_path):
    path = tmp_path / "results.md"
    header = ["pipeline", "vs 1-stage rm-large (points, paired)", "MACs vs 1-stage rm-large"]
    rows = [["1-stage rm-small", "-5.47 ± 0.42", "11.0%"], ["2-stage rm-small -> rm-large", "+0.04 ± 0.10", "23.5%"],
            ["3-stage rm-small -> rm-med -> rm-large", "+0.65 ± 0.20", "15.9%"]]
    write_section("quality-pipelines", "Quality", format_table(header, rows), command="rpaccel bench quality --write",
                  commit="abc1234", path=path)
    row = claim(path, "quality-pipelines")
    assert row["verdict"] == "**reproduced**" and row["ours"] == "3-stage: +0.65 ± 0.20 points at 15.9% of the MACs"
    rows[1][1], rows[2][1] = "-0.15 ± 0.10", "-0.90 ± 0.20"
    write_section("quality-pipelines", "Quality", format_table(header, rows), command="rpaccel bench quality --write",
                  commit="abc1234", path=path)
    row = claim(path, "quality-pipelines")
    assert row["verdict"] == "**partly**" and row["ours"].startswith("2-stage: -0.15 ± 0.10")


def sched_models(cpu, chip):
    header = ["model", "chip", "best static", "static q/s", "DeepRecSched, CPU", "CPU q/s", "ratio, CPU",
              "DeepRecSched, CPU + chip", "CPU + chip q/s", "ratio, CPU + chip"]
    return format_table(header, [
        ["rmc1", "runs", "B=32, T=-", "113.4", "B=128, T=-", "140.5", "1.24x", "B=128, T=128", "378.0", "3.33x"],
        ["wnd", "cannot run: no bottom MLP", "B=64, T=-", "9.9", "B=512, T=-", "19.3", "1.94x", "-", "-", "-"],
        ["geometric mean", "-", "-", "-", "-", "-", cpu, "-", "-", chip]])


def test_the_table_is_remade_when_a_section_changes(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nNotes.\n")
    write_section("sched-models", "Models", sched_models("1.55x", "3.33x"), command="rpaccel bench sched --models "
                  "--write", commit="abc1234", path=path)
    on_cpus, with_chip = claim(path, "sched-models", 0), claim(path, "sched-models", 1)
    assert (on_cpus["ours"], on_cpus["verdict"]) == ("1.55x (geometric mean over 2 models)", "**partly**")
    assert (with_chip["ours"], with_chip["verdict"]) == ("3.33x (geometric mean over 1 model)", "**reproduced**")
    status = {row["figure"]: row for row in read_sections(path.read_text())["status"]["tables"][0]}
    assert status["DeepRecSched over the static scheduler across the zoo's models, CPU cores and the chip"][
        "measured"] == "3.33x (geometric mean over 1 model)"
    write_section("sched-models", "Models", sched_models("0.80x", "1.90x"), command="rpaccel bench sched --models "
                  "--write", commit="def5678", path=path)
    on_cpus, with_chip = claim(path, "sched-models", 0), claim(path, "sched-models", 1)
    assert on_cpus["verdict"] == "**refuted**" and with_chip["verdict"] == "**reproduced**"
    assert "def5678" in on_cpus["measured by"]
    text = path.read_text()
    assert text.count("<!-- BEGIN seed-claims -->") == text.count("<!-- END seed-claims -->") == 1
    assert text.index("Notes.") < text.index("## Status") < text.index("## The seeds' claims") < text.index(
        "## Models")
    before = text
    write_status(path)                                      # remade from what is there: nothing changes
    assert path.read_text() == before


def test_the_paper_chips_models_are_judged_on_their_own(tmp_path):
    """``bench sched --models --preset paper`` writes a section of its own (the small chip's stays): its claim and
    its status row read it, the small chip's read theirs."""
    path = tmp_path / "results.md"
    write_section("sched-models", "Models", sched_models("1.30x", "1.77x"), command="rpaccel bench sched --models "
                  "--write", commit="abc1234", path=path)
    write_section("sched-models-paper", "Models on paper", sched_models("1.25x", "0.95x"),
                  command="rpaccel bench sched --models --preset paper --write", commit="def5678", path=path)
    small, paper = claim(path, "sched-models", 1), claim(path, "sched-models-paper")
    assert (small["ours"], small["verdict"]) == ("1.77x (geometric mean over 1 model)", "**partly**")
    assert (paper["ours"], paper["verdict"]) == ("0.95x (geometric mean over 1 model)", "**refuted**")
    assert "--preset paper" in paper["measured by"] and "def5678" in paper["measured by"]
    status = {row["figure"]: row for row in read_sections(path.read_text())["status"]["tables"][0]}
    on_paper = status["DeepRecSched over the static scheduler across the zoo's models, CPU cores and the paper chip"]
    assert (on_paper["measured"], on_paper["met"]) == ("0.95x (geometric mean over 1 model)", "**no**")


def test_missing_sections_are_not_measured_with_the_command_that_would(tmp_path):
    path = tmp_path / "results.md"
    write_section("gemm", "Gemm", "no figures here", command="rpaccel bench gemm", commit="abc1234", path=path)
    rows = claims(path)
    assert len(rows) == len(CLAIMS)
    for each in CLAIMS:
        row = rows[each.claim]
        assert (row["ours"], row["verdict"], row["reason"]) == ("not measured", "", "")
        assert row["measured by"] == f"`{each.command}`"
    # A section without the figures a claim reads is not measured either.
    write_section("sched", "Sched", format_table(["items", "CPU ms"], [[1, "0.2"]]), command="rpaccel bench sched",
                  commit="abc1234", path=path)
    assert claim(path, "sched")["ours"] == "not measured"


def test_generated_sections_cannot_be_written(tmp_path):
    for name in ("status", "seed-claims"):
        with pytest.raises(ValueError, match="not 'status' or 'seed-claims'"):
            write_section(name, "t", "b", path=tmp_path / "results.md")


def test_every_claim_names_its_section_and_command():
    for each in CLAIMS:
        assert each.command.startswith("rpaccel bench ") and each.command.endswith("--write")
        assert each.section and each.figure
    assert VERDICTS == ("reproduced", "partly", "refuted")
