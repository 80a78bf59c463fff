"""The joiner (rpaccel.rtl.accel.join): Amaranth-simulator scoreboard against sim.golden.join on random jobs across
lanes and splits, both interaction modes, pooled vectors early and late, idle cycles and back-pressure on every
stream; the FIFO taking pooled vectors before any bottom block, full throughput into the interaction unit, a lane's
jobs going ahead of another lane's waiting one, busy and idle, a planted bug, and the configuration's join
buffers."""

from dataclasses import replace

import numpy as np
import pytest
from configs import SMALL16

from rpaccel.config import ConfigError, preset
from rpaccel.host.driver.interaction import output_words
from rpaccel.rtl.accel import join as rtl_join
from rpaccel.rtl.accel.isa import ChipGeometry
from rpaccel.rtl.accel.join import JOB_QUEUE_DEPTH, JoinUnit, absorbs, output_buffer_words, pooled_words
from rpaccel.sim.golden.interaction import random_items
from rpaccel.sim.golden.join import bottom_words, job_value, join_golden, pooled_values
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

TINY = ChipGeometry(preset("tiny"))


def random_job(rng, g, split, *, items=None, mode=None, vectors=None, dim=None):
    """A job on a random lane of ``split`` with its bottom output and pooled vectors."""
    job = {"lane": int(rng.integers(0, split)),
           "items": int(rng.integers(1, 5)) if items is None else items,
           "mode": str(rng.choice(("dot", "cat"))) if mode is None else mode,
           "vectors": int(rng.integers(1, g.max_vectors + 1)) if vectors is None else vectors,
           "dim": int(rng.integers(1, g.max_dim + 1)) if dim is None else dim,
           "m": int(rng.integers(1, 1 << 16)), "s": int(rng.integers(0, 24))}
    values = random_items(rng, job["items"], job["vectors"], job["dim"])
    return job, values[:, 0], values[:, 1:]


def run(g, split, jobs, bottom, pooled, *, pause=0.3, seed=0, pooled_delay=0, bottom_delay=0,
        wait_for_pooled=False, bottom_after=None, receive_after=None, max_cycles=200_000):
    """Run the jobs through a JoinUnit; return per lane the words received, the cycles of the interaction unit's
    input, and what the busy/idle monitor saw. ``bottom_after`` (``receive_after``): ``{lane: other}``, the lane's
    bottom words are sent (its interaction words taken) only once lane ``other`` has received all of its own."""
    dut = JoinUnit(g)
    rng = np.random.default_rng(seed)
    lane_words = {lane: [] for lane in range(g.lanes)}
    for job, b in zip(jobs, bottom):
        lane_words[job["lane"]].extend(bottom_words(g, split, job["lane"], b, rng))
    pooled_stream = [value for job, p in zip(jobs, pooled) for value in pooled_values(g, p, rng)]
    expected = join_golden(g, jobs, bottom, pooled)
    got = {lane: [] for lane in range(g.lanes)}
    seen = {"pooled_done": False, "busy": 0, "interaction_busy": 0, "unit_in": [], "unit_ready": [],
            "idle_end": None}

    async def send_jobs(ctx):
        ctx.set(dut.split, split)
        await StreamSource(dut.jobs, pause=pause, seed=seed + 1).send(ctx, [job_value(job) for job in jobs])

    async def send_pooled(ctx):
        if pooled_delay:
            await ctx.tick().repeat(pooled_delay)
        await StreamSource(dut.pooled, pause=pause, seed=seed + 2).send(ctx, pooled_stream)
        seen["pooled_done"] = True

    async def after(ctx, lane, waits):
        if lane in (waits or {}):
            other = waits[lane]
            while len(got[other]) < len(expected[other]):
                await ctx.tick()

    def send_bottom(lane):
        async def bench(ctx):
            if bottom_delay:
                await ctx.tick().repeat(bottom_delay)
            if wait_for_pooled:
                while not seen["pooled_done"]:
                    await ctx.tick()
            await after(ctx, lane, bottom_after)
            await StreamSource(getattr(dut, f"bottom{lane}"), pause=pause, seed=seed + 10 + lane).send(
                ctx, lane_words[lane])
        return bench

    def receive(lane):
        async def bench(ctx):
            await after(ctx, lane, receive_after)
            words = await StreamSink(dut.inter[lane], pause=pause, seed=seed + 20 + lane).receive(
                ctx, len(expected[lane]))
            got[lane].extend(words)
        return bench

    async def monitor(ctx):
        unit = dut.interaction.i
        cycle = 0
        async for _, _, busy, unit_busy, valid, ready in ctx.tick().sample(dut.busy, dut.interaction_busy,
                                                                           unit.valid, unit.ready):
            seen["busy"] += busy
            seen["interaction_busy"] += unit_busy
            if valid and ready:
                seen["unit_in"].append(cycle)
            if ready:
                seen["unit_ready"].append(cycle)
            cycle += 1

    lanes = sorted({job["lane"] for job in jobs})
    benches = [send_jobs, send_pooled, *(send_bottom(lane) for lane in lanes), *(receive(lane) for lane in lanes)]

    async def finish(ctx):
        # After every output word: the joiner and the interaction unit become idle.
        while not all(len(got[lane]) == len(expected[lane]) for lane in lanes):
            await ctx.tick()
        for wait in range(8):
            if ctx.get(dut.idle):
                seen["idle_end"] = (wait, ctx.get(dut.busy), ctx.get(dut.interaction_busy))
                assert not any(ctx.get(port.valid) for port in dut.inter), "a word beyond the expected ones"
                break
            await ctx.tick()

    run_simulation(dut, [*benches, finish], processes=[monitor], max_cycles=max_cycles, name="join")
    for lane in range(g.lanes):
        np.testing.assert_array_equal(np.array(got[lane], dtype=np.int64).reshape(-1, g.rows), expected[lane],
                                      err_msg=f"lane {lane} in split {split}")
    return seen


# --- the scoreboard ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", [1, 2, 4])
def test_random_jobs_across_lanes_bit_exact_under_stalls(split):
    rng = np.random.default_rng(split)
    cases = [random_job(rng, TINY, split, items=int(rng.integers(1, 7))) for _ in range(24)]
    # The extremes: F = max_tables + 1 at d = max_emb_dim, F = 1 (no pooled vectors), d = 1, several n-tiles.
    cases.append(random_job(rng, TINY, split, items=2, mode="dot", vectors=TINY.max_vectors, dim=TINY.max_dim))
    cases.append(random_job(rng, TINY, split, items=3, mode="cat", vectors=TINY.max_vectors, dim=TINY.max_dim))
    cases.append(random_job(rng, TINY, split, items=3, vectors=1, dim=7))
    cases.append(random_job(rng, TINY, split, items=4, vectors=3, dim=1))
    order = rng.permutation(len(cases))
    jobs, bottom, pooled = zip(*(cases[k] for k in order))
    seen = run(TINY, split, jobs, bottom, pooled, pause=0.3, seed=10 * split)
    assert seen["idle_end"] is not None and seen["idle_end"][1:] == (0, 0)
    assert seen["busy"] and seen["interaction_busy"]


@pytest.mark.parametrize("settings, split", [(["array_rows=8"], 4), (["array_rows=8"], 1),
                                             (["array_rows=16", "array_cols=8", "block=2"], 2), (["splits=1"], 1)])
def test_words_wider_than_a_sub_array(settings, split):
    # Several n-tiles per interaction word (rows / c = 2 .. 4), one word per vector (rows = max_emb_dim), one lane.
    g = ChipGeometry(preset("tiny").with_settings(settings))
    rng = np.random.default_rng(g.rows + split)
    jobs, bottom, pooled = zip(*(random_job(rng, g, split) for _ in range(10)))
    run(g, split, jobs, bottom, pooled, pause=0.3, seed=g.rows)


@pytest.mark.parametrize("split", [1, 4])
def test_small_preset(split):
    # The chip's default configuration: 16-element words, up to 33 vectors of up to 64 elements.
    g = ChipGeometry(SMALL16)
    rng = np.random.default_rng(40 + split)
    jobs, bottom, pooled = zip(*(random_job(rng, g, split, items=int(rng.integers(1, 4))) for _ in range(8)))
    run(g, split, jobs, bottom, pooled, pause=0.3, seed=40 + split)


@pytest.mark.parametrize("pooled_delay, bottom_delay", [(0, 400), (600, 0)])
def test_pooled_vectors_early_and_late(pooled_delay, bottom_delay):
    rng = np.random.default_rng(pooled_delay + bottom_delay)
    jobs, bottom, pooled = zip(*(random_job(rng, TINY, 4) for _ in range(12)))
    run(TINY, 4, jobs, bottom, pooled, pause=0.2, seed=3, pooled_delay=pooled_delay, bottom_delay=bottom_delay)


def test_largest_job_fills_the_bottom_buffer():
    rng = np.random.default_rng(5)
    items = TINY.engine.max_acc_rows
    jobs, bottom, pooled = zip(random_job(rng, TINY, 1, items=items, mode="dot", vectors=1, dim=6),
                               random_job(rng, TINY, 1, items=items, mode="cat", vectors=1, dim=9),
                               random_job(rng, TINY, 1, items=2, mode="dot", vectors=2, dim=3))
    run(TINY, 1, jobs, bottom, pooled, pause=0.1, seed=5)


def test_fifo_takes_every_pooled_vector_before_any_bottom_block():
    # The embedding unit never waits on the joiner while the lane's FIFO has room: every pooled vector of the
    # queued jobs (all on lane 1) goes in while no bottom block has come (the bottom sources start only once the
    # pooled source is done), up to the FIFO's last word.
    rng = np.random.default_rng(6)
    jobs, bottom, pooled = zip(*(random_job(rng, TINY, 2, items=4, vectors=5, dim=7)
                                 for _ in range(JOB_QUEUE_DEPTH)))
    for job in jobs:
        job["lane"] = 1
    words = sum(pooled_words(TINY, job["items"], job["vectors"], job["dim"]) for job in jobs)
    assert words == TINY.config.join_buffer_words
    run(TINY, 2, jobs, bottom, pooled, pause=0.0, seed=6, wait_for_pooled=True, max_cycles=20_000)


def test_one_word_per_cycle_into_the_interaction_unit():
    # With the pooled vectors ahead and no stalls outside, every cycle the interaction unit is ready, from its first
    # word to its last, takes a word: no bubble inside a job or between jobs (bank switches included).
    rng = np.random.default_rng(7)
    jobs, bottom, pooled = zip(*(random_job(rng, TINY, 1, items=6, mode="cat", vectors=3, dim=8)
                                 for _ in range(4)))
    seen = run(TINY, 1, jobs, bottom, pooled, pause=0.0, seed=7, bottom_delay=60)
    first, last = seen["unit_in"][0], seen["unit_in"][-1]
    idle = sorted(set(seen["unit_ready"]) - set(seen["unit_in"]))
    assert [cycle for cycle in idle if first <= cycle <= last] == []
    assert len(seen["unit_in"]) == sum(job["items"] * job["vectors"] * 2 for job in jobs)


@pytest.mark.parametrize("wait", ["bottom", "receive"])
def test_a_lane_goes_ahead_of_another_lanes_waiting_job(wait):
    # Lane 1's jobs come first in fetch order, and lane 1 waits for lane 0: its bottom blocks come (or it takes its
    # interaction words) only once lane 0 has received all of its output. Lane 1's pooled vectors fit its FIFO,
    # its output does not fit its output buffer. The lanes' jobs go out independently, so lane 0's are sent while
    # lane 1's head job waits for its bottom block (or for room in lane 1's output buffer); a joiner serving the
    # jobs in fetch order, or with one output path for every lane, waits forever.
    rng = np.random.default_rng(9)
    jobs, bottom, pooled = zip(*(random_job(rng, TINY, 2, items=6, mode="cat", vectors=3, dim=TINY.max_dim)
                                 for _ in range(2)),
                               *(random_job(rng, TINY, 2, items=int(rng.integers(1, 5))) for _ in range(4)))
    for number, job in enumerate(jobs):
        job["lane"] = int(number < 2)
    ahead = [job for job in jobs if job["lane"] == 1]
    assert sum(pooled_words(TINY, job["items"], job["vectors"], job["dim"]) for job in ahead) <= \
        TINY.config.join_buffer_words
    assert sum(output_buffer_words(TINY, job["items"], job["mode"], job["vectors"], job["dim"]) for job in ahead) > \
        TINY.config.join_output_words
    run(TINY, 2, jobs, bottom, pooled, pause=0.2, seed=9, max_cycles=30_000, **{f"{wait}_after": {1: 0}})


def test_scoreboard_catches_an_n_tile_order_bug(monkeypatch):
    # Planted bug: the loader takes the bottom block item-major (n-tiles inner) instead of n-tile-major.
    def item_major(m, take, item, offset, last_item, last_tile, cols):
        with m.If(take):
            with m.If(last_tile):
                m.d.sync += [offset.eq(0), item.eq(item + 1)]
            with m.Else():
                m.d.sync += offset.eq(offset + cols)
        return last_item & last_tile

    monkeypatch.setattr(rtl_join, "_advance_tiles", item_major)
    rng = np.random.default_rng(8)
    jobs, bottom, pooled = zip(random_job(rng, TINY, 4, items=3, mode="cat", vectors=2, dim=6))
    with pytest.raises(AssertionError, match="lane"):
        run(TINY, 4, jobs, bottom, pooled, pause=0.0, seed=8, max_cycles=5_000)


# --- golden model, parameters ------------------------------------------------------------------------------------

def test_bottom_words_are_n_tile_major():
    g = TINY
    bottom = np.arange(2 * 5).reshape(2, 5) - 4
    words = bottom_words(g, 4, 3, bottom)        # split 4: 2 columns; lane 3 is 2 wide
    assert words == [[-4, -3], [1, 2], [-2, -1], [3, 4], [0, 0], [5, 0]]
    assert output_words("dot", 3, 5, g.rows) == 2


def test_absorbs_fills_the_output_buffer_in_order_then_the_fifo():
    # tiny: 128-word FIFO and output buffer; cat of 3 vectors of 16: 12 output words and 8 FIFO words an item.
    assert output_buffer_words(TINY, 1, "cat", 3, 16) == 12 and pooled_words(TINY, 1, 3, 16) == 8
    job = ("cat", 3, 16)
    assert absorbs(TINY, [(10, *job)])                          # 120 output words held, nothing waits
    assert absorbs(TINY, [(10, *job), (16, *job)])              # then 16 items wait: 128 FIFO words
    assert not absorbs(TINY, [(10, *job), (17, *job)])
    # The lane's items go out in order: once one waits, the later ones wait too, small as they are.
    assert absorbs(TINY, [(11, *job), (15, *job)])              # 10 held; 1 + 15 wait: 128 words
    assert not absorbs(TINY, [(11, *job), (15, *job), (1, "dot", 2, 1)])
    # Items whose bottom block is not in wait whatever the room: here all but the first job's.
    assert absorbs(TINY, [(10, *job), (16, *job)], sendable=10)
    assert not absorbs(TINY, [(10, *job), (16, *job)], sendable=9)
    assert absorbs(TINY, [(16, *job)], sendable=0) and not absorbs(TINY, [(17, *job)], sendable=0)


def test_joiner_needs_a_chip_geometry():
    with pytest.raises(TypeError, match="Joiner geometry must be a ChipGeometry, not 'tiny'"):
        JoinUnit("tiny")


def test_join_buffers_are_powers_of_two_holding_an_item():
    with pytest.raises(ConfigError, match="join_buffer_words must be a power of two, not 100"):
        replace(preset("tiny"), join_buffer_words=100)
    with pytest.raises(ConfigError, match="join_output_words must be a power of two, not 100"):
        replace(preset("tiny"), join_output_words=100)
    # tiny: 8 tables of 16 elements in words of 4: 32 FIFO words; cat of 9 vectors of 16: 36 output words.
    with pytest.raises(ConfigError, match=r"join_buffer_words must hold one item of 8 tables of 16 elements \(32 "
                                          r"words\), not 16"):
        replace(preset("tiny"), join_buffer_words=16)
    with pytest.raises(ConfigError, match=r"join_output_words must hold one item of 8 tables of 16 elements \(36 "
                                          r"words\), not 32"):
        replace(preset("tiny"), join_output_words=32)
    assert [preset(name).join_buffer_words for name in ("tiny", "small", "paper")] == [128, 1024, 16384]
    assert [preset(name).join_output_words for name in ("tiny", "small", "paper")] == [128, 1024, 16384]
