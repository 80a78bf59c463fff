"""The score sequencers, the top-k and filter units they feed and the survivors buffers the fetcher reads.

Per lane a sequencer executes the lane's SCORE instructions in order: each takes ``items`` logits (column 0 of the
lane's top-MLP output words) and as many candidate indices (from the fetcher) and sends them either to the response
stream, one LOGIT each, or to a top-k unit (:class:`rpaccel.rtl.topk.TopKUnits`), or to a filter unit
(:class:`rpaccel.rtl.filter.FilterUnit`). A unit serves one lane's query at a time, from its first candidate to its
``last``; when its result comes out, a query whose closing SCORE had ``keep`` is written into one of the unit's two
survivors banks (result ``r``, counted from 1, into bank ``r % 2``, once the fetcher has released result ``r - 2``),
and one that had ``report`` is answered with RANK responses (a top-k unit's, best first) or KEPT responses (a filter
unit's, in arrival order). The units are the survivors' *holders*: top-k unit ``u`` is holder ``u``, filter unit
``f`` holder ``units + f``. LOGIT, RANK, KEPT and a filter's ERROR responses of all lanes and units merge round-robin
into one stream. docs/chip.md has the command table.

::

    cmd[l], logits<l>, index[l] --> sequencer l --+--> LOGIT --------------------------------+--> round-robin --> rsp
                                                  +--> candidates --> unit u (one lane's     |
                                                                      query at a time)       |
                                                           closing {tag, keep, report} queue |
                                                                      |--> RANK -------------+
                                                                      +--> survivors bank (u, r % 2) --> surv_data
"""

from functools import reduce
from operator import or_

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...numeric import ACC_BITS
from ..filter import FilterUnit
from ..lib.queue import Queue
from ..lib.slice import RegisterSlice
from ..mlp import COUNT_BITS, WAIT_BITS
from ..topk import TopKUnits
from .controller import ResponseMerge
from .isa import (
    INDEX_BITS,
    TAG_BITS,
    ChipGeometry,
    ErrorCode,
    Opcode,
    ResponseKind,
    ScoreDest,
    survivors_address_layout,
)

__all__ = ["ScoreUnit"]

#: Queries a :class:`~rpaccel.rtl.topk.TopKUnit` holds between accepting their ``last`` and putting out the end of
#: their result: the one being read out and the one waiting in its input register.
CLOSING_DEPTH = 2


def closing_layout():
    """What a query's closing SCORE says about its result: ``{tag, keep, report}``."""
    return data.StructLayout({"tag": unsigned(TAG_BITS), "keep": 1, "report": 1})


def element_layout(geometry):
    """A sequencer's candidate for a top-k or filter unit: which unit (``filter`` and ``unit``), the candidate,
    ``last`` and ``k`` (with ``last``), the closing SCORE's fields."""
    g = geometry
    return data.StructLayout({"filter": 1, "unit": range(max(g.units, g.filters, 2)), "score": signed(ACC_BITS),
                              "index": unsigned(INDEX_BITS), "last": 1, "k": unsigned(g.k_bits),
                              "closing": closing_layout()})


def _first_from(m, requests, pointer, name):
    """Round-robin choice: whether any of ``requests`` is set, and the first set one from index ``pointer`` on."""
    count = len(requests)
    choice = Signal(range(count), name=f"{name}_choice")
    with m.Switch(pointer):
        for start in range(count):
            with m.Case(start):
                # Later assignments take precedence: the requester right at `start` is written last.
                for offset in reversed(range(count)):
                    with m.If(requests[(start + offset) % count]):
                        m.d.comb += choice.eq((start + offset) % count)
    return Cat(*requests).any(), choice


def _next(index, count):
    """``(index + 1) % count``."""
    return Mux(index == count - 1, 0, index + 1)


def _select(m, index, values, shape, name):
    """``values[index]`` (zero for an index beyond them)."""
    out = Signal(shape, name=name)
    with m.Switch(index):
        for k, value in enumerate(values):
            with m.Case(k):
                m.d.comb += out.eq(value)
    return out


class _Sequencer(wiring.Component):
    """One lane's score sequencer: its SCORE instructions, in order, over its logits and indices.

    One item per cycle; the next instruction starts in the cycle of the previous one's final item. Both outputs
    leave through register slices.

    Members
    -------
    cmd : In(stream.Signature(geometry.score_instr_layout()))
    logits : In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), cols)))
    index : In(stream.Signature(unsigned(INDEX_BITS)))
    rsp : Out(stream.Signature(geometry.response_layout()))
        LOGIT responses.
    element : Out(stream.Signature(element_layout(geometry)))
        Candidates for the top-k units.
    busy : Out(1)
    """

    def __init__(self, geometry, cols):
        super().__init__({
            "cmd": In(stream.Signature(geometry.score_instr_layout())),
            "logits": In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), cols))),
            "index": In(stream.Signature(unsigned(INDEX_BITS))),
            "rsp": Out(stream.Signature(geometry.response_layout())),
            "element": Out(stream.Signature(element_layout(geometry))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rsp = rsp = RegisterSlice(self.rsp.payload.shape())
        m.submodules.element = element = RegisterSlice(self.element.payload.shape())
        wiring.connect(m, rsp.o, wiring.flipped(self.rsp))
        wiring.connect(m, element.o, wiring.flipped(self.element))

        instr = Signal(self.cmd.payload.shape())
        score = instr.score
        active = Signal()
        left = Signal(COUNT_BITS)
        to_rsp, closes, have, take = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            to_rsp.eq(score.dest == ScoreDest.RSP),
            closes.eq((left == 1) & score.last),
            have.eq(active & self.logits.valid & self.index.valid),
            take.eq(have & Mux(to_rsp, rsp.i.ready, element.i.ready)),
            self.logits.ready.eq(take),
            self.index.ready.eq(take),
            self.cmd.ready.eq(~active | (take & (left == 1))),
            self.busy.eq(active | ~rsp.idle | ~element.idle),
        ]
        with m.If(self.cmd.ready):
            m.d.sync += [active.eq(self.cmd.valid), instr.eq(self.cmd.payload), left.eq(self.cmd.payload.score.items)]
        with m.Elif(take):
            m.d.sync += left.eq(left - 1)

        logit, index = self.logits.payload[0], self.index.payload
        out = element.i.payload
        m.d.comb += [
            rsp.i.valid.eq(have & to_rsp),
            rsp.i.payload.kind.eq(ResponseKind.LOGIT),
            rsp.i.payload.tag.eq(instr.tag),
            rsp.i.payload.last.eq(closes),
            rsp.i.payload.index.eq(index),
            rsp.i.payload.score.eq(logit),
            element.i.valid.eq(have & ~to_rsp),
            out.filter.eq(score.dest == ScoreDest.FILTER),
            out.unit.eq(score.unit),
            out.score.eq(logit),
            out.index.eq(index),
            out.last.eq(closes),
            out.k.eq(score.k),
            out.closing.tag.eq(instr.tag),
            out.closing.keep.eq(score.keep),
            out.closing.report.eq(score.report),
        ]
        return m


class ScoreUnit(wiring.Component):
    """The score sequencers (one per lane), the top-k and filter units and their survivors buffers.

    Per lane, SCORE instructions execute in order, one item per cycle. ``dest`` RSP: one LOGIT response per item
    (``score`` the logit, ``index`` the candidate), ``last`` on the final item of a SCORE with ``last``. ``dest``
    TOPK or FILTER: the items go to top-k unit or filter unit ``unit``, the final one of a SCORE with ``last``
    ending the query with its ``k``. A unit serves one lane's query at a time: a lane is granted a free unit
    (round-robin among the lanes asking, one cycle after asking) and holds it until its query's ``last``; another
    lane's candidates for the unit wait. What the closing SCORE said (``tag``, ``keep``, ``report``) is queued per
    unit for the result.

    A result (a top-k unit's sorted, best first; a filter unit's in arrival order): with ``keep``, its indices are
    written to position 0, 1, ... of its holder's survivors bank ``r % 2`` (``r`` the holder's kept result, counted
    from 1), and ``results_done`` becomes ``r`` after the last; result ``r`` is written only once ``release`` has
    pulsed ``r - 2`` times (so at most two kept results wait for the fetcher). With ``report``, each candidate is a
    RANK response (a top-k unit's) or a KEPT response (a filter unit's, ``score`` zero) with the closing SCORE's
    tag, ``last`` on the final one. A filter query that had more candidates than the unit holds (the extra ones
    are dropped) is answered, with or without ``report``, by an ERROR (``code`` ITEMS, ``index`` the SCORE opcode,
    ``last`` set) in place of its last KEPT. Responses merge round-robin (lanes, then holders) into ``rsp``
    (:class:`~rpaccel.rtl.accel.controller.ResponseMerge`).

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry

    Members
    -------
    cmd : In(stream.Signature(geometry.score_instr_layout())).array(geometry.lanes)
        Each lane's SCORE instructions.
    logits<l> : In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), geometry.engine.lane_cols(l))))
        Lane ``l``'s top-MLP output words, one per item (the logit in element 0).
    index : In(stream.Signature(unsigned(INDEX_BITS))).array(geometry.lanes)
        Each lane's candidate indices, one per item, in the order of its logits.
    rsp : Out(stream.Signature(geometry.response_layout()))
        LOGIT, RANK, KEPT and ERROR responses (``data`` zero).
    surv_addr : In(survivors_address_layout(geometry))
    surv_data : Out(unsigned(INDEX_BITS))
        The survivors read port: ``surv_data`` is the index at ``surv_addr`` of the cycle before.
    results_done : Out(WAIT_BITS).array(geometry.holders)
        Kept results completed per holder (modulo ``2 ** WAIT_BITS``).
    release : In(1).array(geometry.holders)
        A pulse per kept result of the holder the fetcher is done with.
    busy : Out(1)
        A sequencer holds an instruction or an item, a unit holds a query, or a response is on its way.
    topk_busy : Out(geometry.units)
        The top-k unit holds a query: granted to a lane, or a result not yet put out.
    filter_busy : Out(max(geometry.filters, 1))
        The filter unit holds a query (likewise).
    idle : Out(1)
        Not busy, and no instruction waiting on ``cmd``.
    """

    #: Kept results of a unit that may wait for the fetcher's release: one per survivors bank.
    _AHEAD = 2

    def __init__(self, geometry):
        if not isinstance(geometry, ChipGeometry):
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise TypeError(f"Score unit geometry must be a ChipGeometry, not {geometry!r}")
        self.geometry = g = geometry
        members = {"cmd": In(stream.Signature(g.score_instr_layout())).array(g.lanes)}
        for lane in range(g.lanes):
            members[f"logits{lane}"] = In(stream.Signature(data.ArrayLayout(signed(ACC_BITS),
                                                                            g.engine.lane_cols(lane))))
        members.update({
            "index": In(stream.Signature(unsigned(INDEX_BITS))).array(g.lanes),
            "rsp": Out(stream.Signature(g.response_layout())),
            "surv_addr": In(survivors_address_layout(g)),
            "surv_data": Out(unsigned(INDEX_BITS)),
            "results_done": Out(WAIT_BITS).array(g.holders),
            "release": In(1).array(g.holders),
            "busy": Out(1),
            "topk_busy": Out(g.units),
            "filter_busy": Out(max(g.filters, 1)),
            "idle": Out(1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        sequencers = []
        for lane in range(g.lanes):
            m.submodules[f"sequencer{lane}"] = sequencer = _Sequencer(g, g.engine.lane_cols(lane))
            wiring.connect(m, wiring.flipped(self.cmd[lane]), sequencer.cmd)
            wiring.connect(m, wiring.flipped(getattr(self, f"logits{lane}")), sequencer.logits)
            wiring.connect(m, wiring.flipped(self.index[lane]), sequencer.index)
            sequencers.append(sequencer)
        m.submodules.topk = topk = TopKUnits(g.units, g.k_max, index_bits=INDEX_BITS)
        filters = []
        for unit in range(g.filters):
            m.submodules[f"filter{unit}"] = unit_filter = FilterUnit(g.filter_capacity, index_bits=INDEX_BITS)
            filters.append(unit_filter)

        accepts, ranks, reads = [], [], []
        for holder in range(g.holders):
            is_filter = holder >= g.units
            unit = holder - g.units if is_filter else holder
            port = filters[unit].i if is_filter else topk.i[unit]
            closing, accept, held = self._feed(m, holder, is_filter, unit, sequencers, port)
            if is_filter:
                busy = held | (closing.level != 0) | filters[unit].busy
                rank, read = self._filter_result(m, holder, filters[unit].o, closing, busy)
            else:
                rank, read = self._result(m, holder, topk.o[unit], closing, held)
            accepts.append(accept)
            ranks.append(rank)
            reads.append(read)
        for lane, sequencer in enumerate(sequencers):
            m.d.comb += sequencer.element.ready.eq(reduce(or_, (accept == lane for accept in accepts)))

        unit_r = Signal.like(self.surv_addr.unit)
        m.d.sync += unit_r.eq(self.surv_addr.unit)
        m.d.comb += self.surv_data.eq(_select(m, unit_r, reads, unsigned(INDEX_BITS), "surv_read"))

        sources = [sequencer.rsp for sequencer in sequencers] + ranks
        m.submodules.rsp = merge = ResponseMerge(g.response_layout(), len(sources))
        for source, port in zip(sources, merge.i, strict=True):
            wiring.connect(m, source, port)
        wiring.connect(m, merge.o, wiring.flipped(self.rsp))
        # The merge's output register holds a response exactly when it offers one.
        busy = Cat(self.topk_busy.any(), self.filter_busy.any(), self.rsp.valid,
                   *(sequencer.busy for sequencer in sequencers)).any()
        m.d.comb += [
            self.busy.eq(busy),
            self.idle.eq(~busy & ~Cat(*(cmd.valid for cmd in self.cmd)).any()),
        ]
        return m

    def _feed(self, m, holder, is_filter, unit, sequencers, port):
        """Holder ``holder``'s input (top-k or filter ``unit``): the lane holding it, granted round-robin. Returns
        the queue of closing SCOREs, ``accept``, the lane whose candidate the unit takes this cycle (``lanes`` if
        none), and ``held``."""
        lanes = len(sequencers)
        held = Signal(name=f"unit{holder}_held")
        owner = Signal(range(lanes), name=f"unit{holder}_owner")
        pointer = Signal(range(lanes), name=f"unit{holder}_pointer")
        requests = [sequencer.element.valid & (sequencer.element.payload.filter == is_filter)
                    & (sequencer.element.payload.unit == unit) for sequencer in sequencers]
        asking, choice = _first_from(m, requests, pointer, f"unit{holder}_grant")
        with m.If(~held & asking):
            m.d.sync += [held.eq(1), owner.eq(choice), pointer.eq(_next(choice, lanes))]

        m.submodules[f"closing{holder}"] = closing = Queue(closing_layout().size, depth=CLOSING_DEPTH,
                                                            register="read")
        head = _select(m, owner, [sequencer.element.payload for sequencer in sequencers],
                       element_layout(self.geometry), f"unit{holder}_head")
        offered = _select(m, owner, requests, 1, f"unit{holder}_offered")
        accept = Signal(range(lanes + 1), name=f"unit{holder}_accept", init=lanes)
        # A full queue never holds back a `last` with TopKUnit or FilterUnit as they are (each holds at most two
        # ended queries); the guard keeps the queue right regardless.
        m.d.comb += [
            port.valid.eq(held & offered & (closing.w_rdy | ~head.last)),
            port.payload.last.eq(head.last),
            port.payload.k.eq(head.k),
            closing.w_en.eq(port.valid & port.ready & head.last),
            closing.w_data.eq(head.closing),
        ]
        if is_filter:
            m.d.comb += [port.payload.score.eq(head.score), port.payload.index.eq(head.index)]
        else:
            candidate = port.payload.candidates[0]
            m.d.comb += [candidate.score.eq(head.score), candidate.index.eq(head.index), candidate.keep.eq(1)]
        with m.If(port.valid & port.ready):
            m.d.comb += accept.eq(owner)
            with m.If(head.last):
                m.d.sync += held.eq(0)
        return closing, accept, held

    def _result(self, m, unit, result, closing, held):
        """Unit ``unit``'s results into its survivors banks and RANK responses. Returns the RANK stream and the
        survivors read port's data."""
        g = self.geometry
        m.submodules[f"rank{unit}"] = rank = RegisterSlice(g.response_layout())
        info = data.View(closing_layout(), closing.r_data)
        word = result.payload
        have, allowed, ranked, go = (Signal(name=f"unit{unit}_{name}") for name in ("have", "allowed", "ranked", "go"))
        pending, read_data = self._kept(m, unit, g.k_max, go, word.last, info.keep, word.keep, word.index)
        m.d.comb += [
            have.eq(result.valid & closing.r_rdy),
            allowed.eq(~info.keep | (pending != self._AHEAD)),
            ranked.eq(info.report & word.keep),
            go.eq(have & allowed & (~ranked | rank.i.ready)),
            result.ready.eq(go),
            closing.r_en.eq(go & word.last),
            rank.i.valid.eq(have & allowed & ranked),
            rank.i.payload.kind.eq(ResponseKind.RANK),
            rank.i.payload.tag.eq(info.tag),
            rank.i.payload.last.eq(word.last),
            rank.i.payload.index.eq(word.index),
            rank.i.payload.score.eq(word.score),
        ]
        m.d.comb += self.topk_busy[unit].eq(held | (closing.level != 0) | ~rank.idle)
        return rank.o, read_data

    def _filter_result(self, m, holder, result, closing, busy):
        """Filter holder ``holder``'s results into its survivors banks, KEPT responses and, for a query that had
        more candidates than the unit holds, an ERROR; ``busy``: the unit holds a query. Returns the response stream
        and the survivors read data."""
        g = self.geometry
        m.submodules[f"rank{holder}"] = rank = RegisterSlice(g.response_layout())
        info = data.View(closing_layout(), closing.r_data)
        word = result.payload
        have, allowed, reported, go = (Signal(name=f"unit{holder}_{name}")
                                       for name in ("have", "allowed", "reported", "go"))
        pending, read_data = self._kept(m, holder, g.filter_capacity, go, word.last, info.keep, ~word.empty,
                                        word.index)
        failed = word.last & word.error
        # One response per word at most: the ERROR of an overflowing query replaces its last KEPT.
        m.d.comb += [
            have.eq(result.valid & closing.r_rdy),
            allowed.eq(~info.keep | (pending != self._AHEAD)),
            reported.eq((info.report & ~word.empty) | failed),
            go.eq(have & allowed & (~reported | rank.i.ready)),
            result.ready.eq(go),
            closing.r_en.eq(go & word.last),
            rank.i.valid.eq(have & allowed & reported),
            rank.i.payload.kind.eq(Mux(failed, ResponseKind.ERROR, ResponseKind.KEPT)),
            rank.i.payload.code.eq(Mux(failed, ErrorCode.ITEMS, ErrorCode.NONE)),
            rank.i.payload.tag.eq(info.tag),
            rank.i.payload.last.eq(word.last),
            rank.i.payload.index.eq(Mux(failed, Opcode.SCORE.value, word.index)),
        ]
        # A response in the slice is work too: the unit's input and output may both be done a cycle before it leaves.
        m.d.comb += self.filter_busy[holder - g.units].eq(busy | ~rank.idle)
        return rank.o, read_data

    def _kept(self, m, holder, positions, go, last, keep, present, index):
        """The kept results of ``holder``: its survivors banks (``positions`` places each), written from position 0
        for a query whose closing SCORE had ``keep``, one ``present`` word per ``go`` (``last`` ends the result), and
        ``results_done``. Returns ``pending`` (kept results not yet released) and the survivors read data."""
        done = self.results_done[holder]
        pending = Signal(range(self._AHEAD + 1), name=f"unit{holder}_pending")
        position = Signal(range(positions), name=f"unit{holder}_position")
        completes = go & last & keep
        m.d.sync += pending.eq(pending + completes - self.release[holder])
        with m.If(go):
            m.d.sync += position.eq(Mux(last, 0, position + 1))
        with m.If(completes):
            m.d.sync += done.eq(done + 1)
        bits = Shape.cast(range(positions)).width
        m.submodules[f"survivors{holder}"] = survivors = Memory(shape=unsigned(INDEX_BITS), depth=2 << bits,
                                                                init=[])
        write, read = survivors.write_port(), survivors.read_port()
        m.d.comb += [
            write.en.eq(go & keep & present),
            write.addr.eq(Cat(position, ~done[0])),
            write.data.eq(index),
            read.addr.eq(Cat(self.surv_addr.position[:bits], self.surv_addr.bank)),
        ]
        return pending, read.data
