"""``rpaccel bench``: measurements that go into docs/results.md (with ``--write``).

Each benchmark is a :class:`Bench`: a name, a help line, a function adding its own options and the function
that runs it. Every benchmark has ``--write`` (record the figures, the date and the command line in
docs/results.md), ``--results`` and ``--json``. The benchmarks of this module are listed in :data:`BENCHES`;
a module ``rpaccel/cli/bench_<name>.py`` that defines ``BENCH = Bench(...)`` is picked up as well, so a new
block brings its benchmark without editing this file.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from ..results import RESULTS_FILE, format_table, write_section
from .common import CLIError, CommandFailed, print_json


@dataclass(frozen=True)
class Bench:
    """A benchmark of ``rpaccel bench``: ``arguments(parser)`` adds its options, ``run(args)`` runs it."""

    name: str
    help: str
    arguments: Callable
    run: Callable


def all_benches():
    """:data:`BENCHES` and the ``BENCH`` of every ``rpaccel.cli.bench_*`` module, by name."""
    benches = dict(BENCHES)
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("bench_"):
            bench = importlib.import_module(f"{__package__}.{info.name}").BENCH
            benches[bench.name] = bench
    return benches


def register(subparsers):
    p = subparsers.add_parser("bench", help="run a benchmark; --write records it in docs/results.md",
                              description=__doc__)
    sub = p.add_subparsers(dest="bench", metavar="BENCH", parser_class=type(p))
    sub.required = True
    for bench in all_benches().values():
        b = sub.add_parser(bench.name, help=bench.help, description=bench.help)
        b.add_argument("--write", action="store_true", help=f"record the figures in {RESULTS_FILE}")
        b.add_argument("--results", default=str(RESULTS_FILE), help=f"results file (default {RESULTS_FILE})")
        b.add_argument("--json", action="store_true", help="print the figures as JSON")
        bench.arguments(b)
        b.set_defaults(func=bench.run)


def record(args, name, title, body):
    """Write the section ``name`` of the results file if ``--write`` was given."""
    if args.write:
        path = write_section(name, title, body, path=args.results)
        print(f"written to {path}")


# --- bench synth -----------------------------------------------------------------------------------------

# The small blocks; the large units (array, MLP engine, embedding unit, top-k) take minutes to an hour each to
# place and route, and their own benches synthesise them (``bench gemm|embedding|topk``).
BLOCK_COMPONENTS = ("pe", "pe-lut", "postproc")


def _synth_arguments(p):
    p.add_argument("--components", help=f"comma-separated components (default: {','.join(BLOCK_COMPONENTS)})")
    p.add_argument("--targets", default="ice40-up5k,ecp5-85f", help="comma-separated targets (default: both)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")


def bench_synth(args):
    from ..config import PRESETS
    from ..flow.catalog import CATALOG
    from .synth import synth_one

    components = args.components.split(",") if args.components else list(BLOCK_COMPONENTS)
    for name in components:
        if name not in CATALOG:
            raise CLIError(f"unknown component {name!r} (known: {', '.join(CATALOG)})")
    presets = {"ice40-up5k": PRESETS["tiny"], "ecp5-85f": PRESETS["small"]}
    targets = args.targets.split(",")
    for target in targets:
        if target not in presets:
            raise CLIError(f"unknown target {target!r} (known: {', '.join(presets)})")
    results = []
    for target in targets:
        for name in components:
            r = synth_one(name, target, presets[target], seed=args.seed)
            results.append(r)
            print(f"  {name} on {target}: {r['fmax_mhz']} MHz, {r['cells']['luts']} LUTs", flush=True)
    if args.json:
        print_json(results)
    rows = [[r["component"], r["target"], r["preset"], r["clock_constraint_mhz"], r["fmax_mhz"],
             "yes" if r["meets_timing"] else "no", r["cells"]["luts"], r["cells"]["ffs"], r["harness"]["ffs"],
             r["cells"]["dsps"], r["cells"]["brams"],
             f"`{r['critical_path']['from']}` -> `{r['critical_path']['to']}`" if r["critical_path"] else ""]
            for r in results]
    table = format_table(["component", "target", "preset", "constraint MHz", "Fmax MHz", "meets", "LUTs", "FFs",
                          "of which harness FFs", "DSPs", "BRAMs", "critical path"], rows)
    tools = results[0]["tools"] if results else {}
    notes = ("LUTs and FFs are Yosys's post-synthesis cell counts (on ECP5 a CCU2C carry cell counts as two "
             "LUTs) and include the pin harness (one FF per input bit and one FF plus about one LUT per output "
             "bit). Fmax is nextpnr's estimate for the harness clock, constrained at the preset's clock, seed "
             f"{args.seed}. Tools: " + ", ".join(tools.values()) + ".")
    print(table)
    record(args, "synth-blocks", "Synthesis of the blocks", table + "\n\n" + notes)
    return 0


# --- bench blocks ----------------------------------------------------------------------------------------

def _blocks_arguments(p):
    p.add_argument("--count", type=int, default=10_000,
                   help="transactions per block for the cocotb scoreboards (default 10000)")
    p.add_argument("--player-count", type=int, default=200_000,
                   help="transactions of the post-processor for the file-driven player (default 200000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--pause", type=float, default=0.3,
                   help="probability of an idle input / back-pressured output cycle (default 0.3)")
    p.set_defaults(waves=False)


def bench_blocks(args):
    import time

    import numpy as np

    from ..rtl.postproc import PostProcessor
    from ..sim.golden.postproc import postprocess_payloads, random_postprocess_payloads
    from ..sim.player import Player
    from .demo import run_blocks

    if args.player_count <= 0:
        raise CLIError(f"--player-count must be a positive integer, not {args.player_count}")
    reports = run_blocks(args)
    rows = [[r["block"], "cocotb drivers, Python every cycle", r["transactions"], r["mismatches"], r["cycles"],
             r["cycles_per_second"]] for r in reports]

    payloads = random_postprocess_payloads(np.random.default_rng(args.seed), args.player_count)
    expected = postprocess_payloads(payloads)
    started = time.perf_counter()
    result = Player(PostProcessor).run({"i": payloads}, expect={"o": len(payloads)}, pause=args.pause,
                                       seed=args.seed)
    total = time.perf_counter() - started
    mismatches = sum(a != b for a, b in zip(result.outputs["o"], expected))
    rows.append(["postproc", "player, Python woken once", len(payloads), mismatches, result.cycles,
                 result.cycles_per_second])
    if mismatches:
        raise CommandFailed(f"post-processor player run: {mismatches} mismatches against the golden model")
    if args.json:
        print_json({"scoreboards": reports, "player": {"transactions": len(payloads), "cycles": result.cycles,
                                                         "cycles_per_second": result.cycles_per_second,
                                                         "total_seconds": total}})
    table = format_table(["block", "harness", "transactions", "mismatches", "cycles", "sim cycles/s"], rows)
    print(table)
    notes = (f"Random inputs, seed {args.seed}, {args.pause:.0%} idle input and back-pressured output cycles; every "
             f"output compared with the golden model. Simulator: {reports[0]['simulator']}. The cocotb drivers "
             "wake Python twice per cycle per stream; the player (rpaccel.sim.player) moves the streams through "
             "files from a self-clocked Verilog testbench and wakes Python once per run. Its cycles/s count "
             f"simulation only; writing and reading the {len(payloads):,} payloads in Python took "
             f"{total - result.wall_seconds:.1f} s more.")
    record(args, "blocks-harness", "Block scoreboards and simulation speed on Verilator", table + "\n\n" + notes)
    return 0


BENCHES = {b.name: b for b in [
    Bench("synth", "synthesise the components for each target at its preset (tiny on iCE40, small on ECP5)",
          _synth_arguments, bench_synth),
    Bench("blocks", "run the block scoreboards on Verilator and measure simulation speed of both harnesses",
          _blocks_arguments, bench_blocks),
]}
