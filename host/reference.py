"""The integer reference model: the bit-exact specification the RTL is held to.

:func:`run` computes a :class:`~rpaccel.host.quant.QuantModel`'s int32 logits of a batch with the numeric rules
of :mod:`rpaccel.numeric` and nothing else:

1. **Bottom MLP**, each layer: ``acc = W x`` (int8 x int8 summed in int32), then
   ``postprocess(acc, bias, m, s, relu=True)`` -> int8.
2. **Embedding pooling**, each table ``t``: ``acc = sum of the int8 rows ids[:, t, 0..P-1]`` (int32), then
   ``requantize(acc, m_t, s_t)`` -> int8 (no ReLU).
3. **Interaction.** ``dot``: the vectors ``v_0`` (bottom output), ``v_1..v_T`` (pooled, table order); for every
   pair ``(i, j)``, ``i < j``, in row-major order ((0,1), (0,2), ..., (0,T), (1,2), ...),
   ``requantize(<v_i, v_j>, inter_m, inter_s)`` -> int8; the interaction output is ``v_0`` followed by those.
   ``cat``: the bottom output (or the int8 dense inputs when there is no bottom MLP) followed by the pooled
   vectors in table order.
4. **Top MLP**: like the bottom, ReLU after every layer but the last, whose output is the raw int32
   ``acc + bias`` -- the logit. Multi-task models run each task tower on the (ReLU'd, int8) top output and
   return one logit per task.

Every intermediate is range-checked (:func:`rpaccel.numeric.check_int32` and friends raise rather than wrap).
With ``trace=True`` the integer tensors of every step come back too (keys ``bottom0``, ``pooled_acc``,
``pooled``, ``pairs_acc``, ``pairs``, ``interaction``, ``top0``, ...), so a block's scoreboard can take its
inputs and expected outputs from the same run.
"""

import numpy as np

from ..numeric import check_int8, check_int32, postprocess, requantize

__all__ = ["int_matmul", "pair_indices", "run"]


def pair_indices(n):
    """Row-major pairs ``(i, j)``, ``i < j``, of ``n`` vectors."""
    return np.triu_indices(n, k=1)


def int_matmul(x, w):
    """``x @ w.T`` for int8 ``x`` ``(n, K)`` and ``w`` ``(N, K)``, exact, as int64.

    Computed with float64 BLAS: every product and partial sum is an integer of magnitude below
    ``K * 2**14 < 2**53``, so each is exactly representable and the result is exact in any summation order.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.shape[-1] * 128 * 128 >= 2**53:
        raise OverflowError("inner dimension too large for an exact float64 product")
    return (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)


def _check_inputs(qmodel, dense_q, ids):
    spec = qmodel.spec
    dense_q = check_int8("dense input", dense_q)
    if dense_q.ndim != 2 or dense_q.shape[1] != spec.dense:
        raise ValueError(f"dense inputs must have shape (n, {spec.dense}), not {dense_q.shape}")
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, not {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.ndim == 2:
        ids = ids[:, :, None]
    if ids.ndim != 3 or ids.shape[:2] != (len(dense_q), spec.num_tables):
        raise ValueError(f"ids must have shape ({len(dense_q)}, {spec.num_tables}) or "
                         f"({len(dense_q)}, {spec.num_tables}, P), not {np.shape(ids)}")
    rows = np.asarray(spec.tables)[None, :, None]
    bad = (ids < 0) | (ids >= rows)
    if bad.any():
        n, t, p = np.argwhere(bad)[0]
        raise ValueError(f"id {ids[n, t, p]} of item {n}, table {t} is outside [0, {spec.tables[t]})")
    return dense_q, ids


def _layer(layer, x, trace):
    acc = check_int32(f"{layer.name} accumulator", int_matmul(x, layer.weight))
    out = postprocess(acc, layer.bias[None, :], layer.m, layer.s, relu=layer.relu, raw=layer.raw)
    if trace is not None:
        trace[f"{layer.name}_acc"] = acc
        trace[layer.name] = out
    return out


def run(qmodel, dense_q, ids, *, trace=False):
    """Exact int32 logits of a batch (int64 array; ``(n,)``, or ``(n, tasks)`` for a multi-task model).

    Parameters
    ----------
    qmodel : QuantModel
    dense_q : array_like
        ``(n, D)`` int8 dense inputs (see :meth:`QuantModel.quantize_dense`).
    ids : array_like
        ``(n, T)`` or ``(n, T, P)`` row indices, each in ``[0, rows_t)``.
    trace : bool
        Also return a dict of every intermediate integer tensor.

    Raises
    ------
    ValueError, TypeError
        On inputs of the wrong shape or range (the message names the item and table).
    OverflowError
        If a value leaves its integer range (validated models never do).
    """
    spec = qmodel.spec
    dense_q, ids = _check_inputs(qmodel, dense_q, ids)
    steps = {} if trace else None
    layers = {layer.name: layer for layer in qmodel.layers}
    names = [name for name, _, _, _ in spec.layers()]
    x = dense_q
    for name in names:
        if name.startswith("bottom"):
            x = _layer(layers[name], x, steps)
    n = len(dense_q)
    rows = qmodel.emb[ids + qmodel.offsets[None, :, None]].astype(np.int64)  # (n, T, P, d)
    pooled_acc = check_int32("pooled sum", rows.sum(axis=2))
    pooled = requantize(pooled_acc, qmodel.pool_m[None, :, None], qmodel.pool_s[None, :, None])
    if spec.interaction == "dot":
        vectors = np.concatenate([x[:, None, :], pooled], axis=1)  # (n, T + 1, d)
        iu, ju = pair_indices(spec.num_vectors)
        # Exact in float64 for the same reason as int_matmul (|sum| <= d * 2**14).
        floats = vectors.astype(np.float64)
        gram = (floats @ floats.transpose(0, 2, 1)).astype(np.int64)
        pairs_acc = check_int32("pairwise dot product", gram[:, iu, ju])
        pairs = requantize(pairs_acc, qmodel.inter_m, qmodel.inter_s)
        x = np.concatenate([x, pairs], axis=1)
        if steps is not None:
            steps.update(pairs_acc=pairs_acc, pairs=pairs)
    else:
        x = np.concatenate([x, pooled.reshape(n, -1)], axis=1)
    if steps is not None:
        steps.update(pooled_acc=pooled_acc, pooled=pooled, interaction=x)
    for name in names:
        if name.startswith("top"):
            x = _layer(layers[name], x, steps)
    if spec.tasks:
        outs = []
        for task in range(spec.tasks):
            y = x
            for name in names:
                if name.startswith(f"task{task}."):
                    y = _layer(layers[name], y, steps)
            outs.append(y[:, 0])
        logits = np.stack(outs, axis=1)
    else:
        logits = x[:, 0]
    logits = check_int32("logit", logits)
    if steps is not None:
        steps["logits"] = logits
        return logits, steps
    return logits
