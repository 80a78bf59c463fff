"""``rpaccel bench quality``: RecPipe's multi-stage quality experiment on synthetic Criteo-like data.

One command from a seed: generate the data, train RM-small, RM-med and RM-large (float, numpy), quantise them
(int8, calibrated), score the test queries with the integer reference and with the float models, and tabulate
NDCG@k and MACs per query of the 1-, 2- and 3-stage pipelines, with a PNG of quality against compute.
"""

import os
from pathlib import Path

from .bench import Bench, record
from .common import CLIError, print_json
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
    p.add_argument("--seed", type=int, default=1, help="seed of data, weights and order (default 1)")
    p.add_argument("--plot", default="docs/img/quality_vs_macs.png",
                   help="PNG to write (default docs/img/quality_vs_macs.png)")
    p.add_argument("--workdir", default="build/quality", help="where weights and int8 models go (default "
                                                               "build/quality)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args):
    from ..host.experiment import findings, quality_tables, run_synthetic_experiment
    from ..host.quality import check_plot_path, plot_quality

    if args.candidates < 32 or args.k > args.candidates // 32:
        raise CLIError(f"the pipelines keep candidates/8 and candidates/32 items; --k {args.k} must be at most "
                       f"{args.candidates // 32}")
    try:
        check_plot_path(args.plot)
    except ValueError as error:
        raise CLIError(f"--plot {error}") from None
    report = run_synthetic_experiment(train_samples=args.train_samples, queries=args.queries,
                                      candidates=args.candidates, k=args.k, max_rows=args.max_rows, skew=args.skew,
                                      seed=args.seed, epochs=args.epochs, quiet=args.quiet, workdir=args.workdir)
    pipeline_table, model_table = quality_tables(report)
    if args.json:
        print_json(report)
    print(pipeline_table + "\n\n" + model_table)
    path = plot_quality(report["pipelines"], args.plot, k=args.k)
    s, planted = report["settings"], report["planted"]
    rel = os.path.relpath(Path(path).resolve(), Path(args.results).resolve().parent)
    notes = (
        f"Synthetic Criteo-like data (`rpaccel.host.data.SyntheticCriteo`, seed {s['seed']}): 13 dense and 26 "
        f"categorical features, Kaggle cardinalities capped at {s['max_rows']:,} rows, Zipf exponent {s['skew']}, "
        f"click rate {s['ctr']:.3f}. Models trained on {s['train_samples']:,} samples ({s['epochs']} epoch, batch "
        f"{s['batch']}, Adam), quantised on {s['calibration']:,} further samples; {report['queries']} test queries "
        f"of {s['candidates']:,} consecutive unseen samples. NDCG@{s['k']} is RecPipe's (DCG of the top {s['k']} "
        f"over the DCG of {s['k']} ones), mean over queries (± its standard error); the standard NDCG divides by the "
        f"query's ideal DCG. int8 columns are the integer reference model (`rpaccel.host.reference`), the exact "
        f"logits the accelerator must produce. For scale: the planted model that made the labels reaches AUC "
        f"{planted['auc']:.4f} and NDCG@{s['k']} {planted['ndcg']:.4f} on the same queries.")
    body = (f"{pipeline_table}\n\n{model_table}\n\n{findings(report)}\n\n{notes}\n\n"
            f"![quality vs MACs per query]({rel})")
    record(args, "quality-pipelines", "Ranking quality of multi-stage pipelines (RecPipe's experiment)", body)
    return 0


BENCH = Bench("quality", "RecPipe's multi-stage quality experiment on synthetic data: train, quantise, evaluate",
              _arguments, run)
