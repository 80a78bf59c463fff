"""``rpaccel bench sched``: DeepRecSched against the static scheduler over CPU cores and the chip, with service
times measured on this machine and on the chip's RTL (:func:`rpaccel.experiments.sched.run_sched`)."""

from ..experiments.sched import run_sched
from .bench import Bench, finish
from .common import add_config_arguments, config_from_args, non_negative_int, say
from .hostcommon import positive_int


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--model", default="rmc1", help="zoo model the chip runs (default rmc1)")
    p.add_argument("--sizes", default="lognormal:5.1,0.2", help="query sizes (default lognormal:5.1,0.2)")
    p.add_argument("--queries", type=positive_int, default=5000, help="simulated queries per load (default 5000)")
    p.add_argument("--target-ms", type=float, default=20.0, help="p95 target in ms (default 20)")
    p.add_argument("--cores", type=positive_int, default=2, help="simulated CPU cores (default 2, this machine's)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed (default 1)")


def run(args):
    report = run_sched(config_from_args(args), model=args.model, sizes=args.sizes, queries=args.queries,
                       target_ms=args.target_ms, cores=args.cores, seed=args.seed,
                       progress=None if args.json else say)
    return finish(args, report)


BENCH = Bench("sched", "DeepRecSched vs the static scheduler: CPU cores and the chip, measured service times",
              _arguments, run)
