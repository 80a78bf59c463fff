"""Lane front ends: random LANE programs through one front end alone in the Amaranth simulator (every stream
compared with a golden model, random idle inputs and back-pressure, waits on the weight loader's count, ``busy``
checked in every cycle, full throughput without stalls, a planted bug caught), and a front end in front of a real
MLP engine running a bottom and a top MLP through all four of its data streams."""

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from configs import SMALL16

from rpaccel.config import preset
from rpaccel.host.driver.codec import codec
from rpaccel.host.driver.mlp import layout_weights, plan_lane
from rpaccel.host.reference import mlp_forward
from rpaccel.rtl.accel.isa import ActSource, ChipGeometry, OutDest
from rpaccel.rtl.accel.lanes import LaneFrontEnd
from rpaccel.rtl.mlp import WAIT_BITS, MLPEngine, Op
from rpaccel.sim.golden.mlp import random_input, random_mlp
from rpaccel.sim.streams import StreamSink, StreamSource, payload_shape, run_simulation

TINY, SMALL = ChipGeometry(preset("tiny")), ChipGeometry(SMALL16)
MOD = 1 << WAIT_BITS
# (geometry, lane, split): every lane width and cut of tiny (rows 4; lanes 0 and 1 are 4 rows wide, 2 in split 4),
# and small's (16 rows, 8 in split 4).
CASES = [(TINY, 0, 1), (TINY, 1, 2), (TINY, 0, 4), (TINY, 1, 4), (TINY, 3, 4), (SMALL, 0, 4), (SMALL, 2, 4)]


def random_command(rng, g, lane, split, wait_weights):
    """A LANE command with every field random within what the front end must pass on unchanged."""
    ratio = g.rows // g.engine.splits[split].rows
    op = Op.INPUT if rng.random() < 0.5 else Op.LAYER
    src_words = int(rng.integers(1, 4))
    # INPUT: keep all cut words, or drop some of each item's (ktiles below src_words * ratio).
    ktiles = int(rng.integers(1, src_words * ratio + 1)) if op == Op.INPUT else int(rng.integers(1, 4))
    fields = {name: int(rng.integers(0, 1 << 16)) for name in ("stride", "in_base", "out_base", "acc_base", "w_base")}
    cmd = {"op": int(op), "wait_inputs": int(rng.integers(0, MOD)), "wait_layers": int(rng.integers(0, MOD)),
           "items": int(rng.integers(1, 6)), "ktiles": ktiles, "ntiles": int(rng.integers(1, 4)),
           "params": {"m": int(rng.integers(0, 1 << 16)), "s": int(rng.integers(0, 64)),
                      "relu": int(rng.integers(0, 2)), "raw": int(rng.integers(0, 2))},
           "to_output": int(rng.random() < 0.7), **fields}
    return {"lane": lane, "wait_weights": wait_weights % MOD, "src": int(rng.integers(0, 2)), "src_words": src_words,
            "dst": int(rng.integers(0, 2)), "cmd": cmd}


def random_program(rng, g, lane, split, count, first_wait):
    """``count`` commands whose ``wait_weights`` rise (modulo 256) from ``first_wait``, and the words of the
    streams into the front end: ``{"dense": [...], "inter": [...], "out": [...]}``."""
    commands, wait = [], first_wait
    streams = {"dense": [], "inter": [], "out": []}
    cols = g.engine.lane_cols(lane)
    for _ in range(count):
        wait += int(rng.integers(0, 2))
        command = random_command(rng, g, lane, split, wait)
        commands.append(command)
        cmd = command["cmd"]
        if cmd["op"] == Op.INPUT:
            words = rng.integers(-128, 128, size=(cmd["items"] * command["src_words"], g.rows)).tolist()
            streams["inter" if ActSource(command["src"]) == ActSource.INTERACT else "dense"] += words
        elif cmd["to_output"]:
            streams["out"] += rng.integers(-(1 << 31), 1 << 31, size=(cmd["items"] * cmd["ntiles"], cols)).tolist()
    return commands, streams


def owed(g, split, command):
    """``(act words, output words)`` the front end passes for ``command`` in split ``split``."""
    cmd = command["cmd"]
    if cmd["op"] == Op.INPUT:
        ratio = g.rows // g.engine.splits[split].rows
        return cmd["items"] * min(cmd["ktiles"], command["src_words"] * ratio), 0
    return 0, cmd["items"] * cmd["ntiles"] if cmd["to_output"] else 0


def golden(g, lane, split, commands, streams):
    """What a front end sends on ``engine_cmd``, ``act``, ``bottom`` and ``logits`` for ``commands`` and the words
    of ``streams``."""
    r, lane_rows = g.engine.splits[split].rows, g.engine.lane_rows(lane)
    sources = {ActSource.DENSE: iter(streams["dense"]), ActSource.INTERACT: iter(streams["inter"])}
    results = iter(streams["out"])
    expected = {"engine_cmd": [], "act": [], "bottom": [], "logits": []}
    for command in commands:
        cmd = command["cmd"]
        expected["engine_cmd"].append(cmd)
        if cmd["op"] == Op.INPUT:
            source = sources[ActSource(command["src"])]
            for _ in range(cmd["items"]):
                words = [next(source) for _ in range(command["src_words"])]
                cut = [word[p:p + r] + [0] * (lane_rows - r) for word in words for p in range(0, g.rows, r)]
                expected["act"] += cut[:cmd["ktiles"]]
        elif cmd["to_output"]:
            port = "bottom" if OutDest(command["dst"]) == OutDest.JOIN else "logits"
            expected[port] += [next(results) for _ in range(cmd["items"] * cmd["ntiles"])]
    return expected


@dataclass
class Run:
    """What a run of :func:`run_front_end` saw: the values received on each output, the cycles of the transfers on
    ``engine_cmd``, ``act``, ``bottom`` and ``logits``, and the cycle ``weights_done`` took each value."""

    got: dict
    moved: dict
    reached: dict


def run_front_end(dut, split, commands, streams, expected, *, pause, seed, first_done):
    """Run ``dut`` on a program with random idle inputs and back-pressure (``pause``); ``weights_done`` rises from
    ``first_done`` by one every 40 cycles up to the last command's ``wait_weights``. Checks ``busy`` and ``idle``
    in every cycle against what the front end owes."""
    run = Run(got={}, moved={port: [] for port in ("engine_cmd", "act", "bottom", "logits")}, reached={})
    cycle = [0]
    owing = [owed(dut.geometry, split, command) for command in commands]
    wrong = []

    async def monitor(ctx):
        # Count the cycles, and hold busy to what the front end owes: from a command's arrival until it has left on
        # engine_cmd, and, once it has, until its act words or output words have passed, the front end is busy.
        ports = [dut.cmd, *(getattr(dut, port) for port in run.moved)]
        accepted = delivered = 0
        act = out = 0       # act words and output words owed by the commands delivered so far
        async for _, _, busy, idle, *handshakes in ctx.tick().sample(
                dut.busy, dut.idle, *(signal for port in ports for signal in (port.valid, port.ready))):
            fired = [valid and ready for valid, ready in zip(handshakes[0::2], handshakes[1::2])]
            if busy == idle or (not busy and (accepted > delivered or act or out)):
                wrong.append(f"cycle {cycle[0]}: busy {busy}, idle {idle} while it owes {accepted - delivered} "
                             f"commands, {act} act words, {out} outputs")
            accepted += fired[0]
            if fired[1]:
                act, out = act + owing[delivered][0], out + owing[delivered][1]
                delivered += 1
            act -= fired[2]
            out -= fired[3] + fired[4]
            for port, moved in zip(run.moved, fired[1:]):
                if moved:
                    run.moved[port].append(cycle[0])
            cycle[0] += 1

    async def weights(ctx):
        done = first_done
        while True:
            ctx.set(dut.weights_done, done % MOD)
            run.reached[done % MOD] = cycle[0]
            if done % MOD == commands[-1]["wait_weights"]:
                return
            await ctx.tick().repeat(40)
            done += 1

    async def setup(ctx):
        ctx.set(dut.split, split)
        await ctx.tick().repeat(2)   # the registered decodes of the split
        await StreamSource(dut.cmd, pause=pause, seed=seed).send(ctx, commands)

    benches = [setup, weights]
    for index, port in enumerate(("dense", "inter", "out")):
        async def source(ctx, port=port, index=index):
            await ctx.tick().repeat(2)
            # The engine's results come late (so the routes wait for them), the dense and inter words early.
            idle = min(2 * pause, 0.8) if port == "out" else pause
            await StreamSource(getattr(dut, port), pause=idle, seed=seed * 7 + index).send(ctx, streams[port])
        benches.append(source)
    for index, port in enumerate(expected):
        async def sink(ctx, port=port, index=index):
            receiver = StreamSink(getattr(dut, port), pause=pause, seed=seed * 11 + index)
            run.got[port] = await receiver.receive(ctx, len(expected[port]))
        benches.append(sink)

    async def finish(ctx):
        # Once every stream has passed, the front end goes idle.
        while len(run.got) < len(expected):
            await ctx.tick()
        await ctx.tick().repeat(4)
        assert ctx.get(dut.idle) and not ctx.get(dut.busy)
    benches.append(finish)
    run_simulation(dut, benches, processes=[monitor], max_cycles=60_000, name="lane-front-end")
    assert not wrong, wrong[0]
    return run


def check_program(dut, g, lane, split, seed, *, count=24, pause=0.3):
    """A random program of ``count`` commands through ``dut``: every output compared with the golden model, and
    no command passed before its ``wait_weights``. Returns the commands."""
    rng = np.random.default_rng(seed)
    first_done = 250  # the counts wrap past 255 during the run
    commands, streams = random_program(rng, g, lane, split, count, first_done)
    expected = golden(g, lane, split, commands, streams)
    run = run_front_end(dut, split, commands, streams, expected, pause=pause, seed=seed, first_done=first_done)
    for port, values in expected.items():
        assert run.got[port] == values, f"{port}: first difference at {_first_difference(run.got[port], values)}"
    for command, left in zip(commands, run.moved["engine_cmd"]):
        wait = command["wait_weights"]
        assert left > run.reached[wait], f"a command waiting for {wait} WEIGHTS left early"
    return commands


def _first_difference(got, expected):
    return next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))


@pytest.mark.parametrize(("g", "lane", "split"), CASES,
                         ids=lambda value: value.config.name if isinstance(value, ChipGeometry) else str(value))
def test_front_end_passes_random_programs_under_stalls(g, lane, split):
    commands = check_program(LaneFrontEnd(g, lane), g, lane, split, seed=10 * lane + split + g.rows)
    kinds = {(c["cmd"]["op"], c["src"] if c["cmd"]["op"] == Op.INPUT else c["dst"]) for c in commands}
    assert len(kinds) == 4  # both sources and both destinations were exercised


def test_front_end_at_full_speed():
    """Without idle cycles or back-pressure the program passes too (the handshakes' back-to-back cases)."""
    check_program(LaneFrontEnd(TINY, 0), TINY, 0, 4, seed=5, pause=0.0)


def test_front_end_moves_a_word_per_cycle():
    """Without stalls, act words leave one per cycle (a cut word kept, the rest of the source word dropped at once)
    with one idle cycle between INPUTs, and results one per cycle across n-tiles and layers."""
    g, lane, split = TINY, 0, 4   # words of 4 cut into 2
    rng = np.random.default_rng(3)
    base = random_command(rng, g, lane, split, 0)
    commands = []
    for op, src, dst, items, src_words, ktiles, ntiles in [
            (Op.INPUT, ActSource.DENSE, OutDest.JOIN, 16, 1, 2, 1),      # 2 cut words of every source word
            (Op.INPUT, ActSource.INTERACT, OutDest.JOIN, 8, 2, 3, 1),    # 2 and 1 (one dropped)
            (Op.LAYER, ActSource.DENSE, OutDest.JOIN, 8, 1, 1, 3),
            (Op.LAYER, ActSource.DENSE, OutDest.SCORE, 4, 1, 1, 2),
            (Op.LAYER, ActSource.DENSE, OutDest.JOIN, 5, 1, 1, 2)]:
        cmd = {**base["cmd"], "op": int(op), "items": items, "ktiles": ktiles, "ntiles": ntiles, "to_output": 1}
        commands.append({**base, "src": src.value, "dst": dst.value, "src_words": src_words, "cmd": cmd})
    streams = {"dense": rng.integers(-128, 128, size=(16, 4)).tolist(),
               "inter": rng.integers(-128, 128, size=(16, 4)).tolist(),
               "out": rng.integers(-9, 9, size=(8 * 3 + 4 * 2 + 5 * 2, 4)).tolist()}
    expected = golden(g, lane, split, commands, streams)
    run = run_front_end(LaneFrontEnd(g, lane), split, commands, streams, expected, pause=0.0, seed=1, first_done=0)
    assert all(run.got[port] == values for port, values in expected.items())
    act, results = run.moved["act"], sorted(run.moved["bottom"] + run.moved["logits"])
    assert len(act) == 32 + 24 and act[-1] - act[0] == len(act) - 1 + 1
    assert results[-1] - results[0] == len(results) - 1


class _SwappedCut(LaneFrontEnd):
    """A planted bug: the cut words of a source word leave in reverse order."""

    def _cut(self, payload, rows, part, ratio):
        return super()._cut(payload, rows, ratio - 1 - part, ratio)


def test_scoreboard_catches_a_swapped_cut():
    with pytest.raises(AssertionError, match="act: first difference"):
        check_program(_SwappedCut(TINY, 0), TINY, 0, 4, seed=7)


def test_front_end_refuses_bad_parameters():
    with pytest.raises(TypeError, match="Lane front end geometry must be a ChipGeometry, not 'tiny'"):
        LaneFrontEnd("tiny", 0)
    with pytest.raises(ValueError, match=r"Lane front end lane must be an integer in \[0, 4\), not 4"):
        LaneFrontEnd(TINY, 4)


class _LaneOnEngine(wiring.Component):
    """A front end in front of lane ``lane`` of a real engine, with the sides of the controller (``cmd``), the
    weight loader (``wload``, ``weights_done``), the fetcher (``dense``), the joiner (``bottom``, ``inter``) and the
    score sequencer (``logits``)."""

    def __init__(self, geometry, lane):
        self.geometry, self.lane = geometry, lane
        engine = MLPEngine.members(geometry.engine)
        word = stream.Signature(geometry.act_word_layout())
        super().__init__({"split": In(range(geometry.lanes + 1)), "wload": engine["wload"],
                          "weights_done": In(WAIT_BITS), "cmd": In(stream.Signature(geometry.lane_layout())),
                          "dense": In(word), "inter": In(word), "bottom": engine[f"out{lane}"],
                          "logits": engine[f"out{lane}"], "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        lane = self.lane
        m.submodules.front = front = LaneFrontEnd(self.geometry, lane)
        m.submodules.engine = engine = MLPEngine(self.geometry.config)
        m.d.comb += [front.split.eq(self.split), engine.split.eq(self.split),
                     front.weights_done.eq(self.weights_done), self.idle.eq(front.idle & engine.idle[lane])]
        wiring.connect(m, wiring.flipped(self.wload), engine.wload)
        for port in ("cmd", "dense", "inter"):
            wiring.connect(m, wiring.flipped(getattr(self, port)), getattr(front, port))
        for port in ("bottom", "logits"):
            wiring.connect(m, getattr(front, port), wiring.flipped(getattr(self, port)))
        wiring.connect(m, front.engine_cmd, getattr(engine, f"cmd{lane}"))
        wiring.connect(m, front.act, getattr(engine, f"act{lane}"))
        wiring.connect(m, getattr(engine, f"out{lane}"), front.out)
        return m


def lane_commands(program, lane, src, src_words, dst):
    """A lane program's MLPCommands as LANE commands, each waiting for the weights (one WEIGHTS command)."""
    return [{"lane": lane, "wait_weights": 1, "src": src.value, "src_words": src_words, "dst": dst.value,
             "cmd": cmd} for cmd in program.commands]


def item_words(g, values):
    """Items x K int8 as source words of ``rows`` elements, item after item (``ceil(K / rows)`` words each)."""
    items, k = values.shape
    words = -(-k // g.rows)
    padded = np.zeros((items, words * g.rows), dtype=np.int64)
    padded[:, :k] = values
    return padded.reshape(-1, g.rows).tolist(), words


@pytest.mark.parametrize(("lane", "split"), [(0, 1), (0, 4), (1, 2), (2, 4)])
def test_front_end_feeds_a_real_engine(lane, split):
    """A bottom MLP (dense words in, results to ``bottom``) and a top MLP over its output (``inter`` words in,
    logits out) on lane ``lane`` of a tiny engine, their commands as LANE commands held until the weights are loaded
    (``wait_weights`` 1); the testbench joins, turning the bottom results into the top MLP's input words. The
    bottom results and the logits equal the reference."""
    g = TINY
    rng = np.random.default_rng(60 + 10 * lane + split)
    bottom_mlp, top_mlp = random_mlp(rng, [7, 9, 6], raw_last=False), random_mlp(rng, [6, 5, 1])
    x = random_input(rng, 11, 7)
    image = layout_weights(g.engine, split, {0: bottom_mlp, 1: top_mlp})
    bottom = plan_lane(g.engine, split, lane, bottom_mlp, x, image.bases[0], chunk=4)
    top = plan_lane(g.engine, split, lane, top_mlp, np.zeros((11, 6), dtype=np.int64), image.bases[1], chunk=4,
                    inputs_done=bottom.inputs_done, layers_done=bottom.layers_done)
    dense, dense_words = item_words(g, x)
    commands = (lane_commands(bottom, lane, ActSource.DENSE, dense_words, OutDest.JOIN)
                + lane_commands(top, lane, ActSource.INTERACT, -(-6 // g.rows), OutDest.SCORE))
    dut = _LaneOnEngine(g, lane)
    got = {}

    async def setup(ctx):
        ctx.set(dut.split, split)
        wload = codec(payload_shape(dut.wload))
        words = [wload.unpack_value(wload.pack_value({"addr": image.base + k, "data": word.tolist()}))
                 for k, word in enumerate(image.words)]
        await StreamSource(dut.wload, pause=0.2, seed=1).send(ctx, words)
        await ctx.tick()
        ctx.set(dut.weights_done, 1)

    async def commands_in(ctx):
        await StreamSource(dut.cmd, pause=0.3, seed=2).send(ctx, commands)

    async def dense_in(ctx):
        await StreamSource(dut.dense, pause=0.3, seed=3).send(ctx, dense)

    async def join(ctx):
        # The bottom results (int8 in int32, n-tile major per chunk) as the top MLP's input words.
        got["bottom"] = bottom.decode(np.array(await StreamSink(dut.bottom, pause=0.3, seed=4).receive(
            ctx, bottom.outputs)))
        await StreamSource(dut.inter, pause=0.3, seed=5).send(ctx, item_words(g, got["bottom"])[0])

    async def logits_out(ctx):
        got["logits"] = top.decode(np.array(await StreamSink(dut.logits, pause=0.3, seed=6).receive(
            ctx, top.outputs)))
        await ctx.tick().repeat(30)
        assert ctx.get(dut.idle)

    run_simulation(dut, [setup, commands_in, dense_in, join, logits_out], max_cycles=100_000, name="lane-on-engine")
    hidden = mlp_forward(bottom_mlp, x)
    assert np.array_equal(got["bottom"], hidden)
    assert np.array_equal(got["logits"], mlp_forward(top_mlp, hidden))
