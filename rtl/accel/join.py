"""The joiner: brings each item's bottom-MLP output and pooled vectors together into the interaction unit.

Per join job (one per FETCH, in fetch order: ``{lane, items, params}``, :meth:`ChipGeometry.join_job_layout
<rpaccel.rtl.accel.isa.ChipGeometry.join_job_layout>`) the joiner takes the sub-batch's bottom-MLP output from
``bottom{lane}`` into a buffer, then sends the interaction unit (:class:`~rpaccel.rtl.interaction.Interaction`)
each item's ``F`` vectors, the bottom vector first and then its ``F - 1`` pooled vectors, as ``ceil(d / rows)``
words of ``rows`` int8 (element ``k`` in lane ``k % rows`` of word ``k // rows``) with the job's parameters on
every word (the unit reads them on an item's first). The unit's output goes to ``inter[lane]``.

The lanes are decoupled: each has its own job queue, pooled FIFO, bottom banks and output buffer, so a lane's job
goes out as soon as its own bottom block and pooled vectors are in, whatever another lane's job waits for.

* Jobs enter two queues at once: the pooled writer's (:class:`_PooledWriter`, every lane's jobs in fetch order)
  and the job's lane's bottom loader's (:class:`_BottomLoader`, one per lane), so that each follows the jobs at
  its own pace.
* The pooled writer takes the embedding unit's vectors in fetch order and writes each job's into its lane's FIFO
  of ``join_buffer_words`` words (:attr:`~rpaccel.config.AccelConfig.join_buffer_words`), ``ceil(d / rows)``
  words each, one word a cycle: the embedding unit waits on the joiner only while the FIFO of the lane whose
  vectors come next is full.
* A lane's bottom loader writes each of its jobs' bottom block into one of the lane's two banks (``items x
  ceil(d / rows)`` words of ``rows`` int8, element-wise write enables) while the sender reads the other, and
  notes in the bank's descriptor the FIFO words (``(F - 1) ceil(d / rows)``) and output words of each item.
* The sender (:class:`_Sender`, one for all lanes, in front of the one interaction unit) sends an item at a time.
  A lane's next item is *ready* when its job's bank is full, the lane's FIFO holds all of the item's pooled
  vectors (words written and not claimed by an item already sent) and the lane's output buffer has room for all
  of the item's output words (room not reserved by an item already sent). Among the ready lanes it picks one
  round robin, claims the item's FIFO words and reserves its output words, and puts out the item's words, one a
  cycle, whenever the interaction unit takes them: a bank word for the first vector, FIFO words for the others.
  An item is picked in the cycle the previous one's last word goes out, so items follow each other with no idle
  cycle.
* Each item leaves a route entry (``{lane, output words}``); the interaction unit's output goes through a
  :class:`~rpaccel.rtl.lib.route.RouteDemux` into the lane's output buffer of ``join_output_words`` words
  (:attr:`~rpaccel.config.AccelConfig.join_output_words`), from which ``inter[lane]`` reads. The room was
  reserved when the item was sent, so the interaction unit never waits on a lane: a lane that does not take its
  interaction words holds up only its own items.

Sizes and conventions are the chip's (docs/chip.md, "Units"); a job must have ``1 <= items <=
engine.max_acc_rows``, ``1 <= F <= max_tables + 1`` and ``1 <= d <= max_emb_dim``, which the controller checks,
and the configuration makes the largest item's pooled vectors fit a FIFO and its output an output buffer.

The pooled writer waits while the FIFO of the lane whose vectors come next is full, and with it the embedding unit
and the fetcher (in the lookups of that FETCH). Those vectors go in as the lane's items go out, and its items go
out while its output buffer has room, that is, as the lane takes its interaction words. So a program must not make
the lane's taking of those words, or its bottom blocks, wait for commands that wait for the fetcher to get past that
FETCH: where the interaction words of a lane's jobs not yet taken by the commands before the next FETCH (those the
chip reaches with the fetcher held), with the bottom blocks those commands give, would not leave the joiner's buffers
room for the FETCH's vectors (:func:`absorbs`), the chip stops. The compiler keeps to it, the checker checks it."""

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

__all__ = ["JOB_QUEUE_DEPTH", "ROUTE_QUEUE_DEPTH", "JoinUnit", "absorbs", "output_buffer_words", "pooled_words"]

#: Jobs each lane's bottom loader holds before loading their block (and the pooled writer ahead of their vectors).
JOB_QUEUE_DEPTH = 4
#: Route entries of items sent into the interaction unit and not yet out of it.
ROUTE_QUEUE_DEPTH = 4

_DOT = MODES.index("dot")


def pooled_words(geometry, items, vectors, dim):
    """FIFO words a job's pooled vectors take: ``items (F - 1) ceil(d / rows)`` (see the module's notes on
    ``join_buffer_words``)."""
    return items * (vectors - 1) * -(-dim // geometry.rows)


def output_buffer_words(geometry, items, mode, vectors, dim):
    """Output buffer words a job's interaction output takes: ``items`` times the words of an item's output
    (:func:`rpaccel.host.driver.interaction.output_words`; see the module's notes on ``join_output_words``)."""
    width = dim + vectors * (vectors - 1) // 2 if mode == "dot" else vectors * dim
    return items * -(-width // geometry.rows)


def absorbs(geometry, jobs, sendable=None):
    """Whether the joiner takes in all the pooled vectors of a lane's jobs while the lane takes none of their
    interaction words: the items (in order) whose bottom block is in and whose output the lane's output buffer holds
    go out; the pooled vectors of the others must fit the lane's FIFO (see the module's notes).

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    jobs : iterable of (int, str, int, int)
        ``(items, mode, vectors, dim)`` of each job (or of the items of it still to go), in the lane's order.
    sendable : int, optional
        How many of the first items have their bottom block in (default: all).
    """
    room, waiting = geometry.config.join_output_words, 0
    left = float("inf") if sendable is None else sendable
    for items, mode, vectors, dim in jobs:
        held = min(items, room // output_buffer_words(geometry, 1, mode, vectors, dim), left)
        left = max(left - items, 0)
        if held < items:
            room = 0                    # the lane's items go out in order: the rest wait behind this one
        else:
            room -= output_buffer_words(geometry, items, mode, vectors, dim)
        waiting += pooled_words(geometry, items - held, vectors, dim)
    return waiting <= geometry.config.join_buffer_words


def _bits(n):
    """Bits of a counter from 0 to ``n - 1`` (at least one)."""
    return max(1, (n - 1).bit_length())


def _chunks(dim, rows):
    """``ceil(dim / rows)``, ``rows`` a power of two."""
    return (dim + rows - 1) >> (rows.bit_length() - 1)


class _Sizes:
    """The joiner's sizes, from a :class:`ChipGeometry`."""

    def __init__(self, g):
        self.rows, self.lanes = g.rows, g.lanes
        self.max_chunks = -(-g.max_dim // g.rows)
        self.chunk_bits = _bits(self.max_chunks)
        self.item_bits = _bits(g.engine.max_acc_rows)
        self.bank_addr_bits = self.chunk_bits + self.item_bits + 1
        widest = max(g.max_dim + g.max_vectors * (g.max_vectors - 1) // 2, g.max_vectors * g.max_dim)
        self.max_words = -(-widest // g.rows)
        self.max_need = (g.max_vectors - 1) * self.max_chunks
        self.fifo_words, self.out_words = g.config.join_buffer_words, g.config.join_output_words
        self.job = g.join_job_layout()
        self.pooled_job = data.StructLayout({"lane": self.job["lane"].shape, "items": self.job["items"].shape,
                                             "vectors": self.job["params"].shape["vectors"].shape,
                                             "dim": self.job["params"].shape["dim"].shape})
        # A loaded bank: its job, and per item the FIFO words of its pooled vectors and its output words.
        self.bank = data.StructLayout({"job": self.job, "need": range(self.max_need + 1),
                                       "words": range(self.max_words + 1)})
        self.route = route_layout(g.lanes, self.max_words.bit_length())


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
    """Writes each pooled vector into its job's lane's FIFO as ``ceil(d / rows)`` words, one a cycle, taking the
    vector with its last word; follows the jobs (``items x (F - 1)`` vectors each, none for ``F = 1``).

    Members
    -------
    job : In(stream.Signature(sizes.pooled_job))
        The jobs, in fetch order; one is taken when its last vector is written.
    pooled : In(stream.Signature(pooled_layout))
        The embedding unit's pooled vectors.
    fifo : Out(stream.Signature(unsigned(rows * 8)))
        Into the FIFO of the job's lane (the caller steers it by ``job.payload.lane``).
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
    """One lane's bottom loader: writes each of the lane's jobs' bottom block into the lane's free bank and marks
    it full, with the job and its items' FIFO and output words in the bank's descriptor.

    Per job: ``items * ceil(d / c)`` words from ``bottom`` (``c`` the columns of a sub-array in the current split),
    n-tile-major, the low 8 bits of each element; the ``c`` elements of n-tile ``t`` go to lanes ``t c mod rows
    ..`` of the item's chunk ``t c // rows`` (``c`` divides ``rows``). The descriptor's words are computed over two
    cycles from the job at the queue's head.

    Members
    -------
    job : In(stream.Signature(sizes.job))
        The lane's jobs, in order; one is taken when its block is written and its descriptor is ready.
    bottom : In(stream.Signature(data.ArrayLayout(signed(32), lane_cols)))
        The lane's bottom-MLP output.
    split : In(range(lanes + 1))
        The current split.
    write : Out(WritePort.Signature(...).flip())
        The banks' write port (``{chunk, item, bank}``, granularity 8).
    full : Out(2), desc : Out(data.ArrayLayout(sizes.bank, 2))
        Per bank: it holds a job's block not yet sent, and that job's descriptor.
    release : In(2)
        Per bank: its job is sent (the bank is free from the next cycle).
    busy : Out(1)
        A job is being loaded.
    """

    def __init__(self, g, sizes, lane_cols):
        self.g, self.sizes = g, sizes
        super().__init__({
            "job": In(stream.Signature(sizes.job)),
            "bottom": In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), lane_cols))),
            "split": In(range(g.lanes + 1)),
            "write": Out(WritePort.Signature(addr_width=sizes.bank_addr_bits, shape=unsigned(sizes.rows * ACT_BITS),
                                             granularity=ACT_BITS).flip()),
            "full": Out(2), "desc": Out(data.ArrayLayout(sizes.bank, 2)), "release": In(2), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        g, s, job = self.g, self.sizes, self.job.payload
        rows, log_rows = s.rows, s.rows.bit_length() - 1
        params = job.params

        # The bottom word, low 8 bits of each element.
        word = Signal(rows * ACT_BITS)
        m.d.comb += word.eq(Cat(element[:ACT_BITS] for element in self.bottom.payload))

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
        loaded = Signal()                     # its block is written
        item = Signal(s.item_bits)
        offset = Signal(range(g.max_dim + rows))
        take = Signal()
        m.d.comb += [
            start.eq(self.job.valid & ~self.full.bit_select(wb, 1)),
            take.eq(start & ~loaded & self.bottom.valid),
            self.bottom.ready.eq(start & ~loaded),
        ]
        lane_offset = offset[:log_rows] if log_rows else Const(0, 1)
        m.d.comb += [
            self.write.addr.eq(Cat(offset[log_rows:][:s.chunk_bits], item, wb)),
            self.write.data.eq(repeated),
            self.write.en.eq(Mux(take, mask << lane_offset, 0)),
        ]
        block_end = _advance_tiles(m, take, item, offset, item == job.items - 1, offset + cols >= params.dim, cols)

        # The descriptor's words per item: output width, F - 1 and chunks (registered), then words and the FIFO
        # words (registered): valid two cycles after the job reaches the head.
        out_width = Mux(params.mode == _DOT, params.dim + ((params.vectors * (params.vectors - 1)) >> 1),
                        params.vectors * params.dim)
        width = Signal(range(s.max_words * rows + 1))
        pooled, chunks = Signal.like(params.vectors), Signal(range(s.max_chunks + 1))
        words, need = Signal(s.bank["words"].shape), Signal(s.bank["need"].shape)
        m.d.sync += [width.eq(out_width), pooled.eq(params.vectors - 1), chunks.eq(_chunks(params.dim, rows)),
                     words.eq(_chunks(width, rows)), need.eq(pooled * chunks)]
        desc = Signal(s.bank)
        m.d.comb += [desc.job.eq(job), desc.words.eq(words), desc.need.eq(need)]
        age = Signal(range(3))
        with m.If(start & (age != 2)):
            m.d.sync += age.eq(age + 1)

        done_loading = loaded | (take & block_end)
        finish = start & done_loading & (age == 2)
        m.d.comb += [self.job.ready.eq(finish), self.busy.eq(start)]
        for bank in range(2):
            with m.If(self.release[bank]):
                m.d.sync += self.full[bank].eq(0)
        with m.If(finish):
            m.d.sync += [loaded.eq(0), age.eq(0), item.eq(0), offset.eq(0), wb.eq(~wb),
                         self.full.bit_select(wb, 1).eq(1)]
            for bank in range(2):
                with m.If(wb == bank):
                    m.d.sync += self.desc[bank].eq(desc)
        with m.Else():
            m.d.sync += loaded.eq(done_loading)
        return m


class _Sender(wiring.Component):
    """Sends the interaction unit one item at a time of the lanes' full banks, round robin among the lanes whose
    next item is ready (see the module's notes): its bottom vector from the bank, then its ``F - 1`` pooled vectors
    from the lane's FIFO, ``ceil(d / rows)`` words each, one word a cycle; a route entry per item.

    The words leave from a register; a bank word is the block RAM's read data, read with the register's enable.

    Members
    -------
    full : In(2).array(lanes), desc : In(data.ArrayLayout(sizes.bank, 2)).array(lanes)
        The lanes' banks.
    release : Out(2).array(lanes)
        Per lane and bank: its job's last word is issued.
    read : Out(ReadPort.Signature(...).flip()).array(lanes)
        The lanes' banks' read ports.
    fifo : In(stream.Signature(unsigned(rows * 8))).array(lanes)
        The heads of the lanes' FIFOs.
    written : In(1).array(lanes)
        A word is written into the lane's FIFO.
    taken : In(1).array(lanes)
        The lane takes a word from its output buffer.
    o : Out(stream.Signature(interaction_in_layout))
        Into the interaction unit.
    first : Out(1)
        ``o``'s word is an item's first.
    route : Out(stream.Signature(sizes.route))
        Per item sent, ``{lane, output words}``.
    busy : Out(1)
        An item is being sent, or output words are reserved and not yet taken.
    """

    def __init__(self, sizes, in_layout):
        self.sizes = sizes
        n = sizes.lanes
        super().__init__({
            "full": In(2).array(n), "desc": In(data.ArrayLayout(sizes.bank, 2)).array(n), "release": Out(2).array(n),
            "read": Out(ReadPort.Signature(addr_width=sizes.bank_addr_bits,
                                           shape=unsigned(sizes.rows * ACT_BITS)).flip()).array(n),
            "fifo": In(stream.Signature(unsigned(sizes.rows * ACT_BITS))).array(n),
            "written": In(1).array(n), "taken": In(1).array(n),
            "o": Out(stream.Signature(in_layout)), "first": Out(1),
            "route": Out(stream.Signature(sizes.route)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        s, lanes = self.sizes, self.sizes.lanes

        # Per lane: the bank and item of its next item, the FIFO words written and not claimed, the output words
        # free and not reserved, and whether its next item is ready.
        rb = [Signal(name=f"rb{lane}") for lane in range(lanes)]
        item = [Signal(s.item_bits, name=f"item{lane}") for lane in range(lanes)]
        avail = [Signal(range(s.fifo_words + 1), name=f"avail{lane}") for lane in range(lanes)]
        space = [Signal(range(s.out_words + 1), init=s.out_words, name=f"space{lane}") for lane in range(lanes)]
        head = [Signal(s.bank, name=f"head{lane}") for lane in range(lanes)]
        ready = Signal(lanes)
        for lane in range(lanes):
            m.d.comb += [
                head[lane].eq(Mux(rb[lane], self.desc[lane][1], self.desc[lane][0])),
                ready[lane].eq(self.full[lane].bit_select(rb[lane], 1) & (avail[lane] >= head[lane].need)
                               & (space[lane] >= head[lane].words)),
            ]

        # The item being sent: its lane, bank, item, the job's parameters, whether it is the job's last.
        active, cur, cur_rb, cur_last = Signal(), Signal(range(lanes)), Signal(), Signal()
        cur_item = Signal(s.item_bits)
        params = Signal(s.job["params"].shape)
        vector, chunk = Signal.like(params.vectors), Signal(s.chunk_bits)
        from_bank = vector == 0
        last_chunk = chunk == _chunks(params.dim, s.rows) - 1
        last_vector = vector == params.vectors - 1
        fifo_valid, fifo_data = Signal(), Signal(s.rows * ACT_BITS)
        for lane in range(lanes):
            with m.If(cur == lane):
                m.d.comb += [fifo_valid.eq(self.fifo[lane].valid), fifo_data.eq(self.fifo[lane].payload)]

        valid, pooled, first = Signal(), Signal(), Signal()
        out_lane = Signal(range(lanes))
        fifo_word = Signal(s.rows * ACT_BITS, reset_less=True)
        out_params = Signal(self.o.payload.params.shape(), reset_less=True)
        advance = ~valid | self.o.ready
        can = active & (from_bank | fifo_valid)
        issue = Signal()
        done = Signal()                       # the item's last word is issued
        m.d.comb += [issue.eq(advance & can), done.eq(issue & last_chunk & last_vector)]
        read_data = Signal(s.rows * ACT_BITS)
        for lane in range(lanes):
            m.d.comb += [
                self.fifo[lane].ready.eq(issue & ~from_bank & (cur == lane)),
                self.read[lane].addr.eq(Cat(chunk, cur_item, cur_rb)),
                self.read[lane].en.eq(advance),
                self.release[lane].eq((done & cur_last & (cur == lane)) << cur_rb),
            ]
            with m.If(out_lane == lane):
                m.d.comb += read_data.eq(self.read[lane].data)
        m.d.comb += [
            self.o.valid.eq(valid),
            self.o.payload.data.eq(Mux(pooled, fifo_word, read_data)),
            self.o.payload.params.eq(out_params),
            self.first.eq(first),
        ]
        with m.If(advance):
            m.d.sync += [valid.eq(can), pooled.eq(~from_bank), first.eq(from_bank & (chunk == 0)), out_lane.eq(cur),
                         *(out_params[name].eq(params[name]) for name in ("mode", "vectors", "dim", "m", "s"))]
        with m.If(issue & ~from_bank):
            m.d.sync += fifo_word.eq(fifo_data)
        with m.If(issue):
            m.d.sync += chunk.eq(Mux(last_chunk, 0, chunk + 1))
            with m.If(last_chunk):
                m.d.sync += vector.eq(Mux(last_vector, 0, vector + 1))

        # The next item: round robin from the lane after the last one picked, when none is being sent or in the
        # cycle the current one's last word is issued (and a route entry can be pushed).
        last_pick = Signal(range(lanes))
        grant = Signal(range(lanes))
        with m.Switch(last_pick):
            for start in range(lanes):
                with m.Case(start):
                    order = [(start + 1 + k) % lanes for k in range(lanes)]
                    for k, lane in enumerate(order):
                        with (m.If if k == 0 else m.Elif)(ready[lane]):
                            m.d.comb += grant.eq(lane)
        chosen = Signal(s.bank)
        chosen_rb, chosen_item = Signal(), Signal(s.item_bits)
        for lane in range(lanes):
            with m.If(grant == lane):
                m.d.comb += [chosen.eq(head[lane]), chosen_rb.eq(rb[lane]), chosen_item.eq(item[lane])]
        chosen_last = chosen_item == chosen.job.items - 1
        pick = Signal()
        m.d.comb += [
            self.route.valid.eq((~active | done) & ready.any()),
            self.route.payload.port.eq(grant), self.route.payload.count.eq(chosen.words),
            pick.eq(self.route.valid & self.route.ready),
        ]
        with m.If(pick):
            m.d.sync += [active.eq(1), cur.eq(grant), cur_rb.eq(chosen_rb), cur_item.eq(chosen_item),
                         cur_last.eq(chosen_last), params.eq(chosen.job.params), last_pick.eq(grant)]
        with m.Elif(done):
            m.d.sync += active.eq(0)
        for lane in range(lanes):
            picked = pick & (grant == lane)
            with m.If(picked):
                m.d.sync += [item[lane].eq(Mux(chosen_last, 0, item[lane] + 1)), rb[lane].eq(rb[lane] ^ chosen_last)]
            m.d.sync += [avail[lane].eq(avail[lane] + self.written[lane] - Mux(picked, chosen.need, 0)),
                         space[lane].eq(space[lane] + self.taken[lane] - Mux(picked, chosen.words, 0))]
        m.d.comb += self.busy.eq(active | Cat(space[lane] != s.out_words for lane in range(lanes)).any())
        return m


class JoinUnit(wiring.Component):
    """The joiner and the interaction unit: per join job, each item's bottom-MLP output and pooled vectors into
    :class:`~rpaccel.rtl.interaction.Interaction`, its output to the job's lane; the lanes' jobs proceed
    independently (a job queue, a pooled FIFO, two bottom banks and an output buffer per lane; one interaction
    unit, shared an item at a time, round robin; see the module's notes).

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
        taken into the job's lane's FIFO as they arrive.
    split : In(range(lanes + 1))
        The current split (constant while a job's bottom block is taken).
    inter : Out(stream.Signature(geometry.act_word_layout())).array(lanes)
        Per lane, the interaction output of its jobs' items
        (:func:`rpaccel.host.driver.interaction.output_words` words per item), from the lane's output buffer.
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
        word_bits = s.rows * ACT_BITS

        m.submodules.interaction = unit = self.interaction
        m.submodules.pooled_jobs = pooled_jobs = Queue(s.pooled_job.size, depth=JOB_QUEUE_DEPTH, register="read")
        m.submodules.writer = writer = _PooledWriter(s, g.emb_layouts.pooled)
        m.submodules.sender = sender = _Sender(s, unit.i.payload.shape())
        m.submodules.routes = routes = Queue(s.route.size, depth=ROUTE_QUEUE_DEPTH, register="read")
        m.submodules.demux = demux = RouteDemux(g.act_word_layout(), g.lanes, count_bits=s.route["count"].shape.width)
        job = self.jobs.payload
        writer_lane = data.View(s.pooled_job, pooled_jobs.r_data).lane
        lane_ready = Signal()
        holding, queued = [writer.busy, sender.busy], [pooled_jobs.level != 0]
        for lane in range(g.lanes):
            jobs = m.submodules[f"jobs{lane}"] = Queue(s.job.size, depth=JOB_QUEUE_DEPTH, register="read")
            loader = m.submodules[f"loader{lane}"] = _BottomLoader(g, s, g.engine.lane_cols(lane))
            banks = m.submodules[f"banks{lane}"] = Memory(shape=unsigned(word_bits), depth=1 << s.bank_addr_bits,
                                                          init=[])
            fifo = m.submodules[f"fifo{lane}"] = SyncFIFOBuffered(width=word_bits, depth=g.config.join_buffer_words)
            out = m.submodules[f"out{lane}"] = SyncFIFOBuffered(width=g.act_word_layout().size,
                                                                depth=g.config.join_output_words)
            # The lane's jobs into its loader; its bottom blocks into its banks.
            mine = job.lane == lane
            with m.If(mine):
                m.d.comb += lane_ready.eq(jobs.w_rdy)
            m.d.comb += [jobs.w_en.eq(self.jobs.valid & self.jobs.ready & mine), jobs.w_data.eq(job),
                         loader.job.valid.eq(jobs.r_rdy), loader.job.payload.eq(jobs.r_data),
                         jobs.r_en.eq(loader.job.ready), loader.split.eq(self.split)]
            wiring.connect(m, wiring.flipped(getattr(self, f"bottom{lane}")), loader.bottom)
            wiring.connect(m, loader.write, banks.write_port(granularity=ACT_BITS))
            # The lane's pooled vectors into its FIFO.
            steer = writer_lane == lane
            with m.If(steer):
                m.d.comb += writer.fifo.ready.eq(fifo.w_rdy)
            m.d.comb += [fifo.w_en.eq(writer.fifo.valid & steer), fifo.w_data.eq(writer.fifo.payload)]
            # The sender reads the lane's banks and FIFO; the lane's output buffer takes its interaction words.
            wiring.connect(m, sender.read[lane], banks.read_port())
            m.d.comb += [
                sender.full[lane].eq(loader.full), sender.desc[lane].eq(loader.desc),
                loader.release.eq(sender.release[lane]),
                sender.fifo[lane].valid.eq(fifo.r_rdy), sender.fifo[lane].payload.eq(fifo.r_data),
                fifo.r_en.eq(sender.fifo[lane].ready),
                sender.written[lane].eq(fifo.w_en & fifo.w_rdy),
                out.w_en.eq(demux.o[lane].valid), out.w_data.eq(demux.o[lane].payload),
                demux.o[lane].ready.eq(out.w_rdy),
                self.inter[lane].valid.eq(out.r_rdy), self.inter[lane].payload.eq(out.r_data),
                out.r_en.eq(self.inter[lane].ready),
                sender.taken[lane].eq(self.inter[lane].valid & self.inter[lane].ready),
            ]
            holding += [loader.busy, loader.full.any(), fifo.level != 0]
            queued.append(jobs.level != 0)

        # Jobs into the pooled writer's queue and their lane's queue at once.
        pooled_job = Signal(s.pooled_job)
        m.d.comb += [
            pooled_job.lane.eq(job.lane), pooled_job.items.eq(job.items), pooled_job.vectors.eq(job.params.vectors),
            pooled_job.dim.eq(job.params.dim),
            self.jobs.ready.eq(pooled_jobs.w_rdy & lane_ready),
            pooled_jobs.w_en.eq(self.jobs.valid & self.jobs.ready), pooled_jobs.w_data.eq(pooled_job),
            writer.job.valid.eq(pooled_jobs.r_rdy), writer.job.payload.eq(pooled_jobs.r_data),
            pooled_jobs.r_en.eq(writer.job.ready),
        ]
        wiring.connect(m, wiring.flipped(self.pooled), writer.pooled)

        # The sender into the interaction unit, a route entry per item; the unit's output to the lanes.
        wiring.connect(m, sender.o, unit.i)
        m.d.comb += [routes.w_en.eq(sender.route.valid), routes.w_data.eq(sender.route.payload),
                     sender.route.ready.eq(routes.w_rdy),
                     demux.route.valid.eq(routes.r_rdy), demux.route.payload.eq(routes.r_data),
                     routes.r_en.eq(demux.route.ready),
                     demux.i.valid.eq(unit.o.valid), demux.i.payload.eq(unit.o.payload.data),
                     unit.o.ready.eq(demux.i.ready)]

        # Items inside the interaction unit.
        inside = Signal(8)
        item_in = unit.i.valid & unit.i.ready & sender.first
        item_out = unit.o.valid & unit.o.ready & unit.o.payload.last
        m.d.sync += inside.eq(inside + item_in - item_out)
        m.d.comb += [
            self.interaction_busy.eq(inside != 0),
            self.busy.eq(Cat(holding).any()),
            self.idle.eq(~self.busy & ~self.interaction_busy & ~Cat(queued).any()),
        ]
        return m
