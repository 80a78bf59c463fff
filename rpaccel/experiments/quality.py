"""RecPipe's multi-stage quality experiment on synthetic Criteo-like data (``rpaccel bench quality``).

One call from a seed: generate the data, train RM-small, RM-med and RM-large (float, numpy), quantise them (int8,
calibrated), score the test queries with the integer reference and with the float models, and tabulate NDCG@k and
MACs per query of the 1-, 2- and 3-stage pipelines, with a PNG of quality against compute.
"""

import os
from pathlib import Path

from ..results import RESULTS_FILE
from .report import ExperimentError, Report, Section, check_positive, check_seed

__all__ = ["run_quality"]


def run_quality(*, train_samples=1_000_000, queries=128, candidates=4096, k=64, max_rows=5_000, skew=1.05, epochs=1,
                seed=1, plot="docs/img/quality_vs_macs.png", workdir="build/quality", results=RESULTS_FILE,
                quiet=True):
    """Train, quantise and evaluate the three models, and the pipelines made of them.

    Parameters
    ----------
    train_samples, queries, candidates : int
        Training samples, test queries, candidates per query.
    k : int
        NDCG depth (at most ``candidates / 32``: the pipelines keep candidates/8 and candidates/32 items).
    max_rows : int
        Cap on each table's rows, in the data and the models.
    skew : float
        Zipf exponent of the IDs.
    epochs : int
        Training epochs.
    seed : int
        Seed of data, weights and order.
    plot : path-like
        PNG of quality against MACs per query to write.
    workdir : path-like
        Where weights and int8 models go.
    results : path-like
        The results file the section's link to ``plot`` is relative to.
    quiet : bool
        No progress bars.

    Returns
    -------
    Report
        The pipelines' rows, the ``quality-pipelines`` section.
    """
    from ..host.experiment import findings, quality_tables, run_synthetic_experiment
    from ..host.quality import check_plot_path, plot_quality

    check_positive(train_samples=train_samples, queries=queries, candidates=candidates, k=k, max_rows=max_rows,
                   epochs=epochs)
    check_seed(seed)
    try:
        check_plot_path(plot)
    except ValueError as error:
        raise ExperimentError("plot", str(error)) from None
    if candidates < 32 or k > candidates // 32:
        raise ExperimentError("k", f"must be at most {candidates // 32}, candidates/32 (the pipelines keep "
                              f"candidates/8 and candidates/32 items), not {k}")
    report = run_synthetic_experiment(train_samples=train_samples, queries=queries, candidates=candidates, k=k,
                                      max_rows=max_rows, skew=skew, seed=seed, epochs=epochs, quiet=quiet,
                                      workdir=workdir)
    pipeline_table, model_table = quality_tables(report)
    path = plot_quality(report["pipelines"], plot, k=k)
    s, planted = report["settings"], report["planted"]
    rel = os.path.relpath(Path(path).resolve(), Path(results).resolve().parent)
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
    return Report(rows=report["pipelines"], text=pipeline_table + "\n\n" + model_table, data=report,
                  sections=(Section("quality-pipelines",
                                    "Ranking quality of multi-stage pipelines (RecPipe's experiment)", body),))
