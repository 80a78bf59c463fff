"""The host commands end to end on tiny data, and their one-line errors for bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
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


# --- what a new user hit (issue 18, point 7) ----------------------------------------------------------------


@pytest.fixture
def inputs(workdir, tmp_path):
    """A folder with copies of the module's files (and links to them), for commands that must leave it as it is."""
    for name in ("train.tsv", "test.tsv", "rm-small.npz", "rm-small.q.npz"):
        shutil.copy(workdir / name, tmp_path / name)
    shutil.copy(workdir / "test.tsv", tmp_path / "test.svg")  # read as TSV whatever its name
    (tmp_path / "train-link.tsv").symlink_to("train.tsv")
    os.link(tmp_path / "rm-small.npz", tmp_path / "hard.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.fixture
def no_work(monkeypatch):
    """Make the work of every command fail the test: an argument error must come before it."""
    from rpaccel.host import data, experiment, quant, train

    def work(*args, **kwargs):
        raise AssertionError("the command started its work before refusing its arguments")

    monkeypatch.setattr(train, "train", work)
    monkeypatch.setattr(quant, "quantize", work)
    monkeypatch.setattr(experiment, "evaluate_models", work)
    monkeypatch.setattr(experiment, "run_synthetic_experiment", work)
    monkeypatch.setattr(data.SyntheticCriteo, "generate", work)


def _snapshot(folder):
    return {p.name: (p.is_dir() or p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _refused(argv, folder, capsys):
    """Run ``argv`` ({d} = folder): exit status 2, one line on standard error, the folder unchanged."""
    before = _snapshot(folder)
    argv = [a.format(d=folder) for a in argv] + ["--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(folder) == before
    return err.strip()


_QUALITY = ["quality", "--candidates", "512"]


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "rm-small", "--data", "{d}/train.tsv", "--out", "{d}/train.tsv"],
     "--out and --data both name {d}/train.tsv: writing --out would overwrite the input; nothing written"),
    (["train", "--model", "rm-small", "--data", "{d}/train.tsv", "--out", "{d}/folder/../train.tsv"],
     "--out and --data both name {d}/train.tsv (--out through {d}/folder/../train.tsv)"),
    (["train", "--model", "rm-small", "--data", "{d}/train-link.tsv", "--out", "{d}/train.tsv"],
     "--out and --data both name {d}/train-link.tsv (--out through {d}/train.tsv)"),
    (["train", "--model", "rm-small", "--data", "{d}/test.tsv", "--valid", "{d}/train.tsv", "--out",
      "{d}/train-link.tsv"], "--out and --valid both name {d}/train.tsv (--out through {d}/train-link.tsv)"),
    (["quantize", "--weights", "{d}/rm-small.npz", "--data", "{d}/train.tsv", "--out", "{d}/rm-small.npz"],
     "--out and --weights both name {d}/rm-small.npz: writing --out would overwrite the input"),
    (["quantize", "--weights", "{d}/rm-small.npz", "--data", "{d}/train.tsv", "--out", "{d}/hard.npz"],
     "--out and --weights both name {d}/rm-small.npz (--out through {d}/hard.npz)"),
    (["quantize", "--weights", "{d}/rm-small.npz", "--data", "{d}/train.tsv", "--out", "{d}/train-link.tsv"],
     "--out and --data both name {d}/train.tsv (--out through {d}/train-link.tsv)"),
    ([*_QUALITY, "--data", "{d}/test.svg", "--model", "{d}/rm-small.q.npz", "--plot", "{d}/test.svg"],
     "--plot and --data both name {d}/test.svg: writing --plot would overwrite the input"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--write", "--results",
      "{d}/rm-small.q.npz"], "--results and --model both name {d}/rm-small.q.npz"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--float", "{d}/rm-small.npz",
      "--write", "--results", "{d}/hard.npz"], "--results and --float both name {d}/rm-small.npz"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--plot", "{d}/new.png", "--write",
      "--results", "{d}/new.png"], "--results and --plot both name {d}/new.png; name two files"),
    (["data", "split", "{d}/train.tsv", "--train-out", "{d}/a.tsv", "--test-out", "{d}/train-link.tsv", "--test",
      "9"], "--test-out and FILE both name {d}/train.tsv (--test-out through {d}/train-link.tsv)"),
])
def test_an_output_that_names_an_input_is_refused_before_the_work(inputs, no_work, argv, message, capsys):
    err = _refused(argv, inputs, capsys)
    assert message.format(d=inputs) in err, err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "rm-small", "--data", "{d}/empty.npz", "--out", "{d}/w.npz"],
     "error: {d}/empty.npz: not a records file (the file is empty)"),
    (["quantize", "--weights", "{d}/empty.npz", "--data", "{d}/train.tsv", "--out", "{d}/q.npz"],
     "error: {d}/empty.npz: not a weights file (the file is empty)"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/empty.npz"],
     "error: {d}/empty.npz: not a quantised model file (the file is empty)"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--float", "{d}/empty.npz"],
     "error: {d}/empty.npz: not a weights file (the file is empty)"),
    (["train", "--model", "rm-small", "--data", "{d}/folder", "--out", "{d}/w.npz"],
     "error: {d}/folder: is a folder, not a data file"),
    (["train", "--model", "rm-small", "--data", "{d}/train.tsv", "--out", "{d}/folder"],
     "error: --out {d}/folder is a folder; name a file to write"),
    (["quantize", "--weights", "{d}/rm-small.npz", "--data", "{d}/train.tsv", "--out", "{d}/folder"],
     "error: --out {d}/folder is a folder"),
    (["data", "gen", "--out", "{d}/folder", "--samples", "10"], "error: --out {d}/folder is a folder"),
    (["train", "--model", "rm-small", "--data", "{d}/train.tsv", "--out", "{d}/train.tsv/w.npz"],
     "error: --out {d}/train.tsv/w.npz: {d}/train.tsv is not a folder"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--plot", "{d}/q.xyz"],
     "error: --plot {d}/q.xyz: unsupported plot file type .xyz (supported: "),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--plot", "{d}/folder"],
     "error: --plot {d}/folder: no file type (supported: "),
    (["bench", "quality", "--plot", "{d}/q.xyz", "--workdir", "{d}/work"],
     "error: --plot {d}/q.xyz: unsupported plot file type .xyz (supported: "),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--queries", "9"],
     "error: {d}/test.tsv holds 4,096 samples, 8 queries of 512 candidates, fewer than --queries 9 asks "
     "(--allow-fewer evaluates 8)"),
    ([*_QUALITY, "--data", "{d}/test.tsv", "--model", "{d}/rm-small.q.npz", "--allow-fewer"],
     "error: --allow-fewer goes with --queries"),
])
def test_bad_files_are_one_line_before_the_work_and_leave_nothing(inputs, no_work, argv, message, capsys):
    err = _refused(argv, inputs, capsys)
    assert message.format(d=inputs) in err, err
    assert "internal error" not in err


def test_training_that_diverges_fails_and_writes_nothing(inputs, capsys):
    argv = ["train", "--model", "rm-small", "--data", str(inputs / "train.tsv"), "--out", str(inputs / "w.npz"),
            "--max-rows", "300", "--lr", "1e30", "--emb-lr", "1e30", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"rpaccel train: failed: training diverged at epoch 1, step \d+ of 12: the loss is nan; try a "
                        r"lower --lr \(now 1e\+30\) or --emb-lr \(now 1e\+30\); \S+w\.npz not written", err), err
    assert not (inputs / "w.npz").exists()


def test_quantize_refuses_weights_that_are_not_finite(inputs, no_work, capsys):
    from rpaccel.host.train import load_weights, save_weights

    model, meta = load_weights(inputs / "rm-small.npz")
    model.params["bottom1.b"][2] = np.nan
    save_weights(inputs / "nan.npz", model, meta)
    err = _refused(["quantize", "--weights", "{d}/nan.npz", "--data", "{d}/train.tsv", "--out", "{d}/q.npz"],
                   inputs, capsys)
    assert ("nan.npz: bad weights file (parameter bottom1.b of rm-small holds 1 non-finite value (first nan at [2]); "
            "a model whose training diverged cannot be used)") in err


def test_a_non_ascii_byte_is_reported_on_its_line_and_skipped_with_skip_bad(tmp_path, capsys):
    lines = _bad_tsv(tmp_path).read_bytes().splitlines()[:1] * 3  # three good lines
    lines.insert(2, lines[0].replace(b"\t1\t", b"\t1\xb5\t", 1))  # a micro sign in Latin-1 in I1
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["data", "stats", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"rpaccel data: error: {path}:3: not ASCII text (byte 0xb5 in field "
                                               "I1, column 4)")
    assert main(["data", "stats", str(path), "--skip-bad", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 samples" in out and "skipped 1 bad lines: not ASCII text 1" in out and f"{path}:3: not ASCII" in out


def test_quality_says_how_many_queries_it_evaluated(workdir, capsys):
    base = [*_QUALITY, "--data", str(workdir / "test.tsv"), "--model", str(workdir / "rm-small.q.npz"), "--quiet"]
    assert main(base) == 0
    assert capsys.readouterr().out.startswith(f"Evaluated 8 queries of 512 candidates from `{workdir / 'test.tsv'}`.\n")
    assert main([*base, "--candidates", "500"]) == 0  # the later option wins
    assert (f"Evaluated 8 queries of 500 candidates from `{workdir / 'test.tsv'}` (its last 96 samples, less than "
            "one query, are not used).") in capsys.readouterr().out
    assert main([*base, "--queries", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 3 and report["samples"] == {"read": 1536, "evaluated": 1536}
    assert main([*base, "--queries", "20", "--allow-fewer"]) == 0
    captured = capsys.readouterr()
    assert ("Evaluated 8 queries of 512 candidates from" in captured.out
            and "(the file holds 4,096 samples, fewer than the 20 queries asked)" in captured.out)
    assert captured.err == ""
    # Evaluating on the file a model was trained on is allowed, and said.
    assert main([*base, "--data", str(workdir / "train.tsv"), "--queries", "2"]) == 0
    assert capsys.readouterr().err == (f"rpaccel quality: warning: rm-small ({workdir / 'rm-small.q.npz'}) was "
                                       f"trained on {workdir / 'train.tsv'}, so these figures are not test figures "
                                       "(a disjoint test file: rpaccel data gen --start, rpaccel data split)\n")


def test_a_test_file_disjoint_from_the_training_file(tmp_path, capsys):
    common = ["--max-rows", "300", "--quiet"]
    assert main(["data", "gen", "--out", str(tmp_path / "train.tsv"), "--samples", "3000", *common]) == 0
    hint = capsys.readouterr().out
    assert "samples 0 to 2,999 of seed 1's stream (a disjoint file: the same options with --start 3000)" in hint
    assert main(["data", "gen", "--out", str(tmp_path / "test.tsv"), "--samples", "1000", "--start", "3000",
                 *common]) == 0
    assert main(["data", "gen", "--out", str(tmp_path / "all.tsv"), "--samples", "4000", *common]) == 0
    train, test = (tmp_path / "train.tsv").read_bytes(), (tmp_path / "test.tsv").read_bytes()
    assert train + test == (tmp_path / "all.tsv").read_bytes()
    assert not set(train.splitlines()) & set(test.splitlines())
    # A file that is not generated (the real Criteo data): its last samples make the test file.
    assert main(["data", "split", str(tmp_path / "all.tsv"), "--train-out", str(tmp_path / "a.tsv"), "--test-out",
                 str(tmp_path / "b.tsv"), "--test", "1000"]) == 0
    assert f"wrote 3,000 lines to {tmp_path / 'a.tsv'} and the last 1,000 to" in capsys.readouterr().out
    assert (tmp_path / "a.tsv").read_bytes() == train and (tmp_path / "b.tsv").read_bytes() == test
