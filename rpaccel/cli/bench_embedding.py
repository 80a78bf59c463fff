"""``rpaccel bench embedding``: the dual-cache ablation and the throughput limits of the embedding unit.

Four cache arrangements with the same on-chip bytes (none; static only; dynamic only; both, the ``small``
preset) each run, on Verilator through the file-driven player, the same workload at Zipf exponents 0.8, 1.0 and
1.2: the host profiles a training trace, renumbers every table by descending frequency, splits the static cache
between tables, loads memory, configures and preloads the unit, warms the caches, then measures. One more
workload at Zipf 1.0 measures a trace that has drifted from its profile (``--drift``). Every pooled vector is
compared with the golden model and every counter with the reference cache model. A second table shows the
limits: all static hits, all dynamic hits and all misses. ``--synth`` adds the synthesis of the unit on the
ECP5-85F at the ``small`` preset's cache sizes, in its own section.
"""

import copy
import time
from dataclasses import replace

import numpy as np

from ..results import format_table
from .bench import Bench, record
from .common import CLIError, CommandFailed, print_json

EXPONENTS = (0.8, 1.0, 1.2)


def _arguments(p):
    p.add_argument("--lookups", type=int, default=48_000, help="measured lookups per exponent (default 48000)")
    p.add_argument("--warmup", type=int, default=16_000, help="lookups before measuring (default 16000)")
    p.add_argument("--tables", type=int, default=8, help="embedding tables (default 8)")
    p.add_argument("--rows", type=int, default=8192, help="rows per table (default 8192)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    p.add_argument("--pooling", type=int, default=8, help="IDs per bag (default 8)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--drift", type=float, default=0.25,
                   help="share of the ranks whose IDs change between the profiled and the measured trace in the extra "
                        "stale-profile workload at Zipf 1.0 (default 0.25; 0 leaves that workload out)")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise the unit and the block-RAM memory on ecp5-85f at the small preset (tens of "
                        "minutes) into their own section")
    p.add_argument("--synth-only", action="store_true", help="only the synthesis (implies --synth)")
    p.add_argument("--pnr-timeout", type=float, default=None,
                   help="stop a synthesis build after this many seconds and report Yosys's cell counts without an "
                        "Fmax (default: no limit)")


def arrangements(config):
    """The four cache arrangements at the on-chip bytes of ``config`` (the ``both`` one)."""
    from ..embedding import EmbeddingGeometry

    g = EmbeddingGeometry.from_config(config)
    total = g.static_bytes + g.dynamic_bytes
    static_rows = total // config.max_emb_dim
    sets = total // (config.dyn_cache_ways * config.dyn_cache_line_bytes)
    return {
        "none": replace(config, static_cache_rows=0, dyn_cache_ways=0),
        "static": replace(config, static_cache_rows=static_rows, dyn_cache_ways=0),
        "dynamic": replace(config, static_cache_rows=0, dyn_cache_sets=sets),
        "both": config,
    }


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

    def __init__(self, args, geometry, exponent, rng, drift=0.0):
        from ..embedding import profile_counts, renumbering
        from ..zipf import ZipfSampler

        per_table = (args.warmup + args.lookups) // args.tables
        self.exponent = exponent
        self.drift = drift
        self.label = f"{exponent:g}" + (f", {drift:.0%} drift" if drift else "")
        self.train, self.test = [], []
        counts = []
        for _ in range(args.tables):
            sampler = ZipfSampler(args.rows, exponent, permute=rng)
            train = sampler.sample(rng, per_table)
            new_of_old, _ = renumbering(profile_counts(args.rows, train))
            counts.append(np.bincount(new_of_old[train], minlength=args.rows))
            test_sampler = _drifted(sampler, drift, rng) if drift else sampler
            self.test.append(new_of_old[test_sampler.sample(rng, per_table)])
        self.counts, self.row_lines = counts, args.dim // geometry.line_bytes
        split = args.warmup // args.tables
        self.warmup = _bags(rng, [ids[:split] for ids in self.test], args.pooling)
        self.measured = _bags(rng, [ids[split:] for ids in self.test], args.pooling)

    def static_rows(self, geometry):
        """Static rows per table for the static capacity of ``geometry``."""
        from ..embedding import allocate_static

        return allocate_static(self.counts, [self.row_lines] * len(self.counts), geometry.static_lines)


def _run_arrangement(name, config, args, workloads, data_rng_seed, limits):
    from ..embedding import EmbeddingGeometry, EmbeddingLayout, TableSpec
    from ..rtl.embedding import EmbeddingSystem
    from ..sim.golden.embedding import EmbeddingScript, compare, play, random_tables
    from ..sim.player import Player

    g = EmbeddingGeometry.from_config(config)
    base = [TableSpec(args.rows, args.dim, 0, 1200, 14) for _ in range(args.tables)]
    layout = EmbeddingLayout(g, base)
    script = EmbeddingScript(config)
    script.load(layout, random_tables(np.random.default_rng(data_rng_seed), layout), preload=False)
    segments = []
    for w in workloads:
        static = w.static_rows(g)
        script.configure(EmbeddingLayout(g, [replace(t, static_rows=h) for t, h in zip(base, static)]))
        for t in range(args.tables):
            script.preload(t)
        script.lookup(*w.warmup[:3], ends=w.warmup[3])
        script.counters_read(clear=True)
        script.lookup(*w.measured[:3], ends=w.measured[3])
        script.counters_read()
        segments.append(("zipf", w.label))
    if limits:
        segments += _limit_segments(script, args, g)
    mem_lines = 1 << max(1, (layout.mem_lines - 1).bit_length())
    started = time.perf_counter()
    result = play(Player(EmbeddingSystem, config, storage="verilog", mem_lines=mem_lines), script)
    wall = time.perf_counter() - started
    problems = compare(script, result)
    if problems:
        raise CommandFailed(f"embedding bench, arrangement {name}: " + "; ".join(problems[:3]))
    # Snapshots come in pairs (clear, then read) per segment.
    measured = [c for k, c in enumerate(result.counters) if k % 2 == 1]
    return [{"arrangement": name, "kind": kind, "value": value, "static_bytes": g.static_bytes,
             "dynamic_bytes": g.dynamic_bytes, "counters": c, "row_lines": args.dim // g.line_bytes}
            for (kind, value), c in zip(segments, measured)], result, wall, script


def _limit_segments(script, args, g):
    """All static hits, all dynamic hits (a working set the dynamic cache holds), all misses (no reuse)."""
    rng = np.random.default_rng(args.seed + 99)
    layout = script.layout
    n = args.lookups
    segments = []
    hot = [t.static_rows for t in layout.tables]
    if min(hot) > 0:
        ids = [rng.integers(0, h, n // args.tables) for h in hot]
        script.counters_read(clear=True)
        script.lookup(*_bags(rng, ids, args.pooling)[:3])
        script.counters_read()
        segments.append(("limit", "all static hits"))
    if g.ways:
        # Each table's working set covers its own range of sets (fit rows of n lines: a line per set at most).
        n_lines = args.dim // g.line_bytes
        fit = g.sets // n_lines // args.tables
        starts = []
        for t in range(args.tables):
            base = layout.mem_base[t] + n_lines * hot[t]
            starts.append(hot[t] + (t * fit * n_lines - base) % g.sets // n_lines)
        ids = [rng.integers(s, s + fit, n // args.tables) for s in starts]
        script.lookup(*_bags(rng, [np.arange(s, s + fit) for s in starts], 1)[:3])    # every row once
        script.counters_read(clear=True)
        script.lookup(*_bags(rng, ids, args.pooling)[:3])
        script.counters_read()
        segments.append(("limit", "all dynamic hits"))
    per_table = n // args.tables
    ids = [(hot[t] + np.arange(per_table)) % args.rows for t in range(args.tables)]
    if per_table > args.rows - max(hot):
        raise CLIError("--lookups is too large for a miss sweep over --rows rows per table")
    script.flush()
    script.counters_read(clear=True)
    script.lookup(*_bags(rng, ids, args.pooling)[:3])
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


def bench_embedding(args):
    from ..config import preset
    from ..embedding import EmbeddingGeometry

    for name in ("lookups", "warmup", "tables", "rows", "dim", "pooling"):
        if getattr(args, name) <= 0:
            raise CLIError(f"--{name} must be a positive integer, not {getattr(args, name)}")
    if not 0 <= args.drift <= 1:
        raise CLIError(f"--drift must be between 0 and 1, not {args.drift}")
    if args.pnr_timeout is not None and args.pnr_timeout <= 0:
        raise CLIError(f"--pnr-timeout must be a positive number of seconds, not {args.pnr_timeout:g}")
    config = preset("small")
    if args.synth_only:
        _synthesis(args, config)
        return 0
    g = EmbeddingGeometry.from_config(config)
    if args.dim % g.line_bytes or args.dim > g.row_bytes or args.dim & (args.dim - 1):
        raise CLIError(f"--dim must be a power of two, a multiple of {g.line_bytes} and at most {g.row_bytes}, "
                       f"not {args.dim}")
    if args.tables > g.tables:
        raise CLIError(f"--tables must be at most {g.tables}, not {args.tables}")
    rng = np.random.default_rng(args.seed)
    workloads = [_Workload(args, g, a, rng) for a in EXPONENTS]
    if args.drift:
        workloads.append(_Workload(args, g, 1.0, rng, drift=args.drift))
    rows, walls, cycles = [], [], 0
    for name, cfg in arrangements(config).items():
        print(f"  {name}: static {EmbeddingGeometry.from_config(cfg).static_bytes // 1024} KiB, dynamic "
              f"{EmbeddingGeometry.from_config(cfg).dynamic_bytes // 1024} KiB ...", flush=True)
        out, result, wall, _ = _run_arrangement(name, cfg, args, workloads, args.seed + 1, limits=name == "both")
        rows += out
        walls.append(wall)
        cycles += result.cycles
    for r in rows:
        r.update(_row(r, config))
    ablation = [r for r in rows if r["kind"] == "zipf"]
    limits = [r for r in rows if r["kind"] == "limit"]
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
    total = sum(r["counters"]["lookups"] for r in rows)
    notes = (
        f"Workload: {args.tables} tables of {args.rows:,} rows, dimension {args.dim} ({args.dim // g.line_bytes} lines "
        f"of {g.line_bytes} B), {args.pooling} IDs per bag, bags in item order. Per exponent the host profiles a "
        f"training trace of the same length as the test trace, renumbers each table by descending frequency, gives "
        f"the static cache to the rows with the most accesses over all tables, then runs {args.warmup:,} warm-up "
        f"lookups and measures {args.lookups:,}. In the drift workload the measured trace comes from the same Zipf "
        f"distribution with {args.drift:.0%} of the ranks' IDs shuffled among themselves (the profile is stale: some "
        f"hot rows have cooled, some cold rows have become hot). Memory model: latency {config.mem_latency_cycles} "
        f"cycles, {config.mem_bytes_per_cycle} B/cycle (the limit); {config.max_outstanding_misses} lines may be in "
        f"flight. "
        f"On-chip bytes equal in every cached arrangement ({(g.static_bytes + g.dynamic_bytes) // 1024} KiB); "
        f"dynamic cache {config.dyn_cache_ways}-way LRU, {g.line_bytes}-B lines. Static hits are rows; dynamic hits "
        f"are lines of the rows that are not static; on-chip is the share of all gathered bytes served from either "
        f"cache. Each arrangement is one Verilator run ({total:,} lookups over all, {cycles:,} cycles simulated in "
        f"{sum(walls):.0f} s); every pooled vector matched the golden model and every counter the reference cache "
        f"model.\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n\n" + _why(by, workloads)
        + ("\n\nLimits (arrangement both): " + "; ".join(
            f"{r['value']} {r['lookups_per_cycle']:.3f} rows/cycle" for r in limits if "hits" in r["value"])
           + f" (the unit has one lane: a {args.dim}-B row is read from {args.dim // g.line_bytes} banks in one "
           f"cycle); with all misses {miss['lookups_per_cycle']:.3f} rows/cycle, {miss['bandwidth']:.2f} of "
           f"{config.mem_bytes_per_cycle} B/cycle: {miss['bandwidth_share']:.1%} of the memory model's bandwidth."
           if miss else ""))
    if args.json:
        print_json({"rows": rows})
    print(table)
    print(limit_table)
    print("\n".join(verdict))
    record(args, "embedding", "Embedding unit: dual-cache ablation and throughput limits",
           table + "\n\n" + limit_table + "\n\n" + notes)
    if args.synth:
        _synthesis(args, config)
    return 0


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


def _synthesis(args, config):
    from ..embedding import EmbeddingGeometry
    from .synth import synth_one

    g = EmbeddingGeometry.from_config(config)
    results = []
    for component in ("embedding", "memory-bram"):
        results.append(synth_one(component, "ecp5-85f", config, timeout=args.pnr_timeout))
        r = results[-1]
        fmax = f"{r['fmax_mhz']} MHz" if r["routed"] else f"not routed within {args.pnr_timeout:g} s" + (
            f" (placement estimate {r['placed_fmax_mhz']} MHz)" if r.get("placed_fmax_mhz") else "")
        print(f"  {component} on ecp5-85f: {fmax}, {r['cells']['luts']} LUTs", flush=True)
    rows = [[r["component"], r["target"], r["preset"], r["clock_constraint_mhz"],
             r["fmax_mhz"] if r["routed"] else f"not routed in {args.pnr_timeout:g} s" + (
                 f"; {r['placed_fmax_mhz']} after placement" if r.get("placed_fmax_mhz") else ""),
             ("yes" if r["meets_timing"] else "no") if r["routed"] else "unknown", r["cells"]["luts"],
             r["cells"]["ffs"], r["harness"]["ffs"], r["cells"]["dsps"],
             f"{r['utilization']['brams']['used']} / {r['utilization']['brams']['available']}" if r["routed"]
             else r["cells"]["brams"],
             f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
            for r in results]
    table = format_table(["component", "target", "preset", "constraint MHz", "Fmax MHz", "meets", "LUTs", "FFs",
                          "of which harness FFs", "DSPs", "DP16KD", "critical path"], rows)
    notes = (f"Cache sizes of the small preset: static {g.static_bytes // 1024} KiB ({g.static_rows:,} rows of "
             f"{g.row_bytes} B), dynamic {g.dynamic_bytes // 1024} KiB ({g.sets} sets x {g.ways} ways x "
             f"{g.line_bytes} B) plus tags, in {g.banks} line banks; entry queue {g.queue_depth}; "
             f"{g.requant_lanes} requantisers. The unit's memory port leaves it (through the pin harness); "
             "memory-bram is the block-RAM memory that can serve that port on the board. LUTs and FFs are Yosys's "
             "post-synthesis counts (a CCU2C counts as two LUTs) and include the pin harness. Fmax is nextpnr's "
             "estimate at seed 1. "
             + "".join(f"Critical path of {r['component']}: {r['critical_path']['delay_ns']} ns "
                       f"({r['critical_path']['clock_to_out_ns']} clock-to-output, "
                       f"{r['critical_path']['logic_ns']} logic, {r['critical_path']['routing_ns']} routing). "
                       for r in results if r["critical_path"])
             + "".join(f"The build of {r['component']} was stopped after --pnr-timeout {args.pnr_timeout:g} s "
                       "(synthesis, placement and routing on the shared 2-core machine): its row has Yosys's cell "
                       "counts, no routed Fmax, and nextpnr's estimate after placement where placement finished "
                       "(routed delays are usually longer). " for r in results if not r["routed"])
             + "Tools: " + ", ".join(results[0]["tools"].values()) + ".")
    print(table)
    record(args, "embedding-synth", "Embedding unit: synthesis on the ECP5-85F", table + "\n\n" + notes)


BENCH = Bench("embedding", "embedding unit: dual-cache ablation at equal on-chip bytes, throughput limits "
              "(Verilator); --synth adds ECP5 synthesis", _arguments, bench_embedding)
