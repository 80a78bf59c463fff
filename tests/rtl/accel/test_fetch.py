"""The chip's candidate fetcher in the Amaranth simulator: random programs of FETCH (all three sources) and EMB
instructions over a timed memory model, random idle cycles and back-pressure on every stream, every output
compared with the golden model (rpaccel.sim.golden.fetch); survivors waits and releases; planted bugs."""

import random

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Value
from amaranth.lib import wiring

from rpaccel.config import preset
from rpaccel.host.driver.codec import codec
from rpaccel.rtl.accel.fetch import Fetcher
from rpaccel.rtl.accel.isa import ChipGeometry, FetchSource, survivors_address_layout
from rpaccel.rtl.embedding import EmbeddingOp
from rpaccel.rtl.interaction import MODES
from rpaccel.rtl.memory import MemoryModel
from rpaccel.sim.golden.fetch import fetch_golden, list_image, record_image
from rpaccel.sim.streams import StreamSource, pauses, payload_shape, run_simulation

TINY = ChipGeometry(preset("tiny"))
#: Lookup entries of 64 bits (28-bit row IDs).
WIDE_IDS = ChipGeometry(preset("tiny").with_settings(["mem_bytes=4294967296"]))
#: Dense words of two memory lines.
WIDE_ROWS = ChipGeometry(preset("tiny").with_settings(["array_rows=32"]))
#: A lookup entry per line (8-byte lines, 64-bit entries).
NARROW_LINES = ChipGeometry(preset("tiny").with_settings(["dyn_cache_line_bytes=8", "mem_bytes=2147483648"]))
SMALL = ChipGeometry(preset("small"))
MEMORY_LINES = 1024


class Bench(wiring.Component):
    """A fetcher on a timed memory model (its host port loads the memory)."""

    def __init__(self, fetcher, *, latency, bytes_per_cycle):
        g = fetcher.g
        self.fetcher = fetcher
        self.model = MemoryModel(lines=MEMORY_LINES, line_bytes=g.line_bytes, addr_bits=g.addr_bits,
                                 max_burst=g.emb.max_burst, latency=latency, bytes_per_cycle=bytes_per_cycle,
                                 queue_depth=16)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fetcher, m.submodules.model = self.fetcher, self.model
        wiring.connect(m, self.fetcher.mem, self.model.port)
        return m


class Program:
    """A random fetcher program and the memory it reads: record sets, lists, kept results."""

    def __init__(self, g, seed, *, fetches=14, embs=4, results=3):
        rng = self.rng = random.Random(seed)
        self.g = g
        self.memory = np.zeros((MEMORY_LINES, g.line_bytes), dtype=np.uint8)
        self.free = 0
        self.sets = [self._record_set(rng.randint(1, 5), rng.randint(6, 20)) for _ in range(3)]
        # Kept results of top-k unit 0, each read by one or two SURVIVORS fetches (the last releases it).
        self.results = {r: [rng.randrange(self.sets[0]["count"]) for _ in range(g.k_max)]
                        for r in range(1, results + 1)}
        body = [self._fetch(rng.choice([FetchSource.RANGE, FetchSource.LIST])) for _ in range(fetches)]
        body += [self._emb() for _ in range(embs)]
        rng.shuffle(body)
        survivors = []
        for r in self.results:
            readers = rng.randint(1, 2)
            survivors += [self._fetch(FetchSource.SURVIVORS, result=r, release=k == readers - 1)
                          for k in range(readers)]
        places = sorted([0] + [rng.randint(0, len(body)) for _ in survivors[1:]])    # the first waits
        self.instructions = []
        for k, ins in enumerate([*body, None]):
            self.instructions += [s for s, p in zip(survivors, places) if p == k]
            if ins is not None:
                self.instructions.append(ins)

    def _place(self, lines):
        base = self.free
        self.free += len(lines)
        assert self.free <= MEMORY_LINES
        self.memory[base:self.free] = lines
        return base

    def _record_set(self, stride, count):
        g, rng = self.g, self.rng
        dense_lines = rng.randint(0, stride)
        entry_bytes = g.lookup_entry_bits // 8
        capacity = (stride - dense_lines) * g.line_bytes // entry_bytes - 1
        records = []
        for _ in range(count):
            dense = [rng.randint(-128, 127) for _ in range(dense_lines * g.line_bytes)]
            n = rng.randint(0, capacity) if capacity >= 0 else 0
            lookups = [(rng.randrange(1 << g.emb.id_bits), rng.randrange(g.emb.tables), rng.randint(0, 1),
                        rng.randint(0, 1)) for _ in range(n)]
            overstated = capacity >= 0 and rng.random() < 0.2   # a count above what the record holds
            records.append(record_image(g, dense, lookups, stride=stride, dense_lines=dense_lines,
                                        count=n + rng.randint(capacity - n + 1, capacity + 9) if overstated
                                        else None))
        return {"base": self._place(np.concatenate(records)), "count": count, "stride": stride,
                "dense_lines": dense_lines}

    def _fetch(self, source, *, result=0, release=False):
        g, rng = self.g, self.rng
        s = self.sets[0] if source == FetchSource.SURVIVORS else rng.choice(self.sets)
        items = rng.randint(1, min(10, s["count"]))
        first, list_addr = 0, 0
        if source == FetchSource.RANGE:
            first = rng.randint(0, s["count"] - items)
        elif source == FetchSource.SURVIVORS:
            first = rng.randint(0, g.k_max - items)
        else:
            indices = [rng.randrange(s["count"]) for _ in range(items)]
            if rng.random() < 0.4:      # an index out of range: an ERROR response
                indices[rng.randrange(items)] = s["count"] + rng.randrange(1000)
            list_addr = self._place(list_image(g, indices))
        fetch = {"lane": rng.randrange(g.lanes), "source": source.value, "first": first, "list_addr": list_addr,
                 "unit": 0, "wait_results": result, "release": int(release), "items": items,
                 "dense_words": rng.randint(0, s["dense_lines"] * g.line_bytes // g.rows + 2),
                 "join": {"mode": rng.randrange(len(MODES)), "vectors": rng.randint(1, g.max_vectors),
                          "dim": rng.randint(1, g.max_dim), "m": rng.randrange(1 << 16), "s": rng.randrange(32)},
                 **{key: s[key] for key in ("base", "count", "stride", "dense_lines")}}
        return {"tag": rng.randrange(256), "emb": 0, "arg": {"fetch": fetch}}

    def _emb(self):
        g, rng = self.g, self.rng
        op = rng.choice([EmbeddingOp.CONFIG, EmbeddingOp.PRELOAD, EmbeddingOp.UPDATE, EmbeddingOp.FLUSH])
        command = {"op": op.value, "table": rng.randrange(g.emb.tables),
                   "arg": {"update": {"id": rng.randrange(1 << g.emb.id_bits),
                                      "line": rng.randrange(max(g.emb.banks, 2)),
                                      "data": rng.getrandbits(8 * g.line_bytes)}}}
        return {"tag": rng.randrange(256), "emb": 1, "arg": {"emb": command}}

    def golden(self):
        return fetch_golden(self.g, self.instructions, self.memory,
                            {(0, r): kept for r, kept in self.results.items()})


def normalised(shape, values):
    """Values as the stream sinks unpack them (every member of a union, enum members as values)."""
    c = codec(shape)
    return [c.unpack_value(c.pack_value(v)) for v in values]


def run(program, *, pause=0.3, seed=0, fetcher=None, latency=12, bytes_per_cycle=None, buffer_lines=16):
    """Run ``program``; return (observed streams, expected streams, problems seen by the monitors)."""
    g = program.g
    fetcher = fetcher or Fetcher(g, buffer_lines=buffer_lines)
    dut = Bench(fetcher, latency=latency, bytes_per_cycle=bytes_per_cycle or g.line_bytes)
    expected = program.golden()
    rng = random.Random(seed)
    got, problems = {}, []
    state = {"loaded": False, "finished": False, "releases": 0, "done": 0, "waited": 0,
             "banks": [[0] * g.k_max, [0] * g.k_max]}
    surv = codec(survivors_address_layout(g))

    async def commands(ctx):
        writes = [{"write": 1, "addr": a, "length": 0, "data": int.from_bytes(bytes(line), "little")}
                  for a, line in enumerate(program.memory[:program.free])]
        await StreamSource(dut.model.host.req).send(ctx, writes)
        state["loaded"] = True
        await StreamSource(fetcher.cmd, pause=pause, seed=seed).send(ctx, program.instructions)
        while not ctx.get(fetcher.idle):
            await ctx.tick()
        state["finished"] = True

    def sink(name, port, k):
        async def receive(ctx):     # everything until the fetcher is idle after the last instruction
            stalls, shape, values = pauses(pause, seed * 31 + k), codec(payload_shape(port)), []
            while not state["finished"]:
                ready = not next(stalls)
                ctx.set(port.ready, ready)
                *_, valid, bits = await ctx.tick().sample(port.valid, Value.cast(port.payload))
                if ready and valid:
                    values.append(shape.unpack_value(bits))
            got[name] = values
        return receive

    sinks = [sink("lookup", fetcher.lookup, 1), sink("join", fetcher.join, 2), sink("rsp", fetcher.rsp, 3)]
    for lane in range(g.lanes):
        sinks += [sink(f"dense{lane}", fetcher.dense[lane], 10 + lane),
                  sink(f"index{lane}", fetcher.index[lane], 20 + lane)]

    async def survivors(ctx):   # the score unit's read port: data one cycle after the address
        while True:
            *_, addr = await ctx.tick().sample(Value.cast(fetcher.surv_addr))
            addr = surv.unpack_value(addr)
            bank = state["banks"][addr["bank"]]
            known = addr["unit"] == 0 and addr["position"] < len(bank)    # other addresses: not read by a fetch
            ctx.set(fetcher.surv_data, bank[addr["position"]] if known else 0)

    async def results(ctx):     # result r written to bank r % 2 once result r - 2 is released
        while not state["loaded"]:
            await ctx.tick()
        for r, kept in program.results.items():
            while state["releases"] < r - 2:
                await ctx.tick()
            await ctx.tick().repeat(rng.randint(30, 300))
            state["banks"][r % 2] = list(kept)
            state["done"] = r
            ctx.set(fetcher.results_done[0], r)

    # Sending a request, a lookup or a dense word is work in progress; an index, a join job or an ERROR may also
    # wait for its taker after the instruction is done.
    working = [fetcher.mem.req, fetcher.lookup, *fetcher.dense]
    outputs = [*working, fetcher.join, fetcher.rsp, *fetcher.index]

    async def monitor(ctx):     # releases, the start of every SURVIVORS fetch against results_done, busy and idle
        taken, got["release"] = 0, []
        while True:
            *_, valid, ready, release, busy, idle, sending, working_out = await ctx.tick().sample(
                fetcher.cmd.valid, fetcher.cmd.ready, fetcher.release[0], fetcher.busy, fetcher.idle,
                Cat(port.valid for port in outputs), Cat(port.valid for port in working))
            if (working_out and not busy) or (idle and (busy or valid or sending)):
                problems.append(f"busy {busy}, idle {idle} with command {valid} and outputs {sending:b}")
            if release:
                state["releases"] += 1
                got["release"].append(0)
            if not valid:
                continue
            ins = program.instructions[taken]
            early = (not ins["emb"] and ins["arg"]["fetch"]["source"] == FetchSource.SURVIVORS.value
                     and state["done"] < ins["arg"]["fetch"]["wait_results"])
            if early and ready:
                problems.append(f"instruction {taken} started with {state['done']} results done, waiting for "
                                f"{ins['arg']['fetch']['wait_results']}")
            state["waited"] += early
            taken += ready

    run_simulation(dut, [commands, *sinks], processes=[survivors, results, monitor], max_cycles=60_000,
                   name="fetch")
    want = {"lookup": normalised(g.emb_layouts.command, expected.lookup),
            "join": normalised(g.join_job_layout(), expected.join),
            "rsp": normalised(g.response_layout(), expected.rsp), "release": expected.release}
    for lane in range(g.lanes):
        want[f"dense{lane}"] = expected.dense[lane]
        want[f"index{lane}"] = expected.index[lane]
    got["waited"] = state["waited"]
    return got, want, problems


def differences(got, want):
    out = []
    for name in want:
        if got[name] != want[name]:
            first = next((k for k, (a, b) in enumerate(zip(got[name], want[name])) if a != b),
                         min(len(got[name]), len(want[name])))
            out.append(f"{name}: first difference at {first} of {len(want[name])}")
    return out


@pytest.mark.parametrize("g, seed", [(TINY, 1), (TINY, 2), (WIDE_IDS, 3), (WIDE_ROWS, 4), (NARROW_LINES, 8),
                                     (SMALL, 6)],
                         ids=["tiny-1", "tiny-2", "wide-ids", "wide-rows", "narrow-lines", "small"])
def test_random_programs_match_the_golden_model(g, seed):
    program = Program(g, seed)
    got, want, problems = run(program, seed=seed, latency=8 + seed * 3)
    assert problems == []
    assert differences(got, want) == []
    assert want["rsp"], "the program has no out-of-range LIST index"
    assert any(ins["emb"] for ins in program.instructions)
    assert want["release"] == [0] * len(program.results)
    assert got["waited"] > 0, "no SURVIVORS fetch had to wait for its result"


def test_no_back_pressure_and_slow_memory():
    program = Program(TINY, 5)
    got, want, problems = run(program, pause=0.0, seed=5, latency=30, bytes_per_cycle=4, buffer_lines=64)
    assert problems == []
    assert differences(got, want) == []


class Planted(wiring.Component):
    """A fetcher with a planted bug: ``early`` shows it one more kept result than the score unit has completed
    (a SURVIVORS fetch starts one result early); ``unforced`` drops the ``last`` forced onto an item's final
    lookup."""

    def __init__(self, g, bug):
        self.inner, self.bug = Fetcher(g, buffer_lines=16), bug
        self.g = g
        super().__init__(self.inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        wiring.connect(m, wiring.flipped(self.cmd), inner.cmd)
        wiring.connect(m, inner.mem, wiring.flipped(self.mem))
        for name in ("lookup", "join", "rsp"):
            wiring.connect(m, getattr(inner, name), wiring.flipped(getattr(self, name)))
        for lane in range(self.g.lanes):
            wiring.connect(m, inner.dense[lane], wiring.flipped(self.dense[lane]))
            wiring.connect(m, inner.index[lane], wiring.flipped(self.index[lane]))
        m.d.comb += [self.surv_addr.eq(inner.surv_addr), inner.surv_data.eq(self.surv_data),
                     self.busy.eq(inner.busy), self.idle.eq(inner.idle)]
        for unit in range(self.g.units):
            m.d.comb += [inner.results_done[unit].eq(self.results_done[unit] + (self.bug == "early")),
                         self.release[unit].eq(inner.release[unit])]
        if self.bug == "unforced":
            lookup = inner.lookup.payload.arg.lookup
            m.d.comb += self.lookup.payload.arg.lookup.last.eq(lookup.last & ~lookup.end)
        return m


@pytest.mark.parametrize("bug", ["early", "unforced"])
def test_scoreboard_catches_planted_bugs(bug):
    program = Program(TINY, 1)
    got, want, problems = run(program, seed=1, fetcher=Planted(TINY, bug))
    if bug == "early":
        assert problems and "started with" in problems[0]
        assert any(d.startswith(("dense", "index", "lookup")) for d in differences(got, want))
    else:
        assert problems == []
        assert [d.split(":")[0] for d in differences(got, want)] == ["lookup"]


def fetch_cycles(g, *, items, stride, dense_lines, words, lookups, latency):
    """Cycles from a RANGE FETCH's acceptance until the fetcher is idle, with no back-pressure and a memory of one
    line per cycle."""
    records = [record_image(g, [k % 128] * (dense_lines * g.line_bytes), [(k, 0, 0, 0)] * lookups, stride=stride,
                            dense_lines=dense_lines) for k in range(items)]
    fetcher = Fetcher(g)
    dut = Bench(fetcher, latency=latency, bytes_per_cycle=g.line_bytes)
    fetch = {"lane": 0, "source": FetchSource.RANGE.value, "first": 0, "list_addr": 0, "unit": 0,
             "wait_results": 0, "release": 0, "items": items, "base": 0, "stride": stride, "count": items,
             "dense_lines": dense_lines, "dense_words": words,
             "join": {"mode": 0, "vectors": 1, "dim": 1, "m": 0, "s": 0}}
    cycles = []

    async def bench(ctx):
        await StreamSource(dut.model.host.req).send(
            ctx, [{"write": 1, "addr": a, "length": 0, "data": int.from_bytes(bytes(line), "little")}
                  for a, line in enumerate(np.concatenate(records))])
        await ctx.tick().repeat(2 * latency)      # the writes done
        for port in (fetcher.lookup, fetcher.dense[0], fetcher.index[0], fetcher.join):
            ctx.set(port.ready, 1)
        await StreamSource(fetcher.cmd).send(ctx, [{"tag": 0, "emb": 0, "arg": {"fetch": fetch}}])
        count = 1
        while not ctx.get(fetcher.idle):
            await ctx.tick()
            count += 1
        cycles.append(count)

    run_simulation(dut, [bench], max_cycles=20_000, name="fetch-throughput")
    return cycles[0]


@pytest.mark.parametrize("stride, dense_lines, words, lookups", [(2, 1, 4, 3), (5, 1, 4, 15), (1, 1, 4, 0),
                                                                 (1, 0, 0, 3)])
def test_one_dense_word_and_one_lookup_per_cycle(stride, dense_lines, words, lookups):
    items, latency = 64, 12
    cycles = fetch_cycles(TINY, items=items, stride=stride, dense_lines=dense_lines, words=words,
                          lookups=lookups, latency=latency)
    # Phase 1 takes a cycle per item at least (its index), phase 2 one per lookup.
    assert cycles <= items * (max(words, 1) + lookups) + latency + 8


def test_parameter_errors_name_the_value():
    with pytest.raises(TypeError, match="Fetcher geometry must be a ChipGeometry, not AccelConfig"):
        Fetcher(preset("tiny"))
    with pytest.raises(ValueError, match="Response buffer lines must be an integer of at least 16, not 8"):
        Fetcher(TINY, buffer_lines=8)
    with pytest.raises(ValueError, match="Index queue depth must be an integer of at least 2, not 1"):
        Fetcher(TINY, index_depth=1)
    with pytest.raises(ValueError, match="A memory line of 4 bytes is narrower than a 64-bit lookup entry"):
        Fetcher(ChipGeometry(preset("tiny").with_settings(["dyn_cache_line_bytes=4", "mem_bytes=4294967296"])))
    with pytest.raises(ValueError, match="Dense words of 12 bytes and memory lines of 16 bytes: one must divide"):
        Fetcher(ChipGeometry(preset("tiny").with_settings(["array_rows=12"])))
