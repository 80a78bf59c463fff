"""The dual-cache ablation and the throughput limits of the embedding unit.

Four cache arrangements with the same on-chip bytes (none; static only; dynamic only; both, the ``small``
preset) each run, on Verilator through the file-driven player, the same workload at Zipf exponents 0.8, 1.0 and
1.2: the host profiles a training trace, renumbers every table by descending frequency, splits the static cache
between tables, loads memory, configures and preloads the unit, warms the caches, then measures. One more
workload at Zipf 1.0 measures a trace that has drifted from its profile (``--drift``). Every pooled vector is
compared with the golden model and every counter with the reference cache model. A second table shows the
limits: all static hits, all dynamic hits and all misses (:func:`run_embedding`, ``rpaccel bench embedding``).
:func:`run_embedding_synth` synthesises the unit and its block-RAM memory on the configuration's target, for its
own section.
"""

import copy
import time
from dataclasses import dataclass, replace

import numpy as np

from ..results import format_table
from .report import ExperimentError, ExperimentFailed, Report, Section, check_positive, check_seed
from .synth import device_label, synthesize_config

__all__ = ["EXPONENTS", "arrangements", "run_embedding", "run_embedding_synth"]

#: The Zipf exponents of the ablation.
EXPONENTS = (0.8, 1.0, 1.2)


@dataclass(frozen=True)
class _Trace:
    """The workload's shape: lookups measured and before measuring, tables, rows, dimension, IDs per bag, seed."""

    lookups: int
    warmup: int
    tables: int
    rows: int
    dim: int
    pooling: int
    seed: int


def arrangements(config):
    """The four cache arrangements at the on-chip bytes of ``config`` (the ``both`` one).

    Raises
    ------
    ExperimentError
        If ``config`` has no dynamic cache, or its caches' bytes do not make a whole power-of-two number of sets.
    """
    from ..config import ConfigError
    from ..embedding import EmbeddingGeometry

    g = EmbeddingGeometry.from_config(config)
    if not config.dyn_cache_ways:
        raise ExperimentError(None, f"the {config.name} configuration has no dynamic cache (dyn_cache_ways = 0)")
    total = g.static_bytes + g.dynamic_bytes
    static_rows = total // config.max_emb_dim
    sets = total // (config.dyn_cache_ways * config.dyn_cache_line_bytes)
    try:
        return {
            "none": replace(config, static_cache_rows=0, dyn_cache_ways=0),
            "static": replace(config, static_cache_rows=static_rows, dyn_cache_ways=0),
            "dynamic": replace(config, static_cache_rows=0, dyn_cache_sets=sets),
            "both": config,
        }
    except ConfigError as error:
        raise ExperimentError(None, f"the {config.name} configuration's {total:,} on-chip cache bytes cannot all go "
                              f"to the dynamic cache: {error}") from None


def _bags(rng, ids_per_table, pooling):
    """Bags in item order (one per table per item) from per-table ID arrays of equal length."""
    tables, count = len(ids_per_table), len(ids_per_table[0])
    items = count // pooling
    stacked = np.stack([ids[:items * pooling].reshape(items, pooling) for ids in ids_per_table], axis=1)
    ids = stacked.reshape(-1)
    bag_tables = np.tile(np.arange(tables), items)
    offsets = np.arange(0, len(ids) + 1, pooling)
    ends = (np.arange(len(bag_tables)) % tables) == tables - 1
    return bag_tables, offsets, ids, ends


def _drifted(sampler, fraction, rng):
    """A copy of ``sampler`` in which a random ``fraction`` of the ranks swap their IDs among themselves."""
    moved = rng.choice(sampler.n, round(fraction * sampler.n), replace=False)
    permutation = sampler.permutation.copy()
    permutation[moved] = permutation[rng.permutation(moved)]
    drifted = copy.copy(sampler)
    drifted.permutation = permutation
    return drifted


class _Workload:
    """One exponent: a profiled, renumbered trace; with ``drift`` the measured trace no longer follows the profile."""

    def __init__(self, trace, geometry, exponent, rng, drift=0.0):
        from ..embedding import profile_counts, renumbering
        from ..zipf import ZipfSampler

        per_table = (trace.warmup + trace.lookups) // trace.tables
        self.exponent = exponent
        self.drift = drift
        self.label = f"{exponent:g}" + (f", {drift:.0%} drift" if drift else "")
        self.train, self.test = [], []
        counts = []
        for _ in range(trace.tables):
            sampler = ZipfSampler(trace.rows, exponent, permute=rng)
            train = sampler.sample(rng, per_table)
            new_of_old, _ = renumbering(profile_counts(trace.rows, train))
            counts.append(np.bincount(new_of_old[train], minlength=trace.rows))
            test_sampler = _drifted(sampler, drift, rng) if drift else sampler
            self.test.append(new_of_old[test_sampler.sample(rng, per_table)])
        self.counts, self.row_lines = counts, trace.dim // geometry.line_bytes
        split = trace.warmup // trace.tables
        self.warmup = _bags(rng, [ids[:split] for ids in self.test], trace.pooling)
        self.measured = _bags(rng, [ids[split:] for ids in self.test], trace.pooling)

    def static_rows(self, geometry):
        """Static rows per table for the static capacity of ``geometry``."""
        from ..embedding import allocate_static

        return allocate_static(self.counts, [self.row_lines] * len(self.counts), geometry.static_lines)


def _run_arrangement(name, config, trace, workloads, data_rng_seed, limits):
    from ..embedding import EmbeddingGeometry, EmbeddingLayout, TableSpec
    from ..rtl.embedding import EmbeddingSystem
    from ..sim.golden.embedding import EmbeddingScript, compare, play, random_tables
    from ..sim.player import Player

    g = EmbeddingGeometry.from_config(config)
    base = [TableSpec(trace.rows, trace.dim, 0, 1200, 14) for _ in range(trace.tables)]
    layout = EmbeddingLayout(g, base)
    script = EmbeddingScript(config)
    script.load(layout, random_tables(np.random.default_rng(data_rng_seed), layout), preload=False)
    segments = []
    for w in workloads:
        static = w.static_rows(g)
        script.configure(EmbeddingLayout(g, [replace(t, static_rows=h) for t, h in zip(base, static)]))
        for t in range(trace.tables):
            script.preload(t)
        script.lookup(*w.warmup[:3], ends=w.warmup[3])
        script.counters_read(clear=True)
        script.lookup(*w.measured[:3], ends=w.measured[3])
        script.counters_read()
        segments.append(("zipf", w.label))
    if limits:
        segments += _limit_segments(script, trace, g)
    mem_lines = 1 << max(1, (layout.mem_lines - 1).bit_length())
    started = time.perf_counter()
    result = play(Player(EmbeddingSystem, config, storage="verilog", mem_lines=mem_lines), script)
    wall = time.perf_counter() - started
    problems = compare(script, result)
    if problems:
        raise ExperimentFailed(f"embedding bench, arrangement {name}: " + "; ".join(problems[:3]))
    # Snapshots come in pairs (clear, then read) per segment.
    measured = [c for k, c in enumerate(result.counters) if k % 2 == 1]
    return [{"arrangement": name, "kind": kind, "value": value, "static_bytes": g.static_bytes,
             "dynamic_bytes": g.dynamic_bytes, "counters": c, "row_lines": trace.dim // g.line_bytes}
            for (kind, value), c in zip(segments, measured)], result, wall, script


def _limit_segments(script, trace, g):
    """All static hits, all dynamic hits (a working set the dynamic cache holds), all misses (no reuse)."""
    rng = np.random.default_rng(trace.seed + 99)
    layout = script.layout
    n = trace.lookups
    segments = []
    hot = [t.static_rows for t in layout.tables]
    if min(hot) > 0:
        ids = [rng.integers(0, h, n // trace.tables) for h in hot]
        script.counters_read(clear=True)
        script.lookup(*_bags(rng, ids, trace.pooling)[:3])
        script.counters_read()
        segments.append(("limit", "all static hits"))
    if g.ways:
        # Each table's working set covers its own range of sets (fit rows of n lines: a line per set at most).
        n_lines = trace.dim // g.line_bytes
        fit = g.sets // n_lines // trace.tables
        starts = []
        for t in range(trace.tables):
            base = layout.mem_base[t] + n_lines * hot[t]
            starts.append(hot[t] + (t * fit * n_lines - base) % g.sets // n_lines)
        ids = [rng.integers(s, s + fit, n // trace.tables) for s in starts]
        script.lookup(*_bags(rng, [np.arange(s, s + fit) for s in starts], 1)[:3])    # every row once
        script.counters_read(clear=True)
        script.lookup(*_bags(rng, ids, trace.pooling)[:3])
        script.counters_read()
        segments.append(("limit", "all dynamic hits"))
    per_table = n // trace.tables
    ids = [(hot[t] + np.arange(per_table)) % trace.rows for t in range(trace.tables)]
    if per_table > trace.rows - max(hot):
        raise ExperimentError("lookups", f"is too large for a miss sweep over {trace.rows} rows per table")
    script.flush()
    script.counters_read(clear=True)
    script.lookup(*_bags(rng, ids, trace.pooling)[:3])
    script.counters_read()
    segments.append(("limit", "all misses"))
    return segments


def _row(r, config):
    c = r["counters"]
    lines = c["lookups"] * r["row_lines"]
    onchip = c["static_hits"] * r["row_lines"] + c["line_hits"]
    dynamic_lines = lines - c["static_hits"] * r["row_lines"]
    bandwidth = c["mem_lines"] * config.dyn_cache_line_bytes / c["cycles"]
    return {
        "lookups_per_cycle": c["lookups"] / c["cycles"],
        "static_hit_rate": c["static_hits"] / c["lookups"],
        "dynamic_hit_rate": c["line_hits"] / dynamic_lines if dynamic_lines else 0.0,
        "onchip_rate": onchip / lines,
        "bandwidth": bandwidth,
        "bandwidth_share": bandwidth / config.mem_bytes_per_cycle,
    }


def run_embedding(config, *, lookups=48_000, warmup=16_000, tables=8, rows=8192, dim=64, pooling=8, seed=1,
                  drift=0.25, progress=None):
    """The dual-cache ablation and the throughput limits of the embedding unit, on Verilator.

    Parameters
    ----------
    config : AccelConfig
        The configuration whose on-chip bytes the four arrangements share (its own is ``both``).
    lookups, warmup : int
        Lookups measured per workload, and run before measuring.
    tables, rows, dim : int
        Embedding tables, rows per table, embedding dimension.
    pooling : int
        IDs per bag.
    seed : int
        Random seed.
    drift : float
        Share of the ranks whose IDs change between the profiled and the measured trace in the extra
        stale-profile workload at Zipf 1.0 (0 leaves that workload out).
    progress : callable, optional
        Called with a line before each arrangement's run.

    Returns
    -------
    Report
        One row per arrangement and workload (counters, hit rates, lookups per cycle, bandwidth), the
        ``embedding`` section.

    Raises
    ------
    ExperimentFailed
        If a pooled vector or a counter differs from the golden and reference models.
    """
    from ..embedding import EmbeddingGeometry

    check_positive(lookups=lookups, warmup=warmup, tables=tables, rows=rows, dim=dim, pooling=pooling)
    check_seed(seed)
    if not 0 <= drift <= 1:
        raise ExperimentError("drift", f"must be between 0 and 1, not {drift}")
    g = EmbeddingGeometry.from_config(config)
    if dim % g.line_bytes or dim > g.row_bytes or dim & (dim - 1):
        raise ExperimentError("dim", f"must be a power of two, a multiple of {g.line_bytes} and at most "
                              f"{g.row_bytes}, not {dim}")
    if tables > g.tables:
        raise ExperimentError("tables", f"must be at most {g.tables}, not {tables}")
    trace = _Trace(lookups, warmup, tables, rows, dim, pooling, seed)
    configs = arrangements(config)
    rng = np.random.default_rng(seed)
    workloads = [_Workload(trace, g, a, rng) for a in EXPONENTS]
    if drift:
        workloads.append(_Workload(trace, g, 1.0, rng, drift=drift))
    results, walls, cycles = [], [], 0
    for name, cfg in configs.items():
        if progress:
            progress(f"  {name}: static {EmbeddingGeometry.from_config(cfg).static_bytes // 1024} KiB, dynamic "
                     f"{EmbeddingGeometry.from_config(cfg).dynamic_bytes // 1024} KiB ...")
        out, result, wall, _ = _run_arrangement(name, cfg, trace, workloads, seed + 1, limits=name == "both")
        results += out
        walls.append(wall)
        cycles += result.cycles
    for r in results:
        r.update(_row(r, config))
    ablation = [r for r in results if r["kind"] == "zipf"]
    limits = [r for r in results if r["kind"] == "limit"]
    table = format_table(
        ["arrangement", "static KiB", "dynamic KiB", "Zipf", "lookups/cycle", "static hits (rows)",
         "dynamic hits (lines)", "on-chip (bytes)", "memory B/cycle", "of limit"],
        [[r["arrangement"], r["static_bytes"] // 1024, r["dynamic_bytes"] // 1024, r["value"],
          round(r["lookups_per_cycle"], 3), f"{r['static_hit_rate']:.1%}", f"{r['dynamic_hit_rate']:.1%}",
          f"{r['onchip_rate']:.1%}", round(r["bandwidth"], 2), f"{r['bandwidth_share']:.0%}"] for r in ablation])
    limit_table = format_table(
        ["case (arrangement both)", "lookups/cycle", "memory B/cycle", "of limit"],
        [[r["value"], round(r["lookups_per_cycle"], 3), round(r["bandwidth"], 2), f"{r['bandwidth_share']:.1%}"]
         for r in limits])
    by = {(r["arrangement"], r["value"]): r for r in ablation}
    verdict = []
    for w in workloads:
        both, static, dynamic = (by[(name, w.label)] for name in ("both", "static", "dynamic"))
        best = max(static["onchip_rate"], dynamic["onchip_rate"])
        verdict.append(f"Zipf {w.label}: both {both['onchip_rate']:.1%} of bytes on chip, "
                       f"{both['lookups_per_cycle']:.3f} lookups/cycle; static only {static['onchip_rate']:.1%}, "
                       f"{static['lookups_per_cycle']:.3f}; "
                       f"dynamic only {dynamic['onchip_rate']:.1%}, {dynamic['lookups_per_cycle']:.3f} "
                       f"({'both beat either alone' if both['onchip_rate'] > best else 'both do NOT beat the best'})")
    miss = next((r for r in limits if r["value"] == "all misses"), None)
    total = sum(r["counters"]["lookups"] for r in results)
    notes = (
        f"Workload: {trace.tables} tables of {trace.rows:,} rows, dimension {trace.dim} "
        f"({trace.dim // g.line_bytes} lines of {g.line_bytes} B), {trace.pooling} IDs per bag, bags in item order. "
        f"Per exponent the host profiles a training trace of the same length as the test trace, renumbers each "
        f"table by descending frequency, gives the static cache to the rows with the most accesses over all "
        f"tables, then runs {trace.warmup:,} warm-up lookups and measures {trace.lookups:,}. In the drift "
        f"workload the measured trace comes from the same Zipf distribution with {drift:.0%} of the ranks' IDs "
        f"shuffled among themselves (the profile is stale: some "
        f"hot rows have cooled, some cold rows have become hot). Memory model: latency "
        f"{config.mem_latency_cycles} cycles, {config.mem_bytes_per_cycle} B/cycle (the limit); "
        f"{config.max_outstanding_misses} lines may be in flight. "
        f"On-chip bytes equal in every cached arrangement ({(g.static_bytes + g.dynamic_bytes) // 1024} KiB); "
        f"dynamic cache {config.dyn_cache_ways}-way LRU, {g.line_bytes}-B lines. Static hits are rows; dynamic hits "
        f"are lines of the rows that are not static; on-chip is the share of all gathered bytes served from either "
        f"cache. Each arrangement is one Verilator run ({total:,} lookups over all, {cycles:,} cycles simulated in "
        f"{sum(walls):.0f} s); every pooled vector matched the golden model and every counter the reference cache "
        f"model.\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n\n" + _why(by, workloads)
        + ("\n\nLimits (arrangement both): " + "; ".join(
            f"{r['value']} {r['lookups_per_cycle']:.3f} rows/cycle" for r in limits if "hits" in r["value"])
           + f" (the unit has one lane: a {trace.dim}-B row is read from {trace.dim // g.line_bytes} banks in one "
           f"cycle); with all misses {miss['lookups_per_cycle']:.3f} rows/cycle, {miss['bandwidth']:.2f} of "
           f"{config.mem_bytes_per_cycle} B/cycle: {miss['bandwidth_share']:.1%} of the memory model's bandwidth."
           if miss else ""))
    text = "\n".join([table, limit_table, *verdict])
    section = Section("embedding", "Embedding unit: dual-cache ablation and throughput limits",
                      table + "\n\n" + limit_table + "\n\n" + notes)
    return Report(rows=results, text=text, sections=(section,), data={"rows": results})


def _why(by, workloads):
    """The reason the split wins or loses, with the figures of Zipf 1.0 and of the drift workload."""
    stationary = next(w for w in workloads if w.exponent == 1.0 and not w.drift)
    both, static = by[("both", stationary.label)], by[("static", stationary.label)]
    text = (f"Why: with a stationary trace and a profile of the same distribution, the static cache holds the rows "
            f"with the highest access probability, the best any cache of its size can hold when references are "
            f"independent; giving half of it to LRU lines trades its coldest static rows ("
            f"{static['onchip_rate'] - both['static_hit_rate']:.1%} of the bytes at Zipf {stationary.label}) for an "
            f"LRU half that keeps recently used tail rows and recovers only "
            f"{both['onchip_rate'] - both['static_hit_rate']:.1%} of the bytes ({both['dynamic_hit_rate']:.1%} of the "
            f"lines it sees).")
    drift = next((w for w in workloads if w.drift), None)
    if drift:
        b, s, d = (by[(name, drift.label)] for name in ("both", "static", "dynamic"))
        text += (f" When the profile is stale (Zipf {drift.label}), static alone falls to {s['onchip_rate']:.1%} "
                 f"while the split keeps {b['onchip_rate']:.1%} ({b['static_hit_rate']:.1%} static, its LRU half "
                 f"catching {b['dynamic_hit_rate']:.1%} of the other lines) and dynamic alone {d['onchip_rate']:.1%}: "
                 f"the dynamic cache is the insurance against the profile going out of date.")
    return text


def run_embedding_synth(config, *, pnr_timeout=None, progress=None):
    """Synthesise the embedding unit and the block-RAM memory that can serve its port, on ``config``'s target.

    Parameters
    ----------
    config : AccelConfig
        The configuration (its cache sizes; its ``target``).
    pnr_timeout : float, optional
        Seconds a build may take (synthesis, placement and routing); a build cut short reports Yosys's cell counts
        and nextpnr's estimate after placement.
    progress : callable, optional
        Called with a line after each build.

    Returns
    -------
    Report
        One row per build, the ``embedding-synth`` section.
    """
    from ..embedding import EmbeddingGeometry

    if pnr_timeout is not None and not pnr_timeout > 0:
        raise ExperimentError("pnr_timeout", f"must be a positive number of seconds, not {pnr_timeout:g}")
    g = EmbeddingGeometry.from_config(config)
    results = []
    for component in ("embedding", "memory-bram"):
        results.append(synthesize_config(component, config, timeout=pnr_timeout))
        r = results[-1]
        fmax = f"{r['fmax_mhz']} MHz" if r["routed"] else f"not routed within {pnr_timeout:g} s" + (
            f" (placement estimate {r['placed_fmax_mhz']} MHz)" if r.get("placed_fmax_mhz") else "")
        if progress:
            progress(f"  {component} on {r['target']}: {fmax}, {r['cells']['luts']} LUTs")
    rows = [[r["component"], r["target"], r["preset"], r["clock_constraint_mhz"],
             r["fmax_mhz"] if r["routed"] else f"not routed in {pnr_timeout:g} s" + (
                 f"; {r['placed_fmax_mhz']} after placement" if r.get("placed_fmax_mhz") else ""),
             ("yes" if r["meets_timing"] else "no") if r["routed"] else "unknown", r["cells"]["luts"],
             r["cells"]["ffs"], r["harness"]["ffs"], r["cells"]["dsps"],
             f"{r['utilization']['brams']['used']} / {r['utilization']['brams']['available']}" if r["routed"]
             else r["cells"]["brams"],
             f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
            for r in results]
    table = format_table(["component", "target", "preset", "constraint MHz", "Fmax MHz", "meets", "LUTs", "FFs",
                          "of which harness FFs", "DSPs", "DP16KD", "critical path"], rows)
    notes = (f"Cache sizes of the {config.name} configuration: static {g.static_bytes // 1024} KiB "
             f"({g.static_rows:,} rows of {g.row_bytes} B), dynamic {g.dynamic_bytes // 1024} KiB ({g.sets} sets x "
             f"{g.ways} ways x {g.line_bytes} B) plus tags, in {g.banks} line banks; entry queue {g.queue_depth}; "
             f"{g.requant_lanes} requantisers. The unit's memory port leaves it (through the pin harness); "
             "memory-bram is the block-RAM memory that can serve that port on the board. LUTs and FFs are Yosys's "
             "post-synthesis counts (a CCU2C counts as two LUTs) and include the pin harness. Fmax is nextpnr's "
             "estimate at seed 1. "
             + "".join(f"Critical path of {r['component']}: {r['critical_path']['delay_ns']} ns "
                       f"({r['critical_path']['clock_to_out_ns']} clock-to-output, "
                       f"{r['critical_path']['logic_ns']} logic, {r['critical_path']['routing_ns']} routing). "
                       for r in results if r["critical_path"])
             + "".join(f"The build of {r['component']} was stopped after --pnr-timeout {pnr_timeout:g} s "
                       "(synthesis, placement and routing on the shared 2-core machine): its row has Yosys's cell "
                       "counts, no routed Fmax, and nextpnr's estimate after placement where placement finished "
                       "(routed delays are usually longer). " for r in results if not r["routed"])
             + "Tools: " + ", ".join(results[0]["tools"].values()) + ".")
    section = Section("embedding-synth", f"Embedding unit: synthesis on the {device_label(config.target)}",
                      table + "\n\n" + notes)
    return Report(rows=results, text=table, sections=(section,), data={"synthesis": results})
