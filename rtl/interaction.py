"""The interaction unit: DLRM's ``dot`` and ``cat`` feature interaction between the bottom MLP and the top MLP.

For each item the unit takes ``F`` int8 vectors of ``d`` elements, the bottom MLP's output first and then the
``T = F - 1`` pooled embedding vectors, and puts out the top MLP's int8 input, bit-exact with
:func:`rpaccel.host.reference.interact`:

* ``dot``: the bottom vector, then the ``F (F - 1) / 2`` dot products of the vector pairs ``i < j`` in row-major
  order (:func:`rpaccel.host.models.pair_indices`), each requantised with the model's ``(m, s)`` and no ReLU
  (:func:`rpaccel.numeric.requantize`);
* ``cat``: the ``F`` vectors one after the other.

The mode, ``F``, ``d`` and ``(m, s)`` are run-time parameters, read with each item's first element, so items of
different models may follow each other. The unit is sized at construction (:meth:`Interaction.for_config`):
``lanes`` int8 elements per stream word (the MLP engine's activation word, ``array_rows``), at most
``max_vectors`` vectors of at most ``max_dim`` elements.

Stream formats (layouts from :func:`interaction_in_layout` and :func:`interaction_out_layout`):

* in: ``{data: [int8] * lanes, params: {mode, vectors, dim, m, s}}``. A vector arrives as ``ceil(d / lanes)``
  chunk words, element ``k`` of the vector in lane ``k % lanes`` of chunk ``k // lanes``; an item is its ``F``
  vectors in order. ``params`` is read on an item's first word only. Lanes beyond ``d`` are ignored.
* out: ``{data: [int8] * lanes, last}``: the item's output vector in words of ``lanes`` elements, the last word
  zero-padded and marked ``last``.

Structure (see docs/interaction.md for the design decision and its cost): the item's vectors are written into
one of two banks of block RAM while the other bank's item is computed. The sequencer issues one operation per
cycle: a chunk of a vector to put out (the bottom vector for ``dot``, every vector for ``cat``), or a chunk of
``pair_lanes`` consecutive pairs to multiply and accumulate, each on ``lanes`` LUT multipliers
(:func:`rpaccel.rtl.pe.lut_multiply`); a pair's sum is requantised by a
:class:`~rpaccel.rtl.postproc.PostProcessor`. The results go through a queue into a packer that fills the output
words. The sequencer issues only while a :class:`~rpaccel.rtl.lib.credit.CreditCounter` says the queue has room
for everything in flight, so the pipeline behind it never stalls.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS, ACT_BITS, M_BITS, S_BITS
from .lib.credit import CreditCounter
from .lib.delay import DelayLine, shift_register
from .lib.queue import Queue
from .pe import lut_partial_products, lut_product
from .postproc import PostProcessor

__all__ = ["DEFAULT_PAIR_LANES", "MODES", "Interaction", "interaction_in_layout", "interaction_out_layout",
           "interaction_params_layout", "item_cycles"]

#: The interaction modes, by their code in ``params.mode``.
MODES = ("dot", "cat")
#: Pairs computed at once by default: two keep RM-small's and RM-med's items (177 cycles for 351 pairs) within
#: the MLP engine's cycles per item on the ``small`` array (see docs/interaction.md).
DEFAULT_PAIR_LANES = 2

# Stages from issuing an operation to its result entering the queue: the block RAM read (1), the operands'
# register (2), partial products (3), products (4), partial sums (5), accumulation (6), requantisation
# (PostProcessor.LATENCY). The operands' register keeps the block RAM's clock-to-out out of the multipliers' path.
_ACCUMULATE = 6
_LATENCY = _ACCUMULATE + PostProcessor.LATENCY
# Entries of the result queue: more than the operations in flight plus the queue's own two cycles, so that the
# credits never stop the sequencer while the output is taken every cycle.
_QUEUE_DEPTH = 32


def _check_positive(component, what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        component._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
        raise ValueError(f"Interaction unit {what} must be a positive integer, not {value!r}")


def _chunks(dim, lanes):
    return -(-dim // lanes)


def interaction_params_layout(max_vectors, max_dim):
    """``{mode, vectors, dim, m, s}``: the run-time parameters of an item (``mode`` 0 is ``dot``, 1 ``cat``)."""
    return data.StructLayout({"mode": unsigned(1), "vectors": unsigned(max_vectors.bit_length()),
                              "dim": unsigned(max_dim.bit_length()), "m": unsigned(M_BITS), "s": unsigned(S_BITS)})


def interaction_in_layout(lanes, max_vectors, max_dim):
    """Payload of the unit's input: a chunk of ``lanes`` int8 elements and the item's parameters."""
    return data.StructLayout({"data": data.ArrayLayout(signed(ACT_BITS), lanes),
                              "params": interaction_params_layout(max_vectors, max_dim)})


def interaction_out_layout(lanes):
    """Payload of the unit's output: ``lanes`` int8 elements of an item's output vector, ``last`` on its last."""
    return data.StructLayout({"data": data.ArrayLayout(signed(ACT_BITS), lanes), "last": unsigned(1)})


def item_cycles(mode, vectors, dim, lanes, pair_lanes=None):
    """Cycles the sequencer spends on one item (its operations, one per cycle): the unit's throughput bound."""
    pair_lanes = DEFAULT_PAIR_LANES if pair_lanes is None else pair_lanes
    chunks = _chunks(dim, lanes)
    if mode == "cat":
        return vectors * chunks
    return chunks + -(-(vectors * (vectors - 1) // 2) // pair_lanes) * chunks


class Interaction(wiring.Component):
    """DLRM feature interaction (``dot`` or ``cat``, chosen per item), with stream ports.

    Parameters
    ----------
    lanes : int
        int8 elements per input and output word, and LUT multipliers (a power of two).
    max_vectors : int
        Most vectors ``F`` per item (the bottom output and the pooled vectors).
    max_dim : int
        Largest vector dimension ``d``.
    pair_lanes : int
        Pairs computed at once (at most ``lanes``), each on ``lanes`` LUT multipliers with a requantiser of its
        own (a :class:`~rpaccel.rtl.postproc.PostProcessor`, two DSP blocks on the ECP5).

    Members
    -------
    i : In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim)))
        Vector chunks; an item's first word carries its parameters (``1 <= vectors <= max_vectors``,
        ``1 <= dim <= max_dim``; other values are the sender's error, the driver refuses them).
    o : Out(stream.Signature(interaction_out_layout(lanes)))
        Output words.
    """

    def __init__(self, *, lanes, max_vectors, max_dim, pair_lanes=DEFAULT_PAIR_LANES):
        _check_positive(self, "lanes", lanes)
        _check_positive(self, "max_vectors", max_vectors)
        _check_positive(self, "max_dim", max_dim)
        _check_positive(self, "pair_lanes", pair_lanes)
        if lanes & (lanes - 1):
            self._MustUse__silence = True
            raise ValueError(f"Interaction unit lanes must be a power of two, not {lanes!r}")
        if pair_lanes > lanes:
            self._MustUse__silence = True
            raise ValueError(f"Interaction unit pair_lanes must be at most lanes ({lanes}), not {pair_lanes!r}")
        self.lanes, self.max_vectors, self.max_dim, self.pair_lanes = lanes, max_vectors, max_dim, pair_lanes
        #: Chunk words per vector of the largest dimension.
        self.max_chunks = _chunks(max_dim, lanes)
        super().__init__({"i": In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim))),
                          "o": Out(stream.Signature(interaction_out_layout(lanes)))})

    @classmethod
    def for_config(cls, config, *, pair_lanes=DEFAULT_PAIR_LANES):
        """The unit of an :class:`~rpaccel.config.AccelConfig`: words as wide as the MLP engine's activation words
        (``array_rows``), up to ``max_tables + 1`` vectors of up to ``max_emb_dim`` elements."""
        return cls(lanes=config.array_rows, max_vectors=config.max_tables + 1, max_dim=config.max_emb_dim,
                   pair_lanes=pair_lanes)

    def _chunk_count(self, dim):
        return (dim + self.lanes - 1) >> (self.lanes.bit_length() - 1)

    def elaborate(self, platform):
        m = Module()
        lanes, log_lanes = self.lanes, self.lanes.bit_length() - 1
        params_layout = interaction_params_layout(self.max_vectors, self.max_dim)
        chunk_bits = max(1, (self.max_chunks - 1).bit_length())
        vector_bits = max(1, (self.max_vectors - 1).bit_length())
        word = lanes * ACT_BITS

        # Two banks of vector chunks, addressed {chunk, vector, bank}; a read port per pair operand.
        m.submodules.banks = banks = Memory(shape=word, depth=1 << (chunk_bits + vector_bits + 1), init=[])
        write = banks.write_port()
        reads = [(banks.read_port(), banks.read_port()) for _ in range(self.pair_lanes)]
        full = Signal(2)                      # the bank holds a whole item not yet computed
        desc = [Signal(params_layout, name=f"desc{b}") for b in range(2)]

        # The loader: chunks into bank wb, lanes beyond the item's dimension zeroed.
        wb = Signal()
        lv, lc = Signal(vector_bits, name="load_vector"), Signal(chunk_bits, name="load_chunk")
        first = (lv == 0) & (lc == 0)
        loading = Signal(params_layout)
        m.d.comb += loading.eq(Mux(first, self.i.payload.params, Mux(wb, desc[1], desc[0])))
        remaining = Signal(signed(self.max_dim.bit_length() + 1))
        m.d.comb += [
            remaining.eq(loading.dim - (lc << log_lanes)),
            self.i.ready.eq(~full.bit_select(wb, 1)),
            write.addr.eq(Cat(lc, lv, wb)),
            write.data.eq(Cat(Mux(remaining > k, self.i.payload.data[k], 0) for k in range(lanes))),
            write.en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(write.en):
            for bank in range(2):
                with m.If(first & (wb == bank)):
                    m.d.sync += desc[bank].eq(self.i.payload.params)
            with m.If(lc == self._chunk_count(loading.dim) - 1):
                m.d.sync += lc.eq(0)
                with m.If(lv == loading.vectors - 1):
                    m.d.sync += [lv.eq(0), full.bit_select(wb, 1).eq(1), wb.eq(~wb)]
                with m.Else():
                    m.d.sync += lv.eq(lv + 1)
            with m.Else():
                m.d.sync += lc.eq(lc + 1)

        # The sequencer: one operation per cycle on bank rb while the result queue has room for it. An operation
        # is a chunk of a vector to put out, or the same chunk of pair_lanes consecutive pairs (fewer at an
        # item's end): lane 0's pair is (ri, rj), lane p's the p-th after it in row-major order.
        rb = Signal()
        item = Signal(params_layout)
        m.d.comb += item.eq(Mux(rb, desc[1], desc[0]))
        pairs = Signal(name="pair_phase")
        ri, rj = Signal(vector_bits, name="vector_i"), Signal(vector_bits, name="vector_j", init=1)
        rc = Signal(chunk_bits, name="chunk")
        m.submodules.credits = credits = CreditCounter(_QUEUE_DEPTH)
        dot = item.mode == 0
        last_chunk = rc == self._chunk_count(item.dim) - 1
        emit_vectors = Mux(dot, 1, item.vectors)
        to_pairs = dot & (item.vectors > 1)
        lane_i, lane_j, lane_valid, lane_end = [ri], [rj], [Const(1, 1)], []
        for p in range(self.pair_lanes):
            end_p = Signal(name=f"lane_end{p}")       # lane p holds the item's last pair
            m.d.comb += end_p.eq((lane_i[p] == item.vectors - 2) & (lane_j[p] == item.vectors - 1))
            lane_end.append(end_p)
            row_end = lane_j[p] == item.vectors - 1
            next_i, next_j = Signal(vector_bits, name=f"lane_i{p + 1}"), Signal(vector_bits, name=f"lane_j{p + 1}")
            next_valid = Signal(name=f"lane_valid{p + 1}")
            m.d.comb += [next_i.eq(Mux(row_end, lane_i[p] + 1, lane_i[p])),
                         next_j.eq(Mux(row_end, lane_i[p] + 2, lane_j[p] + 1)),
                         next_valid.eq(lane_valid[p] & ~end_p)]
            lane_i.append(next_i)
            lane_j.append(next_j)
            lane_valid.append(next_valid)
        last_pairs = Cat(valid & end for valid, end in zip(lane_valid, lane_end)).any()
        done = last_chunk & Mux(pairs, last_pairs, (ri == emit_vectors - 1) & ~to_pairs)
        issue = Signal()
        left = Signal(signed(self.max_dim.bit_length() + 1))
        m.d.comb += [
            issue.eq(full.bit_select(rb, 1) & credits.room),
            credits.take.eq(issue & (~pairs | last_chunk)),
            left.eq(item.dim - (rc << log_lanes)),
        ]
        for p, (read_a, read_b) in enumerate(reads):
            m.d.comb += [read_a.addr.eq(Cat(rc, lane_i[p], rb)), read_b.addr.eq(Cat(rc, lane_j[p], rb))]
        with m.If(issue):
            m.d.sync += rc.eq(Mux(last_chunk, 0, rc + 1))
            with m.If(done):
                m.d.sync += [pairs.eq(0), ri.eq(0), rj.eq(1), full.bit_select(rb, 1).eq(0), rb.eq(~rb)]
            with m.Elif(last_chunk):
                with m.If(~pairs):
                    with m.If(ri == emit_vectors - 1):
                        m.d.sync += [pairs.eq(1), ri.eq(0), rj.eq(1)]
                    with m.Else():
                        m.d.sync += ri.eq(ri + 1)
                with m.Else():
                    m.d.sync += [ri.eq(lane_i[-1]), rj.eq(lane_j[-1])]

        # What travels beside the data: op[k] describes the operation issued k + 1 cycles before.
        count_shape = unsigned(lanes.bit_length())
        op_layout = data.StructLayout({"valid": 1, "pair": 1, "first": 1, "push": 1, "last": 1,
                                       "count": count_shape})
        issued = Signal(op_layout)
        m.d.comb += [
            issued.valid.eq(issue), issued.pair.eq(pairs), issued.first.eq(rc == 0),
            issued.push.eq(~pairs | last_chunk), issued.last.eq(done),
            issued.count.eq(Mux(pairs, sum(lane_valid[:self.pair_lanes]), Mux(left >= lanes, lanes, left))),
        ]
        op = shift_register(m, issued, _LATENCY, name="op{}")
        scale = shift_register(m, Cat(item.m, item.s), _ACCUMULATE, name="scale{}", reset_less=True)
        requant_in = op[_ACCUMULATE - 1]

        # Per pair lane the multiply-accumulate (partial products, products, sums of four, the total, the
        # accumulator) and the requantisation, never stalled, so its results come out PostProcessor.LATENCY
        # cycles later.
        results = []
        for p, (read_a, read_b) in enumerate(reads):
            operands = [Signal(data.ArrayLayout(signed(ACT_BITS), lanes), name=f"{side}{p}", reset_less=True)
                        for side in ("a", "b")]
            m.d.sync += [operands[0].eq(read_a.data), operands[1].eq(read_b.data)]
            a, b = operands
            partials = []
            for k in range(lanes):
                low, high = lut_partial_products(a[k], b[k])
                low_r, high_r = Signal.like(low, name=f"low{p}_{k}"), Signal.like(high, name=f"high{p}_{k}")
                m.d.sync += [low_r.eq(low), high_r.eq(high)]
                partials.append((low_r, high_r))
            products = [Signal(signed(2 * ACT_BITS), name=f"product{p}_{k}") for k in range(lanes)]
            m.d.sync += [product.eq(lut_product(low, high)) for product, (low, high) in zip(products, partials)]
            group = min(4, lanes)
            sum_shape = signed(2 * ACT_BITS + (lanes - 1).bit_length())
            sums = [Signal(sum_shape, name=f"sum{p}_{g}") for g in range(lanes // group)]
            m.d.sync += [s.eq(sum(products[g * group:(g + 1) * group])) for g, s in enumerate(sums)]
            acc = Signal(signed(ACC_BITS), name=f"acc{p}")
            total = sum(sums)
            summed = op[_ACCUMULATE - 2]
            with m.If(summed.valid & summed.pair):
                m.d.sync += acc.eq(Mux(summed.first, total, acc + total))
            m.submodules[f"requant{p}"] = requant = PostProcessor()
            m.d.comb += [
                requant.i.valid.eq(requant_in.valid & requant_in.pair & requant_in.push),
                requant.i.payload.acc.eq(acc),
                requant.i.payload.bias.eq(0),
                requant.i.payload.params.m.eq(scale[_ACCUMULATE - 1][:M_BITS]),
                requant.i.payload.params.s.eq(scale[_ACCUMULATE - 1][M_BITS:]),
                requant.o.ready.eq(1),
            ]
            results.append(requant.o.payload[:ACT_BITS])

        # The chunk read for an output operation, delayed to meet the requantised results.
        m.submodules.chunk_delay = chunk_delay = DelayLine(word, _LATENCY - 1)
        m.d.comb += chunk_delay.i.eq(reads[0][0].data)

        # The result queue: {data, count, last} per pushed operation, room guaranteed by the credits.
        element = data.StructLayout({"data": word, "count": count_shape, "last": 1})
        m.submodules.queue = queue = Queue(element.size, depth=_QUEUE_DEPTH, register="read")
        out_op = op[_LATENCY - 1]
        pushed = Signal(element)
        m.d.comb += [
            pushed.data.eq(Mux(out_op.pair, Cat(Mux(out_op.count > p, result, 0) for p, result in enumerate(results)),
                               chunk_delay.o)),
            pushed.count.eq(out_op.count),
            pushed.last.eq(out_op.last),
            queue.w_data.eq(pushed),
            queue.w_en.eq(out_op.valid & out_op.push),
        ]

        # The packer: elements appended to a partly filled word; a full word, or an item's last, goes out.
        head = data.View(element, queue.r_data)
        buffer = Signal(word)                     # the first `fill` elements of the next word; the rest zero
        fill = Signal(range(lanes))
        flush = Signal()                          # buffer holds the end of an item that did not fit its word
        out_data, out_valid = Signal(word), Signal()
        combined = Signal(2 * word)
        total_count = Signal(range(2 * lanes))
        free = ~out_valid | self.o.ready
        take = Signal()
        m.d.comb += [
            combined.eq(buffer | (head.data << (fill * ACT_BITS))),
            total_count.eq(fill + head.count),
            take.eq(free & ~flush & queue.r_rdy),
            queue.r_en.eq(take),
            credits.give.eq(take),
            self.o.valid.eq(out_valid),
            self.o.payload.data.eq(out_data),
        ]
        out_last = Signal()
        m.d.comb += self.o.payload.last.eq(out_last)
        with m.If(free):
            m.d.sync += out_valid.eq(0)
        with m.If(free & flush):
            m.d.sync += [out_data.eq(buffer), out_last.eq(1), out_valid.eq(1), flush.eq(0), buffer.eq(0),
                         fill.eq(0)]
        with m.Elif(take):
            with m.If(head.last):
                m.d.sync += [out_data.eq(combined[:word]), out_last.eq(total_count <= lanes), out_valid.eq(1),
                             buffer.eq(Mux(total_count > lanes, combined[word:], 0)),
                             fill.eq(Mux(total_count > lanes, total_count - lanes, 0)),
                             flush.eq(total_count > lanes)]
            with m.Elif(total_count >= lanes):
                m.d.sync += [out_data.eq(combined[:word]), out_last.eq(0), out_valid.eq(1),
                             buffer.eq(combined[word:]), fill.eq(total_count - lanes)]
            with m.Else():
                m.d.sync += [buffer.eq(combined[:word]), fill.eq(total_count)]
        return m
