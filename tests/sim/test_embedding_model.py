"""Embedding geometry, layouts, golden pooling, host-side static-cache preparation and the reference cache model."""

from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
from configs import SMALL16

from rpaccel.cachemodel import EmbeddingCacheModel, LRUCache
from rpaccel.config import ConfigError
from rpaccel.embedding import (
    EmbeddingGeometry,
    EmbeddingLayout,
    LayoutError,
    TableSpec,
    allocate_static,
    pool_bags,
    profile_counts,
    renumbering,
)
from rpaccel.numeric import requantize
from rpaccel.zipf import ZipfSampler

SMALL = EmbeddingGeometry.from_config(SMALL16)


def test_small_geometry():
    g = SMALL
    assert (g.row_bytes, g.line_bytes, g.banks) == (64, 16, 4)
    assert g.static_bytes == g.dynamic_bytes == 64 * 1024
    assert g.sets_per_bank == 256 and g.tag_bits == 21 - 10
    assert g.acc_bits == 18           # 1024 rows of int8 never overflow 18 bits
    assert g.queue_depth == 256       # twice the outstanding misses


@pytest.mark.parametrize(("change", "message"), [
    ({"dyn_cache_line_bytes": 32, "max_emb_dim": 16}, r"dyn_cache_line_bytes \(32\) must divide the widest row"),
    ({"dyn_cache_sets": 2}, r"dyn_cache_sets \(2\) must be at least the number of line banks \(4"),
    ({"max_outstanding_misses": 3}, r"max_outstanding_misses \(3\) must be at least the lines of the widest row"),
    ({"emb_requant_lanes": 128}, "emb_requant_lanes must be a power of two of at most max_emb_dim"),
    ({"mem_bytes": 1000}, "mem_bytes must be a power of two, not 1000"),
])
def test_geometry_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        EmbeddingGeometry.from_config(replace(SMALL16, **change))


def test_dynamic_cache_disabled_needs_no_sets():
    g = EmbeddingGeometry.from_config(replace(SMALL16, dyn_cache_ways=0, dyn_cache_sets=1))
    assert g.ways == 0 and g.dynamic_bytes == 0 and g.tag_bits == 0


def test_layout_places_tables_aligned():
    layout = EmbeddingLayout(SMALL, [TableSpec(10, 16, 3), TableSpec(5, 64, 2), TableSpec(7, 32, 1)])
    assert layout.row_lines == [1, 4, 2]
    assert layout.mem_base == [0, 12, 32]              # multiples of 4 banks
    assert layout.mem_lines == 32 + 16
    # Static regions in descending row width: table 1 (4 lines), table 2 (2), table 0 (1).
    assert layout.static_base == [10, 0, 8]
    assert all(b % n == 0 for b, n in zip(layout.static_base, layout.row_lines))
    assert layout.line_address(2, [0, 3]).tolist() == [32, 38]


@pytest.mark.parametrize(("tables", "message"), [
    ([TableSpec(10, 8)], r"Table 0: the line size \(16 bytes\) must divide the row \(dim 8\)"),
    ([TableSpec(10, 48)], r"Table 0: the line size \(16 bytes\) must divide the row \(dim 48\)"),
    ([TableSpec(10, 16), TableSpec(10, 128)], r"Table 1: .* at most 64 bytes"),
    ([TableSpec(10, 16, 11)], r"Table 0: static_rows must be in \[0, rows = 10\], not 11"),
    ([TableSpec(0, 16)], "Table 0: rows must be positive, not 0"),
    ([TableSpec(10, 16, m=1 << 16)], r"Table 0: Requantisation multiplier m must be an integer in \[0, 65535\]"),
    ([TableSpec(5000, 64, 1025)], r"Static rows need 4100 lines of the static cache, which holds 4096"),
    ([TableSpec(1 << 20, 64)], "Tables need 4194304 memory lines, more than the memory's 2097152"),
    ([TableSpec(1, 16)] * 65, r"65 tables do not fit the unit's 64 \(emb_tables\)"),
])
def test_layout_errors_name_table_and_value(tables, message):
    with pytest.raises(LayoutError, match=message):
        EmbeddingLayout(SMALL, tables)


def test_pool_bags_matches_a_loop():
    rng = np.random.default_rng(0)
    layout = EmbeddingLayout(SMALL, [TableSpec(50, 16, m=300, s=9), TableSpec(40, 64, m=7, s=3)])
    data = [rng.integers(-128, 128, (s.rows, s.dim), dtype=np.int8) for s in layout.tables]
    counts = rng.integers(1, 81, 30)
    bag_tables = rng.integers(0, 2, 30)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ids = np.concatenate([rng.integers(0, layout.tables[t].rows, c) for t, c in zip(bag_tables, counts)])
    got = pool_bags(layout, data, bag_tables, offsets, ids)
    for b, t in enumerate(bag_tables):
        spec = layout.tables[t]
        total = sum(data[t][i].astype(np.int64) for i in ids[offsets[b]:offsets[b + 1]])
        assert got[b, :spec.dim].tolist() == requantize(total, spec.m, spec.s).tolist()
        assert not got[b, spec.dim:].any()


def test_pool_bags_names_the_bad_bag():
    layout = EmbeddingLayout(SMALL, [TableSpec(5, 16), TableSpec(9, 16)])
    data = [np.zeros((5, 16), np.int8), np.zeros((9, 16), np.int8)]
    with pytest.raises(LayoutError, match=r"Bag 2: ID 5 is out of range for table 0 \(5 rows\)"):
        pool_bags(layout, data, [0, 1, 0], [0, 1, 3, 5], [1, 8, 7, 2, 5])
    with pytest.raises(LayoutError, match=r"Bag 1 holds 0 IDs; a bag holds 1 to 1024"):
        pool_bags(layout, data, [0, 1], [0, 1, 1], [1])


def _brute_force_lru(lines, sets, ways):
    # An independent transcription: per set a list, most recent last.
    state = [[] for _ in range(sets)]
    hits = evictions = 0
    for line in lines:
        s, tag = line % sets, line // sets
        if tag in state[s]:
            state[s].remove(tag)
            hits += 1
        elif len(state[s]) == ways:
            state[s].pop(0)
            evictions += 1
        state[s].append(tag)
    return hits, len(lines) - hits, evictions


@pytest.mark.parametrize(("sets", "ways", "exponent"), [(1, 4, 0.0), (16, 1, 1.0), (8, 3, 0.8), (64, 8, 1.2)])
def test_lru_cache_matches_brute_force(sets, ways, exponent):
    lines = ZipfSampler(500, exponent, permute=True).sample(np.random.default_rng(sets + ways), 5000).tolist()
    cache = LRUCache(sets, ways)
    for line in lines:
        cache.access(line)
    assert (cache.hits, cache.misses, cache.evictions) == _brute_force_lru(lines, sets, ways)


def test_lru_cache_by_hand():
    cache = LRUCache(1, 2)
    results = [cache.access(a) for a in [1, 2, 1, 3, 2, 1]]
    # 1 miss, 2 miss, 1 hit (2 is now LRU), 3 evicts 2, 2 evicts 1, 1 evicts 3.
    assert results == [False, False, True, False, False, False]
    assert (cache.hits, cache.misses, cache.evictions) == (1, 5, 3)


class _OrderedDictLRU:
    """The cache model before it was vectorised (an ordered dict per set, a Python step per line): the reference
    the block-at-once :class:`LRUCache` must equal, hit for hit and state for state."""

    def __init__(self, sets, ways):
        self.sets, self.ways = sets, ways
        self.flush()
        self.hits = self.misses = self.evictions = 0

    def flush(self):
        self.state = [OrderedDict() for _ in range(self.sets)]

    def access(self, line):
        entries, tag = self.state[line % self.sets], line // self.sets
        if tag in entries:
            entries.move_to_end(tag)
            self.hits += 1
            return True
        self.misses += 1
        if len(entries) == self.ways:
            entries.popitem(last=False)
            self.evictions += 1
        entries[tag] = True
        return False

    def lines(self):
        """Per set its lines, least recently used first."""
        return [[tag * self.sets + s for tag in entries] for s, entries in enumerate(self.state)]


def _cached_lines(cache):
    return [[line for line in row if line >= 0] for row in cache._lines.tolist()]


def test_lru_blocks_equal_a_step_per_line():
    # Random blocks (uniform and skewed, hot lines used back to back, lines far apart, huge addresses), single
    # accesses and flushes between them, on caches of 1 to 16 sets and 1 to 8 ways; some with a small window so
    # that the distinct lines between two uses are counted in several rounds.
    rng = np.random.default_rng(20)
    for trial in range(600):
        sets, ways = 1 << int(rng.integers(0, 5)), int(rng.integers(1, 9))
        cache, reference = LRUCache(sets, ways), _OrderedDictLRU(sets, ways)
        if trial % 3 == 0:
            cache.WINDOW_ELEMENTS = int(rng.integers(1, 64))
        universe = int(rng.integers(1, 8 * sets * ways + 2))
        offset = int(rng.choice([0, 1 << 40, (1 << 62) - universe]))
        for _ in range(int(rng.integers(1, 7))):
            weights = rng.random(universe) ** rng.choice([1, 4, 12])
            lines = offset + rng.choice(universe, int(rng.integers(0, 120)), p=weights / weights.sum())
            if rng.random() < 0.3:
                lines = np.repeat(lines, rng.integers(1, 4, len(lines)))
            if rng.random() < 0.2:
                cache.flush()
                reference.flush()
            for line in lines[:int(rng.integers(0, 4))].tolist():
                assert cache.access(line) == reference.access(line)
            hits = cache.access_lines(lines)
            assert hits.tolist() == [reference.access(line) for line in lines.tolist()], (trial, sets, ways)
            assert (cache.hits, cache.misses, cache.evictions) == (reference.hits, reference.misses,
                                                                   reference.evictions)
            assert _cached_lines(cache) == reference.lines()
            assert all(cache.contains(line) == any(line in row for row in reference.lines())
                       for line in lines[:5].tolist())


def test_lru_blocks_of_a_query_equal_a_step_per_line():
    # A query's lookups at scale: blocks of 2,000 lines (rows of one and of two lines) of Zipf IDs on 512 sets of
    # 8 ways, hits and misses block by block and the cached lines at the end.
    rng = np.random.default_rng(21)
    cache, reference = LRUCache(512, 8), _OrderedDictLRU(512, 8)
    sampler = ZipfSampler(50_000, 1.05, permute=True)
    for block in range(20):
        bases = 2 * sampler.sample(rng, 1000)
        lines = np.stack([bases, bases + 1], axis=1).reshape(-1) if block % 2 else bases
        assert cache.access_lines(lines).tolist() == [reference.access(line) for line in lines.tolist()], block
    assert (cache.hits, cache.misses, cache.evictions) == (reference.hits, reference.misses, reference.evictions)
    assert _cached_lines(cache) == reference.lines()


def test_lru_long_windows_between_uses():
    # Line 5's second use has 81 lines between, two distinct: a hit in 3 ways; line 7's has 71, three distinct.
    lines = np.r_[5, np.zeros(50, int), 7, np.zeros(30, int), 5, np.full(40, 9), 7]
    for window in (1, 8, 1 << 20):
        cache = LRUCache(1, 3)
        cache.WINDOW_ELEMENTS = window
        hits = cache.access_lines(lines)
        assert np.flatnonzero(~hits).tolist() == [0, 1, 51, 83, 123]
        assert (cache.hits, cache.misses, cache.evictions) == (119, 5, 2)
        assert _cached_lines(cache) == [[5, 9, 7]]


def test_a_negative_line_is_an_error_and_never_cached():
    cache = LRUCache(4, 2)
    cache.access_lines([5])                 # ways left invalid (-1)
    with pytest.raises(ValueError, match=r"A line address must be non-negative, not -1 \(line 1 of the block\)"):
        cache.access_lines([3, -1])
    with pytest.raises(ValueError, match="A line address must be non-negative, not -4"):
        cache.access(-4)
    assert not cache.contains(-1) and cache.contains_lines([-1, 5]).tolist() == [False, True]


def test_zero_ways_is_an_error():
    with pytest.raises(ValueError, match=r"A cache needs at least one way, not 0 \(to run without a dynamic cache, "
                                         r"set dyn_cache_ways = 0"):
        LRUCache(16, 0)
    with pytest.raises(ValueError, match="Cache sets must be a power of two, not 12"):
        LRUCache(12, 2)


def test_cache_model_counts_static_dynamic_and_range_errors():
    g = EmbeddingGeometry.from_config(replace(SMALL16, dyn_cache_sets=4, dyn_cache_ways=1))
    layout = EmbeddingLayout(g, [TableSpec(100, 32, static_rows=10)])
    model = EmbeddingCacheModel(layout)
    model.lookup(0, [3, 10, 10, 100, 12])
    # Row 10 is lines 20, 21 (sets 0, 1); row 12 is lines 24, 25: the same sets, direct-mapped: evicts both.
    assert model.counts == {"lookups": 5, "static_hits": 1, "line_hits": 2, "line_misses": 4, "evictions": 2,
                            "range_errors": 1, "mem_lines": 4}
    assert model.contains(0, 3) == "static" and model.contains(0, 12) == "dynamic" and model.contains(0, 10) is None
    model.flush()
    assert model.contains(0, 12) is None
    with pytest.raises(LayoutError, match=r"ID 100 is out of range for table 0 \(100 rows\)"):
        model.lookup(0, [100], check=True)


def test_profile_renumber_allocate():
    rng = np.random.default_rng(3)
    sampler = ZipfSampler(1000, 1.0, permute=True)
    trace = sampler.sample(rng, 50_000)
    counts = profile_counts(1000, trace)
    new_of_old, old_of_new = renumbering(counts)
    renumbered = np.bincount(new_of_old[trace], minlength=1000)
    assert (np.diff(renumbered) <= 0).all()                  # hottest rows first
    assert new_of_old[sampler.permutation[0]] == 0            # the true hottest row becomes ID 0
    assert (old_of_new[new_of_old] == np.arange(1000)).all()
    with pytest.raises(LayoutError, match=r"Trace position 1: ID 1000 is out of range \(1000 rows\)"):
        profile_counts(1000, [0, 1000])


def test_allocate_static_prefers_accesses_per_line():
    counts = [np.array([100, 50, 0, 10]), np.array([90, 80, 70])]
    # Equal widths: the 4 most frequent rows overall.
    assert allocate_static(counts, [1, 1], 4) == [1, 3]
    # Table 1 rows are twice as wide: 90/2 = 45 per line loses to 50.
    assert allocate_static(counts, [1, 2], 4) == [2, 1]
    # Never-accessed rows are not allocated.
    assert allocate_static(counts, [1, 1], 100) == [3, 3]


@pytest.mark.parametrize(("argv", "message"), [
    (["--dim", "48"], "--dim must be a power of two, a multiple of 16 and at most 32, not 48"),
    (["--tables", "70"], "--tables must be at most 64, not 70"),
    (["--lookups", "0"], "--lookups must be a positive integer, not 0"),
    (["--drift", "1.5"], "--drift must be between 0 and 1, not 1.5"),
])
def test_bench_embedding_rejects_bad_options(capsys, argv, message):
    from rpaccel.cli import main

    assert main(["bench", "embedding", *argv]) == 2
    assert message in capsys.readouterr().err
