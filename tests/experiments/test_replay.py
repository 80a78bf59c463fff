"""The replay experiment's load search and plot, on a stand-in server (the backends have their own tests), and the
chip bench on the timed model."""

import re

import pytest

from rpaccel.experiments.replay import plot_replay, search_load


def server(capacity):
    """A stand-in backend: p95 grows with the load and meets the target up to ``capacity`` queries/s."""
    def serve(load):
        p95 = 10 * load / capacity
        return {"backend": "fake", "offered_qps": load, "completed_qps": min(load, capacity), "p50_ms": p95 / 2,
                "p95_ms": p95, "p99_ms": p95 * 1.2, "meets_target": p95 <= 10,
                "cdf": [[p, p95 * p / 95] for p in (0, 50, 95, 100)]}
    return serve


@pytest.mark.parametrize("start, capacity", [(10, 37), (100, 37), (37, 37), (1, 200)])
def test_search_finds_the_highest_load_within_a_bisection(start, capacity):
    rows, best = search_load(server(capacity), start)
    assert best["meets_target"] and best["offered_qps"] <= capacity
    failing = [row["offered_qps"] for row in rows if not row["meets_target"]]
    assert failing and min(failing) - best["offered_qps"] <= min(failing) / 2 ** 4    # four bisections
    assert best == max((row for row in rows if row["meets_target"]), key=lambda row: row["offered_qps"])


def test_search_without_a_passing_load():
    rows, best = search_load(server(1e-6), 1.0, doublings=3)
    assert best is None and len(rows) == 4 and rows[-1]["offered_qps"] == 1 / 8


def test_plot_is_written_whole(tmp_path):
    rows, _ = search_load(server(37), 10)
    plot_replay(rows, tmp_path / "replay.png", target_ms=10, title="fake")
    assert (tmp_path / "replay.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="unsupported plot file type"):
        plot_replay(rows, tmp_path / "replay.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay.png"]


@pytest.mark.parametrize("kwargs, message", [
    ({"utilisations": [1.5]}, "utilisations must be in [0, 1)"), ({"utilisations": [0]}, "must be in (0, 1)"),
    ({"workers": 0}, "workers must be a positive integer"), ({"pipeline": "x:10:5"}, "unknown model 'x'"),
])
def test_replay_bench_refuses_bad_settings_before_running(kwargs, message):
    from rpaccel.experiments import ExperimentError
    from rpaccel.experiments.replay import run_replay_bench

    with pytest.raises(ExperimentError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run_replay_bench(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"utilisations": []}, "must be positive shares of capacity"), ({"queries": 0}, "queries must be a positive"),
    ({"pipeline": "rm-small:256:100"}, "the small chip's top-k units keep at most 64"),
    ({"backends": ["board"]}, "backends must name rtl or model, not ['board']"),
    ({"backends": []}, "backends must name rtl or model, not []"),
])
def test_replay_chip_bench_refuses_bad_settings_before_running(kwargs, message):
    from rpaccel.config import preset
    from rpaccel.experiments import ExperimentError
    from rpaccel.experiments.replay import run_replay_chip_bench

    with pytest.raises(ExperimentError, match=re.escape(message)):
        run_replay_chip_bench(preset("small"), **kwargs)


@pytest.mark.slow
def test_replay_chip_bench_on_the_model():
    from rpaccel.config import preset
    from rpaccel.experiments.replay import run_replay_chip_bench

    report = run_replay_chip_bench(preset("small"), backends=("model",), pipeline="rm-small:64:16,rm-med:16:4",
                                   queries=4, utilisations=(0.5, 4.0), max_rows=300)
    assert report.passed and [section.name for section in report.sections] == ["replay-model"]
    low, high = report.rows
    assert low["backend"] == high["backend"] == "model" and low["checked"] and high["checked"]
    assert high["offered_qps"] == pytest.approx(8 * low["offered_qps"]) and high["p99_ms"] > low["p99_ms"]
    assert "transaction-level timed model" in report.text and "| 400% |" in report.text


@pytest.mark.slow
def test_replay_scale_bench_on_the_model():
    """The scale part: the replay command's windowed path, the projection from the measured rate, and the windows'
    effect measured against one replay (rankings equal)."""
    from rpaccel.config import preset
    from rpaccel.experiments.replay import SCALE_QUERIES, run_replay_scale_bench

    report = run_replay_scale_bench(preset("small"), pipeline="rm-small:64:16,rm-med:16:4", queries=5, window=2,
                                    overlap=1, compare=4, max_rows=300)
    assert report.passed and [section.name for section in report.sections] == ["replay-scale"]
    [row] = report.rows
    assert row["checked"] and row["queries"] == 5 and len(row["window_difference"]) == 4
    assert row["projected_s"] == pytest.approx(row["host_s_per_query"] * SCALE_QUERIES)
    assert "| 5 | 3 |" in report.text and "projected for 100,000" in report.text


@pytest.mark.parametrize("kwargs, message", [
    ({"compare": 1}, "compare must be at least 2 queries"), ({"window": 0}, "window must be a positive"),
    ({"overlap": -1}, "overlap must be a non-negative"), ({"utilisation": 0}, "utilisation must be a positive"),
])
def test_replay_scale_bench_refuses_bad_settings(kwargs, message):
    from rpaccel.config import preset
    from rpaccel.experiments import ExperimentError
    from rpaccel.experiments.replay import run_replay_scale_bench

    with pytest.raises(ExperimentError, match=re.escape(message)):
        run_replay_scale_bench(preset("small"), **kwargs)
