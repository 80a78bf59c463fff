"""Score unit (rpaccel.rtl.accel.score): random SCORE programs to top-k units, filter units and the responses in the
Amaranth simulator against the golden model, every holder's kept results read back as the fetcher does with the
release rule checked, planted bugs, parameter errors."""

from collections import deque
from itertools import pairwise

import numpy as np
import pytest
from amaranth.hdl import Signal
from amaranth.lib import data

from rpaccel.config import preset
from rpaccel.rtl.accel.isa import ChipGeometry, ErrorCode, Opcode, ResponseKind, ScoreDest
from rpaccel.rtl.accel.score import ScoreUnit
from rpaccel.rtl.filter import filter_out_layout
from rpaccel.sim.golden.score import filter_keep, random_program, response, score_instr, score_model
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

TINY = ChipGeometry(preset("tiny"))           # 4 lanes, 1 top-k unit (k_max 16), 1 filter unit (256 candidates)
TWO_UNITS = ChipGeometry(preset("tiny").with_settings(["topk_units=2"]))
TWO_FILTERS = ChipGeometry(preset("tiny").with_settings(["filter_units=2"]))
ODD_K = ChipGeometry(preset("tiny").with_settings(["topk_units=3", "k_max=12"]))  # banks of 12 in 256 places
# Filters of 8 candidates: random queries of up to 24 overflow; filter banks smaller than top-k ones.
SMALL_FILTERS = ChipGeometry(preset("tiny").with_settings(["topk_units=2", "filter_units=2", "filter_capacity=8"]))

#: Cycles within which the unit must be idle once every input is in and every output out (a filter unit's
#: selection of a query nobody waits for takes about 1,100).
IDLE_WITHIN = 4000


def run_score(geometry, programs, logits, indices, *, pause=0.3, seed=0, hold=60, dut=None, processes=(),
              max_cycles=200_000):
    """Run the programs on a :class:`ScoreUnit`, acting as the fetcher for the survivors; return the errors found.

    Every stream gets random idle cycles or back-pressure (``pause``). The fetcher reads each kept result of every
    holder (top-k units, then filter units) once ``results_done`` shows it (position 0 names the query: indices are
    distinct), reads it again after a random delay (below ``hold`` cycles) and then releases it, so a result written
    too early shows as a changed read; it also checks in every cycle that no holder is more than two kept results
    ahead of its releases. ``processes`` run alongside.
    """
    dut = ScoreUnit(geometry) if dut is None else dut
    expected = score_model(geometry, programs, logits, indices)
    rng = np.random.default_rng(seed)
    errors = []
    got = []
    holders, lanes = geometry.holders, len(programs)
    finished = {"responses": False, "survivors": False, "senders": 0}

    def name(holder):
        return f"filter {holder - geometry.units}" if holder >= geometry.units else f"unit {holder}"

    def sender(stream, values, salt):
        async def send(ctx):
            await StreamSource(stream, pause=pause, seed=seed * 101 + salt).send(ctx, values)
            finished["senders"] += 1
        return send

    senders = []
    for lane in range(lanes):
        cols = geometry.engine.lane_cols(lane)
        words = [[logit, *rng.integers(-(1 << 31), 1 << 31, cols - 1).tolist()] for logit in logits[lane]]
        senders += [sender(dut.cmd[lane], programs[lane], 3 * lane),
                    sender(getattr(dut, f"logits{lane}"), words, 3 * lane + 1),
                    sender(dut.index[lane], indices[lane], 3 * lane + 2)]

    async def receive(ctx):
        count = sum(len(replies) for replies in expected.responses.values())
        got.extend(await StreamSink(dut.rsp, pause=pause, seed=seed * 101 + 99).receive(ctx, count))
        finished["responses"] = True

    async def read(ctx, holder, r, count):
        values = []
        for position in range(count):
            ctx.set(dut.surv_addr, {"unit": holder, "bank": r % 2, "position": position})
            await ctx.tick()
            values.append(ctx.get(dut.surv_data))
        return values

    async def fetcher(ctx):
        queues = [{} for _ in range(holders)]
        for holder, results in enumerate(expected.kept):
            for result in results:
                queues[holder].setdefault(result.lane, deque()).append(result)
        seen, released = [0] * holders, [0] * holders
        waiting = [deque() for _ in range(holders)]     # per holder, in order: [delay, r, indices]
        left = sum(len(results) for results in expected.kept)
        while left or any(waiting):
            for holder in range(holders):
                done = ctx.get(dut.results_done[holder])
                error = f"{name(holder)}: {done} results done, only {released[holder]} released"
                if (done - released[holder]) % 256 > 2 and error not in errors:
                    errors.append(error)
                if done != seen[holder] % 256:
                    seen[holder] += 1
                    r = seen[holder]
                    first = (await read(ctx, holder, r, 1))[0]
                    matches = [q for q in queues[holder].values() if q and q[0].indices[0] == first]
                    if matches:
                        result = matches[0].popleft()
                        values = await read(ctx, holder, r, len(result.indices))
                        if values != result.indices:
                            errors.append(f"{name(holder)} result {r} (tag {result.tag}): {values} != "
                                          f"{result.indices}")
                    else:
                        errors.append(f"{name(holder)} result {r}: first index {first} is no query's")
                        values = [first]
                    waiting[holder].append([int(rng.integers(0, hold)), r, values])
                    left -= 1
            pulses = [0] * holders
            for holder, entries in enumerate(waiting):
                for entry in entries:
                    entry[0] -= 1
                if entries and entries[0][0] < 0:
                    _, r, values = entries.popleft()
                    again = await read(ctx, holder, r, len(values))
                    if again != values:
                        errors.append(f"{name(holder)} result {r} overwritten before its release: {values} -> "
                                      f"{again}")
                    pulses[holder] = 1
                    released[holder] += 1
            for holder in range(holders):
                ctx.set(dut.release[holder], pulses[holder])
            await ctx.tick()
            for holder in range(holders):
                ctx.set(dut.release[holder], 0)
        finished["survivors"] = True

    async def watch_idle(ctx):
        # Once every input is in, the unit may not say idle while a response is still to come.
        sent, count = 0, sum(len(replies) for replies in expected.responses.values())
        async for _, _, idle, valid, ready in ctx.tick().sample(dut.idle, dut.rsp.valid, dut.rsp.ready):
            sent += valid and ready
            error = "idle with responses still to come"
            if idle and sent < count and finished["senders"] == len(senders) and error not in errors:
                errors.append(error)

    async def final(ctx):
        # A query neither kept nor reported shows only as the unit going idle: wait for that, within a bound.
        while not (finished["responses"] and finished["survivors"] and finished["senders"] == len(senders)):
            await ctx.tick()
        for _ in range(IDLE_WITHIN):
            if ctx.get(dut.idle):
                break
            await ctx.tick()
        await ctx.tick().repeat(4)
        state = {"idle": ctx.get(dut.idle), "busy": ctx.get(dut.busy), "topk_busy": ctx.get(dut.topk_busy),
                 "filter_busy": ctx.get(dut.filter_busy),
                 "results_done": [ctx.get(dut.results_done[holder]) for holder in range(holders)]}
        want = {"idle": 1, "busy": 0, "topk_busy": 0, "filter_busy": 0, "results_done": expected.results_done}
        if state != want:
            errors.append(f"at the end {state}, expected {want}")

    run_simulation(dut, [*senders, receive, fetcher, final], processes=[watch_idle, *processes], max_cycles=max_cycles,
                   name="score")
    by_tag = {}
    for reply in got:
        by_tag.setdefault(reply["tag"], []).append(reply)
    for tag in sorted(set(by_tag) | set(expected.responses)):
        if by_tag.get(tag) != expected.responses.get(tag):
            errors.append(f"tag {tag}: responses {by_tag.get(tag)} != {expected.responses.get(tag)}")
    return errors


# --- golden model -------------------------------------------------------------------------------------------

def test_golden_model_on_a_hand_written_program():
    programs = [
        [score_instr(1, dest=ScoreDest.RSP, items=2, last=1),
         score_instr(2, unit=0, items=2),
         score_instr(3, unit=0, items=3, last=1, k=2, keep=1, report=1)],
        [score_instr(4, lane=1, unit=0, items=1, last=1, k=4, keep=1)],
        [score_instr(5, lane=2, dest=ScoreDest.FILTER, items=3),
         score_instr(6, lane=2, dest=ScoreDest.FILTER, items=2, last=1, k=3, keep=1, report=1)],
    ]
    logits = [[5, -7, 10, 3, 10, 2, 9], [1], [5, 9, 5, 9, 1]]
    indices = [[100, 101, 102, 103, 104, 105, 106], [7], [50, 51, 52, 53, 54]]
    outcome = score_model(TINY, programs, logits, indices)
    assert outcome.responses == {
        1: [response(ResponseKind.LOGIT, 1, 5, 100, 0), response(ResponseKind.LOGIT, 1, -7, 101, 1)],
        3: [response(ResponseKind.RANK, 3, 10, 102, 0), response(ResponseKind.RANK, 3, 10, 104, 1)],
        # The three best as a set, in arrival order: of the two 5s the lower index.
        6: [response(ResponseKind.KEPT, 6, 0, 50, 0), response(ResponseKind.KEPT, 6, 0, 51, 0),
            response(ResponseKind.KEPT, 6, 0, 53, 1)],
    }
    assert [[(r.lane, r.tag, r.indices) for r in results] for results in outcome.kept] == [
        [(0, 3, [102, 104]), (1, 4, [7])], [(2, 6, [50, 51, 53])]]
    assert outcome.results_done == [2, 1]


def test_golden_filter_keeps_the_first_of_equal_pairs_and_flags_an_overflow():
    assert filter_keep([3, 3, 3, 4], 2, [7, 7, 1, 9], 4) == ([1, 9], False)
    assert filter_keep([3, 3, 3, 4], 3, [7, 7, 1, 9], 4) == ([7, 1, 9], False)
    assert filter_keep([1, 2, 3, 9], 5, [0, 1, 2, 3], 3) == ([0, 1, 2], True)   # 9 came after the unit was full
    # An overflowing query's ERROR replaces its last KEPT, and is answered without report too.
    programs = [[score_instr(8, dest=ScoreDest.FILTER, items=20, last=1, k=2, keep=1, report=1)],
                [score_instr(9, lane=1, dest=ScoreDest.FILTER, unit=1, items=9, last=1, k=8)]]
    logits = [list(range(20)), [0] * 9]
    outcome = score_model(SMALL_FILTERS, programs, logits, [list(range(20)), list(range(100, 109))])

    def error(tag):
        return response(ResponseKind.ERROR, tag, 0, Opcode.SCORE.value, 1, ErrorCode.ITEMS)

    assert outcome.responses == {8: [response(ResponseKind.KEPT, 8, 0, 6, 0), error(8)], 9: [error(9)]}
    assert outcome.results_done == [0, 0, 1, 0] and outcome.kept[2][0].indices == [6, 7]


@pytest.mark.parametrize("programs, logits, message", [
    ([[score_instr(0, items=0)]], [[]], "has 0 items"),
    ([[score_instr(0, items=2, last=1, k=1)]], [[1]], "takes items beyond"),
    ([[score_instr(0, items=1, unit=1, last=1, k=1)]], [[1]], "names top-k unit 1"),
    ([[score_instr(0, dest=ScoreDest.FILTER, items=1, unit=1, last=1, k=1)]], [[1]], "names filter unit 1"),
    ([[score_instr(0, items=1, last=1, k=17)]], [[1]], "top-k query with k = 17"),
    ([[score_instr(0, dest=ScoreDest.FILTER, items=1, last=1, k=257)]], [[1]], "filter query with k = 257"),
    ([[score_instr(0, items=1)]], [[1]], "leaves a query open on top-k unit 0"),
    ([[score_instr(0, dest=ScoreDest.FILTER, items=1)]], [[1]], "leaves a query open on filter unit 0"),
    ([[score_instr(0, dest=ScoreDest.RSP, items=1)]], [[1, 2]], "take 1 items, not the 2"),
])
def test_golden_model_refuses_bad_programs(programs, logits, message):
    with pytest.raises(ValueError, match=message):
        score_model(TINY, programs, logits, [list(range(len(lane))) for lane in logits])


# --- the unit in the simulator ------------------------------------------------------------------------------

@pytest.mark.parametrize("geometry, seed, pause", [
    (TINY, 1, 0.3), (TINY, 2, 0.6), (TWO_UNITS, 3, 0.3), (TWO_UNITS, 4, 0.5), (TWO_FILTERS, 5, 0.1),
    (TWO_FILTERS, 6, 0.4), (SMALL_FILTERS, 7, 0.3), (ODD_K, 8, 0.3),
], ids=["tiny-a", "tiny-b", "2u-a", "2u-b", "2f-a", "2f-b", "2u2f-cap8", "3u-k12"])
def test_random_programs_with_stalls(geometry, seed, pause):
    programs, logits, indices = random_program(np.random.default_rng(seed), geometry, blocks=12)
    kinds = {reply["kind"] for replies in score_model(geometry, programs, logits, indices).responses.values()
             for reply in replies}
    assert {ResponseKind.LOGIT, ResponseKind.RANK, ResponseKind.KEPT} <= kinds
    assert (ResponseKind.ERROR in kinds) == (geometry is SMALL_FILTERS)   # only 8-candidate filters overflow
    assert run_score(geometry, programs, logits, indices, pause=pause, seed=seed) == []


def test_random_programs_without_stalls():
    programs, logits, indices = random_program(np.random.default_rng(4), SMALL_FILTERS, blocks=12)
    assert run_score(SMALL_FILTERS, programs, logits, indices, pause=0.0, seed=4) == []


def test_busy_until_a_filter_result_has_left():
    # The kept candidate comes last: the filter unit has finished before its KEPT leaves the response slice.
    programs = [[score_instr(0, dest=ScoreDest.FILTER, items=6, last=1, k=1, report=1)]]
    assert run_score(TINY, programs, [[7, 1, 2, 0, 3, 9]], [list(range(10, 16))], pause=0.0) == []


def transfers(stream, cycles):
    """A process appending to ``cycles`` the cycle of every transfer on ``stream``."""
    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(stream.valid, stream.ready):
            if valid and ready:
                cycles.append(cycle)
            cycle += 1
    return monitor


@pytest.mark.parametrize("dest", [ScoreDest.TOPK, ScoreDest.FILTER])
def test_a_lane_takes_one_item_per_cycle(dest):
    # Two SCOREs of one query, one to the responses, a second query: gaps only where a query asks for its unit.
    program = [score_instr(0, dest=dest, items=20), score_instr(1, dest=dest, items=20, last=1, k=16, keep=1),
               score_instr(2, dest=ScoreDest.RSP, items=20),
               score_instr(3, dest=dest, items=20, last=1, k=5, keep=1)]
    rng = np.random.default_rng(5)
    logits, indices = [rng.integers(-100, 100, 80).tolist()], [rng.choice(1 << 16, 80, replace=False).tolist()]
    cycles = []
    dut = ScoreUnit(TINY)
    assert run_score(TINY, [program], logits, indices, pause=0.0, dut=dut,
                     processes=[transfers(dut.logits0, cycles)]) == []
    gaps = [b - a - 1 for a, b in pairwise(cycles) if b - a > 1]
    assert len(cycles) == 80 and sum(gaps) <= 2, gaps


def test_responses_merge_round_robin():
    # Every lane sends LOGITs as fast as it can: the merged stream serves them in turn, one response per cycle.
    lanes, items = TINY.lanes, 16
    programs = [[score_instr(lane, lane=lane, dest=ScoreDest.RSP, items=items)] for lane in range(lanes)]
    logits = [list(range(items)) for _ in range(lanes)]
    indices = [list(range(lane * items, (lane + 1) * items)) for lane in range(lanes)]
    cycles, order = [], []
    dut = ScoreUnit(TINY)

    async def tags(ctx):
        async for _, _, valid, ready, tag in ctx.tick().sample(dut.rsp.valid, dut.rsp.ready, dut.rsp.payload.tag):
            if valid and ready:
                order.append(tag)

    assert run_score(TINY, programs, logits, indices, pause=0.0, dut=dut,
                     processes=[transfers(dut.rsp, cycles), tags]) == []
    assert cycles == list(range(cycles[0], cycles[0] + lanes * items))
    assert all(sorted(order[n:n + lanes]) == list(range(lanes)) for n in range(0, lanes * items, lanes)), order


class _ThreeAhead(ScoreUnit):
    """Planted bug: a unit writes a third kept result before the fetcher has released the first."""

    _AHEAD = 3


@pytest.mark.parametrize("dest", [ScoreDest.TOPK, ScoreDest.FILTER])
def test_scoreboard_catches_a_result_written_before_its_bank_is_released(dest):
    programs = [[score_instr(tag, dest=dest, unit=0, items=4, last=1, k=3, keep=1) for tag in range(6)]]
    logits = [list(range(24))]
    indices = [list(range(1000, 1024))]
    # The fetcher holds each result longer than a filter unit takes to select the next ones.
    errors = run_score(TINY, programs, logits, indices, pause=0.0, hold=5000, dut=_ThreeAhead(TINY))
    assert any("released" in error for error in errors), errors
    assert run_score(TINY, programs, logits, indices, pause=0.0, hold=5000) == []


class _OverflowUnnoticed(ScoreUnit):
    """Planted bug: a filter unit's overflow flag is lost on the way to its responses."""

    def _filter_result(self, m, holder, result, closing, busy):
        words = data.View(filter_out_layout(), Signal(filter_out_layout()))
        valid = Signal(name=f"unit{holder}_planted_valid")
        ready = Signal(name=f"unit{holder}_planted_ready")
        m.d.comb += [valid.eq(result.valid), words.eq(result.payload), words.error.eq(0), result.ready.eq(ready)]
        planted = _Port(valid, ready, words)
        return super()._filter_result(m, holder, planted, closing, busy)


class _Port:
    """A stream's ``valid``, ``ready`` and ``payload`` as attributes (what ``_filter_result`` reads of one)."""

    def __init__(self, valid, ready, payload):
        self.valid, self.ready, self.payload = valid, ready, payload


def test_scoreboard_catches_an_overflow_not_reported():
    programs = [[score_instr(0, dest=ScoreDest.FILTER, items=20, last=1, k=4, keep=1, report=1),
                 score_instr(1, dest=ScoreDest.FILTER, items=6, last=1, k=4, keep=1)]]
    logits, indices = [list(range(26))], [list(range(500, 526))]
    errors = run_score(SMALL_FILTERS, programs, logits, indices, pause=0.2, dut=_OverflowUnnoticed(SMALL_FILTERS))
    assert any("tag 0: responses" in error for error in errors), errors
    assert run_score(SMALL_FILTERS, programs, logits, indices, pause=0.2) == []


def test_geometry_must_be_a_chip_geometry():
    with pytest.raises(TypeError, match="must be a ChipGeometry, not 'tiny'"):
        ScoreUnit("tiny")
