"""Golden model of the score sequencers, top-k units and filter units (:mod:`rpaccel.rtl.accel.score`), and random
programs.

:func:`score_model` executes each lane's SCORE instructions over the lane's logits and candidate indices: LOGIT
responses per item, and per query (a lane's SCOREs to one top-k or filter unit up to one with ``last``) its kept
candidates: a top-k unit's ``k`` best (:func:`rpaccel.numeric.topk`) as RANK responses, best first; a filter unit's
``k`` best as a set (:func:`filter_keep`) as KEPT responses, in arrival order (``report``); either as a kept result
of the unit's holder for the survivors banks (``keep``). Instructions and responses are the dicts
:mod:`rpaccel.host.driver.codec` packs for ``ChipGeometry.score_instr_layout()`` and
``ChipGeometry.response_layout()``.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ...numeric import INT32_MAX, INT32_MIN, topk
from ...rtl.accel.isa import INDEX_BITS, TAG_BITS, ErrorCode, Opcode, ResponseKind, ScoreDest

__all__ = ["KeptResult", "ScoreOutcome", "filter_keep", "random_program", "response", "score_instr", "score_model"]


@dataclass
class KeptResult:
    """A result kept for the survivors banks: the lane whose query it is, its closing SCORE's tag, and its
    candidate indices (a top-k unit's best first, a filter unit's in arrival order)."""

    lane: int
    tag: int
    indices: list


@dataclass
class ScoreOutcome:
    """What the score unit puts out for a program.

    Attributes
    ----------
    responses : dict
        Per tag, its LOGIT, RANK, KEPT and ERROR responses in order (with tags used once, the order the hardware
        keeps).
    kept : list of list of KeptResult
        Per holder (the top-k units, then the filter units), its kept results: each lane's in that lane's order. How
        the lanes' queries on one unit interleave is the unit's arbitration's business, so result ``r`` is any
        lane's next one.
    """

    responses: dict = field(default_factory=dict)
    kept: list = field(default_factory=list)

    @property
    def results_done(self):
        """Kept results per holder, modulo ``2 ** 8`` (the holder's ``results_done`` at the end)."""
        return [len(results) % 256 for results in self.kept]


def score_instr(tag, *, lane=0, dest=ScoreDest.TOPK, unit=0, items=1, last=0, k=0, keep=0, report=0):
    """A score sequencer's instruction ``{tag, score}`` as a dict of plain values."""
    return {"tag": tag, "score": {"lane": lane, "dest": ScoreDest(dest), "unit": unit, "items": items,
                                  "last": int(last), "k": k, "keep": int(keep), "report": int(report)}}


def response(kind, tag, score, index, last, code=ErrorCode.NONE):
    """A response of the score unit as the codec unpacks it (``data`` zero)."""
    return {"kind": ResponseKind(kind), "tag": tag, "last": int(last), "code": ErrorCode(code), "index": int(index),
            "score": int(score), "data": 0}


def filter_keep(scores, k, indices, capacity):
    """What a filter unit (:class:`rpaccel.rtl.filter.FilterUnit`) keeps of a query.

    The unit holds the first ``capacity`` candidates and drops the others; of those it keeps the candidates of
    :func:`rpaccel.numeric.topk` as a set, in arrival order (of interchangeable equal ``(score, index)`` pairs, the
    first ones).

    Parameters
    ----------
    scores, indices : sequence of int
        The query's candidates, in arrival order.
    k : int
        How many to keep, ``k >= 1``.
    capacity : int
        Candidates the unit holds.

    Returns
    -------
    (list, bool)
        The kept indices in arrival order, and whether candidates were dropped (the query overflowed).
    """
    held = [(int(s), int(i)) for s, i in zip(scores[:capacity], indices[:capacity], strict=True)]
    best_scores, best_indices = topk(np.array([s for s, _ in held], dtype=np.int64), k,
                                     np.array([i for _, i in held], dtype=np.int64))
    wanted = Counter(zip(best_scores.tolist(), best_indices.tolist(), strict=True))
    kept = []
    for pair in held:
        if wanted[pair]:
            wanted[pair] -= 1
            kept.append(pair[1])
    return kept, len(scores) > capacity


def _result_responses(geometry, to_filter, tag, query, k, report):
    """The kept indices of a closed query and its responses (RANK or KEPT if ``report``; a filter's ERROR)."""
    scores = [s for s, _ in query]
    indices = [i for _, i in query]
    if not to_filter:
        best_scores, best = topk(np.array(scores, dtype=np.int64), k, np.array(indices, dtype=np.int64))
        replies = [response(ResponseKind.RANK, tag, s, i, n == len(best) - 1)
                   for n, (s, i) in enumerate(zip(best_scores.tolist(), best.tolist()))] if report else []
        return best.tolist(), replies
    kept, overflow = filter_keep(scores, k, indices, geometry.filter_capacity)
    replies = [response(ResponseKind.KEPT, tag, 0, i, n == len(kept) - 1)
               for n, i in enumerate(kept)] if report else []
    if overflow:
        # The ERROR of a query with more candidates than the unit holds replaces its last KEPT.
        replies[-1:] = [response(ResponseKind.ERROR, tag, 0, Opcode.SCORE.value, 1, ErrorCode.ITEMS)]
    return kept, replies


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
        items, names a unit the geometry does not have or closes a query with ``k`` outside ``1..k_max`` (a top-k
        unit's) or ``1..filter_capacity`` (a filter unit's), or a query is left open at the end.
    """
    g = geometry
    if len(programs) > g.lanes or len(logits) != len(programs) or len(indices) != len(programs):
        raise ValueError(f"Score programs, logits and indices must be given for at most {g.lanes} lanes, "
                         f"not {len(programs)}, {len(logits)} and {len(indices)}")
    outcome = ScoreOutcome(kept=[[] for _ in range(g.holders)])
    for lane, program in enumerate(programs):
        if len(logits[lane]) != len(indices[lane]):
            raise ValueError(f"Lane {lane} has {len(logits[lane])} logits but {len(indices[lane])} indices")
        taken = 0
        open_queries = {}   # holder -> (score, index) pairs of the lane's open query
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
            dest = ScoreDest(score["dest"])
            if dest == ScoreDest.RSP:
                replies += [response(ResponseKind.LOGIT, tag, s, i, score["last"] and n == items - 1)
                            for n, (s, i) in enumerate(batch)]
                continue
            to_filter = dest == ScoreDest.FILTER
            kind, units, k_max = (("filter", g.filters, g.filter_capacity) if to_filter
                                  else ("top-k", g.units, g.k_max))
            unit = score["unit"]
            if not 0 <= unit < units:
                raise ValueError(f"{where} names {kind} unit {unit}; there are {units}")
            holder = g.units + unit if to_filter else unit
            query = open_queries.setdefault(holder, [])
            query += batch
            if not score["last"]:
                continue
            if not 1 <= score["k"] <= k_max:
                raise ValueError(f"{where} closes a {kind} query with k = {score['k']}, not in 1..{k_max}")
            del open_queries[holder]
            kept, answers = _result_responses(g, to_filter, tag, query, score["k"], score["report"])
            replies += answers
            if score["keep"]:
                outcome.kept[holder].append(KeptResult(lane, tag, kept))
        if taken != len(logits[lane]):
            raise ValueError(f"Lane {lane}'s SCOREs take {taken} items, not the {len(logits[lane])} given")
        if open_queries:
            holder = min(open_queries)
            name = f"filter unit {holder - g.units}" if holder >= g.units else f"top-k unit {holder}"
            raise ValueError(f"Lane {lane} leaves a query open on {name}")
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

    Each lane gets ``blocks`` pieces: a SCORE to the response stream, or a query of one to three SCOREs to a random
    top-k or filter unit (responses-stream SCOREs may come between them), closed with a random ``k`` (1, the
    query's size or about it, or the unit's largest), ``keep`` and ``report``. A lane holds at most one unit at a
    time, so the lanes cannot wait on each other in a circle. Tags are distinct (at most ``tags`` SCOREs in all);
    indices are distinct over the whole program, so a kept result is known by its first index.

    Returns
    -------
    (list, list, list)
        Per lane: its SCORE instructions, its logits and its indices.
    """
    g = geometry
    programs, sizes = [], []
    tag = 0

    def instr(lane, items, **fields):
        nonlocal tag
        if tag >= tags:
            raise ValueError(f"A random score program of more than {tags} SCOREs has no distinct tags")
        sizes[lane] += items
        tag += 1
        return score_instr(tag - 1, lane=lane, items=items, **fields)

    def to_rsp(lane):
        return instr(lane, int(rng.integers(1, max_items + 1)), dest=ScoreDest.RSP, last=rng.random() < 0.5)

    for lane in range(g.lanes):
        program = []
        programs.append(program)
        sizes.append(0)
        for _ in range(blocks):
            if rng.random() < 0.3:
                program.append(to_rsp(lane))
                continue
            to_filter = rng.random() < 0.5
            dest, units, k_max = ((ScoreDest.FILTER, g.filters, g.filter_capacity) if to_filter
                                  else (ScoreDest.TOPK, g.units, g.k_max))
            unit = int(rng.integers(0, units))
            parts = rng.integers(1, max_items + 1, int(rng.integers(1, 4))).tolist()
            size = sum(parts)
            k = int(rng.choice([1, k_max, min(k_max, max(1, size + int(rng.integers(-3, 3))))]))
            for number, items in enumerate(parts):
                if number and rng.random() < 0.3:
                    program.append(to_rsp(lane))
                closes = number == len(parts) - 1
                program.append(instr(lane, items, dest=dest, unit=unit, last=closes, k=k if closes else 0,
                                     keep=closes and rng.random() < 0.6, report=closes and rng.random() < 0.6))
    indices = rng.choice(1 << INDEX_BITS, sum(sizes), replace=False)
    logits, lane_indices, start = [], [], 0
    for size in sizes:
        logits.append(_logits(rng, size).astype(np.int64).tolist())
        lane_indices.append(indices[start:start + size].tolist())
        start += size
    return programs, logits, lane_indices
