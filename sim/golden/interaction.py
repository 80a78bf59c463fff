"""The interaction unit's golden model: :func:`rpaccel.host.reference.interact` itself, on the unit's items.

The reference takes a quantised model; the unit takes items of ``F`` vectors with the mode and ``(m, s)`` as
run-time parameters. :func:`interaction_model` calls the reference with a stand-in carrying just those, and
:func:`random_items` makes items whose values favour the int8 extremes.
"""

from types import SimpleNamespace

import numpy as np

from ...host.reference import interact
from ...numeric import INT8_MAX, INT8_MIN

__all__ = ["interaction_model", "random_items"]


def interaction_model(mode, vectors, m=0, s=0):
    """The interaction outputs ``(n, width)`` of items ``vectors`` ``(n, F, d)``, by
    :func:`rpaccel.host.reference.interact` (the bottom output is ``vectors[:, 0]``, the pooled ones the rest)."""
    vectors = np.asarray(vectors, dtype=np.int64)
    model = SimpleNamespace(spec=SimpleNamespace(interaction=mode, num_vectors=vectors.shape[1]),
                            inter_m=m, inter_s=s)
    return interact(model, vectors[:, 0], vectors[:, 1:])


def random_items(rng, count, vectors, dim, *, extremes=0.25):
    """``(count, vectors, dim)`` random int8 items, each value ``-128`` or ``127`` with probability
    ``extremes``."""
    values = rng.integers(INT8_MIN, INT8_MAX + 1, (count, vectors, dim))
    pick = rng.random(values.shape)
    values[pick < extremes / 2] = INT8_MIN
    values[(pick >= extremes / 2) & (pick < extremes)] = INT8_MAX
    return values
