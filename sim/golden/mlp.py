"""Random MLPs and batches for the MLP engine's tests and benchmarks.

The layer type, the int8 forward pass the engine is held to and the check of what it can compute exactly are
the host's integer reference (:class:`~rpaccel.host.reference.Layer`, :func:`~rpaccel.host.reference.mlp_forward`,
:func:`~rpaccel.host.reference.check_mlp`); this module draws stimulus for them.
"""

import itertools

import numpy as np

from ...host.reference import Layer, check_mlp
from ...numeric import INT8_MAX, INT8_MIN, M_MAX, S_MAX

__all__ = ["random_input", "random_mlp"]


def random_mlp(rng, dims, *, raw_last=True, relu=True, extremes=0.1):
    """A random MLP with layer widths ``dims`` (``dims[0]`` inputs): a list of unnamed
    :class:`~rpaccel.host.reference.Layer`.

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
