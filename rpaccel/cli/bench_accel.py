"""``rpaccel bench accel``: RecPipe's pipelines on the chip's RTL, RPAccel mode against the baseline
(:mod:`rpaccel.experiments.accel`)."""

from ..experiments.accel import MODES, PIPELINES, RECPIPE_CANDIDATES, SCHEDULES, run_accel
from .bench import Bench, finish
from .common import add_config_arguments, config_from_args, non_negative_int, positive_ints, say


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--candidates", type=int, default=RECPIPE_CANDIDATES,
                   help=f"candidates per query (default {RECPIPE_CANDIDATES:,}, RecPipe's; the stages' kept counts "
                        "scale with it)")
    p.add_argument("--pipelines", default=",".join(map(str, PIPELINES)),
                   help="comma-separated pipelines of 1, 2, 3 stages (default 1,2,3)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated schedules, of {', '.join(SCHEDULES)} (default {','.join(MODES)})")
    p.add_argument("--sub-batch", type=int, default=None,
                   help="sub-batch size (default: the most the lanes hold)")
    p.add_argument("--queries", type=int, default=1, help="queries per program, back to back (default 1)")
    p.add_argument("--train-samples", type=int, default=20_000,
                   help="synthetic samples the models are trained on (default 20000)")
    p.add_argument("--max-rows", type=int, default=5_000, help="rows of each embedding table (default 5000)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="probability of idle command / back-pressured response cycles (default 0)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed of data and training (default 1)")


def bench_accel(args):
    report = run_accel(config_from_args(args), candidates=args.candidates,
                       pipelines=positive_ints(args.pipelines, "--pipelines"), modes=args.modes.split(","),
                       sub_batch=args.sub_batch, queries=args.queries, seed=args.seed, pause=args.pause,
                       train_samples=args.train_samples, max_rows=args.max_rows, progress=say)
    return finish(args, report)


BENCH = Bench("accel", "RecPipe's 1-, 2- and 3-stage pipelines on the chip (RTL, Verilator): RPAccel mode against "
              "the baseline, cycles, utilisation, cache hit rates", _arguments, bench_accel)
