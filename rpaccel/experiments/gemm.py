"""The MLP engine on RecPipe's bottom MLPs, on Verilator, checked against the golden model.

Run by ``rpaccel bench gemm``. For every model, split and batch size the engine runs the whole batch (the host's
command and input streams for all chunks are built up front by :mod:`rpaccel.host.driver.mlp`; in split ``n``
each lane gets ``batch / n`` items of the same model, sharing one weight image). Reported per run:

* cycles: from the first command the engine accepts to the last result it delivers, which includes every tile's
  weight loading into the array (overlapped with compute when tiles are long enough) and every layer's drain;
* ideal cycles: ``M * sum(K * N) / (R * C)``, the whole array busy on useful multiply-accumulates;
* tile bound: the utilisation a perfect pipeline would reach on this split's tiles, ``sum(K * N)`` over
  ``sum(K' * N')`` with ``K'``, ``N'`` rounded up to the sub-array's rows and columns (partial tiles leave PEs
  idle);
* utilisation: ideal / cycles, and the same with the weight memory preload (the model's words streamed in
  from the host before the first command, one word per cycle) counted as well;
* simulation speed: simulated cycles per wall-clock second of the Verilator run, and per second of processor
  time (on a shared machine the wall clock also counts other people's processes).
"""

import time
from dataclasses import replace
from itertools import pairwise

import numpy as np

from ..config import PRESETS, preset
from ..results import format_table
from .report import ExperimentError, ExperimentFailed, Report, Section, check_fraction, check_positives, check_seed

__all__ = ["BATCHES", "FLOOR_MHZ", "MODELS", "SYNTH_RUNS", "bottom_mlp", "run_case", "run_gemm", "run_gemm_synth",
           "synth_runs", "tile_bound"]

#: RecPipe's bottom MLPs (Criteo, 13 dense features).
MODELS = {"rm-large": [13, 512, 256, 128, 64, 32], "rm-small": [13, 64, 4]}
BATCHES = (16, 32, 64, 128, 256, 512, 1024)


def bottom_mlp(rng, dims):
    """A random int8 bottom MLP with ReLU after every layer (as DLRM's), outputs requantised to int8."""
    from ..sim.golden.mlp import random_mlp

    return [replace(layer, relu=True) for layer in random_mlp(rng, dims, raw_last=False)]


def tile_bound(config, dims, split):
    """Useful MACs over the MACs of the padded tiles of an MLP of widths ``dims`` on a sub-array of ``split``."""
    from ..rtl.array import ArrayGeometry

    rows, cols = ArrayGeometry(config).shape(split)
    padded = sum(-(-k // rows) * rows * -(-n // cols) * cols for k, n in pairwise(dims))
    return sum(k * n for k, n in pairwise(dims)) / padded


def run_case(config, model, dims, split, batch, *, seed, pause, direct=True):
    """Run one batch of ``model`` (layer widths ``dims``) in split ``split``; return its row (dict).

    The row's ``mismatches`` counts the outputs that differ from the golden model.

    Raises
    ------
    ExperimentError
        If the batch does not divide among the sub-arrays or the model does not fit the configuration.
    """
    from ..host.driver.mlp import MLPError, plan_engine
    from ..host.reference import mlp_forward
    from ..sim.golden.mlp import random_input
    from ..sim.mlp_harness import play_plan

    if batch % split:
        raise ExperimentError("batches", f"has {batch}, which does not divide among {split} sub-arrays")
    rng = np.random.default_rng(seed)
    layers = bottom_mlp(rng, dims)
    jobs = {lane: (layers, random_input(rng, batch // split, dims[0])) for lane in range(split)}
    started = time.perf_counter()
    try:
        plan = plan_engine(config, split, jobs)
    except MLPError as error:
        raise ExperimentError(None, f"{model} on the {config.name} configuration, split {split}: {error}") from None
    outputs, result = play_plan(config, plan, pause=pause, seed=seed, direct=direct)
    total = time.perf_counter() - started
    mismatches = sum(int(np.sum(outputs[lane] != mlp_forward(layers, x))) for lane, (_, x) in jobs.items())
    first = min(result.ports[f"cmd{lane}"].first_cycle for lane in jobs)
    last = max(result.ports[f"out{lane}"].last_cycle for lane in jobs)
    cycles = last - first + 1
    ideal = plan.macs / config.pes
    chunk = max(items for program in plan.lanes.values() for _, items in program.chunks)
    return {
        "model": model, "split": split, "batch": batch, "chunk": chunk, "cycles": cycles, "ideal": ideal,
        "utilisation": ideal / cycles, "tile_bound": tile_bound(config, dims, split),
        "preload_cycles": len(plan.weights.words), "total_cycles": result.cycles,
        "utilisation_with_preload": ideal / result.cycles, "mismatches": mismatches,
        "harness": "direct" if direct else "cocotb", "sim_cycles_per_s": result.cycles_per_second,
        "sim_cycles_per_cpu_s": result.cycles_per_cpu_second, "sim_seconds": result.wall_seconds,
        "build_seconds": result.build_seconds, "total_seconds": total,
    }


#: What the synthesis runs build by default: (component, preset), each on its preset's target. The ``small``
#: array alone is not placed on the ECP5: the engine contains it, and each place-and-route of that size takes many
#: minutes.
SYNTH_RUNS = (("pe", "small"), ("pe-lut", "small"), ("mlp", "small"), ("array", "tiny"), ("mlp", "tiny"))


def synth_runs(config=None):
    """The synthesis runs, ``(component, config)`` pairs: :data:`SYNTH_RUNS`, or with ``config`` the components of
    the runs of the presets meant for its target, built at ``config`` (``--preset tiny --set array_rows=8`` builds
    the tiny runs at that configuration)."""
    if config is None:
        return [(component, preset(name)) for component, name in SYNTH_RUNS]
    runs = [(component, config) for component, name in SYNTH_RUNS if PRESETS[name].target == config.target]
    if not runs:
        raise ExperimentError("preset", f"{config.name} has no synthesis runs (target {config.target!r})")
    return runs


def _synth_one(component, config, seed, timeout=None, router=None, placer=None):
    """A synthesis summary; a design that does not fit the device gives Yosys's cell counts and the reason."""
    import json
    from pathlib import Path

    from ..flow.synth import SynthError, _cell_counts, lookup_target, synthesize

    target = config.target
    build_dir = Path("build") / "synth" / f"{component}-{target}-{config.name}"
    try:
        engine = (component, target) == ("mlp", "ecp5-85f")
        result = synthesize(component, target, config, build_dir=build_dir, seed=seed, timeout=timeout,
                            router=router if engine else None, placer=placer if engine else None)
        if engine and result.get("routed") and not result["meets_timing"]:
            result["floor"] = _floor_timing(build_dir / "top.sdf")
        return result
    except SynthError as error:
        stat = build_dir / "top.stat.json"
        if not stat.exists():
            raise ExperimentFailed(str(error)) from None
        reason = next((line.strip() for line in str(error).splitlines() if "ERROR" in line), str(error)[-200:])
        return {"component": component, "target": target, "preset": config.name, "fits": False,
                "reason": reason, "clock_constraint_mhz": config.clock_mhz, "fmax_mhz": None,
                "cells": _cell_counts(lookup_target(target).family, json.loads(stat.read_text()))}


#: The issue's floor for the engine's clock on the ECP5-85F.
FLOOR_MHZ = 100.0


def _floor_timing(sdf, groups=6):
    """What misses the floor: failing endpoints at ``FLOOR_MHZ`` and the worst groups (rpaccel.flow.timing)."""
    from ..flow.timing import analyse, read_sdf

    report = analyse(read_sdf(sdf), 1000.0 / FLOOR_MHZ)
    return {"mhz": FLOOR_MHZ, "endpoints": report.endpoints, "failing": report.failing,
            "groups": [{"start": g.start, "end": g.end, "endpoints": g.endpoints,
                        "slack_ns": round(g.worst.slack_ns, 3), "logic_levels": g.worst.logic_levels,
                        "routing_ns": round(g.worst.routing_ns, 3)} for g in report.groups[:groups]],
            "more_groups": max(0, len(report.groups) - groups)}


def run_gemm_synth(runs=None, *, seed=1, pnr_timeout=None, router=None, placer=None, progress=None):
    """Synthesise the PEs, the array and the engine (the ``gemm-synth`` section).

    Parameters
    ----------
    runs : sequence of (str, AccelConfig), optional
        ``(component, config)`` pairs, each built on its configuration's target (default: :func:`synth_runs`).
    seed : int
        nextpnr's placement seed.
    pnr_timeout : float, optional
        Seconds a build may take (synthesis, placement and routing); a build cut short reports Yosys's cell counts
        and nextpnr's estimate after placement.
    router, placer : str, optional
        nextpnr's router and placer for the ECP5 engine build.
    progress : callable, optional
        Called with a line before and after each build.

    Returns
    -------
    Report
        One row per build, the ``gemm-synth`` section.
    """
    from ..flow.synth import PLACERS, ROUTERS

    for name, value, known in (("router", router, ROUTERS), ("placer", placer, PLACERS)):
        if value is not None and value not in known:
            raise ExperimentError(name, f"must be one of {', '.join(known)}, not {value!r}")
    if pnr_timeout is not None and not pnr_timeout > 0:
        raise ExperimentError("pnr_timeout", f"must be a positive number of seconds, not {pnr_timeout:g}")
    say = progress or (lambda line: None)
    rows = []
    for component, config in synth_runs() if runs is None else runs:
        say(f"  synthesising {component} on {config.target} ({config.name}) ...")
        r = _synth_one(component, config, seed, pnr_timeout, router, placer)
        rows.append(r)
        if not r.get("routed", True):
            say(f"    not routed within {pnr_timeout:g} s (placement estimate {r.get('placed_fmax_mhz')} MHz), "
                f"{r['cells']['luts']} LUTs")
        elif r.get("fits", True):
            say(f"    {r['fmax_mhz']} MHz, {r['cells']['luts']} LUTs, {r['cells']['dsps']} DSPs, "
                f"{r['cells']['brams']} BRAMs ({r['seconds']} s)")
        else:
            say(f"    does not fit: {r['reason']}")
    table, notes = _synth_table(rows, seed, pnr_timeout)
    return Report(rows=rows, text=table, data={"synthesis": rows},
                  sections=(Section("gemm-synth", "Synthesis of the systolic array and the MLP engine",
                                    table + "\n\n" + notes),))


def _synth_table(synth, seed, timeout=None):
    rows = []
    for r in synth:
        c = r["cells"]
        if not r.get("routed", True):
            rows.append([r["component"], r["target"], r["preset"], r["clock_constraint_mhz"],
                         f"not routed in {timeout:g} s"
                         + (f"; {r['placed_fmax_mhz']} after placement" if r.get("placed_fmax_mhz") else ""),
                         "unknown", c["luts"], c["ffs"], r["harness"]["ffs"], c["dsps"], c["brams"], "", ""])
            continue
        if not r.get("fits", True):
            rows.append([r["component"], r["target"], r["preset"], r["clock_constraint_mhz"], None, "does not fit",
                         c["luts"], c["ffs"], None, c["dsps"], c["brams"], "",
                         r["reason"].replace("|", "\\|")])  # a table cell
            continue
        used = r["utilization"]["luts" if r["target"] == "ecp5-85f" else "logic_cells"]
        path = r["critical_path"]
        rows.append([r["component"], r["target"], r["preset"], r["clock_constraint_mhz"], r["fmax_mhz"],
                     "yes" if r["meets_timing"] else "no", c["luts"], c["ffs"], r["harness"]["ffs"], c["dsps"],
                     c["brams"], f"{used['used']:,}/{used['available']:,}",
                     f"`{path['from']}` -> `{path['to']}` ({path['clock_to_out_ns']} ns clock-to-output, "
                     f"{path['logic_ns']} ns logic, {path['routing_ns']} ns routing)" if path else ""])
    table = format_table(["component", "target", "preset", "constraint MHz", "Fmax MHz", "meets", "LUTs", "FFs",
                          "of which harness FFs", "DSPs", "BRAMs", "placed LUTs (ECP5) / cells (iCE40)",
                          "critical path"], rows)
    tools = next((r["tools"] for r in synth if "tools" in r), {})
    notes = ("Yosys and nextpnr through `rpaccel synth` in the pin harness (every port bit through a flip-flop "
             f"of a shift register), nextpnr seed {seed}; LUTs count a CCU2C carry cell as two. `pe-lut` is the "
             "processing element with `multiplier=\"lut\"`, as used by the array beyond `array_dsp_pes`. A "
             "design that does not fit shows Yosys's cell counts and nextpnr's reason; runs not listed were "
             "left out with `--synth-runs`. "
             + (f"A run stopped by --pnr-timeout ({timeout:g} s on the shared 2-core machine) shows Yosys's cell "
                "counts and nextpnr's Fmax estimate after placement (routed delays are usually longer). "
                if any(not r.get("routed", True) for r in synth) else "")
             + "".join(f"`{r['component']}` on {r['target']} used nextpnr's {r['router']}. "
                       for r in synth if r.get("router", "router1") != "router1")
             + "".join(f"`{r['component']}` on {r['target']} used nextpnr's {r['placer']} placer. "
                       for r in synth if r.get("placer", "heap") != "heap")
             + "Tools: "
             + ", ".join(tools.values()) + ".")
    for r in synth:
        floor = r.get("floor")
        if floor:
            notes += (f"\n\nWhat misses the {floor['mhz']:g} MHz floor in the routed `{r['component']}` on "
                      f"{r['target']} (`rpaccel timing build/synth/{r['component']}-{r['target']}-{r['preset']} "
                      f"--period {1000 / floor['mhz']:g}`): {floor['failing']:,} of {floor['endpoints']:,} "
                      "endpoints, grouped by their worst path's start and end registers:\n\n")
            notes += format_table(
                ["worst slack ns", "endpoints", "logic levels", "routing ns", "from", "to"],
                [[g["slack_ns"], g["endpoints"], g["logic_levels"], g["routing_ns"], f"`{g['start']}`",
                  f"`{g['end']}`"] for g in floor["groups"]])
            if floor["more_groups"]:
                notes += f"\n\n... and {floor['more_groups']} more groups."
    return table, notes




def run_gemm(config, *, models=tuple(MODELS), batches=BATCHES, splits=None, pause=0.0, seed=1, cocotb=False,
             progress=None):
    """The MLP engine on RecPipe's bottom MLPs, on Verilator, every output checked against the golden model.

    Parameters
    ----------
    config : AccelConfig
        The engine's configuration.
    models : sequence of str
        Models of :data:`MODELS`.
    batches : sequence of int
        Batch sizes.
    splits : sequence of int, optional
        Splits of the array (default: every split of ``config``).
    pause : float
        Probability of idle input / back-pressured output cycles (0 measures utilisation).
    seed : int
        Random seed of weights and inputs.
    cocotb : bool
        Also run RM-large at batch 64 under cocotb to compare the two Verilator harnesses.
    progress : callable, optional
        Called with a line after each run.

    Returns
    -------
    Report
        One row per model, split and batch (cycles, utilisation, simulation speed), the ``gemm`` section; a
        failure per run whose outputs differ from the golden model.
    """
    for model in models:
        if model not in MODELS:
            raise ExperimentError("models", f"has an unknown model {model!r} (known: {', '.join(MODELS)})")
    check_positives("batches", batches)
    splits = list(config.splits) if splits is None else list(splits)
    for split in splits:
        if split not in config.splits:
            raise ExperimentError("splits", f"has {split}, which is not one of the {config.name} configuration's "
                                  f"splits {config.splits}")
    check_fraction("pause", pause)
    check_seed(seed)

    rows = []
    for model in models:
        for split in splits:
            for batch in batches:
                row = run_case(config, model, MODELS[model], split, batch, seed=seed, pause=pause)
                rows.append(row)
                if progress:
                    progress(f"  {model} split {split} batch {batch}: {row['cycles']:,} cycles, utilisation "
                             f"{row['utilisation']:.1%} ({row['utilisation_with_preload']:.1%} with preload), "
                             f"{row['sim_cycles_per_s']:,.0f} cycles/s ({row['sim_cycles_per_cpu_s']:,.0f} per CPU s)")
    compare = []
    if cocotb:
        for direct in (True, False):
            compare.append(run_case(config, "rm-large", MODELS["rm-large"], 1, 64, seed=seed, pause=pause,
                                    direct=direct))
    failures = tuple(f"{r['model']}, split {r['split']}, batch {r['batch']}: {r['mismatches']} outputs differ from "
                     "the golden model" for r in [*rows, *compare] if r["mismatches"])

    table = format_table(
        ["model", "split", "batch", "chunk", "cycles", "ideal cycles", "tile bound", "utilisation", "with preload",
         "sim cycles/s", "per CPU s"],
        [[r["model"], r["split"], r["batch"], r["chunk"], r["cycles"], r["ideal"], f"{r['tile_bound']:.1%}",
          f"{r['utilisation']:.1%}",
          f"{r['utilisation_with_preload']:.1%}", r["sim_cycles_per_s"], r["sim_cycles_per_cpu_s"]] for r in rows])
    geometry = f"{config.array_rows}x{config.array_cols}"
    notes = [
        f"Preset `{config.name}` ({geometry} array, {config.clock_mhz:g} MHz target); every output of every run "
        "compared with the numpy golden model: 0 mismatches. Random int8 weights and inputs (seed "
        f"{seed}), ReLU after every layer; {pause:.0%} idle input and back-pressured output cycles. "
        "In split n each of the n sub-arrays runs batch/n items of the same model (one shared weight image).",
        "cycles: first command accepted to last result delivered (every tile's weight loading into the array "
        "and every layer's drain included); ideal: M * sum(K * N) / (R * C); tile bound: sum(K * N) / "
        "sum(K' * N') with K, N rounded up to the sub-array's rows and columns, the best a perfect pipeline "
        "reaches with partial tiles (RM-small's 4 outputs use 4 of a sub-array's columns, K = 13 uses 13 of its "
        "rows); utilisation: ideal / cycles; "
        "with preload: the model's weight words streamed into the weight memory first (one word per cycle, "
        "once per model) counted too; chunk: items per pass through the layers (bounded by the accumulator "
        "and activation buffers).",
        "Between utilisation and the tile bound: the loads of tiles of fewer than 2r - 2 items (r: the "
        "sub-array's rows), which the previous tile cannot hide (small batches, small chunks on quarters), and "
        "one pipeline drain per layer and chunk (a layer's items start once the previous layer's last result of "
        "the chunk is in the activation memory: array latency, post-processing, write).",
        "Simulation: Verilator, the file-driven player as a stand-alone binary (no cocotb, Python woken once "
        "per run); sim cycles/s is simulated cycles per wall-clock second of the run, per CPU s per second of "
        "processor time (the machine is shared, so wall-clock speed varies with its load).",
    ]
    if compare:
        direct, under_cocotb = compare
        notes.append(
            f"Harnesses compared on rm-large, batch 64, split 1: direct binary {direct['sim_cycles_per_s']:,.0f} "
            f"cycles/s, under cocotb {under_cocotb['sim_cycles_per_s']:,.0f} cycles/s (cocotb's runner makes every "
            f"signal public for VPI, which stops Verilator optimising across the design); builds "
            f"{direct['build_seconds']:.0f} s and {under_cocotb['build_seconds']:.0f} s when not cached.")
    section = Section("gemm", "MLP engine on RecPipe's bottom MLPs", table + "\n\n" + "\n\n".join(notes))
    return Report(rows=rows, text=table, sections=(section,), data={"runs": rows, "harness_comparison": compare},
                  failures=failures)
