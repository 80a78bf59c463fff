"""``rpaccel demo``: the main job, RecPipe's 2-stage query on the chip (:mod:`rpaccel.experiments.demo`).

RM-small scores ``--candidates`` candidates (default 1,024) and keeps an eighth, RM-large scores those and keeps
the best ``--k`` (default candidates / 64, at most the preset's K_MAX), with models trained for seconds on synthetic
Criteo-like data and quantised to int8, on the chip's RTL (Verilator; ``small`` preset unless ``--preset``/``--set``
say otherwise). The query runs in RPAccel mode (split array, sub-batches, on-chip filtering) and in the baseline mode
on the same RTL; the output gives per-stage cycles and latency at the preset's clock, per-unit utilisation, cache hit
rates, and the ranking checked against the golden model and the host's reference pipeline. The first run on a
fresh machine builds the chip with Verilator (about 5 minutes for ``small``); later runs reuse the build.
"""

from .common import CommandFailed, add_config_arguments, config_from_args, non_negative_int, print_json, say


def register(subparsers):
    from ..experiments.demo import DEMO_CANDIDATES

    p = subparsers.add_parser("demo", help="RecPipe's 2-stage query on the chip (RTL, Verilator), checked",
                              description=__doc__)
    add_config_arguments(p)
    p.add_argument("--candidates", type=int, default=DEMO_CANDIDATES,
                   help=f"candidates of the query (default {DEMO_CANDIDATES}); stage 1 keeps an eighth")
    p.add_argument("--k", type=int, default=None,
                   help="results of the query (default candidates/64, at most the preset's K_MAX)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed of data and training (default 1)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="probability of an idle command / back-pressured response cycle (default 0)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args):
    from ..experiments.demo import run_demo

    report = run_demo(config_from_args(args), candidates=args.candidates, k=args.k, seed=args.seed,
                      pause=args.pause, progress=None if args.json else say)
    if args.json:
        print_json(report.data)
    else:
        print(report.text)
    if not report.passed:
        raise CommandFailed(report.failures[0])
    return 0
