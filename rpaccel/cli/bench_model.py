"""``rpaccel bench model``: the fast model against the RTL, side by side in one run
(:func:`rpaccel.experiments.model.run_model_units`: the MLP engine's and the interaction unit's exact models;
:func:`rpaccel.experiments.model.run_model_chip`: the whole chip's timed model on RecPipe's pipelines;
:func:`rpaccel.experiments.model.run_model_regression`: random programs, every response's cycle)."""

from ..experiments import combine
from ..experiments.model import run_model_chip, run_model_regression, run_model_units
from .bench import Bench, finish
from .common import CLIError, add_config_arguments, config_from_args, config_given, non_negative_int, say
from .hostcommon import positive_int

UNITS = ("engine", "interaction", "chip", "regression")



def _arguments(p):
    add_config_arguments(p, default=None, default_help="small (units: with a 32,768-word weight buffer)")
    p.add_argument("--units", default=",".join(UNITS), help=f"of {', '.join(UNITS)} (default all)")
    p.add_argument("--candidates", type=positive_int, default=1024,
                   help="candidates per query of the chip's cases (default 1024)")
    p.add_argument("--programs", type=positive_int, default=4,
                   help="random programs per configuration of the regression (tiny and small; default 4)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of weights and inputs (default 1)")


def run(args):
    units = args.units.split(",")
    unknown = sorted(set(units) - set(UNITS))
    if unknown:
        raise CLIError(f"--units names unknown units {', '.join(unknown)}: {', '.join(UNITS)}")
    config = config_from_args(args) if config_given(args) else None
    reports = []
    if "engine" in units or "interaction" in units:
        reports.append(run_model_units(config, seed=args.seed, engine="engine" in units,
                                       interaction="interaction" in units, progress=None if args.json else say))
    if "chip" in units:
        reports.append(run_model_chip(config, candidates=args.candidates, seed=args.seed,
                                      progress=None if args.json else say))
    if "regression" in units:
        reports.append(run_model_regression(programs=args.programs, seed=args.seed,
                                            progress=None if args.json else say))
    return finish(args, combine(*reports))


BENCH = Bench("model", "the fast model against the RTL: the units' every output cycle, the whole chip's error, and "
              "the speed-up", _arguments, run)
