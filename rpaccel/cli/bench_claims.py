"""``rpaccel bench claims``: RecPipe's claim (RPAccel against a TPU-like baseline at iso-quality) on the chip's
timed model (:func:`rpaccel.experiments.claims.run_claims`): NDCG@k of the candidate pipelines on
``--quality-queries`` queries by the integer reference, paired against the baseline (iso-quality: the interval of
the difference above ``-MARGIN`` points); the baseline and the pipelines worth timing on the timed model, RPAccel on
each split with stage ``s`` on lane ``s`` alone, and with the lane map the stage mapping chooses for throughput
where it is better; quality against cost as a table and, with ``--plot`` (by default with ``--write``,
``img/claims-<preset>.png`` beside the results file), a plot in the style of RecPipe's figures."""

from pathlib import Path

from ..experiments.claims import ISO_MARGIN, RECPIPE_SPLITS, run_claims
from .bench import Bench, finish
from .common import CLIError, non_negative_int, say
from .hostcommon import positive_int


def _arguments(p):
    p.add_argument("--preset", default="paper", help="the configuration (default paper, RecPipe's scale)")
    p.add_argument("--candidates", type=positive_int, default=4096, help="candidates per query (default 4096)")
    p.add_argument("--queries", type=positive_int, default=16,
                   help="timed queries, alone and back to back (default 16)")
    p.add_argument("--quality-queries", type=positive_int, default=256,
                   help="queries the NDCG is measured on, the timed ones first (default 256)")
    p.add_argument("--pipeline", action="append", metavar="MODEL:ITEMS:K,...",
                   help="a candidate RPAccel pipeline (repeatable; default: RecPipe's 2- and 3-stage pipelines and "
                        "variants keeping more items, or with RM-med first)")
    p.add_argument("--margin", type=float, default=ISO_MARGIN,
                   help=f"iso-quality's non-inferiority margin, points of NDCG (default {ISO_MARGIN:g})")
    p.add_argument("--splits", default=",".join(map(str, RECPIPE_SPLITS)),
                   help="splits RPAccel mode runs on (default RecPipe's: 1,4,16,64)")
    p.add_argument("--k", type=positive_int, default=64, help="the NDCG's depth (default 64, RecPipe's)")
    p.add_argument("--train-samples", type=positive_int, default=1_000_000,
                   help="training samples (default 1000000; the trained models are cached)")
    p.add_argument("--epochs", type=positive_int, default=1, help="training epochs (default 1)")
    p.add_argument("--plot", help="draw quality against cost to this image (.png, .svg, ...; default with --write: "
                                  "img/claims-PRESET.png beside the results file, linked from its section)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of the data and the training (default 1)")


def run(args):
    from ..config import PRESETS

    if args.preset not in PRESETS:
        raise CLIError(f"--preset {args.preset!r} is not a preset ({', '.join(PRESETS)})")
    try:
        splits = tuple(int(n) for n in args.splits.split(","))
    except ValueError:
        raise CLIError(f"--splits must be comma-separated integers, not {args.splits!r}") from None
    plot = args.plot or (Path(args.results).parent / "img" / f"claims-{args.preset}.png" if args.write else None)
    report = run_claims(args.preset, candidates=args.candidates, queries=args.queries,
                        quality_queries=args.quality_queries, splits=splits, k=args.k, seed=args.seed,
                        train_samples=args.train_samples, epochs=args.epochs, margin=args.margin,
                        pipelines=args.pipeline, plot=plot, results=args.results,
                        progress=None if args.json else say)
    return finish(args, report)


BENCH = Bench("claims", "RecPipe's claim on the timed model: RPAccel against a TPU-like baseline at iso-quality",
              _arguments, run)
