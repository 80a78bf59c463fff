"""``rpaccel bench accel`` and ``rpaccel demo``: argument errors are one line with exit status 2, before anything
trains or simulates."""

import subprocess
import sys

import pytest


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "rpaccel", *argv], capture_output=True, text=True)


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "accel", "--pipelines", "4"], "--pipelines must be of [1, 2, 3], not 4"),
    (["bench", "accel", "--pipelines", "1,x"], "--pipelines must be comma-separated positive integers, not '1,x'"),
    (["bench", "accel", "--pipelines", "2,2"], "--pipelines must be distinct values of [1, 2, 3], not [2, 2]"),
    (["bench", "accel", "--modes", "tpu"],
     "--modes must be distinct values of rpaccel, baseline, rpaccel-whole, baseline-overlapped, not ['tpu']"),
    (["bench", "accel", "--candidates", "0"], "--candidates must be a positive integer, not 0"),
    (["bench", "accel", "--sub-batch", "0"], "--sub-batch must be a positive integer, not 0"),
    (["bench", "accel", "--queries", "300"], "--queries must be between 1 and 253, not 300"),
    (["bench", "accel", "--train-samples", "0"], "--train-samples must be a positive integer, not 0"),
    (["bench", "accel", "--pause", "1"], "--pause must be in [0, 1), not 1.0"),
    (["bench", "accel", "--seed", "-2"], "argument --seed: must be a non-negative integer, not -2"),
    (["bench", "accel", "--preset", "huge"], "Unknown preset 'huge'"),
    (["bench", "accel", "--set", "k_max=x"], "--set: k_max must be an integer, not 'x'"),
    (["demo", "--candidates", "7"], "--candidates must be at least 8 (stage 1 keeps an eighth), not 7"),
    (["demo", "--candidates", "256", "--k", "40"], "--k must be at most 32, the candidates stage 1 keeps, not 40"),
    (["demo", "--count", "5"], "unrecognized arguments: --count 5"),
])
def test_bad_arguments_are_one_line_with_status_2(argv, message):
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
