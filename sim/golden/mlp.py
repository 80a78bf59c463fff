"""Golden model of the MLP engine: an int8 multi-layer perceptron under the numeric rules, in numpy.

A layer is ``y = postprocess(x @ W, bias, m, s, relu, raw)``: int8 inputs and weights, int32 accumulators and
biases, requantised to int8 (optionally ReLU) or, for the last layer of a ranking model, the raw int32 sum.
:func:`check_mlp` rejects what the hardware could not compute exactly (an accumulator that could leave int32, a
raw layer feeding another layer) with a message naming the layer and the value.
"""

import itertools
from dataclasses import dataclass

import numpy as np

from ...numeric import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    M_MAX,
    S_MAX,
    check_int8,
    check_int32,
    check_requant_params,
    postprocess,
)

__all__ = ["MLPError", "Layer", "check_mlp", "mlp_forward", "random_input", "random_mlp"]


class MLPError(ValueError):
    """An MLP the engine cannot run exactly (the message names the layer and what is wrong)."""


@dataclass(frozen=True)
class Layer:
    """One fully connected layer.

    Attributes
    ----------
    weights : numpy.ndarray
        ``K x N`` int8 weights (``y = x @ weights``).
    bias : numpy.ndarray
        ``N`` int32 biases.
    m, s : int
        Requantisation multiplier (unsigned 16 bit) and shift (0..63).
    relu : bool
        ReLU after requantisation.
    raw : bool
        Output the raw int32 ``x @ weights + bias`` (only for the last layer).
    """

    weights: np.ndarray
    bias: np.ndarray
    m: int
    s: int
    relu: bool = False
    raw: bool = False

    @property
    def shape(self):
        """``(K, N)``."""
        return tuple(np.shape(self.weights))


def _accumulator_bound(layer):
    # The largest |x @ W + bias| over all int8 inputs, per output: |x| <= 128.
    w = np.abs(np.asarray(layer.weights, dtype=np.int64))
    return 128 * w.sum(axis=0) + np.abs(np.asarray(layer.bias, dtype=np.int64))


def check_mlp(layers, inputs=None):
    """Validate a list of :class:`Layer` (and optionally an input batch) for the engine.

    Raises
    ------
    MLPError
        On an empty list, a layer whose shapes do not chain, weights that are not int8, biases that are not
        int32, bad (m, s), a raw layer that is not the last, or a layer whose accumulator could leave int32 for
        some int8 input (naming the layer and the output column).
    """
    if not layers:
        raise MLPError("An MLP needs at least one layer")
    for index, layer in enumerate(layers):
        name = f"layer {index}"
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
            raise MLPError(f"{name} takes {k} inputs but layer {index - 1} gives {layers[index - 1].shape[1]}")
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


def mlp_forward(layers, inputs):
    """Run the MLP on a batch: ``inputs`` is items x K int8; returns items x N (int64: int8 values, or int32
    for a raw last layer)."""
    check_mlp(layers, inputs)
    x = np.asarray(inputs, dtype=np.int64)
    for layer in layers:
        acc = x @ np.asarray(layer.weights, dtype=np.int64)
        x = postprocess(acc, np.asarray(layer.bias, dtype=np.int64), layer.m, layer.s, layer.relu, layer.raw)
    return x


def random_mlp(rng, dims, *, raw_last=True, relu=True, extremes=0.1):
    """A random MLP with layer widths ``dims`` (``dims[0]`` inputs).

    Weights are uniform int8 with a fraction ``extremes`` of -128/127; biases are of the order of the
    accumulators; (m, s) are chosen per layer so that typical accumulators land across the int8 range (some
    clamp), so requantisation, rounding and saturation are all exercised. The last layer is raw if ``raw_last``.
    """
    layers = []
    for index, (k, n) in enumerate(itertools.pairwise(dims)):
        w = rng.integers(INT8_MIN, INT8_MAX + 1, (k, n))
        w = np.where(rng.random((k, n)) < extremes, rng.choice([INT8_MIN, INT8_MAX], (k, n)), w)
        scale = 74 * np.sqrt(k) * 74  # typical |x @ w| for uniform int8 x and w
        bias = rng.integers(-int(scale), int(scale) + 1, n)
        m = int(rng.integers(1 << 14, M_MAX + 1))
        s = int(np.clip(round(np.log2(max(scale, 1) * m / 64)), 0, S_MAX))
        last = index == len(dims) - 2
        layers.append(Layer(weights=w.astype(np.int64), bias=bias.astype(np.int64), m=m, s=s,
                            relu=bool(relu and not last and rng.random() < 0.8), raw=bool(last and raw_last)))
    check_mlp(layers)
    return layers


def random_input(rng, items, width):
    """An items x width int8 batch (uniform, with some -128/127)."""
    x = rng.integers(INT8_MIN, INT8_MAX + 1, (items, width))
    return np.where(rng.random((items, width)) < 0.05, rng.choice([INT8_MIN, INT8_MAX], (items, width)), x)
