"""Top-k filter units: exact, sorted, streaming selection of the k best-scored candidates of each query.

Between the stages of a multi-stage recommendation pipeline only the k best candidates of a query go on. A
:class:`TopKUnit` consumes a stream of (int32 score, candidate index) pairs, keeps a running top-``k_max`` over
all of a query's candidates however many sub-batches they come in, and when the query ends emits its ``k`` best,
sorted (highest score first, ties to the lower index, as :func:`rpaccel.numeric.topk`), while it already
accepts the next query's candidates. :class:`TopKUnits` holds several units on independent streams.
:class:`TopKMerge` merges two sorted results (the units use it to join their lanes).

Stream formats (layouts from :func:`topk_in_layout` and :func:`topk_out_layout`):

* in: ``{candidates: [{score, index, keep}] * lanes, last, k}``. Each kept candidate belongs to the current
  query; ``last`` ends the query after this element's candidates, and ``k`` (read only when ``last`` is set)
  says how many results to return. An element may carry no candidate (``keep = 0`` in every lane): a query is
  ended without a candidate of its own, a query may be empty.
* out: ``{score, index, keep, last, error}``. A query's result is its ``min(k, n)`` best candidates with
  ``keep = 1``, ``last`` set on the final one; an empty result (no candidate, or a bad ``k``) is one element
  with ``keep = 0, last = 1`` (and ``error = 1`` when ``k`` was not in ``1..k_max``). Fields of an element
  with ``keep = 0`` other than ``last`` and ``error`` are zero.
"""

from contextlib import contextmanager

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS
from .lib.slice import RegisterSlice

__all__ = ["DEFAULT_INDEX_BITS", "DEFAULT_SEGMENT", "TopKMerge", "TopKUnit", "TopKUnits", "candidate_layout",
           "check_k", "k_bits", "segment_sizes", "topk_in_layout", "topk_out_layout", "unit_latency"]

#: Width of a candidate index by default: 65,536 candidates per query (RecPipe's queries have 4,096).
DEFAULT_INDEX_BITS = 16
#: Most cells one broadcast segment of an insertion array holds by default (see :class:`TopKUnit`).
DEFAULT_SEGMENT = 16
# A segment of more cells than this gets two register copies of its incoming candidate.
_SPLIT_FANOUT = 8


def _check_positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")


@contextmanager
def _rejected(component):
    """Checks of a component's parameters: one that fails is never built, so it must not warn it was unused."""
    try:
        yield
    except ValueError:
        component._MustUse__silence = True
        raise


def k_bits(k_max):
    """Width of the ``k`` field for units of ``k_max``: ``k`` up to ``k_max`` fits, so do some bad values."""
    _check_positive("K_MAX", k_max)
    return k_max.bit_length()


def check_k(k, k_max):
    """Raise :class:`ValueError` unless ``1 <= k <= k_max`` (what the hardware flags as ``error``)."""
    _check_positive("K_MAX", k_max)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= k_max:
        raise ValueError(f"Top-k k must be an integer in [1, K_MAX = {k_max}], not {k!r}")


def candidate_layout(index_bits=DEFAULT_INDEX_BITS, *, flag="keep"):
    """``{score: signed(32), index: unsigned(index_bits), <flag>: 1}``: one candidate and a presence bit."""
    _check_positive("Candidate index width", index_bits)
    return data.StructLayout({"score": signed(ACC_BITS), "index": unsigned(index_bits), flag: unsigned(1)})


def topk_in_layout(k_max, *, lanes=1, index_bits=DEFAULT_INDEX_BITS):
    """Payload of a top-k unit's input: ``lanes`` candidates, the end-of-query flag and ``k``."""
    _check_positive("Lane count", lanes)
    return data.StructLayout({
        "candidates": data.ArrayLayout(candidate_layout(index_bits), lanes),
        "last": unsigned(1),
        "k": unsigned(k_bits(k_max)),
    })


def topk_out_layout(index_bits=DEFAULT_INDEX_BITS):
    """Payload of a top-k unit's output: one result candidate, or the end of an empty result."""
    _check_positive("Candidate index width", index_bits)
    return data.StructLayout({"score": signed(ACC_BITS), "index": unsigned(index_bits), "keep": unsigned(1),
                              "last": unsigned(1), "error": unsigned(1)})


def _better(a, b):
    """``a`` ranks before ``b``: a higher score, or an equal score and a lower index.

    One unsigned compare with the indices swapped, ``(b.score, a.index) < (a.score, b.index)`` as numbers
    (score high with its sign bit inverted, index low): a single carry chain fed straight from the registers.
    Written as ``<``: Yosys maps an unsigned ``<`` to the carry out alone, where ``>`` or a signed compare
    costs extra logic that ABC then spreads into the multiplexers behind it.
    """
    return Cat(a.index, b.score[:-1], ~b.score[-1]) < Cat(b.index, a.score[:-1], ~a.score[-1])


def unit_latency(k_max, *, lanes=1, segment=None):
    """Cycles from a :class:`TopKUnit` accepting a query's final element to presenting its first result.

    Two per insertion segment, one each to copy the cells into the bank, start the read-out and pass the output
    buffer, and one per level of the lanes' merge tree.
    """
    segment = min(k_max, DEFAULT_SEGMENT) if segment is None else segment
    return 2 * len(segment_sizes(k_max, segment)) + 3 + (lanes - 1).bit_length()


def segment_sizes(k_max, segment):
    """Cells of each broadcast segment of an insertion array: ``segment`` each, the remainder last."""
    full, rest = divmod(k_max, segment)
    return [segment] * full + ([rest] if rest else [])


class _Segment(Elaboratable):
    """An insertion segment: ``size`` cells, sorted best first, empty cells last, in two pipeline stages.

    Stage A compares the incoming candidate ``x`` with every cell as the registers hold them and registers the
    results: one carry chain per cell, fed straight from registers, nothing behind it but a flip-flop. Stage B,
    one cycle later, inserts the candidate: each cell that ranks below it takes its upper neighbour's value, the
    first such cell takes the candidate. Stage A's comparisons missed the insertion of the candidate just ahead,
    which stage B applied meanwhile; they are corrected from which cells that insertion moved (``moved``): an
    unmoved cell compares as before, a cell that took its neighbour's value compares as the neighbour did, the
    cell that took the previous candidate compares as the previous candidate (one extra compare, ``x`` against
    the candidate in stage B). So one candidate per cycle goes in, whatever the scores.

    Out of stage B leave (combinationally) the candidate pushed out of the last cell, or the incoming one if it
    ranks below every full cell (``spill``), with ``spill_proc``/``spill_ends``; the lane registers them into the
    next segment. An element with ``ends`` closes the query: its stage B marks the cells empty for the next
    query (``fresh``) and the cycle after (``snap``) they still hold the query's final values.
    """

    def __init__(self, size, index_bits):
        self.size = size
        self.index_bits = index_bits
        self.x_next = Signal(candidate_layout(index_bits))
        self.x_load = Signal()
        self.proc = Signal()
        self.ends = Signal()
        self.cells = [Signal(candidate_layout(index_bits, flag="valid"), name=f"cell{i}") for i in range(size)]
        self.spill = Signal(candidate_layout(index_bits))
        self.spill_proc = Signal()
        self.spill_ends = Signal()
        self.snap = Signal()

    def elaborate(self, platform):
        m = Module()
        cells, size = self.cells, self.size

        # The incoming candidate, in two register copies for larger segments: each copy's fan-out stays within half
        # the segment's carry chains. (Opposite reset values keep Yosys from merging the copies bit by bit.)
        ones = {"score": -1, "index": (1 << self.index_bits) - 1, "keep": 1}
        copies = [Signal(candidate_layout(self.index_bits), init=init, name=f"x_a{c}")
                  for c, init in enumerate([{}, ones][:2 if size > _SPLIT_FANOUT else 1])]
        half = -(-size // len(copies))
        with m.If(self.x_load):
            m.d.sync += [copy.eq(self.x_next) for copy in copies]

        # Stage A: compare with the cells as they are; everything registered for stage B.
        x = Signal.like(copies[0], name="x_b")
        proc, ends = Signal(name="proc_b"), Signal(name="ends_b")
        stale = [Signal(name=f"stale{i}") for i in range(size)]    # x ranked before cell i, one cycle ago
        after_previous = Signal()                                   # x ranks before the candidate ahead of it
        m.d.sync += [
            x.eq(copies[0]), proc.eq(self.proc), ends.eq(self.ends),
            after_previous.eq(_better(copies[-1], x)),
            *(stale[i].eq(_better(copies[i // half], cell)) for i, cell in enumerate(cells)),
        ]

        # Stage B: correct the comparisons for the previous insertion, insert.
        fresh = Signal(init=1)                                      # the cells belong to an ended query
        moved = [Signal(name=f"moved{i}") for i in range(size)]     # the previous insertion changed the cell
        live = [Signal(name=f"live{i}") for i in range(size)]       # valid and not fresh
        better = [Signal(name=f"better{i}") for i in range(size)]   # x ranks before the cell's value
        takes = [Signal(name=f"takes{i}") for i in range(size)]     # the cell changes
        for i, cell in enumerate(cells):
            took_upper = moved[i - 1] if i else 0
            m.d.comb += [
                better[i].eq(Mux(moved[i], Mux(took_upper, stale[i - 1] if i else 0, after_previous), stale[i])),
                live[i].eq(cell.valid & ~fresh),
                takes[i].eq(x.keep & (~live[i] | better[i])),
            ]
            m.d.sync += moved[i].eq(proc & takes[i])
            with m.If(proc):
                # takes is monotonic (cells are sorted, empty ones last). Where the upper neighbour is not live
                # the value taken does not matter (the cell becomes empty), so the choice needs only the
                # comparison: one LUT per bit.
                with m.If(takes[i]):
                    if i == 0:
                        m.d.sync += [cell.score.eq(x.score), cell.index.eq(x.index), cell.valid.eq(1)]
                    else:
                        upper = cells[i - 1]
                        m.d.sync += [
                            cell.score.eq(Mux(better[i - 1], upper.score, x.score)),
                            cell.index.eq(Mux(better[i - 1], upper.index, x.index)),
                            cell.valid.eq(~takes[i - 1] | live[i - 1]),
                        ]
                with m.Elif(fresh):
                    m.d.sync += cell.valid.eq(0)
        with m.If(proc):
            m.d.sync += fresh.eq(ends)
        m.d.sync += self.snap.eq(proc & ends)

        # Out of the segment: the last cell's value if x was inserted above it, else x itself.
        bottom = cells[-1]
        m.d.comb += [
            self.spill.score.eq(Mux(better[-1], bottom.score, x.score)),
            self.spill.index.eq(Mux(better[-1], bottom.index, x.index)),
            self.spill.keep.eq(x.keep & (~takes[-1] | live[-1])),
            self.spill_proc.eq(proc),
            self.spill_ends.eq(proc & ends),
        ]
        return m


class _Lane(Elaboratable):
    """One lane of a unit: a chain of insertion segments and the output bank its result is read from.

    Each segment gets the previous one's ``spill`` through a register. When the end of a query has passed a
    segment, its ``snap`` copies its cells into the bank; once all are copied (``full``) the bank is read by
    shifting it towards ``bank[0]`` (``pop``), one candidate per cycle, while the array already works on the
    next query.
    """

    def __init__(self, sizes, index_bits):
        self.segments = [_Segment(size, index_bits) for size in sizes]
        self.x_next = Signal(candidate_layout(index_bits))     # the candidate for the next cycle ...
        self.x_load = Signal()                                  # ... if this is set (else the current one stays)
        self.proc = Signal()
        self.ends = Signal()
        self.bank = [Signal(candidate_layout(index_bits, flag="valid"), name=f"bank{j}")
                     for j in range(sum(sizes))]
        self.pop = Signal()
        self.full = self.segments[-1].snap

    def elaborate(self, platform):
        m = Module()
        j = 0
        for g, segment in enumerate(self.segments):
            m.submodules[f"segment{g}"] = segment
            if g == 0:
                m.d.comb += [segment.x_next.eq(self.x_next), segment.x_load.eq(self.x_load),
                             segment.proc.eq(self.proc), segment.ends.eq(self.ends)]
            else:
                upper = self.segments[g - 1]
                m.d.comb += [segment.x_next.eq(upper.spill), segment.x_load.eq(1)]
                m.d.sync += [segment.proc.eq(upper.spill_proc), segment.ends.eq(upper.spill_ends)]
            for cell in segment.cells:
                below = self.bank[j + 1] if j + 1 < len(self.bank) else None
                with m.If(segment.snap):
                    m.d.sync += self.bank[j].eq(cell)
                with m.Elif(self.pop):
                    m.d.sync += self.bank[j].eq(below) if below is not None else self.bank[j].valid.eq(0)
                j += 1
        return m


class TopKMerge(wiring.Component):
    """Merge two sorted top-k results into one sorted result.

    Inputs and output are result streams in the format of :func:`topk_out_layout`. For every pair of results
    (one from ``a``, one from ``b``) the output is their union, best first, ``last`` on its final element (an
    empty result stays one ``keep = 0`` element; ``error`` is the OR of the inputs'). Truncating to ``k`` is
    the consumer's business (:class:`TopKUnit` does it and then pulses ``clear``). One output per cycle, the
    output registered; when both inputs hold candidates, only the better one is consumed.

    Parameters
    ----------
    index_bits : int
        Width of a candidate index.

    Members
    -------
    a, b : In(stream.Signature(topk_out_layout(index_bits)))
        The results to merge.
    o : Out(stream.Signature(topk_out_layout(index_bits)))
        The merged result.
    clear : In(1)
        Drop the output register and forget which inputs have ended (abandon the current result).
    """

    def __init__(self, index_bits=DEFAULT_INDEX_BITS):
        with _rejected(self):
            _check_positive("Candidate index width", index_bits)
        self.index_bits = index_bits
        result = stream.Signature(topk_out_layout(index_bits))
        super().__init__({"a": In(result), "b": In(result), "o": Out(result), "clear": In(1)})

    def elaborate(self, platform):
        m = Module()
        a, b, o = self.a, self.b, self.o
        ended_a, ended_b = Signal(), Signal()           # that input's last element has been consumed
        has_a, has_b = Signal(), Signal()               # a head of the current result is waiting
        kept_a, kept_b = Signal(), Signal()             # ... and is a candidate
        a_first = Signal()
        decide = Signal()
        m.d.comb += [
            has_a.eq(a.valid & ~ended_a),
            has_b.eq(b.valid & ~ended_b),
            kept_a.eq(has_a & a.payload.keep),
            kept_b.eq(has_b & b.payload.keep),
            a_first.eq(_better(a.payload, b.payload)),
            # Decide only when both heads are known (or that input has ended): then the order is certain.
            decide.eq((~o.valid | o.ready) & (has_a | ended_a) & (has_b | ended_b) & ~self.clear),
        ]
        both = kept_a & kept_b
        take_a = kept_a & (~kept_b | a_first)
        take_b = kept_b & ~take_a
        # An end-only head (keep = 0) is consumed together with the other input's element.
        m.d.comb += [
            a.ready.eq(decide & has_a & (~both | a_first)),
            b.ready.eq(decide & has_b & (~both | ~a_first)),
        ]
        ends = Signal()
        m.d.comb += ends.eq(Mux(take_a, a.payload.last & ~both, Mux(take_b, b.payload.last & ~both, 1)))
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(decide):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.score.eq(Mux(take_a, a.payload.score, Mux(take_b, b.payload.score, 0))),
                o.payload.index.eq(Mux(take_a, a.payload.index, Mux(take_b, b.payload.index, 0))),
                o.payload.keep.eq(take_a | take_b),
                o.payload.last.eq(ends),
                o.payload.error.eq(~take_a & ~take_b & ((has_a & a.payload.error) | (has_b & b.payload.error))),
            ]
            with m.If(ends):
                m.d.sync += [ended_a.eq(0), ended_b.eq(0)]
            with m.Else():
                m.d.sync += [ended_a.eq(ended_a | (a.ready & a.payload.last)),
                             ended_b.eq(ended_b | (b.ready & b.payload.last))]
        with m.If(self.clear):
            m.d.sync += [o.valid.eq(0), ended_a.eq(0), ended_b.eq(0)]
        return m


class TopKUnit(wiring.Component):
    """Streaming, exact, sorted top-k of every query, with ``k`` set per query up to ``k_max``.

    Stream formats: see :mod:`rpaccel.rtl.topk`. The unit keeps the ``k_max`` best candidates seen since the
    last ``last`` in an insertion array; ``k`` only decides how many of them are read out, so a result is
    exact for any ``k <= k_max`` however many sub-batches (and idle cycles) a query's candidates arrive in.

    Insertion array: a column of ``k_max`` cells per lane, sorted best first. A candidate is compared with all
    cells of a *segment* at once (one 48-bit compare per cell) and inserted in one cycle, the cells below it
    moving down; the candidate pushed out of a segment enters the next segment one cycle later (a systolic
    chain of broadcast segments, so the broadcast fan-out, and with it Fmax, is bounded by ``segment``, not by
    ``k_max``). Every cycle takes one new element per lane, whatever the scores: no back-pressure while a
    query streams in.

    End of a query: the marker travels down the segments behind the query's last candidates. When it has
    passed segment ``g``, that segment's cells are final; they are copied into the lane's output bank and the
    segment starts the next query. The bank is read out best first, one result per cycle, ``min(k, n)``
    results; with several lanes, :class:`TopKMerge` nodes (one per pair of lanes, registered) merge the lanes'
    results and the unit stops after ``k``. Only the end of the *next* query waits, and only if it arrives
    before the previous result has been read out: with ``k + 2 * segments + 2`` or more elements per query and no
    back-pressure, queries stream back to back at ``lanes`` candidates per cycle.

    Latency from accepting a query's final element to presenting its first result:
    ``2 * segments + 3 + ceil(log2(lanes))`` cycles (:attr:`latency`).

    Parameters
    ----------
    k_max : int
        Largest ``k`` (cells per lane).
    lanes : int
        Candidates accepted per cycle (one insertion array each).
    index_bits : int
        Width of a candidate index.
    segment : int, optional
        Cells per broadcast segment (default ``min(k_max, DEFAULT_SEGMENT)``).

    Members
    -------
    i : In(stream.Signature(topk_in_layout(k_max, lanes=lanes, index_bits=index_bits)))
        Candidates, query ends and ``k``.
    o : Out(stream.Signature(topk_out_layout(index_bits)))
        Results.
    """

    def __init__(self, k_max, *, lanes=1, index_bits=DEFAULT_INDEX_BITS, segment=None):
        with _rejected(self):
            _check_positive("K_MAX", k_max)
            _check_positive("Lane count", lanes)
            _check_positive("Candidate index width", index_bits)
            if segment is None:
                segment = min(k_max, DEFAULT_SEGMENT)
            _check_positive("Segment size", segment)
            if segment > k_max:
                raise ValueError(f"Segment size must be at most K_MAX ({k_max}), not {segment!r}")
        self.k_max, self.lanes, self.index_bits, self.segment = k_max, lanes, index_bits, segment
        self.sizes = segment_sizes(k_max, segment)
        super().__init__({
            "i": In(stream.Signature(topk_in_layout(k_max, lanes=lanes, index_bits=index_bits))),
            "o": Out(stream.Signature(topk_out_layout(index_bits))),
        })

    @property
    def latency(self):
        """Cycles from accepting a query's final element to presenting its first result."""
        return unit_latency(self.k_max, lanes=self.lanes, segment=self.segment)

    def elaborate(self, platform):
        m = Module()
        k_max = self.k_max

        # Input register: the element being inserted (each lane registers its candidate in its first segment).
        head = Signal.like(self.i.payload)
        head_valid = Signal()
        busy = Signal()              # a query end has been accepted and its result is not yet fully sent
        go = Signal()                # insert the head element this cycle
        m.d.comb += [
            go.eq(head_valid & (~head.last | ~busy)),
            self.i.ready.eq(~head_valid | go),
        ]
        with m.If(self.i.ready):
            m.d.sync += [head_valid.eq(self.i.valid), head.eq(self.i.payload)]

        lanes = []
        for lane_index in range(self.lanes):
            m.submodules[f"lane{lane_index}"] = lane = _Lane(self.sizes, self.index_bits)
            m.d.comb += [lane.x_next.eq(self.i.payload.candidates[lane_index]), lane.x_load.eq(self.i.ready),
                         lane.proc.eq(go), lane.ends.eq(head.last)]
            lanes.append(lane)

        # Result read-out: k and its validity are taken with the query end; reading starts when the bank is full.
        k = Signal(range(k_max + 1))
        error = Signal()
        reading = Signal()
        with m.If(go & head.last):
            m.d.sync += [
                busy.eq(1),
                k.eq(head.k),
                error.eq((head.k == 0) | (head.k > k_max)),
            ]
        start = lanes[0].full
        done = Signal()              # the final element of a result is being sent
        reading_next = Signal()
        m.d.comb += reading_next.eq(~done & (reading | start))
        m.d.sync += reading.eq(reading_next)

        readers = [self._read_lane(m, lane, index, k, error, reading, reading_next, start, done)
                   for index, lane in enumerate(lanes)]
        result, nodes = self._merge(m, readers)
        m.d.comb += [
            self.o.valid.eq(result.valid),
            self.o.payload.eq(result.payload),
            result.ready.eq(self.o.ready),
            done.eq(self.o.valid & self.o.ready & self.o.payload.last),
        ]
        if nodes:
            # The merged result holds up to lanes * k candidates: stop after k, then clear the lanes and merges.
            left = Signal(range(k_max + 1))
            with m.If(start):
                m.d.sync += left.eq(k)
            with m.Elif(self.o.valid & self.o.ready):
                m.d.sync += left.eq(left - 1)
            m.d.comb += self.o.payload.last.eq(result.payload.last | (result.payload.keep & (left == 1)))
            m.d.comb += [node.clear.eq(done) for node in nodes]
        with m.If(done):
            m.d.sync += busy.eq(0)
        return m

    def _read_lane(self, m, lane, index, k, error, reading, reading_next, start, done):
        """The result stream of one lane: its bank's ``min(k, n)`` best, through a register slice (the lane's
        two-entry output buffer, cleared after each result).

        The bank shift (``pop``) reaches all 49 flip-flops of every bank cell, so it is a register of its own:
        set from the next-cycle values of ``reading``, ``finished`` and the buffer's ready, so that it equals
        ``reading & ~finished & buffer.i.ready`` in every cycle and the consumer's ready never drives the
        shift combinationally.
        """
        m.submodules[f"lane{index}_buffer"] = buffer = RegisterSlice(topk_out_layout(self.index_bits))
        left = Signal(range(self.k_max + 1), name=f"lane{index}_left")
        finished, finished_next = Signal(name=f"lane{index}_finished"), Signal(name=f"lane{index}_finished_next")
        first = lane.bank[0]
        no_second = ~lane.bank[1].valid if len(lane.bank) > 1 else 1
        keep = Signal(name=f"lane{index}_keep")
        out = buffer.i
        m.d.comb += [
            keep.eq(first.valid & ~error),
            out.valid.eq(lane.pop),
            out.payload.score.eq(Mux(keep, first.score, 0)),
            out.payload.index.eq(Mux(keep, first.index, 0)),
            out.payload.keep.eq(keep),
            out.payload.last.eq(~keep | (left == 1) | no_second),
            out.payload.error.eq(error),
            finished_next.eq(done | (~start & (finished | (lane.pop & out.payload.last)))),
            buffer.clear.eq(done),
        ]
        m.d.sync += [
            finished.eq(finished_next),
            lane.pop.eq(reading_next & ~finished_next & buffer.ready_next),
        ]
        with m.If(start):
            m.d.sync += left.eq(k)
        with m.Elif(lane.pop):
            m.d.sync += left.eq(left - 1)
        return buffer.o

    def _merge(self, m, streams):
        """A tree of :class:`TopKMerge` nodes over the lanes' results: the root stream and the nodes."""
        nodes = []
        level = 0
        while len(streams) > 1:
            merged = []
            for pair in range(0, len(streams) - 1, 2):
                node = TopKMerge(self.index_bits)
                m.submodules[f"merge{level}_{pair // 2}"] = node
                wiring.connect(m, streams[pair], node.a)
                wiring.connect(m, streams[pair + 1], node.b)
                nodes.append(node)
                merged.append(node.o)
            if len(streams) % 2:
                merged.append(streams[-1])
            streams = merged
            level += 1
        return streams[0], nodes


class TopKUnits(wiring.Component):
    """``units`` independent :class:`TopKUnit` instances, each with its own input and output stream.

    Different queries, or different stages of a pipeline, use different units at once, so a query's result
    read-out or a slow consumer never holds up another query's candidates.

    Parameters
    ----------
    units : int
        Number of units.
    k_max : int
        Largest ``k`` of every unit.
    **kwargs
        ``lanes``, ``index_bits``, ``segment``, as for :class:`TopKUnit`.

    Members
    -------
    i : In(stream.Signature(topk_in_layout(...))).array(units)
        Each unit's input.
    o : Out(stream.Signature(topk_out_layout(...))).array(units)
        Each unit's results.
    """

    def __init__(self, units, k_max, **kwargs):
        with _rejected(self):
            _check_positive("Top-k unit count", units)
            self.units = [TopKUnit(k_max, **kwargs) for _ in range(units)]
        first = self.units[0]
        super().__init__({"i": In(stream.Signature(first.i.payload.shape())).array(units),
                          "o": Out(stream.Signature(first.o.payload.shape())).array(units)})

    def elaborate(self, platform):
        m = Module()
        for index, unit in enumerate(self.units):
            m.submodules[f"unit{index}"] = unit
            wiring.connect(m, wiring.flipped(self.i[index]), unit.i)
            wiring.connect(m, unit.o, wiring.flipped(self.o[index]))
        return m
