"""The host commands end to end on tiny data, and their one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from rpaccel.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Train and quantise rm-small and rm-med on 12k generated samples with 300-row tables."""
    d = tmp_path_factory.mktemp("host-cli")
    common = ["--max-rows", "300", "--quiet"]
    assert main(["data", "gen", "--out", str(d / "train.tsv"), "--samples", "12000", *common]) == 0
    assert main(["data", "gen", "--out", str(d / "test.tsv"), "--samples", "4096", "--start", "12000", *common]) == 0
    for name in ("rm-small", "rm-med"):
        assert main(["train", "--model", name, "--data", str(d / "train.tsv"), "--out", str(d / f"{name}.npz"),
                     "--batch", "256", "--lr", "0.003", *common]) == 0
        assert main(["quantize", "--weights", str(d / f"{name}.npz"), "--data", str(d / "train.tsv"), "--out",
                     str(d / f"{name}.q.npz"), "--samples", "2000", "--quiet"]) == 0
    return d


def test_generation_and_training_are_byte_identical(workdir, tmp_path):
    assert main(["data", "gen", "--out", str(tmp_path / "again.tsv"), "--samples", "12000", "--max-rows", "300",
                 "--quiet"]) == 0
    assert (tmp_path / "again.tsv").read_bytes() == (workdir / "train.tsv").read_bytes()
    assert main(["train", "--model", "rm-small", "--data", str(workdir / "train.tsv"), "--out",
                 str(tmp_path / "w.npz"), "--batch", "256", "--lr", "0.003", "--max-rows", "300", "--quiet"]) == 0
    assert (tmp_path / "w.npz").read_bytes() == (workdir / "rm-small.npz").read_bytes()
    # The quantised file records its inputs' paths, so quantise the same weights file again.
    assert main(["quantize", "--weights", str(workdir / "rm-small.npz"), "--data", str(workdir / "train.tsv"),
                 "--out", str(tmp_path / "w.q.npz"), "--samples", "2000", "--quiet"]) == 0
    assert (tmp_path / "w.q.npz").read_bytes() == (workdir / "rm-small.q.npz").read_bytes()


def test_quality_report_plot_and_results_section(workdir, tmp_path, capsys):
    results = tmp_path / "results.md"
    plot = tmp_path / "img" / "q.png"
    argv = ["quality", "--data", str(workdir / "test.tsv"), "--model", str(workdir / "rm-small.q.npz"),
            "--model", str(workdir / "rm-med.q.npz"), "--float", str(workdir / "rm-small.npz"), "--candidates", "512",
            "--k", "16", "--pipeline", "rm-small:64>rm-med", "--pipeline", "rm-med", "--plot", str(plot),
            "--write", "--results", str(results), "--quiet", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(out[:out.rindex("}") + 1])
    assert report["queries"] == 8
    rows = {(r["pipeline"], r["kind"]): r for r in report["pipelines"]}
    assert rows[("rm-small:64>rm-med", "int8")]["macs_per_query"] == 512 * 25_276 + 64 * 31_024
    assert 0 <= rows[("rm-med", "int8")]["ndcg"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = results.read_text()
    assert "<!-- BEGIN quality-test -->" in text and "rm-small:64>rm-med" in text and "img/q.png" in text


def test_stats_and_models_listing(workdir, capsys):
    assert main(["data", "stats", str(workdir / "test.tsv"), "--quiet", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 4096 and stats["tables"] == 26 and max(stats["distinct_values"]) <= 300
    assert main(["models", "rm-small", "rmc1"]) == 0
    out = capsys.readouterr().out
    assert "25,276" in out and "rmc1" in out and "rm-large" not in out


def _bad_tsv(tmp_path):
    good = "\t".join(["0", *["1"] * 13, *["00ab12cd"] * 26])
    bad = good.split("\t")
    bad[17] = "g00d"
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join([good, good, "\t".join(bad), good]) + "\n")
    return path


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "rm-huge", "--data", "{bad}", "--out", "{tmp}/w.npz"],
     "unknown model 'rm-huge' (known: rm-small"),
    (["train", "--model", "din", "--data", "{bad}", "--out", "{tmp}/w.npz"], "specified for its costs only"),
    (["train", "--model", "rm-small", "--data", "{bad}", "--out", "{tmp}/w.npz"],
     "bad.tsv:3: C4: 'g00d' is not a hexadecimal value"),
    (["train", "--model", "rm-small", "--data", "{tmp}/missing.tsv", "--out", "{tmp}/w.npz"],
     "missing.tsv: no such file"),
    (["quantize", "--weights", "{bad}", "--data", "{bad}", "--out", "{tmp}/q.npz"], "bad.tsv: not a weights file"),
    (["data", "stats", "{bad}"], "bad.tsv:3: C4: 'g00d'"),
    (["data", "gen", "--out", "{tmp}/x.tsv", "--model", "rmc1"], "not shaped like Criteo; write a .npz file"),
    (["models", "--max-rows", "0"], "must be a positive integer, not 0"),
])
def test_bad_input_is_one_line_with_status_2(tmp_path, argv, message, capsys):
    bad = _bad_tsv(tmp_path)
    argv = [a.format(bad=bad, tmp=tmp_path) for a in argv] + ["--quiet"] * (argv[0] in ("train", "quantize"))
    with pytest.raises(SystemExit) if argv[0] == "models" else _nothing():
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_skip_bad_counts_lines_and_no_traceback_reaches_the_user(tmp_path):
    bad = _bad_tsv(tmp_path)
    result = subprocess.run([sys.executable, "-m", "rpaccel", "data", "stats", str(bad), "--skip-bad", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "3 samples" in result.stdout and "skipped 1 bad lines: bad C4 1" in result.stdout
    result = subprocess.run([sys.executable, "-m", "rpaccel", "train", "--model", "rm-small", "--data", str(bad),
                             "--out", str(tmp_path / "w.npz"), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = f"rpaccel train: error: {bad}:3: C4: 'g00d' is not a hexadecimal value of at most 8 digits"
    assert result.stderr.strip() == expected
