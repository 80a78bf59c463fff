"""``rpaccel bench``: measurements that go into docs/results.md (with ``--write``).

Each benchmark is a :class:`Bench`: a name, a help line, a function adding its own options and a function that
turns the options into a call of its experiment (:mod:`rpaccel.experiments`) and hands the report to
:func:`finish`, which prints it and records its sections. Every benchmark has ``--write`` (record the figures, the
date, the commit and the command line in docs/results.md), ``--results`` and ``--json``. The benchmarks of this
module are listed in :data:`BENCHES`; a module ``rpaccel/cli/bench_<name>.py`` that defines ``BENCH = Bench(...)``
is picked up as well, so a new block brings its benchmark without editing this file.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from ..results import RESULTS_FILE, write_section
from .common import (
    CLIError,
    CommandFailed,
    add_config_arguments,
    apply_settings,
    config_from_args,
    non_negative_int,
    print_json,
    say,
)


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


def finish(args, report):
    """Print ``report`` (JSON with ``--json``); if a check failed, fail; else record its sections with ``--write``."""
    if args.json:
        print_json(report.data)
    print(report.text)
    if report.failures:
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        raise CommandFailed(report.failures[0] + more)
    for section in report.sections:
        record(args, section.name, section.title, section.body)
    return 0


# --- bench synth -----------------------------------------------------------------------------------------

def _synth_arguments(p):
    from ..config import TARGETS
    from ..experiments.synth import BLOCK_COMPONENTS

    p.add_argument("--components", help=f"comma-separated components (default: {','.join(BLOCK_COMPONENTS)})")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="comma-separated targets, each built at the presets meant for it (default: all)")
    add_config_arguments(p, default=None, default_help="every preset meant for one of --targets")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")


def bench_synth(args):
    from ..experiments.synth import BLOCK_COMPONENTS, run_synth, target_presets

    components = args.components.split(",") if args.components else list(BLOCK_COMPONENTS)
    targets = args.targets.split(",")
    if args.preset is None:
        configs = [apply_settings(config, args) for config in target_presets(targets)]
    else:
        configs = [config_from_args(args)]
        if configs[0].target not in targets:
            raise CLIError(f"the {configs[0].name} configuration's target {configs[0].target!r} is not one of "
                           f"--targets {args.targets}")
    return finish(args, run_synth(components=components, configs=configs, seed=args.seed, progress=say))


# --- bench blocks ----------------------------------------------------------------------------------------

def _blocks_arguments(p):
    p.add_argument("--count", type=int, default=10_000,
                   help="transactions per block for the cocotb scoreboards (default 10000)")
    p.add_argument("--player-count", type=int, default=200_000,
                   help="transactions of the post-processor for the file-driven player (default 200000)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed (default 1)")
    p.add_argument("--pause", type=float, default=0.3,
                   help="probability of an idle input / back-pressured output cycle (default 0.3)")


def bench_blocks(args):
    from ..experiments.blocks import run_blocks

    return finish(args, run_blocks(count=args.count, player_count=args.player_count, seed=args.seed,
                                   pause=args.pause))


BENCHES = {b.name: b for b in [
    Bench("synth", "synthesise the components on each target at the presets meant for it (tiny on iCE40, small on "
          "ECP5), or at --preset/--set on its target", _synth_arguments, bench_synth),
    Bench("blocks", "run the block scoreboards on Verilator and measure simulation speed of both harnesses",
          _blocks_arguments, bench_blocks),
]}
