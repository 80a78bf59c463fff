"""``rpaccel bench model``: the fast model against the RTL, side by side in one run
(:func:`rpaccel.experiments.model.run_model_units`: so far the MLP engine's and the interaction unit's models)."""

from ..experiments.model import run_model_units
from .bench import Bench, finish
from .common import CLIError, add_config_arguments, config_from_args, config_given, non_negative_int, say


def _arguments(p):
    add_config_arguments(p, default=None, default_help="small with a 32,768-word weight buffer")
    p.add_argument("--units", default="engine,interaction", help="engine, interaction or both (default both)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of weights and inputs (default 1)")


def run(args):
    units = args.units.split(",")
    unknown = sorted(set(units) - {"engine", "interaction"})
    if unknown:
        raise CLIError(f"--units names unknown units {', '.join(unknown)}: engine, interaction")
    config = config_from_args(args) if config_given(args) else None
    report = run_model_units(config, seed=args.seed, engine="engine" in units, interaction="interaction" in units,
                             progress=None if args.json else say)
    return finish(args, report)


BENCH = Bench("model", "the fast model's units against their RTL: every output cycle, and the speed-up", _arguments,
              run)
