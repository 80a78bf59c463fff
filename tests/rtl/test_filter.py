"""The filter unit (rpaccel.rtl.filter): exact top-k sets by radix selection, against rpaccel.numeric.topk."""

import collections

import numpy as np
import pytest

from rpaccel.numeric import topk
from rpaccel.rtl.filter import FilterUnit
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

CAPACITY = 64


def golden(scores, indices, k, capacity=CAPACITY):
    """Kept indices in arrival order (the first of interchangeable equal pairs), and the overflow flag."""
    scores, indices = list(scores[:capacity]), list(indices[:capacity])
    best_scores, best_indices = topk(scores, k, indices)
    wanted = collections.Counter(zip(best_scores.tolist(), best_indices.tolist(), strict=True))
    kept = []
    for pair in zip(scores, indices, strict=True):
        if wanted[pair]:
            wanted[pair] -= 1
            kept.append(pair[1])
    return kept


def queries(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(1, CAPACITY + 1))
        spread = int(rng.choice([2, 5, 1000, 1 << 31]))
        scores = rng.integers(-spread, spread, size=n)
        if rng.random() < 0.3:
            scores = scores * (1 << 24)                 # ties in the low bytes, differences in the high one
        scores = scores.clip(-(1 << 31), (1 << 31) - 1)
        if rng.random() < 0.2:
            indices = rng.integers(0, 8, size=n)         # repeated indices
        elif rng.random() < 0.5:
            indices = rng.permutation(n) * int(rng.choice([1, 257]))
        else:
            indices = np.arange(n)
        k = int(rng.integers(1, n + 3))
        out.append((scores.astype(np.int64), indices.astype(np.int64), k))
    return out


def _run(batch, *, pause, seed, planted=False):
    dut = FilterUnit(CAPACITY)
    got = {}
    words = []
    for scores, indices, k in batch:
        for i, (score, index) in enumerate(zip(scores.tolist(), indices.tolist(), strict=True)):
            last = i == len(scores) - 1
            words.append({"score": score, "index": index, "last": int(last), "k": k if last else 0})
    expected = [golden(*query) for query in batch]
    if planted:       # a model that breaks ties the wrong way round
        flip = [int(indices.max()) for _, indices, _ in batch]
        expected = [[top - i for i in golden(scores, top - indices, k)]
                    for (scores, indices, k), top in zip(batch, flip, strict=True)]

    async def source(ctx):
        await StreamSource(dut.i, pause=pause, seed=seed).send(ctx, words)

    async def sink(ctx):
        got["o"] = await StreamSink(dut.o, pause=pause, seed=seed + 1).receive(ctx, sum(max(len(e), 1)
                                                                                          for e in expected))

    run_simulation(dut, [source, sink], max_cycles=400_000, name="filter")
    at = 0
    for query, want in zip(batch, expected, strict=True):
        block = got["o"][at:at + max(len(want), 1)]
        at += len(block)
        assert [w["last"] for w in block] == [0] * (len(block) - 1) + [1], query
        assert [w["index"] for w in block] == want, query
        assert not any(w["error"] for w in block)


@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_filter_matches_numeric_topk(pause):
    _run(queries(3, 40), pause=pause, seed=5)


def test_filter_catches_planted_tie_rule():
    batch = [(np.array([5, 5, 5, 5, 1]), np.array([3, 0, 2, 1, 4]), 2)]
    with pytest.raises(AssertionError):
        _run(batch, pause=0.0, seed=1, planted=True)


def test_filter_overflow_and_k_zero():
    """Candidates beyond the capacity are dropped and flagged on the last word; k = 0 gives one empty word."""
    dut = FilterUnit(8)
    scores = list(range(10))                         # 10 candidates into 8 places: 8 and 9 are dropped
    words = [{"score": s, "index": i, "last": int(i == 9), "k": 3 if i == 9 else 0} for i, s in enumerate(scores)]
    words += [{"score": 1, "index": 0, "last": 0, "k": 0}, {"score": 2, "index": 1, "last": 1, "k": 0}]
    got = {}

    async def source(ctx):
        await StreamSource(dut.i).send(ctx, words)

    async def sink(ctx):
        got["o"] = await StreamSink(dut.o).receive(ctx, 4)

    run_simulation(dut, [source, sink], max_cycles=20_000, name="filter_overflow")
    first, empty = got["o"][:3], got["o"][3]
    assert [w["index"] for w in first] == [5, 6, 7] and [w["last"] for w in first] == [0, 0, 1]
    assert first[-1]["error"] == 1 and not any(w["error"] for w in first[:-1])
    assert empty["empty"] == 1 and empty["last"] == 1 and empty["error"] == 0


def test_filter_rejects_bad_parameters():
    with pytest.raises(ValueError, match="power of two"):
        FilterUnit(100)
    with pytest.raises(ValueError, match="index bits"):
        FilterUnit(64, index_bits=17)


def test_a_k_zero_query_behind_a_stalled_consumer_loses_no_word():
    """An empty result (k = 0) waits for room in the output queue like any other: with the consumer stalled 95% of
    cycles, every word still comes out (the EMPTY state once took a credit in every cycle it waited, ran the
    credit count past the queue's depth and wrote into a full queue: 74 of 87 words, then a hang)."""
    dut = FilterUnit(CAPACITY)
    words, expected = [], []
    for _ in range(3):
        for n, k in ((8, 8), (1, 0), (20, 20)):
            words += [{"score": i, "index": i, "last": int(i == n - 1), "k": k if i == n - 1 else 0}
                      for i in range(n)]
            expected.append(list(range(n)) if k else [])
    got = {}

    async def source(ctx):
        await StreamSource(dut.i).send(ctx, words)

    async def sink(ctx):
        got["o"] = await StreamSink(dut.o, pause=0.95, seed=3).receive(ctx, sum(max(len(e), 1) for e in expected))

    run_simulation(dut, [source, sink], max_cycles=100_000, name="filter_k0_stalled")
    at = 0
    for want in expected:
        block = got["o"][at:at + max(len(want), 1)]
        at += len(block)
        if want:
            assert sorted(w["index"] for w in block) == want and not any(w["empty"] for w in block)
        else:
            assert block[0]["empty"] == 1 and block[0]["last"] == 1
