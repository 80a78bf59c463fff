"""The score path's timing model (rpaccel.sim.model.score) against the RTL on Verilator, cycle for cycle.

Top-k and filter units: random queries (sizes from empty to many times ``k_max`` and beyond a filter's capacity,
sub-batches, bad ``k``, ties, idle gaps of many lengths before and inside queries, queries back to back) through the
unit in the Player, with a probe that stamps every input transfer. Score unit: random SCORE programs on one to four
lanes (LOGITs, top-k and filter queries kept and reported, units shared by lanes, a slow fetcher's releases), with a
probe that stamps every instruction and item taken and every step of ``results_done``. Each compares every input
and output transfer's cycle, and every output value, with the model's; the stall patterns are the Player's own (its
xorshift generators), given to the model. Planted errors in the model's constants and rules are caught.
"""

from itertools import islice

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.config import preset
from rpaccel.host.driver.codec import codec
from rpaccel.host.driver.device import NO_CYCLE
from rpaccel.host.driver.topk import decode_results, encode_queries
from rpaccel.numeric import topk
from rpaccel.rtl.accel.isa import INDEX_BITS, ChipGeometry, ResponseKind, ScoreDest
from rpaccel.rtl.accel.score import ScoreUnit
from rpaccel.rtl.filter import FilterUnit, filter_in_layout, filter_out_layout
from rpaccel.rtl.topk import TopKUnit, topk_in_layout, topk_out_layout
from rpaccel.sim.golden.score import filter_keep, score_instr
from rpaccel.sim.golden.topk import Query, random_queries
from rpaccel.sim.model import score as score_model
from rpaccel.sim.model.score import FilterQuery, FreeCycles, filter_timing, score_timing, topk_timing
from rpaccel.sim.player import Player
from rpaccel.sim.streams import port_seed, xorshift_stalls


class TopKProbe(wiring.Component):
    """A :class:`TopKUnit` whose input transfers are also put out on ``taken`` (valid in the transfer's cycle;
    the Player takes it with no back-pressure and stamps its cycle)."""

    def __init__(self, k_max, lanes, segment):
        self.k_max, self.lanes, self.segment = k_max, lanes, segment
        super().__init__({"i": In(stream.Signature(topk_in_layout(k_max, lanes=lanes))),
                          "o": Out(stream.Signature(topk_out_layout())),
                          "taken": Out(stream.Signature(1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = TopKUnit(self.k_max, lanes=self.lanes, segment=self.segment)
        wiring.connect(m, wiring.flipped(self.i), unit.i)
        wiring.connect(m, unit.o, wiring.flipped(self.o))
        m.d.comb += [self.taken.valid.eq(self.i.valid & self.i.ready), self.taken.payload.eq(1)]
        return m


class FilterProbe(wiring.Component):
    """A :class:`FilterUnit` with the ``taken`` stream of :class:`TopKProbe`."""

    def __init__(self, capacity):
        self.capacity = capacity
        super().__init__({"i": In(stream.Signature(filter_in_layout(capacity))),
                          "o": Out(stream.Signature(filter_out_layout())),
                          "taken": Out(stream.Signature(1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = FilterUnit(self.capacity)
        wiring.connect(m, wiring.flipped(self.i), unit.i)
        wiring.connect(m, unit.o, wiring.flipped(self.o))
        m.d.comb += [self.taken.valid.eq(self.i.valid & self.i.ready), self.taken.payload.eq(1)]
        return m


def stalls(pause, seed, port, cycles):
    """The Player's stall pattern of ``port`` over ``cycles`` cycles."""
    return np.fromiter(islice(xorshift_stalls(pause, port_seed(seed, port)), cycles), dtype=bool, count=cycles)


def not_before(rng, count):
    """Not-before cycles of ``count`` input words: mostly none, some past, some far ahead (idle gaps)."""
    planned = np.cumsum(1 + rng.choice([0, 0, 0, 0, 1, 3, 40], size=count) * (rng.random(count) < 0.1))
    planned += np.cumsum(np.where(rng.random(count) < 0.02, rng.integers(50, 300, count), 0))
    return np.where(rng.random(count) < 0.3, planned, NO_CYCLE).astype(np.int64)


def random_case(seed, k_max, lanes, count):
    rng = np.random.default_rng(seed)
    queries = random_queries(rng, count, k_max=k_max, max_candidates=int(rng.choice([2, 6])) * k_max * lanes)
    for query in queries:
        if rng.random() < 0.05:
            query.k = int(rng.choice([0, k_max + 1]))           # an error element
    return queries


def compare(player, queries, *, k_max, lanes, segment, pause=(0.0, 0.0), seed=1, separate_end=False, nb=True):
    """Run ``queries`` on the RTL and in the model; return the two as ``(accepted, output, results)`` each."""
    words = encode_queries(queries, k_max=k_max, lanes=lanes, separate_end=separate_end, check=False)
    rng = np.random.default_rng(seed)
    cycles = not_before(rng, len(words)) if nb else np.full(len(words), NO_CYCLE, dtype=np.int64)
    model = topk_timing(queries, k_max=k_max, lanes=lanes, segment=segment, separate_end=separate_end,
                        not_before=cycles, in_stalls=stalls(pause[0], seed, "i", 1 << 16),
                        out_stalls=stalls(pause[1], seed, "o", 1 << 16))
    run = player.run({"i": words}, expect={"o": len(model.output), "taken": len(words)}, packed=True, words=True,
                     direct=True, pause={"i": pause[0], "o": pause[1], "taken": 0.0}, seed=seed,
                     not_before={"i": cycles}, output_cycles=True)
    assert run.cycles < 1 << 16
    rtl = (run.output_cycles["taken"], run.output_cycles["o"], decode_results(run.outputs["o"]))
    return rtl, (model.accepted, model.output, model.results), run


def assert_same(rtl, model):
    accepted, output, results = rtl
    assert accepted.tolist() == model[0].tolist()
    assert output.tolist() == model[1].tolist()
    for name, column in model[2].items():
        assert results[name].tolist() == column.tolist(), name


def test_free_cycles_ranks():
    free = FreeCycles([False, True, True, False, True])
    assert free.rank([-1, 0, 1, 2, 3, 4, 5, 9]).tolist() == [0, 0, 1, 1, 1, 2, 2, 6]
    assert free.cycle([0, 1, 2, 3, 6]).tolist() == [0, 3, 5, 6, 9]
    assert FreeCycles().cycle([0, 4]).tolist() == [0, 4]


def test_topk_model_needs_one_cycle_per_element():
    with pytest.raises(ValueError, match=r"one not-before cycle per input element \(3\)"):
        topk_timing([Query.make([1, 2, 3], 2)], k_max=4, not_before=[0, 1])


# --- against Verilator -------------------------------------------------------------------------------------

TINY, SMALL = preset("tiny").k_max, preset("small").k_max
UNITS = {  # name: (k_max, lanes, segment); the presets' units as the chip builds them, and a multi-lane one
    "tiny": (TINY, 1, min(TINY, 16)),
    "small": (SMALL, 1, min(SMALL, 16)),
    "lanes3": (8, 3, 3),
}
_players = {}


def player(name):
    if name not in _players:
        _players[name] = Player(TopKProbe, *UNITS[name])
    return _players[name]


@pytest.mark.verilator
@pytest.mark.parametrize("name", list(UNITS))
@pytest.mark.parametrize(("pause", "separate_end"), [((0.0, 0.0), False), ((0.3, 0.4), False), ((0.2, 0.6), True)],
                         ids=["free", "stalls", "stalls-end"])
def test_topk_model_is_cycle_exact(name, pause, separate_end):
    k_max, lanes, segment = UNITS[name]
    seed = 7 + 3 * list(UNITS).index(name) + int(10 * pause[1])
    queries = random_case(seed, k_max, lanes, 60)
    rtl, model, _ = compare(player(name), queries, k_max=k_max, lanes=lanes, segment=segment, pause=pause,
                            seed=seed, separate_end=separate_end)
    assert_same(rtl, model)


@pytest.mark.verilator
def test_topk_model_back_to_back_queries_at_full_rate():
    # Queries just long enough to stream back to back, and shorter ones whose `last` waits for the result.
    k_max, lanes, segment = UNITS["small"]
    rng = np.random.default_rng(5)
    sizes = [k_max + 2 * 4 + 2, k_max + 2 * 4 + 1, 3, 1, 0, k_max, 200]
    queries = [Query.make(rng.integers(-1000, 1000, size), k_max) for size in sizes * 3]
    rtl, model, _ = compare(player("small"), queries, k_max=k_max, lanes=lanes, segment=segment, nb=False)
    assert_same(rtl, model)


@pytest.mark.verilator
def test_topk_regression_catches_a_planted_latency_error(monkeypatch):
    k_max, lanes, segment = UNITS["tiny"]
    queries = random_case(3, k_max, lanes, 20)
    monkeypatch.setattr(score_model, "READ_OUT", score_model.READ_OUT - 1)
    rtl, model, _ = compare(player("tiny"), queries, k_max=k_max, lanes=lanes, segment=segment, pause=(0.3, 0.3))
    with pytest.raises(AssertionError):
        assert_same(rtl, model)


# --- the filter unit ---------------------------------------------------------------------------------------

FILTERS = {"tiny": preset("tiny").filter_capacity, "small": preset("small").filter_capacity}


def filter_case(seed, capacity, count, *, empty=True):
    """Random filter queries: sizes up to ``capacity`` (some beyond), wide and narrow scores (ties in the low
    bytes, whole ties), repeated indices, ``k`` from 0 (if ``empty``) to beyond the size."""
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(count):
        shape = rng.random()
        n = (int(rng.integers(1, 9)) if shape < 0.3 else capacity + int(rng.integers(1, 20)) if shape < 0.35
             else int(rng.integers(1, min(capacity, 600) + 1)))
        spread = int(rng.choice([2, 5, 1000, 1 << 31]))
        scores = rng.integers(-spread, spread, size=n)
        if rng.random() < 0.3:
            scores = scores * (1 << 24)
        scores = scores.clip(-(1 << 31), (1 << 31) - 1)
        indices = rng.integers(0, 8, size=n) if rng.random() < 0.2 else rng.permutation(n) % (1 << 16)
        held = min(n, capacity)
        k = int(rng.choice([int(rng.integers(1, held + 3)), held, 1] + ([0] if empty else [])))
        queries.append(FilterQuery(scores.astype(np.int64), indices.astype(np.int64), k))
    return queries


def compare_filter(name, queries, *, pause=(0.0, 0.0), seed=1, nb=True):
    capacity = FILTERS[name]
    if name + "-filter" not in _players:
        _players[name + "-filter"] = Player(FilterProbe, capacity)
    columns = {"score": np.concatenate([q.scores for q in queries]),
               "index": np.concatenate([q.indices for q in queries])}
    last = np.concatenate([np.arange(len(q.scores)) == len(q.scores) - 1 for q in queries]).astype(np.int64)
    columns["last"] = last
    columns["k"] = last * np.repeat([q.k for q in queries], [len(q.scores) for q in queries])
    words = codec(filter_in_layout(capacity)).pack(columns)
    rng = np.random.default_rng(seed)
    cycles = not_before(rng, len(words)) if nb else np.full(len(words), NO_CYCLE, dtype=np.int64)
    model = filter_timing(queries, capacity=capacity, not_before=cycles, in_stalls=stalls(pause[0], seed, "i", 1 << 20),
                          out_stalls=stalls(pause[1], seed, "o", 1 << 20))
    run = _players[name + "-filter"].run(
        {"i": words}, expect={"o": len(model.output), "taken": len(words)}, packed=True, words=True, direct=True,
        pause={"i": pause[0], "o": pause[1], "taken": 0.0}, seed=seed, not_before={"i": cycles}, output_cycles=True)
    assert run.cycles < 1 << 20
    rtl = (run.output_cycles["taken"], run.output_cycles["o"], codec(filter_out_layout()).unpack(run.outputs["o"]))
    return rtl, (model.accepted, model.output, model.results), model


def test_filter_kept_is_the_golden_set():
    for query in filter_case(4, 64, 200, empty=False):
        n = min(len(query.scores), 64)
        kept = score_model.filter_kept(query.scores[:n], query.indices[:n], query.k)
        assert query.indices[:n][kept].tolist() == filter_keep(query.scores, query.k, query.indices, 64)[0]


@pytest.mark.verilator
@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("pause", [(0.0, 0.0), (0.3, 0.5), (0.1, 0.9)], ids=["free", "stalls", "slow-consumer"])
def test_filter_model_is_cycle_exact(name, pause):
    # Seeds whose queries take 0, 4 and 6 passes, and some k = 0 (an empty result, also behind a stalled consumer).
    seed = 31 + int(10 * pause[1]) + (name == "small") + 2 * (name == "small" and pause == (0.3, 0.5))
    queries = filter_case(seed, FILTERS[name], 24 if name == "tiny" else 12)
    assert any(query.k == 0 for query in queries)
    rtl, model, timing = compare_filter(name, queries, pause=pause, seed=seed)
    assert set(timing.passes.tolist()) >= {0, 4, 6} - ({0} if name == "small" else set())
    assert_same(rtl, model)


@pytest.mark.verilator
@pytest.mark.parametrize(("constant", "change"), [("CREDITS", 1), ("CREDITS", -1), ("HEAD", 1), ("PASS_EXTRA", -1)])
def test_filter_regression_catches_planted_errors(monkeypatch, constant, change):
    queries = filter_case(36, FILTERS["tiny"], 24, empty=False)
    monkeypatch.setattr(score_model, constant, getattr(score_model, constant) + change)
    rtl, model, _ = compare_filter("tiny", queries, pause=(0.3, 0.5), seed=36)
    with pytest.raises(AssertionError):
        assert_same(rtl, model)


def test_best_is_the_golden_topk():
    rng = np.random.default_rng(8)
    for query in random_queries(rng, 300, k_max=16, max_candidates=200):
        if len(query.scores) and query.k >= 1:
            got = score_model.best(query.scores, query.k, query.indices)
            want = topk(query.scores, query.k, query.indices)
            assert [g.tolist() for g in got] == [w.tolist() for w in want]


# --- the score unit ----------------------------------------------------------------------------------------


class ScoreProbe(wiring.Component):
    """The :class:`ScoreUnit` of preset ``name`` (with ``settings``) with the streams of its first ``lanes`` lanes,
    each lane's ``cmd`` and item transfers stamped on ``accepted<l>`` and ``taken<l>``, each holder's
    ``results_done`` steps on ``done<h>``, and the fetcher's ``release`` of each kept result ``delay`` cycles after
    ``results_done`` counts it (and after the previous release), ``delay`` an input held through a run."""

    #: Bits of the ``delay`` input (a static of the Player's runs, so one build serves every delay).
    DELAY_BITS = 12

    def __init__(self, name, lanes=1, settings=()):
        self.geometry, self.lanes = ChipGeometry(preset(name).with_settings(list(settings))), lanes
        g = self.geometry
        members = {"rsp": Out(stream.Signature(g.response_layout())), "delay": In(self.DELAY_BITS)}
        for lane in range(lanes):
            members.update({
                f"cmd{lane}": In(stream.Signature(g.score_instr_layout())),
                f"logits{lane}": In(stream.Signature(data.ArrayLayout(signed(32), g.engine.lane_cols(lane)))),
                f"index{lane}": In(stream.Signature(unsigned(INDEX_BITS))),
                f"accepted{lane}": Out(stream.Signature(1)), f"taken{lane}": Out(stream.Signature(1))})
        members.update({f"done{h}": Out(stream.Signature(1)) for h in range(g.holders)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        m.submodules.unit = unit = ScoreUnit(g)
        wiring.connect(m, unit.rsp, wiring.flipped(self.rsp))
        for lane in range(self.lanes):
            cmd, logits = getattr(self, f"cmd{lane}"), getattr(self, f"logits{lane}")
            wiring.connect(m, wiring.flipped(cmd), unit.cmd[lane])
            wiring.connect(m, wiring.flipped(logits), getattr(unit, f"logits{lane}"))
            wiring.connect(m, wiring.flipped(getattr(self, f"index{lane}")), unit.index[lane])
            accepted, taken = getattr(self, f"accepted{lane}"), getattr(self, f"taken{lane}")
            m.d.comb += [accepted.valid.eq(cmd.valid & cmd.ready), accepted.payload.eq(1),
                         taken.valid.eq(logits.valid & logits.ready), taken.payload.eq(1)]
        for h in range(g.holders):
            shown, released = Signal.like(unit.results_done[h]), Signal.like(unit.results_done[h])
            timer = Signal(self.DELAY_BITS)
            port = getattr(self, f"done{h}")
            m.d.sync += shown.eq(unit.results_done[h])
            m.d.comb += [port.valid.eq(shown != unit.results_done[h]), port.payload.eq(1)]
            with m.If(released != unit.results_done[h]):
                with m.If(timer == self.delay):
                    m.d.comb += unit.release[h].eq(1)
                    m.d.sync += [released.eq(released + 1), timer.eq(0)]
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)
        return m


def score_case(seed, geometry, blocks, *, logit_share=0.3, report=None, lane=0, dests=(ScoreDest.TOPK,
                                                                                    ScoreDest.FILTER), unit=0):
    """Lane 0's random SCORE program and its logits and indices: LOGIT SCOREs (a share ``logit_share`` of the
    blocks, and between the parts of queries), top-k and filter queries of one to three SCOREs closed with ``keep``
    at random; the queries to ``report`` (``ScoreDest.TOPK`` or ``FILTER``) reported at random, and then the
    filter queries may overflow. The queries go to ``dests`` (top-k unit ``unit``, filter unit 0); the program is
    ``lane``'s."""
    g, rng = geometry, np.random.default_rng(seed)
    program, sizes = [], []

    def instr(items, **fields):
        sizes.append(items)
        return score_instr(len(program), lane=lane, items=items, **fields)

    for _ in range(blocks):
        if rng.random() < logit_share:
            program.append(instr(int(rng.integers(1, 24)), dest=ScoreDest.RSP, last=rng.random() < 0.5))
            continue
        to_filter = ScoreDest.FILTER in dests and (ScoreDest.TOPK not in dests or rng.random() < 0.4)
        dest, k_max = (ScoreDest.FILTER, g.filter_capacity) if to_filter else (ScoreDest.TOPK, g.k_max)
        longest = (g.filter_capacity // (2 if report is not None and rng.random() < 0.3 else 3)) if to_filter \
            else 3 * g.k_max
        parts = rng.integers(1, longest, int(rng.integers(1, 4)))
        k = int(rng.choice([1, k_max, min(k_max, max(1, int(parts.sum()) + int(rng.integers(-3, 3))))]))
        for number, items in enumerate(parts.tolist()):
            if number and rng.random() < logit_share:
                program.append(instr(int(rng.integers(1, 8)), dest=ScoreDest.RSP, last=0))
            closes = number == len(parts) - 1
            program.append(instr(items, dest=dest, unit=0 if to_filter else unit, last=closes, k=k if closes else 0,
                                 keep=closes and rng.random() < 0.7,
                                 report=closes and dest == report and rng.random() < 0.6))
    total = sum(sizes)
    logits = np.where(rng.random(total) < 0.5, rng.integers(-(1 << 31), 1 << 31, total), rng.integers(-3, 3, total))
    return program, logits.astype(np.int64), rng.integers(0, 1 << INDEX_BITS, total).astype(np.int64)


def compare_score(name, seed, *, blocks=12, delay=0, pause=0.0, gaps=True, case=None, settings=(), **kwargs):
    """Run a random lane-0 program (or ``case``: per lane, programs, logits and indices) on the RTL and in the model
    and check that every transfer is in the same cycle and every response the same; return the model's timing."""
    g = ChipGeometry(preset(name).with_settings(list(settings)))
    programs, logits, indices = ([part] for part in score_case(seed, g, blocks, **kwargs)) if case is None else case
    lanes = len(programs)
    key = f"score-{name}-{lanes}-{settings}"
    if key not in _players:
        _players[key] = Player(ScoreProbe, name, lanes, settings)
    rng = np.random.default_rng(seed + 1)
    inputs, nbs, expect = {}, {}, {}
    for lane, program in enumerate(programs):
        count = len(logits[lane])
        none = np.full(count, NO_CYCLE, dtype=np.int64)
        nbs[f"logits{lane}"], nbs[f"index{lane}"] = (not_before(rng, count), not_before(rng, count)) if gaps \
            else (none, none)
        cmd_nb = not_before(rng, len(program)) * 8 if gaps else np.full(len(program), NO_CYCLE, dtype=np.int64)
        cmd_nb[cmd_nb < 0] = NO_CYCLE
        nbs[f"cmd{lane}"] = cmd_nb
        cols = g.engine.lane_cols(lane)
        words = np.concatenate([np.asarray(logits[lane])[:, None],
                                rng.integers(-(1 << 31), 1 << 31, (count, cols - 1))], axis=1)
        inputs.update({f"cmd{lane}": codec(g.score_instr_layout()).pack_values(program),
                       f"logits{lane}": codec(data.ArrayLayout(signed(32), cols)).pack(words),
                       f"index{lane}": np.asarray(indices[lane])})
        expect.update({f"accepted{lane}": len(program), f"taken{lane}": count})
    model = score_timing(g, programs, logits, indices, cmd_not_before=[nbs[f"cmd{lane}"] for lane in range(lanes)],
                         logits_not_before=[nbs[f"logits{lane}"] for lane in range(lanes)],
                         index_not_before=[nbs[f"index{lane}"] for lane in range(lanes)],
                         rsp_stalls=stalls(pause, seed, "rsp", 1 << 20), release_delay=delay)
    expect.update({"rsp": len(model.responses), **{f"done{h}": len(model.results_done[h]) for h in range(g.holders)}})
    run = _players[key].run(inputs, expect=expect, pause={"rsp": pause}, seed=seed, not_before=nbs,
                            statics={"delay": delay}, output_cycles=True, packed=True, words=True, direct=True)
    # (The codec does not unpack an empty array of words: a run without responses has nothing to compare.)
    got = codec(g.response_layout()).unpack(run.outputs["rsp"]) if len(model.responses) else model.values
    for lane in range(lanes):
        assert run.output_cycles[f"accepted{lane}"].tolist() == model.accepted[lane].tolist(), lane
        assert run.output_cycles[f"taken{lane}"].tolist() == model.taken[lane].tolist(), lane
    assert run.output_cycles["rsp"].tolist() == model.responses.tolist()
    for field, column in model.values.items():
        assert np.asarray(got[field]).tolist() == column.tolist(), field
    for h in range(g.holders):
        assert run.output_cycles[f"done{h}"].tolist() == model.results_done[h].tolist(), h
    return model, run


@pytest.mark.verilator
@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize(("delay", "pause", "gaps"), [(0, 0.0, False), (0, 0.4, True), (700, 0.2, True)],
                         ids=["free", "stalls", "slow-release"])
def test_score_model_is_cycle_exact(name, delay, pause, gaps):
    compare_score(name, 50 + delay + int(10 * pause), blocks=24, delay=delay, pause=pause, gaps=gaps)


def kept_filter_queries(**kwargs):
    # Small kept filter results behind a slow fetcher: results wait for their bank's release (rule 18), their words
    # wait in the output queue after DONE, and a later query's end waits for the closing SCORE of the query two
    # before it to leave the queue (rule 17).
    rng = np.random.default_rng(77)
    sizes = rng.integers(5, 20, 8).tolist()
    program = [score_instr(tag, dest=ScoreDest.FILTER, items=size, last=1, k=int(rng.integers(1, 4)), keep=1)
               for tag, size in enumerate(sizes)]
    logits = rng.integers(-100, 100, sum(sizes))
    indices = rng.integers(0, 1 << INDEX_BITS, sum(sizes))
    return compare_score("tiny", 77, case=([program], [logits], [indices]), delay=2500, gaps=False, **kwargs)


@pytest.mark.verilator
def test_score_model_follows_releases_and_the_closing_queue():
    model, _ = kept_filter_queries()
    assert len(model.results_done[1]) == 8


@pytest.mark.verilator
@pytest.mark.parametrize(("constant", "value", "case"), [
    ("CLOSING", 3, kept_filter_queries),
    ("READ_OUT", 1, lambda: compare_score("tiny", 3, blocks=8)),
], ids=["closing-queue", "read-out"])
def test_score_regression_catches_planted_errors(monkeypatch, constant, value, case):
    monkeypatch.setattr(score_model, constant, value)
    with pytest.raises(AssertionError):
        case()


@pytest.mark.verilator
@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("report", [ScoreDest.TOPK, ScoreDest.FILTER], ids=["rank", "kept"])
def test_score_model_reports_results_cycle_exact(name, report):
    # One reporting source at a time (RANK responses, or KEPT and ERROR ones), the consumer always ready.
    model, _ = compare_score(name, 90 + report.value, blocks=16, logit_share=0.0, report=report, delay=300)
    kinds = set(model.values["kind"].tolist())
    assert {ResponseKind.RANK.value} == kinds if report == ScoreDest.TOPK else ResponseKind.KEPT.value in kinds


def test_score_model_refuses_what_it_does_not_model():
    g = ChipGeometry(preset("tiny"))
    # Lane 1 waits for the unit lane 0 holds; meanwhile the RTL's lane 1 sends LOGITs, which would have met lane 2's
    # in decisions the model has made without them.
    programs = [[score_instr(0, items=60, last=1, k=4)],
                [score_instr(1, lane=1, items=1), score_instr(2, lane=1, dest=ScoreDest.RSP, items=30),
                 score_instr(3, lane=1, items=1, last=1, k=1)],
                [score_instr(4, lane=2, dest=ScoreDest.RSP, items=50)]]
    sizes = [60, 32, 50]
    with pytest.raises(ValueError, match=r"merge input 1 is presented in cycle \d+, before the merge's decision"):
        score_timing(g, programs, [np.arange(n) for n in sizes], [np.arange(n) for n in sizes])
    program = [score_instr(tag, dest=ScoreDest.FILTER, items=4, last=1, k=2, keep=1) for tag in range(3)]
    with pytest.raises(ValueError, match="keeps a third result of holder 1 that is never released"):
        score_timing(g, [program], [np.arange(12)], [np.arange(12)])
    with pytest.raises(ValueError, match="Lane 0 leaves a query open on holder 0"):
        score_timing(g, [[score_instr(0, items=3)]], [np.arange(3)], [np.arange(3)])



@pytest.mark.verilator
def test_score_model_answers_an_overflow_with_an_error():
    # Filter queries beyond the capacity, reported (the ERROR replaces the last KEPT) or not (the ERROR alone).
    g = ChipGeometry(preset("tiny"))
    rng = np.random.default_rng(12)
    sizes = [g.filter_capacity + 5, 30, g.filter_capacity + 1]
    program = [score_instr(0, dest=ScoreDest.FILTER, items=sizes[0], last=1, k=9, keep=1),
               score_instr(1, dest=ScoreDest.FILTER, items=sizes[1], last=1, k=3, report=1),
               score_instr(2, dest=ScoreDest.FILTER, items=sizes[2], last=1, k=4, report=1)]
    case = ([program], [rng.integers(-50, 50, sum(sizes))], [rng.integers(0, 1 << INDEX_BITS, sum(sizes))])
    model, _ = compare_score("tiny", 12, case=case, gaps=False)
    assert model.values["kind"].tolist() == [ResponseKind.ERROR.value] + [ResponseKind.KEPT.value] * 6 + [
        ResponseKind.ERROR.value]


@pytest.mark.verilator
@pytest.mark.parametrize(("pause", "gaps"), [(0.0, True), (0.5, True)], ids=["ranks", "logits-stalled"])
def test_score_model_runs_lanes_side_by_side(pause, gaps):
    # Four lanes at once on two top-k units and a filter unit, each lane with its own: one source of responses
    # (lane 0's RANKs with the consumer ready, or lane 3's LOGITs behind a stalled one).
    settings = ("topk_units=2",)
    g = ChipGeometry(preset("tiny").with_settings(list(settings)))
    logits_lane = pause > 0
    parts = [score_case(60, g, 10, lane=0, dests=(ScoreDest.TOPK,), logit_share=0.0,
                        report=None if logits_lane else ScoreDest.TOPK),
             score_case(61, g, 6, lane=1, dests=(ScoreDest.FILTER,), logit_share=0.0),
             score_case(62, g, 10, lane=2, dests=(ScoreDest.TOPK,), unit=1, logit_share=0.0),
             score_case(63, g, 8, lane=3, dests=(), logit_share=1.0) if logits_lane
             else ([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))]
    case = tuple(list(column) for column in zip(*parts))
    model, _ = compare_score("tiny", 64, case=case, delay=100, pause=pause, gaps=gaps, settings=settings)
    assert all(len(taken) for taken in model.taken[:3]) and len(model.responses)


def baseline_lanes(**kwargs):
    # The baseline mode on a split array: every lane's LOGITs through the response merge at once, two lanes also
    # feeding a unit of their own.
    g = ChipGeometry(preset("tiny"))
    parts = [score_case(70, g, 8, lane=0, dests=(ScoreDest.TOPK,), logit_share=0.5),
             score_case(71, g, 6, lane=1, dests=(ScoreDest.FILTER,), logit_share=0.5),
             score_case(72, g, 8, lane=2, dests=(), logit_share=1.0),
             score_case(73, g, 8, lane=3, dests=(), logit_share=1.0)]
    return compare_score("tiny", 74, case=tuple(list(column) for column in zip(*parts)), delay=0, **kwargs)


@pytest.mark.verilator
@pytest.mark.parametrize(("pause", "gaps"), [(0.0, False), (0.0, True), (0.4, True)],
                         ids=["back-to-back", "gaps", "stalls"])
def test_score_model_merges_the_lanes_logits_round_robin(pause, gaps):
    model, _ = baseline_lanes(pause=pause, gaps=gaps)
    tags = model.values["tag"]
    assert len(model.responses) > 100 and (np.diff(tags) != 0).mean() > 0.3     # the lanes interleave


@pytest.mark.verilator
def test_score_regression_catches_a_fixed_priority_merge(monkeypatch):
    # Planted: the merge always prefers the lowest lane (a round-robin cycle of one source).
    create = score_model._Merge.__init__

    def fixed_priority(self, geometry, shared):
        create(self, geometry, shared)
        self.sources = 1

    monkeypatch.setattr(score_model._Merge, "__init__", fixed_priority)
    with pytest.raises(AssertionError):
        baseline_lanes(pause=0.0, gaps=False)


@pytest.mark.verilator
@pytest.mark.parametrize("pause", [0.0, 0.5], ids=["ready", "stalls"])
def test_score_model_merges_ranks_and_logits(pause):
    # Reported top-k results of two units and LOGITs of two lanes meet in the response merge.
    settings = ("topk_units=2",)
    g = ChipGeometry(preset("tiny").with_settings(list(settings)))
    parts = [score_case(80, g, 12, lane=0, dests=(ScoreDest.TOPK,), logit_share=0.4, report=ScoreDest.TOPK),
             score_case(81, g, 12, lane=1, dests=(ScoreDest.TOPK,), unit=1, logit_share=0.0, report=ScoreDest.TOPK),
             score_case(82, g, 6, lane=2, dests=(ScoreDest.FILTER,), logit_share=0.0),
             score_case(83, g, 10, lane=3, dests=(), logit_share=1.0)]
    model, _ = compare_score("tiny", 84, case=tuple(list(column) for column in zip(*parts)), delay=50, pause=pause,
                             settings=settings)
    kinds = model.values["kind"]
    assert (kinds == ResponseKind.RANK.value).sum() > 50 and (kinds == ResponseKind.LOGIT.value).sum() > 50


@pytest.mark.verilator
@pytest.mark.parametrize(("report", "pause"), [(None, 0.0), (ScoreDest.TOPK, 0.0), (ScoreDest.TOPK, 0.5)],
                         ids=["kept", "ranks", "ranks-stalled"])
def test_score_model_grants_shared_units_round_robin(report, pause):
    # Every lane's queries on the one top-k unit and the one filter unit: the units' grants among the lanes.
    g = ChipGeometry(preset("tiny"))
    parts = [score_case(90 + lane, g, 8, lane=lane, logit_share=0.0, report=report) for lane in range(g.lanes)]
    model, _ = compare_score("tiny", 95, case=tuple(list(column) for column in zip(*parts)), delay=20, pause=pause)
    assert all(len(taken) for taken in model.taken)


@pytest.mark.verilator
@pytest.mark.parametrize("pause", [0.0, 0.5], ids=["ready", "stalls"])
def test_score_model_merges_kept_words_with_the_rest(pause):
    # A filter unit's KEPT and ERROR responses beside another lane's RANKs and a third lane's LOGITs.
    g = ChipGeometry(preset("tiny"))
    parts = [score_case(110, g, 8, lane=0, dests=(ScoreDest.FILTER,), logit_share=0.0, report=ScoreDest.FILTER),
             score_case(111, g, 10, lane=1, dests=(ScoreDest.TOPK,), logit_share=0.0, report=ScoreDest.TOPK),
             score_case(112, g, 8, lane=2, dests=(), logit_share=1.0)]
    model, _ = compare_score("tiny", 113, case=tuple(list(column) for column in zip(*parts)), delay=30, pause=pause)
    kinds = set(model.values["kind"].tolist())
    assert {ResponseKind.KEPT.value, ResponseKind.RANK.value, ResponseKind.LOGIT.value} <= kinds


@pytest.mark.verilator
def test_score_model_lane_goes_on_while_its_result_is_reported():
    # A reported result, a query closed behind it (its result waits for the first one's end), LOGITs meanwhile.
    program = [score_instr(0, items=20, last=1, k=16, report=1, keep=1), score_instr(1, items=1, last=1, k=1, report=1),
               score_instr(2, dest=ScoreDest.RSP, items=40), score_instr(3, items=5, last=1, k=2, keep=1)]
    rng = np.random.default_rng(14)
    case = ([program], [rng.integers(-99, 99, 66)], [rng.integers(0, 1 << INDEX_BITS, 66)])
    model, _ = compare_score("tiny", 14, case=case, gaps=False)
    kinds = model.values["kind"]
    assert (np.diff(kinds[kinds != 0]) != 0).sum() >= 2     # RANKs and LOGITs interleave
