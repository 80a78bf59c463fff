"""Score unit (rpaccel.rtl.accel.score): random SCORE programs in the Amaranth simulator against the golden model,
the survivors read back as the fetcher does with the release rule checked, a planted bug, parameter errors."""

from collections import deque
from itertools import pairwise

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.rtl.accel.isa import ChipGeometry, ResponseKind, ScoreDest
from rpaccel.rtl.accel.score import ScoreUnit
from rpaccel.sim.golden.score import random_program, response, score_instr, score_model
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

TINY = ChipGeometry(preset("tiny"))                                         # 4 lanes, 1 top-k unit
TWO_UNITS = ChipGeometry(preset("tiny").with_settings(["topk_units=2"]))    # 4 lanes, 2 top-k units
ODD_K = ChipGeometry(preset("tiny").with_settings(["topk_units=3", "k_max=12"]))  # banks of 12 in 16 places


def run_score(geometry, programs, logits, indices, *, pause=0.3, seed=0, dut=None, processes=(), max_cycles=40_000):
    """Run the programs on a :class:`ScoreUnit`, acting as the fetcher for the survivors; return the errors found.

    Every stream gets random idle cycles or back-pressure (``pause``). The fetcher reads each kept result once
    ``results_done`` shows it (position 0 names the query: indices are distinct), reads it again after a random
    delay and then releases it, so a result written too early shows as a changed read; it also checks in every
    cycle that no unit is more than two kept results ahead of its releases. ``processes`` run alongside.
    """
    dut = ScoreUnit(geometry) if dut is None else dut
    expected = score_model(geometry, programs, logits, indices)
    rng = np.random.default_rng(seed)
    errors = []
    got = []
    units, lanes = geometry.units, len(programs)
    finished = {"responses": False, "survivors": False}

    def sender(stream, values, salt):
        async def send(ctx):
            await StreamSource(stream, pause=pause, seed=seed * 101 + salt).send(ctx, values)
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

    async def read(ctx, unit, r, count):
        values = []
        for position in range(count):
            ctx.set(dut.surv_addr, {"unit": unit, "bank": r % 2, "position": position})
            await ctx.tick()
            values.append(ctx.get(dut.surv_data))
        return values

    async def fetcher(ctx):
        queues = [{} for _ in range(units)]
        for unit, results in enumerate(expected.kept):
            for result in results:
                queues[unit].setdefault(result.lane, deque()).append(result)
        seen, released = [0] * units, [0] * units
        waiting = [deque() for _ in range(units)]     # per unit, in order: [delay, r, indices]
        left = sum(len(results) for results in expected.kept)
        while left or any(waiting):
            for unit in range(units):
                done = ctx.get(dut.results_done[unit])
                error = f"unit {unit}: {done} results done, only {released[unit]} released"
                if (done - released[unit]) % 256 > 2 and error not in errors:
                    errors.append(error)
                if done != seen[unit] % 256:
                    seen[unit] += 1
                    r = seen[unit]
                    best = (await read(ctx, unit, r, 1))[0]
                    matches = [q for q in queues[unit].values() if q and q[0].indices[0] == best]
                    if matches:
                        result = matches[0].popleft()
                        values = await read(ctx, unit, r, len(result.indices))
                        if values != result.indices:
                            errors.append(f"unit {unit} result {r} (tag {result.tag}): {values} != {result.indices}")
                    else:
                        errors.append(f"unit {unit} result {r}: best index {best} is no query's")
                        values = [best]
                    waiting[unit].append([int(rng.integers(0, 60)), r, values])
                    left -= 1
            pulses = [0] * units
            for unit, entries in enumerate(waiting):
                for entry in entries:
                    entry[0] -= 1
                if entries and entries[0][0] < 0:
                    _, r, values = entries.popleft()
                    again = await read(ctx, unit, r, len(values))
                    if again != values:
                        errors.append(f"unit {unit} result {r} overwritten before its release: {values} -> {again}")
                    pulses[unit] = 1
                    released[unit] += 1
            for unit in range(units):
                ctx.set(dut.release[unit], pulses[unit])
            await ctx.tick()
            for unit in range(units):
                ctx.set(dut.release[unit], 0)
        finished["survivors"] = True

    async def final(ctx):
        while not all(finished.values()):
            await ctx.tick()
        await ctx.tick().repeat(4)
        state = {"idle": ctx.get(dut.idle), "busy": ctx.get(dut.busy), "topk_busy": ctx.get(dut.topk_busy),
                 "results_done": [ctx.get(dut.results_done[unit]) for unit in range(units)]}
        want = {"idle": 1, "busy": 0, "topk_busy": 0, "results_done": expected.results_done}
        if state != want:
            errors.append(f"at the end {state}, expected {want}")

    run_simulation(dut, [*senders, receive, fetcher, final], processes=processes, max_cycles=max_cycles,
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
    ]
    logits = [[5, -7, 10, 3, 10, 2, 9], [1]]
    indices = [[100, 101, 102, 103, 104, 105, 106], [7]]
    outcome = score_model(TINY, programs, logits, indices)
    assert outcome.responses == {
        1: [response(ResponseKind.LOGIT, 1, 5, 100, 0), response(ResponseKind.LOGIT, 1, -7, 101, 1)],
        3: [response(ResponseKind.RANK, 3, 10, 102, 0), response(ResponseKind.RANK, 3, 10, 104, 1)],
    }
    assert [[(r.lane, r.tag, r.indices) for r in results] for results in outcome.kept] == [
        [(0, 3, [102, 104]), (1, 4, [7])]]
    assert outcome.results_done == [2]


@pytest.mark.parametrize("programs, logits, message", [
    ([[score_instr(0, items=0)]], [[]], "has 0 items"),
    ([[score_instr(0, items=2, last=1, k=1)]], [[1]], "takes items beyond"),
    ([[score_instr(0, items=1, unit=1, last=1, k=1)]], [[1]], "names top-k unit 1"),
    ([[score_instr(0, items=1, last=1, k=17)]], [[1]], "k = 17"),
    ([[score_instr(0, items=1)]], [[1]], "leaves a query open"),
    ([[score_instr(0, dest=ScoreDest.RSP, items=1)]], [[1, 2]], "take 1 items, not the 2"),
])
def test_golden_model_refuses_bad_programs(programs, logits, message):
    with pytest.raises(ValueError, match=message):
        score_model(TINY, programs, logits, [list(range(len(lane))) for lane in logits])


# --- the unit in the simulator ------------------------------------------------------------------------------

@pytest.mark.parametrize("geometry, seed, pause", [
    (TINY, 1, 0.3), (TINY, 2, 0.6), (TWO_UNITS, 3, 0.3), (TWO_UNITS, 4, 0.5), (TWO_UNITS, 5, 0.1), (ODD_K, 6, 0.3),
], ids=["tiny-a", "tiny-b", "2u-a", "2u-b", "2u-c", "3u-k12"])
def test_random_programs_with_stalls(geometry, seed, pause):
    programs, logits, indices = random_program(np.random.default_rng(seed), geometry, blocks=12)
    assert run_score(geometry, programs, logits, indices, pause=pause, seed=seed) == []


def test_random_programs_without_stalls():
    programs, logits, indices = random_program(np.random.default_rng(4), TWO_UNITS, blocks=12)
    assert run_score(TWO_UNITS, programs, logits, indices, pause=0.0, seed=4) == []


def transfers(stream, cycles):
    """A process appending to ``cycles`` the cycle of every transfer on ``stream``."""
    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(stream.valid, stream.ready):
            if valid and ready:
                cycles.append(cycle)
            cycle += 1
    return monitor


def test_a_lane_takes_one_item_per_cycle():
    # Two SCOREs of one query, one to the responses, a second query: gaps only where a query asks for its unit.
    program = [score_instr(0, unit=0, items=20), score_instr(1, unit=0, items=20, last=1, k=16, keep=1),
               score_instr(2, dest=ScoreDest.RSP, items=20), score_instr(3, unit=0, items=20, last=1, k=5, keep=1)]
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


def test_scoreboard_catches_a_result_written_before_its_bank_is_released():
    programs = [[score_instr(tag, unit=0, items=4, last=1, k=3, keep=1) for tag in range(6)]]
    logits = [list(range(24))]
    indices = [list(range(1000, 1024))]
    errors = run_score(TINY, programs, logits, indices, pause=0.0, dut=_ThreeAhead(TINY))
    assert any("released" in error for error in errors), errors
    assert run_score(TINY, programs, logits, indices, pause=0.0) == []


def test_geometry_must_be_a_chip_geometry():
    with pytest.raises(TypeError, match="must be a ChipGeometry, not 'tiny'"):
        ScoreUnit("tiny")
