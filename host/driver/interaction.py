"""The interaction unit (:mod:`rpaccel.rtl.interaction`): item encoding and output decoding, over the codec.

An item is ``F`` int8 vectors of ``d`` elements (the bottom MLP's output, then the pooled vectors); the unit takes
each vector as ``ceil(d / lanes)`` chunk words, the item's parameters on its first word, and puts out the item's
interaction vector (:func:`output_width` elements) in words of ``lanes`` elements, the last one zero-padded and
marked ``last``. :func:`encode_items` frames a batch of items with one set of parameters (concatenate the words
of batches to mix models); :func:`decode_items` reads the output words back and checks their framing.

Example::

    words = encode_items("dot", vectors, m, s, lanes=16, max_vectors=33, max_dim=64)   # vectors (n, F, d)
    result = player.run({"i": to_ints(words)}, expect={"o": output_words("dot", F, d, 16) * n}, packed=True)
    out = decode_items(result.outputs["o"], output_width("dot", F, d), lanes=16)   # (n, d + F (F - 1) / 2)
"""

import numpy as np

from ...numeric import check_int8, check_requant_params
from ...rtl.interaction import MODES, interaction_in_layout, interaction_out_layout
from .codec import codec, from_ints

__all__ = ["check_item_params", "decode_items", "encode_items", "output_width", "output_words"]


def check_item_params(mode, vectors, dim, *, max_vectors, max_dim):
    """Raise :class:`ValueError` unless the unit can take items of ``vectors`` vectors of ``dim`` elements in
    ``mode``."""
    if mode not in MODES:
        raise ValueError(f"Interaction mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(vectors, (int, np.integer)) or not 1 <= vectors <= max_vectors:
        raise ValueError(f"Interaction vectors per item must be in [1, {max_vectors}], not {vectors!r}")
    if not isinstance(dim, (int, np.integer)) or not 1 <= dim <= max_dim:
        raise ValueError(f"Interaction vector dimension must be in [1, {max_dim}], not {dim!r}")


def output_width(mode, vectors, dim):
    """Elements of an item's interaction output: ``d + F (F - 1) / 2`` for ``dot``, ``F d`` for ``cat``."""
    return dim + vectors * (vectors - 1) // 2 if mode == "dot" else vectors * dim


def output_words(mode, vectors, dim, lanes):
    """Output words of one item."""
    return -(-output_width(mode, vectors, dim) // lanes)


def encode_items(mode, vectors, m=0, s=0, *, lanes, max_vectors, max_dim):
    """Packed input words (``(n, limbs)`` uint64, see :mod:`rpaccel.host.driver.codec`) of a batch of items.

    Parameters
    ----------
    mode : str
        ``"dot"`` or ``"cat"``.
    vectors : array_like
        ``(n, F, d)`` int8 values: per item the bottom output, then the pooled vectors.
    m, s : int
        Requantisation of the pairwise dot products (``dot``; sent but unused for ``cat``).
    lanes, max_vectors, max_dim : int
        The unit's parameters.

    Raises
    ------
    ValueError
        On a mode, ``F`` or ``d`` the unit cannot take, a shape that is not ``(n, F, d)``, or bad ``(m, s)``.
    OverflowError
        On a value outside int8.
    """
    vectors = check_int8("interaction input", vectors)
    if vectors.ndim != 3:
        raise ValueError(f"Interaction inputs must have shape (n, F, d), not {vectors.shape}")
    n, count, dim = vectors.shape
    check_item_params(mode, count, dim, max_vectors=max_vectors, max_dim=max_dim)
    check_requant_params(m, s)
    chunks = -(-dim // lanes)
    padded = np.zeros((n, count, chunks * lanes), dtype=np.int64)
    padded[:, :, :dim] = vectors
    data = padded.reshape(n * count * chunks, lanes)
    first = np.zeros(len(data), dtype=np.int64)
    first[::count * chunks] = 1
    params = {"mode": first * MODES.index(mode), "vectors": first * count, "dim": first * dim, "m": first * int(m),
              "s": first * int(s)}
    return codec(interaction_in_layout(lanes, max_vectors, max_dim)).pack({"data": data, "params": params})


def decode_items(words, width, *, lanes):
    """The items' interaction outputs, ``(n, width)`` int64, from the unit's output words (Python ints, or
    ``(n, limbs)`` words).

    Raises
    ------
    ValueError
        If the words are not whole items of ``ceil(width / lanes)`` words with ``last`` on each item's final word
        only, or an item's padding is not zero.
    """
    layout = interaction_out_layout(lanes)
    if not (isinstance(words, np.ndarray) and words.ndim == 2):
        words = from_ints(words, layout.size)
    columns = codec(layout).unpack(words)
    per_item = -(-width // lanes)
    if len(words) % per_item:
        raise ValueError(f"{len(words)} output words are not whole items of {per_item} words")
    expected_last = np.zeros(len(words), dtype=np.int64)
    expected_last[per_item - 1::per_item] = 1
    wrong = np.flatnonzero(columns["last"] != expected_last)
    if wrong.size:
        raise ValueError(f"Output word {wrong[0]} has last = {columns['last'][wrong[0]]}, expected "
                         f"{expected_last[wrong[0]]} ({per_item} words per item)")
    flat = columns["data"].reshape(-1, per_item * lanes)
    if np.any(flat[:, width:]):
        item = int(np.flatnonzero(np.any(flat[:, width:], axis=1))[0])
        raise ValueError(f"Item {item} has non-zero padding after its {width} elements")
    return flat[:, :width]
