"""``rpaccel bench gemm``: the MLP engine on RecPipe's bottom MLPs, on Verilator, checked against the golden model.

For every model, split and batch size the engine runs the whole batch (the host's command and input streams
for all chunks are built up front by :mod:`rpaccel.sim.mlp_layout`; in split ``n`` each lane gets ``batch / n``
items of the same model, sharing one weight image). Reported per run:

* cycles: from the first command the engine accepts to the last result it delivers, which includes every tile's
  weight loading into the array (overlapped with compute when tiles are long enough) and every layer's drain;
* ideal cycles: ``M * sum(K * N) / (R * C)``, the whole array busy on useful multiply-accumulates;
* utilisation: ideal / cycles, and the same with the weight memory preload (the model's words streamed in
  from the host before the first command, one word per cycle) counted as well;
* simulation speed: simulated cycles per wall-clock second of the Verilator run, and per second of processor
  time (on a shared machine the wall clock also counts other people's processes).
"""

import time
from dataclasses import replace

import numpy as np

from ..results import format_table
from .bench import Bench, record
from .common import CLIError, CommandFailed, config_from_args, print_json

#: RecPipe's bottom MLPs (Criteo, 13 dense features).
MODELS = {"rm-large": [13, 512, 256, 128, 64, 32], "rm-small": [13, 64, 4]}
BATCHES = (16, 32, 64, 128, 256, 512, 1024)


def _arguments(p):
    p.add_argument("--preset", default="small", help="configuration preset (default small)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--splits", help="comma-separated splits (default: every split of the preset)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="probability of idle input / back-pressured output cycles (default 0: utilisation)")
    p.add_argument("--seed", type=int, default=1, help="random seed of weights and inputs (default 1)")
    p.add_argument("--cocotb", action="store_true",
                   help="also run RM-large at batch 64 under cocotb to compare the two Verilator harnesses")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise the array and the engine (small on ECP5-85F, tiny on iCE40 UP5K)")


def _ints(text, option):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"{option} must be comma-separated integers, not {text!r}") from None
    if any(v <= 0 for v in values):
        raise CLIError(f"{option} must be positive, not {text!r}")
    return values


def bottom_mlp(rng, dims):
    """A random int8 bottom MLP with ReLU after every layer (as DLRM's), outputs requantised to int8."""
    from ..sim.golden.mlp import random_mlp

    return [replace(layer, relu=True) for layer in random_mlp(rng, dims, raw_last=False)]


def run_case(config, model, dims, split, batch, *, seed, pause, direct=True):
    """Run one batch; return a result row (dict). Raises CommandFailed on any mismatch."""
    from ..sim.golden.mlp import mlp_forward, random_input
    from ..sim.mlp_harness import play_plan
    from ..sim.mlp_layout import plan_engine

    if batch % split:
        raise CLIError(f"Batch {batch} does not divide among {split} sub-arrays")
    rng = np.random.default_rng(seed)
    layers = bottom_mlp(rng, dims)
    jobs = {lane: (layers, random_input(rng, batch // split, dims[0])) for lane in range(split)}
    started = time.perf_counter()
    plan = plan_engine(config, split, jobs)
    outputs, result = play_plan(config, plan, pause=pause, seed=seed, direct=direct)
    total = time.perf_counter() - started
    mismatches = sum(int(np.sum(outputs[lane] != mlp_forward(layers, x))) for lane, (_, x) in jobs.items())
    if mismatches:
        raise CommandFailed(f"{model}, split {split}, batch {batch}: {mismatches} outputs differ from the golden model")
    first = min(result.ports[f"cmd{lane}"].first_cycle for lane in jobs)
    last = max(result.ports[f"out{lane}"].last_cycle for lane in jobs)
    cycles = last - first + 1
    ideal = plan.macs / config.pes
    chunk = max(items for program in plan.lanes.values() for _, items in program.chunks)
    return {
        "model": model, "split": split, "batch": batch, "chunk": chunk, "cycles": cycles, "ideal": ideal,
        "utilisation": ideal / cycles, "preload_cycles": len(plan.weights.words), "total_cycles": result.cycles,
        "utilisation_with_preload": ideal / result.cycles, "mismatches": mismatches,
        "harness": "direct" if direct else "cocotb", "sim_cycles_per_s": result.cycles_per_second,
        "sim_cycles_per_cpu_s": result.cycles_per_cpu_second, "sim_seconds": result.wall_seconds,
        "build_seconds": result.build_seconds, "total_seconds": total,
    }


def _synth(args):
    from ..config import preset
    from .synth import synth_one

    rows = []
    for component in ("array", "mlp"):
        for target, name in (("ecp5-85f", "small"), ("ice40-up5k", "tiny")):
            print(f"  synthesising {component} on {target} ({name}) ...", flush=True)
            r = synth_one(component, target, preset(name), seed=args.seed)
            rows.append(r)
            print(f"    {r['fmax_mhz']} MHz, {r['cells']['luts']} LUTs, {r['cells']['dsps']} DSPs, "
                  f"{r['cells']['brams']} BRAMs ({r['seconds']} s)", flush=True)
    return rows


def bench_gemm(args):
    config = config_from_args(args)
    models = args.models.split(",")
    for model in models:
        if model not in MODELS:
            raise CLIError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    batches = _ints(args.batches, "--batches")
    splits = _ints(args.splits, "--splits") if args.splits else list(config.splits)
    for split in splits:
        if split not in config.splits:
            raise CLIError(f"split {split} is not one of the {config.name} preset's splits {config.splits}")
    if not 0.0 <= args.pause < 1.0:
        raise CLIError(f"--pause must be in [0, 1), not {args.pause}")

    rows = []
    for model in models:
        for split in splits:
            for batch in batches:
                row = run_case(config, model, MODELS[model], split, batch, seed=args.seed, pause=args.pause)
                rows.append(row)
                print(f"  {model} split {split} batch {batch}: {row['cycles']:,} cycles, utilisation "
                      f"{row['utilisation']:.1%} ({row['utilisation_with_preload']:.1%} with preload), "
                      f"{row['sim_cycles_per_s']:,.0f} cycles/s ({row['sim_cycles_per_cpu_s']:,.0f} per CPU s)",
                      flush=True)
    compare = []
    if args.cocotb:
        for direct in (True, False):
            compare.append(run_case(config, "rm-large", MODELS["rm-large"], 1, 64, seed=args.seed,
                                    pause=args.pause, direct=direct))
    synth = _synth(args) if args.synth else []
    if args.json:
        print_json({"runs": rows, "harness_comparison": compare, "synthesis": synth})

    table = format_table(
        ["model", "split", "batch", "chunk", "cycles", "ideal cycles", "utilisation", "with preload",
         "sim cycles/s", "per CPU s"],
        [[r["model"], r["split"], r["batch"], r["chunk"], r["cycles"], r["ideal"], f"{r['utilisation']:.1%}",
          f"{r['utilisation_with_preload']:.1%}", r["sim_cycles_per_s"], r["sim_cycles_per_cpu_s"]] for r in rows])
    print(table)
    geometry = f"{config.array_rows}x{config.array_cols}"
    notes = [
        f"Preset `{config.name}` ({geometry} array, {config.clock_mhz:g} MHz target); every output of every run "
        "compared with the numpy golden model: 0 mismatches. Random int8 weights and inputs (seed "
        f"{args.seed}), ReLU after every layer; {args.pause:.0%} idle input and back-pressured output cycles. "
        "In split n each of the n sub-arrays runs batch/n items of the same model (one shared weight image).",
        "cycles: first command accepted to last result delivered (every tile's weight loading into the array "
        "and every layer's drain included); ideal: M * sum(K * N) / (R * C); utilisation: ideal / cycles; "
        "with preload: the model's weight words streamed into the weight memory first (one word per cycle, "
        "once per model) counted too; chunk: items per pass through the layers (bounded by the accumulator "
        "and activation buffers).",
        "Simulation: Verilator, the file-driven player as a stand-alone binary (no cocotb, Python woken once "
        "per run); sim cycles/s is simulated cycles per wall-clock second of the run, per CPU s per second of "
        "processor time (the machine is shared, so wall-clock speed varies with its load).",
    ]
    if compare:
        direct, cocotb = compare
        notes.append(
            f"Harnesses compared on rm-large, batch 64, split 1: direct binary {direct['sim_cycles_per_s']:,.0f} "
            f"cycles/s, under cocotb {cocotb['sim_cycles_per_s']:,.0f} cycles/s (cocotb's runner makes every "
            f"signal public for VPI, which stops Verilator optimising across the design); builds "
            f"{direct['build_seconds']:.0f} s and {cocotb['build_seconds']:.0f} s when not cached.")
    record(args, "gemm", "MLP engine on RecPipe's bottom MLPs", table + "\n\n" + "\n\n".join(notes))
    if synth:
        rows = [[r["component"], r["target"], r["preset"], r["clock_constraint_mhz"], r["fmax_mhz"],
                 "yes" if r["meets_timing"] else "no", r["cells"]["luts"], r["cells"]["ffs"], r["harness"]["ffs"],
                 r["cells"]["dsps"], r["cells"]["brams"],
                 f"{r['utilization']['luts' if r['target'] == 'ecp5-85f' else 'logic_cells']['used']:,}/"
                 f"{r['utilization']['luts' if r['target'] == 'ecp5-85f' else 'logic_cells']['available']:,}",
                 f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
                for r in synth]
        synth_table = format_table(["component", "target", "preset", "constraint MHz", "Fmax MHz", "meets",
                                    "LUTs", "FFs", "of which harness FFs", "DSPs", "BRAMs", "placed LUTs/cells",
                                    "critical path"], rows)
        print(synth_table)
        record(args, "gemm-synth", "Synthesis of the systolic array and the MLP engine", synth_table + "\n\n" +
               "Yosys and nextpnr through `rpaccel synth` (pin harness, see `rpaccel bench synth`), nextpnr seed "
               f"{args.seed}. Tools: " + ", ".join(synth[0]["tools"].values()) + ".")
    return 0


BENCH = Bench("gemm", "the MLP engine on RM-large/RM-small bottom MLPs: cycles, utilisation, sim speed (Verilator)",
              _arguments, bench_gemm)
