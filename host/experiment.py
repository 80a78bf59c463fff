"""The multi-stage quality experiment: score test queries with float and int8 models, run pipelines, tabulate.

Used by ``rpaccel quality`` (models and data from files) and ``rpaccel bench quality`` (everything generated,
trained and quantised in one run from a seed).
"""

import numpy as np

from ..results import format_table
from .data import SyntheticConfig, SyntheticCriteo, preprocess
from .models import get_model
from .progress import Progress
from .quality import auc, evaluate_pipeline, ndcg, paired_difference, recpipe_pipelines, topk
from .quant import quantize
from .train import TrainConfig, train

__all__ = ["evaluate_models", "findings", "quality_tables", "run_synthetic_experiment"]


def _queries(array, candidates):
    queries = len(array) // candidates
    return np.asarray(array)[:queries * candidates].reshape(queries, candidates, *np.shape(array)[1:])


def evaluate_models(test, candidates, k, pipelines, quantized, floats=None, *, quiet=False):
    """Score ``test`` records with every model and evaluate every pipeline.

    Parameters
    ----------
    test : Records
        Test samples; consecutive blocks of ``candidates`` form the queries (a remainder is dropped).
    quantized : dict
        Model name -> :class:`~rpaccel.host.quant.QuantModel` (scored with the integer reference).
    floats : dict, optional
        Model name -> :class:`~rpaccel.host.train.FloatModel`, evaluated too for comparison.

    Returns
    -------
    dict
        ``models`` (per model and kind: AUC, NDCG@k as one stage, MACs per item), ``pipelines`` (per pipeline and
        kind, see :func:`~rpaccel.host.quality.evaluate_pipeline`), ``queries``.
    """
    queries = len(test) // candidates
    if queries == 0:
        raise ValueError(f"{len(test)} test samples make no query of {candidates} candidates")
    test = test.take(slice(0, queries * candidates))
    labels = test.labels.reshape(queries, candidates)
    kinds = {"int8": quantized, "float": floats or {}}
    scores = {"int8": {}, "float": {}}
    total = sum(len(models) for models in kinds.values()) * len(test)
    with Progress("scoring test queries", total, "items", enabled=not quiet) as bar:
        for kind, models in kinds.items():
            for name, model in models.items():
                if kind == "int8":
                    values = np.concatenate([model.logits_from_records(test.take(slice(i, i + candidates * 4)))
                                             for i in range(0, len(test), candidates * 4)])
                else:
                    dense, ids = preprocess(test, model.spec)
                    values = model.predict(dense, ids)
                if values.ndim == 2:  # multi-task: rank by the first task
                    values = values[:, 0]
                scores[kind][name] = values.reshape(queries, candidates)
                bar.update(len(test))
    macs = {name: model.spec.macs_per_item() for models in kinds.values() for name, model in models.items()}
    model_rows, pipeline_rows = [], []
    for kind, by_name in scores.items():
        for name, values in by_name.items():
            ranked = np.take_along_axis(labels, topk(values, k), axis=1)
            per_query = ndcg(ranked, k)
            model_rows.append({"model": name, "kind": kind, "auc": auc(values.ravel(), labels.ravel()),
                               "ndcg": float(per_query.mean()), "macs_per_item": macs[name],
                               "ndcg_per_query": [round(float(v), 6) for v in per_query]})
        for pipeline in pipelines:
            if all(stage.model in by_name for stage in pipeline.stages):
                row = evaluate_pipeline(pipeline, by_name, labels, k, macs)
                row["kind"] = kind
                pipeline_rows.append(row)
    return {"models": model_rows, "pipelines": pipeline_rows, "queries": queries, "candidates": candidates, "k": k}


def _f4(value):
    return f"{value:.4f}"


def quality_tables(report, reference=None):
    """Markdown tables of a report: pipelines (int8 next to float) and models."""
    k = report["k"]
    pipes = {}
    for row in report["pipelines"]:
        pipes.setdefault(row["pipeline"], {})[row["kind"]] = row
    reference = reference or next((name for name in pipes if name.startswith("1-stage") and "large" in name), None)
    ref = pipes.get(reference, {}).get("int8")
    rows = []
    for name, by_kind in pipes.items():
        main = by_kind.get("int8") or by_kind["float"]
        float_row = by_kind.get("float")
        if ref is not None and "int8" in by_kind:
            diff, sem = paired_difference(by_kind["int8"]["ndcg_per_query"], ref["ndcg_per_query"])
            delta = f"{diff * 100:+.2f} ± {sem * 100:.2f}" if name != reference else "0"
        else:
            delta = ""
        rows.append([name, main["stages"],
                     _f4(by_kind["int8"]["ndcg"]) if "int8" in by_kind else None,
                     _f4(main["ndcg_sem"]),
                     delta,
                     _f4(float_row["ndcg"]) if float_row else None,
                     _f4(main["ndcg_standard"]),
                     main["macs_per_query"],
                     f"{main['macs_per_query'] / ref['macs_per_query']:.1%}" if ref else ""])
    pipeline_table = format_table(
        ["pipeline", "stages (items scored)", f"NDCG@{k} int8", "± s.e.", f"vs {reference or '-'} (points, paired)",
         f"NDCG@{k} float", f"standard NDCG@{k} int8", "MACs per query", f"MACs vs {reference or '-'}"], rows)
    models = {}
    for row in report["models"]:
        models.setdefault(row["model"], {})[row["kind"]] = row
    model_rows = []
    for name, by_kind in models.items():
        i8, fl = by_kind.get("int8"), by_kind.get("float")
        model_rows.append([name, (i8 or fl)["macs_per_item"],
                           _f4(fl["auc"]) if fl else None, _f4(i8["auc"]) if i8 else None,
                           _f4(fl["ndcg"]) if fl else None, _f4(i8["ndcg"]) if i8 else None,
                           "{:+.2f} ± {:.2f}".format(*(100 * v for v in paired_difference(
                               i8["ndcg_per_query"], fl["ndcg_per_query"]))) if i8 and fl else ""])
    model_table = format_table(["model", "MACs per item", "AUC float", "AUC int8", f"NDCG@{k} float",
                                f"NDCG@{k} int8", "int8 - float (points, paired)"], model_rows)
    return pipeline_table, model_table


def findings(report, small="rm-small", med="rm-med", large="rm-large"):
    """Sentences stating RecPipe's questions answered by a report's figures (int8 models, paired over queries)."""
    rows = {r["pipeline"]: r for r in report["pipelines"] if r["kind"] == "int8"}
    one, two = rows.get(f"1-stage {large}"), rows.get(f"2-stage {small} -> {large}")
    three, single = rows.get(f"3-stage {small} -> {med} -> {large}"), rows.get(f"1-stage {small}")
    if not (one and two and three and single):
        return ""
    k = report["k"]

    def versus(row):
        diff, sem = paired_difference(row["ndcg_per_query"], one["ndcg_per_query"])
        return f"{diff * 100:+.2f} ± {sem * 100:.2f} points", row["macs_per_query"] / one["macs_per_query"]

    small_gap, _ = versus(single)
    two_gap, two_cost = versus(two)
    three_gap, three_cost = versus(three)
    models = {(r["model"], r["kind"]): r for r in report["models"]}
    worst = max(abs(models[(m, "int8")]["ndcg"] - models[(m, "float")]["ndcg"]) for m in (small, med, large)
                if (m, "float") in models) if (large, "float") in models else None
    text = (f"Against 1-stage {large}, 1-stage {small} scores {small_gap} of NDCG@{k}. "
            f"The 2-stage pipeline scores {two_gap} at {two_cost:.1%} of its MACs per query, and the 3-stage "
            f"pipeline {three_gap} at {three_cost:.1%} (differences paired over the same queries, ± standard "
            "error).")
    if worst is not None:
        text += f" The int8 models are within {worst * 100:.2f} points of NDCG@{k} of their float versions."
    return text


def run_synthetic_experiment(*, train_samples=1_000_000, queries=128, candidates=4096, k=64, calibration=8192,
                             max_rows=5_000, skew=1.05, seed=1, epochs=1, batch=1024, models=None,
                             quiet=False, workdir=None):
    """RecPipe's experiment on synthetic Criteo-like data, from a seed: generate, train RM-small/med/large,
    quantise, evaluate the pipelines. Returns the report of :func:`evaluate_models` plus the settings; with
    ``workdir`` the weights and quantised models are saved there too."""
    from pathlib import Path

    from .quant import save_quantized
    from .train import save_weights

    names = models or ["rm-small", "rm-med", "rm-large"]
    config = SyntheticConfig.criteo(max_rows=max_rows, skew=skew, seed=seed)
    generator = SyntheticCriteo(config)
    with Progress("generating data", train_samples + calibration + queries * candidates, "samples",
                  enabled=not quiet) as bar:
        train_records = generator.generate(train_samples, progress=bar)
        calib = generator.generate(calibration, start=train_samples, progress=bar)
        test, teacher = generator.generate(queries * candidates, start=train_samples + calibration,
                                           with_logits=True, progress=bar)
    floats, quantized, history = {}, {}, {}
    for name in names:
        spec = get_model(name, max_rows=max_rows)
        dense, ids = preprocess(train_records, spec)
        settings = TrainConfig(epochs=epochs, batch=batch, seed=seed)
        with Progress(f"training {name}", epochs * train_samples, "samples", enabled=not quiet) as bar:
            model, losses = train(spec, dense, ids, train_records.labels, settings, progress=bar)
        floats[name], history[name] = model, losses
        quantized[name] = quantize(model, calib)
        if workdir is not None:
            meta = {"train": settings.describe(), "data": {"synthetic": True, "seed": seed, "samples": train_samples,
                                                           "max_rows": max_rows, "skew": skew}}
            save_weights(Path(workdir) / f"{name}.npz", model, meta)
            save_quantized(Path(workdir) / f"{name}.q.npz", quantized[name], meta)
    pipelines = recpipe_pipelines(candidates, k, *names) if len(names) == 3 else []
    report = evaluate_models(test, candidates, k, pipelines, quantized, floats, quiet=quiet)
    labels = test.labels.reshape(-1, candidates)
    ranked = np.take_along_axis(labels, topk(teacher.reshape(-1, candidates), k), axis=1)
    report["planted"] = {"auc": auc(teacher, test.labels), "ndcg": float(ndcg(ranked, k).mean())}
    report["losses"] = history
    report["settings"] = {"train_samples": train_samples, "queries": queries, "candidates": candidates, "k": k,
                          "calibration": calibration, "max_rows": max_rows, "skew": skew, "seed": seed,
                          "epochs": epochs, "batch": batch, "ctr": float(test.labels.mean())}
    return report
