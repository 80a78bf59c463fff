"""Top-k units: golden model, Amaranth-simulator unit tests on small K_MAX, parameter errors."""

import numpy as np
import pytest

from rpaccel.numeric import INT32_MAX, INT32_MIN, topk
from rpaccel.rtl import topk as rtl_topk
from rpaccel.rtl.topk import TopKMerge, TopKUnit, TopKUnits, check_k, topk_in_layout
from rpaccel.sim.golden.topk import (
    Query,
    empty_result,
    query_elements,
    random_queries,
    stream_elements,
    unit_model,
)
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

K = 8


def run(dut, elements, count, *, in_pause=0.0, out_pause=0.0, seed=0):
    """Stream ``elements`` into ``dut`` and collect ``count`` results; also the cycles of every transfer."""
    inp, out = dut.i, dut.o
    got, sent_at, received_at = [], [], []

    async def send(ctx):
        await StreamSource(inp, pause=in_pause, seed=seed).send(ctx, elements)

    async def receive(ctx):
        got.extend(await StreamSink(out, pause=out_pause, seed=seed + 1).receive(ctx, count))

    async def monitor(ctx):
        cycle = 0
        async for _, _, iv, ir, ov, orr in ctx.tick().sample(inp.valid, inp.ready, out.valid, out.ready):
            if iv and ir:
                sent_at.append(cycle)
            if ov and orr:
                received_at.append(cycle)
            cycle += 1

    run_simulation(dut, [send, receive], processes=[monitor], max_cycles=200_000, name="topk")
    return got, sent_at, received_at


def check(dut, queries, *, lanes=1, k_max=K, **kwargs):
    elements = stream_elements(queries, k_max=k_max, lanes=lanes)
    expected = unit_model(elements, k_max)
    got, _, _ = run(dut, elements, len(expected), **kwargs)
    assert got == expected
    return got


# --- golden model ---------------------------------------------------------------------------------------

def test_golden_topk_matches_a_plain_sort():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        scores = rng.integers(-5, 5, n) if rng.random() < 0.5 else rng.integers(INT32_MIN, INT32_MAX, n)
        indices = rng.permutation(n)
        k = int(rng.integers(1, 70))
        best = sorted(zip(scores.tolist(), indices.tolist()), key=lambda p: (-p[0], p[1]))[:k]
        got_scores, got_indices = topk(scores, k, indices)
        assert list(zip(got_scores.tolist(), got_indices.tolist())) == best


def test_golden_topk_tie_rule_and_short_input():
    scores, indices = topk([7, 9, 9, INT32_MIN, 9, INT32_MAX], 4)
    assert scores.tolist() == [INT32_MAX, 9, 9, 9] and indices.tolist() == [5, 1, 2, 4]
    scores, indices = topk([3, 3], 10, indices=[8, 2])
    assert scores.tolist() == [3, 3] and indices.tolist() == [2, 8]
    assert topk([], 3)[0].size == 0


def test_golden_topk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be a positive integer, not 0"):
        topk([1, 2], 0)
    with pytest.raises(ValueError, match="k must be a positive integer, not True"):
        topk([1, 2], True)
    with pytest.raises(OverflowError, match="score holds 2147483648"):
        topk([INT32_MAX + 1], 1)
    with pytest.raises(ValueError, match="one index per score: 2 scores"):
        topk([1, 2], 1, indices=[0])
    with pytest.raises(ValueError, match="indices must be non-negative, not -1"):
        topk([1, 2], 1, indices=[0, -1])


def test_unit_model_frames_queries():
    elements = stream_elements([Query.make([5, 6, 6], 2), Query.make([], 3), Query.make([1], 4)], k_max=K)
    assert len(elements) == 3 + 1 + 1
    assert unit_model(elements, K) == [
        {"score": 6, "index": 1, "keep": 1, "last": 0, "error": 0},
        {"score": 6, "index": 2, "keep": 1, "last": 1, "error": 0},
        empty_result(),
        {"score": 1, "index": 0, "keep": 1, "last": 1, "error": 0},
    ]


# --- directed cases, under stalls --------------------------------------------------------------------------

def _cases():
    rng = np.random.default_rng(7)
    uniform = rng.integers(INT32_MIN, INT32_MAX, 40, endpoint=True)
    extremes = [INT32_MIN, INT32_MAX, -1, 0, 1, INT32_MIN + 1, INT32_MAX - 1, INT32_MIN, INT32_MAX, -2, 0]
    return {
        "random": [Query.make(uniform, 5), Query.make(uniform[::-1], K)],
        "many duplicates": [Query.make(rng.integers(-3, 3, 50), K), Query.make(rng.integers(0, 2, 30), 3)],
        "all equal": [Query.make([42] * 20, 5), Query.make([INT32_MIN] * 12, K), Query.make([-1] * K, K)],
        "negative and extreme": [Query.make(extremes, K), Query.make(extremes, 2),
                                 Query.make([INT32_MIN] * 3 + [INT32_MAX] * 3, 4)],
        "k = 1": [Query.make(uniform, 1), Query.make([0, 0, 0], 1), Query.make([-5, 7, 7], 1)],
        "k = K_MAX": [Query.make(uniform, K), Query.make(np.sort(uniform), K)],
        "fewer candidates than k": [Query.make([3, -4, 3], K), Query.make([9, 8], 5)],
        "one candidate": [Query.make([INT32_MIN], 1), Query.make([17], K), Query.make([INT32_MAX], 3)],
        "empty query": [Query.make([], 3), Query.make([4, 5], 1), Query.make([], K)],
        "many sub-batches": [Query.make(uniform, 6, batches=[1, 2, 3, 4, 5, 1, 1, 7, 16]),
                             Query.make(rng.integers(-9, 9, 30), K, batches=[1] * 30)],
        "shuffled indices": [Query.make(rng.integers(-2, 2, 25), K, indices=rng.permutation(25)),
                             Query.make([5, 5, 5, 5], 3, indices=[40000, 3, 65535, 7])],
    }


CASES = _cases()


@pytest.mark.parametrize("segment", [K, 3])
@pytest.mark.parametrize("case", CASES)
def test_directed_case_under_stalls(case, segment):
    check(TopKUnit(K, segment=segment), CASES[case], in_pause=0.3, out_pause=0.3, seed=3)


@pytest.mark.parametrize("case", ["random", "many sub-batches", "empty query"])
def test_directed_case_end_as_separate_element(case):
    elements = [e for q in CASES[case] for e in query_elements(q, k_max=K, separate_end=True)]
    expected = unit_model(elements, K)
    got, _, _ = run(TopKUnit(K, segment=3), elements, len(expected), in_pause=0.2, out_pause=0.4, seed=5)
    assert got == expected


# --- random queries, configurations, stalls ---------------------------------------------------------------

CONFIGS = [  # (K_MAX, lanes, segment)
    (8, 1, 8), (8, 1, 3), (1, 1, 1), (8, 2, 4), (5, 3, 2), (4, 4, 1),
]


@pytest.mark.parametrize(("k_max", "lanes", "segment"), CONFIGS, ids=[f"K{k}-L{n}-S{s}" for k, n, s in CONFIGS])
@pytest.mark.parametrize(("in_pause", "out_pause"), [(0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (0.3, 0.3)])
def test_random_queries(k_max, lanes, segment, in_pause, out_pause):
    rng = np.random.default_rng(k_max * 100 + lanes * 10 + segment)
    queries = random_queries(rng, 40, k_max=k_max, max_candidates=4 * k_max)
    check(TopKUnit(k_max, lanes=lanes, segment=segment), queries, lanes=lanes, k_max=k_max,
          in_pause=in_pause, out_pause=out_pause, seed=int(10 * in_pause + 100 * out_pause))


def test_bad_k_gives_an_error_element_and_the_next_query_is_exact():
    largest = (1 << topk_in_layout(K)["k"].width) - 1       # 15: the field holds more than K_MAX
    queries = [Query.make([1, 2, 3], 0), Query.make([4, 5], K + 1), Query.make([], 0),
               Query.make([9, 1], largest), Query.make([6, 7, 6], 2)]
    for lanes in (1, 2):
        elements = [e for q in queries for e in query_elements(q, k_max=K, lanes=lanes, check=False)]
        expected = unit_model(elements, K)
        assert expected[:4] == [empty_result(error=1)] * 4
        got, _, _ = run(TopKUnit(K, lanes=lanes, segment=4), elements, len(expected), in_pause=0.3,
                        out_pause=0.3)
        assert got == expected


# --- throughput and latency -------------------------------------------------------------------------------

@pytest.mark.parametrize(("lanes", "segment"), [(1, K), (1, 2), (1, 1), (2, 4)])
def test_one_element_per_cycle_back_to_back_and_fixed_latency(lanes, segment):
    dut = TopKUnit(K, lanes=lanes, segment=segment)
    rng = np.random.default_rng(4)
    # Just long enough for the previous result (K results, after the latency) to leave.
    n = lanes * (K + dut.latency - 1)
    queries = [Query.make(rng.integers(-100, 100, n), K) for _ in range(6)]
    elements = stream_elements(queries, k_max=K, lanes=lanes)
    expected = unit_model(elements, K)
    got, sent_at, received_at = run(dut, elements, len(expected))
    assert got == expected
    # No back-pressure: one element (lanes candidates) accepted in every cycle from the first to the last.
    assert sent_at == list(range(sent_at[0], sent_at[0] + len(elements)))
    # Every query's first result comes dut.latency cycles after its last element.
    per_query = len(elements) // len(queries)
    for q in range(len(queries)):
        last_in = sent_at[(q + 1) * per_query - 1]
        first_out = received_at[q * K]
        assert first_out - last_in == dut.latency


# --- several units, merge node ------------------------------------------------------------------------------

def test_units_work_independently():
    rng = np.random.default_rng(11)
    streams = [random_queries(rng, 10, k_max=4, max_candidates=30) for _ in range(2)]
    elements = [stream_elements(q, k_max=4) for q in streams]
    expected = [unit_model(e, 4) for e in elements]

    def simulate(stall_of_unit0):
        dut = TopKUnits(2, 4)
        got, finished = [[], []], [0, 0]

        def bench(unit, pause):
            async def send(ctx):
                await StreamSource(dut.i[unit], pause=0.2, seed=unit).send(ctx, elements[unit])

            async def receive(ctx):
                sink = StreamSink(dut.o[unit], pause=pause, seed=unit + 5)
                got[unit].extend(await sink.receive(ctx, len(expected[unit])))
                finished[unit] = sink.cycles

            return [send, receive]

        run_simulation(dut, bench(0, stall_of_unit0) + bench(1, 0.0), name="topk-units")
        assert got == expected
        return finished

    free, stalled = simulate(0.0), simulate(0.9)
    # Unit 0's consumer nearly always stalled slows unit 0 down and leaves unit 1 exactly as it was.
    assert stalled[0] > free[0] + 50
    assert stalled[1] == free[1]


def test_merge_node_merges_sorted_results():
    rng = np.random.default_rng(12)
    a_elements, b_elements, expected = [], [], []
    for _ in range(30):
        # Two sorted results with distinct indices (as the lanes of one unit produce), possibly empty.
        pool = rng.permutation(40)
        parts = []
        for side in range(2):
            size = int(rng.integers(0, 6))
            query = Query.make(rng.integers(-4, 4, size), 99, indices=pool[side * 20:side * 20 + size])
            parts.append(unit_model(query_elements(query, k_max=99), 99))
        a_elements += parts[0]
        b_elements += parts[1]
        kept = [e for part in parts for e in part if e["keep"]]
        kept.sort(key=lambda e: (-e["score"], e["index"]))
        if kept:
            expected += [{**e, "last": int(i == len(kept) - 1)} for i, e in enumerate(kept)]
        else:
            expected.append(empty_result())
    dut = TopKMerge()
    got = []

    async def send_a(ctx):
        await StreamSource(dut.a, pause=0.3, seed=1).send(ctx, a_elements)

    async def send_b(ctx):
        await StreamSource(dut.b, pause=0.5, seed=2).send(ctx, b_elements)

    async def receive(ctx):
        got.extend(await StreamSink(dut.o, pause=0.3, seed=3).receive(ctx, len(expected)))

    run_simulation(dut, [send_a, send_b, receive], name="topk-merge")
    assert got == expected


# --- a planted bug is caught ----------------------------------------------------------------------------------

def test_random_queries_catch_a_planted_tie_rule_bug(monkeypatch):
    from amaranth.hdl import Cat

    def ties_to_the_higher_index(a, b):
        return Cat(b.index, b.score[:-1], ~b.score[-1]) < Cat(a.index, a.score[:-1], ~a.score[-1])

    monkeypatch.setattr(rtl_topk, "_better", ties_to_the_higher_index)
    rng = np.random.default_rng(13)
    queries = random_queries(rng, 30, k_max=K, max_candidates=3 * K)
    elements = stream_elements(queries, k_max=K)
    expected = unit_model(elements, K)
    got, _, _ = run(TopKUnit(K), elements, len(expected))
    assert got != expected


# --- parameters --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k_max": 0}, "K_MAX must be a positive integer, not 0"),
    ({"k_max": -4}, "K_MAX must be a positive integer, not -4"),
    ({"k_max": 8.0}, "K_MAX must be a positive integer, not 8.0"),
    ({"k_max": 8, "lanes": 0}, "Lane count must be a positive integer, not 0"),
    ({"k_max": 8, "index_bits": 0}, "Candidate index width must be a positive integer, not 0"),
    ({"k_max": 8, "segment": 9}, r"Segment size must be at most K_MAX \(8\), not 9"),
    ({"k_max": 8, "segment": 0}, "Segment size must be a positive integer, not 0"),
])
def test_bad_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopKUnit(**kwargs)


def test_bad_k_is_rejected_before_it_reaches_the_hardware():
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, K_MAX = 8\], not 0"):
        check_k(0, 8)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, K_MAX = 8\], not 9"):
        query_elements(Query.make([1, 2], 9), k_max=8)
    with pytest.raises(ValueError, match="Top-k unit count must be a positive integer, not 0"):
        TopKUnits(0, 8)
    with pytest.raises(ValueError, match=r"Sub-batch sizes \[1, 1\] do not add up to the query's 3"):
        query_elements(Query.make([1, 2, 3], 2, batches=[1, 1]), k_max=8)


def test_synthesis_timeout_stops_the_build_and_names_it(tmp_path):
    # The benchmark's --pnr-timeout: a limit reached before Yosys has finished is an error naming the build.
    from rpaccel.config import preset
    from rpaccel.flow.synth import SynthError, synthesize

    with pytest.raises(SynthError, match=r"ecp5-85f build of pe did not finish synthesis within 0\.2 s"):
        synthesize("pe", "ecp5-85f", preset("small"), build_dir=tmp_path / "pe", timeout=0.2)
