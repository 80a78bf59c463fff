"""``rpaccel bench sched``: DeepRecSched against the static scheduler over CPU cores and the chip, with service
times measured on this machine and on the chip (its RTL or its timed model): one model
(:func:`rpaccel.experiments.sched.run_sched`, section ``sched``) or, with ``--models``, several on the same queries
(:func:`rpaccel.experiments.sched.run_sched_models`, section ``sched-models``, or ``sched-models-paper`` with
``--preset paper``)."""

from ..experiments.sched import DEVICES, TARGET_X, ZOO_MODELS, run_sched, run_sched_models
from .bench import Bench, finish
from .common import CLIError, add_config_arguments, config_from_args, non_negative_int, say
from .hostcommon import positive_int


def _arguments(p):
    add_config_arguments(p)
    models = p.add_mutually_exclusive_group()
    models.add_argument("--model", default="rmc1", help="one zoo model the chip runs (default rmc1; section sched)")
    models.add_argument("--models", nargs="?", const=",".join(ZOO_MODELS), metavar="LIST",
                        help=f"comma-separated zoo models, each on the same queries (alone: {','.join(ZOO_MODELS)}; "
                             "section sched-models)")
    p.add_argument("--device", choices=DEVICES,
                   help="the chip's service times from its RTL or its timed model (default: rtl with --model, "
                        "model with --models)")
    p.add_argument("--sizes", default="lognormal:5.1,0.2", help="query sizes (default lognormal:5.1,0.2)")
    p.add_argument("--queries", type=positive_int,
                   help="simulated queries per load (default 5000 with --model, 2000 with --models)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-ms", type=float, help="p95 target in ms (default 20 with --model)")
    target.add_argument("--target-x", type=float, metavar="X",
                        help=f"with --models, a p95 target per model: X times its one-core service time of a query of "
                             f"the mean size (default {TARGET_X:g} unless --target-ms)")
    p.add_argument("--cores", type=positive_int, default=2, help="simulated CPU cores (default 2, this machine's)")
    p.add_argument("--check-rtl", type=non_negative_int, metavar="ITEMS",
                   help="with --models and the timed model, a query size also run on the RTL, its error reported "
                        "(default 64 on a preset with an FPGA target, none on paper; 0: none)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed (default 1)")


def run(args):
    from ..config import NO_TARGET

    config = config_from_args(args)
    progress = None if args.json else say
    common = {"sizes": args.sizes, "cores": args.cores, "seed": args.seed, "progress": progress}
    if args.models is None:
        if args.target_x is not None:
            raise CLIError("--target-x sets a target per model: give --models")
        report = run_sched(config, model=args.model, queries=args.queries or 5000, device=args.device or "rtl",
                           target_ms=20.0 if args.target_ms is None else args.target_ms, **common)
    else:
        models = [name.strip() for name in args.models.split(",")]
        if not all(models):
            raise CLIError(f"--models must be comma-separated model names, not {args.models!r}")
        report = run_sched_models(config, models=models, queries=args.queries or 2000, target_ms=args.target_ms,
                                  target_x=args.target_x, device=args.device or "model",
                                  check_rtl=(args.check_rtl if args.check_rtl is not None else
                                             0 if config.target == NO_TARGET else 64), **common)
    return finish(args, report)


BENCH = Bench("sched", "DeepRecSched vs the static scheduler: CPU cores and the chip, measured service times",
              _arguments, run)
