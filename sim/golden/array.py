"""Golden model of :class:`rpaccel.rtl.array.SystolicArray`, and its random stimulus.

The array is a stream machine: tiles of weights arrive on ``w`` (one row per transfer), items on ``x`` (the
last item of each tile marked), and every item's result is its activation vector times its tile. The model
needs no timing: :func:`array_results` maps the two streams to the result stream.
"""

from dataclasses import dataclass, field

import numpy as np

from ...numeric import INT8_MAX, INT8_MIN

__all__ = ["SlotStimulus", "array_results", "random_slot_stimulus"]


def array_results(tiles, items):
    """Results of a slot: ``tiles`` is a list of ``rows x cols`` int8 matrices in load order, ``items`` a list
    of ``(activations, last, tag)``; item results use the tile current when they arrive and ``last`` moves on
    to the next tile. Returns a list of ``(psums, tag)`` with int32 sums (Python ints)."""
    results, tile = [], 0
    for a, last, tag in items:
        if tile >= len(tiles):
            raise ValueError(f"Item {len(results)} has no tile: only {len(tiles)} tiles were given")
        sums = np.asarray(a, dtype=np.int64) @ np.asarray(tiles[tile], dtype=np.int64)
        results.append(([int(v) for v in sums], tag))
        tile += bool(last)
    return results


@dataclass
class SlotStimulus:
    """Stream payloads for one slot of an array, and the results expected on ``y``."""

    weights: list = field(default_factory=list)   # w payloads: lists of cols ints
    items: list = field(default_factory=list)     # x payloads: {"a", "last", "tag"}
    expected: list = field(default_factory=list)  # y payloads: {"psum", "tag"}


def _int8(rng, shape, extremes=0.2):
    values = rng.integers(INT8_MIN, INT8_MAX + 1, shape)
    return np.where(rng.random(shape) < extremes, rng.choice([INT8_MIN, INT8_MAX], shape), values)


def random_slot_stimulus(rng, rows, cols, *, tiles, port_rows=None, port_cols=None, max_items=8, tag_bits=8):
    """Random tiles and items for a ``rows x cols`` sub-array whose ports are ``port_rows``/``port_cols`` wide.

    Tiles have 1 to ``max_items`` items (often a single item, to stress back-to-back weight loading); a fifth
    of the values are -128 or 127. Unused port elements are zero on inputs and expected zero on outputs.
    """
    port_rows, port_cols = port_rows or rows, port_cols or cols
    stimulus = SlotStimulus()
    matrices = [_int8(rng, (rows, cols)) for _ in range(tiles)]
    for matrix in matrices:
        stimulus.weights += [[int(v) for v in row] + [0] * (port_cols - cols) for row in matrix]
    items = []
    for _ in range(tiles):
        count = 1 if rng.random() < 0.3 else int(rng.integers(1, max_items + 1))
        for index in range(count):
            a = _int8(rng, rows)
            items.append(([int(v) for v in a], int(index == count - 1), int(rng.integers(0, 1 << tag_bits))))
    for a, last, tag in items:
        stimulus.items.append({"a": a + [0] * (port_rows - rows), "last": last, "tag": tag})
    for psums, tag in array_results(matrices, items):
        stimulus.expected.append({"psum": psums + [0] * (port_cols - cols), "tag": tag})
    return stimulus
