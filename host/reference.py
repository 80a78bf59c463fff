"""The integer reference model: the bit-exact specification the RTL is held to.

It holds the project's one int8 layer type and one forward pass. A :class:`Layer` is ``y = postprocess(x @ W,
bias, m, s, relu, raw)`` with ``W`` ``K x N`` (``K`` inputs, ``N`` outputs: the rows and columns of the
weight-stationary systolic array); :func:`mlp_forward` runs a list of them on a batch, and :func:`check_mlp`
refuses what cannot be computed exactly (an accumulator that could leave int32 for some int8 input, a raw layer
feeding another). The MLP engine's tests, its host driver (:mod:`rpaccel.host.driver.mlp`) and the model-level
:func:`run` all use them.

:func:`run` computes a :class:`~rpaccel.host.quant.QuantModel`'s int32 logits of a batch with the numeric rules
of :mod:`rpaccel.numeric` and nothing else:

1. **Bottom MLP** (:func:`mlp_forward`), each layer: ``acc = x @ W`` (int8 x int8 summed in int32), then
   ``postprocess(acc, bias, m, s, relu=True)`` -> int8.
2. **Embedding pooling** (:func:`pool`), each table ``t``: ``acc = sum of the int8 rows ids[:, t, 0..P-1]``
   (int32), then ``requantize(acc, m_t, s_t)`` -> int8 (no ReLU).
3. **Interaction** (:func:`interact`). ``dot``: the vectors ``v_0`` (bottom output), ``v_1..v_T`` (pooled, table
   order); for every pair ``(i, j)``, ``i < j``, in row-major order ((0,1), (0,2), ..., (0,T), (1,2), ...),
   ``requantize(<v_i, v_j>, inter_m, inter_s)`` -> int8; the interaction output is ``v_0`` followed by those.
   ``cat``: the bottom output (or the int8 dense inputs when there is no bottom MLP) followed by the pooled
   vectors in table order.
4. **Top MLP**: like the bottom, ReLU after every layer but the last, whose output is the raw int32
   ``acc + bias`` -- the logit. Multi-task models run each task tower on the (ReLU'd, int8) top output and
   return one logit per task.

Every intermediate is range-checked (:func:`rpaccel.numeric.check_int32` and friends raise rather than wrap).
With ``trace=True`` the integer tensors of every step come back too (keys ``bottom0``, ``bottom0_acc``,
``pooled_acc``, ``pooled``, ``pairs_acc``, ``pairs``, ``interaction``, ``top0``, ..., ``logits``), so a block's
scoreboard can take its inputs and expected outputs from the same run.
"""

from dataclasses import dataclass

import numpy as np

from ..numeric import INT32_MAX, check_int8, check_int32, check_requant_params, postprocess, requantize
from .models import pair_indices

__all__ = ["Layer", "MLPError", "check_inputs", "check_mlp", "int_matmul", "interact", "mlp_forward",
           "pool", "run"]


class MLPError(ValueError):
    """An MLP that cannot be computed exactly, or (in the driver) laid out on the engine; the message names the
    layer and what is wrong."""


@dataclass(frozen=True)
class Layer:
    """One fully connected int8 layer: ``y = postprocess(x @ weights, bias, m, s, relu, raw)``.

    :func:`check_mlp` validates a list of layers; the record itself holds whatever it is given.

    Attributes
    ----------
    weights : numpy.ndarray
        ``K x N`` int8 weights: ``K`` inputs by ``N`` outputs, ``y = x @ weights`` for a batch ``x`` of
        ``items x K``.
    bias : numpy.ndarray
        ``N`` int32 biases, added into the accumulators.
    m, s : int
        Requantisation multiplier (unsigned 16 bit) and shift (0..63).
    relu : bool
        ReLU after requantisation.
    raw : bool
        Output the raw int32 ``x @ weights + bias`` (only for the last layer of an MLP: a ranking model's logit).
    name : str
        What traces and error messages call the layer (``bottom0``, ``top1``, ``task0.2``); an unnamed layer is
        ``layer <index>`` in its MLP.
    """

    weights: np.ndarray
    bias: np.ndarray
    m: int
    s: int
    relu: bool = False
    raw: bool = False
    name: str = ""

    @property
    def shape(self):
        """``(K, N)``."""
        return tuple(np.shape(self.weights))


def _label(layer, index):
    return layer.name or f"layer {index}"


def _accumulator_bound(layer):
    # The largest |x @ W + bias| over all int8 inputs, per output: |x| <= 128.
    w = np.abs(np.asarray(layer.weights, dtype=np.int64))
    return 128 * w.sum(axis=0) + np.abs(np.asarray(layer.bias, dtype=np.int64))


def check_mlp(layers, inputs=None):
    """Validate a list of :class:`Layer` (and optionally an input batch) under the numeric rules.

    Every partial sum of ``x @ W + bias`` is bounded by ``|bias| + 128 * sum |w|`` per output column, so an MLP
    that passes computes exactly in int32 in any order of summation, on the engine as in :func:`mlp_forward`.

    Raises
    ------
    MLPError
        On an empty list, a layer whose shapes do not chain, weights that are not int8, biases that are not
        int32, bad (m, s), a raw layer that is not the last, or a layer whose accumulator could leave int32 for
        some int8 input (naming the layer and the output column); on inputs that are not an items x K int8 batch.
    """
    if not layers:
        raise MLPError("An MLP needs at least one layer")
    for index, layer in enumerate(layers):
        name = _label(layer, index)
        if not isinstance(layer, Layer):
            raise MLPError(f"{name} must be a Layer, not {type(layer).__name__}")
        if np.ndim(layer.weights) != 2 or 0 in np.shape(layer.weights):
            raise MLPError(f"{name}: weights must be a non-empty K x N matrix, not of shape {np.shape(layer.weights)}")
        k, n = layer.shape
        if np.shape(layer.bias) != (n,):
            raise MLPError(f"{name}: bias must have {n} elements (one per output), not shape {np.shape(layer.bias)}")
        try:
            check_int8(f"{name} weights", layer.weights)
            check_int32(f"{name} bias", layer.bias)
            check_requant_params(layer.m, layer.s)
        except (OverflowError, ValueError, TypeError) as error:
            raise MLPError(f"{name}: {error}") from None
        if index and layers[index - 1].shape[1] != k:
            raise MLPError(f"{name} takes {k} inputs but {_label(layers[index - 1], index - 1)} gives "
                           f"{layers[index - 1].shape[1]}")
        if layer.raw and index != len(layers) - 1:
            raise MLPError(f"{name} outputs raw int32 but is not the last layer")
        bound = _accumulator_bound(layer)
        if bound.max() > INT32_MAX:
            column = int(bound.argmax())
            raise MLPError(f"{name}: the accumulator of output {column} could reach {int(bound[column])} "
                           f"(|bias| + 128 * sum |w|), outside int32")
    if inputs is not None:
        if np.ndim(inputs) != 2 or np.shape(inputs)[1] != layers[0].shape[0]:
            raise MLPError(f"Inputs must be an items x {layers[0].shape[0]} matrix, not of shape {np.shape(inputs)}")
        try:
            check_int8("inputs", inputs)
        except (OverflowError, TypeError) as error:
            raise MLPError(str(error)) from None


def int_matmul(x, w):
    """``x @ w`` for int8 ``x`` ``(n, K)`` and ``w`` ``(K, N)``, exact, as int64.

    Computed with float64 BLAS: every product and partial sum is an integer of magnitude below
    ``K * 2**14 < 2**53``, so each is exactly representable and the result is exact in any summation order.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.shape[-1] * 128 * 128 >= 2**53:
        raise OverflowError("inner dimension too large for an exact float64 product")
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)


def mlp_forward(layers, inputs, *, trace=None):
    """Run an MLP on a batch: the one int8 forward pass of the project.

    Parameters
    ----------
    layers : list of Layer
        Checked with :func:`check_mlp`.
    inputs : array_like
        ``items x K`` int8.
    trace : dict, optional
        Filled with each layer's int32 accumulators before the bias (``<name>_acc``) and its outputs (``<name>``).

    Returns
    -------
    numpy.ndarray
        ``items x N`` int64: int8 values, or int32 values for a raw last layer.

    Raises
    ------
    MLPError
        On an invalid MLP or batch (see :func:`check_mlp`).
    """
    check_mlp(layers, inputs)
    x = np.asarray(inputs, dtype=np.int64)
    for index, layer in enumerate(layers):
        acc = int_matmul(x, layer.weights)
        x = postprocess(acc, np.asarray(layer.bias, dtype=np.int64), layer.m, layer.s, layer.relu, layer.raw)
        if trace is not None:
            name = _label(layer, index)
            trace[f"{name}_acc"] = acc
            trace[name] = x
    return x


def check_inputs(qmodel, dense_q, ids):
    """Validate a batch for ``qmodel``: ``(dense_q, ids)`` as int64 arrays, ``ids`` as ``(n, T, P)``.

    Raises
    ------
    ValueError, TypeError
        On inputs of the wrong shape or type, or an ID outside its table (naming the item and table).
    OverflowError
        On a dense input outside int8.
    """
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


def pool(qmodel, ids, trace=None):
    """Pooled int8 vectors ``(n, T, d)`` of checked ``(n, T, P)`` IDs (step 2); ``trace`` gets ``pooled_acc``
    and ``pooled``."""
    rows = qmodel.emb[ids + qmodel.offsets[None, :, None]].astype(np.int64)  # (n, T, P, d)
    pooled_acc = check_int32("pooled sum", rows.sum(axis=2))
    pooled = requantize(pooled_acc, qmodel.pool_m[None, :, None], qmodel.pool_s[None, :, None])
    if trace is not None:
        trace.update(pooled_acc=pooled_acc, pooled=pooled)
    return pooled


def interact(qmodel, bottom, pooled, trace=None):
    """The top MLP's int8 input ``(n, width)`` from the bottom output (or the dense inputs when the model has no
    bottom MLP) and the pooled vectors (step 3); ``trace`` gets ``pairs_acc``, ``pairs`` (``dot``) and
    ``interaction``."""
    bottom = check_int8("bottom output", bottom)
    if qmodel.spec.interaction == "dot":
        vectors = np.concatenate([bottom[:, None, :], pooled], axis=1)  # (n, T + 1, d)
        iu, ju = pair_indices(qmodel.spec.num_vectors)
        # Exact in float64 for the same reason as int_matmul (|sum| <= d * 2**14).
        floats = vectors.astype(np.float64)
        gram = (floats @ floats.transpose(0, 2, 1)).astype(np.int64)
        pairs_acc = check_int32("pairwise dot product", gram[:, iu, ju])
        pairs = requantize(pairs_acc, qmodel.inter_m, qmodel.inter_s)
        out = np.concatenate([bottom, pairs], axis=1)
        if trace is not None:
            trace.update(pairs_acc=pairs_acc, pairs=pairs)
    else:
        out = np.concatenate([bottom, pooled.reshape(len(bottom), -1)], axis=1)
    if trace is not None:
        trace["interaction"] = out
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
    MLPError
        On layers that break the numeric rules (a validated model's never do).
    OverflowError
        If a value leaves its integer range (validated models never do).
    """
    dense_q, ids = check_inputs(qmodel, dense_q, ids)
    steps = {} if trace else None
    mlps = qmodel.mlps()
    x = mlp_forward(mlps["bottom"], dense_q, trace=steps) if mlps["bottom"] else dense_q
    x = interact(qmodel, x, pool(qmodel, ids, steps), steps)
    x = mlp_forward(mlps["top"], x, trace=steps)
    if qmodel.spec.tasks:
        logits = np.stack([mlp_forward(mlps[f"task{task}"], x, trace=steps)[:, 0]
                           for task in range(qmodel.spec.tasks)], axis=1)
    else:
        logits = x[:, 0]
    logits = check_int32("logit", logits)
    if steps is not None:
        steps["logits"] = logits
        return logits, steps
    return logits
