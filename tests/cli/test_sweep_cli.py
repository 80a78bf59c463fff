"""``rpaccel sweep``: its one-line errors (status 2, before anything runs) and ``--dry-run``."""

import json

import pytest

from rpaccel.cli import main

SPEC = """preset = "small"
candidates = 32
queries = 1
train_samples = 400
max_rows = 300

[grid]
dyn_cache_ways = [0, 4]
pipeline = ["rm-small:32:8,rm-small:8:4"]
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def run(argv, capsys):
    try:
        status = main(["sweep", *argv])
    except SystemExit as exit:      # argparse's own errors (one line, status 2)
        status = exit.code
    return status, capsys.readouterr()


@pytest.mark.parametrize("text, message", [
    ("[grid]\narray_rowz = [8]\npipeline = ['rm-small:32:4']\n",
     "spec.toml: grid.array_rowz: unknown axis; did you mean array_rows"),
    ("candidates = 32\n[grid]\narray_rows = [8, 7]\npipeline = ['rm-small:32:4']\n",
     "spec.toml: grid.array_rows: 7 is refused by every configuration of the grid: array_rows must be a multiple "
     "of block (4), not 7"),
    ("candidates = 32\n[grid]\nmode = ['turbo']\npipeline = ['rm-small:32:4']\n", "grid.mode: 'turbo' is not a mode"),
    ("candidates = 32\n[grid]\npipeline = ['rm-small:32:4,rm-big:4:2']\n", "unknown model 'rm-big'"),
    ("[grid\n", "spec.toml: not valid TOML"),
])
def test_a_bad_specification_is_one_line_with_status_2(tmp_path, text, message, capsys):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    status, out = run([str(path), "--out", str(tmp_path / "r.csv")], capsys)
    err = out.err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "give --out FILE.csv"),
    (["--out", "{d}/r.csv", "--workers", "0"], "--workers: must be a positive integer, not 0"),
    (["--out", "{d}/r.csv", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
     "--workers sizes the local cluster"),
    (["--out", "{spec}"], "--out and SPEC both name"),
    (["--out", "{d}/r.csv", "--plot", "{d}/p.txt"], "--plot {d}/p.txt: unsupported plot file type .txt"),
    (["--out", "{d}/r.csv", "--plot", "{d}/old.png"], "--plot {d}/old.png exists; name a new file"),
    (["--out", "{d}/other.csv"], "is not a sweep's results file of this version"),
    (["--out", "{d}/r.csv", "--area", "{d}/missing.json"], "--area {d}/missing.json: No such file"),
])
def test_bad_options_are_one_line_with_status_2(spec, tmp_path, argv, message, capsys):
    (tmp_path / "old.png").write_bytes(b"not ours")
    (tmp_path / "other.csv").write_text("name,value\nx,1\n")
    status, out = run([str(spec), *(a.format(d=tmp_path, spec=spec) for a in argv)], capsys)
    err = out.err.strip()
    assert status == 2 and message.format(d=tmp_path) in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "other.csv").read_text() == "name,value\nx,1\n"       # left as it was
    assert spec.read_text() == SPEC


def test_dry_run_lists_the_points_and_runs_nothing(spec, tmp_path, capsys):
    status, out = run([str(spec), "--dry-run", "--json"], capsys)
    data = json.loads(out.out)
    assert status == 0 and data["points"] == 2 and data["done"] == 0 and data["models"] == ["rm-small"]
    assert [row["point"] for row in data["rows"]] == [
        "dyn_cache_ways=0 pipeline=rm-small:32:8,rm-small:8:4", "dyn_cache_ways=4 pipeline=rm-small:32:8,rm-small:8:4"]
    assert not list(tmp_path.glob("*.csv"))


def test_a_json_specification_is_read_as_the_toml_one(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"candidates": 32, "grid": [{"mode": ["rpaccel", "baseline"],
                                                            "pipeline": "rm-small:32:4"}]}))
    status, out = run([str(path), "--dry-run"], capsys)
    assert status == 0 and "2 points (0 with a configuration that is refused); models rm-small; NDCG@4" in out.out
