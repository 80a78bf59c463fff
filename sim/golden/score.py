"""Golden model of the score sequencers and top-k units (:mod:`rpaccel.rtl.accel.score`), and random programs.

:func:`score_model` executes each lane's SCORE instructions over the lane's logits and candidate indices: LOGIT
responses per item, and per top-k query (a lane's SCOREs to one unit up to one with ``last``) the ``k`` best
(:func:`rpaccel.numeric.topk`) as RANK responses (``report``) and as a kept result for the survivors banks
(``keep``). Instructions and responses are the dicts :mod:`rpaccel.host.driver.codec` packs for
``ChipGeometry.score_instr_layout()`` and ``ChipGeometry.response_layout()``.
"""

from dataclasses import dataclass, field

import numpy as np

from ...numeric import INT32_MAX, INT32_MIN, topk
from ...rtl.accel.isa import INDEX_BITS, TAG_BITS, ErrorCode, ResponseKind, ScoreDest

__all__ = ["KeptResult", "ScoreOutcome", "random_program", "response", "score_instr", "score_model"]


@dataclass
class KeptResult:
    """A top-k result kept for the survivors banks: the lane whose query it is, its closing SCORE's tag, and its
    candidate indices, best first."""

    lane: int
    tag: int
    indices: list


@dataclass
class ScoreOutcome:
    """What the score unit puts out for a program.

    Attributes
    ----------
    responses : dict
        Per tag, its LOGIT and RANK responses in order (with tags used once, the order the hardware keeps).
    kept : list of list of KeptResult
        Per top-k unit, its kept results: each lane's in that lane's order. How the lanes' queries on one unit
        interleave is the unit's arbitration's business, so result ``r`` is any lane's next one.
    """

    responses: dict = field(default_factory=dict)
    kept: list = field(default_factory=list)

    @property
    def results_done(self):
        """Kept results per unit, modulo ``2 ** 8`` (the unit's ``results_done`` at the end)."""
        return [len(results) % 256 for results in self.kept]


def score_instr(tag, *, lane=0, dest=ScoreDest.TOPK, unit=0, items=1, last=0, k=0, keep=0, report=0):
    """A score sequencer's instruction ``{tag, score}`` as a dict of plain values."""
    return {"tag": tag, "score": {"lane": lane, "dest": ScoreDest(dest), "unit": unit, "items": items,
                                  "last": int(last), "k": k, "keep": int(keep), "report": int(report)}}


def response(kind, tag, score, index, last):
    """A LOGIT or RANK response as the codec unpacks it (``code`` and ``data`` zero)."""
    return {"kind": ResponseKind(kind), "tag": tag, "last": int(last), "code": ErrorCode.NONE, "index": int(index),
            "score": int(score), "data": 0}


def score_model(geometry, programs, logits, indices):
    """The responses and kept results of each lane's SCORE ``programs`` over its ``logits`` and ``indices``.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    programs : sequence of sequence of dict
        Per lane, its SCORE instructions (:func:`score_instr`).
    logits, indices : sequence of sequence of int
        Per lane, its items' logits and candidate indices, in order (as many as its SCOREs take).

    Returns
    -------
    ScoreOutcome

    Raises
    ------
    ValueError
        If a lane is not one of the geometry's, the programs take other than the items given, a SCORE has 0
        items, names a unit the geometry does not have or closes a query with ``k`` outside ``1..k_max``, or a
        query is left open at the end.
    """
    if len(programs) > geometry.lanes or len(logits) != len(programs) or len(indices) != len(programs):
        raise ValueError(f"Score programs, logits and indices must be given for at most {geometry.lanes} lanes, "
                         f"not {len(programs)}, {len(logits)} and {len(indices)}")
    outcome = ScoreOutcome(kept=[[] for _ in range(geometry.units)])
    for lane, program in enumerate(programs):
        if len(logits[lane]) != len(indices[lane]):
            raise ValueError(f"Lane {lane} has {len(logits[lane])} logits but {len(indices[lane])} indices")
        taken = 0
        open_queries = {}   # unit -> (scores, indices) of the lane's open query
        for number, instr in enumerate(program):
            score, tag = instr["score"], instr["tag"]
            where = f"Lane {lane}'s SCORE {number} (tag {tag})"
            items = score["items"]
            if items < 1:
                raise ValueError(f"{where} has {items} items")
            if taken + items > len(logits[lane]):
                raise ValueError(f"{where} takes items beyond the lane's {len(logits[lane])}")
            batch = [(int(s), int(i)) for s, i in zip(logits[lane][taken:taken + items],
                                                       indices[lane][taken:taken + items])]
            taken += items
            replies = outcome.responses.setdefault(tag, [])
            if ScoreDest(score["dest"]) == ScoreDest.RSP:
                replies += [response(ResponseKind.LOGIT, tag, s, i, score["last"] and n == items - 1)
                            for n, (s, i) in enumerate(batch)]
                continue
            unit = score["unit"]
            if not 0 <= unit < geometry.units:
                raise ValueError(f"{where} names top-k unit {unit}; there are {geometry.units}")
            query = open_queries.setdefault(unit, [])
            query += batch
            if not score["last"]:
                continue
            if not 1 <= score["k"] <= geometry.k_max:
                raise ValueError(f"{where} closes a query with k = {score['k']}, not in 1..{geometry.k_max}")
            del open_queries[unit]
            scores, best = topk(np.array([s for s, _ in query], dtype=np.int64), score["k"],
                                np.array([i for _, i in query], dtype=np.int64))
            if score["report"]:
                replies += [response(ResponseKind.RANK, tag, s, i, n == len(best) - 1)
                            for n, (s, i) in enumerate(zip(scores.tolist(), best.tolist()))]
            if score["keep"]:
                outcome.kept[unit].append(KeptResult(lane, tag, best.tolist()))
        if taken != len(logits[lane]):
            raise ValueError(f"Lane {lane}'s SCOREs take {taken} items, not the {len(logits[lane])} given")
        if open_queries:
            raise ValueError(f"Lane {lane} leaves a query open on top-k unit {min(open_queries)}")
    outcome.responses = {tag: replies for tag, replies in outcome.responses.items() if replies}
    return outcome


def _logits(rng, n):
    """``n`` int32 logits: uniform, or from a narrow range (many ties), or the extremes."""
    kind = rng.random()
    if kind < 0.4:
        return rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    if kind < 0.8:
        return int(rng.integers(-1000, 1000)) + rng.integers(0, 4, n)
    return rng.choice(np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]), n)


def random_program(rng, geometry, *, blocks=6, max_items=8, tags=1 << TAG_BITS):
    """Random SCORE programs for every lane, with their logits and distinct candidate indices.

    Each lane gets ``blocks`` pieces: a SCORE to the response stream, or a top-k query of one to three SCOREs to a
    random unit (responses-stream SCOREs may come between them), closed with a random ``k``, ``keep`` and
    ``report``. A lane holds at most one unit at a time, so the lanes cannot wait on each other in a circle.
    Tags are distinct (at most ``tags`` SCOREs in all); indices are distinct over the whole program, so a kept
    result is known by its best index.

    Returns
    -------
    (list, list, list)
        Per lane: its SCORE instructions, its logits and its indices.
    """
    programs, sizes = [], []
    tag = 0

    def instr(lane, **fields):
        nonlocal tag
        if tag >= tags:
            raise ValueError(f"A random score program of more than {tags} SCOREs has no distinct tags")
        items = int(rng.integers(1, max_items + 1))
        sizes[lane] += items
        tag += 1
        return score_instr(tag - 1, lane=lane, items=items, **fields)

    for lane in range(geometry.lanes):
        program = []
        programs.append(program)
        sizes.append(0)
        for _ in range(blocks):
            if rng.random() < 0.3:
                program.append(instr(lane, dest=ScoreDest.RSP, last=rng.random() < 0.5))
                continue
            unit = int(rng.integers(0, geometry.units))
            parts = int(rng.integers(1, 4))
            for part in range(parts):
                if part and rng.random() < 0.3:
                    program.append(instr(lane, dest=ScoreDest.RSP, last=rng.random() < 0.5))
                closes = part == parts - 1
                k = int(rng.choice([1, geometry.k_max, int(rng.integers(1, geometry.k_max + 1))]))
                program.append(instr(lane, unit=unit, last=closes, k=k if closes else 0,
                                     keep=closes and rng.random() < 0.6, report=closes and rng.random() < 0.6))
    indices = rng.choice(1 << INDEX_BITS, sum(sizes), replace=False)
    logits, lane_indices, start = [], [], 0
    for size in sizes:
        logits.append(_logits(rng, size).astype(np.int64).tolist())
        lane_indices.append(indices[start:start + size].tolist())
        start += size
    return programs, logits, lane_indices
