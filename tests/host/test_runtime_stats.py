"""Replay statistics: percentiles in bounded memory within 0.1%, the warm-up left out, LoadGen's validity."""

import numpy as np
import pytest

from rpaccel.host.runtime.stats import LatencyRecorder, min_queries_for


def test_early_stopping_matches_loadgen():
    # LoadGen's Server scenario at the 99th percentile: 459 queries with none over the target, 662 with one,
    # 2,010 with ten, 6,898 with fifty (mlcommons/inference, loadgen/early_stopping.cc).
    assert [min_queries_for(t, 0.99) for t in (0, 1, 10, 50)] == [459, 662, 2010, 6898]
    assert min_queries_for(0, 0.95) == 90      # ceil(log 0.01 / log 0.95)
    with pytest.raises(ValueError, match="fraction"):
        min_queries_for(0, 95)


def test_percentiles_within_a_tenth_of_a_percent_and_warmup_left_out():
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(np.log(3e6), 0.5, 20_000).astype(np.int64)      # about 3 ms
    arrivals = np.cumsum(rng.exponential(1e6, 20_000)).astype(np.int64)
    recorder = LatencyRecorder(warmup=1000)
    for i, (arrival, latency) in enumerate(zip(arrivals, latencies)):
        recorder.record(int(arrival), int(arrival + (10**9 if i < 1000 else latency)))    # a slow warm-up
    report = recorder.report()
    measured = latencies[1000:] / 1e6
    assert report.queries == 19_000 and report.warmup == 1000
    ordered = np.sort(measured)
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):       # LoadGen's: sorted[floor(n p)]
        assert getattr(report, name) == pytest.approx(ordered[int(np.floor(len(ordered) * q))], rel=1e-3), name
    assert report.max == pytest.approx(measured.max(), rel=1e-3)
    span = (max(arrivals[1000:] + latencies[1000:]) - arrivals[1000]) / 1e9
    assert report.completed_qps == pytest.approx(19_000 / span)
    assert report.valid is None and report.meets_target is None


def test_validity_as_loadgen_judges_it():
    def run(n, slow, target=10.0, **kwargs):
        recorder = LatencyRecorder(target_ms=target, percentile=0.99, **kwargs)
        for i in range(n):
            recorder.record(i * 10**6, i * 10**6 + (20 if i < slow else 1) * 10**6)
        return recorder.report()

    assert run(459, 0).valid and not run(458, 0).valid
    short = run(661, 1)
    assert not short.valid and "early stopping needs 662 queries with 1 over the target" in short.reasons[0]
    assert run(662, 1).valid and run(662, 1).meets_target
    assert not run(2000, 100).meets_target
    assert "fewer than the minimum 1000" in run(500, 0, min_queries=1000).reasons[0]
    assert "shorter than the minimum" in run(500, 0, min_duration_s=60).reasons[0]


def test_bad_input():
    with pytest.raises(ValueError, match="before it arrives"):
        LatencyRecorder().record(10, 5)
    with pytest.raises(ValueError, match="No query measured: 1 recorded, 5 of warm-up"):
        recorder = LatencyRecorder(warmup=5)
        recorder.record(0, 1)
        recorder.report()
    with pytest.raises(ValueError, match="latency target"):
        LatencyRecorder(target_ms=0)


def test_percentiles_and_the_target_verdict_are_loadgens():
    recorder = LatencyRecorder(target_ms=95.5, percentile=0.95)
    for ms in range(1, 101):                      # 1, 2, ..., 100 ms
        recorder.record(0, ms * 10**6)
    report = recorder.report()
    # LoadGen: sorted[floor(n p)], the floor(n p) + 1-th smallest: 51, 96 and 100 ms.
    assert [round(value) for value in (report.p50, report.p95, report.p99)] == [51, 96, 100]
    assert report.overlatency == 5 and not report.meets_target     # 96 ms > 95.5 ms: five over, four allowed
    exact = LatencyRecorder(target_ms=10, percentile=0.99)
    for _ in range(200):
        exact.record(0, 10 * 10**6)                # exactly at the target: within it
    assert exact.report().meets_target and exact.report().overlatency == 0
