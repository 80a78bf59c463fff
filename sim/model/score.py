"""Cycle-exact timing models of the chip's score path: the top-k unit (:class:`rpaccel.rtl.topk.TopKUnit`) and
the filter unit (:class:`rpaccel.rtl.filter.FilterUnit`), each on its own streams, and the score unit around them
(:class:`rpaccel.rtl.accel.score.ScoreUnit`) running its lanes' SCORE instructions, as building blocks of the
whole chip's model.

Each function takes what a test bench puts on the unit's ports, the unit's parameters, each input word's
not-before cycle and the stall patterns of both streams, and returns the cycle of every input transfer and every
output transfer with the outputs' values. Cycles are the :class:`~rpaccel.sim.player.Player`'s: cycle 0 is the
first cycle out of reset, a transfer counts in the cycle whose closing edge sees ``valid`` and ``ready``.

The test bench (:mod:`rpaccel.sim.player`'s testbench, the stall patterns of
:func:`~rpaccel.sim.streams.xorshift_stalls`) offers input word ``e`` from the first cycle that is not an input
stall and is at or after both its not-before cycle and the cycle after word ``e - 1`` was taken, and holds it
until it is taken; it takes an output in every cycle that is not an output stall. In the rank space of the free
(not stalled) cycles the first rule is a running maximum, so every run of words that the unit takes as soon as
they come is one ``numpy.maximum.accumulate``, and a result's elements are consecutive free cycles. The models
loop over queries, instructions and passes, never over cycles; they go element by element only where a run is
broken (a filter's output pass behind held credits or a stalled consumer, a sequencer's first items after a
grant, items behind a stalled consumer, several lanes' LOGITs meeting in the response merge).

Top-k unit (:func:`topk_timing`; ``S`` insertion segments, ``L = ceil(log2(lanes))`` merge levels):

1. **Input register** (``TopKUnit.elaborate``: ``head``, ``go``, ``i.ready = ~head_valid | go``). A word taken in
   ``a`` is in the head register in ``a + 1`` and goes into the insertion array (``go``) then, unless it ends a
   query while the unit is ``busy``. So the unit is ready in every cycle except while a query's last word waits
   in the head; the word behind it is taken in the cycle that word goes (the source holds it valid).
2. **One result at a time** (``busy``: set after the ``go`` of a ``last``, cleared after ``done``, the transfer of
   a result's final element). Query ``q``'s last word goes in ``g_q = max(a + 1, D_{q-1} + 1)``, ``D_{q-1}`` the
   cycle the previous result's final element left.
3. **Insertion segments** (``_Segment``: stage A registers the comparisons, stage B inserts and registers the
   spill into the next segment, ``snap`` a cycle after stage B of the ``last``). The end of the query leaves
   segment ``s`` (from 0) with ``snap`` in ``g_q + 2 (s + 1)``: the last segment's ``snap`` (``start``, the bank
   copy) is in ``g_q + 2 S``.
4. **Read-out** (``_read_lane``: ``pop`` is a register equal to ``reading & ~finished & ~spare_valid`` of the
   lane's two-entry :class:`~rpaccel.rtl.lib.slice.RegisterSlice`). The bank's first candidate is popped in
   ``g_q + 2 S + 1`` and presented by the slice in ``g_q + 2 S + 2``; with the slice refilled behind every
   transfer, the next element is always there in the cycle after a transfer.
5. **Merge tree** (:class:`~rpaccel.rtl.topk.TopKMerge`: registered output, ``decide`` when the output is free
   and both heads are known). Each level adds one cycle to the first result; a node decides in the cycle its
   consumer takes its output and the lane slices refill in a cycle, so the root too presents the next element in
   the cycle after each transfer. The first result is presented in ``T_q = g_q + 2 S + 2 + L``
   (``TopKUnit.latency`` after the last word was taken when the unit was not busy).
6. **Result length** (``left``, ``no_second``, the unit's ``left`` and ``done`` that clear the tree): ``R =
   min(k, n)`` elements for ``n`` candidates; one (``keep = 0``) for an empty query or a ``k`` outside ``1 ..
   k_max`` (``error``). Element ``j`` leaves in the ``j``-th free output cycle from ``T_q`` on; ``D_q`` is the
   last of them.

Values: :func:`rpaccel.numeric.topk` per query (the golden model's rule, :func:`rpaccel.sim.golden.topk.unit_model`).

Filter unit (:func:`filter_timing`; a query of ``m`` words holds ``n = min(m, capacity)`` pairs):

7. **Banks** (``FilterUnit``: ``full``, ``in_bank``, ``i.ready = ~full[in_bank]``). Query ``q`` is stored in bank
   ``q % 2``; the bank is full from the cycle after the query's last word was taken until the cycle after the
   ``DONE`` of its selection. So the unit is ready for every word except the first of query ``q``, which waits
   for the cycle after ``DONE_{q-2}``; words beyond the capacity are taken and dropped (``error``).
8. **Start** (the ``select`` FSM: ``WAIT``, ``START``; ``sel`` flips in ``DONE``). ``WAIT`` sees the bank full
   from ``W_q = max(a + 1, DONE_{q-1} + 1)`` (``a``: the query's last word taken) and ``START`` is in ``W_q +
   1``; the first pass, the output pass (``k >= n``: ``take_all``) or ``EMPTY`` (``k = 0``) follows it.
9. **Selection passes** (``COUNT``, ``SCAN``, ``TURN``). A pass reads the ``n`` pairs, one a cycle, and waits for
   the synchronous read's last data (``n + 2`` cycles of ``COUNT``), scans the 256 bins (256 cycles) and turns (one
   cycle): ``n + 259`` cycles. Four score passes; two index passes more when the pairs of the ``k``-th best score
   ``T`` are not all kept (``#{score >= T} > k``); none when ``k >= n``.
10. **Output pass** (``OUTPUT``, ``CreditCounter(4)``, ``DONE``). One pair is read (``issue``) a cycle while a
    credit is free: in a cycle where fewer than four credits are held (``room``, a register of the next cycle's
    count). A read takes a credit; a kept pair gives it back in the cycle its word leaves, a dropped one in the
    cycle after its read (``valid1 & ~keep``). ``DONE`` comes 3 cycles after the last read (``addr == n`` and the
    read pipeline empty), without waiting for the words to leave: the next query's selection overlaps them and
    its output pass shares the credits. ``EMPTY`` writes its word in the first cycle from its entry with a free
    credit (taking the credit only then) and ``DONE`` follows.
11. **Output queue** (``Queue(depth=4, register="read")``). A word written in ``w`` (the cycle after its read) is at
    the queue's head from ``w + 2`` (stored, then loaded into the head register), and after the word ahead of it
    has left; it leaves in the first cycle from then on that the consumer is ready.
12. **Words**: the kept pairs in arrival order (:func:`filter_kept`), ``last`` on the final one, ``error`` with it
    when the query overflowed; ``k = 0`` gives one ``empty`` word.

The output pass is in closed form when it starts with no credit held and no output stall over it; otherwise it
goes pair by pair (a loop over the pass's pairs, not over cycles).

Score unit (:func:`score_timing`: the lanes' SCORE instructions on the chip's
:class:`~rpaccel.rtl.accel.score.ScoreUnit`, its top-k units as :class:`~rpaccel.rtl.topk.TopKUnits` builds them, with
one insertion lane and default segments, and its filter units):

13. **Instructions** (``_Sequencer``: ``cmd.ready = ~active | (take & left == 1)``). The first SCORE is taken when it
    comes; each next one in the cycle of the previous one's last item, or when it comes if later. Items are taken
    from the cycle after their SCORE.
14. **Items** (``take = active & logits.valid & index.valid & <the destination's slice ready>``). An item is taken
    at the latest of its logit word and its index coming, the cycle after the item before, and room in the
    destination's register slice.
15. **Register slices** (:class:`~rpaccel.rtl.lib.slice.RegisterSlice`: ``i.ready = ~spare_valid``). An entry enters
    no earlier than the cycle after the entry two ahead of it left, and is presented from the cycle after it entered
    and after the entry ahead of it left. A LOGIT passes the lane's response slice, the response merge
    (:class:`~rpaccel.rtl.accel.controller.ResponseMerge`; alone there, it is taken whenever the merge's own slice
    has room: rule 21 for several sources) and that slice, and leaves in the first cycle the consumer is ready.
16. **Grant** (``ScoreUnit._feed``: ``held``, ``owner``, granted when ``~held & asking``; rule 22 for a unit several
    lanes use). The lane's element for a unit asks from the cycle its slice presents it, and from the cycle
    after the holder's previous query's last element went in; the grant registers ``held``, so the query's first
    element goes in a cycle later, and not before the unit is ready for it (the top-k unit's head free, rule 1; the
    filter's bank, rule 7). The following elements of the query go in as their slice presents them (the units are
    always ready within a query).
17. **Closing SCOREs** (``CLOSING_DEPTH``: a read-registered ``Queue`` of 2 per holder, the port's guard
    ``closing.w_rdy | ~head.last``). A query's last element goes in no earlier than the cycle after the last
    result element of the holder's query two before it was taken (which reads its closing SCORE).
18. **Kept results** (``ScoreUnit._result``, ``_filter_result``: ``go = have & allowed``, ``allowed = ~keep |
    pending != 2``). Without ``report`` a result's elements are taken as the unit presents them; a kept result
    ``r`` (from 0) of a holder only from the cycle after the ``release`` pulse of its kept result ``r - 2``. A top-k
    result's elements then leave one a cycle from ``max(T_q, gate)`` (rules 5 and 6); a filter's words leave the
    output queue no earlier than the gate (rules 10 and 11).
19. **Results done** (``_kept``: ``results_done`` increments with the last element's ``go``). The holder's count
    shows a kept result from the cycle after its last element was taken; the fetcher's ``release`` of it (as the
    test bench gives it: ``release_delay`` cycles after it shows, and after the previous pulse) frees its bank.
20. **Reported results** (the holder's ``rank`` slice, ``go`` also waiting for its room; ``failed``: an overflowing
    filter query's last word). A RANK, KEPT or ERROR response enters its holder's slice in the cycle the unit puts
    out its element; a LOGIT enters its lane's slice in the cycle its item is taken. With a single source of
    responses and the consumer always ready, the merge takes each in the cycle its slice presents it: it leaves two
    cycles after it entered.
21. **The response merge** (``ResponseMerge``: the first valid input from the one after ``last``, the input taken
    last, 0 after reset; its slice). In each cycle the merge's slice has room, it takes the head of the first
    source presenting one in that round-robin order (the lanes, then the holders); a source whose slice is full
    waits for the merge to take its entry two ahead (a lane's sequencer stops taking items for the response
    stream; a top-k unit stops putting out its result, which delays its ``done``, rule 2; a filter unit's output
    queue holds its words, which holds its credits, rule 10). With several sources, or reported results behind a
    stalled consumer, the model runs the sequencers, the reporting units and the merge in time order, one step per
    response. A query closed while the holder's previous result is still being reported gets its result when that
    one has ended. Not modelled yet, refused with :class:`ValueError`: a lane that waits (for a grant, for the
    result two before its query's end, rule 17, or for its previous query's result to start) and meanwhile would
    have sent the merge LOGITs or asked for a unit earlier than a decision the model has already made without
    them.
22. **Units shared by lanes** (``ScoreUnit._feed``: ``_first_from(requests, pointer)``, ``pointer`` the lane after
    the one granted, 0 after reset). A unit that several lanes use is granted in the first cycle from the one after
    its previous owner's last element went in in which a lane asks; of the lanes asking then, the first from
    ``pointer`` on. The model takes the grants in time order with the merge's decisions, the earliest first.
"""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ...host.driver.device import NO_CYCLE
from ...numeric import topk
from ...rtl.accel.isa import ErrorCode, Opcode, ResponseKind, ScoreDest
from ...rtl.accel.score import CLOSING_DEPTH
from ...rtl.topk import DEFAULT_SEGMENT, segment_sizes

__all__ = ["READ_OUT", "FilterQuery", "FilterTiming", "FreeCycles", "ScoreTiming", "TopKTiming", "best", "filter_kept",
           "filter_timing", "score_timing", "topk_timing"]

#: Cycles from the last insertion segment's ``snap`` to the first result presented by a lane (rule 4): the
#: ``pop`` register, the lane's register slice.
READ_OUT = 2


class FreeCycles:
    """The cycles a stream port may transfer in, as ranks: the ``r``-th free cycle and the rank of a cycle.

    Parameters
    ----------
    stalls : array_like of bool, optional
        ``True`` for a stalled cycle, from cycle 0 (the pattern of :func:`~rpaccel.sim.streams.xorshift_stalls`);
        cycles beyond it are free. ``None``: no stalls.
    """

    def __init__(self, stalls=None):
        stalls = np.zeros(0, dtype=bool) if stalls is None else np.asarray(stalls, dtype=bool)
        if stalls.ndim != 1:
            raise ValueError(f"A stall pattern must be 1-D, not of shape {stalls.shape}")
        self.length = len(stalls)
        self.free = np.flatnonzero(~stalls).astype(np.int64)
        # before[c]: free cycles before cycle c, for c in 0 .. length.
        self.before = np.concatenate([[0], np.cumsum(~stalls)]).astype(np.int64)

    def rank(self, cycles):
        """The rank of the first free cycle at or after each of ``cycles`` (a negative cycle counts as 0)."""
        cycles = np.maximum(np.asarray(cycles, dtype=np.int64), 0)
        if not self.length:
            return cycles
        inside = np.minimum(cycles, self.length)
        return self.before[inside] + (cycles - inside)

    def cycle(self, ranks):
        """The free cycle of each rank in ``ranks``."""
        ranks = np.asarray(ranks, dtype=np.int64)
        total = len(self.free)
        if not self.length:
            return ranks
        inside = self.free[np.minimum(ranks, total - 1)] if total else np.zeros_like(ranks)
        return np.where(ranks < total, inside, self.length + ranks - total)

    def rank_of(self, cycle):
        """:meth:`rank` of one cycle, as an ``int``."""
        cycle = max(int(cycle), 0)
        return int(self.before[cycle]) if cycle < self.length else int(self.before[-1]) + cycle - self.length

    def cycle_of(self, rank):
        """:meth:`cycle` of one rank, as an ``int``."""
        rank, total = int(rank), len(self.free)
        return int(self.free[rank]) if rank < total else self.length + rank - total

    def first(self, cycle):
        """The first free cycle at or after ``cycle``."""
        return self.cycle_of(self.rank_of(cycle))


def _accept_run(offer_ranks, floor_rank, free):
    """Cycles a unit that is always ready takes a run of words in: word ``j`` is offered from rank ``max(
    offer_ranks[j], rank of word j - 1 + 1)``, word 0 from ``max(offer_ranks[0], floor_rank)``."""
    if not len(offer_ranks):
        return np.zeros(0, dtype=np.int64)
    steps = np.arange(len(offer_ranks), dtype=np.int64)
    start = offer_ranks - steps
    start[0] = max(start[0], floor_rank)
    return free.cycle(np.maximum.accumulate(start) + steps)


@dataclass(frozen=True)
class TopKTiming:
    """What :func:`topk_timing` returns.

    Attributes
    ----------
    accepted : numpy.ndarray
        ``int64``, the cycle each input element was taken in.
    output : numpy.ndarray
        ``int64``, the cycle each output element left in.
    results : dict
        The output elements as columns ``score, index, keep, last, error`` (``int64`` arrays).
    elements : numpy.ndarray
        ``int64``, the input elements of each query.
    """

    accepted: np.ndarray
    output: np.ndarray
    results: dict
    elements: np.ndarray

    @property
    def cycles(self):
        """Cycles until the last transfer: its cycle + 1."""
        last = [int(a[-1]) for a in (self.accepted, self.output) if len(a)]
        return max(last) + 1 if last else 0


def best(scores, k, indices):
    """:func:`rpaccel.numeric.topk` by partition: the ``k`` best ``(score, index)`` pairs, best first.

    One ``int64`` key per candidate (the score above the complemented index) is partitioned around the ``k``-th
    best and only the ``k`` best are sorted: equal keys are equal pairs, so the result is the golden model's.
    """
    scores, indices = np.asarray(scores, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    if len(scores) <= k:
        return topk(scores, k, indices)
    keys = _keys(scores, indices)
    chosen = np.argpartition(keys, len(keys) - k)[len(keys) - k:]
    chosen = chosen[np.argsort(keys[chosen], kind="stable")[::-1]]
    return scores[chosen], indices[chosen]


def _query_elements(query, lanes, separate_end):
    """Input elements of ``query`` as :func:`rpaccel.sim.golden.topk.query_elements` frames them."""
    n = len(query.scores)
    batches = query.batches if query.batches is not None else [n]
    if sum(batches) != n or any(b < 0 for b in batches):
        raise ValueError(f"Sub-batch sizes {batches} do not add up to the query's {n} candidates")
    count = sum(-(-b // lanes) for b in batches)
    return count + 1 if separate_end or count == 0 else count


def topk_timing(queries, *, k_max, lanes=1, segment=None, separate_end=False, not_before=None, in_stalls=None,
                out_stalls=None):
    """The transfers of a :class:`~rpaccel.rtl.topk.TopKUnit` streaming ``queries`` (rules in the module doc).

    Parameters
    ----------
    queries : list of rpaccel.sim.golden.topk.Query
        The queries, framed into input elements as :func:`~rpaccel.sim.golden.topk.query_elements` does (with
        ``separate_end``); a ``k`` outside ``1 .. k_max`` is answered with an error element.
    k_max, lanes, segment :
        The unit's parameters (``segment`` defaults as the unit's does).
    not_before : array_like of int, optional
        Per input element, the cycle before which it is not offered (:data:`~rpaccel.host.driver.device.NO_CYCLE`
        for none); default none.
    in_stalls, out_stalls : array_like of bool, optional
        Per cycle from 0, whether the source idles (input) or the consumer is not ready (output); see
        :class:`FreeCycles`.

    Returns
    -------
    TopKTiming
    """
    segment = min(k_max, DEFAULT_SEGMENT) if segment is None else segment
    latency = 2 * len(segment_sizes(k_max, segment)) + READ_OUT + (lanes - 1).bit_length()
    counts = np.array([_query_elements(q, lanes, separate_end) for q in queries], dtype=np.int64)
    total = int(counts.sum())
    nb = np.full(total, NO_CYCLE, dtype=np.int64) if not_before is None else np.asarray(not_before, np.int64)
    if nb.shape != (total,):
        raise ValueError(f"Give one not-before cycle per input element ({total}), not {nb.shape}")
    source, sink = FreeCycles(in_stalls), FreeCycles(out_stalls)
    offer = source.rank(nb)
    accepted = np.empty(total, dtype=np.int64)
    outputs, columns = [], {name: [] for name in ("score", "index", "keep", "last", "error")}
    first, went, done = 0, -1, -1          # first element of the query; the last `go` and `done` so far
    for query, count in zip(queries, counts.tolist(), strict=True):
        end = first + count
        # Rule 1: the query's first word waits for the head to be free (the previous last's `go`); the rest
        # follow as they come.
        floor = source.rank_of(accepted[first - 1] + 1) if first else 0
        accepted[first] = max(source.cycle_of(max(int(offer[first]), floor)), went)
        accepted[first + 1:end] = _accept_run(offer[first + 1:end], source.rank_of(accepted[first] + 1), source)
        went = max(int(accepted[end - 1]) + 1, done + 1)                          # rule 2
        # Rules 3 to 6.
        n, k = len(query.scores), query.k
        error = not 1 <= int(k) <= k_max
        if error or n == 0:
            scores = indices = np.zeros(1, dtype=np.int64)
            keep, length = 0, 1
        else:
            scores, indices = best(query.scores, k, query.indices)
            keep, length = 1, len(scores)
        cycles = sink.cycle(sink.rank_of(went + latency) + np.arange(length, dtype=np.int64))
        done = int(cycles[-1])
        outputs.append(cycles)
        columns["score"].append(scores)
        columns["index"].append(indices)
        columns["keep"].append(np.full(length, keep, dtype=np.int64))
        last = np.zeros(length, dtype=np.int64)
        last[-1] = 1
        columns["last"].append(last)
        columns["error"].append(np.full(length, int(error), dtype=np.int64))
        first = end
    return TopKTiming(accepted=accepted, output=_join(outputs), results={k: _join(v) for k, v in columns.items()},
                      elements=counts)


def _join(parts):
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class FilterQuery:
    """One query of a filter unit: its candidates in arrival order and ``k``.

    Attributes
    ----------
    scores, indices : numpy.ndarray
        int32 scores and candidate indices (at least one candidate: every input word of the unit is one).
    k : int
        How many to keep (``0``: the unit answers with one ``empty`` word).
    """

    scores: np.ndarray
    indices: np.ndarray
    k: int


@dataclass(frozen=True)
class FilterTiming:
    """What :func:`filter_timing` returns.

    Attributes
    ----------
    accepted : numpy.ndarray
        ``int64``, the cycle each input word was taken in.
    output : numpy.ndarray
        ``int64``, the cycle each output word left in.
    results : dict
        The output words as columns ``index, last, empty, error`` (``int64`` arrays).
    passes : numpy.ndarray
        ``int64``, the selection passes of each query (0, 4 or 6).
    done : numpy.ndarray
        ``int64``, each query's ``DONE`` cycle (its bank is free from the next cycle).
    """

    accepted: np.ndarray
    output: np.ndarray
    results: dict
    passes: np.ndarray
    done: np.ndarray

    @property
    def cycles(self):
        """Cycles until the last transfer: its cycle + 1."""
        last = [int(a[-1]) for a in (self.accepted, self.output) if len(a)]
        return max(last) + 1 if last else 0


def filter_kept(scores, indices, k):
    """Which of a held query's candidates a filter unit keeps: a boolean mask in arrival order.

    The candidates of :func:`rpaccel.numeric.topk` (all of them when ``k >= n``); of equal ``(score, index)``
    pairs, the first ones (the ``(T, I)`` count of the output pass, ``taken_at_i``).
    """
    n = len(scores)
    if k >= n:
        return np.ones(n, dtype=bool)
    keys = _keys(scores, indices)
    threshold = np.partition(keys, n - k)[n - k]
    above = keys > threshold
    ties = keys == threshold
    return above | (ties & (np.cumsum(ties) <= k - int(above.sum())))


def _keys(scores, indices):
    """One ``int64`` per candidate, ordered as the candidates rank: the score above the complemented index."""
    scores, indices = np.asarray(scores, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    width = max(int(indices.max()).bit_length(), 1)
    return (scores << width) | ((1 << width) - 1 - indices)


class _OutputQueue:
    """The filter's output side (rules 10 and 11 of the module doc): the credits held, each with the cycle it is
    given back, and the queue's words in order."""

    def __init__(self, sink):
        self.sink = sink
        self.releases = []          # the cycles credits still held are given back in (at most CREDITS + 1)
        self.left = -1              # the last word's transfer

    def _leave(self, written, gate):
        """A word written in ``written`` leaves in the first free output cycle from ``written + HEAD`` on, after
        the word before it, and not before ``gate``."""
        self.left = self.sink.first(max(written + HEAD, self.left + 1, gate))
        return self.left

    def _room(self, t):
        """The first cycle from ``t`` on in which fewer than ``CREDITS`` credits are held."""
        held = sorted(r for r in self.releases if r >= t)
        if len(held) >= CREDITS:
            t = held[-CREDITS] + 1
            held = [r for r in held if r >= t]
        self.releases = held
        return t

    def pass_(self, start, kept, gate=0):
        """The output pass from ``start`` over the held pairs (``kept``: which leave, not before ``gate``);
        returns the last issue's cycle and the kept words' transfers."""
        n = len(kept)
        settled = max(self.releases, default=-1) < start and max(self.left, gate - 1) < start + HEAD + 1
        if settled and self.sink.rank_of(start + n + HEAD + 1) - self.sink.rank_of(start + HEAD + 1) == n:
            # No credit held, no word ahead, no output stall over the pass: one issue a cycle, each kept word
            # leaving HEAD + 1 cycles after its issue.
            out = start + np.flatnonzero(kept).astype(np.int64) + HEAD + 1
            if len(out):
                self.left = int(out[-1])
            self.releases = [int(t) for t in out[-CREDITS:]] + ([start + n] if n and not kept[-1] else [])
            return start + n - 1, out
        out, t = [], start
        for keep in kept.tolist():
            t = self._room(t)
            self.releases.append(self._leave(t + 1, gate) if keep else t + 1)
            if keep:
                out.append(self.left)
            t += 1
        return t - 1, np.array(out, dtype=np.int64)

    def steps(self, start, kept, gate, shown, source, merge):
        """:meth:`pass_` for words some of which are reported through the shared response merge (rule 21): a
        generator that waits for the merge to make room in the holder's slice for each ``shown`` word (one per
        kept pair)."""
        entries, granted = merge.entries[source], merge.granted[source]
        out, t = [], start
        for keep in kept.tolist():
            t = self._room(t)
            if keep:
                leave = max(t + 1 + HEAD, self.left + 1, gate)
                reported = bool(shown[len(out)])
                if reported:
                    while len(entries) >= 2 and len(granted) <= len(entries) - 2:
                        yield
                    leave = max(leave, granted[len(entries) - 2] + 1 if len(entries) >= 2 else NEVER)
                self.left = self.sink.first(leave)
                if reported:
                    merge.enter(source, self.left)
                out.append(self.left)
            self.releases.append(self.left if keep else t + 1)
            t += 1
        return t - 1, np.array(out, dtype=np.int64)

    def empty(self, t, gate=0):
        """The ``EMPTY`` state entered in ``t``: its word is written in the first cycle from ``t`` on with a free
        credit. Returns that cycle and the cycle the word leaves."""
        t = self._room(t)
        self.releases.append(self._leave(t, gate))
        return t, self.left


#: Credits of the filter's output queue (``CreditCounter(4)``) and cycles from a word's write to its presence at
#: the read-registered queue's head.
CREDITS, HEAD = 4, 2
#: A selection pass: ``n + 2`` cycles of COUNT, 256 of SCAN, one of TURN.
PASS_EXTRA = 2 + 256 + 1


class _Filter:
    """A filter unit's selection side between queries (rules 8 to 12): the ``DONE`` of every query so far, the
    ``select`` FSM's last ``DONE`` and the output queue."""

    def __init__(self, capacity, sink):
        self.capacity = capacity
        self.queue = _OutputQueue(sink)
        self.done = []
        self.finished = -1

    def bank_free(self, pending=False):
        """The first cycle the next query's first word may be taken in (rule 7); ``pending``: the last query's
        output pass is still running (its ``DONE`` is not known, and not needed)."""
        behind = 2 - pending
        return self.done[-behind] + 1 if len(self.done) >= behind else 0

    def plan(self, query, count, taken):
        """Rules 8, 9 and 12 for ``query`` (``k >= 1``, ``count`` words, the last taken in ``taken``): the output
        pass's first cycle, the pairs kept, the passes and the words."""
        start = max(taken + 1, self.finished + 1) + 1
        n, k = min(count, self.capacity), int(query.k)
        scores, indices = np.asarray(query.scores[:n], np.int64), np.asarray(query.indices[:n], np.int64)
        if k >= n:
            passes = 0
        else:
            threshold = np.partition(scores, n - k)[n - k]
            passes = 6 if int((scores >= threshold).sum()) > k else 4
        kept = filter_kept(scores, indices, k)
        last = np.zeros(int(kept.sum()), dtype=np.int64)
        last[-1] = 1
        words = {"index": indices[kept], "last": last, "empty": np.zeros(len(last), dtype=np.int64),
                 "error": last * int(count > self.capacity)}
        return start + 1 + passes * (n + PASS_EXTRA), kept, passes, words

    def close(self, query, count, taken, gate=0):
        """Select ``query`` (``count`` words, the last taken in ``taken``); its words may not leave before
        ``gate``. Returns the selection passes, the words' transfers and the words' columns."""
        if int(query.k) == 0:
            start = max(taken + 1, self.finished + 1) + 1
            written, left = self.queue.empty(start + 1, gate)
            cycles = np.array([left], dtype=np.int64)
            self.finished = written + 1
            self.done.append(self.finished)
            error = int(count > self.capacity)
            return 0, cycles, {name: np.array(value, dtype=np.int64) for name, value in
                               {"index": [0], "last": [1], "empty": [1], "error": [error]}.items()}
        first, kept, passes, words = self.plan(query, count, taken)
        last_issue, cycles = self.queue.pass_(first, kept, gate)
        self.finished = last_issue + 3
        self.done.append(self.finished)
        return passes, cycles, words

    def reported(self, first, kept, gate, shown, source, merge):
        """The output pass of a planned query with reported words (:meth:`_OutputQueue.steps`), a generator that
        returns the words' transfers."""
        last_issue, cycles = yield from self.queue.steps(first, kept, gate, shown, source, merge)
        self.finished = last_issue + 3
        self.done.append(self.finished)
        return cycles


def filter_timing(queries, *, capacity, not_before=None, in_stalls=None, out_stalls=None):
    """The transfers of a :class:`~rpaccel.rtl.filter.FilterUnit` of ``capacity`` selecting ``queries`` (rules in
    the module doc).

    Parameters
    ----------
    queries : list of FilterQuery
        The queries, one input word per candidate, ``last`` and ``k`` on the final one.
    capacity : int
        The unit's capacity (candidates beyond it are dropped and the result flagged ``error``).
    not_before, in_stalls, out_stalls :
        As for :func:`topk_timing`, per input word.

    Returns
    -------
    FilterTiming
    """
    counts = np.array([len(q.scores) for q in queries], dtype=np.int64)
    if (counts == 0).any():
        raise ValueError(f"Filter query {int(np.argmin(counts))} has no candidate: every input word is one")
    total = int(counts.sum())
    nb = np.full(total, NO_CYCLE, dtype=np.int64) if not_before is None else np.asarray(not_before, np.int64)
    if nb.shape != (total,):
        raise ValueError(f"Give one not-before cycle per input word ({total}), not {nb.shape}")
    source = FreeCycles(in_stalls)
    offer = source.rank(nb)
    accepted = np.empty(total, dtype=np.int64)
    unit = _Filter(capacity, FreeCycles(out_stalls))
    outputs, passes = [], []
    columns = {name: [] for name in ("index", "last", "empty", "error")}
    first = 0
    for query, count in zip(queries, counts.tolist(), strict=True):
        end = first + count
        # Rule 7: a query's first word waits for its bank, freed after the DONE of the query two before.
        floor = source.rank_of(accepted[first - 1] + 1) if first else 0
        accepted[first] = max(source.cycle_of(max(int(offer[first]), floor)), unit.bank_free())
        accepted[first + 1:end] = _accept_run(offer[first + 1:end], source.rank_of(accepted[first] + 1), source)
        count_passes, cycles, words = unit.close(query, count, int(accepted[end - 1]))
        passes.append(count_passes)
        outputs.append(cycles)
        for name, column in words.items():
            columns[name].append(column)
        first = end
    return FilterTiming(accepted=accepted, output=_join(outputs), results={k: _join(v) for k, v in columns.items()},
                        passes=np.array(passes, dtype=np.int64), done=np.array(unit.done, dtype=np.int64))


@dataclass(frozen=True)
class ScoreTiming:
    """What :func:`score_timing` returns.

    Attributes
    ----------
    accepted : list of numpy.ndarray
        Per lane, ``int64``: the cycle each SCORE instruction was taken from ``cmd``.
    taken : list of numpy.ndarray
        Per lane, ``int64``: the cycle each item (logit word and index) was taken.
    responses : numpy.ndarray
        ``int64``, the cycle each response left on ``rsp``.
    values : dict
        The responses as columns ``kind, tag, last, code, index, score`` (``int64`` arrays; ``kind`` and ``code``
        the :class:`~rpaccel.rtl.accel.isa.ResponseKind` and :class:`~rpaccel.rtl.accel.isa.ErrorCode` values).
    results_done : dict
        ``{holder: int64 array}``: the first cycle ``results_done`` counts each kept result of the holder.
    released : dict
        ``{holder: int64 array}``: the cycle of each ``release`` pulse.
    """

    accepted: np.ndarray
    taken: np.ndarray
    responses: np.ndarray
    values: dict
    results_done: dict
    released: dict


def _steady(not_before, take):
    """Cycles a run of items is taken in when nothing holds them up but their coming: one a cycle after ``take``."""
    steps = np.arange(len(not_before), dtype=np.int64)
    start = np.asarray(not_before, dtype=np.int64) - steps
    start[0] = max(int(start[0]), take + 1)
    return np.maximum.accumulate(start) + steps


#: A cycle before every event (an empty history).
NEVER = -(1 << 40)


#: Entries of a holder's queue of closing SCOREs (:data:`rpaccel.rtl.accel.score.CLOSING_DEPTH`, rule 17).
CLOSING = CLOSING_DEPTH


class _Slice:
    """A :class:`~rpaccel.rtl.lib.slice.RegisterSlice` as the cycles its last two entries left in (rule 15)."""

    def __init__(self):
        self.left = [NEVER, NEVER]

    def room(self):
        """The first cycle an entry may enter: after the entry two ahead of it left."""
        return self.left[0] + 1

    def valid(self, entered):
        """The first cycle an entry that entered in ``entered`` is presented: after the entry ahead of it left."""
        return max(entered + 1, self.left[1] + 1)

    def leave(self, cycle):
        self.left = [self.left[1], cycle]


def score_timing(geometry, programs, logits, indices, *, cmd_not_before=None, logits_not_before=None,
                 index_not_before=None, rsp_stalls=None, release_delay=None):
    """The transfers of a :class:`~rpaccel.rtl.accel.score.ScoreUnit` running each lane's SCORE ``programs``
    (rules 13 to 20 of the module doc).

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    programs : list of list of dict
        Per lane (from lane 0; lanes not given are idle), its SCORE instructions
        (:func:`rpaccel.sim.golden.score.score_instr`). A lane closes a query on a top-k or filter unit before it
        opens another one; what is not modelled yet is in rule 21.
    logits, indices : list of sequence of int
        Per lane, its items' logits and candidate indices, in order.
    cmd_not_before, logits_not_before, index_not_before : list of array_like of int, optional
        Per lane, the not-before cycles of each instruction, logit word and index (:data:`NO_CYCLE` for none).
    rsp_stalls : array_like of bool, optional
        The consumer's stalls on ``rsp`` (:class:`FreeCycles`).
    release_delay : int, optional
        The fetcher's ``release`` of each kept result: a pulse ``release_delay`` cycles after ``results_done`` counts
        it, and after the previous pulse. ``None``: never released (a holder's third kept result then waits
        forever, which raises :class:`ValueError`).

    Returns
    -------
    ScoreTiming

    Raises
    ------
    ValueError
        On a program the model does not cover (the message says what), or inputs that do not fit the programs.
    """
    g = geometry
    if len(programs) > g.lanes or len(logits) != len(programs) or len(indices) != len(programs):
        raise ValueError(f"Give programs, logits and indices for at most {g.lanes} lanes, not {len(programs)}, "
                         f"{len(logits)} and {len(indices)}")
    sink = FreeCycles(rsp_stalls)
    talking = {lane for lane, program in enumerate(programs) for instr in program
               if ScoreDest(instr["score"]["dest"]) == ScoreDest.RSP}
    reporting = _reporting(g, programs)
    users = defaultdict(set)
    for lane, program in enumerate(programs):
        for instr in program:
            dest, unit = ScoreDest(instr["score"]["dest"]), instr["score"]["unit"]
            if dest != ScoreDest.RSP:
                users[g.units + unit if dest == ScoreDest.FILTER else unit].add(lane)
    shared = {holder for holder, lanes in users.items() if len(lanes) > 1}
    stalled = len(sink.free) < sink.length
    merge = _Merge(g, shared) if len(talking) + len(reporting) > 1 or shared or (reporting and stalled) else None
    units = _Holders(g, release_delay, merge)
    lanes = []
    for lane, program in enumerate(programs):

        def given(cycles, what, count, lane=lane):
            array = (np.full(count, NO_CYCLE, dtype=np.int64) if cycles is None or cycles[lane] is None
                     else np.asarray(cycles[lane], dtype=np.int64))
            if array.shape != (count,):
                raise ValueError(f"Give lane {lane} one not-before cycle per {what} ({count}), not {array.shape}")
            return np.maximum(array, 0)

        total = sum(instr["score"]["items"] for instr in program)
        if len(logits[lane]) != total or len(indices[lane]) != total:
            raise ValueError(f"Lane {lane}'s program takes {total} items: give as many logits and indices, not "
                             f"{len(logits[lane])} and {len(indices[lane])}")
        lanes.append(_score_lane(lane, program, np.asarray(logits[lane], dtype=np.int64),
                                 np.asarray(indices[lane], dtype=np.int64), given(cmd_not_before, "SCORE",
                                 len(program)).tolist(), np.maximum(given(logits_not_before, "logit", total),
                                 given(index_not_before, "index", total)), units, sink, merge))
    lanes = merge.run(lanes, sink, units) if merge is not None else [_finish(lane) for lane in lanes]
    sources = [(cycles, values) for _, _, cycles, values in lanes if len(cycles)] + units.reports
    if merge is not None:
        # Rule 21: the lanes' LOGITs and the top-k units' RANKs through the merge's round-robin choice, in the order
        # it took them.
        responses, values = merge.responses, merge.order(lanes)
    elif sources:
        # Rule 20: a single source of responses (a lane's LOGITs, or the results of one holder, one after the
        # other, with the consumer always ready).
        responses = np.concatenate([cycles for cycles, _ in sources])
        values = {name: np.concatenate([columns[name] for _, columns in sources]).astype(np.int64)
                  for name in RESPONSE_FIELDS}
    else:
        responses, values = np.zeros(0, dtype=np.int64), {name: np.zeros(0, dtype=np.int64) for name in RESPONSE_FIELDS}
    return ScoreTiming(accepted=[accepted for accepted, _, _, _ in lanes], taken=[taken for _, taken, _, _ in lanes],
                       responses=responses, values=values,
                       results_done={h: np.array(c, dtype=np.int64) for h, c in units.done_at.items()},
                       released={h: np.array(c, dtype=np.int64) for h, c in units.released.items()})


def _reporting(geometry, programs):
    """The holders whose results put out responses: reported queries, and filter queries beyond the capacity."""
    g, holders = geometry, set()
    for program in programs:
        open_items = defaultdict(int)
        for instr in program:
            score = instr["score"]
            dest = ScoreDest(score["dest"])
            if dest == ScoreDest.RSP:
                continue
            holder = g.units + score["unit"] if dest == ScoreDest.FILTER else score["unit"]
            open_items[holder] += score["items"]
            if score["last"]:
                if score["report"] or (dest == ScoreDest.FILTER and open_items[holder] > g.filter_capacity):
                    holders.add(holder)
                open_items[holder] = 0
    return holders


def _finish(generator):
    """The return value of a lane's sequencer that shares the merge with no other lane (it never yields)."""
    try:
        next(generator)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("A lane alone on the response merge waited for it")


class _Merge:
    """The decisions the lanes share, taken in time order (rules 21 and 22): the response merge
    (:class:`~rpaccel.rtl.accel.controller.ResponseMerge`) of the lanes' LOGITs and the top-k units' RANKs, with each
    source's entries into its slice, the merge's grants, its own slice and the consumer; and the grants of the units
    several lanes use.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
        The merge's inputs are every lane of the chip, then every holder: its round-robin cycle.
    shared : set of int
        The holders several lanes use.
    """

    def __init__(self, geometry, shared):
        self.lanes, self.sources, self.shared = geometry.lanes, geometry.lanes + geometry.holders, shared
        self.requests = defaultdict(dict)    # per shared holder, the lanes asking for it and from which cycle
        self.held = set()                    # the shared holders granted to a lane whose query is open
        self.pointer = defaultdict(int)      # per shared holder, its grant's round-robin pointer, 0 after reset
        self.decided = defaultdict(lambda: NEVER)   # per shared holder, its last grant
        self.unit_grants = {}                # (holder, lane): the grant's cycle, until the lane takes it
        self.entries = defaultdict(list)     # per source, the cycle each response entered its slice
        self.granted = defaultdict(list)     # per source, the cycle the merge took each of them
        self.columns = defaultdict(list)     # per holder source, the columns of each of its results
        self.generators = {}                 # the sources still running
        self.done = {}                       # what each lane's sequencer returned
        self.grants = []                     # (source, entry) in the order the merge took them
        self.moment = NEVER                  # the merge's last decision
        self.woken = False                   # a reported result has left: lanes may go on
        self.responses = None

    def enter(self, source, cycle):
        """A response of ``source`` enters its slice in ``cycle``."""
        if cycle + 1 <= self.moment:
            raise ValueError(f"A response of merge input {source} is presented in cycle {cycle + 1}, before the "
                             f"merge's decision of cycle {self.moment} that the model has made without it (a lane "
                             "waited for a reported result and went on with LOGITs): not modelled yet")
        self.entries[source].append(cycle)

    def ask(self, holder, lane, cycle):
        """Lane ``lane`` asks for shared ``holder`` from ``cycle`` (rule 22)."""
        if cycle <= self.decided[holder]:
            raise ValueError(f"Lane {lane} asks for holder {holder} from cycle {cycle}, before the grant of cycle "
                             f"{self.decided[holder]} that the model has made without it: not modelled yet")
        self.requests[holder][lane] = cycle

    def start(self, source, generator, columns):
        """A reported result of holder ``source`` starts (:meth:`_Holders._ranks`)."""
        self.columns[source].append(columns)
        self.generators[source] = generator
        self._resume(source)

    def _resume(self, source):
        generator = self.generators[source]
        try:
            next(generator)
        except StopIteration as stop:
            # (A holder's result that ends may start the holder's next one, under the same source.)
            if self.generators.get(source) is generator:
                del self.generators[source]
            self.done[source] = stop.value

    def _wake(self, lanes):
        while self.woken:
            self.woken = False
            for lane in range(lanes):
                if lane in self.generators:
                    self._resume(lane)

    def run(self, sequencers, sink, units):
        """Run the lanes' ``sequencers`` (generators of :func:`_score_lane`), the reported results and the merge in
        time order; returns what each sequencer returns."""
        lanes, left, last = len(sequencers), [], 0       # `last`: the merge's register, 0 after reset
        self.generators.update(enumerate(sequencers))
        for lane in range(lanes):
            self._resume(lane)
        self._wake(lanes)
        while True:
            heads = {}
            for source, entries in self.entries.items():
                granted = self.granted[source]
                if len(entries) > len(granted):
                    heads[source] = max(entries[len(granted)] + 1, granted[-1] + 1 if granted else NEVER)
            # Rule 22: a free shared holder's grant, in the first cycle a lane asks and the holder is free.
            grants = {holder: max(min(asks.values()), units.free[holder], self.decided[holder] + 1)
                      for holder, asks in self.requests.items() if asks and holder not in self.held}
            if not heads and not grants:
                break
            if grants and (not heads or min(grants.values()) <= self._next(heads, left)):
                holder = min(grants, key=grants.get)
                t = grants[holder]
                asks = self.requests[holder]
                lane = min((lane for lane, cycle in asks.items() if cycle <= t),
                           key=lambda lane: (lane - self.pointer[holder]) % self.lanes)
                del asks[lane]
                self.pointer[holder] = (lane + 1) % self.lanes
                self.decided[holder] = t
                self.held.add(holder)
                self.unit_grants[holder, lane] = t
                self._resume(lane)
                self._wake(lanes)
                continue
            # The earliest cycle after the last decision in which a head is presented and the merge's slice has
            # room; the first of the heads presented then, from the source after the last one taken.
            self.moment = t = self._next(heads, left)
            source = min((s for s, v in heads.items() if v <= t), key=lambda s: (s - last - 1) % self.sources)
            self.granted[source].append(t)
            self.grants.append((source, len(self.granted[source]) - 1))
            left.append(sink.first(max(t + 1, left[-1] + 1 if left else 0)))
            last = source
            if source in self.generators:
                self._resume(source)
            self._wake(lanes)
        if len(self.generators):
            raise AssertionError("A source waits for the response merge with nothing in it")
        self.responses = np.array(left, dtype=np.int64)
        return [self.done[lane] for lane in range(lanes)]

    def _next(self, heads, left):
        """The merge's next decision: the earliest cycle after its last one in which a head is presented and its
        slice has room."""
        return max(min(heads.values()), left[-2] + 1 if len(left) >= 2 else 0, self.moment + 1)

    def order(self, lanes):
        """The responses' columns in the order the merge took them."""
        columns = {lane: values for lane, (_, _, _, values) in enumerate(lanes)}
        columns.update({source: {name: np.concatenate([c[name] for c in results]) for name in RESPONSE_FIELDS}
                        for source, results in self.columns.items()})
        sources = sorted(columns)
        starts = dict(zip(sources, np.cumsum([0] + [len(columns[s]["kind"]) for s in sources]).tolist()))
        position = np.array([starts[source] + entry for source, entry in self.grants], dtype=np.int64)
        return {name: np.concatenate([columns[s][name] for s in sources]).astype(np.int64)[position]
                for name in RESPONSE_FIELDS}


def _kept_columns(words, shown, tag):
    """The KEPT responses (an ERROR for an overflowing query's last word) of a filter result's ``shown`` words."""
    failed = (words["last"] & words["error"])[shown]
    count = int(shown.sum())
    return {"kind": np.where(failed, ResponseKind.ERROR.value, ResponseKind.KEPT.value),
            "tag": np.full(count, tag), "last": words["last"][shown],
            "code": np.where(failed, ErrorCode.ITEMS.value, ErrorCode.NONE.value),
            "index": np.where(failed, Opcode.SCORE.value, words["index"][shown]),
            "score": np.zeros(count, dtype=np.int64)}


#: The columns of :attr:`ScoreTiming.values`.
RESPONSE_FIELDS = ("kind", "tag", "last", "code", "index", "score")


class _Holders:
    """The top-k and filter units behind the sequencers, and their kept results (rules 1 to 12, 16 to 20)."""

    def __init__(self, geometry, release_delay, merge=None):
        g = self.geometry = geometry
        self.release_delay, self.merge = release_delay, merge
        self.pending = [False] * g.holders           # a reported result is still in the merge (rule 21)
        self.deferred = [[] for _ in range(g.holders)]   # results of queries closed meanwhile, in order
        self.latency = 2 * len(segment_sizes(g.k_max, min(g.k_max, DEFAULT_SEGMENT))) + READ_OUT
        self.filters = [_Filter(g.filter_capacity, FreeCycles()) for _ in range(g.filters)]
        self.went = [0] * g.units                    # a top-k unit's last `go` of a query end (rule 1)
        self.ended = [-1] * g.units                  # a top-k unit's last `done` (rule 2)
        self.free = [0] * g.holders                  # the first cycle the holder can be granted (rule 16)
        self.closed = [[] for _ in range(g.holders)]  # per holder, each query's last result transfer (rule 17)
        self.done_at = {h: [] for h in range(g.holders)}
        self.released = {h: [] for h in range(g.holders)}
        self.reports = []                            # per reported result: its responses' cycles and columns

    def ready(self, holder, presented):
        """Rule 16: the cycle a query's first element presented in ``presented`` goes into ``holder``."""
        g = self.geometry
        ready = max(presented, self.free[holder]) + 1
        if holder >= g.units:
            return max(ready, self.filters[holder - g.units].bank_free(self.pending[holder]))
        return max(ready, self.went[holder])

    def missing(self, holder):
        """Results of ``holder`` not yet known: one being reported and those of queries closed meanwhile."""
        return self.pending[holder] + len(self.deferred[holder])

    def closing(self, holder, ready):
        """Rule 17: the cycle a query's last element, ready in ``ready``, goes in (at most one result of the holder
        unknown: :meth:`missing`)."""
        closed, behind = self.closed[holder], CLOSING - self.missing(holder)
        return max(ready, closed[-behind] + 1) if len(closed) >= behind else ready

    def close(self, holder, score, tag, scores, indices, taken, where):
        """A query whose last element went in ``taken`` (rule 16); its result (:meth:`_result`) once the holder's
        results before it are known."""
        self.free[holder] = taken + 1
        if self.merge is not None:
            self.merge.held.discard(holder)
        if self.missing(holder):
            self.deferred[holder].append((holder, score, tag, scores, indices, taken, where))
        else:
            self._result(holder, score, tag, scores, indices, taken, where)

    def _result(self, holder, score, tag, scores, indices, taken, where):
        """The result of a query whose last element went in ``taken`` (rules 2 to 12, 18 to 20)."""
        g = self.geometry
        done_at, released = self.done_at[holder], self.released[holder]
        gate = 0
        if score["keep"] and len(done_at) >= 2:
            if self.release_delay is None:
                raise ValueError(f"{where} keeps a third result of holder {holder} that is never released")
            gate = released[len(done_at) - 2] + 1                                      # rule 18
        if holder >= g.units:
            unit = self.filters[holder - g.units]
            query = FilterQuery(scores, indices, score["k"])
            if self.merge is not None and score["k"] >= 1:
                first, kept, _, words = unit.plan(query, len(scores), taken)
                shown = np.ones(len(words["last"]), dtype=bool) if score["report"] else \
                    (words["last"] & words["error"]).astype(bool)
                if shown.any():
                    self.pending[holder] = True
                    self.merge.start(g.lanes + holder, self._words(holder, score, unit, first, kept, gate, shown),
                                     _kept_columns(words, shown, tag))
                    return
                last_issue, out = unit.queue.pass_(first, kept, gate)
                unit.finished = last_issue + 3
                unit.done.append(unit.finished)
                self._done(holder, score, int(out[-1]))
                return
            _, out, words = unit.close(query, len(scores), taken, gate)
            last = int(out[-1])
            shown = np.ones(len(out), dtype=bool) if score["report"] else (words["last"] & words["error"]).astype(bool)
            if shown.any():
                self.reports.append((out[shown] + 2, _kept_columns(words, shown, tag)))
        else:
            self.went[holder] = max(taken + 1, self.ended[holder] + 1)
            length = min(score["k"], len(scores))
            first = max(self.went[holder] + self.latency, gate)
            if score["report"]:
                best_scores, best_indices = best(scores, score["k"], indices)
                final = np.zeros(length, dtype=np.int64)
                final[-1] = 1
                columns = {"kind": np.full(length, ResponseKind.RANK.value), "tag": np.full(length, tag),
                           "last": final, "code": np.zeros(length, dtype=np.int64), "index": best_indices,
                           "score": best_scores}
                if self.merge is not None:
                    self.pending[holder] = True
                    self.merge.start(g.lanes + holder, self._ranks(holder, score, first, length), columns)
                    return
                self.reports.append((first + np.arange(length, dtype=np.int64) + 2, columns))
            self._done(holder, score, first + length - 1)
            return
        self._done(holder, score, last)

    def _ranks(self, holder, score, first, length):
        """A reported top-k result through its RANK slice into the shared merge (rule 21), a generator."""
        src = self.geometry.lanes + holder
        entries, granted = self.merge.entries[src], self.merge.granted[src]
        put = NEVER
        for _ in range(length):
            while len(entries) >= 2 and len(granted) <= len(entries) - 2:
                yield
            put = max(first, put + 1, granted[len(entries) - 2] + 1 if len(entries) >= 2 else NEVER)
            self.merge.enter(src, put)
        self._reported(holder, score, put)

    def _words(self, holder, score, unit, first, kept, gate, shown):
        """A filter result with reported words through its slice into the shared merge (rule 21), a generator."""
        out = yield from unit.reported(first, kept, gate, shown, self.geometry.lanes + holder, self.merge)
        self._reported(holder, score, int(out[-1]))

    def _reported(self, holder, score, last):
        """A reported result has gone into the merge: the result of the next query closed meanwhile follows."""
        self._done(holder, score, last)
        self.pending[holder] = False
        self.merge.woken = True
        while self.deferred[holder] and not self.pending[holder]:
            self._result(*self.deferred[holder].pop(0))

    def _done(self, holder, score, last):
        """A result whose last element was taken in ``last`` (rules 17 and 19)."""
        if holder < self.geometry.units:
            self.ended[holder] = last
        self.closed[holder].append(last)
        if score["keep"]:
            done_at, released = self.done_at[holder], self.released[holder]
            done_at.append(last + 1)
            if self.release_delay is not None:
                before = released[-1] if released else NEVER
                released.append(max(last + 1, before + 1) + self.release_delay)


def _score_lane(lane, program, logits, indices, cmd_nb, item_nb, units, sink, merge=None):
    """One lane's sequencer (rules 13 to 16), a generator: returns its instructions' and items' cycles, its LOGITs'
    cycles and columns.

    With ``merge`` (a :class:`_Merge`), its LOGITs share the response merge with other sources: the lane enters
    each LOGIT's cycle (:meth:`_Merge.enter`) and yields whenever its slice is full until the merge has granted the
    entry two ahead (``merge.granted[lane]``), and while a result of the holder it closes a query on is still
    being reported; the LOGITs' cycles are then the merge's. Without, it runs through without yielding.
    """
    g = units.geometry
    element, lane_rsp, merged = _Slice(), _Slice(), _Slice()
    accepted, taken, responses = [], np.empty(len(logits), dtype=np.int64), []
    values = {name: [] for name in RESPONSE_FIELDS}
    open_holder, query = None, []
    take, accept, item = -1, -1, 0
    for number, instr in enumerate(program):
        score, tag = instr["score"], instr["tag"]
        dest = ScoreDest(score["dest"])
        where = f"Lane {lane}'s SCORE {number} (tag {tag})"
        # Rule 13: the next instruction is taken with the previous one's last item, or when it comes.
        accept = max(cmd_nb[number], accept + 1, take)
        accepted.append(accept)
        take = max(take, accept)
        end = item + score["items"]
        if dest == ScoreDest.RSP and merge is not None:
            entries, granted = merge.entries[lane], merge.granted[lane]
            for n in range(item, end):
                # Rules 14 and 15, the slice's room from the merge's grants.
                while len(entries) >= 2 and len(granted) <= len(entries) - 2:
                    yield
                take = max(int(item_nb[n]), take + 1, granted[len(entries) - 2] + 1 if len(entries) >= 2 else 0)
                taken[n] = take
                merge.enter(lane, take)
        elif dest == ScoreDest.RSP:
            n = item
            while n < end:
                if lane_rsp.left[1] == take + 1 and merged.left[1] == take + 2:
                    # Steady: every item two cycles from the consumer, as long as the consumer is ready then.
                    run = _steady(item_nb[n:end], take)
                    out = run + 2
                    stalled = np.flatnonzero(sink.rank(out + 1) - sink.rank(out) == 0)
                    count = int(stalled[0]) if len(stalled) else len(run)
                    if count:
                        taken[n:n + count] = run[:count]
                        take = int(run[count - 1])
                        lane_rsp.left = [int(v) for v in np.concatenate([[lane_rsp.left[1]], run[:count] + 1])[-2:]]
                        merged.left = [int(v) for v in np.concatenate([[merged.left[1]], out[:count]])[-2:]]
                        responses.extend(out[:count].tolist())
                        n += count
                        continue
                # Rules 14 and 15: the item, the lane's slice, the merge (the only source) and its slice.
                take = max(int(item_nb[n]), take + 1, lane_rsp.room())
                taken[n] = take
                into_merge = max(lane_rsp.valid(take), merged.room())
                lane_rsp.leave(into_merge)
                out = sink.first(merged.valid(into_merge))
                merged.leave(out)
                responses.append(out)
                n += 1
        if dest == ScoreDest.RSP:
            last = np.zeros(end - item, dtype=np.int64)
            last[-1] = score["last"]
            for name, column in (("kind", np.full(end - item, ResponseKind.LOGIT.value)),
                                 ("tag", np.full(end - item, tag)), ("last", last),
                                 ("code", np.zeros(end - item, dtype=np.int64)), ("index", indices[item:end]),
                                 ("score", logits[item:end])):
                values[name].append(column)
            item = end
            continue
        to_filter = dest == ScoreDest.FILTER
        holder = g.units + score["unit"] if to_filter else score["unit"]
        if open_holder not in (None, holder):
            raise ValueError(f"{where} opens a query on holder {holder} while one on {open_holder} is open")
        query.append((item, end))
        n = item
        while n < end:
            closes = score["last"] and n == end - 1
            stop = end - 1 if score["last"] else end
            if open_holder is not None and element.left[1] == take + 1 and n < stop:
                # Steady within a query: every element goes in the cycle after it was taken.
                run = _steady(item_nb[n:stop], take)
                taken[n:stop] = run
                take = int(run[-1])
                element.left = [int(v) for v in np.concatenate([[element.left[1]], run + 1])[-2:]]
                n = stop
                continue
            take = max(int(item_nb[n]), take + 1, element.room())
            taken[n] = take
            ready = element.valid(take)
            n += 1
            if open_holder is None:
                # Rule 16: the lane asks when its element is presented and is granted a cycle later (rule 22 for a
                # holder other lanes use too).
                if merge is not None and holder in merge.shared:
                    merge.ask(holder, lane, ready)
                    while (holder, lane) not in merge.unit_grants:
                        yield
                    ready = merge.unit_grants.pop((holder, lane))
                while units.deferred[holder]:
                    yield                   # the previous query's result started, for the unit's readiness
                ready = units.ready(holder, ready)
                open_holder = holder
            if closes:
                while units.missing(holder) >= CLOSING:
                    yield                   # the end of the result two before (rule 17)
                ready = units.closing(holder, ready)
            element.leave(ready)
            if closes:
                chosen = np.concatenate([np.arange(first, stop, dtype=np.int64) for first, stop in query])
                units.close(holder, score, tag, logits[chosen], indices[chosen], ready, where)
                open_holder, query = None, []
        item = end
    if open_holder is not None:
        raise ValueError(f"Lane {lane} leaves a query open on holder {open_holder}")
    return (np.array(accepted, dtype=np.int64), taken, np.array(responses, dtype=np.int64),
            {name: _join(c) for name, c in values.items()})
