"""The lane front ends: between the controller, the fetcher, the joiner, the score sequencers and one lane of the
MLP engine (docs/chip.md, "Units").

A front end takes its lane's LANE commands (:meth:`~rpaccel.rtl.accel.isa.ChipGeometry.lane_layout`) in order::

    cmd --> command queue --> gate --------------------------------------> engine_cmd  (the MLPCommand)
                                |  (waits for wait_weights)
                                +--> act jobs ---> act sequencer --------> act         (INPUT: dense or inter
                                |    dense, inter ---^                                   words cut to the lane)
                                +--> out routes -> RouteDemux -----------> bottom, logits
                                                       ^--- out                         (LAYER with to_output)

The gate passes the command at the head of the queue once the weight loader has completed ``wait_weights``
WEIGHTS commands (modulo 256) and there is room for what the command needs further on: an INPUT leaves an act job
(source, words per item, items, words the lane keeps per item), an output layer an out route (destination, items,
n-tiles). The act sequencer takes each INPUT's ``items * src_words`` words of ``rows`` elements from ``dense`` or
``inter``, cuts every word into ``rows / r`` words of the lane's width ``r`` in the current split, and sends the
lane the first ``ktiles`` of each item's cut words (the rest are dropped), item after item, as the engine's INPUT
takes them. Each out route sends the layer's ``items * ntiles`` result words to ``bottom`` (the joiner) or
``logits`` (the score sequencer), through a :class:`~rpaccel.rtl.lib.route.RouteDemux` fed one entry of ``items``
words per n-tile (no multiplier).

The streams into the engine (``engine_cmd``, ``act``) leave from register slices and the engine's ``out`` enters
one, so no combinational path crosses between the front end and the engine, which lie apart on the die.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...numeric import ACC_BITS, ACT_BITS
from ..lib.queue import Queue
from ..lib.route import RouteDemux
from ..lib.select import pick, split_modes
from ..lib.slice import RegisterSlice
from ..mlp import COUNT_BITS, WAIT_BITS, MLPCommand, Op, satisfied
from .isa import ActSource, ChipGeometry, OutDest

__all__ = ["LaneFrontEnd"]

#: An INPUT's work for the act sequencer.
_ACT_JOB = data.StructLayout({"src": ActSource, "src_words": unsigned(8), "items": unsigned(COUNT_BITS),
                              "ktiles": unsigned(COUNT_BITS)})
#: An output layer's route: ``items`` result words per n-tile to ``dst``.
_OUT_ROUTE = data.StructLayout({"dst": OutDest, "items": unsigned(COUNT_BITS), "ntiles": unsigned(COUNT_BITS)})


class LaneFrontEnd(wiring.Component):
    """The front end of lane ``lane``: its command queue and gate, act sequencer and output routes (see the module
    documentation).

    A program must give each INPUT at least ``ktiles`` cut words per item (``src_words * rows / r >= ktiles``)
    and ``src_words`` of at least 1, and must not change ``split`` while the front end or its lane is busy; the
    driver's checker and the controller see to that.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    lane : int
        The lane, ``0 <= lane < geometry.lanes``.

    Members
    -------
    cmd : In(stream.Signature(geometry.lane_layout()))
        The lane's LANE commands, in order.
    weights_done : In(8)
        WEIGHTS commands the weight loader has completed (modulo 256).
    engine_cmd : Out(stream.Signature(MLPCommand))
        To the engine's ``cmd<lane>``.
    split : In(range(lanes + 1))
        The array's split.
    dense, inter : In(stream.Signature(geometry.act_word_layout()))
        Words of ``rows`` int8 from the fetcher and from the joiner.
    act : Out(stream.Signature(data.ArrayLayout(signed(8), lane_rows)))
        To the engine's ``act<lane>``; with fewer rows ``r`` in the current split, elements ``r`` and up are zero.
    out : In(stream.Signature(data.ArrayLayout(signed(32), lane_cols)))
        From the engine's ``out<lane>``.
    bottom, logits : Out(stream.Signature(data.ArrayLayout(signed(32), lane_cols)))
        Output layers' results for the joiner (``dst`` JOIN) and the score sequencer (``dst`` SCORE).
    busy : Out(1)
        A command is queued or on its way, or an INPUT's words or an output layer's results are still to pass.
    idle : Out(1)
        Not ``busy``.
    """

    #: Depth of the command queue (LANE commands waiting for the gate).
    COMMANDS = 16
    #: Depth of the act job queue (INPUTs the gate has passed whose words are still to come).
    ACT_JOBS = 4
    #: Depth of the out route queue (output layers the gate has passed whose results are still to come).
    OUT_ROUTES = 4

    def __init__(self, geometry, lane):
        error = None
        if not isinstance(geometry, ChipGeometry):
            error = TypeError(f"Lane front end geometry must be a ChipGeometry, not {geometry!r}")
        elif not isinstance(lane, int) or isinstance(lane, bool) or not 0 <= lane < geometry.lanes:
            error = ValueError(f"Lane front end lane must be an integer in [0, {geometry.lanes}), not {lane!r}")
        else:
            uneven = [n for n in geometry.engine.lane_modes(lane) if geometry.rows % geometry.engine.splits[n].rows]
            if uneven:
                n = uneven[0]
                error = ValueError(f"Lane front end: words of {geometry.rows} elements do not cut into the "
                                   f"{geometry.engine.splits[n].rows}-element words of split {n}")
        if error is not None:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise error
        self.geometry, self.lane = geometry, lane
        engine = geometry.engine
        #: ``{split: r}``: the lane's rows in each split it works in.
        self.split_rows = {n: engine.splits[n].rows for n in engine.lane_modes(lane)}
        word = stream.Signature(geometry.act_word_layout())
        results = stream.Signature(data.ArrayLayout(signed(ACC_BITS), engine.lane_cols(lane)))
        super().__init__({
            "cmd": In(stream.Signature(geometry.lane_layout())),
            "weights_done": In(WAIT_BITS),
            "engine_cmd": Out(stream.Signature(MLPCommand)),
            "split": In(range(geometry.lanes + 1)),
            "dense": In(word),
            "inter": In(word),
            "act": Out(stream.Signature(data.ArrayLayout(signed(ACT_BITS), engine.lane_rows(lane)))),
            "out": In(results),
            "bottom": Out(results),
            "logits": Out(results),
            "busy": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        m.submodules.commands = commands = Queue(g.lane_layout().size, depth=self.COMMANDS, register="read")
        m.submodules.jobs = jobs = Queue(_ACT_JOB.size, depth=self.ACT_JOBS, register="read")
        m.submodules.routes = routes = Queue(_OUT_ROUTE.size, depth=self.OUT_ROUTES, register="read")
        m.submodules.cmd_slice = cmd_slice = RegisterSlice(MLPCommand)
        m.submodules.act_slice = act_slice = RegisterSlice(self.act.payload.shape())
        m.submodules.out_slice = out_slice = RegisterSlice(self.out.payload.shape())
        m.submodules.demux = demux = RouteDemux(self.out.payload.shape(), 2, count_bits=COUNT_BITS)
        wiring.connect(m, cmd_slice.o, wiring.flipped(self.engine_cmd))
        wiring.connect(m, act_slice.o, wiring.flipped(self.act))
        wiring.connect(m, wiring.flipped(self.out), out_slice.i)
        wiring.connect(m, out_slice.o, demux.i)
        wiring.connect(m, demux.o[OutDest.JOIN.value], wiring.flipped(self.bottom))
        wiring.connect(m, demux.o[OutDest.SCORE.value], wiring.flipped(self.logits))

        # The command queue and the gate.
        m.d.comb += [commands.w_data.eq(self.cmd.payload), commands.w_en.eq(self.cmd.valid),
                     self.cmd.ready.eq(commands.w_rdy)]
        head = g.lane_layout()(commands.r_data)
        is_input = head.cmd.op == Op.INPUT
        to_output = ~is_input & head.cmd.to_output
        passed = Signal()
        job, route = Signal(_ACT_JOB), Signal(_OUT_ROUTE)
        m.d.comb += [
            job.src.eq(head.src), job.src_words.eq(head.src_words), job.items.eq(head.cmd.items),
            job.ktiles.eq(head.cmd.ktiles),
            route.dst.eq(head.dst), route.items.eq(head.cmd.items), route.ntiles.eq(head.cmd.ntiles),
        ]
        m.d.comb += [
            cmd_slice.i.valid.eq(commands.r_rdy & satisfied(self.weights_done, head.wait_weights)
                                 & (~is_input | jobs.w_rdy) & (~to_output | routes.w_rdy)),
            cmd_slice.i.payload.eq(head.cmd),
            passed.eq(cmd_slice.i.valid & cmd_slice.i.ready),
            commands.r_en.eq(passed),
            jobs.w_en.eq(passed & is_input),
            jobs.w_data.eq(job),
            routes.w_en.eq(passed & to_output),
            routes.w_data.eq(route),
        ]
        running = self._act_sequencer(m, _ACT_JOB(jobs.r_data), jobs, act_slice)
        pending = self._out_routes(m, _OUT_ROUTE(routes.r_data), routes, demux)
        m.d.comb += [
            self.idle.eq((commands.level == 0) & cmd_slice.idle & (jobs.level == 0) & ~running & act_slice.idle
                         & (routes.level == 0) & (pending == 0) & out_slice.idle),
            self.busy.eq(~self.idle),
        ]
        return m

    def _act_sequencer(self, m, job, jobs, act_slice):
        """INPUTs' words from ``dense`` or ``inter``, cut to the lane's width, into ``act_slice``; returns the
        register that is high while a job runs.

        One cut word per cycle; a word (or its rest) the lane does not keep is dropped in one cycle.
        """
        modes = split_modes(m, self.split, self.split_rows, name="act")
        ratios = {n: self.geometry.rows // r for n, r in self.split_rows.items()}
        running = Signal(name="act_running")
        src = Signal(ActSource, name="act_src")
        last_word = Signal(8, name="act_last_word")      # src_words - 1
        last_item = Signal(COUNT_BITS, name="act_last_item")
        ktiles = Signal(COUNT_BITS, name="act_ktiles")
        item = Signal(COUNT_BITS, name="act_item")
        word = Signal(8, name="act_word")                # the item's source word
        part = Signal(range(max(ratios.values())), name="act_part")  # the cut word of the source word
        left = Signal(COUNT_BITS, name="act_left")       # cut words the item still sends

        start = ~running & jobs.r_rdy
        m.d.comb += jobs.r_en.eq(start)
        with m.If(start):
            m.d.sync += [running.eq(1), src.eq(job.src), last_word.eq(job.src_words - 1),
                         last_item.eq(job.items - 1), ktiles.eq(job.ktiles), item.eq(0), word.eq(0), part.eq(0),
                         left.eq(job.ktiles)]

        source = {ActSource.DENSE: self.dense, ActSource.INTERACT: self.inter}
        valid = Mux(src == ActSource.INTERACT, self.inter.valid, self.dense.valid)
        payload = Mux(src == ActSource.INTERACT, self.inter.payload.as_value(), self.dense.payload.as_value())
        send = left != 0
        # This cut word is the last of its source word that the item keeps: take the next source word.
        word_done = ~send | (left == 1) | pick([(modes[n], part == ratio - 1) for n, ratio in ratios.items()])
        go = running & (~send | act_slice.i.ready)       # independent of the sources' valid
        step = go & valid
        for kind, port in source.items():
            m.d.comb += port.ready.eq(go & word_done & (src == kind))
        m.d.comb += [act_slice.i.valid.eq(running & send & valid),
                     act_slice.i.payload.eq(pick([(modes[n], self._cut(payload, self.split_rows[n], part, ratio))
                                                  for n, ratio in ratios.items()]))]
        with m.If(step):
            with m.If(send):
                m.d.sync += left.eq(left - 1)
            with m.If(~word_done):
                m.d.sync += part.eq(part + 1)
            with m.Elif(word != last_word):
                m.d.sync += [part.eq(0), word.eq(word + 1)]
            with m.Else():  # the item's last source word
                m.d.sync += [part.eq(0), word.eq(0), left.eq(ktiles), item.eq(item + 1)]
                with m.If(item == last_item):
                    m.d.sync += running.eq(0)
        return running

    def _cut(self, payload, rows, part, ratio):
        """Cut word ``part`` (``rows`` elements from element ``part * rows``) of the source word ``payload``, in
        the low elements of an ``act`` word."""
        bits = rows * ACT_BITS
        pieces = [payload[p * bits:(p + 1) * bits] for p in range(ratio)]
        return pick([(part == p, piece) for p, piece in enumerate(pieces[1:], 1)], pieces[0])

    def _out_routes(self, m, route, routes, demux):
        """Output layers' routes into ``demux``, one entry of ``items`` words per n-tile; returns the count of
        result words routed and not yet passed."""
        ntile = Signal(COUNT_BITS, name="route_ntile")
        # At most one entry's words: the demultiplexer takes an entry once the one before has passed its last.
        pending = Signal(COUNT_BITS, name="route_pending")
        last = ntile == route.ntiles - 1
        added = demux.route.valid & demux.route.ready
        passed = demux.i.valid & demux.i.ready
        m.d.comb += [
            demux.route.valid.eq(routes.r_rdy),
            demux.route.payload.port.eq(route.dst),
            demux.route.payload.count.eq(route.items),
            routes.r_en.eq(demux.route.ready & last),
        ]
        with m.If(added):
            m.d.sync += ntile.eq(Mux(last, 0, ntile + 1))
        m.d.sync += pending.eq(pending + Mux(added, route.items, 0) - passed)
        return pending
