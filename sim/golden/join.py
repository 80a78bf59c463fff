"""The joiner's golden model (:class:`rpaccel.rtl.accel.join.JoinUnit`) and the encoders of its input streams.

The interaction unit is verified on its own (tests/rtl/test_interaction.py), so the model computes each job's
top-MLP input straight from :func:`rpaccel.host.reference.interact` on ``(bottom, pooled)`` (through
:func:`rpaccel.sim.golden.interaction.interaction_model`) and lays it out as the unit's output words, per lane in
job order. :func:`bottom_words` and :func:`pooled_values` make the streams the joiner takes (with padding the
joiner must ignore), :func:`job_value` a job.
"""

import numpy as np

from ...host.driver.interaction import output_width, output_words
from ...numeric import INT8_MAX, INT8_MIN
from ...rtl.interaction import MODES
from .interaction import interaction_model

__all__ = ["bottom_words", "job_value", "join_golden", "pooled_values"]


def job_value(job):
    """The ``jobs`` stream's value of ``job`` (a dict ``{lane, items, mode, vectors, dim, m, s}``)."""
    return {"lane": job["lane"], "items": job["items"],
            "params": {"mode": MODES.index(job["mode"]), "vectors": job["vectors"], "dim": job["dim"],
                       "m": job["m"], "s": job["s"]}}


def bottom_words(g, split, lane, bottom, rng=None):
    """The ``bottom{lane}`` words of one job in split ``split``: ``(items, d)`` int8 ``bottom`` as ``ceil(d / c)``
    words per item, n-tile-major, ``c = g.engine.splits[split].cols`` elements valid in each word of
    ``g.engine.lane_cols(lane)``. With ``rng``, padding (beyond ``d``, beyond ``c``) and the bits above each
    element's low 8 are random, as the joiner must ignore them; without, they are zero and values sign-extended."""
    bottom = np.asarray(bottom, dtype=np.int64)
    items, dim = bottom.shape
    cols, width = g.engine.splits[split].cols, g.engine.lane_cols(lane)
    tiles = -(-dim // cols)
    padded = np.zeros((items, tiles * cols), dtype=np.int64)
    if rng is not None:
        padded[:] = rng.integers(INT8_MIN, INT8_MAX + 1, padded.shape)
    padded[:, :dim] = bottom
    words = np.zeros((tiles, items, width), dtype=np.int64)
    if rng is not None:
        words[:] = rng.integers(INT8_MIN, INT8_MAX + 1, words.shape)
    words[:, :, :cols] = padded.reshape(items, tiles, cols).transpose(1, 0, 2)
    if rng is not None:  # random upper bits: the joiner keeps the low 8
        words += rng.integers(-(1 << 23) + 1, 1 << 23, words.shape) << 8
    return words.reshape(tiles * items, width).tolist()


def pooled_values(g, pooled, rng=None):
    """The ``pooled`` stream's values of one job: ``(items, F - 1, d)`` int8 ``pooled`` as ``F - 1`` vectors per
    item, the item's last marked ``end``; elements beyond ``d`` random with ``rng`` (else zero), ``table`` the
    vector's number in its item."""
    pooled = np.asarray(pooled, dtype=np.int64)
    items, count, dim = pooled.shape
    out = []
    for i in range(items):
        for t in range(count):
            row = np.zeros(g.emb.row_bytes, dtype=np.int64)
            if rng is not None:
                row[:] = rng.integers(INT8_MIN, INT8_MAX + 1, row.shape)
            row[:dim] = pooled[i, t]
            out.append({"table": t, "end": int(t == count - 1), "data": row.tolist()})
    return out


def join_golden(g, jobs, bottom, pooled):
    """The joiner's output: per lane, the words ``(n, rows)`` int64 it sends ``inter[lane]``, in job order.

    Parameters
    ----------
    g : rpaccel.rtl.accel.isa.ChipGeometry
    jobs : sequence of dict
        ``{lane, items, mode, vectors, dim, m, s}`` per job (``mode`` ``"dot"`` or ``"cat"``).
    bottom : sequence of array_like
        Per job, its ``(items, d)`` int8 bottom-MLP output.
    pooled : sequence of array_like
        Per job, its ``(items, F - 1, d)`` int8 pooled vectors.
    """
    out = {lane: [] for lane in range(g.lanes)}
    for job, b, p in zip(jobs, bottom, pooled, strict=True):
        b, p = np.asarray(b, dtype=np.int64), np.asarray(p, dtype=np.int64).reshape(job["items"], -1, job["dim"])
        vectors = np.concatenate([b[:, None, :], p], axis=1)
        if vectors.shape != (job["items"], job["vectors"], job["dim"]):
            raise ValueError(f"Job {job} has vectors of shape {vectors.shape}")
        result = interaction_model(job["mode"], vectors, job["m"], job["s"])
        words = output_words(job["mode"], job["vectors"], job["dim"], g.rows)
        padded = np.zeros((job["items"], words * g.rows), dtype=np.int64)
        padded[:, :output_width(job["mode"], job["vectors"], job["dim"])] = result
        out[job["lane"]].append(padded.reshape(-1, g.rows))
    return {lane: np.concatenate(words) if words else np.zeros((0, g.rows), dtype=np.int64)
            for lane, words in out.items()}
