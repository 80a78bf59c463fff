"""Embedding unit on Verilator through the file-driven player: long runs, bit-exact outputs, exact counters."""

from dataclasses import replace

import numpy as np
import pytest
from test_embedding_unit import CONFIG

from rpaccel.embedding import EmbeddingGeometry, EmbeddingLayout, TableSpec
from rpaccel.rtl.embedding import EmbeddingSystem
from rpaccel.sim.golden.embedding import EmbeddingScript, compare, play, random_tables, zipf_bags
from rpaccel.sim.player import Player
from rpaccel.zipf import ZipfSampler

pytestmark = pytest.mark.verilator

# Three tables with rows of 4, 2 and 1 lines; together their static rows fill the 64 static lines exactly.
TABLES = [TableSpec(300, 16, 6, 300, 10), TableSpec(200, 8, 10, 900, 9), TableSpec(500, 4, 20, 3000, 11)]


def player(config):
    return Player(EmbeddingSystem, config, storage="verilog")


def loaded(config, tables=TABLES, seed=0):
    g = EmbeddingGeometry.from_config(config)
    if not g.static_rows:
        tables = [replace(t, static_rows=0) for t in tables]
    layout = EmbeddingLayout(g, tables)
    script = EmbeddingScript(config)
    script.load(layout, random_tables(np.random.default_rng(seed), layout))
    return script, layout


def segment(script, rng, exponent, items, pooling):
    samplers = [ZipfSampler(s.rows, exponent, permute=rng) for s in script.layout.tables]
    bag_tables, offsets, ids, ends = zipf_bags(rng, samplers, items, pooling)
    script.counters_read(clear=True)
    script.lookup(bag_tables, offsets, ids, ends=ends)
    script.counters_read()


def check(script, result):
    problems = compare(script, result)
    assert not problems, "\n".join(problems)


def test_skews_pooling_stalls_coherence_flush_and_range_errors():
    rng = np.random.default_rng(1)
    script, layout = loaded(CONFIG)
    segment(script, rng, 0.0, 300, (1, 4))      # uniform
    segment(script, rng, 0.8, 40, (1, 80))      # multi-hot up to 80 rows
    segment(script, rng, 1.2, 300, (1, 8))

    # Coherence: update a static row, a row cached in the dynamic cache and a row only in memory; lookups
    # afterwards see the new values, and so does a read of memory (write-through).
    model = script.model
    cached = next((t, r) for t in range(3) for r in range(layout.tables[t].rows) if model.contains(t, r) == "dynamic")
    uncached = next((t, r) for t in range(3) for r in range(layout.tables[t].rows - 1, 0, -1)
                    if model.contains(t, r) is None)
    rows = [(2, 3), cached, uncached]
    assert [model.contains(t, r) for t, r in rows] == ["static", "dynamic", None]
    before = [script.data[t][r].copy() for t, r in rows]
    for t, r in rows:
        script.update(t, r, rng.integers(-128, 128, layout.tables[t].dim))
    assert all((script.data[t][r] != b).any() for (t, r), b in zip(rows, before))
    script.counters_read(clear=True)
    for t, r in rows:
        script.lookup([t, t], [0, 1, 3], [r, r, r])
    script.mem_read(int(layout.line_address(cached[0], cached[1])))
    script.counters_read()
    assert [model.contains(t, r) for t, r in rows] == ["static", "dynamic", "dynamic"]

    # Out-of-range IDs read as zero rows and are counted; a flush empties the dynamic cache.
    script.counters_read(clear=True)
    script.lookup([0, 1, 2], [0, 3, 5, 6], [1, 300, 2, 4000, 7, 1000], check=False)
    script.flush()
    script.lookup([0, 0], [0, 1, 2], [cached[1] if cached[0] == 0 else 7] * 2)
    script.counters_read()
    assert script.counters[-1]["range_errors"] == 3

    # A run-time static cache of size 0: every table reconfigured without static rows.
    script.configure(EmbeddingLayout(layout.geometry, [replace(t, static_rows=0) for t in TABLES]))
    segment(script, rng, 1.0, 100, (1, 6))
    assert script.counters[-1]["static_hits"] == 0

    result = play(player(CONFIG), script, pause=0.3, seed=7)
    check(script, result)
    assert script.lookups > 10_000
    assert result.counters[3]["line_hits"] > 0 and result.counters[3]["evictions"] > 0


def test_throughput_hits_and_misses():
    rng = np.random.default_rng(2)
    script, layout = loaded(CONFIG)
    # All static hits of the 4-line table: one row per cycle.
    n = 2000
    script.counters_read(clear=True)
    script.lookup(np.zeros(n // 4, int), np.arange(0, n + 1, 4), rng.integers(0, 6, n))
    script.counters_read()
    # Misses of the 4-line table (its 1200 lines against a 32-line dynamic cache): the memory's bandwidth.
    ids = rng.integers(6, 300, n)
    script.counters_read(clear=True)
    script.lookup(np.zeros(n // 4, int), np.arange(0, n + 1, 4), ids)
    script.counters_read()
    result = play(player(CONFIG), script, seed=3)
    check(script, result)
    hits, misses = result.counters[1], result.counters[3]
    assert hits["lookups"] / hits["cycles"] > 0.97
    bandwidth = misses["mem_lines"] * layout.geometry.line_bytes / misses["cycles"]
    assert misses["line_misses"] > 0.9 * 4 * n
    assert bandwidth > 0.95 * CONFIG.mem_bytes_per_cycle
