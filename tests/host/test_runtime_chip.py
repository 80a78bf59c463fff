"""The accelerator backend on the chip's RTL and its timed model: queries sent at their arrival, queueing inside the
chip, exact rankings, runs longer than the response tags."""

import dataclasses

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.host.driver.device import Device
from rpaccel.host.quant import quantize
from rpaccel.host.runtime.chip import compare_replays, replay_on_chip
from rpaccel.host.runtime.cpu import CpuRanker
from rpaccel.host.runtime.pipeline import PipelineError, parse_pipeline
from rpaccel.host.train import FloatModel

from host_fixtures import tiny_data, tiny_dot

TINY = preset("tiny").with_settings(["weight_buffer_words=512"])


@pytest.fixture(scope="module")
def models():
    a, b = tiny_dot(name="a"), tiny_dot(name="b", bottom=(6, 4), top=(5, 1))
    calib = tiny_data(a, 1500)
    return {spec.name: quantize(FloatModel.initial(spec, seed=i + 3), calib) for i, spec in enumerate((a, b))}


@pytest.fixture(scope="module")
def device():
    from rpaccel.sim.chip import chip_device

    return chip_device(TINY)


@pytest.mark.verilator
@pytest.mark.slow
def test_queries_at_their_arrival_queue_inside_the_chip(models, device):
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=9000 + 48 * q) for q in range(4)]
    # Queries 0 and 1 far apart, 2 and 3 together (3 waits for 2 inside the chip).
    apart = replay_on_chip(device, TINY, models, stages, queries[:2], [0, 10**9])
    service = int(apart.finishes[0] - apart.arrivals[0])
    gap_ns = 10 * service * 1000 // int(TINY.clock_mhz)
    run = replay_on_chip(device, TINY, models, stages, queries, [0, gap_ns, 2 * gap_ns, 2 * gap_ns])
    assert not run.mismatches
    ranker = CpuRanker(stages, models)
    for records, ranking in zip(queries, run.rankings):
        indices, scores = ranker.rank(ranker.prepare(records))
        assert ranking == list(zip(scores.tolist(), indices.tolist()))
    latency = run.finishes - run.arrivals
    assert latency[0] == service and latency[1] == pytest.approx(service, rel=0.05)
    assert latency[3] > 1.5 * service      # waited for query 2
    assert run.latencies_ns[0] == pytest.approx(service * 1000 / TINY.clock_mhz)
    assert (np.diff(run.finishes) > 0).all()
    # The counters cover time zero to the end: every query's lookups, the lanes busy no longer than the window.
    lookups = sum(len(records) * models["a"].spec.num_tables for records in queries) + sum(
        12 * models["b"].spec.num_tables for _ in queries)
    assert run.counters["EMB_LOOKUPS"] == lookups
    assert run.end_cycle >= run.finishes.max() and 0 < run.counters["BUSY_LANE0"] <= run.end_cycle


def test_refused_before_anything_runs(models):
    stages = parse_pipeline("a:48:12,b:12:4")
    query = tiny_data(models["a"].spec, 48)
    with pytest.raises(PipelineError, match="Query 0: A query of 60 candidates does not fit stage 0"):
        replay_on_chip(None, TINY, models, stages, [tiny_data(models["a"].spec, 60)], [0])
    with pytest.raises(PipelineError, match="k = 40 is outside"):
        replay_on_chip(None, TINY, models, parse_pipeline("a:48:40"), [query], [0])
    with pytest.raises(PipelineError, match="non-decreasing"):
        replay_on_chip(None, TINY, models, stages, [query, query], [5, 0])
    # What bounds a run is the chip's memory (every query's candidates placed before time zero), not the tags.
    with pytest.raises(PipelineError, match=r"Memory full: the records of query 27 .* \(mem_bytes = 131072\)"):
        replay_on_chip(None, TINY, models, stages, [query] * 100, [0] * 100)


def model_device(config):
    from rpaccel.experiments.replay import chip_device_for

    return chip_device_for("model", config)


def reference_rankings(models, stages, queries):
    ranker = CpuRanker(stages, models)
    out = []
    for records in queries:
        indices, scores = ranker.rank(ranker.prepare(records))
        out.append(list(zip(scores.tolist(), indices.tolist())))
    return out


@pytest.mark.verilator
@pytest.mark.slow
def test_the_model_ranks_as_the_rtl_and_its_cycles_are_reported(models, device):
    """The same small trace on the RTL and on the timed model: every query's ranking must be the RTL's (and the
    reference pipeline's). The model is transaction-level and NOT exact yet (+5% to +11% against the RTL here, on
    tiny; issue 20 makes it exact), so its cycles are compared and printed query by query, never asserted equal: only
    their order of magnitude and the queueing they show (a query arriving behind another waits) are checked."""
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=12000 + 48 * q) for q in range(5)]
    apart = replay_on_chip(device, TINY, models, stages, queries[:1], [0])
    gap_ns = 4 * int(apart.finishes[0]) * 1000 // int(TINY.clock_mhz)
    arrivals = [0, gap_ns, 2 * gap_ns, 2 * gap_ns, 2 * gap_ns + 1000]
    rtl = replay_on_chip(device, TINY, models, stages, queries, arrivals)
    model = replay_on_chip(model_device(TINY), TINY, models, stages, queries, arrivals)
    assert not rtl.mismatches and not model.mismatches
    assert rtl.rankings == model.rankings == reference_rankings(models, stages, queries)
    comparison = compare_replays(rtl, model)
    print("\n" + comparison.table())
    assert comparison.same_ranking.all() and (np.abs(comparison.difference) < 0.5).all()
    for run in (rtl, model):
        latency = run.finishes - run.arrivals
        assert latency[3] > latency[2] and latency[4] > latency[2]      # queued behind query 2


@pytest.mark.slow
def test_a_replay_longer_than_the_tags_on_the_model():
    """More queries than response tags (254) in one run, arriving faster than the chip serves them (so a query
    and the one 254 later, with the same tag, are both in flight): each ranking is its query's own."""
    config = TINY.with_settings(["mem_bytes=1048576"])
    spec_a = tiny_dot(name="a")
    calib = tiny_data(spec_a, 1500)
    models = {spec.name: quantize(FloatModel.initial(spec, seed=i + 3), calib)
              for i, spec in enumerate((spec_a, tiny_dot(name="b", bottom=(6, 4), top=(5, 1))))}
    stages = parse_pipeline("a:16:8,b:8:4")
    count = 260
    data = tiny_data(spec_a, 16 * count, start=9000)
    queries = [data.take(slice(16 * q, 16 * (q + 1))) for q in range(count)]
    run = replay_on_chip(model_device(config), config, models, stages, queries, np.arange(count) * 20_000)
    assert not run.mismatches
    assert run.rankings == reference_rankings(models, stages, queries)
    latency = run.finishes - run.arrivals
    assert latency[-1] > 50 * latency[0]            # deeply queued: many queries in flight at once
    assert (np.diff(run.finishes) > 0).all()


class Swapped(Device):
    """A planted bug: the chip's responses with the blocks (``last``-delimited) of two queries exchanged."""

    def __init__(self, inner, first, second):
        self.inner, self.first, self.second = inner, first, second

    @property
    def ports(self):
        return self.inner.ports

    def run(self, trace, **options):
        from rpaccel.host.driver.chip import decode_responses
        from rpaccel.host.driver.device import OutputStream

        result = self.inner.run(trace, **options)
        out = result.outputs["rsp"]
        responses = decode_responses(TINY, out.words)
        queries = np.flatnonzero(responses.tag < 254)
        if not len(queries):
            return result
        ends = np.flatnonzero(responses.last[queries]) + 1
        blocks = np.split(queries, ends[:-1])
        words = list(out.words)
        a, b = blocks[self.first], blocks[self.second]
        assert len(a) == len(b)
        for i, j in zip(a, b):
            words[i], words[j] = out.words[j], out.words[i]
        return dataclasses.replace(result, outputs={"rsp": OutputStream(words, out.cycles)})


@pytest.mark.parametrize("first, second", [(0, 1), (1, 4)])
def test_responses_out_of_order_are_reported_not_given_to_the_wrong_query(models, first, second):
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=15000 + 48 * q) for q in range(5)]
    good = replay_on_chip(model_device(TINY), TINY, models, stages, queries, [0] * 5)
    assert not good.mismatches
    bad = replay_on_chip(Swapped(model_device(TINY), first, second), TINY, models, stages, queries, [0] * 5)
    assert sorted(bad.mismatches) == [first, second]
    assert f"RANK of tag {first} expected" in bad.mismatches[first]


def test_compare_replays_query_by_query(models):
    """Two replays of the same queries at the same arrivals on chips that differ only in memory latency: the same
    rankings, every query slower on the slower memory, each in a row of the table."""
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=18000 + 48 * q) for q in range(3)]
    slow = TINY.with_settings(["mem_latency_cycles=300"])
    fast_run = replay_on_chip(model_device(TINY), TINY, models, stages, queries, [0, 0, 50_000])
    slow_run = replay_on_chip(model_device(slow), slow, models, stages, queries, [0, 0, 50_000])
    comparison = compare_replays(fast_run, slow_run, names=("fast", "slow"))
    assert comparison.same_ranking.all() and (comparison.difference > 0).all()
    assert np.array_equal(comparison.reference, fast_run.finishes - fast_run.arrivals)
    table = comparison.table()
    assert "| query | arrival cycle | fast cycles | slow cycles |" in table and "rankings equal in 3 of 3" in table
    assert len([line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]) == 3
    with pytest.raises(ValueError, match="differ in their arrivals"):
        compare_replays(fast_run, replay_on_chip(model_device(TINY), TINY, models, stages, queries[:2], [0, 0]))


def test_a_lane_map_spreads_replayed_queries_over_lanes(models):
    """Four queries arriving at once with each stage on two lanes and two units (the final stage's rankings leave
    from two top-k units): each query's rankings matched by its tag and equal to the golden model's and to those of
    each stage on one lane; a bad map is refused before anything runs."""
    config = TINY.with_settings(["topk_units=2", "filter_units=2", "splits=1,2,4"])
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=21000 + 48 * q) for q in range(4)]
    one = replay_on_chip(model_device(config), config, models, stages, queries, [0] * 4, split=4,
                         lanes=((0,), (1,)))
    two = replay_on_chip(model_device(config), config, models, stages, queries, [0] * 4, split=4,
                         lanes=((0, 1), (2, 3)))
    assert not one.mismatches and not two.mismatches and two.lanes == ((0, 1), (2, 3))
    assert one.rankings == two.rankings
    with pytest.raises(PipelineError, match=r"Stage 1's lane 4 is not a lane of split 4"):
        replay_on_chip(None, config, models, stages, queries, [0] * 4, split=4, lanes=((0,), (4,)))


def test_choose_replay_mapping_leaves_the_replay_setup_alone(models):
    from rpaccel.host.runtime.mapping import choose_replay_mapping

    config = TINY.with_settings(["topk_units=2", "filter_units=2", "splits=1,2,4"])
    stages = parse_pipeline("a:48:12,b:12:4")
    queries = [tiny_data(models["a"].spec, 48, start=22000 + 48 * q) for q in range(6)]
    choice = choose_replay_mapping(config, models, stages, queries, sample=3, measure=lambda program: 100)
    assert choice.queries == 3 and choice.best is choice.default
    run = replay_on_chip(model_device(config), config, models, stages, queries, [0] * 6, split=choice.schedule.split,
                         sub_batch=choice.schedule.sub_batch, lanes=choice.schedule.lanes)
    assert not run.mismatches


def _stream(models, count, gap_ns, size=48):
    return [(tiny_data(models["a"].spec, size, start=9000 + size * q), q * gap_ns) for q in range(count)]


class _Counting(Device):
    """A device that counts its runs."""

    def __init__(self, device):
        self.device, self.runs = device, 0

    @property
    def ports(self):
        return self.device.ports

    def run(self, trace, **kwargs):
        self.runs += 1
        return self.device.run(trace, **kwargs)


def test_windows_replay_more_queries_than_the_memory_holds(models):
    """40 queries (one replay holds 27 in tiny's memory) in windows of 8, every ranking the golden model's; with
    one window, the windows' replay is the replay itself."""
    from rpaccel.host.runtime.chip import replay_windows

    stages = parse_pipeline("a:48:12,b:12:4")
    device = _Counting(model_device(TINY))
    stream = _stream(models, 40, 20_000)
    windows = list(replay_windows(device, TINY, models, stages, iter(stream), window=8, overlap=2))
    # A run of the setup alone per shape of setup (10 queries' images at the ends, 12 between), then one per window.
    assert device.runs == 2 + 5
    assert [w.first for w in windows] == list(range(0, 40, 8)) and [w.overlap for w in windows] == [0] + [2] * 4
    assert all(not w.mismatches for w in windows) and all(len(w.rankings) == 8 for w in windows)
    ranker = CpuRanker(stages, models)
    for (records, arrival), (window, i) in zip(stream, ((w, i) for w in windows for i in range(8))):
        indices, scores = ranker.rank(ranker.prepare(records))
        assert window.rankings[i] == list(zip(scores.tolist(), indices.tolist()))
        assert window.arrivals_ns[i] == arrival and window.finishes_ns[i] > arrival
    whole = replay_on_chip(device, TINY, models, stages, [q for q, _ in stream[:10]], [t for _, t in stream[:10]])
    [one] = replay_windows(device, TINY, models, stages, stream[:10], window=10)
    assert np.array_equal(one.finishes_ns - one.arrivals_ns, np.rint(whole.latencies_ns).astype(np.int64))
    assert one.rankings == whole.rankings


def test_windows_overlap_rebuilds_the_queue(models):
    """Queries arriving faster than the chip serves them queue; a window's first queries find the queue its overlap
    rebuilds, and its last ones the next window's commands competing for the shared units: with overlaps as long as
    the backlog, every latency is the single replay's (here exactly); without them, the first query of each window
    finds an empty chip and finishes too early."""
    from rpaccel.host.runtime.chip import replay_windows

    stages = parse_pipeline("a:48:12,b:12:4")
    device = model_device(TINY)
    alone = replay_on_chip(device, TINY, models, stages, [_stream(models, 1, 0)[0][0]], [0])
    service_ns = int(alone.latencies_ns[0])
    stream = _stream(models, 16, service_ns * 3 // 4)       # a backlog growing a quarter of a service per query
    whole = replay_on_chip(device, TINY, models, stages, [q for q, _ in stream], [t for _, t in stream])
    latencies = np.rint(whole.latencies_ns).astype(np.int64)

    def windowed(overlap):
        return np.concatenate([w.finishes_ns - w.arrivals_ns for w in replay_windows(
            device, TINY, models, stages, stream, window=8, overlap=overlap)])

    cold, warm = windowed(0), windowed(8)
    assert cold[8] < 0.8 * latencies[8]
    assert np.array_equal(warm, latencies), (warm - latencies).tolist()


@pytest.mark.slow
def test_windows_in_worker_processes_are_the_windows_in_order(models):
    """Two spawned workers, each making its own chip, replay the windows of one process: the same figures, in the
    stream's order."""
    import functools

    from rpaccel.experiments.replay import chip_device_for
    from rpaccel.host.runtime.chip import replay_windows

    stages = parse_pipeline("a:48:12,b:12:4")
    stream = _stream(models, 14, 20_000)
    make = functools.partial(chip_device_for, "model", TINY)
    one = list(replay_windows(make, TINY, models, stages, stream, window=3, overlap=1))
    two = list(replay_windows(make, TINY, models, stages, iter(stream), window=3, overlap=1, workers=2))
    assert [w.first for w in two] == [w.first for w in one] == [0, 3, 6, 9, 12]
    for a, b in zip(one, two):
        assert np.array_equal(a.finishes_ns, b.finishes_ns) and a.rankings == b.rankings and not b.mismatches


def test_windows_refuse_bad_arguments(models):
    from rpaccel.host.runtime.chip import replay_windows

    stages = parse_pipeline("a:48:12,b:12:4")
    for window, overlap, message in ((0, 0, "window must be a positive"), (True, 0, "window must be a positive"),
                                     (4, -1, "overlap must be a non-negative")):
        with pytest.raises(ValueError, match=message):
            next(replay_windows(None, TINY, models, stages, [], window=window, overlap=overlap))
    with pytest.raises(ValueError, match="workers must be a positive number of processes, not 0"):
        next(replay_windows(None, TINY, models, stages, [], window=4, workers=0))
    with pytest.raises(ValueError, match="^Several workers need a function that makes a device in each"):
        next(replay_windows(model_device(TINY), TINY, models, stages, [], window=4, workers=2))
    backwards = [(tiny_data(models["a"].spec, 48), t) for t in (5, 3)]
    with pytest.raises(ValueError, match="^Query 1 arrives at 3 ns, before the query ahead of it \\(5 ns\\)$"):
        list(replay_windows(None, TINY, models, stages, backwards, window=4))


def test_a_remembered_setup_end_that_does_not_hold_is_measured_again(models):
    from rpaccel.host.runtime.chip import _SETUP_ENDS

    stages = parse_pipeline("a:48:12,b:12:4")
    device = _Counting(model_device(TINY))
    stream = _stream(models, 3, 20_000)
    queries, arrivals = [q for q, _ in stream], [t for _, t in stream]
    first = replay_on_chip(device, TINY, models, stages, queries, arrivals)
    assert device.runs == 2
    again = replay_on_chip(device, TINY, models, stages, queries, arrivals)
    assert device.runs == 3 and np.array_equal(again.finishes, first.finishes)
    [shape] = _SETUP_ENDS[device]
    _SETUP_ENDS[device][shape] += 5          # planted: a setup end the run does not meet
    third = replay_on_chip(device, TINY, models, stages, queries, arrivals)
    assert device.runs == 6 and np.array_equal(third.finishes, first.finishes)
    assert third.setup_cycles == first.setup_cycles
