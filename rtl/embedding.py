"""Embedding unit: gathers int8 rows through a static and a dynamic cache, sum-pools them, requantises per table.

See docs/embedding.md for the design and its decisions; the reference model of the caches is
:mod:`rpaccel.cachemodel`, the golden model of the outputs :func:`rpaccel.embedding.pool_bags`.

Commands arrive on one stream and are executed in order (:class:`EmbeddingOp`):

``LOOKUP``
    One row ID of a bag (``last`` marks the bag's last ID, ``end`` the item's last bag); one pooled vector per
    bag leaves on ``pooled``, in command order. Up to one row per cycle.
``CONFIG``
    Set a table's size, static rows, placement and requantisation parameters.
``PRELOAD``
    Copy a table's static rows from memory into the static cache.
``UPDATE``
    Write one line of a row: to memory (write-through) and to every on-chip copy (static or dynamic), so no
    later lookup sees the old value.
``FLUSH``
    Invalidate the dynamic cache (also done after reset).
``COUNTERS``
    Emit the counters on ``counters`` (optionally clearing them).

Every command but ``LOOKUP`` first waits until all earlier lookups have left the unit's pipeline.

Pipeline: F1 (command, table configuration, addresses) -> F2 (admission: room reserved for the entry, the
misses and the lines, so nothing after it stalls; tag read) -> F3, F4 (block RAM) -> F5 (tag compare) -> F6 (LRU
update, allocation) -> F7 (entry queue, miss requests, counters) -> row assembly (waits for missing lines, fills
the dynamic cache, reads hits and static lines through registered block RAMs, rotates banks into line order) ->
pooling -> requantisation -> ``pooled``. Tags and LRU state change at F6 in command order and lines arrive in
order, so a lookup of a line whose fill is still in flight is a hit that reads the line after the fill lands: the
counts never depend on timing. Timing (ECP5, 125 MHz): see docs/embedding.md.
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..cachemodel import COUNTERS
from ..embedding import EmbeddingGeometry, ceil_log2
from ..numeric import INT8_MAX, INT8_MIN, M_BITS, S_BITS
from .ecp5 import ecp5_registered_multiplier, is_ecp5
from .lib.credit import CreditCounter
from .lib.delay import DelayLine, shift_register
from .lib.queue import Queue
from .lib.select import replica
from .lib.slice import RegisterSlice
from .memory import BlockRAMMemory, MemoryModel, MemoryPort, RegisteredRAM, checked_init

__all__ = ["EmbeddingOp", "EmbeddingSystem", "EmbeddingUnit", "Layouts", "Requantizer"]


class EmbeddingOp(enum.Enum, shape=3):
    """Operation of an embedding unit command."""

    LOOKUP = 0
    CONFIG = 1
    PRELOAD = 2
    UPDATE = 3
    FLUSH = 4
    COUNTERS = 5


class _Kind(enum.Enum, shape=2):
    # Where a row comes from.
    DYNAMIC = 0  # dynamic cache hits and memory
    STATIC = 1
    ZERO = 2     # out-of-range ID


def _bits(n):
    """Width holding 0 .. n - 1 (at least 1)."""
    return max(1, ceil_log2(n))


class Layouts:
    """Payload layouts of an embedding unit of geometry ``g`` (also used to encode commands on the host side).

    Attributes
    ----------
    command : StructLayout
        ``{op, table, arg}``, ``arg`` a union of ``lookup {id, last, end}``,
        ``config {rows, static_rows, static_base, mem_base, row_lines, m, s}`` (``row_lines`` is log2 of the lines
        per row), ``update {id, line, data}`` and ``counters {clear}``.
    pooled : StructLayout
        ``{table, end, data}``: one pooled, requantised vector (``max_emb_dim`` int8, zero beyond the table's
        dimension).
    counters : StructLayout
        The 32-bit counters, named as in :data:`rpaccel.cachemodel.COUNTERS`.
    """

    def __init__(self, g):
        self.g = g
        line = unsigned(8 * g.line_bytes)
        table = range(max(g.tables, 2))
        self.table_config = data.StructLayout({
            "rows": unsigned(g.id_bits + 1),
            "static_rows": range(g.static_lines + 1),
            "static_base": range(max(g.static_lines, 2)),
            "mem_base": unsigned(g.addr_bits),
            "row_lines": range(g.bank_bits + 1),
            "m": unsigned(M_BITS),
            "s": unsigned(S_BITS),
        })
        self.command = data.StructLayout({
            "op": EmbeddingOp,
            "table": table,
            "arg": data.UnionLayout({
                "lookup": data.StructLayout({"id": unsigned(g.id_bits), "last": 1, "end": 1}),
                "config": self.table_config,
                "update": data.StructLayout({"id": unsigned(g.id_bits), "line": range(max(g.banks, 2)),
                                             "data": line}),
                "counters": data.StructLayout({"clear": 1}),
            }),
        })
        # What travels with every row: its bag's table and flags, and the table's row size and parameters.
        self.bag = data.StructLayout({"table": table, "last": 1, "end": 1, "row_lines": range(g.bank_bits + 1),
                                      "m": unsigned(M_BITS), "s": unsigned(S_BITS)})
        # `missing`: the lines to come from memory (a dynamic row's active lines that missed; none for other
        # kinds), so the row assembly takes them without decoding the kind.
        fields = {"kind": _Kind, "offset": range(max(g.banks, 2)), "active": unsigned(g.banks),
                  "missing": unsigned(g.banks), "bag": self.bag}
        if g.ways:
            fields["set"] = range(max(g.sets_per_bank, 2))
            fields["way"] = data.ArrayLayout(range(max(g.ways, 2)), g.banks)
        if g.static_rows:
            fields["static_addr"] = range(max(g.static_rows, 2))
        self.entry = data.StructLayout(fields)
        # A row's missing lines (a bank mask from line ``base``), or an UPDATE's line write.
        self.miss = data.StructLayout({"write": 1, "base": unsigned(g.addr_bits), "mask": unsigned(g.banks),
                                       "data": line})
        self.row = data.StructLayout({"data": data.ArrayLayout(signed(8), g.row_bytes), "bag": self.bag})
        self.sum = data.StructLayout({"acc": data.ArrayLayout(signed(g.acc_bits), g.row_bytes), "bag": self.bag})
        self.pooled = data.StructLayout({"table": table, "end": 1,
                                         "data": data.ArrayLayout(signed(8), g.row_bytes)})
        self.counters = data.StructLayout({name: unsigned(32) for name in COUNTERS})
        self.memory = MemoryPort(addr_bits=g.addr_bits, line_bytes=g.line_bytes, max_burst=g.max_burst)
        if g.ways:
            self.tags = data.StructLayout({
                "valid": unsigned(g.ways),
                "tag": data.ArrayLayout(unsigned(max(g.tag_bits, 1)), g.ways),
                "older": unsigned(max(g.ways * (g.ways - 1) // 2, 1)),   # LRU: "way x is older than way y", x < y
            })


def _popcount(value):
    return sum((value[i] for i in range(len(value))), start=C(0, 1))


def _read_port(addr_bits, width):
    """A read port of a :class:`~rpaccel.rtl.memory.RegisteredRAM` (data two cycles after the address)."""
    return wiring.Signature({"addr": In(max(addr_bits, 1)), "data": Out(width)})


def _write_port(m, ram, shape=None):
    """A view ``{en, addr, data}`` driving the write port of ``ram``."""
    port = Signal(data.StructLayout({"en": 1, "addr": len(ram.w_addr), "data": shape or len(ram.w_data)}))
    m.d.comb += [ram.w_en.eq(port.en), ram.w_addr.eq(port.addr), ram.w_data.eq(port.data)]
    return port


def _any_of(values):
    """Bitwise OR of ``values`` (an AND-OR multiplexer when each is gated by a one-hot select)."""
    result = values[0]
    for value in values[1:]:
        result = result | value
    return result


def _lowest(value):
    """One-hot lowest set bit of ``value`` (0 if none), as a priority chain (no carry chain: the widths here are a
    few bits)."""
    return Cat(*(value[i] & ~value[:i].any() if i else value[0] for i in range(len(value))))


# --- Requantisation ---------------------------------------------------------------------------------------

class Requantizer(wiring.Component):
    """Requantise pooled sums to int8, ``lanes`` elements per cycle (:func:`rpaccel.numeric.requantize`).

    A pooled vector of ``d = line_bytes << bag.row_lines`` elements takes ``ceil(d / lanes)`` cycles. Inputs go
    into two buffers in turn (``i.ready`` is a register: a buffer is free), so one is taken while the other is
    issued; each cycle one chunk of ``lanes`` elements enters a seven-stage pipeline: select the chunk, a register
    towards the multipliers, multiply ``acc * m`` (one multiplier per lane), shift by the multiple-of-8 part of
    ``s - 1``, shift by the rest, saturate to [-258, 256], then ``(t + 1) >> 1`` (or ``t`` for ``s = 0``) clamped
    to int8 (the rounding argument of docs/numerics.md). The pipeline never stalls: a chunk is issued only when
    the output queue has room for every result already in flight. Elements beyond
    ``d`` come out 0.

    Parameters
    ----------
    layouts : Layouts

    Members
    -------
    i : In(stream.Signature(layouts.sum))
    o : Out(stream.Signature(layouts.pooled))
    idle : Out(1)
        Nothing in the unit but (possibly) results in the output queue.
    """

    #: Pipeline stages from issuing a chunk to its result.
    STAGES = 7
    _QUEUE = 16  # LUT RAM is 16 deep anyway

    def __init__(self, layouts):
        self.layouts = layouts
        super().__init__({"i": In(stream.Signature(layouts.sum)), "o": Out(stream.Signature(layouts.pooled)),
                          "idle": Out(1)})

    @staticmethod
    def meta_layout(layouts):
        """What travels beside a chunk in registers ``meta0`` ... ``meta6``; ``hot``: the chunk (one-hot),
        ``past``: the chunks after it (zero in the output)."""
        g = layouts.g
        chunks = g.row_bytes // g.requant_lanes
        return data.StructLayout({"chunk": range(max(chunks, 2)), "last": 1, "table": layouts.bag["table"].shape,
                                  "end": 1, "m": unsigned(M_BITS), "shift": unsigned(S_BITS), "s_zero": 1,
                                  "hot": chunks, "past": chunks, "buffer": 1})

    def elaborate(self, platform):
        m = Module()
        g = self.layouts.g
        lanes, chunks = g.requant_lanes, g.row_bytes // g.requant_lanes
        # The output queue never fills: the credit counter below holds every result issued to a place in it.
        m.submodules.out = out = Queue(self.layouts.pooled.size, depth=self._QUEUE, register="read")

        # Two input buffers, filled and issued in turn; chunk issue (credit: every result in flight has a place in
        # the output queue).
        buffers = [Signal(self.layouts.sum, name=f"buffer{k}", reset_less=True) for k in range(2)]
        full = Signal(2)
        # The buffer the next input goes to, the buffer being issued.
        fill, issuing = Signal(name="fill"), Signal(name="issuing")
        work = Signal(self.layouts.bag)
        busy = Signal()
        chunk = Signal(range(max(chunks, 2)))
        last_chunk = Signal(range(max(chunks, 2)))
        elements = Signal(range(g.row_bytes + 1))
        m.d.comb += [
            work.eq(Mux(issuing, buffers[1].bag, buffers[0].bag)), busy.eq((full >> issuing)[0]),
            elements.eq(C(g.line_bytes) << work.row_lines),
            last_chunk.eq((elements - 1) >> ceil_log2(lanes)),
        ]
        # Results issued and not yet taken from the output queue; room for two more (the one that may issue now
        # and the one after it), decided a cycle ahead.
        m.submodules.results = credit = CreditCounter(self._QUEUE, need=2)
        issue = busy & credit.room
        final = issue & (chunk == last_chunk)
        m.d.comb += [credit.take.eq(final), credit.give.eq(self.o.valid & self.o.ready)]
        # The buffers' states next cycle, so that `i.ready` (a buffer is free) is a register.
        load = self.i.valid & self.i.ready
        ready = Signal(init=1)
        full_next, fill_next = Signal(2, name="full_next"), Signal(name="fill_next")
        for k in range(2):
            m.d.comb += full_next[k].eq(Mux(load & (fill == k), 1, Mux(final & (issuing == k), 0, full[k])))
            with m.If(load & (fill == k)):
                m.d.sync += buffers[k].eq(self.i.payload)
        m.d.comb += [fill_next.eq(fill ^ load), self.i.ready.eq(ready)]
        m.d.sync += [full.eq(full_next), fill.eq(fill_next), ready.eq(~(full_next >> fill_next)[0])]
        with m.If(final):
            m.d.sync += issuing.eq(~issuing)
        with m.If(issue):
            m.d.sync += chunk.eq(Mux(final, 0, chunk + 1))
        bag = work
        issued = Signal(self.meta_layout(self.layouts))
        m.d.comb += [
            issued.chunk.eq(chunk), issued.last.eq(chunk == last_chunk), issued.table.eq(bag.table),
            issued.end.eq(bag.end), issued.m.eq(bag.m), issued.shift.eq(Mux(bag.s == 0, 0, bag.s - 1)),
            issued.s_zero.eq(bag.s == 0),
            issued.hot.eq(C(1, chunks) << chunk),
            issued.past.eq(Cat(chunk < c for c in range(chunks))), issued.buffer.eq(issuing),
        ]
        # The stages: metas[k] is what travels beside the chunk issued k + 1 cycles before, valid[k] whether one was.
        valid = shift_register(m, issue, self.STAGES, name="valid{}", first=0)
        metas = shift_register(m, issued, self.STAGES, name="meta{}", first=0, reset_less=True)

        # The lanes: select, multiply, coarse shift, fine shift and saturate, round and clamp.
        product_bits = g.acc_bits + M_BITS + 1
        low, high = 2 * INT8_MIN - 2, 2 * INT8_MAX + 2
        results = []
        for lane in range(lanes):
            # The chunk's element from each buffer, then the buffer's (two registers towards the multiplier).
            x = [Signal(signed(g.acc_bits), name=f"x{lane}_{k}", reset_less=True) for k in range(2)]
            product = Signal(signed(product_bits), name=f"product{lane}", reset_less=True)
            coarse = Signal(signed(product_bits), name=f"coarse{lane}", reset_less=True)
            fine = Signal(signed(product_bits), name=f"fine{lane}", reset_less=True)
            saturated = Signal(range(low, high + 1), name=f"saturated{lane}", reset_less=True)
            rounded = Signal(signed(11), name=f"rounded{lane}")
            result = Signal(signed(8), name=f"result{lane}", reset_less=True)
            m.d.comb += rounded.eq(Mux(metas[5].s_zero, saturated, (saturated + 1) >> 1))
            if is_ecp5(platform):
                # The buffer's element and m in the DSP block's input registers, the product in its output register.
                m.submodules[f"multiplier{lane}"] = ecp5_registered_multiplier(
                    Mux(metas[0].buffer, x[1], x[0]), Cat(metas[0].m, C(0, 1)).as_signed(), product, C(1, 1))
            else:
                x2 = Signal(signed(g.acc_bits), name=f"x2_{lane}", reset_less=True)
                m.d.sync += [x2.eq(Mux(metas[0].buffer, x[1], x[0])), product.eq(x2 * metas[1].m)]
            m.d.sync += [
                *(x[k].eq(Array(buffers[k].acc[c * lanes + lane] for c in range(chunks))[chunk] if chunks > 1
                          else buffers[k].acc[lane]) for k in range(2)),
                coarse.eq(product >> Cat(C(0, 3), metas[2].shift[3:])),
                fine.eq(coarse >> metas[3].shift[:3]),
                saturated.eq(Mux(fine < low, low, Mux(fine > high, high, fine))),
                result.eq(Mux(rounded < INT8_MIN, INT8_MIN, Mux(rounded > INT8_MAX, INT8_MAX, rounded))),
            ]
            results.append(result)

        # Collect the chunks of a vector; the last one completes it (chunks after it are zero).
        done, here = metas[-1], Cat(*results)
        vector = Signal(data.ArrayLayout(signed(8), g.row_bytes), reset_less=True)
        complete = Signal.like(vector)
        for c in range(chunks):
            part = slice(c * lanes * 8, (c + 1) * lanes * 8)
            m.d.comb += complete.as_value()[part].eq(
                Mux(done.hot[c], here, Mux(done.past[c], 0, vector.as_value()[part])))
        with m.If(valid[-1]):
            m.d.sync += vector.eq(complete)
        # The queue's write, registered (the LUT RAM sits apart from the lanes).
        pooled = Signal(self.layouts.pooled, reset_less=True)
        write = Signal()
        m.d.sync += [pooled.table.eq(done.table), pooled.end.eq(done.end), pooled.data.eq(complete),
                     write.eq(valid[-1] & done.last)]
        m.d.comb += [
            out.w_en.eq(write), out.w_data.eq(pooled),
            self.o.valid.eq(out.r_rdy), self.o.payload.eq(out.r_data), out.r_en.eq(self.o.ready),
            self.idle.eq(~full.any() & ~Cat(*valid).any() & ~write),
        ]
        return m


# --- Pooling ----------------------------------------------------------------------------------------------

class _Pooler(wiring.Component):
    """Sum the rows of each bag into accumulators; one row per cycle. A bag's sums are offered from the
    accumulators themselves the cycle after its last row (a register-to-register copy into the requantiser);
    rows wait only while the sums are offered and not taken."""

    def __init__(self, layouts):
        self.layouts = layouts
        super().__init__({"rows": In(stream.Signature(layouts.row)), "sums": Out(stream.Signature(layouts.sum)),
                          "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        g = self.layouts.g
        acc = Signal(data.ArrayLayout(signed(g.acc_bits), g.row_bytes), reset_less=True)
        first = Signal(init=1)
        bag = Signal(self.layouts.bag, reset_less=True)
        offered = Signal()      # acc holds a bag's sums
        row = self.rows.payload
        m.d.comb += [self.rows.ready.eq(~offered | self.sums.ready),
                     self.sums.valid.eq(offered), self.sums.payload.acc.eq(acc), self.sums.payload.bag.eq(bag),
                     self.idle.eq(~offered)]
        with m.If(self.sums.valid & self.sums.ready):
            m.d.sync += offered.eq(0)
        with m.If(self.rows.valid & self.rows.ready):
            m.d.sync += [*(acc[i].eq(Mux(first, 0, acc[i]) + row.data[i]) for i in range(g.row_bytes)),
                         first.eq(row.bag.last), bag.eq(row.bag), offered.eq(row.bag.last)]
        return m


# --- Row assembly -----------------------------------------------------------------------------------------

class _RowAssembler(wiring.Component):
    """Turn queue entries into rows: take the missing lines from memory (filling the dynamic cache), read the
    hits and static rows, rotate the banks into row order.

    C0 (the entry taken from the queue, in registers) takes the entry's missing lines, one per memory beat in bank
    order, writing each into its dynamic cache way; when the last is in, it reads the hit lines and static lines.
    D1: the block RAM accesses (fills and reads), registered; D4: the block RAMs' outputs arrive (registered in
    front of the RAMs, inside and behind them), and each bank's source and each row position's bank are decoded
    (one-hot); D5: the data, registered once more, are selected per bank and rotated into line order (AND-OR with
    the registered selects), into a small row queue with a registered output. C0 completes an entry only when the
    queue has room for everything in D1-D5, so they never stall.
    """

    STAGES = 5   # D1-D5
    _QUEUE = 8   # rows in D1-D5 and the queue: a row is counted for seven cycles when the pooler takes one per cycle

    def __init__(self, layouts):
        self.layouts = layouts
        g = layouts.g
        line = unsigned(8 * g.line_bytes)
        members = {
            "entries": In(stream.Signature(layouts.entry)),
            "resp": In(stream.Signature(line)),
            "rows": Out(stream.Signature(layouts.row)),
            "idle": Out(1),
        }
        if g.static_rows:
            members["static_rd"] = In(_read_port(ceil_log2(g.static_rows), line)).array(g.banks)
        if g.ways:
            members["dyn_rd"] = In(_read_port(ceil_log2(g.sets_per_bank * g.ways), line)).array(g.banks)
            members["fill"] = Out(data.StructLayout({"en": 1, "addr": unsigned(ceil_log2(g.sets_per_bank * g.ways)),
                                                     "data": line})).array(g.banks)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self.layouts.g
        banks, width = g.banks, 8 * g.line_bytes
        entry = self.entries.payload
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=self.layouts.row.size, depth=self._QUEUE)
        m.submodules.used = used = CreditCounter(self._QUEUE)   # rows in D1-D5 and the queue

        # C0: the entry being assembled, in registers: `need` the lines still to come from memory (in bank order),
        # `nxt` the first of them, `only` whether it is the last one.
        c0_valid = Signal()
        c0 = Signal(self.layouts.entry, reset_less=True)
        need, nxt = Signal(banks, name="need"), Signal(banks, name="nxt")
        only, need_any = Signal(name="only"), Signal(name="need_any")
        pending = Signal(data.ArrayLayout(unsigned(width), banks), reset_less=True)
        take, take_data, done = Signal(name="take"), Signal(name="take_data"), Signal(name="done")
        # `resp.ready` is a register computed from C0's next state, in two copies: one for C0's own next state,
        # one for the enables of the 512-bit line registers (the memory slice's and `pending`), so that C0's
        # loop stays local instead of following the line registers across the chip.
        ready = Signal()
        m.d.comb += [
            take.eq(self.resp.valid & ready),
            done.eq(c0_valid & used.room & (~need_any | (take & only))),
            self.entries.ready.eq(~c0_valid | done),
        ]
        # C0's next state. A new entry brings its missing lines as a mask (the queue's output is a LUT RAM read
        # late in the cycle: one LUT level each for the first line, "only one" and "any"); after a line arrives
        # the rest is decoded from registers.
        valid_next, need_next = Signal(name="valid_next"), Signal(banks, name="need_next")
        nxt_next, only_next = Signal(banks, name="nxt_next"), Signal(name="only_next")
        any_next = Signal(name="any_next")
        rest = need & ~nxt
        with m.If(self.entries.valid & self.entries.ready):
            m.d.comb += [valid_next.eq(1), need_next.eq(entry.missing), nxt_next.eq(_lowest(entry.missing)),
                         only_next.eq(entry.missing == _lowest(entry.missing)), any_next.eq(entry.missing != 0)]
            m.d.sync += c0.eq(entry)
        with m.Elif(take & ~done):
            m.d.comb += [valid_next.eq(c0_valid), need_next.eq(rest), nxt_next.eq(_lowest(rest)),
                         only_next.eq(rest == _lowest(rest)), any_next.eq(rest != 0)]
        with m.Else():
            m.d.comb += [valid_next.eq(c0_valid & ~done), need_next.eq(need), nxt_next.eq(nxt), only_next.eq(only),
                         any_next.eq(need_any)]
        ready_next = valid_next & any_next & (~only_next | used.room_next)
        m.d.sync += [c0_valid.eq(valid_next), need.eq(need_next), nxt.eq(nxt_next), only.eq(only_next),
                     need_any.eq(any_next), ready.eq(ready_next)]
        ready_data = replica(m, ready_next, name="ready_data")
        nxt_data = replica(m, nxt_next, name="nxt_data")
        m.d.comb += [self.resp.ready.eq(ready_data), take_data.eq(self.resp.valid & ready_data)]
        lines_in = Signal.like(pending)
        for b in range(banks):
            m.d.comb += lines_in[b].eq(Mux(take_data & nxt_data[b], self.resp.payload, pending[b]))
            with m.If(take_data & nxt_data[b]):
                m.d.sync += pending[b].eq(self.resp.payload)
            # D1: the block RAM accesses, registered: the line that arrived is written, a completed entry read.
            if g.ways:
                addr = c0.set * g.ways + c0.way[b]
                m.d.sync += [self.fill[b].en.eq(take_data & nxt_data[b]), self.fill[b].addr.eq(addr),
                             self.fill[b].data.eq(self.resp.payload), self.dyn_rd[b].addr.eq(addr)]
            if g.static_rows:
                m.d.sync += self.static_rd[b].addr.eq(c0.static_addr)

        # D1-D4: the entry follows the block RAMs' reads (RegisteredRAM with input registers: the data arrive at
        # D4) in registers, the lines from memory in a LUT-RAM delay line; at D4 each bank's source and each row
        # position's bank are decoded (one-hot). D5: the block RAMs' data registered once more (they come from
        # across the chip), selected per bank and rotated.
        info = data.StructLayout({"kind": _Kind, "offset": entry.offset.shape(), "active": banks, "missing": banks,
                                  "bag": self.layouts.bag})
        n = self.STAGES
        c0_info = Signal(info)
        m.d.comb += [c0_info.kind.eq(c0.kind), c0_info.offset.eq(c0.offset), c0_info.active.eq(c0.active),
                     c0_info.missing.eq(c0.missing), c0_info.bag.eq(c0.bag)]
        d_valid = shift_register(m, done, n, name="d{}_valid")
        d_info = shift_register(m, c0_info, n - 1, name="d", reset_less=True)
        m.submodules.lines = lines = DelayLine(pending.shape(), n)   # the lines from memory, at D5
        m.d.comb += lines.i.eq(lines_in)
        d_last_lines = lines.o
        d_before = d_info[-1]
        d_bag = Signal(self.layouts.bag, reset_less=True)
        # Per bank: the line from memory (a miss), the dynamic cache (a hit), the static cache; per row position j,
        # the bank it takes (offset + j).
        sources = data.StructLayout({"memory": banks, "dynamic": banks, "static": banks})
        d_source = Signal(sources, reset_less=True)
        d_bank = Signal(data.ArrayLayout(banks, banks), reset_less=True)
        dynamic_before = d_before.kind == _Kind.DYNAMIC
        m.d.sync += [d_bag.eq(d_before.bag),
                     d_source.memory.eq(d_before.missing),
                     d_source.dynamic.eq(Mux(dynamic_before, d_before.active & ~d_before.missing, 0) if g.ways else 0),
                     d_source.static.eq(Mux(d_before.kind == _Kind.STATIC, d_before.active, 0) if g.static_rows else 0)]
        for j in range(banks):
            m.d.sync += d_bank[j].eq(C(1, banks) << ((d_before.offset + j)[:g.bank_bits] if banks > 1 else 0))
        by_bank = []
        for b in range(banks):
            terms = [Mux(d_source.memory[b], d_last_lines[b], 0)]
            if g.ways:
                dynamic = Signal(width, name=f"dynamic{b}", reset_less=True)
                m.d.sync += dynamic.eq(self.dyn_rd[b].data)
                terms.append(Mux(d_source.dynamic[b], dynamic, 0))
            if g.static_rows:
                static = Signal(width, name=f"static{b}", reset_less=True)
                m.d.sync += static.eq(self.static_rd[b].data)
                terms.append(Mux(d_source.static[b], static, 0))
            line = Signal(width, name=f"bank{b}")
            m.d.comb += line.eq(_any_of(terms))
            by_bank.append(line)
        row = Signal(self.layouts.row)
        m.d.comb += [
            row.data.eq(Cat(*(_any_of([Mux(d_bank[j][b], by_bank[b], 0) for b in range(banks)])
                              for j in range(banks)))),
            row.bag.eq(d_bag),
            queue.w_en.eq(d_valid[-1]), queue.w_data.eq(row),
            self.rows.valid.eq(queue.r_rdy), self.rows.payload.eq(queue.r_data), queue.r_en.eq(self.rows.ready),
            self.idle.eq((used.count == 0) & ~c0_valid),
            used.take.eq(done), used.give.eq(self.rows.valid & self.rows.ready),
        ]
        return m


# --- Entry queue ------------------------------------------------------------------------------------------

class _EntryQueue(wiring.Component):
    """The entry queue: ``depth`` entries in block RAM (:class:`~rpaccel.rtl.memory.RegisteredRAM`, read two
    cycles after the address) ahead of a small LUT-RAM queue that gives the row assembly its head at once. A
    block RAM read is issued only when the small queue has room for it and the reads in flight, decided a cycle
    ahead. Writes are not checked: the unit reserves room at admission (``popped``: an entry left the block RAM).
    """

    _HEAD = 8   # LUT RAM is 16 deep anyway; a read takes three cycles to show in the head's level

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({"w_en": In(1), "w_data": In(width), "r": Out(stream.Signature(width)),
                          "popped": Out(1), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = RegisteredRAM(width=self.width, depth=self.depth)
        m.submodules.head = head = fifo.SyncFIFO(width=self.width, depth=self._HEAD)
        produce, consume = Signal(range(self.depth), name="produce"), Signal(range(self.depth), name="consume")
        count = Signal(range(self.depth + 1))
        room = Signal(init=1)
        issue = (count != 0) & room
        flight = shift_register(m, issue, 2, name="flight")     # reads issued one and two cycles ago

        def advance(pointer):
            return Mux(pointer == self.depth - 1, 0, pointer + 1)

        with m.If(self.w_en):
            m.d.sync += produce.eq(advance(produce))
        with m.If(issue):
            m.d.sync += consume.eq(advance(consume))
        m.d.sync += [
            count.eq(count + self.w_en - issue),
            # Next cycle's head holds at most its level now, the entry arriving now and the reads in flight.
            room.eq(head.level + flight[1] + flight[0] + issue + 1 <= self._HEAD),
        ]
        m.d.comb += [
            ram.w_en.eq(self.w_en), ram.w_addr.eq(produce), ram.w_data.eq(self.w_data), ram.r_addr.eq(consume),
            head.w_en.eq(flight[1]), head.w_data.eq(ram.r_data),
            self.r.valid.eq(head.r_rdy), self.r.payload.eq(head.r_data), head.r_en.eq(self.r.ready),
            self.popped.eq(issue), self.idle.eq((count == 0) & ~flight[0] & ~flight[1] & (head.level == 0)),
        ]
        return m


# --- Memory requests --------------------------------------------------------------------------------------

class _MissSplitter(wiring.Component):
    """Turn a row's missing lines (a bank mask) into one read burst per run of consecutive lines; pass an
    UPDATE's line write through."""

    def __init__(self, layouts):
        self.layouts = layouts
        super().__init__({"misses": In(stream.Signature(layouts.miss)),
                          "req": Out(stream.Signature(layouts.memory.request))})

    def elaborate(self, platform):
        m = Module()
        banks = self.layouts.g.banks
        miss = self.misses.payload
        done = Signal(banks)
        need = Signal(banks)
        low = Signal(banks)
        run = Signal(banks)
        start = Signal(range(max(banks, 2)))
        m.d.comb += [need.eq(miss.mask & ~done), low.eq(_lowest(need))]
        for b in range(banks):
            m.d.comb += run[b].eq(need[b] & (low[b] | (run[b - 1] if b else 0)))
            with m.If(low[b]):
                m.d.comb += start.eq(b)
        finished = ~(need & ~run).any()
        with m.If(miss.write):
            m.d.comb += [self.req.valid.eq(self.misses.valid), self.req.payload.write.eq(1),
                         self.req.payload.addr.eq(miss.base), self.req.payload.data.eq(miss.data),
                         self.misses.ready.eq(self.req.ready)]
        with m.Else():
            m.d.comb += [
                self.req.valid.eq(self.misses.valid & need.any()),
                self.req.payload.addr.eq(miss.base + start),
                self.req.payload.length.eq(_popcount(run) - 1),
                self.misses.ready.eq(~need.any() | (self.req.ready & finished)),
            ]
            with m.If(self.req.valid & self.req.ready):
                m.d.sync += done.eq(Mux(finished, 0, done | run))
        return m


class _Preloader(wiring.Component):
    """Copy ``lines`` consecutive memory lines from ``mem_base`` into the static cache from ``static_base``.

    Every quantity is a register that one adder or comparator updates: the next request's address and the
    lines not yet requested (both stepped by a request), the next request's length (``min(left, max_burst)``,
    recomputed in the cycle after a request, so a request goes out at most every other cycle: a burst of
    ``max_burst >= 8`` lines takes longer than that to arrive), and for the responses the next static line and
    the lines still to come.
    """

    def __init__(self, layouts):
        self.layouts = layouts
        g = layouts.g
        span = data.StructLayout({"mem_base": unsigned(g.addr_bits), "static_base": range(max(g.static_lines, 2)),
                                  "lines": range(g.static_lines + 1)})
        super().__init__({
            "start": In(stream.Signature(span)),
            "req": Out(stream.Signature(layouts.memory.request)),
            "resp": In(stream.Signature(unsigned(8 * g.line_bytes))),
            "write": Out(data.StructLayout({"en": 1, "line": range(max(g.static_lines, 2)),
                                            "data": unsigned(8 * g.line_bytes)})),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.layouts.g
        start = self.start.payload
        addr = Signal(g.addr_bits)                     # next request
        left = Signal.like(start.lines)                # lines not yet requested
        length = Signal(range(g.max_burst + 1))        # min(left, max_burst), once `settled`
        more = Signal()                                # left != 0, once `settled`
        settled = Signal()                             # `length` and `more` follow `left`
        line = Signal.like(start.static_base)          # static line of the next response
        expect = Signal.like(start.lines)              # responses still to come
        last = Signal()                                # expect == 1
        m.d.comb += [
            self.start.ready.eq(~self.busy),
            self.req.valid.eq(self.busy & settled & more),
            self.req.payload.write.eq(0),
            self.req.payload.addr.eq(addr),
            self.req.payload.length.eq(length - 1),
            self.resp.ready.eq(self.busy),
        ]
        m.d.sync += [length.eq(Mux(left > g.max_burst, g.max_burst, left)), more.eq(left != 0), settled.eq(1)]
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += [addr.eq(start.mem_base), left.eq(start.lines), settled.eq(0), line.eq(start.static_base),
                         expect.eq(start.lines), last.eq(start.lines == 1), self.busy.eq(start.lines != 0)]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [addr.eq(addr + length), left.eq(left - length), settled.eq(0)]
        # The static cache write of each line, registered (the block RAMs are spread over the chip).
        m.d.sync += [self.write.en.eq(self.resp.valid & self.busy), self.write.line.eq(line),
                     self.write.data.eq(self.resp.payload)]
        with m.If(self.resp.valid & self.resp.ready):
            m.d.sync += [line.eq(line + 1), expect.eq(expect - 1), last.eq(expect == 2)]
            with m.If(last):
                m.d.sync += self.busy.eq(0)
        return m


# --- The unit ---------------------------------------------------------------------------------------------

class EmbeddingUnit(wiring.Component):
    """Embedding gather, sum-pooling and requantisation with a static and a dynamic cache in front of memory.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        Sizes come from ``max_emb_dim``, ``emb_tables``, ``static_cache_rows``, ``dyn_cache_sets``,
        ``dyn_cache_ways`` (0: no dynamic cache), ``dyn_cache_line_bytes``, ``max_outstanding_misses``,
        ``max_pooling``, ``emb_requant_lanes`` and ``mem_bytes`` (see
        :meth:`rpaccel.embedding.EmbeddingGeometry.from_config`).

    Members
    -------
    cmd : In(stream.Signature(layouts.command))
        Commands (see the module documentation).
    pooled : Out(stream.Signature(layouts.pooled))
        One requantised vector per bag, in command order.
    counters : Out(stream.Signature(layouts.counters))
        Counter snapshots, one per ``COUNTERS`` command.
    mem : Out(MemoryPort)
        Memory.
    idle : Out(1)
        No command in progress (the output queues may hold results).
    """

    _MISS_QUEUE = 8

    @checked_init
    def __init__(self, config):
        self.config = config
        self.geometry = g = EmbeddingGeometry.from_config(config)
        self.layouts = lay = Layouts(g)
        super().__init__({
            "cmd": In(stream.Signature(lay.command)),
            "pooled": Out(stream.Signature(lay.pooled)),
            "counters": Out(stream.Signature(lay.counters)),
            "mem": Out(lay.memory),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g, lay = self.geometry, self.layouts
        banks, bank_bits = g.banks, g.bank_bits
        width = 8 * g.line_bytes

        m.submodules.requant = requant = Requantizer(lay)
        m.submodules.pooler = pooler = _Pooler(lay)
        m.submodules.assembler = assembler = _RowAssembler(lay)
        m.submodules.splitter = splitter = _MissSplitter(lay)
        m.submodules.preloader = preloader = _Preloader(lay)
        m.submodules.queue = queue = _EntryQueue(lay.entry.size, g.queue_depth)
        m.submodules.miss_queue = miss_queue = fifo.SyncFIFOBuffered(width=lay.miss.size, depth=self._MISS_QUEUE)
        wiring.connect(m, assembler.rows, pooler.rows)
        wiring.connect(m, pooler.sums, requant.i)
        wiring.connect(m, requant.o, wiring.flipped(self.pooled))
        m.d.comb += [
            assembler.entries.valid.eq(queue.r.valid), assembler.entries.payload.eq(queue.r.payload),
            queue.r.ready.eq(assembler.entries.ready),
            splitter.misses.valid.eq(miss_queue.r_rdy), splitter.misses.payload.eq(miss_queue.r_data),
            miss_queue.r_en.eq(splitter.misses.ready),
        ]
        storage = self._storage(m, assembler)

        # --- F1: accept a command, read its table's configuration; compute the row's addresses. ---
        f1_valid, f1_done = Signal(name="f1_valid"), Signal(name="f1_done")
        f1 = Signal(lay.command, reset_less=True)
        cfg = Signal(lay.table_config)
        cfg_write, cfg_read = storage["cfg_write"], storage["cfg_read"]
        m.d.comb += [self.cmd.ready.eq(~f1_valid | f1_done), cfg_read.addr.eq(self.cmd.payload.table),
                     cfg_read.en.eq(self.cmd.valid & self.cmd.ready), cfg.eq(cfg_read.data)]
        # The command's operation, decoded on entry (one-hot, zero when F1 is empty).
        f1_is = Signal(data.StructLayout({**{op.name.lower(): 1 for op in EmbeddingOp}, "unknown": 1}))
        f1_is_next = Signal.like(f1_is)
        m.d.sync += f1_is.eq(f1_is_next)
        with m.If(self.cmd.valid & self.cmd.ready):
            op = self.cmd.payload.op
            m.d.sync += [f1_valid.eq(1), f1.eq(self.cmd.payload)]
            m.d.comb += [*(f1_is_next[o.name.lower()].eq(op == o) for o in EmbeddingOp),
                         f1_is_next.unknown.eq(~Cat(op == o for o in EmbeddingOp).any())]
        with m.Elif(f1_done):
            m.d.sync += f1_valid.eq(0)
            m.d.comb += f1_is_next.eq(0)
        with m.Else():
            m.d.comb += f1_is_next.eq(f1_is)
        stage = data.StructLayout({
            "update": 1, "kind": _Kind, "line": unsigned(g.addr_bits), "static_line": range(max(g.static_lines, 2)),
            "offset": range(max(banks, 2)), "active": unsigned(banks), "lines": range(banks + 1),
            "bag": lay.bag})
        s1 = self._addresses(m, f1, f1_is.update, cfg, stage)
        # An UPDATE's line: at most one UPDATE is in flight (it waits until everything before it is done).
        update_data = Signal(width, reset_less=True)

        # --- F2: admission. An item goes on only with room reserved for its entry, its misses and its lines, so
        # F3-F4 (tag read), F5 (tag compare), F6 (LRU, allocation) and F7 (queueing, counting) never stall. ---
        admit, f1_pass = Signal(name="admit"), Signal(name="f1_pass")
        # F2 is a register slice: its second place (the skid) lets F1 pass an item whenever the skid is empty, so
        # F1 never waits on admission; F2 is the slice's output.
        m.submodules.f2 = f2_slice = RegisterSlice(stage)
        f2_valid, f2 = f2_slice.o.valid, f2_slice.o.payload
        skid_valid = ~f2_slice.i.ready
        m.d.comb += [f2_slice.i.valid.eq(f1_pass), f2_slice.i.payload.eq(s1), f2_slice.o.ready.eq(admit)]
        # Lines reserved or in flight, not yet consumed (room for a whole row of the widest kind); entries admitted
        # and not yet out of the entry queue; miss slots admitted and not yet free. Whether there is room is decided
        # a cycle ahead, from the next counts, so admission starts from registers.
        m.submodules.credit = credit = CreditCounter(g.max_outstanding, need=banks, max_take=banks,
                                                     max_give=banks + 1)
        m.submodules.queue_used = queue_used = CreditCounter(g.queue_depth)
        m.submodules.miss_used = miss_used = CreditCounter(self._MISS_QUEUE, max_give=2)
        dynamic2 = f2.kind == _Kind.DYNAMIC
        m.d.comb += admit.eq(f2_valid & miss_used.room &
                             (f2.update | (queue_used.room & (~dynamic2 | credit.room))))
        with m.If(f1_pass & s1.update):
            m.d.sync += update_data.eq(f1.arg.update.data)
        offset = Mux(f2.kind == _Kind.STATIC, f2.static_line, f2.line)[:max(bank_bits, 1)] if banks > 1 else 0
        admitted = Signal(stage)
        m.d.comb += [admitted.eq(f2), admitted.offset.eq(offset),
                     admitted.active.eq(((C(1, banks + 1) << f2.lines) - 1) << offset if banks > 1 else 1)]
        f3_valid, f4_valid, f5_valid, f6_valid, f7_valid = shift_register(m, admit, 5, name="f{}_valid", first=3)
        # (F3 is read only by F4.)
        f4, f5, f6, f7 = shift_register(m, admitted, 5, name="f", first=3, reset_less=True)[1:]

        # --- F5, F6: the dynamic cache's decision (F5 compares the tags, F6 decides; registered into F7). ---
        hit, evict = Signal(banks, name="hit"), Signal(banks, name="evict")
        ways = Signal(data.ArrayLayout(range(max(g.ways, 2)), banks))
        flushing = Signal(init=1 if g.ways else 0)
        set_bits = ceil_log2(g.sets_per_bank) if g.ways else 0
        dynamic6 = f6.kind == _Kind.DYNAMIC
        if g.ways:
            self._tags(m, storage, (f2, f4, f5, f6), f6_valid & ~f6.update & dynamic6, flushing, hit, evict,
                       ways)
        hit7, evict7 = Signal(banks, reset_less=True, name="hit7"), Signal(banks, reset_less=True, name="evict7")
        ways7 = Signal.like(ways, reset_less=True)
        m.d.sync += [hit7.eq(Mux(dynamic6, hit & f6.active, 0)), evict7.eq(evict), ways7.eq(ways)]

        # --- F7: queue the entry, request the missing lines (or an UPDATE's write), count. ---
        lookup7 = f7_valid & ~f7.update
        dynamic7 = f7.kind == _Kind.DYNAMIC
        missing, pushed = Signal(banks, name="missing"), Signal(name="pushed")
        m.d.comb += [missing.eq(Mux(dynamic7, f7.active & ~hit7, 0)), pushed.eq(f7_valid & (f7.update | missing.any()))]
        entry = Signal(lay.entry)
        m.d.comb += [entry.kind.eq(f7.kind), entry.offset.eq(f7.offset), entry.active.eq(f7.active),
                     entry.missing.eq(missing), entry.bag.eq(f7.bag)]
        if g.ways:
            m.d.comb += [entry.set.eq(f7.line[bank_bits:bank_bits + set_bits]), entry.way.eq(ways7)]
        if g.static_rows:
            m.d.comb += entry.static_addr.eq(f7.static_line >> bank_bits)
        miss = Signal(lay.miss)
        m.d.comb += [
            miss.write.eq(f7.update), miss.base.eq(Mux(f7.update, f7.line, f7.line & ~C(banks - 1, g.addr_bits))),
            miss.mask.eq(missing), miss.data.eq(update_data),
            queue.w_en.eq(lookup7), queue.w_data.eq(entry),
            miss_queue.w_en.eq(pushed), miss_queue.w_data.eq(miss),
        ]
        # What the data side frees is counted a cycle late (the signals come from far across the chip): late
        # releases are only conservative.
        popped, miss_popped = Signal(name="popped"), Signal(name="miss_popped")
        consumed, unused = Signal(name="consumed"), Signal(name="unused")
        release = Signal(range(banks + 1))    # a lookup's hits: lines reserved that memory need not send
        m.d.sync += [
            popped.eq(queue.popped), miss_popped.eq(miss_queue.r_en & miss_queue.r_rdy), unused.eq(f7_valid & ~pushed),
            consumed.eq(assembler.resp.valid & assembler.resp.ready),
            release.eq(Mux(lookup7, _popcount(hit7), 0)),
        ]
        m.d.comb += [
            queue_used.take.eq(admit & ~f2.update), queue_used.give.eq(popped),
            miss_used.take.eq(admit), miss_used.give.eq(unused + miss_popped),
            credit.take.eq(Mux(admit & ~f2.update & dynamic2, f2.lines, 0)), credit.give.eq(release + consumed),
        ]

        # Counters. A clear takes effect a cycle after the snapshot (registered: it reaches every counter), in
        # place of that cycle's old values, so the counts are as if cleared at once.
        counters = Signal(lay.counters)
        clear, cleared = Signal(name="clear"), Signal(name="cleared")
        base = Signal.like(counters)
        beat_in = self.mem.resp.valid & self.mem.resp.ready
        m.d.sync += cleared.eq(clear)
        m.d.comb += base.eq(Mux(cleared, 0, counters))
        m.d.sync += [counters.eq(base), counters.cycles.eq(base.cycles + 1),
                     counters.mem_lines.eq(base.mem_lines + beat_in)]
        # A lookup's counts are registered at F8 and added a cycle later (the popcounts and the 32-bit adds are
        # not in one cycle); `busy` covers F8, so a snapshot never misses them.
        count = range(banks + 1)
        inc = Signal(data.StructLayout({"lookups": 1, "static_hits": 1, "range_errors": 1, "line_hits": count,
                                        "line_misses": count, "evictions": count}), name="inc")
        m.d.sync += inc.eq(0)
        with m.If(lookup7):
            m.d.sync += [inc.lookups.eq(1), inc.static_hits.eq(f7.kind == _Kind.STATIC),
                         inc.range_errors.eq(f7.kind == _Kind.ZERO), inc.line_hits.eq(_popcount(hit7)),
                         inc.line_misses.eq(_popcount(missing)), inc.evictions.eq(_popcount(evict7 & missing))]
        m.d.sync += [getattr(counters, name).eq(getattr(base, name) + getattr(inc, name))
                     for name in ("lookups", "static_hits", "range_errors", "line_hits", "line_misses", "evictions")]

        # An UPDATE's on-chip writes, one cycle after F7 (the data side is idle: UPDATE waits for it).
        update = Signal(data.StructLayout({"static": unsigned(banks), "dynamic": unsigned(banks),
                                           "static_addr": range(max(g.static_rows, 2)),
                                           "dyn_addr": unsigned(max(ceil_log2(g.sets_per_bank * g.ways), 1))}))
        updating = f7_valid & f7.update
        m.d.sync += [
            update.static.eq(Mux(updating & (f7.kind == _Kind.STATIC), C(1, banks) << f7.offset, 0)),
            update.dynamic.eq(Mux(updating & dynamic7, hit7 & (C(1, banks) << f7.offset), 0)),
            update.static_addr.eq(f7.static_line >> bank_bits),
            update.dyn_addr.eq(f7.line[bank_bits:bank_bits + set_bits] * g.ways
                               + Array(ways7[b] for b in range(banks))[f7.offset] if g.ways else 0),
        ]
        self._cache_writes(m, storage, assembler, preloader, update, update_data)

        # --- Commands other than LOOKUP run at F1 once everything before them is done. `busy` is registered: it
        # lags a cycle, so it also counts any command completing at F1 in the cycle it is computed (whose effect
        # shows only in the next); nothing starts by itself after everything is done, so a non-busy cycle is
        # safe. ---
        busy, busy_next = Signal(init=1, name="busy"), Signal(name="busy_next")
        slices_idle = Signal()
        m.d.sync += busy.eq(busy_next)
        m.d.comb += busy_next.eq((f1_valid & f1_done) | skid_valid | f2_valid | f3_valid | f4_valid | f5_valid |
                            f6_valid | f7_valid | inc.lookups | (queue_used.count != 0) | ~queue.idle |
                            (miss_used.count != 0) | ~assembler.idle | ~pooler.idle | ~requant.idle |
                            (credit.count != 0) | (release != 0) | unused | preloader.busy | preloader.write.en |
                            flushing | ~slices_idle |
                            update.static.any() | update.dynamic.any())
        m.d.comb += self.idle.eq(~busy & ~f1_valid)
        counters_valid, counters_valid_next = Signal(name="counters_valid"), Signal(name="counters_valid_next")
        counters_out = Signal(lay.counters, reset_less=True)
        m.d.comb += [self.counters.valid.eq(counters_valid), self.counters.payload.eq(counters_out)]
        # No flush or preload running or being started (registered: a lookup after them waits a cycle more).
        quiet, quiet_next = Signal(name="quiet"), Signal(name="quiet_next")
        m.d.comb += quiet_next.eq(~flushing & ~preloader.busy & ~((f1_is.flush | f1_is.preload) & ~busy))
        m.d.sync += quiet.eq(quiet_next)
        # Every operation's condition directly from registers (one level of logic, not a priority chain).
        pass_lookup = f1_is.lookup & quiet & ~skid_valid
        pass_update = f1_is.update & ~busy & ~skid_valid
        snapshot = f1_is.counters & ~busy & ~counters_valid

        def completes(is_, quiet_, skid_, busy_, counters_valid_):
            """Whether the command in F1 completes (unknown operations are dropped)."""
            return ((is_.lookup & quiet_ & ~skid_) | (is_.update & ~busy_ & ~skid_) |
                    ((is_.config | is_.preload | is_.flush) & ~busy_) | (is_.counters & ~busy_ & ~counters_valid_) |
                    is_.unknown)

        # `f1_done` (whence `cmd.ready` and the enable of F1's registers) is a register: the same function of
        # the next states.
        m.d.comb += counters_valid_next.eq(Mux(snapshot, 1, Mux(self.counters.valid & self.counters.ready, 0,
                                                                  counters_valid)))
        m.d.sync += [counters_valid.eq(counters_valid_next),
                     f1_done.eq(completes(f1_is_next, quiet_next, ~f2_slice.ready_next, busy_next,
                                          counters_valid_next))]
        m.d.comb += [
            f1_pass.eq(pass_lookup | pass_update),
            cfg_write.en.eq(f1_is.config & ~busy),
            preloader.start.valid.eq(f1_is.preload & ~busy),
            clear.eq(snapshot & f1.arg.counters.clear),
        ]
        if g.ways:
            with m.If(f1_is.flush & ~busy):
                m.d.sync += flushing.eq(1)
        with m.If(snapshot):
            m.d.sync += counters_out.eq(counters)
        m.d.comb += [
            cfg_write.addr.eq(f1.table), cfg_write.data.eq(f1.arg.config),
            preloader.start.payload.mem_base.eq(cfg.mem_base),
            preloader.start.payload.static_base.eq(cfg.static_base),
            preloader.start.payload.lines.eq(cfg.static_rows << cfg.row_lines if g.static_rows else 0),
        ]

        # Memory: the preloader's reads, or the splitter's (misses and UPDATE write-throughs). Requests and
        # responses pass register slices (memory is off the unit); only the handshakes are switched, the response
        # data go to both.
        m.submodules.req = req = RegisterSlice(lay.memory.request)
        m.submodules.resp = resp = RegisterSlice(unsigned(width))
        m.d.comb += slices_idle.eq(req.idle & resp.idle)
        wiring.connect(m, req.o, wiring.flipped(self.mem.req))
        wiring.connect(m, wiring.flipped(self.mem.resp), resp.i)
        m.d.comb += [preloader.resp.payload.eq(resp.o.payload), assembler.resp.payload.eq(resp.o.payload),
                     req.i.payload.eq(Mux(preloader.busy, preloader.req.payload, splitter.req.payload))]
        with m.If(preloader.busy):
            m.d.comb += [req.i.valid.eq(preloader.req.valid), preloader.req.ready.eq(req.i.ready),
                         preloader.resp.valid.eq(resp.o.valid), resp.o.ready.eq(preloader.resp.ready)]
        with m.Else():
            m.d.comb += [req.i.valid.eq(splitter.req.valid), splitter.req.ready.eq(req.i.ready),
                         assembler.resp.valid.eq(resp.o.valid), resp.o.ready.eq(assembler.resp.ready)]
        return m

    def _addresses(self, m, f1, is_update, cfg, stage):
        """F1's arithmetic: where a LOOKUP's row (or an UPDATE's line) is, how many lines, what kind."""
        g = self.geometry
        banks = g.banks
        row_id = Mux(is_update, f1.arg.update.id, f1.arg.lookup.id)
        first = Signal(unsigned(g.addr_bits + g.bank_bits + 1))
        m.d.comb += first.eq((row_id << cfg.row_lines) + Mux(is_update, f1.arg.update.line, 0))
        in_range = row_id < cfg.rows
        static = in_range & (row_id < cfg.static_rows) if g.static_rows else C(0, 1)
        s1 = Signal(stage)
        lines = Signal(range(banks + 1))
        m.d.comb += [
            lines.eq(C(1, 1) << Mux(is_update, 0, cfg.row_lines)),
            s1.update.eq(is_update),
            s1.kind.eq(Mux(~in_range, _Kind.ZERO, Mux(static, _Kind.STATIC, _Kind.DYNAMIC))),
            s1.line.eq(cfg.mem_base + first),
            s1.static_line.eq(cfg.static_base + first),
            s1.lines.eq(lines),
            s1.bag.table.eq(f1.table), s1.bag.last.eq(f1.arg.lookup.last), s1.bag.end.eq(f1.arg.lookup.end),
            s1.bag.row_lines.eq(cfg.row_lines), s1.bag.m.eq(cfg.m), s1.bag.s.eq(cfg.s),
        ]
        return s1

    def _storage(self, m, assembler):
        """Table configuration, and per bank: static lines, dynamic lines, tag sets."""
        g, lay = self.geometry, self.layouts
        width = 8 * g.line_bytes
        m.submodules.tables = tables = Memory(shape=lay.table_config, depth=max(g.tables, 2), init=[])
        cfg_write = tables.write_port()
        ports = {"cfg_write": cfg_write, "cfg_read": tables.read_port(transparent_for=(cfg_write,)),
                 "static_wr": [], "dyn_wr": [], "tag_rd": [], "tag_wr": []}
        for b in range(g.banks):
            if g.static_rows:
                m.submodules[f"static{b}"] = ram = RegisteredRAM(width=width, depth=g.static_rows,
                                                                 input_registers=True)
                ports["static_wr"].append(_write_port(m, ram))
                m.d.comb += [ram.r_addr.eq(assembler.static_rd[b].addr), assembler.static_rd[b].data.eq(ram.r_data)]
            if g.ways:
                m.submodules[f"lines{b}"] = ram = RegisteredRAM(width=width, depth=g.sets_per_bank * g.ways,
                                                                input_registers=True)
                ports["dyn_wr"].append(_write_port(m, ram))
                m.d.comb += [ram.r_addr.eq(assembler.dyn_rd[b].addr), assembler.dyn_rd[b].data.eq(ram.r_data)]
                m.submodules[f"tags{b}"] = ram = RegisteredRAM(width=lay.tags.size, depth=g.sets_per_bank,
                                                               write_register=True)
                ports["tag_wr"].append(_write_port(m, ram, lay.tags))
                ports["tag_rd"].append((ram.r_addr, lay.tags(ram.r_data)))
        return ports

    def _cache_writes(self, m, storage, assembler, preloader, update, update_data):
        """Write ports of the caches: static lines from PRELOAD or UPDATE, dynamic lines from fills or UPDATE."""
        g = self.geometry
        for b in range(g.banks):
            if g.static_rows:
                port = storage["static_wr"][b]
                pre = preloader.write.en & (preloader.write.line[:g.bank_bits] == b if g.banks > 1 else 1)
                up = update.static[b]
                m.d.comb += [port.en.eq(up | pre),
                             port.addr.eq(Mux(up, update.static_addr, preloader.write.line >> g.bank_bits)),
                             port.data.eq(Mux(up, update_data, preloader.write.data))]
            if g.ways:
                port, fill, up = storage["dyn_wr"][b], assembler.fill[b], update.dynamic[b]
                m.d.comb += [port.en.eq(up | fill.en), port.addr.eq(Mux(up, update.dyn_addr, fill.addr)),
                             port.data.eq(Mux(up, update_data, fill.data))]

    def _tags(self, m, storage, stages, allocate, flushing, hit, evict, ways):
        """Tag sets: read at F2, out of the block RAM at F4, registered into F5, compared at F5, decided and
        rewritten at F6.

        The block RAM registers its writes, so the sets written by the five items ahead are still old in it. F5
        takes the set from the newest of the writes two to five items ahead (or from the block RAM) and compares its
        tags. If the item just
        ahead (deciding in F6 meanwhile) writes the same set, F6 starts from that write instead; it differs from
        what F5 compared only in the one way that item took, whose tag is known, so only "same tag as the item
        ahead" is needed. The single-cycle loop from one item's decision to the next one's is then: hit vector,
        victim, way chosen, new LRU order (about four LUT levels). The LRU order is one bit per pair of ways ("x
        is older than y")."""
        g, lay = self.geometry, self.layouts
        f2, f4, f5, f6 = stages
        banks, n_ways, bank_bits = g.banks, g.ways, g.bank_bits
        set_bits = ceil_log2(g.sets_per_bank)
        forwarded = 4    # writes two to five items ahead (the RAM registers its writes)

        def set_of(stage):
            return stage.line[bank_bits:bank_bits + set_bits]

        def tag_of(stage):
            return stage.line >> (bank_bits + set_bits)

        # The sets of the writes of the last cycles (those of item F6 had one cycle ago, two cycles ago, ...).
        written_sets = shift_register(m, set_of(f6), forwarded, name="written_set{}", first=0,
                                      shape=max(set_bits, 1), reset_less=True)
        # Decided at F4 for F5: is the set the one of the item ahead (F5 now, F6 then), or of the writes two to five
        # items ahead (F6 and the last three writes now); and at F5 for F6: the tag of the item ahead.
        same_a, same_tag = Signal(name="same_a"), Signal(name="same_tag")
        same = [Signal(name=f"same{k}") for k in range(forwarded)]
        m.d.sync += [same_a.eq(set_of(f4) == set_of(f5)), same[0].eq(set_of(f4) == set_of(f6)),
                     *(same[k].eq(set_of(f4) == written_sets[k - 1]) for k in range(1, forwarded)),
                     same_tag.eq(tag_of(f5) == tag_of(f6))]

        # Flush: walk the sets of every bank, writing "all invalid" (all-zero order bits: way w is older than every
        # way below it, so ways fill from the highest).
        flush_set = Signal(range(max(g.sets_per_bank, 2)))
        with m.If(flushing):
            m.d.sync += flush_set.eq(flush_set + 1)
            with m.If(flush_set == g.sets_per_bank - 1):
                m.d.sync += [flushing.eq(0), flush_set.eq(0)]

        pairs = [(x, y) for x in range(n_ways) for y in range(x + 1, n_ways)]

        def older(order, x, y):
            return order[pairs.index((x, y))] if x < y else ~order[pairs.index((y, x))]

        tag = tag_of(f6)
        for b in range(banks):
            (rd_addr, from_ram), wr = storage["tag_rd"][b], storage["tag_wr"][b]   # from_ram: at F4
            stored = Signal(lay.tags, name=f"stored{b}", reset_less=True)
            m.d.comb += rd_addr.eq(set_of(f2))
            m.d.sync += stored.eq(from_ram)
            # The writes: the one being decided (F6) and the last four.
            write = allocate & f6.active[b]
            new = Signal(lay.tags, name=f"new_tags{b}")
            chosen = Signal(n_ways, name=f"chosen{b}")
            wrote = shift_register(m, write, forwarded, name=f"wrote{{}}_{b}", first=0)
            sets = shift_register(m, new, forwarded, name=f"written{{}}_{b}", first=0, reset_less=True)
            chosen1 = Signal(n_ways, name=f"chosen1_{b}", reset_less=True)
            m.d.sync += chosen1.eq(chosen)

            # F6: the set as F5 compared it, and as the item sees it (the write of the item ahead, if that is this set).
            start6 = Signal(lay.tags, name=f"start{b}", reset_less=True)
            patch6 = Signal(name=f"patch{b}")
            early6 = Signal(n_ways, name=f"early_hits{b}", reset_less=True)
            current = Signal(lay.tags, name=f"current{b}")
            m.d.comb += current.eq(Mux(patch6, sets[0], start6))

            # F5: the set from the newest of the writes two to five items ahead or the block RAM, and the hits there.
            start5 = Signal(lay.tags, name=f"start5_{b}")
            choice = stored
            for k in reversed(range(forwarded)):
                choice = Mux(wrote[k] & same[k], sets[k], choice)
            m.d.comb += start5.eq(choice)
            m.d.sync += [start6.eq(start5), patch6.eq(write & same_a),
                         early6.eq(Cat(start5.valid[w] & (start5.tag[w] == tag_of(f5)) for w in range(n_ways)))]

            # F6: hits (the way the item ahead took holds its tag), victim (the way older than all others), the way
            # chosen, and the new set.
            hits = Signal(n_ways, name=f"hits{b}")
            victim = Signal(n_ways, name=f"victim{b}")
            order = current.older
            for w in range(n_ways):
                m.d.comb += [
                    hits[w].eq(Mux(patch6 & chosen1[w], same_tag, early6[w])),
                    victim[w].eq(Cat(C(1, 1), *(older(order, w, x) for x in range(n_ways) if x != w)).all()),
                ]
            m.d.comb += chosen.eq(Mux(hits.any(), hits, victim))
            for w in range(n_ways):
                m.d.comb += [new.valid[w].eq(current.valid[w] | chosen[w]),
                             new.tag[w].eq(Mux(chosen[w], tag, current.tag[w]))]
            for k, (x, y) in enumerate(pairs):
                m.d.comb += new.older[k].eq(chosen[y] | (~chosen[x] & order[k]))
            m.d.comb += [
                hit[b].eq(hits.any()),
                ways[b].eq(Cat(Cat(C(0, 1), *(chosen[w] for w in range(n_ways) if w >> k & 1)).any()
                               for k in range(len(ways[b])))),
                evict[b].eq((victim & current.valid).any()),
                wr.en.eq(write | flushing), wr.addr.eq(Mux(flushing, flush_set, set_of(f6))),
                wr.data.eq(Mux(flushing, 0, new)),
            ]


# --- Unit and memory together -----------------------------------------------------------------------------

class EmbeddingSystem(wiring.Component):
    """An :class:`EmbeddingUnit` with its memory, driven by one command stream (for simulation and boards).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    memory : str
        ``"model"``: :class:`~rpaccel.rtl.memory.MemoryModel` with the configuration's latency and bandwidth;
        ``"bram"``: :class:`~rpaccel.rtl.memory.BlockRAMMemory`.
    mem_lines : int, optional
        Lines of memory storage (default: the configuration's ``mem_bytes``).
    storage : str
        Storage of the memory model (``"memory"`` or ``"verilog"``, see :class:`~rpaccel.rtl.memory.MemoryModel`).

    Members
    -------
    cmd : In(stream.Signature(command))
        ``{mem, body}``: with ``mem``, ``body.mem`` is a memory request for the host port (a line write, or a
        read answered on ``mem_rsp``) executed once the unit is idle; otherwise ``body.unit`` is a unit command.
    pooled, counters
        The unit's outputs.
    mem_rsp : Out(stream.Signature(unsigned(8 * line_bytes)))
        Lines read by host memory requests.
    """

    @checked_init
    def __init__(self, config, *, memory="model", mem_lines=None, storage="memory"):
        if memory not in ("model", "bram"):
            raise ValueError(f"Memory must be 'model' or 'bram', not {memory!r}")
        self.config = config
        self.geometry = g = EmbeddingGeometry.from_config(config)
        self.layouts = lay = Layouts(g)
        self.memory_kind, self.storage = memory, storage
        self.mem_lines = mem_lines if mem_lines is not None else 1 << g.addr_bits
        if not isinstance(self.mem_lines, int) or self.mem_lines <= 0 or self.mem_lines & (self.mem_lines - 1) \
                or self.mem_lines > 1 << g.addr_bits:
            raise ValueError(f"Memory lines must be a power of two of at most {1 << g.addr_bits}, "
                             f"not {mem_lines!r}")
        if storage == "verilog":
            from .memory import STORAGE_VERILOG

            self.extra_verilog = STORAGE_VERILOG
        self.command = self.command_layout(lay)
        super().__init__({
            "cmd": In(stream.Signature(self.command)),
            "pooled": Out(stream.Signature(lay.pooled)),
            "counters": Out(stream.Signature(lay.counters)),
            "mem_rsp": Out(stream.Signature(unsigned(8 * g.line_bytes))),
        })

    @staticmethod
    def command_layout(layouts):
        """``{mem, body: {unit | mem}}``: the system's command for a unit with ``layouts``."""
        return data.StructLayout({"mem": 1, "body": data.UnionLayout({
            "unit": layouts.command, "mem": layouts.memory.request})})

    def elaborate(self, platform):
        m = Module()
        g, config = self.geometry, self.config
        m.submodules.unit = unit = EmbeddingUnit(config)
        common = {"lines": self.mem_lines, "line_bytes": g.line_bytes, "addr_bits": g.addr_bits,
                  "max_burst": g.max_burst}
        if self.memory_kind == "model":
            memory = MemoryModel(**common, latency=config.mem_latency_cycles,
                                 bytes_per_cycle=config.mem_bytes_per_cycle,
                                 queue_depth=max(16, g.max_outstanding), storage=self.storage,
                                 jitter=config.mem_latency_jitter)
        else:
            memory = BlockRAMMemory(**common)
        m.submodules.memory = memory
        wiring.connect(m, unit.mem, memory.port)
        wiring.connect(m, unit.pooled, wiring.flipped(self.pooled))
        wiring.connect(m, unit.counters, wiring.flipped(self.counters))
        wiring.connect(m, memory.host.resp, wiring.flipped(self.mem_rsp))
        c = self.cmd.payload
        m.d.comb += [
            unit.cmd.payload.eq(c.body.unit), unit.cmd.valid.eq(self.cmd.valid & ~c.mem),
            memory.host.req.payload.eq(c.body.mem), memory.host.req.valid.eq(self.cmd.valid & c.mem & unit.idle),
            self.cmd.ready.eq(Mux(c.mem, memory.host.req.ready & unit.idle, unit.cmd.ready)),
        ]
        return m
