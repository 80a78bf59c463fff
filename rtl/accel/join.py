"""The joiner: brings each item's bottom-MLP output and pooled vectors together into the interaction unit.

Per join job (one per FETCH, in fetch order: ``{lane, items, params}``, :meth:`ChipGeometry.join_job_layout
<rpaccel.rtl.accel.isa.ChipGeometry.join_job_layout>`) the joiner takes the sub-batch's bottom-MLP output from
``bottom{lane}`` into a buffer, then sends the interaction unit (:class:`~rpaccel.rtl.interaction.Interaction`)
each item's ``F`` vectors, the bottom vector first and then its ``F - 1`` pooled vectors, as ``ceil(d / rows)``
words of ``rows`` int8 (element ``k`` in lane ``k % rows`` of word ``k // rows``) with the job's parameters on
every word (the unit reads them on an item's first). The unit's output goes to ``inter[lane]`` through a
:class:`~rpaccel.rtl.lib.route.RouteDemux`, one route entry per job.

Structure:

* Jobs are taken into two queues at once: the pooled writer's (:class:`_PooledWriter`) and the bottom loader's
  (:class:`_BottomLoader`), so that each side follows the jobs at its own pace.
* The pooled writer stores every pooled vector into a FIFO of ``join_buffer_words`` words
  (:attr:`~rpaccel.config.AccelConfig.join_buffer_words`) as it arrives, ``ceil(d / rows)`` words each, one word
  a cycle: the embedding unit never waits on the joiner while the FIFO has room.
* The bottom loader writes a job's bottom block into one of two banks (``items x ceil(d / rows)`` words of
  ``rows`` int8, element-wise write enables) while the sender reads the other, so job ``j + 1``'s block is taken
  while job ``j``'s items go out. It pushes the job's route entry (``items * output_words`` words to the lane).
* The sender (:class:`_Sender`) puts out one word a cycle whenever the interaction unit takes it: a bank word for
  an item's first vector, a FIFO word for the others.

Sizes and conventions are the chip's (docs/chip.md, "Units"); a job must have ``1 <= items <=
engine.max_acc_rows``, ``1 <= F <= max_tables + 1`` and ``1 <= d <= max_emb_dim``, which the controller checks.
A job's pooled vectors (:func:`pooled_words`) must fit the FIFO: its items go out only once its whole bottom block
is in, and that block needs every dense word of the sub-batch, which the fetcher sends between the lookups whose
pooled vectors the FIFO must take meanwhile; a program must keep to it (a job beyond it stalls the chip).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from ...numeric import ACC_BITS, ACT_BITS
from ..interaction import MODES, Interaction
from ..lib.queue import Queue
from ..lib.route import RouteDemux, route_layout
from .isa import ChipGeometry

__all__ = ["JOB_QUEUE_DEPTH", "ROUTE_QUEUE_DEPTH", "JoinUnit", "pooled_words"]

#: Jobs the joiner holds before loading their bottom block (and ahead of their pooled vectors).
JOB_QUEUE_DEPTH = 4
#: Route entries of started jobs waiting for the route demultiplexer.
ROUTE_QUEUE_DEPTH = 4

_DOT = MODES.index("dot")


def pooled_words(geometry, items, vectors, dim):
    """FIFO words a job's pooled vectors take: ``items (F - 1) ceil(d / rows)``; at most
    ``config.join_buffer_words`` for the job to run (see the module's notes)."""
    return items * (vectors - 1) * -(-dim // geometry.rows)


def _bits(n):
    """Bits of a counter from 0 to ``n - 1`` (at least one)."""
    return max(1, (n - 1).bit_length())


def _chunks(dim, rows):
    """``ceil(dim / rows)``, ``rows`` a power of two."""
    return (dim + rows - 1) >> (rows.bit_length() - 1)


class _Sizes:
    """The joiner's sizes, from a :class:`ChipGeometry`."""

    def __init__(self, g):
        self.rows = g.rows
        self.max_chunks = -(-g.max_dim // g.rows)
        self.chunk_bits = _bits(self.max_chunks)
        self.item_bits = _bits(g.engine.max_acc_rows)
        self.bank_addr_bits = self.chunk_bits + self.item_bits + 1
        widest = max(g.max_dim + g.max_vectors * (g.max_vectors - 1) // 2, g.max_vectors * g.max_dim)
        self.max_words = -(-widest // g.rows)
        self.count_bits = (g.engine.max_acc_rows * self.max_words).bit_length()
        self.job = g.join_job_layout()
        self.pooled_job = data.StructLayout({"items": self.job["items"].shape,
                                             "vectors": self.job["params"].shape["vectors"].shape,
                                             "dim": self.job["params"].shape["dim"].shape})
        self.route = route_layout(g.lanes, self.count_bits)


def _advance_tiles(m, take, item, offset, last_item, last_tile, cols):
    """The bottom loader's counters over a block, n-tile-major: items inner, n-tiles outer (``offset`` is the
    n-tile's first element). Returns the signal that is high on the block's last word."""
    with m.If(take):
        with m.If(last_item):
            m.d.sync += [item.eq(0), offset.eq(offset + cols)]
        with m.Else():
            m.d.sync += item.eq(item + 1)
    return last_item & last_tile


class _PooledWriter(wiring.Component):
    """Writes each pooled vector into the FIFO as ``ceil(d / rows)`` words, one a cycle, taking the vector with
    its last word; follows the jobs (``items x (F - 1)`` vectors each, none for ``F = 1``).

    Members
    -------
    job : In(stream.Signature(sizes.pooled_job))
        The jobs, in order; one is taken when its last vector is written.
    pooled : In(stream.Signature(pooled_layout))
        The embedding unit's pooled vectors.
    fifo : Out(stream.Signature(unsigned(rows * 8)))
        Into the FIFO.
    busy : Out(1)
        A vector is partly written.
    """

    def __init__(self, sizes, pooled_layout):
        self.sizes = sizes
        super().__init__({"job": In(stream.Signature(sizes.pooled_job)),
                          "pooled": In(stream.Signature(pooled_layout)),
                          "fifo": Out(stream.Signature(unsigned(sizes.rows * ACT_BITS))),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        s, job = self.sizes, self.job.payload
        item = Signal(s.item_bits)
        vector = Signal.like(job.vectors)
        chunk = Signal(s.chunk_bits)
        width = s.max_chunks * s.rows * ACT_BITS
        row = Signal(width)
        m.d.comb += row.eq(self.pooled.payload.data.as_value())
        has_vectors = job.vectors > 1
        last_chunk = chunk == _chunks(job.dim, s.rows) - 1
        last_vector = vector == job.vectors - 2
        last_item = item == job.items - 1
        write = Signal()
        m.d.comb += [
            self.fifo.payload.eq(row.word_select(chunk, s.rows * ACT_BITS)),
            self.fifo.valid.eq(self.job.valid & has_vectors & self.pooled.valid),
            write.eq(self.fifo.valid & self.fifo.ready),
            self.pooled.ready.eq(self.job.valid & has_vectors & self.fifo.ready & last_chunk),
            self.job.ready.eq(self.job.valid & (~has_vectors | (write & last_chunk & last_vector & last_item))),
            self.busy.eq(chunk != 0),
        ]
        with m.If(write):
            m.d.sync += chunk.eq(Mux(last_chunk, 0, chunk + 1))
            with m.If(last_chunk):
                m.d.sync += vector.eq(Mux(last_vector, 0, vector + 1))
                with m.If(last_vector):
                    m.d.sync += item.eq(Mux(last_item, 0, item + 1))
        return m


class _BottomLoader(wiring.Component):
    """Writes each job's bottom block into the free bank and pushes its route entry; marks the bank full.

    Per job: ``items * ceil(d / c)`` words from ``bottom{lane}`` (``c`` the columns of a sub-array in the current
    split), n-tile-major, the low 8 bits of each element; the ``c`` elements of n-tile ``t`` go to lanes
    ``t c mod rows ..`` of the item's chunk ``t c // rows`` (``c`` divides ``rows``). The route entry ``{lane,
    items * output_words}`` is computed over two cycles from the job at the queue's head.

    Members
    -------
    job : In(stream.Signature(sizes.job))
        The jobs, in order; one is taken when its block is written and its route entry pushed.
    bottom{l} : In(stream.Signature(data.ArrayLayout(signed(32), lane_cols(l))))
        The lanes' bottom-MLP output.
    split : In(range(lanes + 1))
        The current split.
    write : Out(WritePort.Signature(...).flip())
        The banks' write port (``{chunk, item, bank}``, granularity 8).
    route : Out(stream.Signature(sizes.route))
        The jobs' route entries.
    full : Out(2), desc : Out(data.ArrayLayout(sizes.job, 2))
        Per bank: it holds a job's block not yet sent, and that job.
    release : In(2)
        Per bank: its job is sent (the bank is free from the next cycle).
    busy : Out(1)
        A job is being loaded.
    """

    def __init__(self, g, sizes):
        self.g, self.sizes = g, sizes
        members = {"job": In(stream.Signature(sizes.job))}
        for lane in range(g.lanes):
            members[f"bottom{lane}"] = In(stream.Signature(data.ArrayLayout(signed(ACC_BITS),
                                                                            g.engine.lane_cols(lane))))
        members.update({
            "split": In(range(g.lanes + 1)),
            "write": Out(WritePort.Signature(addr_width=sizes.bank_addr_bits, shape=unsigned(sizes.rows * ACT_BITS),
                                             granularity=ACT_BITS).flip()),
            "route": Out(stream.Signature(sizes.route)),
            "full": Out(2), "desc": Out(data.ArrayLayout(sizes.job, 2)), "release": In(2), "busy": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g, s, job = self.g, self.sizes, self.job.payload
        rows, log_rows = s.rows, s.rows.bit_length() - 1
        params = job.params

        # The job's lane's bottom word, low 8 bits of each element, and its handshake.
        word = Signal(rows * ACT_BITS)
        valid = Signal()
        for lane in range(g.lanes):
            bottom = getattr(self, f"bottom{lane}")
            with m.If(job.lane == lane):
                m.d.comb += [word.eq(Cat(element[:ACT_BITS] for element in bottom.payload)), valid.eq(bottom.valid)]

        # The current split's sub-array columns c, and the word's c elements repeated across a bank word (they are
        # written at a multiple of c, under element-wise enables: no shifter for the data).
        cols = Signal(range(rows + 1))
        mask = Signal(rows)
        repeated = Signal(rows * ACT_BITS)

        def use(shape):
            return [cols.eq(shape.cols), mask.eq((1 << shape.cols) - 1),
                    repeated.eq(Cat([word[:shape.cols * ACT_BITS]] * (rows // shape.cols)))]

        splits = sorted(g.engine.splits.items())
        m.d.comb += use(splits[0][1])                  # the whole array, unless another split is set
        for n, shape in splits[1:]:
            with m.If(self.split == n):
                m.d.comb += use(shape)

        wb = Signal()
        start = Signal()                      # a job is at the head and the bank it goes to is free
        loaded, pushed = Signal(), Signal()   # its block is written; its route entry is pushed
        item = Signal(s.item_bits)
        offset = Signal(range(g.max_dim + rows))
        take = Signal()
        m.d.comb += [
            start.eq(self.job.valid & ~self.full.bit_select(wb, 1)),
            take.eq(start & ~loaded & valid),
        ]
        for lane in range(g.lanes):
            m.d.comb += getattr(self, f"bottom{lane}").ready.eq(start & ~loaded & (job.lane == lane))
        lane_offset = offset[:log_rows] if log_rows else Const(0, 1)
        m.d.comb += [
            self.write.addr.eq(Cat(offset[log_rows:][:s.chunk_bits], item, wb)),
            self.write.data.eq(repeated),
            self.write.en.eq(Mux(take, mask << lane_offset, 0)),
        ]
        block_end = _advance_tiles(m, take, item, offset, item == job.items - 1, offset + cols >= params.dim, cols)

        # The route entry: words per item (registered), then items * words (registered), then pushed.
        out_width = Mux(params.mode == _DOT, params.dim + ((params.vectors * (params.vectors - 1)) >> 1),
                        params.vectors * params.dim)
        words = Signal(range(s.max_words + 1))
        count = Signal(s.count_bits)
        age = Signal(range(3))
        m.d.sync += [words.eq(_chunks(out_width, rows)), count.eq(job.items * words)]
        with m.If(start & (age != 2)):
            m.d.sync += age.eq(age + 1)
        m.d.comb += [self.route.payload.port.eq(job.lane), self.route.payload.count.eq(count),
                     self.route.valid.eq(start & (age == 2) & ~pushed)]

        done_loading = loaded | (take & block_end)
        done_pushing = pushed | (self.route.valid & self.route.ready)
        finish = start & done_loading & done_pushing
        m.d.comb += [self.job.ready.eq(finish), self.busy.eq(start)]
        for bank in range(2):
            with m.If(self.release[bank]):
                m.d.sync += self.full[bank].eq(0)
        with m.If(finish):
            m.d.sync += [loaded.eq(0), pushed.eq(0), age.eq(0), item.eq(0), offset.eq(0), wb.eq(~wb),
                         self.full.bit_select(wb, 1).eq(1)]
            for bank in range(2):
                with m.If(wb == bank):
                    m.d.sync += self.desc[bank].eq(job)
        with m.Else():
            m.d.sync += [loaded.eq(done_loading), pushed.eq(done_pushing)]
        return m


class _Sender(wiring.Component):
    """Sends the interaction unit each item of a full bank's job: its bottom vector from the bank, then its
    ``F - 1`` pooled vectors from the FIFO, ``ceil(d / rows)`` words each, one word a cycle.

    The words leave from a register; a bank word is the block RAM's read data, read with the register's enable.

    Members
    -------
    full : In(2), desc : In(data.ArrayLayout(sizes.job, 2))
        The loader's banks.
    release : Out(2)
        Per bank: its job's last word is issued.
    read : Out(ReadPort.Signature(...).flip())
        The banks' read port.
    fifo : In(stream.Signature(unsigned(rows * 8)))
        The FIFO's head.
    o : Out(stream.Signature(interaction_in_layout))
        Into the interaction unit.
    first : Out(1)
        ``o``'s word is an item's first.
    """

    def __init__(self, sizes, in_layout):
        self.sizes = sizes
        super().__init__({
            "full": In(2), "desc": In(data.ArrayLayout(sizes.job, 2)), "release": Out(2),
            "read": Out(ReadPort.Signature(addr_width=sizes.bank_addr_bits,
                                           shape=unsigned(sizes.rows * ACT_BITS)).flip()),
            "fifo": In(stream.Signature(unsigned(sizes.rows * ACT_BITS))),
            "o": Out(stream.Signature(in_layout)), "first": Out(1)})

    def elaborate(self, platform):
        m = Module()
        s = self.sizes
        rb = Signal()
        job = Signal(s.job)
        m.d.comb += job.eq(Mux(rb, self.desc[1], self.desc[0]))
        params = job.params
        item, vector, chunk = Signal(s.item_bits), Signal.like(params.vectors), Signal(s.chunk_bits)
        from_bank = vector == 0
        last_chunk = chunk == _chunks(params.dim, s.rows) - 1
        last_vector = vector == params.vectors - 1
        last_item = item == job.items - 1

        valid, pooled, first = Signal(), Signal(), Signal()
        fifo_word = Signal(s.rows * ACT_BITS, reset_less=True)
        out_params = Signal(self.o.payload.params.shape(), reset_less=True)
        advance = ~valid | self.o.ready
        can = self.full.bit_select(rb, 1) & (from_bank | self.fifo.valid)
        issue = Signal()
        m.d.comb += [
            issue.eq(advance & can),
            self.fifo.ready.eq(issue & ~from_bank),
            self.read.addr.eq(Cat(chunk, item, rb)),
            self.read.en.eq(advance),
            self.release.eq((issue & last_chunk & last_vector & last_item) << rb),
            self.o.valid.eq(valid),
            self.o.payload.data.eq(Mux(pooled, fifo_word, self.read.data)),
            self.o.payload.params.eq(out_params),
            self.first.eq(first),
        ]
        with m.If(advance):
            m.d.sync += [valid.eq(can), pooled.eq(~from_bank), first.eq(from_bank & (chunk == 0)),
                         *(out_params[name].eq(params[name]) for name in ("mode", "vectors", "dim", "m", "s"))]
        with m.If(issue & ~from_bank):
            m.d.sync += fifo_word.eq(self.fifo.payload)
        with m.If(issue):
            m.d.sync += chunk.eq(Mux(last_chunk, 0, chunk + 1))
            with m.If(last_chunk):
                m.d.sync += vector.eq(Mux(last_vector, 0, vector + 1))
                with m.If(last_vector):
                    m.d.sync += item.eq(Mux(last_item, 0, item + 1))
                    with m.If(last_item):
                        m.d.sync += rb.eq(~rb)
        return m


class JoinUnit(wiring.Component):
    """The joiner and the interaction unit: per join job, each item's bottom-MLP output and pooled vectors into
    :class:`~rpaccel.rtl.interaction.Interaction`, its output to the job's lane.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry

    Members
    -------
    jobs : In(stream.Signature(geometry.join_job_layout()))
        One job per FETCH, in fetch order.
    bottom{l} : In(stream.Signature(data.ArrayLayout(signed(32), geometry.engine.lane_cols(l))))
        Lane ``l``'s bottom-MLP output: per job on the lane, in split ``n`` with ``c = engine.splits[n].cols``,
        ``ceil(d / c)`` words per item, n-tile-major (word ``t * items + i`` holds elements ``t c .. t c + c - 1``
        of item ``i`` in its first ``c`` elements; elements beyond ``d`` are padding), int8 values in int32 (the
        low 8 bits are taken).
    pooled : In(stream.Signature(geometry.emb_layouts.pooled))
        The embedding unit's pooled vectors, in fetch order: per item ``F - 1`` (the first ``d`` elements valid),
        taken into the FIFO as they arrive.
    split : In(range(lanes + 1))
        The current split (constant while a job's bottom block is taken).
    inter : Out(stream.Signature(geometry.act_word_layout())).array(lanes)
        Per lane, the interaction output of its jobs' items
        (:func:`rpaccel.host.driver.interaction.output_words` words per item).
    busy : Out(1)
        The joiner holds work: a job being loaded or sent, pooled vectors, output words not yet delivered.
    interaction_busy : Out(1)
        The interaction unit holds an item.
    idle : Out(1)
        Nothing queued, held or in flight.
    """

    def __init__(self, geometry):
        if not isinstance(geometry, ChipGeometry):
            self._MustUse__silence = True
            raise TypeError(f"Joiner geometry must be a ChipGeometry, not {geometry!r}")
        g = self.geometry = geometry
        self.sizes = _Sizes(g)
        #: The interaction unit (a submodule; its ``i`` and ``o`` are visible to a testbench).
        self.interaction = Interaction.for_config(g.config)
        members = {"jobs": In(stream.Signature(g.join_job_layout()))}
        for lane in range(g.lanes):
            members[f"bottom{lane}"] = In(stream.Signature(data.ArrayLayout(signed(ACC_BITS),
                                                                            g.engine.lane_cols(lane))))
        members.update({
            "pooled": In(stream.Signature(g.emb_layouts.pooled)),
            "split": In(range(g.lanes + 1)),
            "inter": Out(stream.Signature(g.act_word_layout())).array(g.lanes),
            "busy": Out(1), "interaction_busy": Out(1), "idle": Out(1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g, s = self.geometry, self.sizes

        m.submodules.interaction = unit = self.interaction
        m.submodules.loader_jobs = loader_jobs = Queue(s.job.size, depth=JOB_QUEUE_DEPTH, register="read")
        m.submodules.pooled_jobs = pooled_jobs = Queue(s.pooled_job.size, depth=JOB_QUEUE_DEPTH, register="read")
        m.submodules.writer = writer = _PooledWriter(s, g.emb_layouts.pooled)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=s.rows * ACT_BITS, depth=g.config.join_buffer_words)
        m.submodules.loader = loader = _BottomLoader(g, s)
        m.submodules.sender = sender = _Sender(s, unit.i.payload.shape())
        m.submodules.banks = banks = Memory(shape=unsigned(s.rows * ACT_BITS), depth=1 << s.bank_addr_bits, init=[])
        m.submodules.routes = routes = Queue(s.route.size, depth=ROUTE_QUEUE_DEPTH, register="read")
        m.submodules.demux = demux = RouteDemux(g.act_word_layout(), g.lanes, count_bits=s.count_bits)

        # Jobs into both queues at once.
        job, pooled_job = self.jobs.payload, Signal(s.pooled_job)
        m.d.comb += [
            pooled_job.items.eq(job.items), pooled_job.vectors.eq(job.params.vectors),
            pooled_job.dim.eq(job.params.dim),
            self.jobs.ready.eq(loader_jobs.w_rdy & pooled_jobs.w_rdy),
            loader_jobs.w_en.eq(self.jobs.valid & self.jobs.ready), loader_jobs.w_data.eq(job),
            pooled_jobs.w_en.eq(self.jobs.valid & self.jobs.ready), pooled_jobs.w_data.eq(pooled_job),
        ]

        # Pooled vectors into the FIFO.
        m.d.comb += [writer.job.valid.eq(pooled_jobs.r_rdy), writer.job.payload.eq(pooled_jobs.r_data),
                     pooled_jobs.r_en.eq(writer.job.ready),
                     fifo.w_en.eq(writer.fifo.valid), fifo.w_data.eq(writer.fifo.payload),
                     writer.fifo.ready.eq(fifo.w_rdy)]
        wiring.connect(m, wiring.flipped(self.pooled), writer.pooled)

        # Bottom blocks into the banks; route entries out.
        m.d.comb += [loader.job.valid.eq(loader_jobs.r_rdy), loader.job.payload.eq(loader_jobs.r_data),
                     loader_jobs.r_en.eq(loader.job.ready), loader.split.eq(self.split)]
        for lane in range(g.lanes):
            wiring.connect(m, wiring.flipped(getattr(self, f"bottom{lane}")), getattr(loader, f"bottom{lane}"))
        wiring.connect(m, loader.write, banks.write_port(granularity=ACT_BITS))
        m.d.comb += [routes.w_en.eq(loader.route.valid), routes.w_data.eq(loader.route.payload),
                     loader.route.ready.eq(routes.w_rdy),
                     demux.route.valid.eq(routes.r_rdy), demux.route.payload.eq(routes.r_data),
                     routes.r_en.eq(demux.route.ready)]

        # The sender, from the banks and the FIFO into the interaction unit, and its output to the lanes.
        wiring.connect(m, sender.read, banks.read_port())
        m.d.comb += [sender.full.eq(loader.full), sender.desc.eq(loader.desc), loader.release.eq(sender.release),
                     sender.fifo.valid.eq(fifo.r_rdy), sender.fifo.payload.eq(fifo.r_data),
                     fifo.r_en.eq(sender.fifo.ready)]
        wiring.connect(m, sender.o, unit.i)
        m.d.comb += [demux.i.valid.eq(unit.o.valid), demux.i.payload.eq(unit.o.payload.data),
                     unit.o.ready.eq(demux.i.ready)]
        for lane in range(g.lanes):
            wiring.connect(m, demux.o[lane], wiring.flipped(self.inter[lane]))

        # Items inside the interaction unit; output words of started jobs not yet delivered.
        inside = Signal(8)
        item_in = unit.i.valid & unit.i.ready & sender.first
        item_out = unit.o.valid & unit.o.ready & unit.o.payload.last
        m.d.sync += inside.eq(inside + item_in - item_out)
        outstanding = Signal(s.count_bits + ROUTE_QUEUE_DEPTH.bit_length() + 2)
        delivered = Cat(port.valid & port.ready for port in self.inter).any()
        pushed = Mux(loader.route.valid & loader.route.ready, loader.route.payload.count, 0)
        m.d.sync += outstanding.eq(outstanding + pushed - delivered)
        m.d.comb += [
            self.interaction_busy.eq(inside != 0),
            self.busy.eq(loader.busy | loader.full.any() | (fifo.level != 0) | writer.busy | (outstanding != 0)),
            self.idle.eq(~self.busy & ~self.interaction_busy & (loader_jobs.level == 0) & (pooled_jobs.level == 0)),
        ]
        return m
