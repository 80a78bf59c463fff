"""``rpaccel bench topk``: throughput, latency, area and Fmax of the top-k units (issue 5).

Simulation (Verilator, file-driven player, no idle input and no back-pressure): RecPipe-sized queries of
``--candidates`` candidates with ``k = K_MAX`` back to back, every result compared with the golden model. Reported:
candidates accepted per cycle while a stream is running, and the cycles from a query's last candidate to its
first result. Synthesis (Yosys + nextpnr on the ECP5-85F, ULX3S, in the pin harness, clock constrained at the
``small`` preset's 125 MHz): one unit for each ``K_MAX``. Literature figures (RecPipe's analytic filter model,
AMD Vitis sorters) are printed beside the measurements, cited and kept apart from them.
"""

import time
from dataclasses import replace
from pathlib import Path

from .bench import Bench, record
from .common import CLIError, CommandFailed, positive_ints, print_json

#: Figures from the literature: never measured here, shown for comparison with their sources.
LITERATURE = [
    {
        "design": "RecPipe analytic model, on-chip filter",
        "figure": "items / 16 cycles per query (16 items per cycle, no latency term, any k)",
        "source": "harvard-acc/RecPipe, RecPipeAccelModel.py, SortingUnit.sort_items: "
                  "cycles = items_per_query / (sram_word_width 64 / elementsize 4)",
    },
    {
        "design": "RecPipe filter RTL (area only)",
        "figure": "histogram threshold, unsorted result; the score buffer is one register "
                  "(\"only for area/power estimates\")",
        "source": "harvard-acc/RecPipe, RPAccel_characterization/RTL/filtering.v (module sortvals)",
    },
    {
        "design": "AMD Vitis Database Library bitonicSort, N = 64, 32-bit keys",
        "figure": "latency 149 cycles, interval 65 cycles, 58,064 LUTs, 69,160 registers (UltraScale+ LUT6)",
        "source": "https://xilinx.github.io/Vitis_Libraries/database/2020.1/guide/sort/bitonic_sort.html",
    },
    {
        "design": "AMD Vitis Database Library insertSort, max 64, 32-bit keys",
        "figure": "interval 1 cycle, 2,144 LUTs, 6,692 registers (UltraScale+ LUT6)",
        "source": "https://docs.amd.com/r/2023.2-English/Vitis_Libraries/database/guide/sort/insert_sort.html_1",
    },
]


def _arguments(p):
    p.add_argument("--k-max", default="16,64,256", help="comma-separated K_MAX values (default 16,64,256)")
    p.add_argument("--candidates", type=int, default=4096,
                   help="candidates per query in the throughput runs (default 4096, RecPipe's first stage)")
    p.add_argument("--queries", type=int, default=16, help="queries per throughput run (default 16)")
    p.add_argument("--lanes", default="1,2", help="lane counts simulated at the small preset's K_MAX (default 1,2)")
    p.add_argument("--seed", type=int, default=1, help="random seed and nextpnr placement seed (default 1)")
    p.add_argument("--no-synth", action="store_true", help="skip synthesis (simulation only)")
    p.add_argument("--pnr-timeout", type=float, default=1800.0,
                   help="seconds one unit's synthesis and place-and-route may take; a unit cut short is reported "
                        "with Yosys's cell counts and no Fmax (default 1800)")
    p.add_argument("--build-dir", default="build/synth",
                   help="folder for the synthesis builds (default build/synth; one subfolder per K_MAX)")


def simulate(k_max, lanes, candidates, queries, seed):
    """Back-to-back queries through one unit on Verilator; the throughput and latency figures."""
    import numpy as np

    from ..host.driver.topk import pack_elements, unpack_results
    from ..rtl.topk import TopKUnit, unit_latency
    from ..sim.golden.topk import Query, stream_elements, unit_model
    from ..sim.player import Player

    rng = np.random.default_rng(seed)
    batch = [Query.make(rng.integers(-(1 << 31), 1 << 31, candidates), k_max) for _ in range(queries)]
    elements = stream_elements(batch, k_max=k_max, lanes=lanes)
    expected = unit_model(elements, k_max)
    started = time.perf_counter()
    player = Player(TopKUnit, k_max, lanes=lanes)
    build = time.perf_counter() - started
    result = player.run({"i": pack_elements(elements, k_max, lanes=lanes)}, expect={"o": len(expected)},
                        pause=0.0, seed=seed, packed=True)
    got = unpack_results(result.outputs["o"])
    mismatches = sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
    i, o = result.ports["i"], result.ports["o"]
    per_query = len(elements) // queries
    return {
        "k_max": k_max, "lanes": lanes, "queries": queries, "candidates": queries * candidates,
        "mismatches": mismatches,
        "input_cycles": i.last_cycle - i.first_cycle + 1,
        "candidates_per_cycle": queries * candidates / (i.last_cycle - i.first_cycle + 1),
        # The first query's last element is accepted in cycle first + per_query - 1 (no stalls).
        "latency_cycles": o.first_cycle - (i.first_cycle + per_query - 1),
        "designed_latency_cycles": unit_latency(k_max, lanes=lanes),
        "total_cycles": result.cycles,
        "build_seconds": round(build + result.build_seconds, 1),
        "sim_seconds": round(result.wall_seconds, 2),
    }


def synthesize_unit(k_max, seed, build_dir, component="topk", timeout=None):
    """Synthesise ``component`` (one unit of ``k_max`` by default) for the ECP5-85F at the small preset's clock."""
    from ..config import preset
    from ..flow.synth import SynthError, synthesize

    config = replace(preset("small"), k_max=k_max)
    folder = Path(build_dir) / (f"topk-k{k_max}" if component == "topk" else component)
    try:
        return synthesize(component, "ecp5-85f", config, seed=seed, build_dir=folder, timeout=timeout)
    except SynthError as error:
        raise CommandFailed(str(error)) from None


def budget(small, unit, pe, pe_lut, device, brams):
    """Sentences on whether the small preset's top-k units fit on the ECP5-85F beside the array and caches.

    ``unit``, ``pe`` and ``pe_lut`` are synthesis results of one K_MAX = small.k_max unit, one processing element
    with a DSP multiplier and one with a LUT multiplier (the array's PEs beyond ``array_dsp_pes``); ``device`` and
    ``brams`` the ECP5-85F's LUTs and DP16KD blocks (from nextpnr's report).
    """
    topk = small.topk_units * unit["cells"]["luts"]
    pes = small.array_rows * small.array_cols
    dsp_pes = min(pes, small.array_dsp_pes)
    array = dsp_pes * pe["cells"]["luts"] + (pes - dsp_pes) * pe_lut["cells"]["luts"]
    rest = device - topk - array
    # Cache RAM in DP16KD blocks of 16 kbit of data (2,048 x 8 bits): int8 embedding rows and cache lines.
    static_blocks = -(-small.static_cache_rows * small.max_emb_dim * 8 // 16384)
    dyn_blocks = -(-small.dyn_cache_sets * small.dyn_cache_ways * small.dyn_cache_line_bytes * 8 // 16384)
    fmax = unit["fmax_mhz"] or 0
    speed = ("was not placed and routed, so its Fmax against the goal is unknown" if not unit["routed"] else
             "meets the preset's goal" if fmax >= small.clock_mhz else
             "misses the preset's goal but meets the 100 MHz floor" if fmax >= 100 else "misses the 100 MHz floor")
    return (
        f"At K_MAX = {small.k_max} (the small preset's) one unit "
        + (f"reaches {unit['fmax_mhz']} MHz: it {speed}" if unit["routed"] else speed)
        + f" ({small.clock_mhz:g} MHz), for {unit['cells']['luts']:,} LUTs and {unit['cells']['ffs']:,} "
        f"FFs. LUT budget of the small preset on the ECP5-85F ({device:,} LUTs): {small.topk_units} top-k units x "
        f"{unit['cells']['luts']:,} = {topk:,} LUTs ({100 * topk / device:.0f}%); the {small.array_rows} x "
        f"{small.array_cols} array at most {dsp_pes} x {pe['cells']['luts']} + {pes - dsp_pes} x "
        f"{pe_lut['cells']['luts']} = {array:,} LUTs ({100 * array / device:.0f}%; PEs with a DSP and with a LUT "
        "multiplier, measured with their pin harnesses, so an upper bound); "
        + (f"{rest:,} LUTs ({100 * rest / device:.0f}%) remain for the caches' control, the embedding unit, "
           "post-processors and controller." if rest > 0 else
           f"together they exceed the device by {-rest:,} LUTs: the small preset's top-k units do NOT fit beside "
           "its array.")
        + " The top-k units use no DSP and no "
        f"block RAM ({unit['cells']['dsps']} and {unit['cells']['brams']} here), so the caches' RAM is untouched: the "
        f"static cache ({small.static_cache_rows:,} rows x {small.max_emb_dim} int8) needs {static_blocks} and the "
        f"dynamic cache's data ({small.dyn_cache_sets} sets x {small.dyn_cache_ways} ways x "
        f"{small.dyn_cache_line_bytes} B) {dyn_blocks} of the {brams} DP16KD blocks. These are per-block sums, not a "
        "synthesis of the whole chip, which may route slower than its blocks alone; `rpaccel bench chip` adds up "
        "nextpnr's packing of the engine, the embedding unit and the top-k units."
    )


def run(args):
    from ..config import preset
    from ..results import format_table
    from ..rtl.topk import DEFAULT_SEGMENT

    k_values = positive_ints(args.k_max, "--k-max")
    lane_values = positive_ints(args.lanes, "--lanes")
    if args.candidates <= 0 or args.queries <= 0:
        raise CLIError("--candidates and --queries must be positive integers")
    small = preset("small")

    runs = []
    for k_max in k_values:
        runs.append(simulate(k_max, 1, args.candidates, args.queries, args.seed))
    for lanes in lane_values:
        if lanes != 1:
            runs.append(simulate(small.k_max, lanes, args.candidates, args.queries, args.seed))
    for r in runs:
        print(f"  sim K_MAX={r['k_max']} lanes={r['lanes']}: {r['candidates_per_cycle']:.3f} candidates/cycle, "
              f"latency {r['latency_cycles']} cycles, {r['mismatches']} mismatches", flush=True)
    bad = [r for r in runs if r["mismatches"]]
    if bad:
        raise CommandFailed(f"K_MAX={bad[0]['k_max']}, lanes={bad[0]['lanes']}: {bad[0]['mismatches']} results "
                            "differ from the golden model")
    late = [r for r in runs if r["latency_cycles"] != r["designed_latency_cycles"]]
    if late:
        raise CommandFailed(f"K_MAX={late[0]['k_max']}, lanes={late[0]['lanes']}: latency {late[0]['latency_cycles']} "
                            f"cycles, the design says {late[0]['designed_latency_cycles']}")

    synth, pe, pe_lut = [], None, None
    if not args.no_synth:
        for k_max in k_values:
            r = synthesize_unit(k_max, args.seed, args.build_dir, timeout=args.pnr_timeout)
            synth.append(r)
            fmax = f"{r['fmax_mhz']} MHz" if r["routed"] else f"not placed and routed within {args.pnr_timeout:g} s"
            print(f"  synth K_MAX={k_max}: {fmax}, {r['cells']['luts']} LUTs, {r['cells']['ffs']} FFs "
                  f"({r['seconds']} s)", flush=True)
        pe, pe_lut = (synthesize_unit(small.k_max, args.seed, args.build_dir, component=name,
                                      timeout=args.pnr_timeout) if small.k_max in k_values else None
                      for name in ("pe", "pe-lut"))

    if args.json:
        print_json({"simulation": runs, "synthesis": synth, "pe": pe, "pe_lut": pe_lut, "literature": LITERATURE})

    sim_table = format_table(
        ["K_MAX", "lanes", "queries x candidates", "mismatches", "candidates per cycle", "input cycles per query",
         "latency (cycles)", "total cycles"],
        [[r["k_max"], r["lanes"], f"{r['queries']} x {r['candidates'] // r['queries']:,}", r["mismatches"],
          round(r["candidates_per_cycle"], 3), round(r["input_cycles"] / r["queries"], 1), r["latency_cycles"],
          r["total_cycles"]]
         for r in runs])
    body = [sim_table, "",
            f"Verilator (file-driven player), no idle input and no back-pressure; queries of "
            f"{args.candidates:,} random int32 scores with k = K_MAX back to back, every result compared with the "
            "golden model (rpaccel.numeric.topk). Candidates per cycle: candidates / cycles from the first to the "
            "last accepted input element. Latency: cycles from accepting a query's last candidate to presenting "
            f"its first result: two per {DEFAULT_SEGMENT}-cell insertion segment, three to copy the cells to the "
            "output bank and pass the output buffer, one per level of the lanes' merge tree (equal to "
            "TopKUnit.latency, which the benchmark checks). The read-out of a result (k cycles) overlaps the next "
            "query's candidates; total cycles run to the last result of the last query."]
    print(sim_table)
    if synth:
        routed = [r for r in [*synth, pe, pe_lut] if r and r["routed"]]
        device = routed[0]["utilization"]["luts"]["available"] if routed else None
        brams = routed[0]["utilization"]["brams"]["available"] if routed else None
        synth_table = format_table(
            ["K_MAX", "segments", "Fmax MHz", f"meets {small.clock_mhz:g} MHz", "LUTs", "LUTs per cell", "FFs",
             "of which harness FFs", "share of the 85F's LUTs", "critical path"],
            [[r["k_max"], -(-r["k_max"] // min(r["k_max"], DEFAULT_SEGMENT)),
              r["fmax_mhz"] if r["routed"] else f"not routed in {args.pnr_timeout:g} s",
              ("yes" if r["meets_timing"] else "no") if r["routed"] else "unknown", r["cells"]["luts"],
              round(r["cells"]["luts"] / r["k_max"], 1), r["cells"]["ffs"], r["harness"]["ffs"],
              f"{100 * r['cells']['luts'] / device:.1f}%" if device else "",
              f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
             for r in [{**s, "k_max": k} for s, k in zip(synth, k_values)]])
        units = [s for s, k in zip(synth, k_values) if k == small.k_max]
        fit = " " + budget(small, units[0], pe, pe_lut, device, brams) if units and pe and pe_lut and device else ""
        if any(not r["routed"] for r in synth):
            fit += (f" A unit whose build did not finish within --pnr-timeout ({args.pnr_timeout:g} s, synthesis "
                    "and place-and-route together, on the shared 2-core machine) shows Yosys's cell counts and no "
                    "Fmax.")
        tools = ", ".join(synth[0]["tools"].values())
        body += ["", synth_table, "",
                 f"One unit (1 lane, {DEFAULT_SEGMENT}-cell segments) per K_MAX on the ECP5-85F (ULX3S) in the pin "
                 f"harness, clock constrained at {small.clock_mhz:g} MHz, nextpnr seed {args.seed}. LUTs are "
                 "Yosys's cell counts (a CCU2C carry cell counts as two LUTs; each cell's 48-bit compare is 24 of "
                 "them, plus one that brings out the carry) and include the harness (about one LUT per output "
                 "bit); FFs include the harness's." + fit
                 + f" Tools: {tools}."]
        print(synth_table)
    literature = format_table(["design", "figure (literature, not measured here)", "source"],
                              [[x["design"], x["figure"], x["source"]] for x in LITERATURE])
    recpipe = args.candidates / 16
    body += ["", "Literature figures for comparison (cited, not measured here):", "", literature, "",
             f"For a query of {args.candidates:,} candidates RecPipe's model charges {recpipe:,.0f} cycles (16 per "
             "cycle, no latency); one unit here takes `lanes` candidates per cycle plus the latency above, so "
             "RecPipe's rate needs 16 lanes, or the query split over 16 units and their results merged (the paper "
             "preset has topk_units = 16). The Vitis figures are for Xilinx LUT6 devices and 32-bit keys without "
             "an index; the bitonic sorter sorts blocks of 64 rather than selecting the best 64 of a stream; the "
             "insertion sorter is the same structure as one segment here, without the index or the tie rule."]
    record(args, "topk", "Top-k units: throughput, latency, area and Fmax", "\n".join(body))
    return 0


BENCH = Bench("topk", "top-k units: sustained candidates per cycle, latency, and LUT/FF/Fmax on the ECP5-85F for "
              "K_MAX = 16, 64, 256", _arguments, run)
