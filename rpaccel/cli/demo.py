"""``rpaccel demo``: the main job on a small default (:mod:`rpaccel.experiments.demo`).

Until the accelerator's top level exists, it runs what is built on Verilator, every output checked against the
golden models, with random idle input cycles and back-pressure:

* the block scoreboards (processing element, post-processor) through cocotb, and
* a ranking query through two blocks on the RTL, glued by the host: the MLP engine (``small`` preset unless
  ``--preset``/``--set`` say otherwise) scores ``--candidates`` candidates with a random int8 scoring MLP whose
  last layer emits raw int32 logits, and a top-k unit of the preset's ``K_MAX`` keeps the ``k`` best of those
  logits, sorted.
"""

from .common import CommandFailed, add_config_arguments, config_from_args, non_negative_int, print_json


def register(subparsers):
    p = subparsers.add_parser("demo", help="run the built blocks on Verilator against their golden models",
                              description=__doc__)
    add_config_arguments(p)
    p.add_argument("--count", type=int, default=10_000, help="random transactions per block (default 10000)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed (default 1)")
    p.add_argument("--pause", type=float, default=0.3,
                   help="probability of an idle input / back-pressured output cycle (default 0.3)")
    p.add_argument("--waves", action="store_true", help="dump FST waveforms into ./waves")
    p.add_argument("--candidates", type=int, default=1024, help="candidates of the ranking query (default 1024)")
    p.add_argument("--k", type=int, default=None, help="results of the ranking query (default: the preset's K_MAX)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args):
    from ..experiments.demo import run_demo

    report = run_demo(config_from_args(args), count=args.count, candidates=args.candidates, k=args.k,
                      seed=args.seed, pause=args.pause, waves=args.waves)
    if args.json:
        print_json(report.data)
    else:
        print(report.text)
    if not report.passed:
        raise CommandFailed(report.failures[0])
    return 0
