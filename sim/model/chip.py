"""A transaction-level timed model of the whole chip: the command stream in, the responses out with their cycles.

:class:`TimedChip` runs a program in two passes. The values come from the untimed functional model
(:class:`~rpaccel.sim.model.functional.FunctionalChip`), which also records what each unit's work depends on in the
data (the lookups per item, the dynamic cache's misses, each filter's selection passes). The cycles come from a
discrete-event simulation of the chip's units over the same commands: the controller's in-order dispatch into
queues of 16, its barriers, the fetcher, the embedding unit, the joiner, the lanes' front ends and engine lanes, the
weight loader, the score sequencers and their top-k and filter units, and the memory shared through the arbiter.

This model is *not* exact (issue 20's exact model is built unit by unit, docs/model.md). It works at the grain of
a unit's instruction: a transfer of ``n`` words between two units is a segment whose first and last words have
cycles and whose words between are spread evenly; a consumer takes a segment at its own pace, no earlier than the
producer offers it, and a producer whose buffer downstream is small waits until its segment has been taken
(back-pressure at segment grain). Memory reads are the RTL's requests (a fetcher's per item's area, an embedding
unit's per missed line, a weight loader's bursts), granted one a cycle round robin while the memory model's queue
has room and served in order at its bandwidth once due, with each requester's limit on lines in flight. The rules
for each unit are in its process below, with the RTL mechanism they stand for; where a rule is coarser than
the RTL, its docstring says so. The error against the RTL is measured, per case, by ``rpaccel bench model``.

The simulation is eager (:class:`_Sim`): a process that would run next anyway goes on without the event queue,
and the memory's requesters take runs of steps at once while no other process is due before them and the arbiter
has no other request (a read's requests with its waits for lines in flight, the embedding unit's misses with their
admission behind the grants; the arbiter's decision made in the requester's process). Every step keeps its cycle
and its order among the others', so the result is the same as with every step through the queue
(``TimedChip(eager=False)``, the reference the tests hold it to); RecPipe's 2-stage query on ``paper`` takes some
7,000 process steps instead of 74,000.

What the model gives: every response's cycle (responses in the chip's order, the values the functional model's),
the counters (the functional ones exact; ``CYCLES`` and the ``BUSY_*`` counters from the simulation), and
:class:`ModelDevice`, a :class:`~rpaccel.host.driver.device.Device` on which timed traces (e.g. a replay) run as on
the RTL.
"""

import heapq
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ...embedding import ceil_log2
from ...host.driver.codec import codec, to_ints
from ...host.driver.device import Device, OutputStream, Port, PortStats, TraceResult
from ...host.driver.interaction import encode_items, output_words
from ...rtl.accel.controller import QUIET_CYCLES, counter_ids
from ...rtl.accel.isa import Counter, FetchSource, Opcode, ResponseKind, ScoreDest
from ...rtl.interaction import MODES
from ...rtl.mlp import WAIT_BITS, Op, Unpacker
from ...rtl.topk import unit_latency
from .engine import FINISHED, ITEM_HEAD, NEVER, SLICES, TO_ISSUE, _Items, _Stalls, _Weights
from .functional import Deadlock, FunctionalChip, _ceil_div, _satisfied
from .interaction import InteractionModel
from .score import PASS_EXTRA, filter_kept

__all__ = ["ModelDevice", "TimedChip", "TimedRun", "requant_cycles"]

_MOD = 1 << WAIT_BITS
_MEM_WRITE = Opcode.MEM_WRITE.value
_BARRIERS = frozenset(op.value for op in (Opcode.SYNC, Opcode.MEM_WRITE, Opcode.MEM_READ, Opcode.SPLIT,
                                          Opcode.COUNTERS))
#: Entries of each unit's instruction queue in the controller (``Controller(queue_depth=16)``).
QUEUE_DEPTH = 16
#: Cycles from a command's dispatch to its unit seeing it (the queue's registered read).
DISPATCH = 2
#: Cycles between two MEM_WRITEs: the write through the arbiter (two cycles of activity), then the quiet cycles.
WRITE_CYCLES = 2 + QUIET_CYCLES
#: Cycles from a MEM_WRITE's turn in the controller to its grant, against a read's (one cycle earlier).
WRITE_OFFSET = 0
#: A controller response leaves this many cycles after its barrier runs.
RESPOND = 2
#: Cycles a COUNTERS waits before its first answer (the embedding unit's counters asked for and come back).
COUNTERS_WAIT = 9
#: A MEM_READ's first DATA leaves this many cycles after the memory's latency from the barrier running.
READ_EXTRA = 4
#: Cycles from the fetcher taking a FETCH to its first read request (the sequencer's token, the issuer's address).
FETCH_ISSUE = 4
#: Cycles from a SCORE's last logit taken to the chip being quiet, when its logits go out as LOGIT responses (the
#: response merge's queue and register): a barrier behind it runs that much later.
LOGIT_QUIET = 2
#: Cycles from the grant of a FETCH's third last token's last read to the fetcher starting the next FETCH.
WALK_END = 0
#: Cycles from the weight loader seeing a WEIGHTS to its first read request (its take and the request register).
WEIGHTS_ISSUE = 4
#: Cycles from a filter's output pass reading its last kept pair to ``results_done`` counting the result.
FILTER_OUT = 5
#: Cycles from a LIST's line arriving to the reads of the items it indexes.
LIST_TO_READ = 1
#: Cycles the fetcher takes per EMB command on average (the embedding unit's command intake: 2, 3, 2, 3, ...).
EMB_CYCLES = 2.5
#: Cycles from a pooled word's write into the joiner's FIFO to the interaction unit taking it (the FIFO's write
#: and registered read, the sender's register).
JOIN_PIPE = 6
#: Join jobs the joiner holds ahead of their bottom block (``join.JOB_QUEUE_DEPTH``).
JOB_QUEUE = 4
#: Cycles from a join job's last bottom word taken to the job leaving the lane's job queue (the bank's descriptor).
JOB_TAKE = 1
#: Cycles from a memory request's issue to the memory's queue taking it (the arbiter's grant, its register slice).
ACCEPT = 2
#: A granted request is due at the memory ``latency - DUE`` cycles after its grant plus :data:`ACCEPT` (its lines
#: reach the requester 4 cycles after their read: ``latency + 1`` cycles after the grant on an idle memory).
DUE = 5
#: Cycles a request keeps its place in the memory's queue after its last line is read, against its grant.
HELD = 0
#: Lines a memory request carries at most, by default (the weight loader's bursts, a list's lines).
PIECE = 8
#: Cycles from a line's arrival to the unit acting on it (response routing, buffer, parser).
LINE_TO_USE = 3
#: Cycles from a record line's arrival to the fetcher's parser offering its first dense word or lookup (the
#: response buffer's write and buffered read).
LINE_TO_PARSE = 1
#: Cycles from a lookup taken by the embedding unit to its miss's read request (F1..F7, the read buffer).
MISS_ISSUE = 11
#: Misses the embedding unit admits ahead of the arbiter's grants (``EmbeddingUnit._MISS_QUEUE``).
MISS_QUEUE = 8
#: Cycles from a missed line's arrival to its bag's pooled vector (read buffer, row assembly, pooling,
#: requantisation).
MISS_PIPE = 25
#: Embedding unit pipeline: command to pooled vector (F1..F7, row assembly, pooling, requantisation).
EMB_PIPE = 16
#: Engine: a layer's last item to ``layers_done`` counting it, beyond ``rows + cols`` (array 4, slices 2,
#: accumulator 4, post-processing and writer 11, out 1, the count 2).
ENGINE_PIPE = 24
#: Engine: a LAYER's first item after the ``inputs_done`` or ``layers_done`` it waits for (feeder start, reads,
#: feed FIFO, slices).
FEED_START = 5
#: Engine: a LAYER's dispatch to its first item in the array at the earliest, in this model's item cycles (the
#: feeder's start and first read, the read's latency and the feed FIFO, the slices; :attr:`LaneFeed.SHIFT` less).
TO_ITEM = 2 + ITEM_HEAD + SLICES - 2


def requant_cycles(emb, row_lines):
    """The embedding unit's requantiser's cycles per pooled vector (:class:`rpaccel.rtl.embedding.Requantizer`):
    its row's elements (``line_bytes << row_lines``) over its lanes, a chunk a cycle, at least one.

    Parameters
    ----------
    emb : rpaccel.embedding.EmbeddingGeometry
    row_lines : numpy.ndarray
        Per bag, log2 of its table's lines per row.
    """
    return np.maximum(-(-(emb.line_bytes << np.asarray(row_lines)) // emb.requant_lanes), 1)


class _Alone:
    """The lane :meth:`rpaccel.sim.model.engine._Weights.tile` runs for: alone on the weight memory (each request
    fires as the only requester's, rule 4), never robust."""

    horizon = FINISHED
    robust = False
    first_floor = best = worst = last_fire = NEVER
    shared = 0


class LaneFeed:
    """A lane's engine from its weight words to its items in the array, by :mod:`rpaccel.sim.model.engine`'s rules 3
    to 11 and its own state classes, for the lane alone on the weight memory, its sub-array never stalling and its
    outputs never back-pressured: the fetcher's requests a word a cycle from the LAYER's dispatch, the word FIFO's
    16 credits, each n-tile's bias words before its first tile, the unpacker's n-tile FIFO of 4, the rows through
    the two slices into the two banks in turn (from ``rows - 1`` cycles after the last item of the tile two
    before), a tile's items one a cycle from the cycle after its last row, behind the feed FIFO's credits. Cycles
    are the chip model's: an item's in the array two cycles before the engine model's (``layers_done`` counts a
    layer ``rows + cols`` + :data:`ENGINE_PIPE` cycles after its last item).

    An n-tile's k-tiles after its first repeat: once the lane's state before a k-tile, relative to its last
    request, is one it was in before an earlier k-tile of the n-tile, every k-tile from there repeats those
    between, later by as many cycles, so whole periods are skipped (an 8 x 8 sub-array runs a 1,024 x 512 layer
    as 64 n-tiles of 128 k-tiles).

    Parameters
    ----------
    shape : rpaccel.rtl.mlp.SplitShape
        The lane's sub-array.
    latency : int
        The sub-array's latency (``ArrayGeometry.latency``).
    periodic : bool
        Skip repeating k-tiles (the default); ``False`` steps through every k-tile, the reference the skips are
        tested against.
    """

    #: Chip model cycles of an item in the array, before the engine model's.
    SHIFT = 2

    def __init__(self, shape, latency, *, periodic=True):
        self.shape, self.latency, self.periodic = shape, latency, periodic
        self.weights, self.items, self.stalls = _Weights(), _Items(), _Stalls()
        self.ntile_filled = 0
        self.ntile_taken = deque(maxlen=Unpacker.NTILE_FIFO)
        self.beat_free = NEVER
        self.memo = {}
        self.layers = {}

    def _loaded(self, bias, first_request, gate, bias_gate):
        """A tile's weights (``bias`` bias words first): the cycle its last row is accepted (memoised by the state
        relative to the last request, as the engine model's lanes alone)."""
        weights = self.weights
        reference = weights.fired
        key = None
        if reference != NEVER:
            key = (weights.key(reference), bias, None if first_request is None else first_request - reference,
                   max(gate - reference, 0), max(bias_gate - reference, 0))
            found = self.memo.get(key)
            if found is not None:
                state, fired, loaded = found
                weights.restore(state, reference + fired)
                return reference + fired + loaded
        steps = weights.tile(_Alone, self.shape, bias, first_request, gate, bias_gate, self.stalls)
        try:
            next(steps)
        except StopIteration as stop:
            loaded = stop.value
        else:
            raise AssertionError("a lane alone never waits for the arbiter")
        if key is not None:
            self.memo[key] = (weights.key(weights.fired), weights.fired - reference, loaded - weights.fired)
        return loaded

    def _skip(self, seen, step, steps, items, *, whole=False):
        """Before step ``step`` of ``steps`` (k-tiles of an n-tile, not its first: no bias words or gates of their
        own; or ``whole`` n-tiles of a layer, not its first: no first request), each of ``items`` items: if the
        lane's state relative to its last request was seen before step ``j``, skip the whole periods of ``step -
        j`` steps that leave at least one step to run; returns the step to run next."""
        weights, cursor = self.weights, self.items
        reference = weights.fired
        if reference == NEVER or self.stalls.ends or cursor.count < cursor.LAG:
            return step
        key = self._state(reference) if whole else (weights.key(reference), cursor.snapshot(reference))
        earlier = seen.get(key)
        seen[key] = (step, reference)
        if earlier is None:
            return step
        period, cycles = step - earlier[0], reference - earlier[1]
        skipped = (steps - step - 1) // period
        if skipped:
            weights.restore(key[0], reference + skipped * cycles)
            cursor.shift(skipped * cycles, skipped * period * items)
            if whole:
                self.ntile_filled += skipped * period
                self.beat_free += skipped * cycles
                self.ntile_taken = deque((t + skipped * cycles for t in self.ntile_taken), maxlen=Unpacker.NTILE_FIFO)
            seen.clear()
        return step + skipped * period

    def layer(self, dispatch, start, items, ktiles, ntiles):
        """A LAYER of ``items`` over ``ktiles x ntiles`` tiles, dispatched to the engine in ``dispatch`` (its
        fetcher starts the cycle after, or after the previous LAYER's last request), its first item not before
        ``start`` (an item's cycle); returns its first and last item's cycles.

        A LAYER that starts from a state seen before relative to the lane's last request (a sub-batch's layers
        after the first sub-batch's, as a rule) is taken from a memo, with the state it leaves."""
        cursor, weights = self.items, self.weights
        first_request = max(dispatch + 1, weights.fired + 1) + 1
        first_issue = max(start + self.SHIFT - ITEM_HEAD - SLICES, cursor.issued + 2)
        reference = weights.fired
        if not self.periodic or reference == NEVER or self.stalls.ends:
            return self._layer(first_request, first_issue, items, ktiles, ntiles)
        key = (self._state(reference), first_request - reference, first_issue - reference, items, ktiles, ntiles)
        found = self.layers.get(key)
        if found is not None:
            first, last, fired, state = found
            self._restore(state, reference + fired, cursor.count + items * ktiles * ntiles)
            return reference + first, reference + last
        first, last = self._layer(first_request, first_issue, items, ktiles, ntiles)
        self.layers[key] = (first - reference, last - reference, weights.fired - reference,
                            self._state(weights.fired))
        return first, last

    def _state(self, reference):
        # The lane's state relative to cycle ``reference`` (its last request's fire), restorable.
        def relative(t):
            return None if t == NEVER else t - reference

        return (self.weights.key(reference), self.items.snapshot(reference),
                min(self.ntile_filled, Unpacker.NTILE_FIFO), relative(self.beat_free),
                tuple(t - reference for t in self.ntile_taken))

    def _restore(self, state, reference, count):
        weights, items, filled, beat_free, taken = state
        self.weights.restore(weights, reference)
        self.items.restore(items, reference, count)
        self.ntile_filled = filled
        self.beat_free = NEVER if beat_free is None else beat_free + reference
        self.ntile_taken = deque((t + reference for t in taken), maxlen=Unpacker.NTILE_FIFO)

    def _layer(self, first_request, first_issue, items, ktiles, ntiles):
        shift, shape, cursor = self.SHIFT, self.shape, self.items
        first = None
        seen_ntiles = {}
        ntile = 0
        while ntile < ntiles:
            if ntile and self.periodic and ntiles - ntile > 1:
                ntile = self._skip(seen_ntiles, ntile, ntiles, items * ktiles, whole=True)
            bias_gate = self.ntile_taken[0] + 1 if self.ntile_filled >= Unpacker.NTILE_FIFO else NEVER
            self.ntile_filled += 1
            seen = {}
            ktile = 0
            while ktile < ktiles:
                if ktile and self.periodic and ktiles - ktile > 1:
                    ktile = self._skip(seen, ktile, ktiles, items)
                gate = cursor.tile_last[0] + 1 + max(shape.rows - 2, 0)
                loaded = self._loaded(shape.bias_words if ktile == 0 else 0, first_request, gate,
                                      bias_gate if ktile == 0 else NEVER)
                first_request = None
                issue, x = cursor.start(loaded, first_issue, self.stalls)
                first_issue = NEVER
                accepted = x + items - 1
                cursor.finish(items, issue, x, accepted, self.stalls)
                first = x if first is None else first
                ktile += 1
            # The n-tile's last results through the accumulator and the beat issuer (its n-tile FIFO entry taken
            # with its last beat).
            last_beat = max(x + self.latency + SLICES + TO_ISSUE, self.beat_free) + shape.beats * items - 1
            self.beat_free = last_beat + 1
            self.ntile_taken.append(last_beat)
            ntile += 1
        return first - shift, accepted - shift


# The event loop ----------------------------------------------------------------------------------------------------

class _Event:
    """Something that happens once, at a cycle; processes wait on it."""

    __slots__ = ("time", "value", "waiters")

    def __init__(self):
        self.time = None
        self.waiters = []
        self.value = None


class _Sim:
    """A discrete-event loop of generator processes: a process yields a cycle (resume then) or an :class:`_Event`
    (resume once it has happened, at its cycle or now, whichever is later). Processes run in order of their cycle,
    those of one cycle in the order they were scheduled.

    ``eager``: a process that would be the next to run anyway goes on without the queue (:meth:`clear`,
    :meth:`advance`), and units take several steps at once where no other process runs between them; the order
    of everything is the same. ``False`` is the reference the eager steps are tested against.
    """

    def __init__(self, eager=True):
        self.now = 0.0
        self.eager = eager
        self._heap = []
        self._seq = 0

    def clear(self, t):
        """Whether no other process is due by cycle ``t`` (so none can run before it); False if not eager."""
        heap = self._heap
        return self.eager and (not heap or heap[0][0] > t)

    def process(self, generator):
        self._push(self.now, generator)

    def fire(self, event, t):
        if event.time is not None:
            return
        event.time = t
        for generator in event.waiters:
            self._push(max(t, self.now), generator)
        event.waiters = []

    def advance(self, t):
        """Move the clock to ``t`` for the running process if no other process is due by then (as if it yielded
        ``t`` and went on at once, see :meth:`clear`); returns whether it did."""
        if not self.clear(t):
            return False
        self.now = t
        return True

    def _push(self, t, generator):
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, generator))

    def run(self):
        """Run the processes until none can go on. A process resuming before every other one (strictly: one due
        at the same cycle was pushed earlier and goes first) goes on at once, without the heap."""
        heap, heappush, heappop, eager = self._heap, heapq.heappush, heapq.heappop, self.eager
        while heap:
            t, _, generator = heappop(heap)
            while True:
                self.now = t
                try:
                    request = generator.send(None)
                except StopIteration:
                    break
                if isinstance(request, _Event):
                    if request.time is None:
                        request.waiters.append(generator)
                        break
                    t = max(request.time, t)
                else:
                    t = max(float(request), t)
                if not eager or (heap and heap[0][0] <= t):
                    self._seq += 1
                    heappush(heap, (t, self._seq, generator))
                    break


class _Counter:
    """A completion counter (``layers_done``, the weight loader's ``done``, a holder's ``results_done``): the cycle
    each count was reached, and events for counts awaited."""

    def __init__(self, sim):
        self.sim, self.times, self._waiting = sim, [0.0], {}

    @property
    def count(self):
        return len(self.times) - 1

    def add(self, t):
        self.times.append(t)
        event = self._waiting.pop(self.count, None)
        if event is not None:
            self.sim.fire(event, t)

    def reached(self, wait):
        """An event for the count reaching ``wait`` (modulo 256 within half the range, as the RTL compares)."""
        event = _Event()
        target = self._absolute(wait)
        if target <= self.count:
            self.sim.fire(event, self.times[target])
        else:
            self._waiting.setdefault(target, event)
            event = self._waiting[target]
        return event

    def _absolute(self, wait):
        count = self.count
        if _satisfied(count % _MOD, wait):
            back = (count - wait) % _MOD
            return max(count - back, 0)
        return count + (wait - count) % _MOD


class _Channel:
    """A stream between two units as segments: ``put`` offers ``n`` words from cycle ``first`` to ``last``;
    ``take`` takes ``n`` words at ``pace`` cycles each from ``ready`` on and returns the cycles of the first and
    the last; ``taken(k)`` is an event for word ``k`` (counted from the start) having been taken."""

    def __init__(self, sim, name):
        self.sim, self.name = sim, name
        self.offered = deque()       # (start word, n, first, last, span, times) not yet fully taken
        self.put_count = 0
        self.take_count = 0
        self.take_segments = []      # (start word, n, first, last) of takes, in order
        self._arrival = None
        self._taken_waits = []       # heap of (word, seq, event)
        self._seq = 0
        self.on_take = None          # called with the cycle of the last word of each take

    def put(self, n, first, last, span=0.0, times=None):
        """Offer ``n`` words from ``first`` to ``last`` (``times``: their cycles, a :class:`_LookupSteps`, if not
        spread evenly).
        ``span``: cycles the producer needs for them once it may go on; a producer with little buffer behind it
        (``span`` > 0) stalls while its words are not taken, so they are not taken faster than that after the
        first is."""
        if n <= 0:
            return
        self.offered.append((self.put_count, n, first, last, span, times))
        self.put_count += n
        if self._arrival is not None:
            self.sim.fire(self._arrival, self.sim.now)
            self._arrival = None

    def available(self, n):
        """An event for ``n`` more words having been offered (they may still be arriving)."""
        event = _Event()
        if self.put_count - self.take_count >= n:
            self.sim.fire(event, self.sim.now)
        else:
            self._arrival = self._arrival or _Event()
            event = self._arrival
        return event

    def word_times(self, ks):
        """The cycles of words ``ks`` (offered, not yet taken), as :meth:`_word_time` gives each, as a list."""
        ks = np.asarray(ks, np.int64)
        out = np.full(len(ks), np.nan)
        for start, n, first, last, _, times in self.offered:
            inside = (ks >= start) & (ks < start + n)
            if inside.any():
                if times is not None:
                    out[inside] = times.at(ks[inside] - start)
                else:
                    out[inside] = first if n == 1 else first + (last - first) * (ks[inside] - start) / (n - 1)
        if np.isnan(out).any():
            raise AssertionError(f"{self.name}: words {ks[np.isnan(out)][:4].tolist()} not offered")
        return out.tolist()

    def _word_time(self, k):
        for start, n, first, last, _, times in self.offered:
            if start <= k < start + n:
                if times is not None:
                    return float(times.at(np.array([k - start]))[0])
                return first if n == 1 else first + (last - first) * (k - start) / (n - 1)
        raise AssertionError(f"{self.name}: word {k} not offered")

    def take(self, n, ready, pace=1.0, until=None):
        """Take ``n`` words from ``ready`` on, one per ``pace`` cycles at most (``until``: the consumer's own
        cycle for the last, if later); returns the cycles of the first and the last."""
        k0, k1 = self.take_count, self.take_count + n - 1
        first = max(ready, self._word_time(k0) + 1)
        held = sum(span * (min(start + count, k1 + 1) - max(start, k0)) / count
                   for start, count, _, _, span, _ in self.offered if span and start <= k1 and start + count > k0)
        last = max(first + (n - 1) * pace, self._word_time(k1) + 1, first + held, until or 0.0)
        self.take_count += n
        while self.offered and self.offered[0][0] + self.offered[0][1] <= self.take_count:
            self.offered.popleft()
        self.take_segments.append((k0, n, first, last))
        while self._taken_waits and self._taken_waits[0][0] <= k1:
            word, _, event = heapq.heappop(self._taken_waits)
            self.sim.fire(event, self._taken_time(word))
        if self.on_take is not None:
            self.on_take(last)
        return first, last

    def _taken_time(self, k):
        for start, n, first, last in reversed(self.take_segments):
            if start <= k < start + n:
                return first if n == 1 else first + (last - first) * (k - start) / (n - 1)
            if start + n <= k:
                break
        return 0.0

    def taken(self, k):
        event = _Event()
        if k < 0:
            self.sim.fire(event, 0.0)
        elif k < self.take_count:
            self.sim.fire(event, self._taken_time(k))
        else:
            self._seq += 1
            heapq.heappush(self._taken_waits, (k, self._seq, event))
        return event


class _LookupSteps:
    """The cycles a FETCH's lookups leave the fetcher's parser (:meth:`_Timing._lookup_steps`): per (item, line of its
    lookup area) the cycle of its first step; lookup ``j`` of an item is its entry ``j + 1``."""

    __slots__ = ("begin", "entries", "per_item", "starts")

    def __init__(self, begin, starts, per_item, entries):
        self.begin, self.starts, self.per_item, self.entries = begin, starts, per_item, entries

    def at(self, ks):
        """The cycles of the FETCH's lookups ``ks`` (an array of their places among its lookups)."""
        item = np.searchsorted(self.starts, ks, side="right") - 1
        entry = ks - self.starts[item] + 1
        line = entry // self.entries
        offset = entry - line * self.entries - ((line == 0) & (self.entries > 1))
        return self.begin[item * self.per_item + line] + offset


class _Queue:
    """An instruction queue: the controller puts (cycle, item), the unit gets them in order."""

    def __init__(self, sim, depth=None):
        self.sim, self.depth = sim, depth
        self.items = deque()
        self.got = 0
        self.put_count = 0
        self._arrival = None
        self._room = {}
        self.took_at = deque(maxlen=depth)     # the cycles the last ``depth`` items were taken

    def put(self, item, t):
        self.items.append((t, item))
        self.put_count += 1
        if self._arrival is not None:
            self.sim.fire(self._arrival, t)
            self._arrival = None

    def room(self):
        """An event for room for one more item (the item ``depth`` places back taken), at the cycle it was taken
        (a unit may take an item for a later cycle than the simulation's)."""
        event = _Event()
        need = self.put_count - self.depth + 1 if self.depth is not None else 0
        if need <= 0:
            self.sim.fire(event, self.sim.now)
        elif self.got >= need:
            self.sim.fire(event, max(self.took_at[need - self.got - 1], self.sim.now))
        else:
            event = self._room.setdefault(need, event)
        return event

    def get(self):
        """A generator: waits for the next item, returns ``(cycle put, item)``."""
        while not self.items:
            self._arrival = self._arrival or _Event()
            yield self._arrival
        t, item = self.items.popleft()
        if t > self.sim.now:
            yield t
        return t, item

    def took(self, t):
        """The unit took its head item at ``t`` (frees a place)."""
        self.got += 1
        if self.depth is not None:
            self.took_at.append(t)
        event = self._room.pop(self.got, None)
        if event is not None:
            self.sim.fire(event, t)


class _FrontEnd:
    """A lane front end's command path (:class:`rpaccel.rtl.accel.lanes.LaneFrontEnd`) between the controller's
    lane queue and the engine's dispatcher: the front end's command queue of 16 and its register slice of two
    before the engine. A command leaves the controller's queue (its place there free) a cycle after it is readable,
    a cycle after the command before it left, and a cycle after the command 16 places back left the front end's
    queue through the gate; it passes the gate two cycles after it entered (the queue's registered read), a cycle
    after the one before it, a cycle after the command two places back entered the engine (the slice's room), and
    two cycles after the weight loader completed the WEIGHTS it waits for.
    So the controller holds a lane's command only when 34 of them wait (the RTL's cycles: the controller's queue
    writes of a lane whose engine is behind follow its dispatches by 34 commands and 3 cycles)."""

    #: Commands the front end's queue holds (``LaneFrontEnd.COMMANDS``).
    COMMANDS = 16
    #: Cycles from the model's gate (its command at the engine's unit queue, :meth:`_Timing.lane_gate`) back to the
    #: command entering the engine (the RTL's ``engine_cmd`` transfer).
    GATE_LAG = 4

    __slots__ = ("_room", "entered", "left", "passed", "puts", "sim", "waiting", "waits", "weights")

    def __init__(self, sim, weights):
        self.sim, self.weights = sim, weights
        self.puts, self.waits, self.left, self.passed, self.entered = [], [], [], [], []
        self.waiting = False
        self._room = None

    def room(self):
        """An event for a place in the controller's lane queue (for the next command put): the cycle the command
        :data:`QUEUE_DEPTH` places back left it, which the front end may know ahead of time."""
        event = _Event()
        k = len(self.puts) - QUEUE_DEPTH
        if k < 0:
            self.sim.fire(event, self.sim.now)
        elif k < len(self.left):
            self.sim.fire(event, self.left[k])
        else:
            self._room = (k, event)
        return event

    def put(self, t, wait_weights):
        """The controller put a command into the lane's queue, readable from ``t``, waiting for ``wait_weights``."""
        self.puts.append(t)
        self.waits.append(wait_weights)
        self._advance()

    def gated(self, t):
        """The model's gate let the next command into the engine's unit queue at ``t``."""
        self.entered.append(t - self.GATE_LAG)
        self._advance()

    def _advance(self):
        puts, left, passed, entered, depth = self.puts, self.left, self.passed, self.entered, self.COMMANDS
        while True:
            k = len(left)
            if k < len(puts) and (k < depth or len(passed) > k - depth):
                t = puts[k] + 1
                if k:
                    t = max(t, left[-1] + 1)
                if k >= depth:
                    t = max(t, passed[k - depth] + 1)
                left.append(t)
                if self._room is not None and self._room[0] == k:
                    self.sim.fire(self._room[1], t)
                    self._room = None
                continue
            j = len(passed)
            if j < len(left) and (j < 2 or len(entered) > j - 2):
                weights = self.weights.reached(self.waits[j])
                if weights.time is None:
                    if not self.waiting:
                        self.waiting = True
                        weights.waiters.append(self._resume())
                    return
                t = max(left[j] + 2, weights.time)
                if j:
                    t = max(t, passed[-1] + 1)
                if j >= 2:
                    t = max(t, entered[j - 2] + 1)
                passed.append(t)
                continue
            return

    def _resume(self):
        """A process (one step) that goes on once the weights the next command waits for are loaded."""
        self.waiting = False
        self._advance()
        yield from ()


class _Memory:
    """The memory behind the arbiter (:class:`rpaccel.rtl.accel.memarb.MemoryArbiter` in front of
    :class:`rpaccel.rtl.memory.MemoryModel`): requests granted round robin among the requesters, one a cycle, while
    the memory's queue has room; served in order at its bandwidth (see :meth:`read`)."""

    #: Requesters behind the arbiter, in its port order (``rtl.accel.top.REQUESTERS``).
    FETCHER, EMBEDDING, WEIGHTS = 1, 2, 3

    def __init__(self, sim, config, geometry):
        self.sim = sim
        self.per_line = max(geometry.line_bytes / config.mem_bytes_per_cycle, 1.0)
        self.latency = config.mem_latency_cycles
        self.free = 0.0
        self.held = deque()          # per request in the memory's queue: the cycle after its last line is read
        # rtl.accel.top: the memory model's queue, and the two places of the arbiter's register slice before it.
        self.queue_depth = max(16, geometry.emb.max_outstanding) + 2
        self.pending = [deque() for _ in range(4)]                  # per requester: (lines, event) to grant
        self.granted = 0             # the requester granted last
        self.next_grant = 0.0
        self._wake = None

    def arbiter(self):
        """The arbiter's process: at most a grant a cycle, while the memory's queue has room, to the first
        requester with a request after the one granted last (the cycle the RTL's requester sees its request taken).
        A granted request is due ``latency -`` :data:`DUE` cycles after the memory takes it (:data:`ACCEPT` cycles
        after its grant) and read after the requests ahead of it, its
        lines one per ``line_bytes / bytes_per_cycle`` cycles (at most one a cycle); a line reaches the requester
        4 cycles after its read (the memory's registers and response queue, the arbiter's routing)."""
        sim, held, pending = self.sim, self.held, self.pending
        while True:
            if not any(pending):
                self._wake = _Event()
                yield self._wake
                continue
            t = max(sim.now, self.next_grant)
            while held and held[0] <= t:
                held.popleft()
            if len(held) >= self.queue_depth:
                t = held[0]
            if t > sim.now:
                yield t
                continue
            for k in range(1, len(pending) + 1):
                requester = (self.granted + k) % len(pending)
                if pending[requester]:
                    break
            lines, event = pending[requester].popleft()
            event.value = self._grant(requester, lines, t)
            sim.fire(event, t)

    def _grant(self, requester, lines, t):
        """Grant ``requester``'s read of ``lines`` lines in cycle ``t``; returns the cycles its first and last
        line arrive."""
        self.granted = requester
        beat = max(t + ACCEPT + self.latency - DUE, self.free)
        self.free = beat + lines * self.per_line
        self.held.append(self.free + HELD)
        self.next_grant = t + 1
        return beat + 4, beat + (lines - 1) * self.per_line + 4

    def idle(self):
        """Whether no request is pending and the arbiter's process waits for one."""
        return self._wake is not None and not any(self.pending)

    def decision(self, t):
        """The cycle at which the idle arbiter grants a request made at ``t``: its next grant's turn, and room in
        the memory's queue (the request ``queue_depth`` places back in it served)."""
        held = self.held
        t = max(t, self.next_grant)
        if len(held) >= self.queue_depth and held[len(held) - self.queue_depth] > t:
            return held[len(held) - self.queue_depth]
        return t

    def request(self, requester, lines):
        """A generator: ``requester`` asks for ``lines`` lines now; returns the cycles its first and last line
        arrive once granted. Without the arbiter's process where no other request is pending and the arbiter is
        idle: granted at once where the arbiter would (the queue with room, no grant yet this cycle), and
        otherwise at the arbiter's next decision if no other process runs before it (none could ask meanwhile)."""
        sim, held = self.sim, self.held
        now = sim.now
        while held and held[0] <= now:
            held.popleft()
        if not any(self.pending):
            if self.next_grant <= now and len(held) < self.queue_depth:
                return self._grant(requester, lines, now)
            if self._wake is not None:
                t = self.decision(now)
                if sim.clear(t):
                    value = self._grant(requester, lines, t)
                    yield t
                    return value
        event = _Event()
        self.pending[requester].append((lines, event))
        self.wake()
        yield event
        return event.value

    def writes(self, first, count, step):
        """``count`` writes granted from cycle ``first``, one every ``step`` cycles: each holds a place in the
        memory's queue until it is served, its latency after it entered (the reads behind it wait for its place
        and its turn)."""
        for k in range(max(count - self.queue_depth, 0), count):
            beat = max(first + step * k + ACCEPT + self.latency - DUE, self.free)
            self.free = beat + self.per_line
            self.held.append(self.free + HELD)

    def wake(self):
        """A request is pending: the arbiter looks again now."""
        if self._wake is not None:
            wake, self._wake = self._wake, None
            self.sim.fire(wake, self.sim.now)

    def read(self, requester, lines, in_flight, piece=PIECE, grants=None):
        """A generator: ``requester`` reads ``lines`` lines in requests of ``piece`` lines, at most ``in_flight``
        lines outstanding; returns the cycles the first and the last line reach the requester (``grants``: a list
        the cycle of each request's grant is appended to)."""
        sim, first, held = self.sim, None, self.held
        last = sim.now
        arrivals = deque()       # (lines issued up to this request, its last line's arrival)
        done = arrived = 0
        size = max(int(piece), 1)
        alone = None             # the arbiter idle (known while this process goes on without a yield)
        while done < lines:
            piece = min(size, lines - done)
            if alone is None:
                alone = sim.eager and self.idle()
            if alone:
                # At once where no other process runs before the grant: the waits for lines in flight, the
                # request through the idle arbiter, as the process would go.
                t, room, k = sim.now, arrived, 0
                while done + piece - room > in_flight:
                    room, arrive = arrivals[k]
                    k += 1
                    if arrive > t:
                        t = arrive
                if sim.advance(self.decision(t)):
                    t = sim.now
                    for _ in range(k):
                        arrived, _ = arrivals.popleft()
                    request_first, last = self._grant(requester, piece, t)
                    if grants is not None:
                        grants.append(t)
                    while held[0] <= t:
                        held.popleft()
                    first = request_first if first is None else first
                    done += piece
                    arrivals.append((done, last))
                    continue
            alone = None
            while done + piece - arrived > in_flight:
                arrived, arrive = arrivals.popleft()
                if arrive > sim.now:
                    yield arrive
            request_first, last = yield from self.request(requester, piece)
            if grants is not None:
                grants.append(sim.now)
            first = request_first if first is None else first
            done += piece
            arrivals.append((done, last))
        return (first if first is not None else sim.now), last


class _MissJob:
    """An embedding job's misses (:meth:`_Timing.embedding`): per missed line the lookup it belongs to and the
    cycle that lookup is offered, the last admitted miss's cycle and lookup, the cycles the granted lines arrive;
    ``admitted`` fires once the last miss is admitted, ``done`` at the last grant."""

    __slots__ = ("admitted", "arrivals", "done", "misses", "places", "previous", "t", "word_times")

    def __init__(self, places, word_times, t, misses):
        self.places, self.word_times, self.t, self.previous, self.misses = places, word_times, t, -1, misses
        self.arrivals = []
        self.admitted, self.done = _Event(), _Event()


@dataclass(frozen=True)
class _JobTiming:
    """An interaction job's timing alone: cycles from its first word offered; its output words."""

    accept_last: int
    out_first: int
    out_last: int
    drain: int
    out_words: int


class _Busy:
    """Busy intervals of a unit (merged), for the ``BUSY_*`` counters."""

    def __init__(self):
        self.intervals = []

    def add(self, start, end):
        if end > start:
            self.intervals.append((start, end))

    def within(self, low, high):
        total, reach = 0.0, low
        for start, end in sorted(self.intervals):
            start, end = max(start, reach), min(end, high)
            if end > start:
                total += end - start
                reach = end
        return total


# The run -----------------------------------------------------------------------------------------------------------

@dataclass
class TimedRun:
    """What :meth:`TimedChip.run` returns.

    Attributes
    ----------
    responses : numpy.ndarray
        ``(n, limbs)`` packed response words, in the order they leave the chip.
    cycles : numpy.ndarray
        ``int64``, the cycle each response leaves.
    counters : dict
        The counters by name after the run (functional ones exact, timing ones from the simulation).
    total_cycles : int
        The cycle after the last response.
    """

    responses: np.ndarray
    cycles: np.ndarray
    counters: dict
    total_cycles: int


class _Recorder(FunctionalChip):
    """The functional model, recording what the timing depends on: per FETCH (in fetch order) its lookups, the
    lines its lookups read and its dynamic cache's line misses; per filter query its selection passes; per refused
    command its index; every response block with the command that produced it."""

    def __init__(self, config):
        super().__init__(config)
        self.fetches = []
        self.refused = set()
        self.passes = deque()
        self._wrap_units()

    def _wrap_units(self):
        chip, embedding, fetcher = self, self.embedding, self.fetcher
        part_of = embedding._part
        pending = deque()      # FETCH records whose lookups the embedding unit has not run yet
        emb = self.geometry.emb
        current = {}           # the batch of lookups being recorded and its per-lookup figures

        def batch_figures(batch):
            """Of every FETCH of ``batch`` at once: per bag its requantiser's cycles, its last lookup and the index
            of its last missed line (``-1``: none); per missed line its lookup; the misses before each lookup."""
            last = batch.lookups[:, 2] != 0
            ends = np.flatnonzero(last)
            before = np.concatenate([[0], np.cumsum(batch.missed)])
            bag_miss = before[ends + 1] - 1
            bag_miss[before[ends + 1] == before[np.concatenate([[0], ends[:-1] + 1])]] = -1
            return {"batch": batch, "requant": requant_cycles(emb, batch.row_lines[ends]), "bag_lookup": ends,
                    "bag_miss": bag_miss, "miss_lookups": np.repeat(np.arange(len(last)), batch.missed),
                    "before": before}

        def part(batch, k):
            part_of(batch, k)
            if current.get("batch") is not batch:
                current.update(batch_figures(batch))
            record = pending.popleft()
            first, end = int(batch.ends[k]), int(batch.ends[k + 1])
            bags = slice(int(batch.bags[k]), int(batch.bags[k + 1]))
            before = current["before"]
            misses = slice(int(before[first]), int(before[end]))
            record["requant"] = current["requant"][bags]
            record["misses"] = misses.stop - misses.start
            # Per missed line the lookup it belongs to; per bag the index of its last missed line (-1: none) and of
            # its last lookup, counted from the FETCH's first.
            record["miss_lookups"] = current["miss_lookups"][misses] - first
            bag_miss = current["bag_miss"][bags]
            record["bag_miss"] = np.where(bag_miss >= 0, bag_miss - misses.start, -1)
            record["bag_lookup"] = current["bag_lookup"][bags] - first
        embedding._part = part
        fetch_of = fetcher._fetch

        def fetch(tag, arg):
            lines = chip.counters[Counter.MEM_READ_LINES]
            queued = len(embedding.queue)
            record = {"lookups": 0, "misses": 0, "lines": 0, "requant": np.zeros(0, np.int64)}
            chip.fetches.append(record)
            fetch_of(tag, arg)
            record["lines"] = (chip.counters[Counter.MEM_READ_LINES] - lines) % (1 << 32)
            if len(embedding.queue) > queued:
                batch, k = embedding.queue[-1][2]
                record["lookups"] = batch.size(k)
                pending.append(record)
        fetcher._fetch = fetch
        for unit in self.filters:
            select = unit._select

            def filter_select(tag, scores, indices, k, report, select=select):
                n = len(scores)
                if k >= n or k == 0:
                    passes = 0
                else:
                    threshold = np.sort(scores)[::-1][k - 1]
                    passes = 6 if int((scores >= threshold).sum()) > k else 4
                # The output pass reads the pairs in arrival order up to the last one kept.
                kept = np.flatnonzero(filter_kept(np.asarray(scores), np.asarray(indices), k)) if k else ()
                chip.passes.append((passes, int(kept[-1]) + 1 if len(kept) else 0))
                return select(tag, scores, indices, k, report)
            unit._select = filter_select

    def refuse(self, tag, code, op, detail):
        self.refused.add(self._next - 1)
        super().refuse(tag, code, op, detail)


class TimedChip:
    """The chip's timed model (see the module documentation).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    eager : bool
        Units take several steps at once where no other process runs between them (the same cycles); ``False``:
        every step through the event queue, the slower reference they are tested against.
    """

    def __init__(self, config, *, eager=True):
        self.config = config
        self.eager = eager
        self.chip = _Recorder(config)
        self.geometry = self.chip.geometry
        self.interaction_jobs = {}       # the interaction unit's job timings, by (mode, vectors, dim, items)

    def run(self, words, *, arrivals=None):
        """Run packed command words (``arrivals``: a not-before cycle per word, ``-1`` for none).

        Returns
        -------
        TimedRun

        Raises
        ------
        rpaccel.sim.model.functional.Deadlock
            If the program stalls the chip (the functional model names the blocked units).
        """
        words = np.asarray(words, dtype=np.uint64).reshape(-1, self.chip._command.limbs)
        n = len(words)
        arrivals = np.full(n, -1, dtype=np.int64) if arrivals is None else np.asarray(arrivals, dtype=np.int64)
        chip = self.chip
        chip.fetches, chip.refused, chip.passes = [], set(), deque()
        functional = chip.run(words)
        columns = {"op": chip._ops, "tag": chip._tags}
        timing = _Timing(self, columns, n, arrivals)
        timing.run()
        if timing.outstanding:
            raise Deadlock([f"the timed model stopped with {timing.outstanding} instructions unfinished (the "
                            "functional model ran the program: a timing rule waits for something that never comes)"])
        return timing.result(functional)


class _Timing:
    """One run's discrete-event simulation (see :class:`TimedChip`)."""

    def __init__(self, model, columns, n, arrivals):
        self.model, self.g, self.config = model, model.geometry, model.config
        self.columns, self.n, self.arrivals = columns, n, arrivals
        self.chip = model.chip
        g = self.g
        self.sim = sim = _Sim(model.eager)
        self.memory = _Memory(sim, self.config, g)
        lanes = g.lanes
        self.fetch_queue = _Queue(sim, QUEUE_DEPTH)
        self.weight_queue = _Queue(sim, QUEUE_DEPTH)
        self.lane_queues = [_Queue(sim, QUEUE_DEPTH) for _ in range(lanes)]
        self.score_queues = [_Queue(sim, QUEUE_DEPTH) for _ in range(lanes)]
        self.emb_queue = _Queue(sim, None)
        self.emb_jobs = _Queue(sim, None)
        self.miss_requests = _Queue(sim, None)
        self.parse_queue = _Queue(sim, None)
        # The fetcher's response buffer (``Fetcher(buffer_lines=None)``'s default): lines read and not yet parsed.
        self.buffer_lines = 1 << ceil_log2(max(4 * g.emb.max_burst, self.config.mem_latency_cycles))
        self.lines_issued = self.lines_parsed = 0
        self._room_waits = []
        self.join_jobs = [_Queue(sim, JOB_QUEUE) for _ in range(lanes)]
        # The pooled writer's job queue (every lane's jobs, in fetch order; a job leaves once its last pooled vector
        # is written) and, per job in it, whether it has pooled vectors to wait for.
        self.pooled_jobs = _Queue(sim, JOB_QUEUE)
        self.pooled_pending = deque()
        self.join_accepted = _Event()  # the previous FETCH's join job taken by the joiner
        self.lookup_accepts = deque()  # per FETCH with lookups, in order: its join job taken by the joiner
        sim.fire(self.join_accepted, 0.0)
        self.dense = [_Channel(sim, f"dense[{lane}]") for lane in range(lanes)]
        self.inter = [_Channel(sim, f"inter[{lane}]") for lane in range(lanes)]
        self.bottom = [_Channel(sim, f"bottom[{lane}]") for lane in range(lanes)]
        self.logits = [_Channel(sim, f"logits[{lane}]") for lane in range(lanes)]
        self.index = [_Channel(sim, f"index[{lane}]") for lane in range(lanes)]
        self.lookups = _Channel(sim, "lookups")
        self.entries_per_line = max(8 * g.line_bytes // g.lookup_entry_bits, 1)
        self.pooled = [_Channel(sim, f"pooled[{lane}]") for lane in range(lanes)]
        self.join_wake = None          # an event for the joiner's sender: a bank loaded, vectors in, words taken
        for channel in self.inter:
            channel.on_take = lambda _t: self._wake_sender()
        self.weights_done = _Counter(sim)
        self.front_ends = [_FrontEnd(sim, self.weights_done) for _ in range(lanes)]
        self.layers_done = [_Counter(sim) for _ in range(lanes)]
        self.inputs_done = [_Counter(sim) for _ in range(lanes)]
        self.results = [_Counter(sim) for _ in range(g.holders)]
        self.holder_free = [0.0] * g.holders
        self.split = 1
        self.responses = []            # (cycle, kind, tag, count)
        self.outstanding = 0           # dispatched unit instructions not finished
        self._quiet = None
        # Out of reset the embedding unit invalidates its dynamic cache, a set of each bank a cycle: the chip is
        # quiet after.
        self.last_done = float(g.emb.sets_per_bank if g.emb.ways else 0)
        self.busy = {name: _Busy() for name in ("fetch", "embedding", "join", "interaction", "weights",
                                                *(f"lane{lane}" for lane in range(lanes)),
                                                *(f"topk{u}" for u in range(g.units)),
                                                *(f"filter{f}" for f in range(g.filters)))}
        self.inter_free = 0.0
        self._interaction = model.interaction_jobs
        self.clear_at = 0.0
        self.counter_reads = deque()   # per COUNTERS answered: (cycle, cleared)
        self.fetch_records = deque(self.chip.fetches)
        self.passes = self.chip.passes

    # Bookkeeping ---------------------------------------------------------------------------------------------------

    def began(self):
        self.outstanding += 1

    def finished(self, t):
        self.outstanding -= 1
        self.last_done = max(self.last_done, t)
        if self.outstanding == 0 and self._quiet is not None:
            self.sim.fire(self._quiet, max(t, self.sim.now))
            self._quiet = None

    def quiet(self):
        event = _Event()
        if self.outstanding == 0:
            self.sim.fire(event, max(self.last_done, self.sim.now))
        else:
            self._quiet = self._quiet or _Event()
            event = self._quiet
        return event

    def respond(self, t, kind, tag, count=1, spread=1.0):
        self.responses.append((t, kind, tag, count, spread))

    def timing_counters(self, t):
        """``{counter id: value}`` of the timing counters a COUNTERS answers at ``t`` (since the last clear)."""
        values = {Counter.CYCLES.value: t - self.clear_at}
        names = {"fetch": Counter.BUSY_FETCH, "embedding": Counter.BUSY_EMBEDDING, "join": Counter.BUSY_JOIN,
                 "interaction": Counter.BUSY_INTERACTION, "weights": Counter.BUSY_WEIGHTS}
        for name, busy in self.busy.items():
            if name in names:
                index = names[name].value
            elif name.startswith("lane"):
                index = Counter.BUSY_LANE0.value + int(name[4:])
            elif name.startswith("topk"):
                index = Counter.BUSY_TOPK0.value + int(name[4:])
            else:
                index = Counter.BUSY_FILTER0.value + int(name[6:])
            values[index] = busy.within(self.clear_at, t)
        return {index: round(value) % (1 << 32) for index, value in values.items()}

    def interaction(self, mode, vectors, dim, items):
        """The interaction unit's timing of a job alone (:class:`~rpaccel.sim.model.interaction.InteractionModel`,
        exact against the RTL): every word offered from cycle 0, the output always ready. Returns the cycles of the
        last input word accepted, the first and the last output word, the drain (last output - last input) and the
        output's words."""
        key = (mode, vectors, dim, items)
        if key not in self._interaction:
            model = InteractionModel.for_config(self.config)
            words = encode_items(mode, np.zeros((items, vectors, dim), dtype=np.int64), lanes=model.lanes,
                                 max_vectors=model.max_vectors, max_dim=model.max_dim)
            run = model.run(words, values=False)
            accept_last, out_first, out_last = (int(run.accepted[-1]), int(run.output_cycles[0]),
                                                int(run.output_cycles[-1]))
            self._interaction[key] = _JobTiming(accept_last, out_first, out_last, out_last - accept_last,
                                                items * output_words(mode, vectors, dim, self.g.rows))
        return self._interaction[key]

    def arg(self, name, i):
        return self.chip.argument(name, i)

    # Processes -------------------------------------------------------------------------------------------------------

    def run(self):
        sim = self.sim
        sim.process(self.memory.arbiter())
        sim.process(self.controller())
        sim.process(self.fetcher())
        sim.process(self.fetch_parser())
        sim.process(self.embedding())
        sim.process(self.embedding_output())
        sim.process(self.miss_issuer())
        for lane in range(self.g.lanes):
            sim.process(self.join_loader(lane))
        sim.process(self.weight_loader())
        self.banks = [[_Event(), _Event()] for _ in range(self.g.lanes)]
        for bank in (bank for banks in self.banks for bank in banks):
            sim.fire(bank, 0.0)
        self.bank_ready = [deque() for _ in range(self.g.lanes)]
        sim.process(self.join_sender())
        self.lane_inputs = [_Queue(sim, 2) for _ in range(self.g.lanes)]
        self.lane_layers = [_Queue(sim, 2) for _ in range(self.g.lanes)]
        for lane in range(self.g.lanes):
            sim.process(self.lane_gate(lane))
            sim.process(self.lane_loader(lane))
            sim.process(self.lane_feeder(lane))
            sim.process(self.scorer(lane))
        sim.run()

    def controller(self):
        """In order, one command a cycle (each not before its arrival); a barrier (SYNC, MEM_WRITE, MEM_READ,
        SPLIT, COUNTERS) waits until every earlier instruction has finished; a unit's instruction waits for room
        in its queue of 16; a refused command answers ERROR."""
        sim, g, t = self.sim, self.g, -1.0
        ops, tags = (self.columns["op"], self.columns["tag"]) if self.n else (np.zeros(0, int), ())
        writes = np.flatnonzero(ops != _MEM_WRITE)       # where each run of MEM_WRITEs ends
        i = 0
        while i < self.n:
            t = max(t + 1, float(self.arrivals[i]))
            if t > sim.now:
                yield t
            op, tag = int(ops[i]), int(tags[i])
            if i in self.chip.refused:
                self.respond(t + DISPATCH, ResponseKind.ERROR, tag)
                i += 1
                continue
            if op in _BARRIERS:
                yield self.quiet()
                t = max(t, self.last_done + QUIET_CYCLES)
                if t > sim.now:
                    yield t
                if op == _MEM_WRITE:
                    # The run of MEM_WRITEs from here, one every WRITE_CYCLES (each waits for the chip to have been
                    # quiet again), up to the first that arrives later.
                    end = writes[np.searchsorted(writes, i)] if writes.size and writes[-1] > i else self.n
                    late = np.flatnonzero(self.arrivals[i + 1:end] >= t + WRITE_CYCLES * np.arange(1, end - i))
                    run = i + 1 + int(late[0]) if late.size else end
                    self.memory.writes(t + WRITE_OFFSET, run - i, WRITE_CYCLES)
                    t += WRITE_CYCLES * (run - i - 1)
                    self.last_done = max(self.last_done, t + WRITE_CYCLES - QUIET_CYCLES)
                    i = run
                    continue
                if op == Opcode.SYNC.value:
                    self.respond(t + RESPOND, ResponseKind.DONE, int(tag))
                elif op == Opcode.MEM_READ.value:
                    count = self.arg("mem_read", i)["length"] + 1
                    per_line = max(self.memory.per_line, 1.0)
                    first = t + self.memory.latency + READ_EXTRA
                    self.respond(first, ResponseKind.DATA, tag, count, per_line)
                    self.memory.free = max(self.memory.free, t + count * self.memory.per_line)
                    self.last_done = max(self.last_done, first + (count - 1) * per_line - 1)
                elif op == Opcode.SPLIT.value:
                    self.split = self.arg("split", i)["n"]
                elif op == Opcode.COUNTERS.value:
                    count = len(dict.fromkeys(counter_ids(g)))
                    self.counter_reads.append(self.timing_counters(t))
                    if self.arg("counters", i)["clear"]:
                        self.clear_at = t
                    self.respond(t + RESPOND + COUNTERS_WAIT, ResponseKind.COUNTER, tag, count)
                    t += count + COUNTERS_WAIT - 1
                i += 1
                continue
            queue, item = None, None
            if op == Opcode.FETCH.value:
                queue, item = self.fetch_queue, ("fetch", tag, self.arg("fetch", i))
            elif op == Opcode.EMB.value:
                queue, item = self.fetch_queue, ("emb", tag, self.arg("emb", i))
            elif op == Opcode.LANE.value:
                arg = self.arg("lane", i)
                queue, item = self.lane_queues[arg["lane"]], (tag, arg)
                room = self.front_ends[arg["lane"]].room()
            elif op == Opcode.SCORE.value:
                arg = self.arg("score", i)
                queue, item = self.score_queues[arg["lane"]], (tag, arg)
            elif op == Opcode.WEIGHTS.value:
                queue, item = self.weight_queue, (tag, self.arg("weights", i))
            if queue is not None:
                if op != Opcode.LANE.value:
                    room = queue.room()
                yield room
                # A lane queue's place may be freed for an earlier cycle than the front end's step that frees it.
                t = max(t, room.time)
                self.began()
                # The fetcher takes its commands a cycle after the other units' DISPATCH (the queue's buffered read
                # and the fetcher's own register).
                queue.put(item, t + DISPATCH + (queue is self.fetch_queue))
                if op == Opcode.LANE.value:
                    self.front_ends[arg["lane"]].put(t + DISPATCH, arg["wait_weights"])
            i += 1

    def fetcher(self):
        """The fetcher's sequencer and issuer: FETCH and EMB in order. A FETCH (``SURVIVORS``: once its result is
        complete) pushes its join job (a queue of 4) and its indices (a ``LIST``'s lines read first), then issues the
        reads of its dense lines (phase 1) and of its lookup lines (phase 2), each once the response buffer has room
        for them beside the lines read and not yet parsed: the issuer runs ahead of the parser by a buffer's lines,
        so the memory's latency is paid once, not per phase."""
        sim, g = self.sim, self.g
        emb_free = 0.0       # EMBs go one per EMB_CYCLES (a float: 2, 3, 2, 3, ... cycles)
        walked = 0.0         # the cycle the sequencer has walked the last FETCH's items
        while True:
            # A command is taken at its turn (its arrival, the sequencer's walk of the FETCH before), which may be
            # before this process is done with the FETCH before's reads.
            arrived, (kind, tag, arg) = yield from self.fetch_queue.get()
            if kind == "emb":
                t = max(arrived, walked, float(np.floor(emb_free)))
                if t > sim.now:
                    yield t
                emb_free = max(emb_free, t) + EMB_CYCLES
                self.fetch_queue.took(t)
                self.parse_queue.put(("emb", tag, arg, None), t + 1)
                continue
            # The sequencer walks the previous FETCH's items (a token an item and phase, at most one a cycle) before
            # it takes the next.
            t = max(arrived, walked, float(np.floor(emb_free - EMB_CYCLES)) + 1)
            if t > sim.now:
                yield t
            record = self.fetch_records.popleft()
            if arg["source"] == FetchSource.SURVIVORS.value:
                results = self.results[arg["unit"]].reached(arg["wait_results"])
                yield results
                t = max(t, results.time)
            lane, items = arg["lane"], arg["items"]
            # The join job waits in the sequencer's register until the joiner takes it; the next FETCH starts once
            # it has.
            accepted = self.join_accepted
            yield accepted
            started = max(t, accepted.time)
            self.fetch_queue.took(started)
            self.began()          # the join job, finished by the sender
            self.join_accepted = _Event()
            if record["lookups"]:
                self.lookup_accepts.append(self.join_accepted)
            sim.process(self._join_job(tag, arg, record["lookups"] > 0, started + 1, self.join_accepted))
            list_lines = _ceil_div(2 * items, g.line_bytes) if arg["source"] == FetchSource.LIST.value else 0
            dense_lines = items * arg["dense_lines"]
            # The functional model counts the list's lines once per phase, as the list reader reads them.
            phases = 2 if arg["stride"] > arg["dense_lines"] else 1
            walked = started + phases * items + 1
            lookup_lines = max(record["lines"] - phases * list_lines - dense_lines, 0)
            if started + FETCH_ISSUE > sim.now:
                yield started + FETCH_ISSUE
            t0 = sim.now + 1
            if list_lines:
                # The list's lines, a line a request, once for each phase (each walks the list); phase 1's reads
                # go once its lines are in.
                yield from self._buffer_room(phases * list_lines)
                _, last = yield from self.memory.read(_Memory.FETCHER, list_lines, self.buffer_lines, 1)
                again = last
                if phases == 2:
                    _, again = yield from self.memory.read(_Memory.FETCHER, list_lines, self.buffer_lines, 1)
                self.lines_parsed_add(phases * list_lines, again + LINE_TO_USE)
                t0 = max(t0, last + LIST_TO_READ)
                if t0 > sim.now:
                    yield t0
            self.index[lane].put(items, t0, t0 + items - 1)
            for phase, lines in (("dense", dense_lines), ("lookups", lookup_lines)):
                first = last = None
                if lines:
                    yield from self._buffer_room(lines)
                    # A read per item's area (its dense lines, its lookup lines), at most a burst.
                    piece = min(max(lines // items, 1), g.emb.max_burst)
                    grants = []
                    first, last = yield from self.memory.read(_Memory.FETCHER, lines, self.buffer_lines, piece,
                                                              grants)
                    # The sequencer puts out an item's token as the issuer takes the one before, which it does as
                    # the last request of the one before that goes: its walk ends with the third last's.
                    per_token = len(grants) // items if len(grants) % items == 0 else 0
                    if per_token and items >= 3:
                        walked = max(walked, grants[(items - 2) * per_token - 1] + WALK_END)
                self.parse_queue.put((phase, tag, arg, (record, lines, first, last, started)), sim.now)

    def _join_job(self, tag, arg, lookups, t, accepted):
        """A FETCH's join job from cycle ``t`` in the fetcher's register, taken into the joiner's two queues at
        once (``JoinUnit``: its lane's bottom loader's and the pooled writer's, four places each) once both have
        room; ``accepted`` fires then. ``lookups``: whether the FETCH has lookups (pooled vectors to write)."""
        lane_room = self.join_jobs[arg["lane"]].room()
        yield lane_room
        pooled_room = self.pooled_jobs.room()
        yield pooled_room
        t = max(t, lane_room.time + 1, pooled_room.time + 1)
        if t > self.sim.now:
            yield t
        self.join_jobs[arg["lane"]].put((tag, arg), t)
        self.pooled_jobs.put(None, t)
        self.pooled_pending.append(lookups and arg["join"]["vectors"] > 1)
        self.sim.fire(accepted, t)
        self._pooled_written(None)

    def _pooled_written(self, t):
        """The pooled writer wrote a job's last vector at ``t`` (None: none written): the job leaves its queue, and
        so do the jobs behind it without pooled vectors."""
        pending = self.pooled_pending
        if t is not None:
            pending.popleft()
            self.pooled_jobs.took(t)
        while pending and not pending[0]:
            pending.popleft()
            self.pooled_jobs.took(self.sim.now if t is None else t + 1)

    def _buffer_room(self, lines):
        """Wait until the response buffer has room for ``lines`` more lines (a phase of more lines than the buffer
        holds: until the buffer is empty; its reads then go at the pace the buffer allows)."""
        need = self.lines_issued + min(lines, self.buffer_lines) - self.buffer_lines
        self.lines_issued += lines
        if self.lines_parsed < need:
            event = _Event()
            self._room_waits.append((need, event))
            yield event

    def lines_parsed_add(self, lines, t):
        self.lines_parsed += lines
        waiting = []
        for need, event in self._room_waits:
            if self.lines_parsed >= need:
                self.sim.fire(event, t)
            else:
                waiting.append((need, event))
        self._room_waits = waiting

    def fetch_parser(self):
        """The fetcher's parser: the lines in order, a step a cycle: phase 1's dense words to the lane, one a cycle
        (at least a cycle per item), held until the lane's INPUT has taken them; phase 2's lookups to the embedding
        unit, one a cycle, held until it has taken them; an EMB command in its place among them."""
        sim = self.sim
        free = 0.0
        while True:
            _, (phase, tag, arg, detail) = yield from self.parse_queue.get()
            if phase == "emb":
                self.emb_queue.put(("emb", tag, arg), max(sim.now, free) + 1)
                free = max(sim.now, free) + 1
                self.finished(free)
                continue
            record, lines, first, last, started = detail
            lane, items = arg["lane"], arg["items"]
            start = max(sim.now, free + 1)
            if phase == "dense":
                words = items * arg["dense_words"]
                d_first = max(start, first + LINE_TO_PARSE) if lines else start
                d_last = max(d_first + max(words, items) - 1, last + LINE_TO_PARSE if lines else 0)
                self.dense[lane].put(words, d_first, d_last)
                event = self.dense[lane].taken(self.dense[lane].put_count - 1)
                yield event
                free = max(d_last, event.time)
                self.lines_parsed_add(lines, free)
                continue
            lookups = record["lookups"]
            steps = self._lookup_steps(record, arg, lines, first, last, start) if lookups and lines else None
            if steps is not None:
                times, l_last = steps
                l_first, last_lookup = times.at(np.array([0, lookups - 1])).tolist()
            else:
                times = None
                l_first = max(start, first + LINE_TO_PARSE) if lines else start
                l_last = max(l_first + max(lookups, items) - 1, last + LINE_TO_PARSE if lines else 0)
            if lookups:
                self.emb_queue.put(("lookup", tag, (lookups, record["misses"], items, arg["join"], lane,
                                                           record)), l_first)
                self.lookups.put(lookups, l_first, last_lookup if times is not None else l_last, times=times)
                event = self.lookups.taken(self.lookups.put_count - 1)
                yield event
                l_last = max(l_last, event.time)
            free = l_last
            self.lines_parsed_add(lines, free)
            self.busy["fetch"].add(started, free + 1)
            self.finished(free + 1)

    def _lookup_steps(self, record, arg, lines, first, last, start):
        """The parser's steps through a FETCH's lookup areas (``Fetcher``'s parser), a step a cycle, each once its
        line is in (the area's lines arriving evenly from ``first`` to ``last``): per item the count with its first
        lookup, a lookup a step, then a step per unused line of the area. Returns a :class:`_LookupSteps` and the last
        step's cycle, or None where the items' lookups are not known apart."""
        items = arg["items"]
        per_item, entries = lines // items, self.entries_per_line
        bags = record["bag_lookup"]
        per_bag = arg["join"]["vectors"] - 1
        if per_item * items != lines or per_bag < 1 or len(bags) != items * per_bag:
            return None
        ends = bags[per_bag - 1::per_bag] + 1
        counts = np.diff(ends, prepend=0)
        if int(ends[-1]) != record["lookups"]:
            return None
        # Steps per (item, line): on line 0 the count with lookup 0 (entries 0 and 1 in one step), then an entry a
        # step; a line beyond the last entry's, a step of its own.
        line = np.arange(per_item)
        held = np.minimum(counts[:, None] + 1 - line * entries, entries)
        held[:, 0] -= entries > 1
        steps = np.maximum(held, 1).ravel().astype(np.float64)
        span = (last - first) / (lines - 1) if lines > 1 else 0.0
        ready = first + span * np.arange(lines) + LINE_TO_PARSE
        ready[0] = max(ready[0], start)
        before = np.cumsum(steps) - steps
        begin = before + np.maximum.accumulate(ready - before)
        return _LookupSteps(begin, ends - counts, per_item, entries), float(begin[-1] + steps[-1] - 1)

    def embedding(self):
        """The embedding unit's intake: lookups one a cycle, each missed line's read request :data:`MISS_ISSUE`
        cycles after its lookup; admission holds a lookup while :data:`MISS_QUEUE` misses wait for the arbiter's
        grant (``miss_used``), so a memory busy with the fetcher's reads holds up the lookups, and the fetcher's
        parser behind them. The job then goes to the output side (:meth:`embedding_output`), so the next job's
        lookups follow at once. Each miss goes at its own lookup (the functional model's cache answers, line by
        line). Other commands wait until every earlier lookup's vector has left. A job's first
        :data:`MISS_QUEUE` misses are admitted here, each later one by the grant :data:`MISS_QUEUE` before it
        (:meth:`miss_issuer`), which wakes the intake once the job's last miss is admitted."""
        sim = self.sim
        free = 0.0
        while True:
            _, (kind, _tag, arg) = yield from self.emb_queue.get()
            if kind == "emb":
                done = _Event()
                self.emb_jobs.put(("emb", None, done), sim.now)
                yield done
                continue
            lookups, misses, _items, join, lane, record = arg
            start = max(sim.now, free)
            k0 = self.lookups.take_count
            places = record["miss_lookups"]
            job = _MissJob(places.tolist(), self.lookups.word_times(k0 + places), start - 1, misses)
            for m in range(min(misses, MISS_QUEUE)):
                self._admit(job, m, None)
            if misses > MISS_QUEUE:
                yield job.admitted
            until = job.t + lookups - 1 - job.previous if misses else None
            first, last = self.lookups.take(lookups, start, 1.0, until)
            free = last + 1
            self.emb_jobs.put(("lookup", (lookups, misses, join, lane, record, first, last, start, job),
                               job.done if misses else None), first)

    def _admit(self, job, m, gate):
        """Admit ``job``'s miss ``m``: its lookup's turn, one a cycle after the previous miss's lookup, and (from
        the :data:`MISS_QUEUE`-th on) a cycle after the grant ``gate`` of the miss that many before it; its read
        request :data:`MISS_ISSUE` cycles later."""
        position = job.places[m]
        t = max(job.t + position - job.previous, job.word_times[m] + 1)
        if gate is not None:
            t = max(t, gate + 1)
        job.t, job.previous = t, position
        self.miss_requests.put((job, m), t + MISS_ISSUE)

    def miss_issuer(self):
        """The embedding unit's miss requests, in order, each from its cycle, one line each through the arbiter.
        Each grant admits the job's miss :data:`MISS_QUEUE` later (the intake's wait), records the cycle its line
        arrives, and after the job's last miss fires ``job.done``. While the arbiter has no other request, the
        next miss goes in the same step where no other process runs before its grant (its wait for its cycle and
        its request, as the process would go; :meth:`_Sim.advance`)."""
        memory, sim, queue = self.memory, self.sim, self.miss_requests
        items, held, heap, eager = queue.items, memory.held, sim._heap, sim.eager
        depth, per_line, latency = memory.queue_depth, memory.per_line, memory.latency
        admit, requester = self._admit, _Memory.EMBEDDING
        while True:
            _, (job, m) = yield from queue.get()
            _, arrive = yield from memory.request(requester, 1)
            alone = memory.idle()
            now = sim.now
            while True:
                job.arrivals.append(arrive)
                later = m + MISS_QUEUE
                if later < job.misses:
                    admit(job, later, now)
                    if later == job.misses - 1:
                        sim.fire(job.admitted, now)
                if m == job.misses - 1:
                    sim.fire(job.done, now)
                if not alone or not items:
                    break
                due, (next_job, next_m) = items[0]
                # Memory.decision, Sim.advance and Memory._grant of one line, inlined (the hot loop of a run).
                t = due if due > now else now
                if memory.next_grant > t:
                    t = memory.next_grant
                if len(held) >= depth and held[-depth] > t:
                    t = held[-depth]
                if not eager or (heap and heap[0][0] <= t):
                    break
                sim.now = now = t
                items.popleft()
                job, m = next_job, next_m
                memory.granted = requester
                beat = t + ACCEPT + latency - DUE
                if memory.free > beat:
                    beat = memory.free
                memory.free = beat + per_line
                held.append(memory.free + HELD)
                memory.next_grant = t + 1
                arrive = beat + 4
                while held[0] <= t:
                    held.popleft()

    def embedding_output(self):
        """The embedding unit's output side, a job at a time in order: each bag's pooled vector once its last
        lookup has passed the pipeline (:data:`EMB_PIPE`) and its missed line (if any) has come
        (:data:`MISS_PIPE`), and a requantisation after the previous one (its row's elements over the lanes, or its
        ``ceil(d / rows)`` words into the joiner's FIFO, whichever is longer); the FIFO of the job's lane holds
        ``join_buffer_words``: the unit waits until the joiner has taken the words beyond it. A job's lookups are
        spread evenly over the cycles of its intake; each bag waits for its own last missed line."""
        sim, g = self.sim, self.g
        free = 0.0
        capacity = self.config.join_buffer_words
        while True:
            _, (kind, arg, done) = yield from self.emb_jobs.get()
            if kind == "emb":
                t = max(sim.now, free)
                if t > sim.now:
                    yield t
                free = t + 1
                sim.fire(done, free)
                continue
            if done is not None:
                yield done
            lookups, misses, join, lane, record, first, last, start, job = arg
            # The pooled writer takes the job's vectors once the joiner has taken the job.
            accepted = self.lookup_accepts.popleft()
            yield accepted
            free = max(free, accepted.time + 1)
            requant = record["requant"]
            chunks = _ceil_div(join["dim"], g.rows)
            bags = len(requant)
            if not bags:
                self._pooled_written(sim.now)
                continue
            pace = np.maximum(requant, chunks).astype(np.float64)
            # Each bag's last lookup through the pipeline, and its last missed line.
            ready = first + (last - first) * record["bag_lookup"] / max(lookups - 1, 1) + EMB_PIPE
            if misses:
                bag_miss = record["bag_miss"]
                arrivals = np.array(job.arrivals)
                line = arrivals[np.maximum(bag_miss, 0)] + MISS_PIPE
                ready = np.where(bag_miss >= 0, np.maximum(ready, line), ready)
            offsets = np.concatenate([[0.0], np.cumsum(pace[:-1])])
            times = offsets + np.maximum.accumulate(np.maximum(ready, free) - offsets)
            out_first, out_last = float(times[0]), float(times[-1]) + chunks - 1
            pooled = self.pooled[lane]
            pooled.put(bags * chunks, out_first, out_last)
            self._wake_sender()
            end = out_last
            beyond = pooled.put_count - capacity - 1
            if beyond >= 0:
                event = pooled.taken(beyond)
                yield event
                end = max(end, event.time)
            self._pooled_written(end)
            free = max(end + 1, float(times[-1]) + pace[-1])
            self.busy["embedding"].add(start, end + 1)

    def _wake_sender(self):
        """Wake the joiner's sender now: it works out from the lanes' state when it can send (a wake for a later
        cycle would hide an earlier one that follows it)."""
        if self.join_wake is not None:
            event, self.join_wake = self.join_wake, None
            self.sim.fire(event, self.sim.now)

    def join_loader(self, lane):
        """Lane ``lane``'s join jobs, in order (a queue of 4): the bottom block from the lane's output layer into a
        free bank of the lane's two, ``items * ceil(d / c)`` words one a cycle."""
        sim, g = self.sim, self.g
        bank = 0
        queue = self.join_jobs[lane]
        while True:
            _, (_tag, arg) = yield from queue.get()
            yield self.banks[lane][bank]
            start = sim.now
            items, join = arg["items"], arg["join"]
            cols = g.engine.splits[self.split].cols
            words = items * _ceil_div(join["dim"], cols)
            yield self.bottom[lane].available(words)
            _first, last = self.bottom[lane].take(words, start + 2, 1.0)
            # The job leaves the queue once its block is written (a place for the next from the cycle after).
            queue.took(last + JOB_TAKE)
            self.banks[lane][bank] = _Event()
            self.bank_ready[lane].append((last + 1, bank, arg))
            self._wake_sender()
            self.busy["join"].add(start, last + 1)
            bank ^= 1

    def _ready_job(self, lane):
        """The cycle lane ``lane``'s head job can be sent from (its bank loaded, its pooled vectors offered, room
        for its output in the lane's buffer), or None if it cannot be known yet."""
        if not self.bank_ready[lane]:
            return None
        loaded, _, arg = self.bank_ready[lane][0]
        join, items = arg["join"], arg["items"]
        vectors, chunks = join["vectors"], _ceil_div(join["dim"], self.g.rows)
        pooled = self.pooled[lane]
        need = items * (vectors - 1) * chunks
        if pooled.put_count - pooled.take_count < need:
            return None
        first = loaded
        timing = self.interaction(MODES[join["mode"]], vectors, join["dim"], items)
        if need:
            # Items go one by one, each once its pooled vectors are in: the job starts early enough that its first
            # and its last item take their last vector no earlier than it comes (item i's accepted about
            # (i + 1) / items of the job's input time after the start, as the unit alone takes them).
            accept = timing.accept_last
            start = pooled.take_count
            first = max(pooled._word_time(start + need // items - 1) + 1 - accept / items,
                        pooled._word_time(start + need - 1) + 1 - accept)
        inter = self.inter[lane]
        out = timing.out_words
        beyond = inter.put_count + min(out, self.config.join_output_words) - self.config.join_output_words - 1
        if beyond >= inter.take_count:
            return None                # room only once the lane takes more of its words
        room = inter._taken_time(beyond) if beyond >= 0 else 0.0
        return max(loaded, first, room)

    def join_sender(self):
        """The shared interaction unit: among the lanes whose head job is ready (bank full, pooled vectors in its
        lane's FIFO, room in its lane's output buffer of ``join_output_words``), the earliest; each item's bottom
        vector then its ``F - 1`` pooled vectors, ``ceil(d / rows)`` words each, one a cycle into the interaction
        unit, whose output words go into the lane's buffer (a job whose output exceeds the buffer streams at the
        lane's pace); the bank is free once its last word is sent. (The RTL picks round robin an item at a time;
        the model a job at a time.)"""
        sim, g = self.sim, self.g
        free = 0.0
        capacity = self.config.join_output_words
        while True:
            ready = [(t, lane) for lane in range(g.lanes)
                     if self.bank_ready[lane] and (t := self._ready_job(lane)) is not None]
            if not ready:
                self.join_wake = self.join_wake or _Event()
                yield self.join_wake
                continue
            when, lane = min(ready)
            _, bank, arg = self.bank_ready[lane].popleft()
            items, join = arg["items"], arg["join"]
            vectors, chunks = join["vectors"], _ceil_div(join["dim"], g.rows)
            start = max(sim.now, free, when)
            if start > sim.now:
                yield start
            pooled_words = items * (vectors - 1) * chunks
            if pooled_words:
                _p_first, p_last = self.pooled[lane].take(pooled_words, start + chunks, 1.0)
            else:
                p_last = start
            timing = self.interaction(MODES[join["mode"]], vectors, join["dim"], items)
            accept_last = max(start + timing.accept_last, p_last + JOIN_PIPE)
            out = timing.out_words
            o_first = max(start + timing.out_first, self.inter_free)
            o_last = max(start + timing.out_last, accept_last + timing.drain, o_first + out - 1)
            self.inter_free = o_last + 1
            # Output beyond the lane's buffer waits for the lane (the unit stalls on it).
            over = max(out - capacity, 0)
            self.inter[lane].put(out, o_first, o_last,
                                 span=(timing.out_last - timing.out_first) * over / out if over else 0.0)
            self.busy["interaction"].add(start, o_last)
            end = accept_last
            if over:
                event = self.inter[lane].taken(self.inter[lane].put_count - capacity - 1)
                yield event
                end = max(end, event.time - timing.drain)
            self.sim.fire(self.banks[lane][bank], end + 1)
            self.busy["join"].add(start, end + 1)
            free = end + 1
            self.finished(max(free, o_last))

    def weight_loader(self):
        """WEIGHTS in order: with ``wait``, once the lane's ``layers_done`` has reached ``wait_layers``; the lines
        read (a buffer's worth in flight), the next command's reads issued once this one's are; words written one
        a cycle (a word over ``S`` lines, ``S`` cycles); done when its last word is written."""
        sim, g = self.sim, self.g
        word_bytes = g.engine.word_bytes
        per_word = max(1, word_bytes // g.line_bytes)
        buffer_lines = max(2 * g.emb.max_burst, self.config.mem_latency_cycles + g.emb.max_burst)
        done = 0.0
        while True:
            _, (_tag, arg) = yield from self.weight_queue.get()
            self.weight_queue.took(sim.now)
            issue = sim.now + WEIGHTS_ISSUE
            if arg["wait"]:
                yield self.layers_done[arg["lane"]].reached(arg["wait_layers"])
            if issue > sim.now:
                yield issue
            start = sim.now
            lines = _ceil_div(arg["words"] * word_bytes, g.line_bytes)
            first, last = yield from self.memory.read(_Memory.WEIGHTS, lines, buffer_lines)
            done = max(max(first + LINE_TO_USE, done) + arg["words"] * per_word, last + LINE_TO_USE + 1)
            self.weights_done.add(done)
            self.busy["weights"].add(start, done)
            self.finished(done)

    def lane_gate(self, lane):
        """The lane's commands in order, each once the weight loader has completed ``wait_weights``, into the
        engine's loader (INPUT) or feeder (LAYER) queue (two places each)."""
        queue = self.lane_queues[lane]
        while True:
            t, (tag, arg) = yield from queue.get()
            weights = self.weights_done.reached(arg["wait_weights"])
            yield weights
            target = self.lane_inputs[lane] if arg["cmd"]["op"] == Op.INPUT else self.lane_layers[lane]
            room = target.room()
            yield room
            # The cycles the events happened (this process may have resumed later, behind a unit's wait).
            t = max(t, weights.time, room.time)
            self.front_ends[lane].gated(t)
            target.put((tag, arg), t + 1)

    def lane_loader(self, lane):
        """INPUT: once ``layers_done`` reaches ``wait_layers``, ``items * src_words`` words from the dense or the
        interaction stream, one a cycle (the act sequencer cuts each into the lane's words, one a cycle)."""
        free = 0.0
        queue = self.lane_inputs[lane]
        while True:
            t, (_tag, arg) = yield from queue.get()
            cmd = arg["cmd"]
            layers = self.layers_done[lane].reached(cmd["wait_layers"])
            yield layers
            start = max(t, layers.time, free)
            queue.took(start)
            source = self.inter[lane] if arg["src"] == 1 else self.dense[lane]
            words = cmd["items"] * arg["src_words"]
            yield source.available(words)
            pace = max(1.0, cmd["ktiles"] / max(arg["src_words"], 1))
            _first, last = source.take(words, start + 1, pace)
            done = last + 2
            self.inputs_done[lane].add(done)
            self.busy[f"lane{lane}"].add(start, done)
            free = last + 1
            self.finished(done)

    def lane_feeder(self, lane):
        """LAYER, from its command's arrival: a layer's items follow the previous layer's from the next cycle, or
        start :data:`FEED_START` cycles after the ``inputs_done`` or ``layers_done`` it waits for; per tile
        (``ktiles x ntiles``) its items one a cycle once its rows are in its bank, its weight words fetched from
        the command's dispatch (:class:`LaneFeed`: the engine model's rules, the lane alone on the weight memory);
        ``layers_done`` counts it ``rows + cols`` + :data:`ENGINE_PIPE` cycles after its last item; an output
        layer's ``items * ntiles`` words are offered to the joiner or (a cycle later, through the front end) the
        score sequencer as they come out, and the lane is held until they are taken."""
        g = self.g
        free = -1.0
        feed = None
        queue = self.lane_layers[lane]
        while True:
            # From the cycle the command came (this process may have waited for its previous output's take).
            ready, (_tag, arg) = yield from queue.get()
            cmd = arg["cmd"]
            inputs = self.inputs_done[lane].reached(cmd["wait_inputs"])
            yield inputs
            layers = self.layers_done[lane].reached(cmd["wait_layers"])
            yield layers
            start = max(ready, free + 1, max(inputs.time, layers.time) + FEED_START)
            queue.took(start)
            shape = g.engine.splits[self.split]
            if feed is None or feed.shape != shape:    # a SPLIT between (a barrier: the lane idle)
                feed = LaneFeed(shape, g.engine.array.latency(self.split))
            items, kt, nt = cmd["items"], cmd["ktiles"], cmd["ntiles"]
            first, last = feed.layer(ready - TO_ITEM, start, items, kt, nt)
            tiles = nt * kt
            feed_end = last + 1
            latency = shape.rows + shape.cols + ENGINE_PIPE
            done = feed_end + latency + (shape.beats - 1) * items
            free = feed_end
            if cmd["to_output"]:
                channel = self.bottom[lane] if arg["dst"] == 0 else self.logits[lane]
                # Offered a cycle before each goes out: the first n-tile's results from its last k-tile's first
                # item, the last one a cycle before the layer is counted done; a logit a cycle later, through the
                # lane front end's register.
                through = 0 if arg["dst"] == 0 else 1
                first_out = first + (feed_end - first) * (kt - 1) / tiles + latency - 1
                channel.put(items * nt, min(first_out, done - 2) + through, done - 2 + through)
                event = channel.taken(channel.put_count - 1)
                yield event
                done = max(done, event.time + 1 - through)
                free = max(free, event.time - through - latency)
            self.layers_done[lane].add(done)
            self.busy[f"lane{lane}"].add(start, done)
            self.finished(done)

    def scorer(self, lane):
        """SCOREs in order: ``items`` logits one a cycle (and their indices); to the responses (LOGIT each) or to
        a top-k or filter unit (one lane's query at a time); a closing SCORE's result: a top-k unit's after its
        latency, its RANKs one a cycle; a filter's after its selection passes (``n + 259`` cycles each, 0, 4 or 6),
        its kept indices one a cycle into the survivors bank."""
        sim, g = self.sim, self.g
        free = 0.0
        queue = self.score_queues[lane]
        counts, opened = {}, {}
        while True:
            _, (tag, arg) = yield from queue.get()
            start = max(sim.now, free)
            queue.took(start)
            items, dest = arg["items"], arg["dest"]
            holder = None
            if dest == ScoreDest.TOPK.value:
                holder = arg["unit"]
            elif dest == ScoreDest.FILTER.value:
                holder = g.units + arg["unit"]
            if holder is not None and self.holder_free[holder] > start and counts.get(holder, 0) == 0:
                start = max(start, self.holder_free[holder])
            yield self.logits[lane].available(items)
            first, last = self.logits[lane].take(items, start + 1, 1.0)
            end = last + 1
            if dest == ScoreDest.RSP.value:
                self.respond(first + 3, ResponseKind.LOGIT, tag, items, (last - first) / max(items - 1, 1))
                end = last + LOGIT_QUIET
            else:
                counts[holder] = counts.get(holder, 0) + items
                opened.setdefault(holder, first)       # the unit holds the query from its first candidate
                if arg["last"]:
                    n, k, since = counts.pop(holder), arg["k"], opened.pop(holder)
                    if dest == ScoreDest.TOPK.value:
                        ready = end + unit_latency(g.k_max, lanes=1)
                        kept = min(k, n)
                        result = ready + kept
                        if arg["report"]:
                            self.respond(ready + 2, ResponseKind.RANK, tag, kept)
                        self.busy[f"topk{arg['unit']}"].add(since, result)
                    else:
                        passes, reads = self.passes.popleft() if self.passes else (4, n)
                        ready = end + 1 + passes * (n + PASS_EXTRA)
                        kept = min(k, n)
                        result = ready + reads + FILTER_OUT
                        if arg["report"]:
                            self.respond(ready + 2, ResponseKind.KEPT, tag, kept)
                        self.busy[f"filter{arg['unit']}"].add(since, result)
                    self.holder_free[holder] = result
                    if arg["keep"]:
                        self.results[holder].add(result)
                    end = max(end, result)
            free = last + 1
            self.finished(end)

    # Results ---------------------------------------------------------------------------------------------------------

    def result(self, functional):
        """Match the functional model's responses (per kind and tag, in order) with the simulation's cycles, and
        put them in the order they leave: one a cycle."""
        g = self.g
        rcodec = codec(g.response_layout())
        words = functional.responses
        fields = rcodec.unpack(words) if len(words) else {"kind": np.zeros(0, int), "tag": np.zeros(0, int)}
        kinds, tags = np.asarray(fields["kind"]), np.asarray(fields["tag"])
        cycles = np.zeros(len(words), dtype=np.float64)
        slots = {}
        for t, kind, tag, count, spread in sorted(self.responses, key=lambda r: r[0]):
            slots.setdefault((kind.value, tag), deque()).append([t, count, spread])
        errors = deque(sorted(t for t, kind, _, _, _ in self.responses if kind == ResponseKind.ERROR))
        for i in range(len(words)):
            key = (int(kinds[i]), int(tags[i]))
            queue = slots.get(key)
            if not queue:
                cycles[i] = errors.popleft() if errors and key[0] == ResponseKind.ERROR.value else self.sim.now
                continue
            slot = queue[0]
            cycles[i] = slot[0]
            slot[0] += slot[2]
            slot[1] -= 1
            if slot[1] == 0:
                queue.popleft()
        # The timing counters of each COUNTERS's answer (the functional model answers them as 0).
        counter_rows = np.flatnonzero(kinds == ResponseKind.COUNTER.value)
        if len(counter_rows):
            fields["score"] = np.array(fields["score"], dtype=np.int64)
            # One answer per COUNTERS, its last response marked.
            ends = np.flatnonzero(np.asarray(fields["last"])[counter_rows]) + 1
            for read, rows in zip(self.counter_reads, np.split(counter_rows, ends[:-1])):
                for row in rows:
                    index = int(fields["index"][row])
                    if index in read:
                        value = read[index]
                        fields["score"][row] = value - (1 << 32) if value >= 1 << 31 else value
            words = rcodec.pack(fields)
        order = np.argsort(cycles, kind="stable")
        out = np.ceil(cycles[order]).astype(np.int64)
        for k in range(1, len(out)):
            out[k] = max(out[k], out[k - 1] + 1)
        counters = dict(functional.counters)
        if self.counter_reads:
            counters.update({Counter(index).name if index in Counter._value2member_map_ else str(index): value
                             for index, value in self.counter_reads[-1].items()})
        total = int(out[-1]) + 1 if len(out) else int(self.sim.now) + 1
        return TimedRun(responses=words[order], cycles=out, counters=counters, total_cycles=total)


class ModelDevice(Device):
    """The chip's timed model as a :class:`~rpaccel.host.driver.device.Device`: ``cmd`` in, ``rsp`` out, as
    :func:`rpaccel.sim.chip.chip_device` has them, so a timed trace (a replay) runs on it as on the RTL.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    """

    def __init__(self, config):
        self.config = config
        self.model = TimedChip(config)
        self._jobs = self.model.interaction_jobs      # memoised job timings, kept across runs
        g = self.model.geometry
        self._ports = (Port("cmd", "in", codec(g.command_layout()).width),
                       Port("rsp", "out", codec(g.response_layout()).width))

    @property
    def ports(self):
        return self._ports

    def run(self, trace, **_):
        self.check(trace)
        started = time.perf_counter()
        g = self.model.geometry
        inputs = trace.inputs
        stream = inputs.get("cmd")
        cmd = codec(g.command_layout())
        words = stream.packed(cmd.width) if stream is not None else np.zeros((0, cmd.limbs), np.uint64)
        cycles = stream.not_before if stream is not None else np.zeros(0, np.int64)
        # Every run starts from reset (the Device interface): a fresh chip, the memoised job timings kept.
        self.model = TimedChip(self.config)
        self.model.interaction_jobs = self._jobs
        run = self.model.run(words, arrivals=cycles)
        expected = trace.counts.get("rsp", 0)
        if len(run.cycles) < expected:
            raise Deadlock([f"the model answered {len(run.cycles)} responses, the trace expects {expected}"])
        out = OutputStream(to_ints(run.responses), run.cycles)
        last = int(run.cycles[expected - 1]) if expected else 0
        ports = {"cmd": PortStats(len(words), 0, 0),
                 "rsp": PortStats(len(run.cycles), int(run.cycles[0]) if len(run.cycles) else 0,
                                  int(run.cycles[-1]) if len(run.cycles) else 0)}
        return TraceResult(outputs={"rsp": out}, ports=ports, cycles=last + 1,
                           wall_seconds=time.perf_counter() - started)
