"""Throughput, latency, area and Fmax of the top-k units (issue 5; ``rpaccel bench topk``).

Simulation (Verilator, file-driven player, no idle input and no back-pressure): RecPipe-sized queries of
``candidates`` candidates with ``k = K_MAX`` back to back, every result compared with the golden model. Reported:
candidates accepted per cycle while a stream is running, and the cycles from a query's last candidate to its
first result. Synthesis (Yosys + nextpnr on the configuration's target, the ECP5-85F on the ULX3S for ``small``,
in the pin harness, clock constrained at the configuration's clock): one unit for each ``K_MAX``. Literature
figures (RecPipe's analytic filter model, AMD Vitis sorters) are printed beside the measurements, cited and kept
apart from them.
"""

import time
from dataclasses import replace
from pathlib import Path

from ..results import format_table
from .report import Report, Section, check_positive, check_positives, check_seed
from .synth import device_label, synthesize_config

__all__ = ["LITERATURE", "budget", "run_topk", "simulate", "synthesize_unit"]

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


def synthesize_unit(config, k_max, seed, build_dir, component="topk", timeout=None):
    """Synthesise ``component`` (one unit of ``k_max`` by default) at ``config`` on its target."""
    folder = Path(build_dir) / (f"topk-k{k_max}" if component == "topk" else component)
    return synthesize_config(component, replace(config, k_max=k_max), seed=seed, build_dir=folder, timeout=timeout)


def budget(config, unit, pe, pe_lut, device, brams):
    """Sentences on whether the top-k units of ``config`` fit its device beside the array and caches.

    ``unit``, ``pe`` and ``pe_lut`` are synthesis results of one K_MAX = config.k_max unit, one processing element
    with a DSP multiplier and one with a LUT multiplier (the array's PEs beyond ``array_dsp_pes``); ``device`` and
    ``brams`` the device's LUTs and block RAMs (from nextpnr's report; DP16KD blocks on the ECP5-85F).
    """
    topk = config.topk_units * unit["cells"]["luts"]
    pes = config.array_rows * config.array_cols
    dsp_pes = min(pes, config.array_dsp_pes)
    array = dsp_pes * pe["cells"]["luts"] + (pes - dsp_pes) * pe_lut["cells"]["luts"]
    rest = device - topk - array
    # Cache RAM in DP16KD blocks of 16 kbit of data (2,048 x 8 bits): int8 embedding rows and cache lines.
    static_blocks = -(-config.static_cache_rows * config.max_emb_dim * 8 // 16384)
    dyn_blocks = -(-config.dyn_cache_sets * config.dyn_cache_ways * config.dyn_cache_line_bytes * 8 // 16384)
    fmax = unit["fmax_mhz"] or 0
    speed = ("was not placed and routed, so its Fmax against the goal is unknown" if not unit["routed"] else
             "meets the preset's goal" if fmax >= config.clock_mhz else
             "misses the preset's goal but meets the 100 MHz floor" if fmax >= 100 else "misses the 100 MHz floor")
    return (
        f"At K_MAX = {config.k_max} (the {config.name} preset's) one unit "
        + (f"reaches {unit['fmax_mhz']} MHz: it {speed}" if unit["routed"] else speed)
        + f" ({config.clock_mhz:g} MHz), for {unit['cells']['luts']:,} LUTs and {unit['cells']['ffs']:,} "
        f"FFs. LUT budget of the {config.name} preset on the {device_label(config.target)} ({device:,} LUTs): "
        f"{config.topk_units} top-k units x "
        f"{unit['cells']['luts']:,} = {topk:,} LUTs ({100 * topk / device:.0f}%); the {config.array_rows} x "
        f"{config.array_cols} array at most {dsp_pes} x {pe['cells']['luts']} + {pes - dsp_pes} x "
        f"{pe_lut['cells']['luts']} = {array:,} LUTs ({100 * array / device:.0f}%; PEs with a DSP and with a LUT "
        "multiplier, measured with their pin harnesses, so an upper bound); "
        + (f"{rest:,} LUTs ({100 * rest / device:.0f}%) remain for the caches' control, the embedding unit, "
           "post-processors and controller." if rest > 0 else
           f"together they exceed the device by {-rest:,} LUTs: the {config.name} preset's top-k units do NOT fit "
           "beside "
           "its array.")
        + " The top-k units use no DSP and no "
        f"block RAM ({unit['cells']['dsps']} and {unit['cells']['brams']} here), so the caches' RAM is untouched: the "
        f"static cache ({config.static_cache_rows:,} rows x {config.max_emb_dim} int8) needs {static_blocks} and the "
        f"dynamic cache's data ({config.dyn_cache_sets} sets x {config.dyn_cache_ways} ways x "
        f"{config.dyn_cache_line_bytes} B) {dyn_blocks} of the {brams} DP16KD blocks. These are per-block sums, not a "
        "synthesis of the whole chip, which may route slower than its blocks alone; `rpaccel bench chip` adds up "
        "nextpnr's packing of the engine, the embedding unit and the top-k units."
    )


def run_topk(config, *, k_max=(16, 64, 256), lanes=(1, 2), candidates=4096, queries=16, seed=1, synth=True,
             pnr_timeout=1800.0, build_dir="build/synth", progress=None):
    """Top-k units on Verilator (throughput, latency) and, with ``synth``, their synthesis on ``config``'s target.

    Parameters
    ----------
    config : AccelConfig
        The configuration: its ``k_max`` for the lane runs and the budget, its target and clock for synthesis.
    k_max : sequence of int
        K_MAX of the one-lane units simulated and synthesised.
    lanes : sequence of int
        Lane counts simulated at ``config.k_max`` (1 is covered by ``k_max``'s runs).
    candidates, queries : int
        Candidates per query and queries per throughput run.
    seed : int
        Random seed and nextpnr placement seed.
    synth : bool
        Also synthesise one unit per K_MAX and, to size the budget, a PE with a DSP and one with a LUT multiplier.
    pnr_timeout : float
        Seconds one build may take; a unit cut short is reported with Yosys's cell counts and no Fmax.
    build_dir : path-like
        Folder of the synthesis builds (one subfolder per K_MAX).
    progress : callable, optional
        Called with a line after each run.

    Returns
    -------
    Report
        One row per simulation run, the ``topk`` section; failures for results that differ from the golden model
        or a latency other than the design's (synthesis is skipped then).
    """
    from ..rtl.topk import DEFAULT_SEGMENT

    k_values, lane_values = list(k_max), list(lanes)
    check_positives("k_max", k_values)
    check_positives("lanes", lane_values)
    check_positive(candidates=candidates, queries=queries)
    check_seed(seed)
    say = progress or (lambda line: None)

    runs = []
    for k in k_values:
        runs.append(simulate(k, 1, candidates, queries, seed))
    for n in lane_values:
        if n != 1:
            runs.append(simulate(config.k_max, n, candidates, queries, seed))
    for r in runs:
        say(f"  sim K_MAX={r['k_max']} lanes={r['lanes']}: {r['candidates_per_cycle']:.3f} candidates/cycle, "
            f"latency {r['latency_cycles']} cycles, {r['mismatches']} mismatches")
    failures = tuple(
        [f"K_MAX={r['k_max']}, lanes={r['lanes']}: {r['mismatches']} results differ from the golden model"
         for r in runs if r["mismatches"]]
        + [f"K_MAX={r['k_max']}, lanes={r['lanes']}: latency {r['latency_cycles']} cycles, the design says "
           f"{r['designed_latency_cycles']}" for r in runs if r["latency_cycles"] != r["designed_latency_cycles"]])

    synthesis, pe, pe_lut = [], None, None
    if synth and not failures:
        for k in k_values:
            r = synthesize_unit(config, k, seed, build_dir, timeout=pnr_timeout)
            synthesis.append(r)
            fmax = f"{r['fmax_mhz']} MHz" if r["routed"] else f"not placed and routed within {pnr_timeout:g} s"
            say(f"  synth K_MAX={k}: {fmax}, {r['cells']['luts']} LUTs, {r['cells']['ffs']} FFs ({r['seconds']} s)")
        pe, pe_lut = (synthesize_unit(config, config.k_max, seed, build_dir, component=name, timeout=pnr_timeout)
                      if config.k_max in k_values else None for name in ("pe", "pe-lut"))

    data = {"simulation": runs, "synthesis": synthesis, "pe": pe, "pe_lut": pe_lut, "literature": LITERATURE}
    sim_table = format_table(
        ["K_MAX", "lanes", "queries x candidates", "mismatches", "candidates per cycle", "input cycles per query",
         "latency (cycles)", "total cycles"],
        [[r["k_max"], r["lanes"], f"{r['queries']} x {r['candidates'] // r['queries']:,}", r["mismatches"],
          round(r["candidates_per_cycle"], 3), round(r["input_cycles"] / r["queries"], 1), r["latency_cycles"],
          r["total_cycles"]]
         for r in runs])
    text = [sim_table]
    body = [sim_table, "",
            f"Verilator (file-driven player), no idle input and no back-pressure; queries of "
            f"{candidates:,} random int32 scores with k = K_MAX back to back, every result compared with the "
            "golden model (rpaccel.numeric.topk). Candidates per cycle: candidates / cycles from the first to the "
            "last accepted input element. Latency: cycles from accepting a query's last candidate to presenting "
            f"its first result: two per {DEFAULT_SEGMENT}-cell insertion segment, three to copy the cells to the "
            "output bank and pass the output buffer, one per level of the lanes' merge tree (equal to "
            "TopKUnit.latency, which the benchmark checks). The read-out of a result (k cycles) overlaps the next "
            "query's candidates; total cycles run to the last result of the last query."]
    if synthesis:
        routed = [r for r in [*synthesis, pe, pe_lut] if r and r["routed"]]
        device = routed[0]["utilization"]["luts"]["available"] if routed else None
        brams = routed[0]["utilization"]["brams"]["available"] if routed else None
        synth_table = format_table(
            ["K_MAX", "segments", "Fmax MHz", f"meets {config.clock_mhz:g} MHz", "LUTs", "LUTs per cell", "FFs",
             "of which harness FFs", "share of the 85F's LUTs", "critical path"],
            [[r["k_max"], -(-r["k_max"] // min(r["k_max"], DEFAULT_SEGMENT)),
              r["fmax_mhz"] if r["routed"] else f"not routed in {pnr_timeout:g} s",
              ("yes" if r["meets_timing"] else "no") if r["routed"] else "unknown", r["cells"]["luts"],
              round(r["cells"]["luts"] / r["k_max"], 1), r["cells"]["ffs"], r["harness"]["ffs"],
              f"{100 * r['cells']['luts'] / device:.1f}%" if device else "",
              f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
             for r in [{**s, "k_max": k} for s, k in zip(synthesis, k_values)]])
        units = [s for s, k in zip(synthesis, k_values) if k == config.k_max]
        fit = " " + budget(config, units[0], pe, pe_lut, device, brams) if units and pe and pe_lut and device else ""
        if any(not r["routed"] for r in synthesis):
            fit += (f" A unit whose build did not finish within --pnr-timeout ({pnr_timeout:g} s, synthesis "
                    "and place-and-route together, on the shared 2-core machine) shows Yosys's cell counts and no "
                    "Fmax.")
        tools = ", ".join(synthesis[0]["tools"].values())
        body += ["", synth_table, "",
                 f"One unit (1 lane, {DEFAULT_SEGMENT}-cell segments) per K_MAX on the {device_label(config.target)} "
                 f"in the pin harness, clock constrained at {config.clock_mhz:g} MHz, "
                 f"nextpnr seed {seed}. LUTs are "
                 "Yosys's cell counts (a CCU2C carry cell counts as two LUTs; each cell's 48-bit compare is 24 of "
                 "them, plus one that brings out the carry) and include the harness (about one LUT per output "
                 "bit); FFs include the harness's." + fit
                 + f" Tools: {tools}."]
        text.append(synth_table)
    literature = format_table(["design", "figure (literature, not measured here)", "source"],
                              [[x["design"], x["figure"], x["source"]] for x in LITERATURE])
    recpipe = candidates / 16
    body += ["", "Literature figures for comparison (cited, not measured here):", "", literature, "",
             f"For a query of {candidates:,} candidates RecPipe's model charges {recpipe:,.0f} cycles (16 per "
             "cycle, no latency); one unit here takes `lanes` candidates per cycle plus the latency above, so "
             "RecPipe's rate needs 16 lanes, or the query split over 16 units and their results merged (the paper "
             "preset has topk_units = 16). The Vitis figures are for Xilinx LUT6 devices and 32-bit keys without "
             "an index; the bitonic sorter sorts blocks of 64 rather than selecting the best 64 of a stream; the "
             "insertion sorter is the same structure as one segment here, without the index or the tie rule."]
    section = Section("topk", "Top-k units: throughput, latency, area and Fmax", "\n".join(body))
    return Report(rows=runs, text="\n".join(text), sections=(section,), data=data, failures=failures)
