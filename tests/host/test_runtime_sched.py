"""DeepRecSys's schedulers as a queueing simulation: exact small cases, the load search, the hill-climb."""

import numpy as np
import pytest

from rpaccel.host.runtime.sched import (
    SchedConfig,
    ServiceTable,
    deeprecsched,
    max_load,
    measure_cpu_service,
    simulate,
)


def constant(ns):
    return lambda size: ns


def test_requests_share_the_cores_first_come_first_served():
    arrivals, sizes = [0, 0, 0], [10, 10, 10]
    assert simulate(arrivals, sizes, SchedConfig(16), workers=1, cpu=constant(100)).tolist() == [100, 200, 300]
    assert simulate(arrivals, sizes, SchedConfig(16), workers=2, cpu=constant(100)).tolist() == [100, 100, 200]
    # A query of 25 items in batches of 10: requests of 10, 10 and 5 on three cores at once.
    table = ServiceTable((1, 10), (10.0, 100.0))
    assert simulate([0], [25], SchedConfig(10), workers=3, cpu=table).tolist() == [100]
    assert simulate([0], [25], SchedConfig(10), workers=1, cpu=table).tolist() == [250]
    # The accelerator takes queries of at least T items whole, first come first served.
    finishes = simulate([0, 0, 5], [30, 5, 40], SchedConfig(8, 20), workers=1, cpu=constant(7),
                        accel=lambda size: 100 + size)
    assert finishes.tolist() == [130, 7, 270]


def test_service_table_interpolates_and_extends():
    table = ServiceTable((1, 10, 20), (10.0, 100.0, 150.0))
    assert table(5.5) == 55.0 and table(20) == 150.0 and table(30) == 200.0
    with pytest.raises(ValueError, match="increasing sizes"):
        ServiceTable((10, 1), (1.0, 2.0))


def test_measured_service_is_a_median_per_size(monkeypatch):
    import rpaccel.host.runtime.sched as sched

    clock = {"now": 0}
    durations = {1: iter([0, 5, 100, 7]), 4: iter([0, 40, 30, 1000])}      # warm-up, then three rounds

    def rank(size):
        clock["now"] += next(durations[size])

    monkeypatch.setattr(sched.time, "perf_counter_ns", lambda: clock["now"])
    table = measure_cpu_service(rank, [1, 4], repeats=3)
    assert table.sizes == (1, 4) and table.ns == (7.0, 40.0)       # medians: a burst (100, 1000) is ignored


def test_measured_service_at_a_low_quantile_on_a_given_clock():
    clock = {"now": 0}
    durations = {8: iter([0, 50, 10, 30, 20, 90]), 9: iter([0, 1, 1, 1, 1, 1])}   # a warm-up, then five rounds

    def rank(size):
        clock["now"] += next(durations[size])

    table = measure_cpu_service(rank, [8, 9], repeats=5, quantile=0.25, clock=lambda: clock["now"])
    assert table.ns == (20.0, 1.0)                                  # of 10, 20, 30, 50, 90: the 25th percentile
    with pytest.raises(ValueError, match="quantile must be in"):
        measure_cpu_service(rank, [8, 9], quantile=1.5)


def test_max_load_brackets_the_target():
    rng = np.random.default_rng(1)
    gaps = rng.exponential(1e6, 4000)
    gaps[0] = 0
    sizes = rng.integers(50, 300, 4000)
    table = ServiceTable((1, 512), (2e5, 2e6))
    config = SchedConfig(64)
    load, tail = max_load(gaps, sizes, config, target_ms=5, workers=4, cpu=table)
    assert tail <= 5

    def tail_at(q):
        # The trace's gaps scaled so that its n - 1 gaps after the first arrival last (n - 1) / q seconds.
        arrivals = np.cumsum(gaps * ((len(gaps) - 1) / gaps.sum() * 1e9 / q))
        assert (len(arrivals) - 1) / (arrivals[-1] / 1e9) == pytest.approx(q)
        latencies = np.sort(simulate(arrivals, sizes, config, workers=4, cpu=table) - arrivals)
        return latencies[int(np.floor(len(latencies) * 0.95))] / 1e6    # LoadGen's p95

    assert tail_at(load) <= 5 < tail_at(load * 1.05)
    assert max_load(gaps, sizes, config, target_ms=0.01, workers=4, cpu=table) == (None, None)


def test_deeprecsched_beats_every_static_setting_it_tried():
    rng = np.random.default_rng(2)
    gaps = rng.exponential(1e6, 3000)
    gaps[0] = 0
    sizes = np.clip(np.rint(rng.lognormal(5.1, 0.2, 3000)), 1, 1024).astype(int)
    cpu = ServiceTable((1, 512), (3e5, 3e5 + 512 * 8e3))       # per-request overhead: batching pays up to a point
    best, load, tried = deeprecsched(gaps, sizes, target_ms=3, workers=8, cpu=cpu,
                                     accel=lambda size: 2e5 + size * 1e3)
    assert load == max(each or 0 for _, each, _ in tried) and best in [config for config, _, _ in tried]
    # Offloading the large queries beats every batch size without the accelerator, here by about half.
    no_offload = max(each or 0 for config, each, _ in tried if config.threshold is None)
    assert best.threshold is not None and load > 1.3 * no_offload
    static, static_load, _ = deeprecsched(gaps, sizes, target_ms=3, workers=8, cpu=cpu, batches=(32,))
    assert static == SchedConfig(32) and load > static_load


def test_the_climb_crosses_a_plateau(monkeypatch):
    import rpaccel.host.runtime.sched as sched

    # Batch sizes above most queries' sizes split few of them: 512 and 256 differ by little, 128 is the peak.
    loads = {512: 100.0, 256: 99.0, 128: 150.0, 64: 120.0, 32: 90.0}
    monkeypatch.setattr(sched, "max_load", lambda gaps, sizes, config, **_: (loads[config.batch], 1.0))
    best, load, tried = deeprecsched([0], [1], target_ms=1, workers=1, cpu=None)
    assert (best, load) == (SchedConfig(128), 150.0)
    assert [config.batch for config, _, _ in tried] == [512, 256, 128, 64]     # 64 falls 20% below the best: stop
    # A walk that stops at the first fall, however small, ends on the plateau.
    best, load, tried = deeprecsched([0], [1], target_ms=1, workers=1, cpu=None, tolerance=0)
    assert (best, load, len(tried)) == (SchedConfig(512), 100.0, 2)
    with pytest.raises(ValueError, match="tolerance must be in"):
        deeprecsched([0], [1], target_ms=1, workers=1, cpu=None, tolerance=1)


def test_bad_settings():
    with pytest.raises(ValueError, match="non-decreasing"):
        simulate([5, 0], [1, 1], SchedConfig(8), workers=1, cpu=constant(1))
    with pytest.raises(ValueError, match="give its service time"):
        simulate([0], [1], SchedConfig(8, 4), workers=1, cpu=constant(1))
    with pytest.raises(ValueError, match="Workers must be"):
        simulate([0], [1], SchedConfig(8), workers=0, cpu=constant(1))
