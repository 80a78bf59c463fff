"""Top-k units (:mod:`rpaccel.rtl.topk`): candidate packing and result decoding, over the codec.

A unit's input element carries ``lanes`` candidate slots ``{score, index, keep}``, the end-of-query flag ``last``
and ``k`` (read with ``last``); its output is one result candidate per element ``{score, index, keep, last,
error}``. :func:`encode_queries` frames whole queries into packed input words with numpy (no Python object per
element); :func:`pack_elements` packs elements given one by one as dicts (the format of
:func:`rpaccel.sim.golden.topk.query_elements`); :func:`decode_results` and :func:`unpack_results` read the
output words back.

Example::

    words = encode_queries(queries, k_max=16, lanes=4)
    result = player.run({"i": to_ints(words)}, expect={"o": outputs}, packed=True)
    columns = decode_results(result.outputs["o"])      # {"score": (n,), "index": (n,), ...}
"""

import numpy as np

from ...rtl.topk import DEFAULT_INDEX_BITS, check_k, topk_in_layout, topk_out_layout
from .codec import codec, from_ints, to_ints

__all__ = ["decode_results", "encode_queries", "pack_elements", "query_columns", "unpack_results"]


def query_columns(scores, indices, k, *, lanes=1, batches=None, separate_end=False):
    """The input elements of one query as codec columns of :func:`~rpaccel.rtl.topk.topk_in_layout`.

    Candidates fill the lanes in arrival order; each sub-batch (``batches``, sizes adding up to the candidates;
    default one batch) starts a new element, so its last element may be partly empty. ``last`` and ``k`` ride on
    the final element, or on an extra element without candidates if ``separate_end`` (always so for a query
    without candidates).

    Raises
    ------
    ValueError
        If the sub-batch sizes do not add up to the candidates, or scores and indices differ in length.
    """
    scores = np.asarray(scores, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if scores.shape != indices.shape or scores.ndim != 1:
        raise ValueError(f"Scores {scores.shape} and indices {indices.shape} must be two sequences of one length")
    n = len(scores)
    sizes = np.array([n] if batches is None else list(batches), dtype=np.int64)
    if sizes.sum() != n or (sizes < 0).any():
        raise ValueError(f"Sub-batch sizes {sizes.tolist()} do not add up to the query's {n} candidates")
    per_batch = -(-sizes // lanes)
    first_element = np.concatenate([[0], np.cumsum(per_batch)[:-1]])
    batch_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    batch_of = np.repeat(np.arange(len(sizes)), sizes)
    position = np.arange(n) - batch_start[batch_of]
    element = first_element[batch_of] + position // lanes
    lane = position % lanes
    count = int(per_batch.sum())
    if separate_end or count == 0:
        count += 1
    slots = {name: np.zeros((count, lanes), dtype=np.int64) for name in ("score", "index", "keep")}
    slots["score"][element, lane] = scores
    slots["index"][element, lane] = indices
    slots["keep"][element, lane] = 1
    last = np.zeros(count, dtype=np.int64)
    last[-1] = 1
    return {"candidates": slots, "last": last, "k": last * k}


def encode_queries(queries, *, k_max, lanes=1, index_bits=DEFAULT_INDEX_BITS, separate_end=False, check=True):
    """Packed input words (``(n, limbs)``, see :mod:`rpaccel.host.driver.codec`) of ``queries``, one after the
    other.

    Parameters
    ----------
    queries : iterable
        Objects with ``scores``, ``indices``, ``k`` and ``batches`` (as :class:`rpaccel.sim.golden.topk.Query`).
    k_max, lanes, index_bits : int
        The unit's parameters.
    separate_end : bool
        Send ``last`` and ``k`` on an extra element without candidates.
    check : bool
        Refuse a ``k`` outside ``1..k_max`` (otherwise it is sent, and the unit answers with an error element).

    Raises
    ------
    ValueError
        On a bad ``k`` (if ``check``) or sub-batch sizes.
    rpaccel.host.driver.codec.CodecError
        On a score, index or ``k`` its field cannot hold.
    """
    parts = []
    for query in queries:
        if check:
            check_k(query.k, k_max)
        parts.append(query_columns(query.scores, query.indices, query.k, lanes=lanes, batches=query.batches,
                                   separate_end=separate_end))
    layout = topk_in_layout(k_max, lanes=lanes, index_bits=index_bits)
    if not parts:
        return np.zeros((0, codec(layout).limbs), dtype=np.uint64)
    columns = {"candidates": {name: np.concatenate([p["candidates"][name] for p in parts])
                              for name in ("score", "index", "keep")},
               "last": np.concatenate([p["last"] for p in parts]), "k": np.concatenate([p["k"] for p in parts])}
    return codec(layout).pack(columns)


def pack_elements(elements, k_max, *, lanes=1, index_bits=DEFAULT_INDEX_BITS):
    """Pack input elements given as dicts (as from :func:`rpaccel.sim.golden.topk.query_elements`) into Python
    ints for ``Player.run(..., packed=True)``."""
    layout = topk_in_layout(k_max, lanes=lanes, index_bits=index_bits)
    if not elements:
        return []
    slots = [element["candidates"] for element in elements]
    columns = {"candidates": {name: np.array([[slot[name] for slot in row] for row in slots], dtype=np.int64)
                              for name in ("score", "index", "keep")},
               "last": np.array([element["last"] for element in elements], dtype=np.int64),
               "k": np.array([element["k"] for element in elements], dtype=np.int64)}
    return to_ints(codec(layout).pack(columns))


def decode_results(words, index_bits=DEFAULT_INDEX_BITS):
    """The output elements of packed ``words`` (Python ints, or ``(n, limbs)`` words) as columns:
    ``{"score", "index", "keep", "last", "error"}``, each an ``(n,)`` int64 array."""
    out = codec(topk_out_layout(index_bits))
    if not (isinstance(words, np.ndarray) and words.ndim == 2):
        words = from_ints(words, out.width)
    return out.unpack(words)


def unpack_results(words, index_bits=DEFAULT_INDEX_BITS):
    """The output elements of packed ``words`` as a list of dicts (as :func:`rpaccel.sim.golden.topk.unit_model`
    gives them)."""
    columns = decode_results(words, index_bits)
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*(columns[name].tolist() for name in names))]
