"""Numeric rules shared by the RTL, the golden models and the fast models.

Every part of rpaccel computes with the same integer arithmetic, so that results are bit-exact between the
gateware, the numpy golden models and the host reference. This module is the single written statement of those
rules (see ``docs/numerics.md``):

* activations, weights and embedding rows are int8 two's complement; accumulators and biases are int32;
* a multiply-accumulate step computes ``psum + a * w`` in int32;
* requantisation maps an int32 accumulator to int8::

      q = clamp((acc * m + (1 << (s - 1))) >> s, -128, 127)    for s > 0
      q = clamp(acc * m, -128, 127)                              for s = 0

  with ``m`` an unsigned 16-bit multiplier, ``s`` a 6-bit shift and ``>>`` an arithmetic (flooring) shift;
* an optional ReLU is ``max(q, 0)`` after requantisation;
* ranking ends in a raw int32 logit (``acc + bias``), not requantised;
* top-k selection orders candidates by score, highest first, ties broken by the lower candidate index.

Overflow is excluded by construction: callers validate parameters so that no int32 accumulator can wrap. The
functions here raise :class:`OverflowError` instead of wrapping silently when handed values outside those ranges.
"""

import numpy as np

__all__ = [
    "ACC_BITS",
    "ACT_BITS",
    "INT8_MAX",
    "INT8_MIN",
    "INT32_MAX",
    "INT32_MIN",
    "M_BITS",
    "M_MAX",
    "S_BITS",
    "S_MAX",
    "check_int8",
    "check_int32",
    "check_requant_params",
    "mac",
    "postprocess",
    "requantize",
    "topk",
]

#: Width of activations, weights and embedding rows.
ACT_BITS = 8
#: Width of accumulators and biases.
ACC_BITS = 32
#: Width of the unsigned requantisation multiplier ``m``.
M_BITS = 16
#: Width of the requantisation shift ``s``.
S_BITS = 6

INT8_MIN, INT8_MAX = -(1 << (ACT_BITS - 1)), (1 << (ACT_BITS - 1)) - 1
INT32_MIN, INT32_MAX = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
M_MAX = (1 << M_BITS) - 1
S_MAX = (1 << S_BITS) - 1


def _as_int64(name, value):
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, not {array.dtype}")
    if array.dtype.kind == "u" and array.dtype.itemsize >= 8 and array.size and array.max() > np.iinfo(np.int64).max:
        raise OverflowError(f"{name} holds {array.max()}, outside the int64 range")
    return array.astype(np.int64)


def _check_range(name, array, low, high):
    if array.size == 0:
        return array
    lo, hi = int(array.min()), int(array.max())
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        raise OverflowError(f"{name} holds {bad}, outside [{low}, {high}]")
    return array


def check_int8(name, value):
    """Return ``value`` as an int64 array, raising :class:`OverflowError` if any element is not an int8."""
    return _check_range(name, _as_int64(name, value), INT8_MIN, INT8_MAX)


def check_int32(name, value):
    """Return ``value`` as an int64 array, raising :class:`OverflowError` if any element is not an int32."""
    return _check_range(name, _as_int64(name, value), INT32_MIN, INT32_MAX)


def check_requant_params(m, s):
    """Validate requantisation parameters.

    Parameters
    ----------
    m : int or array_like
        Unsigned multiplier(s), ``0 <= m < 2**16``.
    s : int or array_like
        Shift(s), ``0 <= s < 2**6``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``m`` and ``s`` as int64 arrays.

    Raises
    ------
    ValueError
        If a value lies outside its field.
    """
    m = _as_int64("requantisation multiplier m", m)
    s = _as_int64("requantisation shift s", s)
    for name, array, high in (("multiplier m", m, M_MAX), ("shift s", s, S_MAX)):
        if array.size and (array.min() < 0 or array.max() > high):
            bad = int(array.min()) if array.min() < 0 else int(array.max())
            raise ValueError(f"Requantisation {name} must be an integer in [0, {high}], not {bad}")
    return m, s


def mac(psum, a, w):
    """One multiply-accumulate step of a processing element: ``psum + a * w`` in int32.

    Parameters
    ----------
    psum : array_like
        int32 partial sums.
    a, w : array_like
        int8 activations and weights.

    Returns
    -------
    numpy.ndarray
        The int32 results (dtype int64).

    Raises
    ------
    OverflowError
        If an operand is out of range or the sum leaves int32 (which validated parameters exclude).
    """
    psum = check_int32("partial sum", psum)
    a = check_int8("activation", a)
    w = check_int8("weight", w)
    return check_int32("accumulated partial sum", psum + a * w)


def requantize(acc, m, s, relu=False):
    """Requantise int32 accumulators to int8 under the project's rounding rule.

    Parameters
    ----------
    acc : array_like
        int32 accumulators (bias already added).
    m : int or array_like
        Unsigned 16-bit multiplier(s), broadcast against ``acc``.
    s : int or array_like
        Shift(s) in ``[0, 63]``, broadcast against ``acc``.
    relu : bool or array_like
        Apply ``max(q, 0)`` after requantisation.

    Returns
    -------
    numpy.ndarray
        int8 results (dtype int64).
    """
    acc = check_int32("accumulator", acc)
    m, s = check_requant_params(m, s)
    # The rounding term is computed at the shape of s (often a scalar per layer) and broadcast only in the
    # arithmetic below, so a large batch costs a handful of passes over it.
    # |acc * m| < 2**47 and the rounding term is at most 2**62, so int64 never wraps here.
    # The passes over the batch work in place on one temporary.
    rounding = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    q = np.multiply(acc, m, out=np.empty(np.broadcast_shapes(acc.shape, m.shape, s.shape), dtype=np.int64))
    q += rounding
    q >>= s
    np.minimum(q, INT8_MAX, out=q)
    np.maximum(q, INT8_MIN, out=q)
    relu = np.asarray(relu, dtype=bool)
    if relu.ndim == 0:
        return np.maximum(q, 0, out=q) if relu else q
    return np.where(relu, np.maximum(q, 0), q)


def postprocess(acc, bias, m, s, relu=False, raw=False):
    """Post-process accumulators: add the bias, then requantise (or pass the raw int32 sum through).

    Parameters
    ----------
    acc, bias : array_like
        int32 accumulators and biases; their sum must be an int32.
    m, s, relu
        As for :func:`requantize`.
    raw : bool or array_like
        Where true, return the int32 ``acc + bias`` unchanged (a ranking model's logit).

    Returns
    -------
    numpy.ndarray
        Requantised int8 values, or raw int32 values where ``raw`` (dtype int64).
    """
    total = check_int32("accumulator plus bias", check_int32("accumulator", acc) + check_int32("bias", bias))
    q = requantize(total, m, s, relu)
    return np.where(np.asarray(raw, dtype=bool), total, q)


def topk(scores, k, indices=None):
    """The ``k`` best candidates: highest score first, ties broken by the lower candidate index.

    Parameters
    ----------
    scores : array_like
        int32 scores, one per candidate (1-D).
    k : int
        How many to keep, ``k >= 1``. With fewer than ``k`` candidates all of them are returned, sorted.
    indices : array_like, optional
        Non-negative candidate indices, one per score (default ``0, 1, ...``). They decide ties; a repeated
        index is allowed (equal (score, index) pairs are interchangeable).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Scores and indices of the ``min(k, len(scores))`` best candidates, best first (dtype int64).

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer, an index is negative, or the arrays are not 1-D of equal length.
    OverflowError
        If a score is not an int32.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"Top-k k must be a positive integer, not {k!r}")
    scores = np.asarray(scores)
    scores = check_int32("score", scores.astype(np.int64) if scores.size == 0 else scores)
    if scores.ndim != 1:
        raise ValueError(f"Top-k scores must be a 1-D array, not of shape {scores.shape}")
    if indices is None:
        indices = np.arange(len(scores), dtype=np.int64)
    else:
        indices = np.asarray(indices)
        indices = _as_int64("candidate index", indices.astype(np.int64) if indices.size == 0 else indices)
        if indices.shape != scores.shape:
            raise ValueError(f"Top-k needs one index per score: {len(scores)} scores, indices of shape "
                             f"{indices.shape}")
        if indices.size and indices.min() < 0:
            raise ValueError(f"Candidate indices must be non-negative, not {int(indices.min())}")
    order = np.lexsort((indices, -scores))[:k]
    return scores[order], indices[order]
