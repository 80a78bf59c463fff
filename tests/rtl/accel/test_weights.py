"""rpaccel.rtl.accel.weights: WEIGHTS commands against a golden weight image, with a memory modelled in the
testbench (random latency and gaps), random back-pressure on ``wload``, lanes completing layers at random times,
every word, ``done`` and ``busy`` checked cycle by cycle, and planted bugs the check must catch."""

import random
from collections import deque

import pytest
from amaranth.hdl import Module, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.config import preset
from rpaccel.rtl.accel.isa import ChipGeometry
from rpaccel.rtl.accel.memarb import MemoryArbiter
from rpaccel.rtl.accel.weights import WeightLoader
from rpaccel.rtl.memory import MemoryModel
from rpaccel.rtl.mlp import WAIT_BITS, wload_layout
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

#: (preset, settings): words of 4 bytes in 16-byte lines (tiny), of 8 in 16 (small), one per 4-byte line, over
#: two 2-byte lines, over four 4-byte lines.
CONFIGS = {
    "tiny": ("tiny", []),
    "small": ("small", []),
    "line4": ("tiny", ["dyn_cache_line_bytes=4"]),
    "line2": ("tiny", ["dyn_cache_line_bytes=2"]),
    "word16": ("tiny", ["array_rows=16", "array_cols=16", "dyn_cache_line_bytes=4"]),
}


def geometry(name):
    base, settings = CONFIGS[name]
    return ChipGeometry(preset(base).with_settings(settings))


def satisfied(done, wait):
    """``done`` has reached ``wait`` modulo 256 (as rpaccel.rtl.mlp.satisfied)."""
    return (done - wait) % 256 < 128


def random_commands(rng, g, count, *, max_words=40, start_layers=250):
    """``count`` WEIGHTS commands reading disjoint memory regions; about half wait for a lane's layers (targets
    increasing per lane from ``start_layers``, so they wrap modulo 256), some have no words. Returns the commands
    and the unwrapped layer count each one waits for (``None`` if it does not wait)."""
    commands, waits, targets = [], [], [start_layers] * g.lanes
    mem_addr = 3
    for _ in range(count):
        words = 0 if rng.random() < 0.1 else rng.randint(1, max_words)
        lane = rng.randrange(g.lanes)
        wait = rng.random() < 0.5
        if wait:
            targets[lane] += rng.randint(0, 3)
        waits.append(targets[lane] if wait else None)
        commands.append({"mem_addr": mem_addr, "w_addr": rng.randrange(g.engine.weight_words - words + 1),
                         "words": words, "wait": int(wait), "lane": lane, "wait_layers": targets[lane] % 256})
        mem_addr += lines_of(g, words) + rng.randrange(3)
    return commands, waits


def lines_of(g, words):
    return -(-words * g.engine.word_bytes // g.line_bytes)


def golden_writes(g, commands, memory):
    """The ``(addr, word)`` writes of the commands, in order (``word`` the word's bits, byte 0 lowest)."""
    writes = []
    for c in commands:
        raw = b"".join(memory[c["mem_addr"] + i].to_bytes(g.line_bytes, "little")
                       for i in range(lines_of(g, c["words"])))
        for w in range(c["words"]):
            word = raw[w * g.engine.word_bytes:(w + 1) * g.engine.word_bytes]
            writes.append(((c["w_addr"] + w) % g.engine.weight_words, int.from_bytes(word, "little")))
    return writes


def loader_errors(dut, commands, waits, *, seed, cmd_pause=0.3, out_pause=0.3, mem_pause=0.3, latency=(5, 20),
                  line_pause=0.2, layer_rate=0.03, start_layers=250, max_cycles=30_000):
    """Run ``commands`` through ``dut`` while each lane completes layers at random times (from ``start_layers``
    up to the highest of ``waits``), and check every cycle: reads only, each within one command's lines and none
    before that command's wait is met; the memory's lines never held up (``mem.resp.ready``); every write on
    ``wload`` the next golden one; ``done`` counting a command only once its words are all accepted and its wait
    met, and a command with words in the cycle after its last; ``busy``/``idle`` high exactly while a command is
    accepted and not counted. Returns ``(errors, stats)``: the cycles to the last completion and the cycle of each
    command's first read."""
    g = dut.geometry
    rng = random.Random(seed)
    memory = {}
    region = {}     # memory line -> command
    for k, c in enumerate(commands):
        for i in range(lines_of(g, c["words"])):
            memory[c["mem_addr"] + i] = rng.getrandbits(8 * g.line_bytes)
            region[c["mem_addr"] + i] = k
    expected = golden_writes(g, commands, memory)
    ends = []       # per command, the golden writes up to and including its own
    for c in commands:
        ends.append((ends[-1] if ends else 0) + c["words"])
    highest = [max([start_layers] + [w for w, c in zip(waits, commands) if w is not None and c["lane"] == lane])
               for lane in range(g.lanes)]
    errors, stats = [], {"cycles": None, "first_read": {}}

    async def bench(ctx):
        layers = [start_layers] * g.lanes          # unwrapped
        met = [None] * len(commands)               # the first cycle in which each command's wait is met
        last_write = [None] * len(commands)        # the cycle of each command's last write
        to_send = deque(commands)
        accepted = written = done = 0              # commands accepted; writes accepted; commands counted
        mem_lines = deque()                        # [cycle from which the line may go, value]
        for cycle in range(max_cycles):
            for k, c in enumerate(commands):
                if met[k] is None and (waits[k] is None or layers[c["lane"]] >= waits[k]):
                    met[k] = cycle
            cmd_valid = bool(to_send) and rng.random() >= cmd_pause
            ctx.set(dut.cmd.valid, cmd_valid)
            if cmd_valid:
                ctx.set(dut.cmd.payload, to_send[0])
            for lane in range(g.lanes):
                ctx.set(dut.layers_done[lane], layers[lane] % 256)
            ctx.set(dut.mem.req.ready, rng.random() >= mem_pause)
            line_valid = bool(mem_lines) and mem_lines[0][0] <= cycle and rng.random() >= line_pause
            ctx.set(dut.mem.resp.valid, line_valid)
            if line_valid:
                ctx.set(dut.mem.resp.payload, mem_lines[0][1])
            out_ready = rng.random() >= out_pause
            ctx.set(dut.wload.ready, out_ready)

            # `done` (each step a command complete) and `busy`.
            step = (ctx.get(dut.done) - done) % 256
            if step == 1:
                if not (done < accepted and met[done] is not None and met[done] < cycle and written >= ends[done]):
                    errors.append((cycle, "done early", done))
                done += 1
            elif step:
                errors.append((cycle, "done", ctx.get(dut.done), done))
            if done < len(commands) and last_write[done] is not None:
                errors.append((cycle, "done late", done))
            if (ctx.get(dut.busy), ctx.get(dut.idle)) != (int(accepted > done), int(accepted == done)):
                errors.append((cycle, "busy, idle", ctx.get(dut.busy), accepted, done))

            if cmd_valid and ctx.get(dut.cmd.ready):
                to_send.popleft()
                accepted += 1
            # The memory.
            if ctx.get(dut.mem.req.valid) and ctx.get(dut.mem.req.ready):
                write, addr, length = (ctx.get(dut.mem.req.payload.write), ctx.get(dut.mem.req.payload.addr),
                                       ctx.get(dut.mem.req.payload.length))
                owners = {region.get(addr + i) for i in range(length + 1)}
                if write or len(owners) != 1 or None in owners:
                    errors.append((cycle, "request", write, addr, length, owners))
                else:
                    k = owners.pop()
                    stats["first_read"].setdefault(k, cycle)
                    if met[k] is None or met[k] >= cycle:
                        errors.append((cycle, "read before the wait is met", k))
                due = cycle + rng.randint(*latency)
                for i in range(length + 1):
                    mem_lines.append([due, memory.get(addr + i, 0)])
            if line_valid:
                if ctx.get(dut.mem.resp.ready):
                    mem_lines.popleft()
                else:
                    errors.append((cycle, "line held up"))
            # The writes.
            if ctx.get(dut.wload.valid) and out_ready:
                write = (ctx.get(dut.wload.payload.addr), ctx.get(Value.cast(dut.wload.payload.data)))
                if written >= len(expected) or write != expected[written]:
                    errors.append((cycle, "write", written, write, expected[written:written + 1]))
                written += 1
                k = next((k for k, end in enumerate(ends) if end == written and commands[k]["words"]), None)
                if k is not None:
                    last_write[k] = cycle
            for lane in range(g.lanes):
                if layers[lane] < highest[lane] and rng.random() < layer_rate:
                    layers[lane] += 1
            await ctx.tick()
            if done == len(commands) or len(errors) > 20:
                stats["cycles"] = cycle
                return
        errors.append(("timeout", accepted, written, done))

    run_simulation(dut, [bench], max_cycles=max_cycles + 10, name="weights")
    return errors, stats


@pytest.mark.parametrize(("config", "seed", "pause"), [
    ("tiny", 1, 0.3), ("tiny", 2, 0.0), ("small", 3, 0.3), ("line4", 4, 0.3), ("line2", 5, 0.3),
    ("word16", 6, 0.4), ("word16", 7, 0.0)])
def test_weights_reach_the_buffer(config, seed, pause):
    g = geometry(config)
    commands, waits = random_commands(random.Random(seed), g, 30)
    errors, stats = loader_errors(WeightLoader(g), commands, waits, seed=seed, cmd_pause=pause, out_pause=pause,
                                  mem_pause=pause, line_pause=pause)
    assert not errors, errors[:5]
    waited = [k for k, c in enumerate(commands) if c["words"] and waits[k] is not None and waits[k] > 250]
    assert waited and all(k in stats["first_read"] for k in waited)


def test_back_pressure_with_a_small_buffer():
    """The fewest buffer lines (two bursts) under heavy back-pressure: nothing is lost or held up."""
    g = geometry("tiny")
    commands, waits = random_commands(random.Random(8), g, 20, max_words=120)
    errors, _ = loader_errors(WeightLoader(g, buffer_lines=2 * g.emb.max_burst), commands, waits, seed=8,
                              out_pause=0.8, latency=(1, 4))
    assert not errors, errors[:5]


@pytest.mark.parametrize(("config", "cycles_per_word"), [("tiny", 1), ("small", 1), ("line4", 1), ("word16", 4)])
def test_one_word_per_cycle(config, cycles_per_word):
    """Nothing stalls and the memory answers in 30 cycles: a long command takes a word per cycle (or per line,
    when a word spans lines), with the default buffer."""
    g = geometry(config)
    command = {"mem_addr": 0, "w_addr": 0, "words": 200, "wait": 0, "lane": 0, "wait_layers": 0}
    errors, stats = loader_errors(WeightLoader(g), [command], [None], seed=9, cmd_pause=0.0, out_pause=0.0,
                                  mem_pause=0.0, line_pause=0.0, latency=(30, 30))
    assert not errors, errors[:5]
    assert stats["cycles"] <= 200 * cycles_per_word + 30 + 12


class _System(wiring.Component):
    """The weight loader and a second requester (``other``, the testbench) through the memory arbiter to the
    memory model."""

    def __init__(self, g, lines):
        self.g, self.lines = g, lines
        super().__init__({"cmd": In(stream.Signature(g.weights_layout())), "other": In(g.emb_layouts.memory),
                          "wload": Out(stream.Signature(wload_layout(g.engine))), "done": Out(WAIT_BITS),
                          "idle": Out(1)})

    def elaborate(self, platform):
        g, m = self.g, Module()
        m.submodules.loader = loader = WeightLoader(g)
        m.submodules.arbiter = arbiter = MemoryArbiter(g.emb_layouts.memory, 2)
        m.submodules.memory = memory = MemoryModel(lines=self.lines, line_bytes=g.line_bytes, addr_bits=g.addr_bits,
                                                   max_burst=g.emb.max_burst, latency=12,
                                                   bytes_per_cycle=g.line_bytes)
        wiring.connect(m, loader.mem, arbiter.req[0])
        wiring.connect(m, wiring.flipped(self.other), arbiter.req[1])
        wiring.connect(m, arbiter.mem, memory.port)
        wiring.connect(m, wiring.flipped(self.cmd), loader.cmd)
        wiring.connect(m, loader.wload, wiring.flipped(self.wload))
        m.d.comb += [self.done.eq(loader.done), self.idle.eq(loader.idle & arbiter.idle)]
        return m


def test_through_the_arbiter_to_the_memory_model():
    """The testbench writes the weights through the arbiter's other port, then reads lines back through it while
    the loader executes its commands: every word and every line read checked."""
    g = geometry("tiny")
    rng = random.Random(10)
    commands, _ = random_commands(rng, g, 12)
    commands = [dict(c, wait=0) for c in commands]
    lines = 1 << (max(c["mem_addr"] + lines_of(g, c["words"]) for c in commands) - 1).bit_length()
    memory = {a: rng.getrandbits(8 * g.line_bytes) for a in range(lines)}
    expected = golden_writes(g, commands, memory)
    reads = [rng.randrange(lines) for _ in range(150)]
    dut = _System(g, lines)
    stored = []

    async def requester(ctx):
        source = StreamSource(dut.other.req, pause=0.3, seed=1)
        await source.send(ctx, [{"write": 1, "addr": a, "length": 0, "data": v} for a, v in memory.items()])
        stored.append(True)
        await source.send(ctx, [{"write": 0, "addr": a, "length": 0, "data": 0} for a in reads])

    async def lines_back(ctx):
        assert await StreamSink(dut.other.resp, pause=0.3, seed=2).receive(ctx, len(reads)) == [
            memory[a] for a in reads]

    async def commander(ctx):
        while not stored:
            await ctx.tick()
        await StreamSource(dut.cmd, pause=0.3, seed=3).send(ctx, commands)

    async def words(ctx):
        got = await StreamSink(dut.wload, pause=0.3, seed=4).receive(ctx, len(expected))
        assert [(w["addr"], int.from_bytes(bytes(b & 0xFF for b in w["data"]), "little")) for w in got] == expected
        while ctx.get(dut.done) != len(commands) or not ctx.get(dut.idle):
            await ctx.tick()

    run_simulation(dut, [requester, lines_back, commander, words], max_cycles=20_000, name="weights-system")


class _WaitsEarly(WeightLoader):
    """Planted bug: the loader sees each lane 8 layers ahead, so waits end early."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = WeightLoader(self.geometry, buffer_lines=self.buffer_lines)
        wiring.connect(m, wiring.flipped(self.cmd), inner.cmd)
        wiring.connect(m, inner.mem, wiring.flipped(self.mem))
        wiring.connect(m, inner.wload, wiring.flipped(self.wload))
        m.d.comb += [inner.layers_done[lane].eq(self.layers_done[lane] + 8) for lane in range(self.geometry.lanes)]
        m.d.comb += [self.done.eq(inner.done), self.busy.eq(inner.busy), self.idle.eq(inner.idle)]
        return m


class _ExtraLine(WeightLoader):
    """Planted bug: every command reads one line more than its words take."""

    def _lines(self, words):
        return super()._lines(words) + 1


def test_checks_catch_planted_bugs():
    g = geometry("tiny")
    commands, waits = random_commands(random.Random(1), g, 30)
    errors, _ = loader_errors(_WaitsEarly(g), commands, waits, seed=1)
    assert any(error[1] in ("read before the wait is met", "done early") for error in errors)
    errors, _ = loader_errors(_ExtraLine(g), commands, waits, seed=1)
    assert any(error[1] == "write" for error in errors)


def test_bad_parameters():
    g = geometry("tiny")
    with pytest.raises(TypeError, match="Weight loader geometry must be a ChipGeometry, not 'tiny'"):
        WeightLoader("tiny")
    with pytest.raises(ValueError, match=r"buffer lines must be an integer of at least two bursts \(16 lines\), "
                                         "not 15"):
        WeightLoader(g, buffer_lines=15)
