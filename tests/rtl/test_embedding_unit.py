"""Embedding unit in the Amaranth simulator: the requantiser, a short end-to-end run, a planted bug, errors."""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Module, Value
from amaranth.lib import wiring

from rpaccel.config import ConfigError, preset
from rpaccel.embedding import EmbeddingGeometry, EmbeddingLayout, LayoutError, TableSpec
from rpaccel.flow.equivalence import EquivalenceFailure, check_ecp5_equivalence
from rpaccel.numeric import M_BITS, M_MAX, S_MAX, requantize
from rpaccel.rtl import embedding as embedding_module
from rpaccel.rtl.embedding import EmbeddingSystem, EmbeddingUnit, Layouts, Requantizer
from rpaccel.sim.golden.embedding import EmbeddingScript, compare, decode, random_tables, zipf_bags
from rpaccel.sim.streams import StreamSink, StreamSource, pauses, run_simulation
from rpaccel.zipf import ZipfSampler

# A small unit with every feature: 4 line banks (rows of 1, 2 or 4 lines), both caches, a fractional bandwidth.
CONFIG = replace(preset("tiny"), max_emb_dim=16, dyn_cache_line_bytes=4, static_cache_rows=16, dyn_cache_sets=16,
                 dyn_cache_ways=2, max_outstanding_misses=24, max_pooling=128, emb_requant_lanes=4,
                 mem_bytes=1 << 14, mem_latency_cycles=16, mem_bytes_per_cycle=3, max_tables=4)


def test_requantizer_matches_numpy_under_stalls():
    layouts = Layouts(EmbeddingGeometry.from_config(CONFIG))
    g = layouts.g
    rng = np.random.default_rng(4)
    limit = 1 << (g.acc_bits - 1)
    edge = [(limit - 1, M_MAX, 0), (-limit, M_MAX, 0), (limit - 1, M_MAX, S_MAX), (-limit, M_MAX, 20),
            (-5, 1, 1), (5, 1, 1), (-3, 1, 1), (255, 1, 1), (-257, 1, 1), (-259, 1, 1), (1000, 0, 3)]
    sums, expected = [], []
    for k in range(150):
        row_lines = int(rng.integers(0, g.bank_bits + 1))
        dim = g.line_bytes << row_lines
        acc = rng.integers(-limit, limit, g.row_bytes)
        acc[dim:] = 0
        if k < len(edge):
            acc[:dim] = edge[k][0]
            m, s = edge[k][1], edge[k][2]
        else:
            m = int(rng.integers(0, M_MAX + 1))
            s = int(rng.integers(0, S_MAX + 1)) if rng.random() < 0.3 else int(rng.integers(10, 26))
        table, end = int(rng.integers(0, g.tables)), int(rng.integers(0, 2))
        sums.append({"acc": acc.tolist(), "bag": {"table": table, "last": 1, "end": end, "row_lines": row_lines,
                                                  "m": m, "s": s}})
        data = np.zeros(g.row_bytes, dtype=np.int64)
        data[:dim] = requantize(acc[:dim], m, s)
        expected.append({"table": table, "end": end, "data": data.tolist()})
    dut = Requantizer(layouts)
    got = []

    async def send(ctx):
        await StreamSource(dut.i, pause=0.3, seed=1).send(ctx, sums)

    async def receive(ctx):
        got.extend(await StreamSink(dut.o, pause=0.3, seed=2).receive(ctx, len(sums)))

    run_simulation(dut, [send, receive], name="requantizer")
    assert got == expected


def _drive(dut, script, *, pause, seed):
    """Play a script in the Amaranth simulator with raw payload bits (the script's commands are packed)."""
    expect = script.expect()
    words = {name: [] for name in expect}

    async def send(ctx):
        idle = pauses(pause, seed)
        payload = Value.cast(dut.cmd.payload)
        for bits in script.commands:
            while next(idle):
                ctx.set(dut.cmd.valid, 0)
                await ctx.tick()
            ctx.set(payload, bits)
            ctx.set(dut.cmd.valid, 1)
            while not (await ctx.tick().sample(dut.cmd.ready))[2]:
                pass
        ctx.set(dut.cmd.valid, 0)

    def receiver(name, offset):
        port = getattr(dut, name)

        async def receive(ctx):
            stall = pauses(pause, seed + offset)
            payload = Value.cast(port.payload)
            while len(words[name]) < expect[name]:
                ready = not next(stall)
                ctx.set(port.ready, ready)
                _, _, valid, bits = await ctx.tick().sample(port.valid, payload)
                if ready and valid:
                    words[name].append(bits)
        return receive

    run_simulation(dut, [send, *(receiver(name, k + 1) for k, name in enumerate(expect))], max_cycles=100_000,
                   name="embedding-system")
    return decode(script, words["pooled"], words["counters"], words["mem_rsp"])


def small_script(seed=1):
    g = EmbeddingGeometry.from_config(CONFIG)
    layout = EmbeddingLayout(g, [TableSpec(30, 16, 4, 300, 10), TableSpec(20, 8, 6, 900, 9),
                                 TableSpec(40, 4, 10, 3000, 11)])
    rng = np.random.default_rng(seed)
    script = EmbeddingScript(CONFIG)
    script.load(layout, random_tables(rng, layout))
    script.counters_read(clear=True)
    bags = zipf_bags(rng, [ZipfSampler(s.rows, 1.0) for s in layout.tables], 12, (1, 5))
    script.lookup(*bags[:3], ends=bags[3])
    script.counters_read()
    script.mem_read(5)
    return script


def test_end_to_end_in_the_amaranth_simulator():
    script = small_script()
    result = _drive(EmbeddingSystem(CONFIG), script, pause=0.3, seed=5)
    assert compare(script, result) == []
    assert result.counters[-1]["lookups"] == script.lookups > 50
    assert result.counters[-1]["static_hits"] > 0 and result.counters[-1]["line_hits"] > 0


@pytest.mark.parametrize(("static_rows", "ways"), [(0, 0), (0, 3), (16, 0)],
                         ids=["no-caches", "dynamic-only-3-way", "static-only"])
def test_cache_arrangements(static_rows, ways):
    config = replace(CONFIG, static_cache_rows=static_rows, dyn_cache_ways=ways, dyn_cache_sets=8)
    g = EmbeddingGeometry.from_config(config)
    tables = [TableSpec(60, 16, 4 if static_rows else 0, 300, 10), TableSpec(50, 4, 8 if static_rows else 0,
                                                                              3000, 11)]
    layout = EmbeddingLayout(g, tables)
    rng = np.random.default_rng(ways + static_rows)
    script = EmbeddingScript(config)
    script.load(layout, random_tables(rng, layout))
    script.counters_read(clear=True)
    bags = zipf_bags(rng, [ZipfSampler(s.rows, 1.0, permute=rng) for s in tables], 40, (1, 6))
    script.lookup(*bags[:3], ends=bags[3])
    script.counters_read()
    result = _drive(EmbeddingSystem(config), script, pause=0.3, seed=ways + 1)
    assert compare(script, result) == []
    counts = result.counters[-1]
    assert (counts["static_hits"] > 0) == bool(static_rows)
    assert (counts["line_hits"] > 0) == bool(ways)
    assert counts["line_misses"] > 0


@pytest.mark.parametrize("ways", [1, 2, 4])
def test_back_to_back_lookups_of_one_set(ways):
    """Bags of a few rows that share their sets, no idle cycles: most lookups find their set written by one of the
    three lookups ahead of them, which the tag block RAM does not hold yet (tags and LRU order are forwarded)."""
    config = replace(CONFIG, static_cache_rows=0, dyn_cache_ways=ways, dyn_cache_sets=8)
    g = EmbeddingGeometry.from_config(config)
    layout = EmbeddingLayout(g, [TableSpec(64, 4, 0, 300, 10), TableSpec(32, 16, 0, 3000, 11)])
    rng = np.random.default_rng(ways)
    script = EmbeddingScript(config)
    script.load(layout, random_tables(rng, layout))
    script.counters_read(clear=True)
    # Rows 0, 8, 16, ... of table 0 (one line each) share a set; so do the even rows of table 1 (four lines).
    pools = [np.arange(0, 64, 8)[:ways + 2], np.arange(0, 32, 2)[:ways + 2]]
    bags, size = 40, 8
    bag_tables = rng.integers(0, 2, bags)
    ids = np.concatenate([rng.choice(pools[t], size) for t in bag_tables])
    script.lookup(bag_tables, np.arange(0, bags * size + 1, size), ids)
    script.counters_read()
    result = _drive(EmbeddingSystem(config), script, pause=0.0, seed=1)
    assert compare(script, result) == []
    counts = result.counters[-1]
    assert counts["line_hits"] > 0 and counts["evictions"] > 0


class _Broken(wiring.Component):
    """The system with planted bugs: one pooled element off by one, one dynamic hit too many."""

    def __init__(self, config):
        self.inner = EmbeddingSystem(config)
        super().__init__(self.inner.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        wiring.connect(m, wiring.flipped(self.cmd), inner.cmd)
        wiring.connect(m, inner.mem_rsp, wiring.flipped(self.mem_rsp))
        for name in ("pooled", "counters"):
            port, source = getattr(self, name), getattr(inner, name)
            m.d.comb += [port.valid.eq(source.valid), source.ready.eq(port.ready), port.payload.eq(source.payload)]
        pooled = inner.pooled.payload
        m.d.comb += self.pooled.payload.data[3].eq(pooled.data[3] + (pooled.table == 1))
        m.d.comb += self.counters.payload.line_hits.eq(inner.counters.payload.line_hits + 1)
        return m


def test_comparison_catches_planted_bugs():
    script = small_script()
    problems = compare(script, _drive(_Broken(CONFIG), script, pause=0.0, seed=5))
    assert any(p.startswith("pooled:") and "vectors differ" in p for p in problems)
    assert any("line_hits" in p and "reference model" in p for p in problems)


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"dyn_cache_line_bytes \(32\) must divide the widest row"):
        EmbeddingUnit(replace(CONFIG, dyn_cache_line_bytes=32))
    with pytest.raises(ValueError, match="Memory must be 'model' or 'bram', not 'dram'"):
        EmbeddingSystem(CONFIG, memory="dram")
    script = small_script()
    with pytest.raises(LayoutError, match=r"Bag 1: ID 20 is out of range for table 1 \(20 rows\)"):
        script.lookup([0, 1], [0, 1, 2], [0, 20])
    with pytest.raises(LayoutError, match="update: ID 40 is out of range for table 2"):
        script.update(2, 40, np.zeros(4))
    with pytest.raises(LayoutError, match="The layout was made for another geometry"):
        EmbeddingScript(CONFIG).load(EmbeddingLayout(EmbeddingGeometry.from_config(preset("small")),
                                                     [TableSpec(4, 16)]), [np.zeros((4, 16))])


def _requantizer_on_ecp5(**kwargs):
    layouts = Layouts(EmbeddingGeometry.from_config(CONFIG))
    return check_ecp5_equivalence(Requantizer(layouts), Requantizer(layouts), cycles=20_000, seed=2, prove=False,
                                  **kwargs)


@pytest.mark.synth
def test_mapped_ecp5_requantizer_matches_generic_requantizer():
    """On the ECP5 each lane's multiplier is a MULT18X18D with its own registers (``x2`` and ``m`` in, the product
    out): the Yosys-mapped netlist against the generic form over random cycles (simulation only: the output
    queue's LUT RAM keeps the proof of `sim.equivalence` from pairing its words)."""
    result = _requantizer_on_ecp5()
    assert result.cycles == 20_000
    assert result.cells["MULT18X18D"] == CONFIG.emb_requant_lanes
    for dsp in result.dsp_parameters:
        assert {dsp[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")} == {"CLK0"}


@pytest.mark.synth
def test_requantizer_equivalence_catches_a_sign_extended_scale(monkeypatch):
    """Planted bug: ``m`` (unsigned 16 bits) handed to the DSP block without its zero top bit, so scales from
    2**15 up are read as negative."""
    original = embedding_module.ecp5_registered_multiplier
    monkeypatch.setattr(embedding_module, "ecp5_registered_multiplier",
                        lambda a, b, product, en: original(a, b[:M_BITS], product, en))
    with pytest.raises(EquivalenceFailure, match=r"simulation \(seed 2\): MISMATCH"):
        _requantizer_on_ecp5()
