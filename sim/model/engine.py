"""Cycle-exact timing model of the MLP engine (:class:`rpaccel.rtl.mlp.MLPEngine`) running an
:class:`~rpaccel.host.driver.mlp.EnginePlan`.

:func:`engine_timing` takes the plan the RTL engine runs (through :class:`~rpaccel.sim.mlp_harness.EngineHarness`:
the weight image is written first, one word a cycle from cycle 0, and the commands are let in once it is), with
not-before cycles on the input words (the :class:`~rpaccel.sim.player.Player`'s ``not_before``: a word is offered
from that cycle, or from the cycle after the word before it was taken if later) and the Player's ``pause`` on any
port (idle input cycles: a word is offered in the first cycle from then its port does not stall; back-pressured
outputs; each port's stall pattern drawn from the run's seed as the Player draws it), and returns the cycle of
every transfer of every ``out<l>`` stream (as :attr:`~rpaccel.sim.player.PlayerResult.output_cycles`) and the
run's cycles (as :attr:`~rpaccel.sim.player.PlayerResult.cycles`: the last transfer's cycle + 1). Cycles are the
Player's: cycle 0 is the first cycle out of reset, a transfer counts in the cycle whose closing edge sees ``valid``
and ``ready``.

The model follows the engine's queues as max-plus recurrences: an element leaves a stage at the latest of the
cycle it arrives plus the stage's latency, the cycle after the element before it left, and the cycle after the
element as many places ahead as the stage holds left the next stage (or returned its credit). There is no loop
over cycles (see the end for what it loops over).

Timing rules, each with the RTL mechanism it comes from (cycles relative to the event named; "fire" is a
transfer):

1. **Release and dispatch** (``EngineHarness``, ``Dispatcher``). The image's ``P`` words are written one a cycle
   from cycle 0 (``wload`` is always ready), each when offered; the first command may fire in the cycle after the
   last (``loaded >= preload`` is combinational): cycle ``P`` without not-before cycles. Commands fire one a
   cycle, in order, each when offered; command ``k`` also waits until its unit's queue (``SyncFIFO`` of 2) has
   room: one cycle after the unit took the command two before it of the same queue (an INPUT: the loader's; a
   LAYER: both the fetcher's and the feeder's). A queued command is at its unit's head one cycle after it fired.
2. **Loader** (``Loader``). Starts at the latest of its command at the head, one cycle after its previous
   command's last word, and ``layers_done`` reaching ``wait_layers``; its words fire from the next cycle on, one
   a cycle, each when offered, except in the cycles after a hidden-layer result was taken by the writer (the
   write-back register ``wb_valid`` has the write port: ``hold``). ``inputs_done`` counts the command one cycle
   after its last word.
3. **Fetcher** (``Fetcher``, ``CreditCounter`` of the word FIFO). Starts one cycle after the later of its command
   at the head and its previous command's last request firing; word ``m`` of the lane (counted across commands)
   is requested from the cycle after the start or after word ``m - 1`` fired, and not before the cycle after word
   ``m - 16`` left the word FIFO (16 credits, ``room`` a compare of the count register).
4. **Weight memory arbiter** (``_round_robin``). The grant of cycle ``t + 1`` is chosen in cycle ``t`` from the
   requests of cycle ``t``, round-robin from the lane after the last one chosen; a granted lane fires in ``t +
   1`` if it requests then (a lane that fired in ``t`` counts as requesting in ``t``; a lane alone therefore
   fires back to back, and one cycle after its request rises when it did not fire the cycle before).
5. **Weight words** (``WRESP_LATENCY``, ``SyncFIFOBuffered``). A word fired in ``f`` is at the word FIFO's head
   in ``max(f + WRESP_LATENCY + 2, cycle after the word before it left)``.
6. **Unpacker** (``Unpacker``, the n-tile ``Queue`` of 4). A bias word leaves the FIFO in the cycle it is at the
   head; the last one of an n-tile also waits for room in the n-tile FIFO: one cycle after the beat issuer took
   the entry four n-tiles back. A tile word is cut into ``rows_per_word`` rows, one a cycle, into the ``w``
   stream; it leaves the FIFO with its last row.
7. **Register slices** (``RegisterSlice``, two on each of ``w``, ``x`` and ``y``). A slice is a two-entry queue of
   one cycle's latency whose input is ready while it holds at most one element: element ``n`` enters it no earlier
   than the cycle after element ``n - 2`` left it.
8. **Array: weights** (``SystolicArray._banks``, ``_split_in_use``). The streams are held until the array has
   settled after reset: from cycle ``settle_cycles + 1``. Tile ``j`` of a lane (counted across commands) loads
   into bank ``j % 2``; its rows are accepted from ``max(rows - 1, 1)`` cycles after the last item of tile ``j -
   2`` was accepted (the bank's ``busy`` count of ``rows - 2``), one a cycle.
9. **Array: items** (``Feeder``, ``LaneMemory.READ_LATENCY``, feed ``SyncFIFO`` of 8 with its credits). The
   feeder starts at the latest of its command at the head, one cycle after its previous command's last issue, and
   ``inputs_done``/``layers_done`` reaching the command's waits; it issues one read a cycle from the next cycle,
   item ``n`` of the lane not before the cycle after item ``n - 8`` left the feed FIFO; an issued read is at the
   FIFO's head 4 cycles later (3 of read latency, 1 of the FIFO). The array accepts the first item of a tile one
   cycle after the tile's last row was accepted (``full``), every item after the one before it. With the two
   slices' four places (rule 7) the chain reduces to: item ``n`` is issued at the latest of the cycle after item
   ``n - 1``'s issue and 3 cycles after item ``n - 12`` was accepted, and accepted at the latest of 6 cycles after
   its issue, the cycle after item ``n - 1`` and its tile's gate; so a tile's items take consecutive cycles.
10. **Array: results** (``ArrayGeometry.latency``). An item accepted in ``x`` is presented in ``y`` ``latency =
    rows + cols + 4`` cycles later and reaches the accumulator 2 cycles after that (two slices).
11. **Accumulator and beat issuer** (``Accumulator``, ``BeatIssuer``). A final sum reaching the accumulator in
    ``a`` is at the accumulator FIFO's head (a write-registered ``Queue``) in ``a + 4``; the issuer sends its
    ``beats`` beats in consecutive cycles from then, and not before the cycle after the previous sum's last beat.
12. **Post-processing and writer** (``_postprocessors``, ``PostProcessor.LATENCY``, ``Writer``). A beat issued in
    ``b`` is in the result FIFO in ``b + 11`` (the issuer's register, the routing register, 7 stages, the return
    register, the FIFO); the writer takes it then (rule 14: no earlier than the cycle after the beat before it,
    and for an output's last beat, no earlier than the previous output's transfer). The last beat of an
    output-layer result taken in ``c`` fires on ``out`` in the first cycle from ``c + 1`` on that ``out`` is
    ready; a hidden-layer result is written from the write-back register in ``c + 1`` (the loader's ``hold``). A
    layer is done in ``layers_done`` two cycles after its last result was taken.

13. **Stalls** (``SystolicArray._slot_control``: the output FIFO of 3 and the clock enable two cycles late;
    ``Accumulator``'s ``CreditCounter`` of its FIFO). The accumulator takes a result only while at most 15 final
    sums are taken and not yet read by the beat issuer (16 credits): where a result takes several beats
    (``beats > 1``: post-processors shared by the columns) long runs of final sums wait. A result leaves the array's
    output FIFO no earlier than the cycle after the result two places ahead entered the first ``y`` slice (rule
    7); the sub-array's clock enable is low in cycle ``t`` while the FIFO held two results in cycle ``t - 1``,
    i.e. in cycles ``written[n] + 2 .. left[n - 1] + 1`` for each result ``n``. The array then counts only
    enabled cycles: items and weight rows are accepted in them, a bank's ``busy`` count of ``rows - 2`` runs in
    them, and a result is written to the output FIFO ``latency - 1`` enabled cycles after its item was accepted.
14. **Back-pressure** (``Writer``'s output register, ``BeatIssuer``'s ``CreditCounter`` of the result FIFO). The
    output register loads while it is empty or transferring, so the writer takes an output's last beat no earlier
    than the previous output's transfer, and the beats behind it wait in the result FIFO (16 places). The beat
    issuer issues a beat only with a credit of the result FIFO (``room`` a compare of the count register): beat
    ``n`` of the lane no earlier than the cycle after the writer took beat ``n - 16``. Sums then leave the
    accumulator FIFO later (rule 11), whose credits hold the array (rule 13).

How it runs fast: per tile, the items are in closed form (one a cycle from the first, rule 9; their results one a
cycle, the beats back to back) unless the sub-array stalls, the accumulator would make them wait or the outputs
are back-pressured, when they go item by item; the weight words go word by word. A lane alone on the weight
memory remembers each tile's weights by the state they started from relative to the last request (what lies at or
before it cannot bind later events), and a step that starts from the state the step before started from, shifted
by some cycles, repeats: the rest of a run of such steps is shifted in one go (the middle k-tiles of an n-tile, the
n-tiles of a layer, the chunks of a batch), its results kept as repeated arithmetic progressions; the state watches
the sub-array's stalls from the oldest item the feeder or a bank waits on. A chunk with a not-before cycle or an
idle cycle (on a command or an input word) does not repeat; with back-pressured outputs the output layer's final
tiles go item by item and their n-tiles and the lane's chunks do not repeat (the out stream's ready cycles do not).

Several lanes share the weight memory, and only through it (rule 4). Two things let them run as fast as one:

- **Alone up to a horizon.** The lanes go through the arbiter in cycle order, but a lane whose word would fire, as
  the only requester, no later than the first cycle another lane may request in (the others' pending requests: a
  lane requests nothing before the request it waits on) fires it so without the arbiter, and its repeated steps are
  taken in one go as far as they end by then (only steps that ran alone repeat). A lane left alone (the others
  done) runs as the only lane does.
- **Robust runs.** What the arbiter decides is when each word fires; the rest of a lane's timing depends on it
  only through the word's head of the word FIFO (rule 5: the later of a fixed latency after its fire and the cycle
  after the word before it left) and the fetcher's start of each command (rule 3, which a later command's dispatch
  waits on, rule 1). Once the word FIFOs
  run ahead of the array, a word's head is its predecessor's leaving whenever in a window it fires. From cycle
  ``robust_from`` on (a run first goes exactly up to it) each lane runs alone to its end and keeps, beside its own
  fires, the earliest and the latest each word may fire whatever the others do: a waiting lane is granted within
  ``n`` decisions, ``n`` the lanes that may request by then (this one and those not past their last fire, known
  from the lanes' own robust runs), so the latest fire is ``n`` cycles after the latest of the previous word's fire
  and the word's credit or command start; the earliest is the earliest request (a cycle later for a request that
  must be new). If no word's head and no command's dispatch can move within these bounds, every lane's timing is
  its own run's, exactly; else the run is redone going exactly further (past the step that could move, and twice
  as far as before), keeping the lanes that ran robust to their end (their last fires then bound the others'
  competitors), so that the result is exact in every case and fast where the lanes' weights run ahead.
"""

from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass

import numpy as np

from ...host.driver.device import NO_CYCLE, not_before_array
from ...rtl.lanemem import LaneMemory
from ...rtl.mlp import WAIT_BITS, WRESP_LATENCY, Accumulator, BeatIssuer, Dispatcher, Feeder, Fetcher, Op, Unpacker
from ...rtl.postproc import PostProcessor
from ..streams import port_seed, stall_pattern

__all__ = ["EngineTiming", "engine_timing"]

#: A word fired in ``f`` is at the word FIFO's head in ``f + WORD_HEAD`` (the response, the buffered FIFO's two).
WORD_HEAD = WRESP_LATENCY + 2
#: A read issued in ``i`` is at the feed FIFO's head in ``i + ITEM_HEAD``.
ITEM_HEAD = LaneMemory.READ_LATENCY + 1
#: Cycles from a final sum reaching the accumulator to its first beat's issue: stages A and B, the write-registered
#: accumulator queue (two).
TO_ISSUE = 2 + 2
#: Cycles from a beat's issue to the writer taking it: the issuer's ``pp_beat``, the routing register, the
#: post-processor, the return register, the result FIFO.
TO_WRITER = 2 + PostProcessor.LATENCY + 1 + 1
#: Places of each register slice, and slices per stream (``MLPEngine._lane``; :meth:`_Weights.tile` spells the two
#: out).
SLICE, SLICES = 2, 2
NEVER = -(1 << 62)
FINISHED = 1 << 62


@dataclass(frozen=True)
class EngineTiming:
    """What :func:`engine_timing` returns.

    Attributes
    ----------
    outputs : dict
        ``{"out<l>": int64 array}``: the cycle of every transfer of each working lane's ``out`` stream, in order.
    cycles : int
        The run's cycles: the last output transfer's cycle + 1.
    layers_done : dict
        ``{lane: int64 array}``: per LAYER command of the lane, in order, the first cycle in which ``layers_done``
        counts it.
    """

    outputs: dict
    cycles: int
    layers_done: dict


class _Fragile(Exception):
    """A robust run (see :func:`_arbitrate`) met a step whose timing the arbiter may move: the exception's argument
    is the cycle from which the run must go on exactly."""


class _Progressions:
    """Increasing cycles kept as runs of arithmetic progressions: ``(first, count, step, repeats, period)`` is
    ``count`` cycles ``step`` apart from ``first``, then again ``period`` later, ``repeats`` times in all."""

    def __init__(self):
        self.firsts, self.runs = [], []

    def add(self, first, count, step, repeats=1, period=0):
        self.firsts.append(first)
        self.runs.append((first, count, step, repeats, period))

    def count(self, low, high):
        """How many of the cycles lie in ``low .. high``."""
        total = 0
        for index in range(bisect_right(self.firsts, high) - 1, -1, -1):
            first, count, step, repeats, period = self.runs[index]
            span = (count - 1) * step
            if first + (repeats - 1) * period + span < low:
                break
            repeat = max(0, -(-(low - first - span) // period)) if period else 0
            while repeat < repeats and first + repeat * period <= high:
                start = first + repeat * period
                total += max(0, min(count - 1, (high - start) // step) - max(0, -(-(low - start) // step)) + 1)
                repeat += 1
        return total

    def array(self):
        if not self.runs:
            return np.zeros(0, dtype=np.int64)
        first, count, step, repeats, period = (np.array(column, dtype=np.int64) for column in zip(*self.runs))
        first = np.repeat(first, repeats) + np.concatenate([np.arange(r) for r in repeats]) * np.repeat(period, repeats)
        count, step = np.repeat(count, repeats), np.repeat(step, repeats)
        before = np.cumsum(count) - count
        offsets = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(before, count)
        return np.repeat(first, count) + offsets * np.repeat(step, count)


class _Pattern:
    """The cycles a port of the :class:`~rpaccel.sim.player.Player` is not stalled in (an output ready, an input
    free to offer its word), with ``pause`` and the run's ``seed`` (the stall pattern of
    :func:`~rpaccel.sim.streams.xorshift_stalls`, drawn vectorised as far as asked)."""

    def __init__(self, pause, seed, port):
        self.port, self.pause, self.seed = port, pause, port_seed(seed, port)
        self.next = np.zeros(0, dtype=np.int64)  # per cycle drawn, the first free cycle from it on (-1: not drawn)
        self.free = np.zeros(0, dtype=np.int64)  # the free cycles drawn

    def _draw(self, count):
        free = ~stall_pattern(self.pause, self.seed, count)
        # The first free cycle from each on: a reversed running minimum over the free ones.
        self.next = np.minimum.accumulate(np.where(free, np.arange(count), count)[::-1])[::-1]
        self.next[self.next == count] = -1
        self.free = np.flatnonzero(free)

    def first(self, t):
        """The first free cycle from ``t`` on."""
        while t >= len(self.next) or self.next[t] < 0:
            self._draw(max(2 * len(self.next), t + 4096))
        return int(self.next[t])

    def rank(self, cycles):
        """How many free cycles come before each of ``cycles`` (an array)."""
        if len(cycles) and cycles.max() >= len(self.next):
            self._draw(max(2 * len(self.next), int(cycles.max()) + 4096))
        return np.searchsorted(self.free, cycles)

    def nth(self, rank):
        """The free cycle of rank ``rank`` (0: the first)."""
        while rank >= len(self.free):
            self._draw(max(2 * len(self.next), 4096))
        return int(self.free[rank])


class _Stalls:
    """The cycles a sub-array's clock enable is low (rule 13), as disjoint increasing intervals."""

    def __init__(self):
        self.starts, self.ends = [], []

    @property
    def last(self):
        """The last stalled cycle so far."""
        return self.ends[-1] if self.ends else NEVER

    def add(self, start, end):
        if start > end:
            return
        if self.ends and self.ends[-1] >= start - 1:
            self.ends[-1] = max(self.ends[-1], end)
        else:
            self.starts.append(start)
            self.ends.append(end)

    def enabled(self, t):
        """The first enabled cycle from ``t`` on."""
        if self.ends and self.ends[-1] >= t:
            index = bisect_right(self.starts, t) - 1
            if index >= 0 and self.ends[index] >= t:
                return self.ends[index] + 1
        return t

    def since(self, t):
        """The stalled intervals that end at or after ``t``, as ``(start, end)`` from ``t`` at the earliest."""
        index = bisect_left(self.ends, t)
        return [(max(start, t), end) for start, end in zip(self.starts[index:], self.ends[index:])]

    def repeat(self, t, cycles):
        """The stalled intervals from ``t`` on again ``cycles`` later, after the last."""
        for start, end in self.since(t):
            self.add(start + cycles, end + cycles)

    def advance(self, t, count):
        """The ``count``-th enabled cycle after the enabled cycle ``t``."""
        t += count
        if self.ends and self.ends[-1] > t - count:
            for index in range(bisect_right(self.starts, t - count), len(self.starts)):
                if self.starts[index] > t:
                    break
                t += self.ends[index] - self.starts[index] + 1
        return t


class _Weights:
    """The weight path of a lane (rules 3 to 8): the fetcher's requests, the word FIFO, the unpacker and the
    ``w`` slices, as the few last cycles each queue's rule looks back to."""

    def __init__(self):
        self.fired = NEVER                      # the last word's request fired
        self.left = deque(maxlen=Fetcher.WORD_FIFO)   # the last words' cycles leaving the word FIFO
        self.rows = [[NEVER] * SLICE for _ in range(SLICES + 1)]  # the last rows entering each slice, leaving

    def key(self, reference):
        """The state relative to ``reference`` (the last request's fire): a cycle at or before it cannot bind a
        later word, row or request, so it is clipped there."""
        (entered0, entered1), (passed0, passed1), (accepted0, accepted1) = self.rows
        return (len(self.left), *[t - reference if t > reference else 0 for t in self.left],
                *[t - reference if t > reference else 0
                  for t in (entered0, entered1, passed0, passed1, accepted0, accepted1)])

    def restore(self, key, reference):
        count = key[0]
        self.fired = reference
        self.left = deque([t + reference for t in key[1:1 + count]], maxlen=Fetcher.WORD_FIFO)
        entered0, entered1, passed0, passed1, accepted0, accepted1 = [t + reference for t in key[1 + count:]]
        self.rows = [[entered0, entered1], [passed0, passed1], [accepted0, accepted1]]

    def tile(self, lane, shape, bias, first_request, gate, bias_gate, stalls):
        """A generator over one tile's words, preceded by ``bias`` bias words: a word whose fire as the only
        requester (rule 4) comes by ``lane.horizon`` fires so, the others are yielded (their request cycle) and
        sent the cycle they fired; returns the cycle the tile's last row was accepted."""
        left, fired = self.left, self.fired
        # The last two rows' cycles entering the first and the second slice and leaving the second (rule 7).
        (entered0, entered1), (passed0, passed1), (accepted0, accepted1) = self.rows
        for index in range(bias + shape.tile_words):
            first = index == 0 and first_request is not None
            credit = left[0] + 1 if len(left) == Fetcher.WORD_FIFO else NEVER
            request = max(first_request if first else fired + 1, credit)
            # Robust: the earliest request may be (a new request, firing a cycle later, from a command's start or
            # past the latest previous fire), the latest the request or the previous fire may be.
            if first:
                earliest = max(credit, lane.first_floor, lane.best + 2) + 1
            else:
                earliest = max(credit, lane.best + 1)
                earliest += lane.worst + 1 < earliest
            floor = max(credit, first_request, lane.worst + 2) if first else credit
            if request == fired + 1 and fired < lane.horizon:
                fired = request
            elif request < lane.horizon:
                fired = request + 1
            elif lane.robust:
                fired = request if request == fired + 1 else request + 1
                lane.horizon = lane.segment_end(fired + 1)
            else:
                sent = yield request
                if sent is None:  # the run turns robust (see _arbitrate) with this word requested
                    new = request != fired + 1
                    fired, floor, earliest = request + new, request, request + new
                    lane.horizon = lane.segment_end(fired + 1)
                else:
                    fired = sent
                    lane.shared += 1
            lane.last_fire = fired
            head = fired + WORD_HEAD
            if left and left[-1] >= head:
                head = left[-1] + 1
            if lane.robust:
                # The earliest and the latest the word may fire whatever the other lanes do (the arbiter grants a
                # waiting lane within as many decisions as there are lanes requesting): its head must not move.
                lane.best, lane.worst = earliest, lane.competitors(earliest) + max(lane.worst, floor)
                back = left[-1] + 1 if left else NEVER
                if max(lane.best + WORD_HEAD, back) != max(lane.worst + WORD_HEAD, back):
                    raise _Fragile(fired)
            if index < bias:
                left.append(max(head, bias_gate) if index == bias - 1 else head)
                continue
            arrive = head
            for _ in range(shape.rows_per_word):
                entered = max(arrive, entered1 + 1, passed0 + 1)
                passed = max(entered + 1, passed1 + 1, accepted0 + 1)
                accepted = max(passed + 1, accepted1 + 1, gate)
                if stalls.ends:
                    accepted = stalls.enabled(accepted)
                entered0, entered1, passed0, passed1, accepted0, accepted1 = (entered1, entered, passed1, passed,
                                                                              accepted1, accepted)
                arrive = entered + 1
            left.append(entered1)
        self.fired = fired
        self.rows = [[entered0, entered1], [passed0, passed1], [accepted0, accepted1]]
        return accepted1


class _Items:
    """The item path of a lane (rules 9 and 10) as the last cycles its rules look back to."""

    #: Items between the feeder's issue and the array: the feed FIFO's credits and the slices' places.
    LAG = Feeder.FEED_FIFO + SLICE * SLICES

    def __init__(self):
        self.count = 0                          # items issued in the lane
        self.issued = NEVER                     # the last item's issue
        self.accepted = NEVER                   # the last item's cycle in x
        self.tiles = deque(maxlen=self.LAG + 1)  # the last tiles' (first item, cycle it was accepted)
        self.tile_last = deque([NEVER, NEVER], maxlen=2)  # the last two tiles' last items' cycles in x

    def x_of(self, n, stalls):
        """The cycle item ``n`` (one of the last ``LAG``) was accepted: its tile's items take consecutive enabled
        cycles."""
        for first, x in reversed(self.tiles):
            if first <= n:
                return stalls.advance(x, n - first)
        raise AssertionError(f"item {n} is older than the last {self.LAG}")

    def start(self, loaded, first_issue, stalls):
        """The first item's issue and cycle in ``x`` of a tile whose weights were loaded in ``loaded``."""
        issue = max(self.issued + 1, first_issue)
        if self.count >= self.LAG:
            issue = max(issue, self.x_of(self.count - self.LAG, stalls) + SLICES + 1)
        return issue, stalls.enabled(max(self.accepted + 1, loaded + 1, issue + ITEM_HEAD + SLICES))

    def finish(self, count, issue, x, accepted, stalls):
        """Record a tile of ``count`` items, the first issued in ``issue`` and accepted in ``x``, the last in
        ``accepted``."""
        self.tiles.append((self.count, x))
        last = self.count + count - 1
        self.issued = issue + count - 1
        if last >= self.LAG:
            self.issued = max(self.issued, self.x_of(last - self.LAG, stalls) + SLICES + 1)
        self.count += count
        self.accepted = accepted
        self.tile_last.append(accepted)

    def watched(self):
        """The first cycle the lane's stalls can bind from: the tile of the oldest item the feeder waits on, the
        item a bank waits on (``NEVER`` before any item)."""
        if not self.tiles:
            return NEVER
        oldest = self.count - self.LAG
        x = next((x for first, x in reversed(self.tiles) if first <= oldest), self.tiles[0][1])
        return min(x, self.tile_last[0] + 1)

    def key(self, reference):
        count = self.count
        return (min(count, self.LAG), self.issued - reference, self.accepted - reference,
                self.tile_last[0] - reference, self.tile_last[1] - reference,
                *[first - count for first, _ in self.tiles], *[x - reference for _, x in self.tiles])

    def snapshot(self, reference):
        """The whole state, relative to cycle ``reference`` and to the items issued (see :meth:`restore`)."""
        def relative(t):
            return None if t == NEVER else t - reference

        return (relative(self.issued), relative(self.accepted), tuple(relative(t) for t in self.tile_last),
                tuple((first - self.count, x - reference) for first, x in self.tiles))

    def restore(self, snapshot, reference, count):
        """The state of ``snapshot`` at cycle ``reference``, ``count`` items issued."""
        def absolute(t):
            return NEVER if t is None else t + reference

        issued, accepted, tile_last, tiles = snapshot
        self.count, self.issued, self.accepted = count, absolute(issued), absolute(accepted)
        self.tile_last = deque((absolute(t) for t in tile_last), maxlen=2)
        self.tiles = deque(((first + count, x + reference) for first, x in tiles), maxlen=self.LAG + 1)

    def shift(self, cycles, items):
        self.count += items
        self.issued += cycles
        self.accepted += cycles
        self.tile_last = deque((t + cycles for t in self.tile_last), maxlen=2)
        self.tiles = deque(((first + items, x + cycles) for first, x in self.tiles), maxlen=self.LAG + 1)


class _Lane:
    """One lane's units, their queues and histories. :meth:`run` is a generator: it yields the cycle from which it
    requests its next weight word and is sent the cycle the request fired, except where it is alone on the weight
    memory: a request whose fire as the only requester (rule 4) comes no later than :attr:`horizon` (set by
    :func:`_arbitrate` before each send: the first cycle another lane may request in) fires so without a yield.

    Alone, a step that starts from the state the step before started from, shifted by some cycles, repeats: as
    many of the steps ahead as end by the horizon are shifted in one go (the middle k-tiles of an n-tile, the
    n-tiles of a layer, the chunks of a batch), and a tile's weights from a state seen before are taken from a
    memo. Only steps run alone repeat: :attr:`shared` counts the words that went through the arbiter.
    """

    def __init__(self, geometry, split, program, release, *, alone, commands_at=None, inputs_at=None, patterns=None):
        self.shape = shape = geometry.splits[split]
        self.program = program
        self.release = release
        # Not-before cycles: per command (NO_CYCLE where none), and per INPUT command its words' that have one, as
        # (index in the command, cycle); the stall patterns of the lane's ports (``{"cmd" | "act" | "out":
        # _Pattern}``, the ports the Player pauses); ``timed``: the commands with not-before or paused words.
        self.commands_at = commands_at
        self.patterns = patterns = patterns or {}
        self.inputs_at, self.timed = {}, set()
        if commands_at is not None:
            self.timed.update(np.flatnonzero(commands_at != NO_CYCLE).tolist())
        if "cmd" in patterns:
            self.timed.update(range(len(program.commands)))
        words = 0
        for index, command in enumerate(program.commands):
            if command["op"] == Op.INPUT:
                count = command["items"] * command["ktiles"]
                if "act" in patterns:
                    self.timed.add(index)
                if inputs_at is not None:
                    given = np.flatnonzero(inputs_at[words:words + count] != NO_CYCLE)
                    if len(given):
                        self.inputs_at[index] = [(int(k), int(inputs_at[words + k])) for k in given]
                        self.timed.add(index)
                words += count
        self.horizon = FINISHED if alone else NEVER  # fires up to this cycle are the lane's alone
        self.shared = 0                 # words fired through the arbiter (not alone)
        self.last_fire = NEVER          # the last word's fire
        # Robust (see _arbitrate): the other lanes' last fires at the latest (FINISHED where not known), the
        # earliest and the latest the last word may have fired, and the earliest a command's first word may be
        # requested (the first after its dispatch).
        self.robust, self.rivals, self.best, self.worst, self.first_floor = False, [], NEVER, NEVER, NEVER
        self.fetch_early, self.fetch_late = [], []  # per LAYER, the earliest and the latest its fetch may start
        self.inputs_before = []         # per command, the INPUT commands before it
        inputs = 0
        for command in program.commands:
            self.inputs_before.append(inputs)
            inputs += command["op"] == Op.INPUT
        self.latency = geometry.array.latency(split)
        self.quiet = geometry.array.settle_cycles + 1
        self.bank_hold = max(shape.rows - 2, 0)
        self.outputs = _Progressions()
        self.holds = _Progressions()    # cycles the writer's write-back register holds the loader
        self.dispatched = []            # per command, the cycle it fired on cmd
        self.starts = {"load": [], "fetch": [], "feed": []}  # per command of each unit's queue, the cycle it started
        self.inputs_done = []           # per INPUT: the cycle inputs_done counts it
        self.layers_done = []           # per LAYER: the cycle layers_done counts it
        self.last_word = NEVER          # the loader's last word
        self.memo = {}                  # a tile's weights from a state seen before, run alone
        self.weights = _Weights()
        self.items = _Items()
        self.ntile_filled = 0           # n-tile FIFO entries written
        self.ntile_taken = deque(maxlen=Unpacker.NTILE_FIFO)  # the last n-tiles' cycles the issuer took them
        self.beat_free = NEVER          # the cycle the issuer may start the next sum
        self.reads = deque(maxlen=Accumulator.ACC_FIFO)  # the last final sums' last beats (accumulator FIFO reads)
        # Output back-pressure (rule 14): the out stream's ready cycles (None: always), the writer's last beats'
        # takes (the result FIFO's credits), the last take, the last output transfer.
        self.ready = patterns.get("out")
        self.takes = deque(maxlen=BeatIssuer.RESULT_FIFO)
        self.take_last, self.out_last = NEVER, NEVER
        self.stalls = _Stalls()
        # The last two results on their way from the array's output FIFO to the accumulator: the cycles they
        # left the FIFO (into the first slice), entered the second slice, reached the accumulator.
        self.results = [[NEVER] * SLICE for _ in range(SLICES + 1)]

    def _loaded(self, bias, first_request, gate, bias_gate):
        """A tile's weights (with ``bias`` bias words first): yields the requests whose fires the arbiter decides;
        returns the cycle its last row was accepted."""
        weights = self.weights
        reference = weights.fired
        key = None
        if reference != NEVER and self.stalls.last < reference and self.horizon > reference + 1:
            key = (weights.key(reference), bias, None if first_request is None else first_request - reference,
                   max(gate - reference, 0), max(bias_gate - reference, 0), *self._bounds(reference),
                   self.robust and first_request is not None and self.first_floor - reference)
            found = self.memo.get(key)
            if found is not None and reference + found[1] <= self.horizon:
                state, fired, loaded, best, worst = found
                weights.restore(state, reference + fired)
                self.last_fire = weights.fired
                self.best, self.worst = weights.fired + best, weights.fired + worst
                return reference + fired + loaded
        shared = self.shared
        loaded = yield from weights.tile(self, self.shape, bias, first_request, gate, bias_gate, self.stalls)
        if key is not None and self.shared == shared:
            self.memo[key] = (weights.key(weights.fired), weights.fired - reference, loaded - weights.fired,
                              self.best - weights.fired, self.worst - weights.fired)
        return loaded

    def competitors(self, t):
        """The lanes that may request from cycle ``t`` on (robust only), this one with them."""
        return 1 + len(self.rivals) - bisect_left(self.rivals, t)

    def segment_end(self, t):
        """The last cycle from ``t`` on with as many competitors as ``t``."""
        index = bisect_left(self.rivals, t)
        return self.rivals[index] if index < len(self.rivals) else FINISHED

    def _bounds(self, reference):
        """The earliest and the latest the last word may have fired relative to ``reference``, the competitors
        from then and where they change before the reference (robust only)."""
        if not self.robust:
            return (0,)
        return (self.competitors(self.best + 1), self.competitors(reference + 1), self.best - reference,
                self.worst - reference, min(self.segment_end(self.best + 1) - reference, 1))

    def _unhindered(self, reached, count, first_beat, final, to_output):
        """Whether a tile's results, reaching the accumulator's slices from ``reached`` one a cycle (the first beat
        of the first from ``first_beat`` if ``final``), find the way free: the results before them are through,
        the accumulator FIFO has a credit for each (at most ACC_FIFO final sums taken and not yet read), and with
        back-pressure, they are hidden-layer results whose beats find the result FIFO's credits and the writer
        free."""
        if self.results[SLICES][-1] > reached - 1:
            return False
        if self.ready is not None and final:
            takes = self.takes
            if to_output or self.take_last >= first_beat + TO_WRITER:
                return False
            if len(takes) == BeatIssuer.RESULT_FIFO and any(
                    takes[beat] >= first_beat + beat for beat in range(min(count * self.shape.beats, len(takes)))):
                return False
        reads, beats, capacity = self.reads, self.shape.beats, Accumulator.ACC_FIFO
        if beats == 1 and self.ready is None:  # the post-processors keep up: a sum is read four cycles after it arrives
            return True
        if not final:
            return len(reads) < capacity or reads[0] < reached
        for item in range(min(count, capacity)):
            index = len(reads) - capacity + item
            if index >= 0 and reads[index] >= reached + item:
                return False
        return count <= capacity or first_beat + beats * (count - capacity) - 1 < reached + count - 1

    def _tile(self, count, bias, first_request, first_issue, bias_gate, final, to_output):
        """One tile of a LAYER command (rules 3 to 13); returns the last beat of its last sum if ``final``."""
        items, stalls, latency, beats = self.items, self.stalls, self.latency, self.shape.beats
        gate = max(self.quiet, stalls.advance(stalls.enabled(items.tile_last[0] + 1), self.bank_hold))
        loaded = yield from self._loaded(bias, first_request, gate, bias_gate)
        issue, x = items.start(loaded, first_issue, stalls)
        reached = x + latency + SLICES   # rule 10
        first_beat = max(reached + TO_ISSUE, self.beat_free)
        target = self.outputs if to_output else self.holds
        if stalls.last < x and self._unhindered(reached, count, first_beat, final, to_output):
            # The items take consecutive cycles, their results follow one a cycle.
            accepted = x + count - 1
            for s, stage in enumerate(self.results):
                last = reached - SLICES + s + count - 1
                self.results[s] = [stage[-1] if count == 1 else last - 1, last]
            if final:  # rules 11 and 12: the beats back to back
                last_beat = first_beat + beats * count - 1
                self.beat_free = last_beat + 1
                if beats > 1 or self.ready is not None:
                    self.reads.extend(first_beat + beats * item + beats - 1
                                      for item in range(max(0, count - Accumulator.ACC_FIFO), count))
                target.add(first_beat + beats - 1 + TO_WRITER + 1, count, beats)
                if self.ready is not None:  # rule 14: each beat taken as it comes
                    total = beats * count
                    self.takes.extend(range(first_beat + max(0, total - BeatIssuer.RESULT_FIFO) + TO_WRITER,
                                            first_beat + total + TO_WRITER))
                    self.take_last = last_beat + TO_WRITER
        else:
            # Rule 13: item by item, the sub-array stalling while its output FIFO holds two results.
            accepted = NEVER
            results = self.results
            for item in range(count):
                accepted = x if item == 0 else stalls.enabled(accepted + 1)
                written = stalls.advance(accepted, latency - 1)
                t = written + 1
                for s in range(SLICES):
                    t = max(t, results[s][-1] + 1, results[s + 1][0] + 1)
                    if s == 0:
                        stalls.add(written + 2, results[0][-1] + 1)
                    results[s] = [results[s][-1], t]
                    t += 1
                t = max(t, results[SLICES][-1] + 1)
                if len(self.reads) == Accumulator.ACC_FIFO:
                    t = max(t, self.reads[0] + 1)
                results[SLICES] = [results[SLICES][-1], t]
                if final:
                    if self.ready is None:
                        beat = max(t + TO_ISSUE, self.beat_free) + beats - 1
                        target.add(beat + TO_WRITER + 1, 1, 1)
                    else:
                        beat = self._written(max(t + TO_ISSUE, self.beat_free), to_output, target)
                    self.beat_free = beat + 1
                    self.reads.append(beat)
            last_beat = self.beat_free - 1
        items.finish(count, issue, x, accepted, stalls)
        if not final:
            return None
        self.ntile_taken.append(last_beat)
        return last_beat

    def _written(self, first, to_output, target):
        """Rule 14: a final sum's beats from ``first`` on, each issued with a credit of the result FIFO and taken
        by the writer in order, its last one, for an output, once the output register is free; records the
        output's transfer (or the write-back's hold) and returns the last beat's issue."""
        takes, issue = self.takes, first - 1
        for beat in range(self.shape.beats):
            issue += 1
            if len(takes) == BeatIssuer.RESULT_FIFO:
                issue = max(issue, takes[0] + 1)
            take = max(issue + TO_WRITER, self.take_last + 1)
            if to_output and beat == self.shape.beats - 1:
                take = max(take, self.out_last)
            takes.append(take)
            self.take_last = take
        if to_output:
            self.out_last = self.ready.first(take + 1)
            target.add(self.out_last, 1, 1)
        else:
            target.add(take + 1, 1, 1)
        return issue

    def _key(self, whole):
        """The lane's state relative to its last weight request, for a step that is a middle k-tile or (``whole``)
        an n-tile (``None`` while the sub-array's stalls reach the items it remembers, or while another lane may
        request next cycle); what lies at or before the reference cannot bind what follows and is clipped there."""
        reference = self.weights.fired
        if self.horizon <= reference + 1:
            return reference, None
        (r0, r1), (r2, r3), (r4, r5) = self.results
        watched = self.items.watched()
        key = (self.weights.key(reference), self.items.key(reference), max(self.quiet - reference, 0),
               *self._bounds(reference),
               tuple((start - reference, end - reference) for start, end in self.stalls.since(watched)),
               *[t - reference if t > reference else 0 for t in (r0, r1, r2, r3, r4, r5)],
               *[t - reference if t > reference else 0 for t in self.reads])
        if whole:
            key += (min(self.ntile_filled, Unpacker.NTILE_FIFO), max(self.beat_free - reference, 0),
                    *[t - reference if t > reference else 0 for t in self.ntile_taken])
        if self.ready is not None:
            key += (len(self.takes), *[t - reference if t > reference else 0
                                       for t in (*self.takes, self.take_last, self.out_last)])
        return reference, key

    def _leaps(self, cycles):
        """Whether the state can move on by ``cycles``: the stalls it watches then come after the last one."""
        return self.items.watched() + cycles > self.stalls.last

    def _shift(self, cycles, items, whole):
        """Move the state on by ``cycles`` and ``items``: the steps the jump leaves out (their stalls, as the
        stalls the state watches, again)."""
        self.stalls.repeat(self.items.watched(), cycles)
        self.weights.restore(self.weights.key(self.weights.fired), self.weights.fired + cycles)
        self.last_fire = self.weights.fired
        self.best += cycles
        self.worst += cycles
        self.items.shift(cycles, items)
        self.results = [[t + cycles for t in stage] for stage in self.results]
        if whole:
            self.beat_free += cycles
            self.ntile_taken = deque((t + cycles for t in self.ntile_taken), maxlen=Unpacker.NTILE_FIFO)
            self.reads = deque((t + cycles for t in self.reads), maxlen=Accumulator.ACC_FIFO)
            self.takes = deque((t + cycles for t in self.takes), maxlen=BeatIssuer.RESULT_FIFO)
            self.take_last += cycles

    def _ntile(self, command, first_request, first_issue):
        """One n-tile of a LAYER command; returns the last beat of its last sum."""
        ktiles, count = command["ktiles"], command["items"]
        bias_gate = self.ntile_taken[0] + 1 if self.ntile_filled >= Unpacker.NTILE_FIFO else NEVER
        self.ntile_filled += 1
        last = yield from self._tile(count, self.shape.bias_words, first_request, first_issue, bias_gate,
                                     ktiles == 1, command["to_output"])
        ktile, previous = 1, None
        while ktile < ktiles - 1:
            reference, key = self._key(False)
            if key is not None and previous is not None and previous[1:] == (key, self.shared):
                # The middle k-tiles repeat: jump over as many as end by the horizon.
                period = reference - previous[0]
                left = min(ktiles - 1 - ktile, (self.horizon - reference) // period)
                if left > 0 and self._leaps(period * left):
                    self._shift(period * left, count * left, False)
                    ktile += left
                    previous = None
                    continue
            previous = None if key is None else (reference, key, self.shared)
            yield from self._tile(count, 0, None, NEVER, NEVER, False, False)
            ktile += 1
        if ktiles > 1:
            last = yield from self._tile(count, 0, None, NEVER, NEVER, True, command["to_output"])
        return last

    def run(self):
        commands = self.program.commands
        index, previous = 0, None
        while index < len(commands):
            if commands[index]["op"] == Op.INPUT:
                # A chunk starts. If the lane's state is the state at the previous chunk's start shifted, the
                # previous chunk ran alone and the chunks ahead are alike, they repeat (as many as end by the
                # horizon).
                length = self._chunk_length(index)
                reference, key = self._chunk_key(index, length)
                if key is not None and (self.ready is not None or any(timed for *_, timed in key[0])):
                    key = None  # back-pressured outputs, not-before cycles: the chunk's timing is its own
                if (key is not None and previous is not None and previous[1] == key and reference > previous[0]
                        and previous[2] == index - length and previous[4] == self.shared):
                    period = reference - previous[0]
                    repeats, most = 0, (self.horizon - self.weights.fired) // period
                    while (repeats < most and index + (repeats + 1) * length <= len(commands)
                           and self._chunk_shape(index + repeats * length, length) == key[0]):
                        repeats += 1
                    if repeats and self._leaps(period * repeats):
                        self._repeat_chunk(previous[3], period, repeats)
                        index += repeats * length
                        previous = None
                        continue
                previous = (reference, key, index, self._marks(), self.shared)
            yield from self._command(index)
            index += 1

    def _after(self, t, count):
        """The ``count``-th cycle after ``t`` the loader is not held in."""
        last = t + count
        while True:
            extended = t + count + self.holds.count(t + 1, last)
            if extended == last:
                return last
            last = extended

    def _unheld(self, t):
        """The first cycle from ``t`` on the loader is not held in."""
        while self.holds.count(t, t):
            t += 1
        return t

    def _chunk_length(self, index):
        """Commands from the INPUT at ``index`` to the next INPUT."""
        commands, end = self.program.commands, index + 1
        while end < len(commands) and commands[end]["op"] != Op.INPUT:
            end += 1
        return end - index

    def _chunk_shape(self, index, length):
        """What the timing of the ``length`` commands from ``index`` depends on: per command its counts, how far
        back its waits reach and whether it or its words have not-before cycles."""
        shape, modulo = [], 1 << WAIT_BITS
        for at in range(index, index + length):
            command, inputs = self.program.commands[at], self.inputs_before[at]
            layers = at - inputs
            if command["op"] == Op.INPUT:
                shape.append((command["items"], command["ktiles"], (layers - command["wait_layers"]) % modulo,
                              at in self.timed))
            else:
                shape.append((command["items"], command["ktiles"], command["ntiles"], command["to_output"],
                              (inputs - command["wait_inputs"]) % modulo, (layers - command["wait_layers"]) % modulo,
                              at in self.timed))
        return tuple(shape)

    def _chunk_key(self, index, length):
        """The lane's state at the start of the chunk at ``index`` relative to the last command's dispatch, with
        the chunk's shape first (``None`` where it is not known to repeat)."""
        if not self.dispatched:
            return None, None
        reference = self.dispatched[-1]
        lane_reference, lane_key = self._key(True)
        if lane_key is None:
            return reference, None
        layers = length - 1

        def relative(history, count):
            # The last ``count`` cycles of ``history``: a cycle at or before the reference cannot bind what follows
            # (every command after it fires later), nor can one that is not there.
            return (0,) * (count - len(history)) + tuple(max(t - reference, 0) for t in history[-count:])

        holds = tuple((first - reference, count, step, repeats, period)
                      for first, count, step, repeats, period in self.holds.runs
                      if first + (count - 1) * step + (repeats - 1) * period >= reference)
        return reference, (self._chunk_shape(index, length), *(relative(self.starts[q], 2) for q in self.starts),
                           relative(self.inputs_done, 2), relative(self.layers_done, 2 * layers + 2),
                           relative(self.fetch_early, 2), relative(self.fetch_late, 2),
                           max(self.last_word - reference, 0), holds, lane_reference - reference, lane_key)

    def _marks(self):
        """How long the lane's histories are: what a chunk adds starts there."""
        return (len(self.dispatched), {q: len(v) for q, v in self.starts.items()}, len(self.inputs_done),
                len(self.layers_done), len(self.outputs.runs), len(self.holds.runs), self.items.count,
                self.ntile_filled, len(self.fetch_early))

    def _repeat_chunk(self, marks, period, repeats):
        """The chunk since ``marks`` again ``repeats`` times, each ``period`` cycles after the one before."""
        dispatched, starts, inputs_done, layers_done, outputs, holds, items, ntiles, fetches = marks
        for k in range(1, repeats + 1):
            shift = k * period
            for history, mark in [(self.dispatched, dispatched), (self.inputs_done, inputs_done),
                                  (self.layers_done, layers_done), (self.fetch_early, fetches),
                                  (self.fetch_late, fetches),
                                  *((self.starts[q], starts[q]) for q in self.starts)]:
                history.extend([t + shift for t in history[mark:mark + (len(history) - mark) // k]])
            for runs, mark in ((self.outputs, outputs), (self.holds, holds)):
                for first, count, step, times, every in runs.runs[mark:mark + (len(runs.runs) - mark) // k]:
                    runs.add(first + shift, count, step, times, every)
        self._shift(period * repeats, (self.items.count - items) * repeats, True)
        self.ntile_filled += (self.ntile_filled - ntiles) * repeats
        self.last_word += period * repeats

    def _command(self, index):
        """One command (rules 1 to 3 and 9): dispatch, then the loader, or the fetcher's and feeder's layer."""
        command, starts, inputs_done = self.program.commands[index], self.starts, self.inputs_done

        def done_at(history, wait, before):
            # The cycle the count reaches the wait: ``wait`` is the count modulo 2**WAIT_BITS (rtl.mlp.satisfied),
            # of commands that came before this one.
            target = before - (before - wait) % (1 << WAIT_BITS)
            return history[target - 1] if target > 0 else NEVER

        op, depth = command["op"], Dispatcher.QUEUE
        cycle = self.dispatched[-1] + 1 if self.dispatched else self.release
        if self.commands_at is not None or "cmd" in self.patterns:
            # Offered from the cycle after the command before it fired (from cycle 0 for the first), not before its
            # not-before cycle, in the first cycle from then the Player does not stall.
            offer = max(self.dispatched[-1] + 1 if self.dispatched else 0,
                        0 if self.commands_at is None else int(self.commands_at[index]))
            cycle = max(cycle, self.patterns["cmd"].first(offer) if "cmd" in self.patterns else offer)
        for queue in ("load",) if op == Op.INPUT else ("feed",):
            if len(starts[queue]) >= depth:
                cycle = max(cycle, starts[queue][-depth] + 1)
        if op != Op.INPUT and len(starts["fetch"]) >= depth:
            others, cycle = cycle, max(cycle, starts["fetch"][-depth] + 1)
            if self.robust and (max(others, self.fetch_early[-depth] + 1) != cycle
                                or self.fetch_late[-depth] + 1 > cycle):
                raise _Fragile(cycle)  # the fetcher's start, which the arbiter may move, may move the dispatch
        self.dispatched.append(cycle)
        if op == Op.INPUT:
            start = max(cycle + 1, self.last_word + 1,
                        done_at(self.layers_done, command["wait_layers"], len(self.layers_done)))
            starts["load"].append(start)
            # The words one a cycle from the cycle after the start, skipping the held cycles, each not before its
            # not-before cycle.
            count = command["items"] * command["ktiles"]
            if "act" in self.patterns:
                # Each word offered from the cycle after the one before it was taken, not before its not-before
                # cycle, in the first cycle from then the Player does not stall.
                pattern, at, last = self.patterns["act"], dict(self.inputs_at.get(index, ())), max(self.last_word, -1)
                for word in range(count):
                    last = self._unheld(max(pattern.first(max(last + 1, at.get(word, 0))), start + 1))
            else:
                last, taken = start, 0
                for word, at in self.inputs_at.get(index, ()):
                    last = self._unheld(max(self._after(last, word - taken + 1), at))
                    taken = word + 1
                last = self._after(last, count - taken)
            self.last_word = last
            inputs_done.append(last + 1)
            return

        fetch_start = max(cycle + 1, self.weights.fired + 1)
        starts["fetch"].append(fetch_start)
        if self.robust:
            self.fetch_early.append(max(cycle + 1, self.best + 1))
            self.fetch_late.append(max(cycle + 1, self.worst + 1))
            self.first_floor = cycle + 2
        else:
            self.fetch_early.append(fetch_start)
            self.fetch_late.append(fetch_start)
        feed_start = max(cycle + 1, self.items.issued + 1,
                         done_at(inputs_done, command["wait_inputs"], len(inputs_done)),
                         done_at(self.layers_done, command["wait_layers"], len(self.layers_done)))
        starts["feed"].append(feed_start)
        ntiles, per_ntile = command["ntiles"], command["items"] * command["ktiles"]
        target = self.outputs if command["to_output"] else self.holds
        last_beat = yield from self._ntile(command, fetch_start + 1, feed_start + 1)
        ntile, previous = 1, None
        while ntile < ntiles:
            # Back-pressured outputs come when the out stream is ready: their n-tiles do not repeat.
            reference, key = self._key(True) if self.ready is None or not command["to_output"] else (None, None)
            if (key is not None and previous is not None and previous[1] == key and reference > previous[0]
                    and previous[3] == self.shared):
                # The n-tiles repeat: as many as end by the horizon in one go, their results as repeats of the
                # last one's.
                period = reference - previous[0]
                left = min(ntiles - ntile, (self.horizon - reference) // period)
                if left > 0 and self._leaps(period * left):
                    added = target.runs[previous[2]:]
                    if len(added) == 1:
                        first, count, step, _, _ = added[0]
                        target.add(first + period, count, step, left, period)
                    else:
                        for k in range(1, left + 1):
                            for first, count, step, times, every in added:
                                target.add(first + k * period, count, step, times, every)
                    self._shift(period * left, per_ntile * left, True)
                    self.ntile_filled += left
                    last_beat += period * left
                    ntile += left
                    previous = None
                    continue
            previous = None if key is None else (reference, key, len(target.runs), self.shared)
            last_beat = yield from self._ntile(command, None, NEVER)
            ntile += 1
        self.layers_done.append((last_beat + TO_WRITER if self.ready is None else self.take_last) + 2)


def _arbitrate(lanes, robust_from=FINISHED, done=None):
    """Drive the lanes' :meth:`_Lane.run` generators through the weight memory's round-robin arbiter (rule 4),
    one step per grant. A lane sent its fire is told the first cycle another lane may request in (its horizon):
    it may fire alone up to it (and then the arbiter's next choice is made in its last fire's cycle).

    From cycle ``robust_from`` on, the run turns robust: each lane runs to its end alone, keeping the earliest and
    the latest each word may fire whatever the others do (a requesting lane is granted within as many decisions
    as there are lanes that may request: those not past their last fire). ``done`` gives ``{index: lane}`` of
    lanes that ran robust to their end in an earlier try: they are not run again, and their latest last fires
    bound the competition. A word whose head of the word FIFO, or a command whose dispatch, these bounds could
    move raises :class:`_Fragile` with the cycle and ``{index: lane}`` of the lanes that ran robust to their
    end."""
    count, done = len(lanes), done or {}
    runs = [lane.run() for lane in lanes]
    pending = [_next(run, None) for run in runs]   # each lane's request, from that cycle on
    orders = [[(first + k) % count for k in range(count)] for first in range(count)]
    pointer, cycle, fired_now = 0, NEVER, -1
    while True:
        if cycle >= robust_from:
            active = [k for k in range(count) if pending[k] != FINISHED]
            fragile, found = FINISHED, {}
            for k in active:
                if k in done:
                    continue
                lane = lanes[k]
                lane.robust, lane.best, lane.worst = True, lane.last_fire, lane.last_fire
                lane.rivals = sorted(done[j].worst if j in done else FINISHED for j in active if j != k)
                lane.horizon = lane.segment_end(lane.last_fire + 1)
                try:
                    _next(runs[k], None)
                    found[k] = lane
                except _Fragile as error:
                    fragile = min(fragile, error.args[0])
            if fragile != FINISHED:
                raise _Fragile(fragile, found)
            return
        # The grant of cycle + 1: the first lane from the pointer on requesting in this cycle.
        chosen = next((k for k in orders[pointer] if pending[k] <= cycle or k == fired_now), None)
        if chosen is None:
            cycle, fired_now = min(pending), -1
            if cycle == FINISHED:
                return
            continue
        pointer = orders[chosen][1 % count]
        cycle += 1
        fired_now = -1
        if pending[chosen] <= cycle:
            lane = lanes[chosen]
            lane.horizon = min((pending[k] for k in orders[chosen][1:]), default=FINISHED)
            pending[chosen] = _next(runs[chosen], cycle)
            cycle, fired_now = lane.last_fire, chosen


def _next(run, value):
    """The generator's next request cycle (``FINISHED`` when it has finished)."""
    try:
        return run.send(value)
    except StopIteration:
        return FINISHED


def engine_timing(plan, *, release=None, not_before=None, pause=None, seed=1):
    """The cycle of every output transfer of ``plan`` on the engine, and the run's cycles (see the module
    documentation for the conditions and the rules).

    Parameters
    ----------
    plan : rpaccel.host.driver.mlp.EnginePlan
        What the engine runs (its geometry gives the configuration).
    release : int, optional
        The cycle the commands are let in (default: the cycle after the image's last word was written, as
        :class:`~rpaccel.sim.mlp_harness.EngineHarness` does).
    not_before : dict, optional
        ``{input port: cycles}`` as :meth:`Player.run <rpaccel.sim.player.Player.run>` takes them (for ``wload``,
        ``cmd<l>`` and ``act<l>``): a word is not offered before its cycle.
    pause : float or dict, optional
        The Player's ``pause`` (a probability for every port, or ``{port: probability}``): idle input cycles and
        back-pressured outputs, drawn as the Player draws them from ``seed``.
    seed : int
        The Player run's seed.

    Returns
    -------
    EngineTiming
    """
    geometry = plan.geometry
    ports = {"wload": len(plan.weights.words)}
    for lane, program in plan.lanes.items():
        ports[f"cmd{lane}"], ports[f"act{lane}"] = len(program.commands), len(program.inputs)
    not_before = dict(not_before or {})
    unknown = sorted(set(not_before) - set(ports))
    if unknown:
        raise ValueError(f"Not-before cycles for {unknown[0]!r}, which is not an input port of the plan "
                         f"({', '.join(sorted(ports))})")
    at = {port: not_before_array(port, cycles, ports[port]) for port, cycles in not_before.items()}
    outputs = {f"out{lane}" for lane in plan.lanes}
    pause = dict(pause) if isinstance(pause, dict) else dict.fromkeys((*ports, *outputs), pause or 0.0)
    unknown = sorted(set(pause) - set(ports) - outputs)
    if unknown:
        raise ValueError(f"Pause for {unknown[0]!r}, which is not a port of the plan "
                         f"({', '.join(sorted((*ports, *outputs)))})")
    patterns = {port: _Pattern(probability, seed, port) for port, probability in pause.items() if probability}
    if release is None:
        # The image's words one a cycle from cycle 0, each offered not before its cycle, in a cycle the Player does
        # not stall; the commands from the cycle after the last.
        words = at.get("wload", np.full(ports["wload"], NO_CYCLE, dtype=np.int64))
        count = len(words)
        if "wload" not in patterns:
            release = count + max(0, int((words - np.arange(count)).max(initial=0)))
        elif count:
            # In the free cycles' ranks: word w takes the rank after word w - 1's, or its not-before cycle's.
            ranks = patterns["wload"].rank(np.maximum(words, 0)) - np.arange(count)
            release = patterns["wload"].nth(count - 1 + int(np.maximum.accumulate(ranks)[-1])) + 1
        else:
            release = 0
    elif "wload" in at or "wload" in patterns:
        raise ValueError("Give either the release cycle or the weight words' not-before cycles or pause, not both")
    release = int(release)
    if release < 0:
        raise ValueError(f"The release cycle must not be negative, not {release}")
    alone = len(plan.lanes) == 1
    robust_from, done = release, {}
    while True:
        units = [_Lane(geometry, plan.split, plan.lanes[lane], release, alone=alone,
                       commands_at=at.get(f"cmd{lane}"), inputs_at=at.get(f"act{lane}"),
                       patterns={unit: patterns[f"{unit}{lane}"] for unit in ("cmd", "act", "out")
                                 if f"{unit}{lane}" in patterns})
                 for lane in sorted(plan.lanes)]
        try:
            _arbitrate(units, FINISHED if alone else robust_from, done)
            break
        except _Fragile as fragile:
            # The lanes that ran robust to their end did so whatever the others did: their timing is the RTL's and
            # their last fires bound the competition. If that may spare the fragile step a competitor, try again
            # from the same cycle, else run exactly up to it at least, and twice as far as the last try.
            cycle, found = fragile.args
            done.update(found)
            if not any(lane.worst < cycle for lane in found.values()):
                robust_from = max(cycle + 1, robust_from + 2 * (robust_from - release) + 64)
    lanes = {lane: done.get(k, unit) for k, (lane, unit) in enumerate(zip(sorted(plan.lanes), units))}
    outputs = {f"out{lane}": unit.outputs.array() for lane, unit in lanes.items()}
    last = max((int(cycles[-1]) for cycles in outputs.values() if len(cycles)), default=-1)
    return EngineTiming(outputs=outputs, cycles=last + 1,
                        layers_done={lane: np.array(unit.layers_done, dtype=np.int64) for lane, unit in lanes.items()})
