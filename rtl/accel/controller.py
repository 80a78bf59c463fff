"""The controller: checks each command, hands it to the unit that executes it, runs the chip-wide ones itself.

Commands come in on ``cmd`` and leave the controller in order, one per cycle at most, after one register stage
(the command is checked there, against the state the commands before it left: the split, the weight pages loaded,
the embedding tables configured). FETCH and EMB go to the fetcher's queue, LANE and SCORE to the lane's queues,
WEIGHTS to the weight loader's; a refused command is answered with an ERROR and dropped. SYNC, MEM_WRITE,
MEM_READ, SPLIT and COUNTERS are *barriers*: they wait until every queue is empty and the chip has been ``quiet``
(every unit idle, nothing in flight between units) for :data:`QUIET_CYCLES` cycles in a row, then run here:

* SYNC answers DONE;
* MEM_WRITE writes a line through the controller's memory port (to the memory arbiter, idle then), MEM_READ reads
  lines through it (bursts of at most ``max_burst`` lines) and answers one DATA each;
* SPLIT sets ``split``;
* COUNTERS asks the embedding unit for its counters (an EMB COUNTERS through the fetcher's queue), then answers
  one COUNTER per :class:`~.isa.Counter` the chip has, and clears them all if asked.

Responses of the controller, the fetcher and the score unit are merged round-robin into ``rsp``.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..embedding import EmbeddingOp
from ..lib.slice import RegisterSlice
from ..mlp import Op
from .isa import ChipGeometry, Counter, ErrorCode, FetchSource, Opcode, ResponseKind, ScoreDest

__all__ = ["QUIET_CYCLES", "Controller", "ResponseMerge", "busy_layout", "counter_ids"]

#: Cycles the chip must have been quiet before a barrier command runs: longer than any hand-off between units
#: (a transfer in flight between two units' registers is seen by one of them within this time).
QUIET_CYCLES = 8
#: Pages of the weight buffer whose "loaded" flags the controller keeps (for the WEIGHTS error of LANE layers).
WEIGHT_PAGES = 64
#: Counters are 32 bits.
COUNTER_BITS = 32


def busy_layout(geometry):
    """The busy signals the controller counts: one per unit, one per lane, one per top-k unit."""
    return data.StructLayout({"fetch": 1, "embedding": 1, "join": 1, "interaction": 1, "weights": 1,
                              "lanes": geometry.lanes, "topk": geometry.units, "filters": geometry.filters})


def counter_ids(geometry):
    """The counters a chip of ``geometry`` answers, in order: their :class:`~.isa.Counter` values (a lane's busy
    counter is ``BUSY_LANE0 + lane``, a top-k unit's ``BUSY_TOPK0 + unit``)."""
    ids = []
    for counter in Counter:
        if counter is Counter.BUSY_LANE0:
            ids += [counter.value + lane for lane in range(geometry.lanes)]
        elif counter is Counter.BUSY_TOPK0:
            ids += [counter.value + unit for unit in range(geometry.units)]
        elif counter is Counter.BUSY_FILTER0:
            ids += [counter.value + unit for unit in range(geometry.filters)]
        else:
            ids.append(counter.value)
    return ids


class ResponseMerge(wiring.Component):
    """Round-robin merge of ``n`` response streams into one, through a register slice.

    Members
    -------
    i : In(stream.Signature(shape)).array(n)
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape, n):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Response merge needs a positive number of inputs, not {n!r}")
        self.n = n
        super().__init__({"i": In(stream.Signature(shape)).array(n), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.slice = out = RegisterSlice(self.o.payload.shape())
        wiring.connect(m, out.o, wiring.flipped(self.o))
        last = Signal(range(max(self.n, 2)))
        # The first valid input after the one granted last, wrapping around.
        grant = Signal(range(max(self.n, 2)))
        found = Const(0)
        for offset in reversed(range(self.n)):
            index = Signal(range(max(self.n, 2)), name=f"candidate{offset}")
            m.d.comb += index.eq(Mux(last + 1 + offset >= self.n, last + 1 + offset - self.n, last + 1 + offset))
            valid = Array(port.valid for port in self.i)[index]
            with m.If(valid):
                m.d.comb += grant.eq(index)
            found = found | valid
        inputs = Array(self.i)
        m.d.comb += [out.i.valid.eq(found), out.i.payload.eq(inputs[grant].payload)]
        for index, port in enumerate(self.i):
            m.d.comb += port.ready.eq(out.i.ready & (grant == index))
        with m.If(out.i.valid & out.i.ready):
            m.d.sync += last.eq(grant)
        return m


class Controller(wiring.Component):
    """The chip's controller (see the module documentation).

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    mem_lines : int
        Lines of the memory (addresses at or above are refused).
    unit_responses : int
        Response streams of units to merge (the fetcher's and the score unit's).
    queue_depth : int
        Depth of each unit's instruction queue.

    Members
    -------
    cmd : In(stream.Signature(command))
    rsp : Out(stream.Signature(response))
    fetch : Out(stream.Signature(fetcher instruction))
    lane : Out(stream.Signature(LANE command)).array(lanes)
    score : Out(stream.Signature(score instruction)).array(lanes)
    weights : Out(stream.Signature(WEIGHTS command))
    mem : Out(MemoryPort)
        To the memory arbiter (used only by barriers, while the other requesters are idle).
    emb_counters : In(stream.Signature(embedding unit counters))
    unit_rsp : In(stream.Signature(response)).array(unit_responses)
    split : Out(range(lanes + 1))
        The array split (1 after reset).
    quiet : In(1)
        Every unit idle and nothing in flight between units.
    busy : In(busy_layout(geometry))
    mem_read_lines, mem_write_lines : In(32)
        The memory arbiter's line counters.
    clear_counters : Out(1)
        A pulse that clears the memory arbiter's counters with the controller's.
    """

    def __init__(self, geometry, *, mem_lines, unit_responses=2, queue_depth=16):
        if not isinstance(geometry, ChipGeometry):
            raise TypeError(f"Controller geometry must be a ChipGeometry, not {geometry!r}")
        if not isinstance(mem_lines, int) or mem_lines < 1 or mem_lines > 1 << geometry.addr_bits:
            raise ValueError(f"Memory lines must be in [1, {1 << geometry.addr_bits}], not {mem_lines!r}")
        if not isinstance(queue_depth, int) or queue_depth < 2:
            raise ValueError(f"Queue depth must be an integer of at least 2, not {queue_depth!r}")
        self.geometry, self.mem_lines, self.queue_depth = geometry, mem_lines, queue_depth
        g = geometry
        response = g.response_layout()
        super().__init__({
            "cmd": In(stream.Signature(g.command_layout())),
            "rsp": Out(stream.Signature(response)),
            "fetch": Out(stream.Signature(g.fetcher_instr_layout())),
            "lane": Out(stream.Signature(g.lane_layout())).array(g.lanes),
            "score": Out(stream.Signature(g.score_instr_layout())).array(g.lanes),
            "weights": Out(stream.Signature(g.weights_layout())),
            "mem": Out(g.emb_layouts.memory),
            "emb_counters": In(stream.Signature(g.emb_layouts.counters)),
            "unit_rsp": In(stream.Signature(response)).array(unit_responses),
            "split": Out(range(g.lanes + 1), init=1),
            "quiet": In(1),
            "busy": In(busy_layout(g)),
            "mem_read_lines": In(COUNTER_BITS),
            "mem_write_lines": In(COUNTER_BITS),
            "clear_counters": Out(1),
        })

    # Checks ------------------------------------------------------------------------------------------------

    def _weight_page_bits(self):
        words = self.geometry.engine.weight_words
        pages = min(WEIGHT_PAGES, words)
        return max(0, (-(-words // pages) - 1).bit_length())

    def _check(self, m, c, state):
        """``(code, detail)``: the ErrorCode of command ``c`` in the current ``state`` and the offending value."""
        g = self.geometry
        code = Signal(ErrorCode, name="check_code")
        detail = Signal(32, name="check_detail")
        a = c.arg
        split = state["split"]
        acc_rows = Mux(split == 1, g.engine.splits[1].acc_rows, 0)
        for n, shape in g.engine.splits.items():
            acc_rows = Mux(split == n, shape.acc_rows, acc_rows)
        mem_lines, weight_words = self.mem_lines, g.engine.weight_words
        word_bytes, line_bytes = g.engine.word_bytes, g.line_bytes

        def fail(cond, error, value):
            with m.If(cond):
                m.d.comb += [code.eq(error), detail.eq(value)]

        # Written in reverse priority: a later m.If overrides an earlier one.
        with m.Switch(c.op):
            with m.Case(Opcode.MEM_WRITE):
                fail(a.mem_write.addr >= mem_lines, ErrorCode.ADDRESS, a.mem_write.addr)
            with m.Case(Opcode.MEM_READ):
                fail(a.mem_read.addr + a.mem_read.length >= mem_lines, ErrorCode.ADDRESS, a.mem_read.addr)
            with m.Case(Opcode.SPLIT):
                allowed = Const(0)
                for n in g.engine.splits:
                    allowed = allowed | (a.split.n == n)
                fail(~allowed, ErrorCode.SPLIT, a.split.n)
            with m.Case(Opcode.WEIGHTS):
                w = a.weights
                line_shift = (line_bytes - 1).bit_length()
                lines = (w.words * word_bytes + line_bytes - 1) >> line_shift
                fail(w.mem_addr + lines > mem_lines, ErrorCode.ADDRESS, w.mem_addr)
                fail((w.words == 0) | (w.w_addr + w.words > weight_words), ErrorCode.WEIGHTS, w.w_addr + w.words)
                fail(w.wait & (w.lane >= split), ErrorCode.LANE, w.lane)
            with m.Case(Opcode.EMB):
                e = a.emb
                fail(e.table >= g.emb.tables, ErrorCode.TABLE, e.table)
                fail((e.op == EmbeddingOp.LOOKUP) | (e.op == EmbeddingOp.COUNTERS) | (e.op.as_value() > 5),
                     ErrorCode.FIELD, e.op.as_value())
            with m.Case(Opcode.FETCH):
                f = a.fetch
                fail(f.base >= mem_lines, ErrorCode.ADDRESS, f.base)
                fail((f.source == FetchSource.LIST) & (f.list_addr >= mem_lines), ErrorCode.ADDRESS, f.list_addr)
                fail(state["tables"] + 1 < f.join.vectors, ErrorCode.TABLE, f.join.vectors - 1)
                fail((f.source == FetchSource.RANGE) & (f.first + f.items > f.count), ErrorCode.INDEX,
                     f.first + f.items)
                positions = Mux(f.unit < g.units, g.k_max, g.filter_capacity)
                fail((f.source == FetchSource.SURVIVORS) & (f.first + f.items > positions), ErrorCode.INDEX,
                     f.first + f.items)
                fail((f.source == FetchSource.SURVIVORS) & (f.unit >= g.holders), ErrorCode.UNIT, f.unit)
                bad_join = ((f.join.mode >= 2) | (f.join.vectors == 0) | (f.join.vectors > g.max_vectors)
                            | (f.join.dim == 0) | (f.join.dim > g.max_dim))
                fail(bad_join, ErrorCode.FIELD, Cat(f.join.dim, f.join.vectors))
                fail(f.source.as_value() == 3, ErrorCode.FIELD, f.source.as_value())
                fail((f.items == 0) | (f.items > acc_rows), ErrorCode.ITEMS, f.items)
                fail(f.lane >= split, ErrorCode.LANE, f.lane)
            with m.Case(Opcode.LANE):
                ln = a.lane
                page = (ln.cmd.w_base >> self._weight_page_bits())[:WEIGHT_PAGES.bit_length() - 1]
                loaded = state["pages"].bit_select(page, 1)
                fail((ln.cmd.op == Op.LAYER) & ~loaded, ErrorCode.WEIGHTS, ln.cmd.w_base)
                fail((ln.cmd.items == 0) | (ln.cmd.items > acc_rows), ErrorCode.ITEMS, ln.cmd.items)
                fail(ln.lane >= split, ErrorCode.LANE, ln.lane)
            with m.Case(Opcode.SCORE):
                s = a.score
                topk, filtered = s.dest == ScoreDest.TOPK, s.dest == ScoreDest.FILTER
                k_limit = Mux(filtered, g.filter_capacity, g.k_max)
                fail((topk | filtered) & s.last & ((s.k == 0) | (s.k > k_limit)), ErrorCode.K, s.k)
                fail((topk & (s.unit >= g.units)) | (filtered & (s.unit >= g.filters)), ErrorCode.UNIT, s.unit)
                fail(s.dest.as_value() == 3, ErrorCode.FIELD, s.dest.as_value())
                fail(s.items == 0, ErrorCode.ITEMS, s.items)
                fail(s.lane >= split, ErrorCode.LANE, s.lane)
            with m.Case(Opcode.NOP, Opcode.SYNC, Opcode.COUNTERS):
                pass
            with m.Default():
                fail(1, ErrorCode.OPCODE, c.op.as_value())
        return code, detail

    # Elaboration -------------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        response = g.response_layout()

        # Input register stage.
        m.submodules.input = cmd_in = RegisterSlice(g.command_layout())
        wiring.connect(m, wiring.flipped(self.cmd), cmd_in.i)
        c = cmd_in.o.payload

        # State the checks read.
        pages = Signal(min(WEIGHT_PAGES, g.engine.weight_words), name="weight_pages")
        configured = Signal(max(g.emb.tables, 1), name="tables_configured")
        tables = Signal(range(g.emb.tables + 1), name="tables_count")
        code, detail = self._check(m, c, {"split": self.split, "pages": pages, "tables": tables})

        # Unit queues.
        queues = {}
        for name, layout in (("fetch", g.fetcher_instr_layout()), ("weights", g.weights_layout()),
                             *((f"lane{lane}", g.lane_layout()) for lane in range(g.lanes)),
                             *((f"score{lane}", g.score_instr_layout()) for lane in range(g.lanes))):
            queue = fifo.SyncFIFOBuffered(width=data.Layout.cast(layout).size, depth=self.queue_depth)
            m.submodules[f"{name}_queue"] = queues[name] = queue
        outputs = {"fetch": self.fetch, "weights": self.weights,
                   **{f"lane{lane}": self.lane[lane] for lane in range(g.lanes)},
                   **{f"score{lane}": self.score[lane] for lane in range(g.lanes)}}
        for name, queue in queues.items():
            port = outputs[name]
            m.d.comb += [port.valid.eq(queue.r_rdy), port.payload.eq(queue.r_data), queue.r_en.eq(port.ready)]
        queues_empty = Cat(q.level == 0 for q in queues.values()).all()

        # Quiet for QUIET_CYCLES cycles in a row.
        quiet_for = Signal(range(QUIET_CYCLES + 1))
        with m.If(~self.quiet | ~queues_empty):
            m.d.sync += quiet_for.eq(0)
        with m.Elif(quiet_for != QUIET_CYCLES):
            m.d.sync += quiet_for.eq(quiet_for + 1)
        settled = (quiet_for == QUIET_CYCLES) & self.quiet & queues_empty

        # The controller's own responses.
        own = stream.Signature(response).create(path=("own_rsp",))
        m.d.comb += own.payload.tag.eq(c.tag)

        # Counters.
        counters = {counter_id: Signal(COUNTER_BITS, name=f"counter{counter_id}") for counter_id in counter_ids(g)
                    if not Counter.EMB_LOOKUPS.value <= counter_id <= Counter.MEM_WRITE_LINES.value}
        clear = Signal()
        m.d.comb += self.clear_counters.eq(clear)
        busy = self.busy
        increments = {Counter.CYCLES.value: Const(1), Counter.BUSY_FETCH.value: busy.fetch,
                      Counter.BUSY_EMBEDDING.value: busy.embedding, Counter.BUSY_JOIN.value: busy.join,
                      Counter.BUSY_INTERACTION.value: busy.interaction, Counter.BUSY_WEIGHTS.value: busy.weights}
        for lane in range(g.lanes):
            increments[Counter.BUSY_LANE0.value + lane] = busy.lanes[lane]
        for unit in range(g.units):
            increments[Counter.BUSY_TOPK0.value + unit] = busy.topk[unit]
        for unit in range(g.filters):
            increments[Counter.BUSY_FILTER0.value + unit] = busy.filters[unit]
        accepted = cmd_in.o.valid & cmd_in.o.ready
        refused = Signal()
        increments[Counter.COMMANDS.value] = accepted
        increments[Counter.ERRORS.value] = accepted & refused
        for counter_id, signal in counters.items():
            if counter_id not in increments:
                continue      # the embedding unit's and the memory arbiter's are kept where they count
            with m.If(clear):
                m.d.sync += signal.eq(0)
            with m.Else():
                m.d.sync += signal.eq(signal + increments[counter_id])

        # Embedding counters (snapshot of the unit's) and the memory arbiter's.
        emb = Signal(g.emb_layouts.counters)
        live = dict(counters)
        for counter in Counter:
            if counter.name.startswith("EMB_"):
                live[counter.value] = getattr(emb, counter.name[4:].lower())
        live[Counter.MEM_READ_LINES.value] = self.mem_read_lines
        live[Counter.MEM_WRITE_LINES.value] = self.mem_write_lines
        ids = counter_ids(g)
        values = Array(live[i] for i in ids)
        names = Array(Const(i, Shape.cast(Counter).width) for i in ids)
        counter_at = Signal(range(len(ids) + 1))

        # Memory reads.
        read_left = Signal(17)          # lines still to request
        read_addr = Signal(g.addr_bits)
        lines_left = Signal(17)         # lines still to answer
        max_burst = g.emb.max_burst

        m.d.comb += self.mem.resp.ready.eq(0)
        barrier = Signal()
        m.d.comb += barrier.eq(c.op.as_value().matches(Opcode.SYNC, Opcode.MEM_WRITE, Opcode.MEM_READ,
                                                       Opcode.SPLIT, Opcode.COUNTERS))
        m.d.comb += refused.eq(code != ErrorCode.NONE)

        with m.FSM(name="issue"):
            with m.State("DECODE"):
                with m.If(cmd_in.o.valid & refused):
                    m.d.comb += [own.valid.eq(1), own.payload.kind.eq(ResponseKind.ERROR),
                                 own.payload.code.eq(code), own.payload.index.eq(c.op.as_value()),
                                 own.payload.score.eq(detail), own.payload.last.eq(1),
                                 cmd_in.o.ready.eq(own.ready)]
                with m.Elif(cmd_in.o.valid & ~barrier):
                    self._dispatch(m, c, cmd_in, queues, pages, configured, tables)
                with m.Elif(cmd_in.o.valid & settled), m.Switch(c.op):
                    with m.Case(Opcode.SYNC):
                        m.d.comb += [own.valid.eq(1), own.payload.kind.eq(ResponseKind.DONE),
                                     own.payload.last.eq(1), cmd_in.o.ready.eq(own.ready)]
                    with m.Case(Opcode.SPLIT):
                        m.d.sync += self.split.eq(c.arg.split.n)
                        m.d.comb += cmd_in.o.ready.eq(1)
                    with m.Case(Opcode.MEM_WRITE):
                        m.d.comb += [self.mem.req.valid.eq(1), self.mem.req.payload.write.eq(1),
                                     self.mem.req.payload.addr.eq(c.arg.mem_write.addr),
                                     self.mem.req.payload.data.eq(c.arg.mem_write.data),
                                     cmd_in.o.ready.eq(self.mem.req.ready)]
                    with m.Case(Opcode.MEM_READ):
                        m.d.sync += [read_left.eq(c.arg.mem_read.length + 1),
                                     lines_left.eq(c.arg.mem_read.length + 1),
                                     read_addr.eq(c.arg.mem_read.addr)]
                        m.next = "READ"
                    with m.Case(Opcode.COUNTERS):
                        m.d.comb += queues["fetch"].w_en.eq(1)
                        request = Signal(g.fetcher_instr_layout())
                        m.d.comb += [request.tag.eq(c.tag), request.emb.eq(1),
                                     request.arg.emb.op.eq(EmbeddingOp.COUNTERS),
                                     request.arg.emb.arg.counters.clear.eq(c.arg.counters.clear),
                                     queues["fetch"].w_data.eq(request)]
                        with m.If(queues["fetch"].w_rdy):
                            m.next = "EMB_COUNTERS"
            with m.State("READ"):
                # Requests in bursts, lines answered as DATA, in order.
                burst = Mux(read_left > max_burst, max_burst, read_left)
                m.d.comb += [self.mem.req.valid.eq(read_left != 0), self.mem.req.payload.write.eq(0),
                             self.mem.req.payload.addr.eq(read_addr), self.mem.req.payload.length.eq(burst - 1)]
                with m.If(self.mem.req.valid & self.mem.req.ready):
                    m.d.sync += [read_left.eq(read_left - burst), read_addr.eq(read_addr + burst)]
                m.d.comb += [own.valid.eq(self.mem.resp.valid), own.payload.kind.eq(ResponseKind.DATA),
                             own.payload.data.eq(self.mem.resp.payload), own.payload.last.eq(lines_left == 1),
                             self.mem.resp.ready.eq(own.ready)]
                with m.If(own.valid & own.ready):
                    m.d.sync += lines_left.eq(lines_left - 1)
                    with m.If(lines_left == 1):
                        m.d.comb += cmd_in.o.ready.eq(1)
                        m.next = "DECODE"
            with m.State("EMB_COUNTERS"):
                m.d.comb += self.emb_counters.ready.eq(1)
                with m.If(self.emb_counters.valid):
                    m.d.sync += [emb.eq(self.emb_counters.payload), counter_at.eq(0)]
                    m.next = "COUNTERS"
            with m.State("COUNTERS"):
                m.d.comb += [own.valid.eq(1), own.payload.kind.eq(ResponseKind.COUNTER),
                             own.payload.index.eq(names[counter_at]), own.payload.score.eq(values[counter_at]),
                             own.payload.last.eq(counter_at == len(ids) - 1)]
                with m.If(own.ready):
                    m.d.sync += counter_at.eq(counter_at + 1)
                    with m.If(counter_at == len(ids) - 1):
                        m.d.comb += [cmd_in.o.ready.eq(1), clear.eq(c.arg.counters.clear)]
                        m.next = "DECODE"

        # Responses: the controller's own, then the units'.
        m.submodules.merge = merge = ResponseMerge(response, 1 + len(self.unit_rsp))
        wiring.connect(m, own, merge.i[0])
        for index, port in enumerate(self.unit_rsp):
            wiring.connect(m, wiring.flipped(port), merge.i[1 + index])
        wiring.connect(m, merge.o, wiring.flipped(self.rsp))
        return m

    def _dispatch(self, m, c, cmd_in, queues, pages, configured, tables):
        """Push a checked FETCH, EMB, LANE, SCORE or WEIGHTS (or drop a NOP) into its unit's queue."""
        g = self.geometry
        with m.Switch(c.op):
            with m.Case(Opcode.NOP):
                m.d.comb += cmd_in.o.ready.eq(1)
            with m.Case(Opcode.FETCH, Opcode.EMB):
                instr = Signal(g.fetcher_instr_layout())
                m.d.comb += [instr.tag.eq(c.tag), instr.emb.eq(c.op == Opcode.EMB)]
                with m.If(c.op == Opcode.EMB):
                    m.d.comb += instr.arg.emb.eq(c.arg.emb)
                with m.Else():
                    m.d.comb += instr.arg.fetch.eq(c.arg.fetch)
                q = queues["fetch"]
                m.d.comb += [q.w_en.eq(1), q.w_data.eq(instr), cmd_in.o.ready.eq(q.w_rdy)]
                e = c.arg.emb
                with m.If((c.op == Opcode.EMB) & (e.op == EmbeddingOp.CONFIG) & q.w_rdy):
                    now = e.arg.config.rows != 0
                    was = configured.bit_select(e.table, 1)
                    m.d.sync += configured.bit_select(e.table, 1).eq(now)
                    with m.If(now & ~was):
                        m.d.sync += tables.eq(tables + 1)
                    with m.Elif(~now & was):
                        m.d.sync += tables.eq(tables - 1)
            with m.Case(Opcode.WEIGHTS):
                q = queues["weights"]
                m.d.comb += [q.w_en.eq(1), q.w_data.eq(c.arg.weights), cmd_in.o.ready.eq(q.w_rdy)]
                with m.If(q.w_rdy):
                    shift = self._weight_page_bits()
                    first = c.arg.weights.w_addr >> shift
                    last = (c.arg.weights.w_addr + c.arg.weights.words - 1) >> shift
                    m.d.sync += pages.eq(pages | Cat((first <= p) & (p <= last) for p in range(len(pages))))
            with m.Case(Opcode.LANE):
                for lane in range(g.lanes):
                    q = queues[f"lane{lane}"]
                    with m.If(c.arg.lane.lane == lane):
                        m.d.comb += [q.w_en.eq(1), q.w_data.eq(c.arg.lane), cmd_in.o.ready.eq(q.w_rdy)]
            with m.Case(Opcode.SCORE):
                instr = Signal(g.score_instr_layout())
                m.d.comb += [instr.tag.eq(c.tag), instr.score.eq(c.arg.score)]
                for lane in range(g.lanes):
                    q = queues[f"score{lane}"]
                    with m.If(c.arg.score.lane == lane):
                        m.d.comb += [q.w_en.eq(1), q.w_data.eq(instr), cmd_in.o.ready.eq(q.w_rdy)]

