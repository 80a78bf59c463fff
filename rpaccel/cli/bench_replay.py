"""``rpaccel bench replay``: the CPU baseline under MLPerf LoadGen at several loads, beside the queueing simulation
with the service time measured here (:func:`rpaccel.experiments.replay.run_replay_bench`)."""

from ..experiments.replay import run_replay_bench
from .bench import Bench, finish
from .common import non_negative_int, say
from .hostcommon import positive_int


def _shares(text):
    import argparse

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _arguments(p):
    p.add_argument("--pipeline", default="rm-small:1024:128,rm-large:128:16",
                   help="stages MODEL:ITEMS:K,... (default rm-small:1024:128,rm-large:128:16)")
    p.add_argument("--workers", type=positive_int, default=2, help="worker processes and simulated cores (default 2)")
    p.add_argument("--utilisations", type=_shares, default=[0.3, 0.6, 0.8],
                   help="offered loads as shares of the measured capacity (default 0.3,0.6,0.8)")
    p.add_argument("--queries", type=positive_int, default=16, help="LoadGen's working set (default 16)")
    p.add_argument("--min-queries", type=positive_int, default=300, help="LoadGen's minimum queries (default 300)")
    p.add_argument("--min-duration", type=float, default=10.0, help="LoadGen's minimum seconds (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed (default 1)")


def run(args):
    report = run_replay_bench(pipeline=args.pipeline, workers=args.workers, utilisations=args.utilisations,
                              queries=args.queries, min_queries=args.min_queries, min_duration_s=args.min_duration,
                              seed=args.seed, progress=None if args.json else say)
    return finish(args, report)


BENCH = Bench("replay", "the CPU baseline under LoadGen beside the queueing simulation (p95 error)", _arguments,
              run)
