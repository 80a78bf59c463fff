"""The CPU baseline: the pipeline's rankings equal the reference pipeline's; a short LoadGen Server run."""

import numpy as np
import pytest

from rpaccel.host.data import preprocess
from rpaccel.host.quant import quantize
from rpaccel.host.reference import run
from rpaccel.host.runtime.cpu import CpuRanker, run_loadgen
from rpaccel.host.runtime.pipeline import PipelineError, parse_pipeline
from rpaccel.host.train import FloatModel
from rpaccel.numeric import topk

from host_fixtures import tiny_data, tiny_dot, tiny_wnd


@pytest.fixture(scope="module")
def models():
    small, large = tiny_dot(name="a"), tiny_dot(name="b", bottom=(16, 4), top=(16, 8, 1))
    calib = tiny_data(small, 500)
    floats = {spec.name: FloatModel.initial(spec, seed=i + 1) for i, spec in enumerate((small, large))}
    return floats, {name: quantize(model, calib) for name, model in floats.items()}


def reference_ranking(qmodels, stages, records):
    """The pipeline by hand: every stage's logits by the integer reference, top-k between stages."""
    items = np.arange(len(records))
    for number, stage in enumerate(stages):
        model = qmodels[stage.model]
        dense, ids = model.inputs(records.take(items))
        scores, best = topk(run(model, dense, ids), stage.k, items)
        if number == len(stages) - 1:
            return best, scores
        items = np.sort(best)


def test_int8_rankings_equal_the_reference_pipeline(models):
    _, qmodels = models
    stages = parse_pipeline("a:300:40,b:40:8")
    ranker = CpuRanker(stages, qmodels)
    for start in (0, 1000, 5000):
        records = tiny_data(qmodels["a"].spec, 300, start=start)
        indices, scores = ranker.rank(ranker.prepare(records))
        want_indices, want_scores = reference_ranking(qmodels, stages, records)
        assert indices.tolist() == want_indices.tolist() and scores.tolist() == want_scores.tolist()


def test_float32_ranks_by_the_float_model(models):
    floats, _ = models
    stages = parse_pipeline("b:200:10")
    records = tiny_data(floats["b"].spec, 200)
    ranker = CpuRanker(stages, floats, numerics="float32")
    _, scores = ranker.rank(ranker.prepare(records))
    logits = floats["b"].forward(*preprocess(records, floats["b"].spec))
    assert np.allclose(scores, np.sort(logits)[::-1][:10])


def test_a_multi_task_model_ranks_by_task_0(models):
    spec = tiny_wnd(name="mt", dense=6, top=(6, 5), tasks=2, tower=(4, 1))
    records = tiny_data(spec, 120)
    model = FloatModel.initial(spec, seed=3)
    qmodel = quantize(model, records)
    stages = parse_pipeline("mt:120:9")
    for numerics, ranked, logits in [("int8", qmodel, run(qmodel, *qmodel.inputs(records))),
                                     ("float32", model, model.forward(*preprocess(records, spec)))]:
        assert logits.shape == (120, 2)
        ranker = CpuRanker(stages, {"mt": ranked}, numerics=numerics)
        indices, scores = ranker.rank(ranker.prepare(records))
        assert indices.tolist() == np.argsort(-logits[:, 0], kind="stable")[:9].tolist()
        assert scores.tolist() == logits[indices, 0].tolist()


def test_pipeline_errors(models):
    _, qmodels = models
    for text, message in [("a:10", "not MODEL:ITEMS:K"), ("a:10:0", "K '0' is not a positive integer"),
                          ("a:10:20", "keeps K = 20 of 10"), ("a:100:10,b:20:5", "scores 20 items, but stage 0")]:
        with pytest.raises(PipelineError, match=message):
            parse_pipeline(text)
    with pytest.raises(PipelineError, match="No model given .* c"):
        CpuRanker(parse_pipeline("c:10:5"), qmodels)
    ranker = CpuRanker(parse_pipeline("a:100:10"), qmodels)
    with pytest.raises(PipelineError, match="A query of 200 candidates does not fit stage 0"):
        ranker.rank(ranker.prepare(tiny_data(qmodels["a"].spec, 200)))


@pytest.mark.slow
def test_a_short_loadgen_server_run(models, tmp_path):
    _, qmodels = models
    stages = parse_pipeline("a:256:32,b:32:8")
    ranker = CpuRanker(stages, qmodels)
    queries = {q: tiny_data(qmodels["a"].spec, 256, start=q * 256) for q in range(16)}
    result = run_loadgen(ranker, queries, qps=200, target_ms=50, percentile=0.9, min_queries=300,
                         min_duration_s=1.0, workers=1, outdir=tmp_path / "lg")
    assert result.loadgen["result"] in ("VALID", "INVALID") and result.issued >= 300
    assert result.report.queries == result.issued
    # LoadGen times each query from its scheduled issue (at or before our callback) to its completion (after our
    # finish stamp): its longest is never below ours (HdrHistogram: within 0.1%).
    assert result.loadgen["max_ms"] >= result.report.max * 0.999
    for number, (indices, _) in result.rankings.items():
        want_indices, _ = reference_ranking(qmodels, stages, queries[number])
        assert indices.tolist() == want_indices.tolist()


class _Failing(CpuRanker):
    def rank(self, prepared):
        raise ValueError("planted")


@pytest.mark.slow
def test_a_failing_worker_ends_the_run_with_its_error(models, tmp_path):
    _, qmodels = models
    ranker = _Failing(parse_pipeline("a:64:8"), qmodels)
    queries = {q: tiny_data(qmodels["a"].spec, 64, start=q * 64) for q in range(2)}
    failed = r"The CPU backend failed .* time\(s\); the first: (preparing the workers|query [01]): ValueError: planted"
    with pytest.raises(RuntimeError, match=failed):
        run_loadgen(ranker, queries, qps=100, target_ms=50, min_queries=10, min_duration_s=0.2, workers=1,
                    outdir=tmp_path / "lg")


def test_loadgen_summary_is_read_by_label():
    from rpaccel.host.runtime.cpu import _parse_summary

    text = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 107.64
Result is : VALID
  Early stopping satisfied: Yes
Scheduled samples per second : 107.98
Min latency (ns)                : 5486046
Max latency (ns)                : 24440576
Mean latency (ns)               : 7514505
50.00 percentile latency (ns)   : 6370628
95.00 percentile latency (ns)   : 12387352
"""
    summary = _parse_summary(text)
    assert summary["result"] == "VALID" and summary["early_stopping"] is True
    assert summary["completed_qps"] == 107.64 and summary["scheduled_qps"] == 107.98
    assert summary["95.00_percentile_ms"] == pytest.approx(12.387352) and summary["max_ms"] == pytest.approx(24.440576)
