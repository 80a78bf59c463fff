"""``rpaccel replay`` end to end on the cpu backend, and its one-line errors."""

import csv
import json

import pytest

from rpaccel.cli import main


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    assert main(["trace", "gen", "--out", str(d / "t.jsonl"), "--queries", "40", "--sizes", "fixed:256",
                 "--max-rows", "300", "--start", "30000", "--quiet"]) == 0
    return d / "t.jsonl"


@pytest.mark.slow
def test_replay_on_the_cpu_backend_writes_rows_and_loadgen_logs(trace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["replay", "--trace", str(trace), "--pipeline", "rm-small:256:32,rm-med:32:8", "--load", "50",
                 "--target-ms", "500", "--min-duration", "1", "--min-queries", "50", "--queries", "8",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 50 |" in text and "NDCG@8" in text
    rows = json.loads((out / "rows.json").read_text())["rows"]
    assert rows[0]["queries"] >= 50 and rows[0]["p50_ms"] <= rows[0]["p95_ms"] <= rows[0]["p99_ms"]
    assert rows[0]["loadgen_result"] in ("VALID", "INVALID") and 0 <= rows[0]["ndcg@8"] <= 1
    with open(out / "rows.csv") as handle:
        assert next(csv.DictReader(handle))["offered_qps"] == "50.0"
    assert (out / "load-1-50" / "mlperf_log_summary.txt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--backend", "board"], "--backend must be one of cpu, rtl, model, not 'board'"),
    (["--pipeline", "rm-small:256"], "not MODEL:ITEMS:K"),
    (["--pipeline", "rm-small:128:16"], "trace query 0: A query of 256 candidates does not fit stage 0"),
    (["--pipeline", "nope:256:16"], "unknown model 'nope'"),
    (["--model", "rm-med=x.q.npz"], "names model(s) rm-med the pipeline does not use"),
    (["--load", "0"], "loads must be positive"),
    (["--numerics", "float64"], "--numerics must be one of int8, float32"),
    (["--backend", "rtl", "--numerics", "float32"], "--numerics must be one of int8 on the rtl backend"),
    (["--backend", "model", "--numerics", "float32"], "--numerics must be one of int8 on the model backend"),
    (["--trace", "{d}/missing.jsonl"], "missing.jsonl: cannot open"),
])
def test_bad_input_is_one_line_with_status_2(trace, tmp_path, argv, message, capsys):
    base = {"--trace": str(trace), "--pipeline": "rm-small:256:16", "--min-duration": "1"}
    args = ["replay"]
    given = dict(zip(argv[::2], argv[1::2]))
    for option, value in {**base, **given}.items():
        args += [option, value.format(d=tmp_path)]
    try:
        status = main(args)
    except SystemExit as exit:     # argparse's own errors (one line, status 2)
        status = exit.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1, err


def test_replay_refuses_an_existing_output_folder(trace, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["replay", "--trace", str(trace), "--pipeline", "rm-small:256:16", "--out",
                 str(tmp_path / "run")]) == 2
    assert "exists; name a new folder" in capsys.readouterr().err


@pytest.mark.parametrize("pipeline, settings, message", [
    ("rm-small:256:100", [], "the small chip's top-k units keep at most 64 (k_max)"),
    ("rm-small:256:128,rm-med:128:16", ["--set", "filter_capacity=128"],
     "stage 0 (rm-small:256:128) filters 256 items; the small+filter_capacity=128 chip's filter units hold 128"),
])
def test_rtl_backend_refuses_a_pipeline_the_chip_cannot_run_before_anything(trace, pipeline, settings, message,
                                                                          capsys):
    assert main(["replay", "--backend", "rtl", "--trace", str(trace), "--pipeline", pipeline, "--queries", "2",
                 *settings]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_replay_refuses_a_truncated_trace_even_beyond_the_queries_it_uses(trace, tmp_path, capsys):
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(trace.read_text().splitlines(keepends=True)[:20]))     # 19 of 40 records
    assert main(["replay", "--trace", str(cut), "--pipeline", "rm-small:256:16", "--queries", "4"]) == 2
    err = capsys.readouterr().err
    assert "cut.jsonl:21: truncated: the header announces 40 queries, the file holds 19" in err


@pytest.mark.slow
def test_replay_on_the_model_backend_writes_rows_and_a_plot(trace, tmp_path, capsys):
    out, plot = tmp_path / "run", tmp_path / "replay.png"
    assert main(["replay", "--backend", "model", "--trace", str(trace), "--pipeline", "rm-small:256:32,rm-med:32:8",
                 "--queries", "6", "--load", "200,2000", "--out", str(out), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "Replay on the model backend" in text and "not cycle-exact (issue 20)" in text
    rows = json.loads((out / "rows.json").read_text())["rows"]
    assert [row["backend"] for row in rows] == ["model", "model"] and all(row["checked"] for row in rows)
    assert all(len(row["latency_cycles"]) == 6 and row["queries"] == 6 for row in rows)
    # Ten times the load queues the queries behind each other.
    assert rows[1]["p99_ms"] > rows[0]["p99_ms"] and rows[0]["p50_ms"] <= rows[0]["p99_ms"]
    with open(out / "rows.csv") as handle:
        assert "latency_cycles" not in next(csv.DictReader(handle))
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_replay_with_the_stage_mapping_on_the_model_backend(trace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["replay", "--backend", "model", "--trace", str(trace), "--pipeline", "rm-small:256:32,rm-med:32:8",
                 "--queries", "4", "--load", "2000", "--mapping", "auto", "--out", str(out)]) == 0
    rows = json.loads((out / "rows.json").read_text())["rows"]
    assert rows[0]["checked"] and len(rows[0]["lanes"]) == 2 and rows[0]["split"] in (1, 2)
    assert main(["replay", "--backend", "cpu", "--trace", str(trace), "--pipeline", "rm-small:256:32",
                 "--mapping", "auto"]) == 2
    assert "--mapping must be 'default' or 'auto' (on rtl or model), not 'auto' on cpu" in capsys.readouterr().err


@pytest.mark.slow
def test_replay_in_windows_on_the_model_backend(trace, tmp_path, capsys):
    """More queries than one window, the trace streamed: every query measured and checked; a window on the cpu
    backend is refused."""
    out = tmp_path / "run"
    assert main(["replay", "--backend", "model", "--trace", str(trace), "--pipeline", "rm-small:256:32,rm-med:32:8",
                 "--queries", "7", "--load", "2000", "--window", "3", "--overlap", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Replayed in windows of 3 queries" in text
    [row] = json.loads((out / "rows.json").read_text())["rows"]
    assert row["checked"] and row["queries"] == 7 and row["windows"] == 3 and row["ndcg@8"] > 0
    assert main(["replay", "--backend", "cpu", "--trace", str(trace), "--pipeline", "rm-small:256:32",
                 "--window", "3"]) == 2
    assert "--window replays a chip backend (rtl or model), not cpu" in capsys.readouterr().err
    # Two worker processes replay the same windows: the same figures.
    out2 = tmp_path / "run2"
    assert main(["replay", "--backend", "model", "--trace", str(trace), "--pipeline", "rm-small:256:32,rm-med:32:8",
                 "--queries", "7", "--load", "2000", "--window", "3", "--overlap", "1", "--workers", "2",
                 "--out", str(out2)]) == 0
    [row2] = json.loads((out2 / "rows.json").read_text())["rows"]
    assert (row2["p50_ms"], row2["p99_ms"], row2["checked"]) == (row["p50_ms"], row["p99_ms"], True)
    assert main(["replay", "--backend", "model", "--trace", str(trace), "--pipeline", "rm-small:256:32",
                 "--workers", "2"]) == 2
    assert "--workers on model replay windows at once: they need a window" in capsys.readouterr().err
