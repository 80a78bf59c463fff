"""``rpaccel bench quality``: RecPipe's multi-stage quality experiment on synthetic Criteo-like data
(:mod:`rpaccel.experiments.quality`)."""

from ..experiments.quality import run_quality
from .bench import Bench, finish
from .common import non_negative_int
from .hostcommon import positive_int


def _arguments(p):
    p.add_argument("--train-samples", type=positive_int, default=1_000_000, help="training samples (default 1M)")
    p.add_argument("--queries", type=positive_int, default=128, help="test queries (default 128)")
    p.add_argument("--candidates", type=positive_int, default=4096, help="candidates per query (default 4096)")
    p.add_argument("--k", type=positive_int, default=64, help="NDCG depth (default 64)")
    p.add_argument("--max-rows", type=positive_int, default=5_000,
                   help="cap on each table's rows, in the data and the models (default 5000)")
    p.add_argument("--skew", type=float, default=1.05, help="Zipf exponent of the IDs (default 1.05)")
    p.add_argument("--epochs", type=positive_int, default=1, help="training epochs (default 1)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of data, weights and order (default 1)")
    p.add_argument("--plot", default="docs/img/quality_vs_macs.png",
                   help="PNG to write (default docs/img/quality_vs_macs.png)")
    p.add_argument("--workdir", default="build/quality", help="where weights and int8 models go (default "
                                                               "build/quality)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args):
    report = run_quality(train_samples=args.train_samples, queries=args.queries, candidates=args.candidates,
                         k=args.k, max_rows=args.max_rows, skew=args.skew, epochs=args.epochs, seed=args.seed,
                         plot=args.plot, workdir=args.workdir, results=args.results, quiet=args.quiet)
    return finish(args, report)


BENCH = Bench("quality", "RecPipe's multi-stage quality experiment on synthetic data: train, quantise, evaluate",
              _arguments, run)
