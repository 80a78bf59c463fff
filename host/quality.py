"""Ranking quality: NDCG@k (RecPipe's and the standard definition), AUC, top-k, multi-stage pipelines.

Queries are groups of candidates with binary labels (on Criteo-style data, consecutive blocks of ``candidates``
test samples, as RecPipe forms them). A pipeline's stages score the items that reach them and keep the best;
the last stage's order is the ranking. NDCG@k in RecPipe's definition is the DCG of the top ``k`` labels,
``sum(label_i / log2(i + 2))``, over the DCG of ``k`` ones; the standard one divides by the DCG of the query's
best possible ranking instead.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import replacing

__all__ = ["Pipeline", "Stage", "auc", "check_plot_path", "evaluate_pipeline", "ndcg", "plot_quality",
           "recpipe_pipelines", "paired_difference", "run_pipeline", "topk"]


def topk(scores, k):
    """Indices of the ``k`` highest scores along the last axis, best first; ties go to the lower index."""
    scores = np.asarray(scores)
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    keys = -scores.astype(np.float64) if scores.dtype.kind == "f" else -scores.astype(np.int64)
    return np.argsort(keys, axis=-1, kind="stable")[..., :k]


def _discounts(k):
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg(ranked_labels, k, *, definition="recpipe", all_labels=None):
    """NDCG@k of binary labels in ranked order, per query.

    Parameters
    ----------
    ranked_labels : array_like
        ``(queries, >= k)`` labels of the items in the order a model ranked them.
    k : int
    definition : ``"recpipe"`` or ``"standard"``
        RecPipe's: the DCG of the top ``k`` over the DCG of ``k`` ones. Standard: over the DCG of the query's
        best possible ranking (``min(k, positives)`` ones; 0 for a query without positives).
    all_labels : array_like, optional
        ``(queries, n)`` all labels of each query's candidates, for the standard definition when
        ``ranked_labels`` holds only the top of the ranking (default: ``ranked_labels``).
    """
    ranked = np.asarray(ranked_labels, dtype=np.float64)
    if ranked.ndim == 1:
        ranked = ranked[None]
    if ranked.shape[1] < k:
        raise ValueError(f"NDCG@{k} needs at least {k} ranked items per query, not {ranked.shape[1]}")
    disc = _discounts(k)
    dcg = ranked[:, :k] @ disc
    if definition == "recpipe":
        return dcg / disc.sum()
    if definition != "standard":
        raise ValueError(f"definition must be 'recpipe' or 'standard', not {definition!r}")
    labels = ranked if all_labels is None else np.asarray(all_labels, dtype=np.float64).reshape(len(ranked), -1)
    positives = np.minimum((labels > 0).sum(axis=1), k)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[positives]
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def auc(scores, labels):
    """Area under the ROC curve (the probability that a positive outranks a negative; ties count half)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # Average ranks (1-based) over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# --- multi-stage pipelines ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: score every item that reaches it with ``model`` and pass on the best ``keep``."""

    model: str
    keep: int


@dataclass(frozen=True)
class Pipeline:
    """A multi-stage ranking pipeline (RecPipe): each stage filters the previous stage's survivors."""

    name: str
    stages: tuple

    def __post_init__(self):
        if not self.stages:
            raise ValueError(f"pipeline {self.name!r} has no stages")
        keeps = [stage.keep for stage in self.stages]
        if any(not isinstance(k, int) or k <= 0 for k in keeps) or keeps != sorted(keeps, reverse=True):
            raise ValueError(f"pipeline {self.name!r}: stage sizes must be positive and non-increasing, not {keeps}")

    def items_per_stage(self, candidates):
        """Items scored by each stage."""
        return [candidates, *(stage.keep for stage in self.stages[:-1])]

    def macs_per_query(self, candidates, macs_per_item):
        """Multiply-accumulates per query: each stage's items times its model's MACs per item."""
        return sum(n * macs_per_item[stage.model] for n, stage in zip(self.items_per_stage(candidates), self.stages))

    def describe(self, candidates):
        items = self.items_per_stage(candidates)
        return " -> ".join(f"{stage.model} ({n})" for stage, n in zip(self.stages, items))

    @classmethod
    def parse(cls, text, k):
        """``"rm-small:512>rm-med:128>rm-large"``: stages separated by ``>``, each ``model[:keep]``; the last
        stage keeps ``k`` unless it says otherwise."""
        stages = []
        parts = [p.strip() for p in text.split(">")]
        for i, part in enumerate(parts):
            model, _, keep = part.partition(":")
            if not model:
                raise ValueError(f"pipeline {text!r}: empty stage")
            if keep:
                if not keep.isdigit() or int(keep) <= 0:
                    raise ValueError(f"pipeline {text!r}: stage size {keep!r} is not a positive integer")
                n = int(keep)
            elif i == len(parts) - 1:
                n = k
            else:
                raise ValueError(f"pipeline {text!r}: stage {model} needs a size (model:keep)")
            stages.append(Stage(model, n))
        return cls(text, tuple(stages))


def recpipe_pipelines(candidates=4096, k=64, small="rm-small", med="rm-med", large="rm-large"):
    """RecPipe's pipelines on Criteo: 1-stage RM-large; 2-stage small -> large (4096 -> 512); 3-stage
    small -> med -> large (4096 -> 512 -> 128); and the single small and medium models for reference."""
    first, second = candidates // 8, candidates // 32
    return [
        Pipeline(f"1-stage {small}", (Stage(small, k),)),
        Pipeline(f"1-stage {med}", (Stage(med, k),)),
        Pipeline(f"1-stage {large}", (Stage(large, k),)),
        Pipeline(f"2-stage {small} -> {large}", (Stage(small, first), Stage(large, k))),
        Pipeline(f"3-stage {small} -> {med} -> {large}", (Stage(small, first), Stage(med, second), Stage(large, k))),
    ]


def run_pipeline(pipeline, scores, k):
    """Final ranking of each query: ``(queries, k)`` candidate indices, best first.

    Parameters
    ----------
    pipeline : Pipeline
    scores : dict
        Model name -> ``(queries, candidates)`` scores of every candidate (a stage reads the scores of the items
        that reach it).
    k : int
        Depth of the final ranking (at most the last stage's ``keep``).

    Each stage keeps its ``keep`` best items (ties to the lower candidate index) and hands them on in candidate
    order, so a later stage also breaks ties by candidate index.
    """
    if k > pipeline.stages[-1].keep:
        raise ValueError(f"pipeline {pipeline.name!r} ends with {pipeline.stages[-1].keep} items, fewer than k={k}")
    first = scores[pipeline.stages[0].model]
    items = np.broadcast_to(np.arange(first.shape[1]), first.shape)
    for i, stage in enumerate(pipeline.stages):
        if stage.model not in scores:
            raise KeyError(f"pipeline {pipeline.name!r} needs scores of model {stage.model!r}")
        s = np.take_along_axis(scores[stage.model], items, axis=1)
        best = np.take_along_axis(items, topk(s, min(stage.keep, items.shape[1])), axis=1)
        items = best if i == len(pipeline.stages) - 1 else np.sort(best, axis=1)
    return items[:, :k]


def evaluate_pipeline(pipeline, scores, labels, k, macs_per_item):
    """Quality and cost of a pipeline on queries with binary ``labels`` ``(queries, candidates)``.

    Returns
    -------
    dict
        ``ndcg`` (RecPipe's NDCG@k, mean over queries), ``ndcg_sem`` (its standard error), ``ndcg_per_query``,
        ``ndcg_standard``, ``macs_per_query``, ``items`` (per stage).
    """
    labels = np.asarray(labels)
    ranking = run_pipeline(pipeline, scores, k)
    ranked = np.take_along_axis(labels, ranking, axis=1)
    rec = ndcg(ranked, k)
    std = ndcg(ranked, k, definition="standard", all_labels=labels)
    candidates = labels.shape[1]
    return {"pipeline": pipeline.name, "stages": pipeline.describe(candidates),
            "items": pipeline.items_per_stage(candidates), "ndcg": float(rec.mean()),
            "ndcg_per_query": [round(float(v), 6) for v in rec],
            "ndcg_sem": float(rec.std(ddof=1) / np.sqrt(len(rec))) if len(rec) > 1 else 0.0,
            "ndcg_standard": float(std.mean()), "macs_per_query": pipeline.macs_per_query(candidates, macs_per_item)}


def paired_difference(a, b):
    """Mean and standard error of ``a - b`` over queries (per-query values of two pipelines on the same
    queries): the paired comparison, free of the spread between easy and hard queries."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


# Metadata that would make two plots of the same figures differ (the writer's version, the time of writing).
_NO_STAMP = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def check_plot_path(path):
    """Raise :class:`ValueError` unless ``path`` ends in a file type matplotlib writes (``.png``, ``.svg``,
    ``.pdf``, ...): a plot is checked before the work that feeds it, not after."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(f"{path}: " + (f"unsupported plot file type .{suffix}" if suffix else "no file type")
                         + f" (supported: {', '.join(f'.{f}' for f in sorted(formats))})")


def plot_quality(rows, path, *, k=64, title=None):
    """Plot of quality (NDCG@k) against MACs per query, one point per pipeline and model kind.

    ``rows``: dicts with ``pipeline``, ``macs_per_query``, ``ndcg`` and ``kind`` (e.g. ``"int8"``/``"float"``).
    The file type follows ``path``'s suffix (see :func:`check_plot_path`; ``.png`` usually); the file appears
    only once it is complete. matplotlib is imported here, so the CLI starts without it.
    """
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    markers = {"int8": ("o", "tab:blue"), "float": ("s", "tab:orange")}
    top = max(r["macs_per_query"] for r in rows)
    for kind in dict.fromkeys(r["kind"] for r in rows):
        sub = [r for r in rows if r["kind"] == kind]
        marker, color = markers.get(kind, ("^", "tab:green"))
        ax.errorbar([r["macs_per_query"] for r in sub], [r["ndcg"] for r in sub],
                    yerr=[r.get("ndcg_sem", 0) for r in sub], fmt=marker, color=color, capsize=3,
                    mfc=color if kind == "int8" else "none", markersize=7 if kind == "int8" else 9,
                    label=f"{kind} model")
        if kind == "int8" or len(markers) == 1:
            for r in sub:
                right = r["macs_per_query"] == top
                ax.annotate(r["pipeline"], (r["macs_per_query"], r["ndcg"]), textcoords="offset points",
                            xytext=(-8 if right else 8, -10), fontsize=7, ha="right" if right else "left")
    ax.set_xscale("log")
    ax.set_xlabel("MACs per query (log scale)")
    ax.set_ylabel(f"NDCG@{k} (RecPipe)")
    ax.set_title(title or "Ranking quality vs compute per query (error bars: ± s.e. over queries)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path):
    """Write matplotlib figure ``fig`` to ``path`` (its file type from the suffix) and close it: the file appears
    only once complete, and the same figures make the same bytes (no writer's version or date, fixed SVG element
    ids). Returns ``path`` as a :class:`~pathlib.Path`."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with replacing(path) as tmp:
            kind = path.suffix.lower().lstrip(".")
            with matplotlib.rc_context({"svg.hashsalt": "rpaccel"}):
                fig.savefig(tmp, format=kind, metadata=_NO_STAMP.get(kind))
    finally:
        plt.close(fig)
    return path
