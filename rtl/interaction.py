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
  vectors in order. ``params`` is read on an item's first word only. Lanes beyond ``d`` are ignored. An item
  with ``vectors = 0`` or ``dim = 0`` is empty: its one word is dropped and nothing comes out for it.
* out: ``{data: [int8] * lanes, last}``: the item's output vector in words of ``lanes`` elements, the last word
  zero-padded and marked ``last``.

Structure (see docs/interaction.md for the design decision and its cost): a loader (:class:`_Loader`) writes each
item's vectors into one of two banks of block RAM while the other bank's item is computed. A sequencer
(:class:`_Sequencer`) issues one operation per cycle: a chunk of a vector to put out (the bottom vector for
``dot``, every vector for ``cat``), or a chunk of ``pair_lanes`` consecutive pairs. The datapath
(:class:`_Datapath`) multiplies and accumulates each pair on a :class:`_PairLane` of ``lanes`` multipliers (hard
multipliers, or LUT multipliers, :func:`rpaccel.rtl.pe.lut_multiply`, on a device without DSP blocks to spare) and
requantises its sum with a :class:`~rpaccel.rtl.postproc.PostProcessor`.
The results go through a queue into a packer (:class:`_Packer`) that fills the output words. The sequencer issues
only while a :class:`~rpaccel.rtl.lib.credit.CreditCounter` says the queue has room for everything in flight, so
the pipeline behind it never stalls.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS, ACT_BITS, M_BITS, S_BITS
from .ecp5 import ecp5_registered_multiplier, is_ecp5
from .lib.credit import CreditCounter
from .lib.delay import DelayLine, shift_register
from .lib.queue import Queue
from .pe import MULTIPLIERS, lut_partial_products, lut_product
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
        Pairs computed at once (at most ``lanes``), each on ``lanes`` multipliers with a requantiser of its own
        (a :class:`~rpaccel.rtl.postproc.PostProcessor`, two DSP blocks on the ECP5).
    multiplier : str
        ``"dsp"`` (default): hard multipliers, on the ECP5 MULT18X18D blocks with their own input and output
        registers (``lanes * pair_lanes`` blocks). ``"lut"``: adder trees of partial products
        (:func:`rpaccel.rtl.pe.lut_multiply`), about 150 LUTs each. Both compute the same products in the same
        cycle.

    Members
    -------
    i : In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim)))
        Vector chunks; an item's first word carries its parameters (``vectors <= max_vectors``,
        ``dim <= max_dim``; larger values are the sender's error, the driver refuses them). An item with
        ``vectors = 0`` or ``dim = 0`` is empty: one word, taken and dropped, with no output.
    o : Out(stream.Signature(interaction_out_layout(lanes)))
        Output words.
    """

    def __init__(self, *, lanes, max_vectors, max_dim, pair_lanes=DEFAULT_PAIR_LANES, multiplier="dsp"):
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
        if multiplier not in MULTIPLIERS:
            self._MustUse__silence = True
            raise ValueError(f"Interaction unit multiplier must be one of {', '.join(MULTIPLIERS)}, "
                             f"not {multiplier!r}")
        self.lanes, self.max_vectors, self.max_dim, self.pair_lanes = lanes, max_vectors, max_dim, pair_lanes
        self.multiplier = multiplier
        #: Chunk words per vector of the largest dimension.
        self.max_chunks = _chunks(max_dim, lanes)
        super().__init__({"i": In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim))),
                          "o": Out(stream.Signature(interaction_out_layout(lanes)))})

    @classmethod
    def for_config(cls, config, *, pair_lanes=DEFAULT_PAIR_LANES):
        """The unit of an :class:`~rpaccel.config.AccelConfig`: words as wide as the MLP engine's activation words
        (``array_rows``), up to ``max_tables + 1`` vectors of up to ``max_emb_dim`` elements.

        The array has the first claim on the DSP blocks: the unit's multipliers are hard multipliers when every
        processing element has one (``array_dsp_pes`` covers the array), LUT multipliers otherwise.
        """
        hard = config.array_dsp_pes >= config.array_rows * config.array_cols
        return cls(lanes=config.array_rows, max_vectors=config.max_tables + 1, max_dim=config.max_emb_dim,
                   pair_lanes=pair_lanes, multiplier="dsp" if hard else "lut")

    def elaborate(self, platform):
        m = Module()
        lanes, word = self.lanes, self.lanes * ACT_BITS
        chunk_bits = max(1, (self.max_chunks - 1).bit_length())
        vector_bits = max(1, (self.max_vectors - 1).bit_length())
        addr_bits = chunk_bits + vector_bits + 1

        m.submodules.loader = loader = _Loader(lanes, self.max_vectors, self.max_dim, chunk_bits, vector_bits)
        m.submodules.sequencer = sequencer = _Sequencer(lanes, self.max_vectors, self.max_dim, self.pair_lanes,
                                                        chunk_bits, vector_bits)
        m.submodules.datapath = datapath = _Datapath(lanes, self.pair_lanes, self.multiplier)
        m.submodules.queue = queue = Queue(_element_layout(lanes).size, depth=_QUEUE_DEPTH, register="read")
        m.submodules.packer = packer = _Packer(lanes)

        # Two banks of vector chunks, addressed {chunk, vector, bank}; a read port per pair operand.
        m.submodules.banks = banks = Memory(shape=word, depth=1 << addr_bits, init=[])
        wiring.connect(m, loader.write, banks.write_port())
        for p in range(self.pair_lanes):
            read_a, read_b = banks.read_port(), banks.read_port()
            m.d.comb += [read_a.addr.eq(sequencer.read_a[p]), read_b.addr.eq(sequencer.read_b[p]),
                         datapath.a[p].eq(read_a.data), datapath.b[p].eq(read_b.data)]

        wiring.connect(m, wiring.flipped(self.i), loader.i)
        m.d.comb += [
            sequencer.full.eq(loader.full), sequencer.desc.eq(loader.desc), loader.release.eq(sequencer.release),
            datapath.op.eq(sequencer.op), datapath.scale.eq(sequencer.scale),
            queue.w_data.eq(datapath.result), queue.w_en.eq(datapath.push),
            packer.i.valid.eq(queue.r_rdy), packer.i.payload.eq(queue.r_data),
            queue.r_en.eq(packer.i.valid & packer.i.ready), sequencer.give.eq(packer.i.valid & packer.i.ready),
        ]
        wiring.connect(m, packer.o, wiring.flipped(self.o))
        return m


def _chunk_count(dim, lanes):
    return (dim + lanes - 1) >> (lanes.bit_length() - 1)


def _scale_layout():
    return data.StructLayout({"m": unsigned(M_BITS), "s": unsigned(S_BITS)})


def _op_layout(lanes):
    """What travels beside an operation's data: ``push`` if it puts an entry into the result queue, ``last`` on an
    item's last, ``count`` elements in that entry."""
    return data.StructLayout({"valid": 1, "pair": 1, "first": 1, "push": 1, "last": 1,
                              "count": unsigned(lanes.bit_length())})


def _element_layout(lanes):
    """A result queue entry: up to ``lanes`` elements (``count`` of them), ``last`` on an item's last."""
    return data.StructLayout({"data": lanes * ACT_BITS, "count": unsigned(lanes.bit_length()), "last": 1})


class _Loader(wiring.Component):
    """Writes each item's chunks into the free bank (lanes beyond its dimension zeroed) and keeps its parameters.

    An item with ``vectors = 0`` or ``dim = 0`` is empty: its one word is taken and dropped, and nothing comes out.

    Members
    -------
    i : In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim)))
        The unit's input; ready while the bank being loaded is free.
    write : Out(WritePort.Signature(...).flip())
        Drives the banks' write port, addressed ``{chunk, vector, bank}``.
    full : Out(2)
        Per bank: it holds a whole item not yet computed.
    desc : Out(data.ArrayLayout(interaction_params_layout(max_vectors, max_dim), 2))
        Per bank: its item's parameters.
    release : In(2)
        Per bank: its item has been computed (the bank is free from the next cycle).
    """

    def __init__(self, lanes, max_vectors, max_dim, chunk_bits, vector_bits):
        self.lanes, self.chunk_bits, self.vector_bits = lanes, chunk_bits, vector_bits
        params = interaction_params_layout(max_vectors, max_dim)
        super().__init__({
            "i": In(stream.Signature(interaction_in_layout(lanes, max_vectors, max_dim))),
            "write": Out(WritePort.Signature(addr_width=chunk_bits + vector_bits + 1, shape=lanes * ACT_BITS).flip()),
            "full": Out(2), "desc": Out(data.ArrayLayout(params, 2)), "release": In(2)})

    def elaborate(self, platform):
        m = Module()
        wb = Signal()
        lv, lc = Signal(self.vector_bits, name="load_vector"), Signal(self.chunk_bits, name="load_chunk")
        first = (lv == 0) & (lc == 0)
        loading = Signal.like(self.i.payload.params)
        m.d.comb += loading.eq(Mux(first, self.i.payload.params, Mux(wb, self.desc[1], self.desc[0])))
        empty = Signal()                          # an item of no vectors or of d = 0: its word is dropped
        remaining = Signal(signed(len(loading.dim) + 1))
        m.d.comb += [
            empty.eq(first & ((self.i.payload.params.vectors == 0) | (self.i.payload.params.dim == 0))),
            remaining.eq(loading.dim - (lc << (self.lanes.bit_length() - 1))),
            self.i.ready.eq(~self.full.bit_select(wb, 1)),
            self.write.addr.eq(Cat(lc, lv, wb)),
            self.write.data.eq(Cat(Mux(remaining > k, self.i.payload.data[k], 0) for k in range(self.lanes))),
            self.write.en.eq(self.i.valid & self.i.ready & ~empty),
        ]
        for bank in range(2):
            with m.If(self.release[bank]):
                m.d.sync += self.full[bank].eq(0)
        with m.If(self.write.en):
            for bank in range(2):
                with m.If(first & (wb == bank)):
                    m.d.sync += self.desc[bank].eq(self.i.payload.params)
            with m.If(lc == _chunk_count(loading.dim, self.lanes) - 1):
                m.d.sync += lc.eq(0)
                with m.If(lv == loading.vectors - 1):
                    m.d.sync += [lv.eq(0), self.full.bit_select(wb, 1).eq(1), wb.eq(~wb)]
                with m.Else():
                    m.d.sync += lv.eq(lv + 1)
            with m.Else():
                m.d.sync += lc.eq(lc + 1)
        return m


class _Sequencer(wiring.Component):
    """Issues one operation per cycle on a full bank while the result queue has room for it.

    An operation is a chunk of a vector to put out, or the same chunk of ``pair_lanes`` consecutive pairs (fewer
    at an item's end): lane 0's pair is ``(i, j)``, lane ``p``'s the ``p``-th after it in row-major order. A
    :class:`~rpaccel.rtl.lib.credit.CreditCounter` counts the queue entries in flight.

    Members
    -------
    full, desc : In(2), In(data.ArrayLayout(interaction_params_layout(max_vectors, max_dim), 2))
        The loader's banks.
    release : Out(2)
        Per bank: its item's last operation is issued.
    read_a, read_b : Out(data.ArrayLayout(unsigned(addr_width), pair_lanes))
        Per pair lane, the banks' addresses of its two operands' chunks (lane 0's ``read_a`` is also the chunk to
        put out).
    op : Out(_op_layout(lanes))
        The operation issued (``valid``) this cycle.
    scale : Out(_scale_layout())
        The requantisation of the item being issued.
    give : In(1)
        An entry has left the result queue.
    """

    def __init__(self, lanes, max_vectors, max_dim, pair_lanes, chunk_bits, vector_bits):
        self.lanes, self.pair_lanes, self.chunk_bits, self.vector_bits = lanes, pair_lanes, chunk_bits, vector_bits
        params = interaction_params_layout(max_vectors, max_dim)
        addresses = data.ArrayLayout(unsigned(chunk_bits + vector_bits + 1), pair_lanes)
        super().__init__({"full": In(2), "desc": In(data.ArrayLayout(params, 2)), "release": Out(2),
                          "read_a": Out(addresses), "read_b": Out(addresses), "op": Out(_op_layout(lanes)),
                          "scale": Out(_scale_layout()), "give": In(1)})

    def _pair_lanes(self, m, item, ri, rj):
        """Per pair lane ``p`` (and one more, the next operation's lane 0): its pair, whether it holds one, and
        whether it holds the item's last."""
        lane_i, lane_j, lane_valid, lane_end = [ri], [rj], [Const(1, 1)], []
        for p in range(self.pair_lanes):
            end_p = Signal(name=f"lane_end{p}")
            m.d.comb += end_p.eq((lane_i[p] == item.vectors - 2) & (lane_j[p] == item.vectors - 1))
            lane_end.append(end_p)
            row_end = lane_j[p] == item.vectors - 1
            next_i = Signal(self.vector_bits, name=f"lane_i{p + 1}")
            next_j = Signal(self.vector_bits, name=f"lane_j{p + 1}")
            next_valid = Signal(name=f"lane_valid{p + 1}")
            m.d.comb += [next_i.eq(Mux(row_end, lane_i[p] + 1, lane_i[p])),
                         next_j.eq(Mux(row_end, lane_i[p] + 2, lane_j[p] + 1)),
                         next_valid.eq(lane_valid[p] & ~end_p)]
            lane_i.append(next_i)
            lane_j.append(next_j)
            lane_valid.append(next_valid)
        return lane_i, lane_j, lane_valid, lane_end

    def elaborate(self, platform):
        m = Module()
        m.submodules.credits = credits = CreditCounter(_QUEUE_DEPTH)
        rb = Signal()
        item = Signal.like(self.desc[0])
        m.d.comb += item.eq(Mux(rb, self.desc[1], self.desc[0]))
        pairs = Signal(name="pair_phase")
        ri, rj = Signal(self.vector_bits, name="vector_i"), Signal(self.vector_bits, name="vector_j", init=1)
        rc = Signal(self.chunk_bits, name="chunk")
        dot = item.mode == 0
        last_chunk = rc == _chunk_count(item.dim, self.lanes) - 1
        emit_vectors = Mux(dot, 1, item.vectors)
        to_pairs = dot & (item.vectors > 1)
        lane_i, lane_j, lane_valid, lane_end = self._pair_lanes(m, item, ri, rj)
        last_pairs = Cat(valid & end for valid, end in zip(lane_valid, lane_end)).any()
        done = last_chunk & Mux(pairs, last_pairs, (ri == emit_vectors - 1) & ~to_pairs)
        issue = Signal()
        left = Signal(signed(len(item.dim) + 1))
        m.d.comb += [
            issue.eq(self.full.bit_select(rb, 1) & credits.room),
            credits.take.eq(issue & (~pairs | last_chunk)),
            credits.give.eq(self.give),
            left.eq(item.dim - (rc << (self.lanes.bit_length() - 1))),
            self.release.eq((issue & done) << rb),
            self.op.valid.eq(issue), self.op.pair.eq(pairs), self.op.first.eq(rc == 0),
            self.op.push.eq(~pairs | last_chunk), self.op.last.eq(done),
            self.op.count.eq(Mux(pairs, sum(lane_valid[:self.pair_lanes]),
                                 Mux(left >= self.lanes, self.lanes, left))),
            self.scale.m.eq(item.m), self.scale.s.eq(item.s),
        ]
        for p in range(self.pair_lanes):
            m.d.comb += [self.read_a[p].eq(Cat(rc, lane_i[p], rb)), self.read_b[p].eq(Cat(rc, lane_j[p], rb))]
        with m.If(issue):
            m.d.sync += rc.eq(Mux(last_chunk, 0, rc + 1))
            with m.If(done):
                m.d.sync += [pairs.eq(0), ri.eq(0), rj.eq(1), rb.eq(~rb)]
            with m.Elif(last_chunk):
                with m.If(~pairs):
                    with m.If(ri == emit_vectors - 1):
                        m.d.sync += [pairs.eq(1), ri.eq(0), rj.eq(1)]
                    with m.Else():
                        m.d.sync += ri.eq(ri + 1)
                with m.Else():
                    m.d.sync += [ri.eq(lane_i[-1]), rj.eq(lane_j[-1])]
        return m


class _PairLane(wiring.Component):
    """One pair's multiply-accumulate and requantisation, never stalled.

    The operands' register (after the block RAM's output register), ``lanes`` multipliers in two stages, sums of
    four, then the accumulator; a :class:`~rpaccel.rtl.postproc.PostProcessor` requantises the total, its result
    out ``PostProcessor.LATENCY`` cycles after ``requantise``. A LUT multiplier's two stages are its partial
    products and the product; a hard multiplier's are its input registers and its product (on the ECP5 both
    inside the MULT18X18D, :func:`~rpaccel.rtl.ecp5.ecp5_registered_multiplier`).

    Members
    -------
    a, b : In(lanes * 8)
        The operands' chunks, as read from the banks.
    accumulate, first : In(1)
        The sums leaving their register this cycle belong to a pair operation, the first chunk of its pairs.
    requantise : In(1), scale : In(_scale_layout())
        Requantise the accumulator now, with this ``(m, s)``.
    result : Out(8)
        The requantised int8 result.
    """

    def __init__(self, lanes, multiplier):
        self.lanes, self.multiplier = lanes, multiplier
        super().__init__({"a": In(lanes * ACT_BITS), "b": In(lanes * ACT_BITS), "accumulate": In(1), "first": In(1),
                          "requantise": In(1), "scale": In(_scale_layout()), "result": Out(ACT_BITS)})

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        a, b = (Signal(data.ArrayLayout(signed(ACT_BITS), lanes), name=side, reset_less=True) for side in "ab")
        m.d.sync += [a.eq(self.a), b.eq(self.b)]
        # Datapath registers without reset, as the DSP block's (whose reset is tied low) that may hold them.
        products = [Signal(signed(2 * ACT_BITS), name=f"product{k}", reset_less=True) for k in range(lanes)]
        for k, product in enumerate(products):
            if self.multiplier == "lut":
                low, high = lut_partial_products(a[k], b[k])
                low_r, high_r = Signal.like(low, name=f"low{k}"), Signal.like(high, name=f"high{k}")
                m.d.sync += [low_r.eq(low), high_r.eq(high), product.eq(lut_product(low_r, high_r))]
            elif is_ecp5(platform):
                m.submodules[f"multiplier{k}"] = ecp5_registered_multiplier(a[k], b[k], product, Const(1))
            else:
                a_r, b_r = (Signal(signed(ACT_BITS), name=f"{side}{k}", reset_less=True) for side in "ab")
                m.d.sync += [a_r.eq(a[k]), b_r.eq(b[k]), product.eq(a_r * b_r)]
        group = min(4, lanes)
        sums = [Signal(signed(2 * ACT_BITS + (lanes - 1).bit_length()), name=f"sum{g}") for g in range(lanes // group)]
        m.d.sync += [s.eq(sum(products[g * group:(g + 1) * group])) for g, s in enumerate(sums)]
        acc = Signal(signed(ACC_BITS))
        with m.If(self.accumulate):
            m.d.sync += acc.eq(Mux(self.first, sum(sums), acc + sum(sums)))
        m.submodules.requant = requant = PostProcessor()
        m.d.comb += [
            requant.i.valid.eq(self.requantise),
            requant.i.payload.acc.eq(acc),
            requant.i.payload.bias.eq(0),
            requant.i.payload.params.m.eq(self.scale.m),
            requant.i.payload.params.s.eq(self.scale.s),
            requant.o.ready.eq(1),
            self.result.eq(requant.o.payload[:ACT_BITS]),
        ]
        return m


class _Datapath(wiring.Component):
    """From an issued operation's block RAM reads to its entry of the result queue, ``_LATENCY`` cycles later.

    The operation's description and the item's ``(m, s)`` travel in shift registers beside the pair lanes
    (:class:`_PairLane`); an output chunk (lane 0's ``a``) in a :class:`~rpaccel.rtl.lib.delay.DelayLine`.

    Members
    -------
    op : In(_op_layout(lanes)), scale : In(_scale_layout())
        The operation issued this cycle and its item's requantisation.
    a, b : In(data.ArrayLayout(unsigned(lanes * 8), pair_lanes))
        The block RAM's read data, a cycle after the issue.
    result : Out(_element_layout(lanes)), push : Out(1)
        The entry for the result queue, and whether to push it.
    """

    def __init__(self, lanes, pair_lanes, multiplier):
        self.lanes, self.pair_lanes, self.multiplier = lanes, pair_lanes, multiplier
        chunks = data.ArrayLayout(unsigned(lanes * ACT_BITS), pair_lanes)
        super().__init__({"op": In(_op_layout(lanes)), "scale": In(_scale_layout()), "a": In(chunks),
                          "b": In(chunks), "result": Out(_element_layout(lanes)), "push": Out(1)})

    def elaborate(self, platform):
        m = Module()
        # op[k] describes the operation issued k + 1 cycles before.
        op = shift_register(m, self.op, _LATENCY, name="op{}")
        scale = shift_register(m, self.scale, _ACCUMULATE, name="scale{}", reset_less=True)
        summed, requant_in, out_op = op[_ACCUMULATE - 2], op[_ACCUMULATE - 1], op[_LATENCY - 1]
        results = []
        for p in range(self.pair_lanes):
            m.submodules[f"pair{p}"] = lane = _PairLane(self.lanes, self.multiplier)
            m.d.comb += [
                lane.a.eq(self.a[p]), lane.b.eq(self.b[p]),
                lane.accumulate.eq(summed.valid & summed.pair), lane.first.eq(summed.first),
                lane.requantise.eq(requant_in.valid & requant_in.pair & requant_in.push),
                lane.scale.eq(scale[_ACCUMULATE - 1]),
            ]
            results.append(Mux(out_op.count > p, lane.result, 0))
        m.submodules.chunk_delay = chunk_delay = DelayLine(self.lanes * ACT_BITS, _LATENCY - 1)
        m.d.comb += [
            chunk_delay.i.eq(self.a[0]),
            self.result.data.eq(Mux(out_op.pair, Cat(results), chunk_delay.o)),
            self.result.count.eq(out_op.count),
            self.result.last.eq(out_op.last),
            self.push.eq(out_op.valid & out_op.push),
        ]
        return m


class _Packer(wiring.Component):
    """Appends each result queue entry to a partly filled word; a full word, or an item's last, goes out.

    An item's end that overflows its word takes one more cycle (``flush``).

    Members
    -------
    i : In(stream.Signature(_element_layout(lanes)))
        The result queue's head.
    o : Out(stream.Signature(interaction_out_layout(lanes)))
        The unit's output, from a register.
    """

    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__({"i": In(stream.Signature(_element_layout(lanes))),
                          "o": Out(stream.Signature(interaction_out_layout(lanes)))})

    def elaborate(self, platform):
        m = Module()
        lanes, word, head = self.lanes, self.lanes * ACT_BITS, self.i.payload
        buffer = Signal(word)                     # the first `fill` elements of the next word; the rest zero
        fill = Signal(range(lanes))
        flush = Signal()                          # buffer holds the end of an item that did not fit its word
        out_data, out_last, out_valid = Signal(word), Signal(), Signal()
        combined = Signal(2 * word)
        total_count = Signal(range(2 * lanes))
        free = ~out_valid | self.o.ready
        m.d.comb += [
            combined.eq(buffer | (head.data << (fill * ACT_BITS))),
            total_count.eq(fill + head.count),
            self.i.ready.eq(free & ~flush),
            self.o.valid.eq(out_valid), self.o.payload.data.eq(out_data), self.o.payload.last.eq(out_last),
        ]
        with m.If(free):
            m.d.sync += out_valid.eq(0)
        with m.If(free & flush):
            m.d.sync += [out_data.eq(buffer), out_last.eq(1), out_valid.eq(1), flush.eq(0), buffer.eq(0),
                         fill.eq(0)]
        with m.Elif(self.i.valid & self.i.ready):
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
