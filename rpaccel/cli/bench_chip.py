"""``rpaccel bench chip``: do the preset's large units fit one ECP5-85F together? (:mod:`rpaccel.experiments.chip`)"""

from ..experiments.chip import run_chip
from .bench import Bench, finish
from .common import add_config_arguments, config_from_args, say


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--whole", action="store_true",
                   help="pack the units as one design (rpaccel synth parts) instead of adding up their packings")
    p.add_argument("--build-dir", default="build/bench-chip", help="build folder (default build/bench-chip)")


def bench_chip(args):
    return finish(args, run_chip(config_from_args(args), whole=args.whole, build_dir=args.build_dir, progress=say))


BENCH = Bench("chip", "the preset's MLP engine, embedding unit and top-k units on the ECP5-85F: do they fit "
              "together", _arguments, bench_chip)
