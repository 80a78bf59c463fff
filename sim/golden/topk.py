"""Golden model of the top-k units (:mod:`rpaccel.rtl.topk`), stream framing and random stimulus.

The selection itself is :func:`rpaccel.numeric.topk`; :func:`unit_model` adds what a unit does around it: it
collects a query's kept candidates until ``last`` and answers with the ``k`` best, or with an empty (or error)
element. Stimulus is described as :class:`Query` objects and framed into input elements (dicts) by
:func:`query_elements`; the driver (:mod:`rpaccel.host.driver.topk`) packs them, or frames whole queries into
packed words without a Python dict per element, and decodes the results.
"""

from dataclasses import dataclass

import numpy as np

from ...numeric import INT32_MAX, INT32_MIN, topk
from ...rtl.topk import DEFAULT_INDEX_BITS, check_k, k_bits

__all__ = ["Query", "empty_result", "query_elements", "random_queries", "stream_elements", "unit_model"]


@dataclass
class Query:
    """One query's candidates and its ``k``.

    Attributes
    ----------
    scores, indices : numpy.ndarray
        int32 scores and candidate indices, in arrival order.
    k : int
        How many results to return.
    batches : list of int, optional
        Sizes of the sub-batches the candidates arrive in (each ends at an element boundary: the next one starts
        in lane 0); default one batch.
    """

    scores: np.ndarray
    indices: np.ndarray
    k: int
    batches: list = None

    @classmethod
    def make(cls, scores, k, *, indices=None, batches=None):
        """A query from plain sequences; ``indices`` default to ``0, 1, ...``."""
        scores = np.asarray(scores, dtype=np.int64)
        indices = np.arange(len(scores), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        return cls(scores, indices, k, None if batches is None else list(batches))

    def expected(self):
        """The golden result: ``(scores, indices)`` of the ``k`` best."""
        return topk(self.scores, self.k, self.indices)


def _element(lanes, candidates=(), last=0, k=0):
    slots = [{"score": int(s), "index": int(i), "keep": 1} for s, i in candidates]
    slots += [{"score": 0, "index": 0, "keep": 0}] * (lanes - len(slots))
    return {"candidates": slots, "last": int(last), "k": int(k)}


def query_elements(query, *, k_max, lanes=1, separate_end=False, check=True):
    """The unit's input elements for ``query``.

    Candidates fill the lanes in arrival order; each sub-batch starts a new element (its last element may be
    partly empty). ``last`` and ``k`` ride on the final element, or on an extra element without candidates
    if ``separate_end`` (always so for an empty query).

    Raises
    ------
    ValueError
        If ``query.k`` is not in ``1..k_max`` (unless ``check`` is false: then the element carries it and the
        unit answers with an error element), or the sub-batch sizes do not add up.
    """
    if check:
        check_k(query.k, k_max)
    n = len(query.scores)
    batches = query.batches if query.batches is not None else [n]
    if sum(batches) != n or any(b < 0 for b in batches):
        raise ValueError(f"Sub-batch sizes {batches} do not add up to the query's {n} candidates")
    pairs = list(zip(query.scores.tolist(), query.indices.tolist()))
    elements, start = [], 0
    for size in batches:
        for first in range(start, start + size, lanes):
            elements.append(_element(lanes, pairs[first:min(first + lanes, start + size)]))
        start += size
    if separate_end or not elements:
        elements.append(_element(lanes))
    elements[-1]["last"], elements[-1]["k"] = 1, query.k
    return elements


def stream_elements(queries, **kwargs):
    """The input elements of several queries, one after the other (see :func:`query_elements`)."""
    return [element for query in queries for element in query_elements(query, **kwargs)]


def empty_result(error=0):
    """The single output element of an empty result (``error`` set when ``k`` was invalid)."""
    return {"score": 0, "index": 0, "keep": 0, "last": 1, "error": int(error)}


def unit_model(elements, k_max):
    """What a :class:`~rpaccel.rtl.topk.TopKUnit` of ``k_max`` outputs for the input ``elements``.

    Candidates after the final ``last`` (an unfinished query) produce nothing.
    """
    out, scores, indices = [], [], []
    for element in elements:
        for slot in element["candidates"]:
            if slot["keep"]:
                scores.append(slot["score"])
                indices.append(slot["index"])
        if not element["last"]:
            continue
        k = element["k"]
        if not 1 <= k <= k_max:
            out.append(empty_result(error=1))
        elif not scores:
            out.append(empty_result())
        else:
            best_scores, best_indices = topk(np.array(scores, dtype=np.int64), k, np.array(indices, dtype=np.int64))
            for position, (s, i) in enumerate(zip(best_scores.tolist(), best_indices.tolist())):
                out.append({"score": s, "index": i, "keep": 1, "last": int(position == len(best_scores) - 1),
                            "error": 0})
        scores, indices = [], []
    return out


# Score distributions of the random queries: (name, weight).
_KINDS = (("uniform", 3), ("narrow", 3), ("equal", 1), ("extreme", 2), ("sorted", 1), ("reversed", 1))


def _scores(rng, kind, n):
    if kind == "uniform":
        return rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    if kind == "narrow":          # many duplicates
        base = int(rng.integers(INT32_MIN, INT32_MAX - 8, endpoint=True))
        return base + rng.integers(0, int(rng.integers(1, 9)), n)
    if kind == "equal":
        return np.full(n, int(rng.choice([INT32_MIN, -1, 0, INT32_MAX, int(rng.integers(-1000, 1000))])))
    if kind == "extreme":         # the ends of the range, zero and its neighbours
        pool = np.array([INT32_MIN, INT32_MIN + 1, -2, -1, 0, 1, INT32_MAX - 1, INT32_MAX])
        return rng.choice(pool, n)
    values = np.sort(rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True))
    return values if kind == "sorted" else values[::-1].copy()


def random_queries(rng, count, *, k_max, max_candidates, index_bits=DEFAULT_INDEX_BITS, sub_batches=True):
    """``count`` random queries for a unit of ``k_max``.

    Sizes are drawn from 0 (an empty query), 1, around ``k`` and up to ``max_candidates``; ``k`` is 1,
    ``k_max`` or uniform in between; scores are uniform over int32, narrow (many duplicates), all equal,
    extreme values, sorted or reverse-sorted; indices are in order, shuffled or random (with repeats).
    """
    k_bits(k_max)  # raises on a bad K_MAX
    kinds, weights = zip(*_KINDS)
    weights = np.array(weights) / sum(weights)
    queries = []
    for _ in range(count):
        k = int(rng.choice([1, k_max, int(rng.integers(1, k_max + 1))], p=[0.2, 0.3, 0.5]))
        shape = rng.random()
        if shape < 0.05:
            n = 0
        elif shape < 0.1:
            n = 1
        elif shape < 0.35:
            n = int(rng.integers(1, 2 * k + 2))
        else:
            n = int(rng.integers(1, max_candidates + 1))
        scores = _scores(rng, rng.choice(kinds, p=weights), n).astype(np.int64)
        order = rng.random()
        if order < 0.5:
            indices = np.arange(n, dtype=np.int64)
        elif order < 0.8:
            indices = rng.permutation(n).astype(np.int64)
        else:
            indices = rng.integers(0, 1 << index_bits, n).astype(np.int64)
        batches = None
        if sub_batches and n > 1 and rng.random() < 0.5:
            cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(1, 8))), replace=False))
            batches = np.diff(np.concatenate([[0], cuts, [n]])).tolist()
        queries.append(Query(scores, indices, k, batches))
    return queries
