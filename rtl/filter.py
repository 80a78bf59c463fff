"""The filter unit: the k best candidates of a query as a set, for k up to thousands, by radix selection.

A multi-stage pipeline's intermediate stage keeps the k best candidates of a query (RecPipe: 4,096 -> 512) and the
next stage only needs *which* they are, not their order. An insertion top-k (:mod:`rpaccel.rtl.topk`) costs a
comparator cell per kept candidate, about 160 LUTs each on the ECP5: 512 of them would not fit beside the rest of the
chip. :class:`FilterUnit` instead stores the query's ``(score, index)`` pairs in block RAM and selects by radix:

1. *Score passes*: four passes over the stored pairs, one per byte of the score (most significant first, the sign
   bit inverted so that unsigned order is numeric order); each builds a 256-bin histogram of that byte among the
   pairs whose higher bytes equal the prefix found so far, then scans the bins from the top until the k-th best is
   reached. The result is the k-th best score ``T`` and how many pairs of score ``T`` are to be kept.
2. *Index passes* (only when fewer pairs of score ``T`` are to be kept than there are): two passes over the index
   bytes, from the bottom (ties go to the lower index), giving the index ``I`` up to which ties are kept and how many
   pairs of ``(T, I)`` (repeated indices are allowed, as in :func:`rpaccel.numeric.topk`).
3. *Output pass*: every pair with a score above ``T``, or equal and an index below ``I``, or the first ones of
   ``(T, I)``, leaves in arrival order.

The kept set equals the candidates of ``rpaccel.numeric.topk(scores, k, indices)``; the unit puts them out in the
order they came in (for a stage that scored its candidates in index order, ascending indices). Two banks of storage
let the next query stream in while one is selected.

Timing, for a query of ``n`` pairs whose last arrived (no output stalls): two cycles to start; per pass ``n + 2``
cycles of reads and ``256`` of scan and one to turn (four passes, six with a partial tie, none when ``k >= n``);
then the output pass reads the ``n`` pairs again, a kept one leaving three cycles after its read. About
``5 n + 1,040`` cycles in all, against the hundreds of cycles per candidate that scoring takes on the MLP engine.

Histogram bins are LUT RAM read asynchronously and written synchronously, so one pair per cycle increments its bin
even when consecutive pairs hit the same bin; the scan reads each bin and clears it for the next pass.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS
from .lib.credit import CreditCounter
from .lib.queue import Queue

__all__ = ["FilterUnit", "filter_in_layout", "filter_out_layout"]

_BINS = 256
_SCORE_PASSES = ACC_BITS // 8


def filter_in_layout(capacity, index_bits=16):
    """``{score, index, last, k}``: one candidate; ``last`` and ``k`` (read with ``last``) close the query."""
    return data.StructLayout({"score": signed(ACC_BITS), "index": unsigned(index_bits), "last": 1,
                              "k": range(capacity + 1)})


def filter_out_layout(index_bits=16):
    """``{index, last, empty, error}``: one kept candidate's index; ``last`` on the query's final word. A query
    that keeps nothing (``k`` = 0) is one word with ``empty``; ``error`` (on the last word) says the query had more
    candidates than the unit holds and the extra ones were dropped."""
    return data.StructLayout({"index": unsigned(index_bits), "last": 1, "empty": 1, "error": 1})


class FilterUnit(wiring.Component):
    """Exact top-k selection as a set, in arrival order, for ``k`` up to ``capacity`` (see the module doc).

    Parameters
    ----------
    capacity : int
        Most candidates of one query (a power of two); ``k`` may be up to ``capacity`` too.
    index_bits : int
        Width of a candidate index.

    Members
    -------
    i : In(stream.Signature(filter_in_layout(capacity, index_bits)))
    o : Out(stream.Signature(filter_out_layout(index_bits)))
    busy : Out(1)
        A query is held (being received, selected or put out).
    idle : Out(1)
        Nothing held and nothing in flight.
    """

    def __init__(self, capacity, *, index_bits=16):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 2 or capacity & (capacity - 1):
            self._MustUse__silence = True
            raise ValueError(f"Filter capacity must be a power of two of at least 2, not {capacity!r}")
        if not isinstance(index_bits, int) or isinstance(index_bits, bool) or not 1 <= index_bits <= 16:
            self._MustUse__silence = True
            raise ValueError(f"Filter index bits must be an integer in [1, 16], not {index_bits!r}")
        self.capacity, self.index_bits = capacity, index_bits
        super().__init__({"i": In(stream.Signature(filter_in_layout(capacity, index_bits))),
                          "o": Out(stream.Signature(filter_out_layout(index_bits))),
                          "busy": Out(1), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cap, ib = self.capacity, self.index_bits
        addr_bits = (cap - 1).bit_length()
        pair = data.StructLayout({"key": unsigned(ACC_BITS), "index": unsigned(ib)})
        m.submodules.store = store = Memory(shape=pair, depth=2 * cap, init=[])
        write = store.write_port()
        read = store.read_port()      # synchronous: data the cycle after the address
        m.submodules.bins = bins = Memory(shape=unsigned(addr_bits + 1), depth=_BINS, init=[])
        bin_write = bins.write_port()
        bin_read = bins.read_port(domain="comb")

        # Per bank: a query is stored and waits for selection.
        full = Signal(2)
        count = Signal(range(cap + 1))
        bank_n = [Signal(range(cap + 1), name=f"bank{b}_n") for b in range(2)]
        bank_k = [Signal(range(cap + 1), name=f"bank{b}_k") for b in range(2)]
        bank_error = Signal(2)
        overflow = Signal()

        # Input side.
        in_bank = Signal()
        c = self.i.payload
        m.d.comb += self.i.ready.eq(~full.bit_select(in_bank, 1))
        m.d.comb += [write.addr.eq(Cat(count[:addr_bits], in_bank)),
                     write.data.key.eq(c.score.as_unsigned() ^ (1 << (ACC_BITS - 1))), write.data.index.eq(c.index)]
        with m.If(self.i.valid & self.i.ready):
            room = count != cap
            m.d.comb += write.en.eq(room)
            with m.If(c.last):
                n = Mux(room, count + 1, count)
                for b in range(2):
                    with m.If(in_bank == b):
                        m.d.sync += [bank_n[b].eq(n), bank_k[b].eq(c.k),
                                     bank_error[b].eq(overflow | ~room)]
                m.d.sync += [full.bit_select(in_bank, 1).eq(1), in_bank.eq(~in_bank), count.eq(0), overflow.eq(0)]
            with m.Elif(room):
                m.d.sync += count.eq(count + 1)
            with m.Else():
                m.d.sync += overflow.eq(1)

        # Selection side.
        sel = Signal()
        n, k = Signal(range(cap + 1)), Signal(range(cap + 1))
        error = Signal()
        prefix = Signal(ACC_BITS)           # the score bytes found so far, in place
        digit_at = Signal(range(_SCORE_PASSES + 2))   # score passes done; then index passes done (from 0)
        left = Signal(range(cap + 1))       # candidates still to keep among those matching the prefix
        threshold_index = Signal(ib)
        ties_all = Signal()                 # keep every candidate of score T
        take_all = Signal()                 # k >= n: keep every candidate
        at_i = Signal(range(cap + 1))       # of (T, I), how many are kept
        index_pass = Signal()

        # The pass pipeline: address -> (RAM) -> stage 1 (pair, valid) -> histogram update.
        addr = Signal(range(cap + 1))
        issue = Signal()
        m.d.comb += read.addr.eq(Cat(addr[:addr_bits], sel))
        valid1 = Signal()
        m.d.sync += valid1.eq(issue)
        item = read.data

        byte = Signal(8)
        match = Signal()
        # A score pass counts candidates whose higher bytes equal the prefix's (pass p looks at byte 3 - p); the
        # first index pass those of score T (by the index's high byte), the second also of the high byte found.
        with m.Switch(digit_at):
            for p in range(_SCORE_PASSES):
                with m.Case(p):
                    lo = (_SCORE_PASSES - 1 - p) * 8
                    m.d.comb += [byte.eq(item.key[lo:lo + 8]),
                                 match.eq(item.key[lo + 8:] == prefix[lo + 8:] if p else 1)]
            with m.Case(_SCORE_PASSES):
                m.d.comb += [byte.eq(item.index[8:] if ib > 8 else 0), match.eq(item.key == prefix)]
            with m.Default():
                high_ok = (item.index[8:] == threshold_index[8:]) if ib > 8 else 1
                m.d.comb += [byte.eq(item.index[:8]), match.eq((item.key == prefix) & high_ok)]

        # Histogram: bin_read is asynchronous, so a bin written in one cycle is read updated in the next.
        scan_bin = Signal(9)
        cumulative = Signal(range(cap + 1))
        found = Signal()
        scanning = Signal()
        hist_bin = Mux(scanning, scan_bin[:8], byte)
        m.d.comb += [bin_read.addr.eq(hist_bin), bin_write.addr.eq(hist_bin)]
        counting = Signal()
        with m.If(valid1 & match & counting):
            m.d.comb += [bin_write.en.eq(1), bin_write.data.eq(bin_read.data + 1)]

        # Output pass.
        m.submodules.out_queue = out_queue = Queue(data.Layout.cast(filter_out_layout(ib)).size, depth=4,
                                                   register="read")
        m.submodules.out_credit = credit = CreditCounter(4, max_give=2)
        out_word = Signal(filter_out_layout(ib))
        m.d.comb += [self.o.valid.eq(out_queue.r_rdy), self.o.payload.eq(out_queue.r_data),
                     out_queue.r_en.eq(self.o.ready)]
        emitted = Signal(range(cap + 1))
        taken_at_i = Signal(range(cap + 1))
        outputting = Signal()
        keep = Signal()
        key_t = prefix
        with m.If(take_all):
            m.d.comb += keep.eq(1)
        with m.Elif(item.key > key_t):
            m.d.comb += keep.eq(1)
        with m.Elif(item.key == key_t):
            m.d.comb += keep.eq(ties_all | (item.index < threshold_index)
                                | ((item.index == threshold_index) & (taken_at_i < at_i)))
        final = Signal()
        m.d.comb += [out_word.index.eq(item.index), out_word.error.eq(error & final), out_word.last.eq(final)]
        with m.If(valid1 & outputting & keep):
            m.d.comb += [out_queue.w_en.eq(1), out_queue.w_data.eq(out_word)]
            m.d.sync += emitted.eq(emitted + 1)
            with m.If(~take_all & ~ties_all & (item.key == key_t) & (item.index == threshold_index)):
                m.d.sync += taken_at_i.eq(taken_at_i + 1)
        # A read that keeps nothing gives its place back at once; a word put out gives it back when it leaves.
        m.d.comb += credit.give.eq((self.o.valid & self.o.ready) + (valid1 & outputting & ~keep))
        kept_total = Mux(take_all, n, k)
        m.d.comb += final.eq(emitted + 1 == kept_total)

        with m.FSM(name="select"):
            with m.State("WAIT"), m.If(full.bit_select(sel, 1)):
                for b in range(2):
                    with m.If(sel == b):
                        m.d.sync += [n.eq(bank_n[b]), k.eq(bank_k[b]), error.eq(bank_error[b])]
                m.next = "START"
            with m.State("START"):
                m.d.sync += [prefix.eq(0), digit_at.eq(0), left.eq(k), index_pass.eq(0), ties_all.eq(0),
                             take_all.eq(k >= n), threshold_index.eq(0), at_i.eq(0), taken_at_i.eq(0),
                             emitted.eq(0), addr.eq(0)]
                with m.If((n == 0) | (k == 0)):
                    m.next = "EMPTY"
                with m.Elif(k >= n):
                    m.next = "OUTPUT"
                with m.Else():
                    m.next = "COUNT"
            with m.State("COUNT"):
                m.d.comb += [issue.eq(addr != n), counting.eq(1)]
                with m.If(issue):
                    m.d.sync += addr.eq(addr + 1)
                with m.Elif(~valid1):
                    m.d.sync += [scan_bin.eq(Mux(index_pass, 0, _BINS - 1)), cumulative.eq(0), found.eq(0),
                                 scanning.eq(1)]
                    m.next = "SCAN"
            with m.State("SCAN"):
                # Score passes scan down from bin 255, index passes up from bin 0; every bin is cleared.
                value = bin_read.data
                m.d.comb += [bin_write.en.eq(1), bin_write.data.eq(0)]
                with m.If(~found & (cumulative + value >= left)):
                    m.d.sync += [found.eq(1), left.eq(left - cumulative)]
                    with m.If(index_pass):
                        with m.If(digit_at == _SCORE_PASSES):
                            if ib > 8:
                                m.d.sync += threshold_index[8:].eq(scan_bin[:8])
                        with m.Else():
                            m.d.sync += threshold_index[:8].eq(scan_bin[:8])
                    with m.Else():
                        for p in range(_SCORE_PASSES):
                            with m.If(digit_at == p):
                                lo = (_SCORE_PASSES - 1 - p) * 8
                                m.d.sync += prefix[lo:lo + 8].eq(scan_bin[:8])
                    m.d.sync += at_i.eq(value)      # bin size of the found digit: pairs equal so far
                m.d.sync += cumulative.eq(cumulative + value)
                last_bin = Mux(index_pass, scan_bin == _BINS - 1, scan_bin == 0)
                with m.If(last_bin):
                    m.d.sync += [scanning.eq(0), addr.eq(0), digit_at.eq(digit_at + 1)]
                    m.next = "TURN"
                with m.Else():
                    m.d.sync += scan_bin.eq(Mux(index_pass, scan_bin + 1, scan_bin - 1))
            with m.State("TURN"):
                # After the last score pass: keep all ties if as many are left to keep as share score T.
                with m.If(~index_pass & (digit_at == _SCORE_PASSES)):
                    with m.If(left == at_i):
                        m.d.sync += ties_all.eq(1)
                        m.next = "OUTPUT"
                    with m.Else():
                        m.d.sync += index_pass.eq(1)
                        m.next = "COUNT"
                with m.Elif(index_pass & (digit_at == _SCORE_PASSES + 2)):
                    m.d.sync += [at_i.eq(left), taken_at_i.eq(0)]
                    m.next = "OUTPUT"
                with m.Else():
                    m.next = "COUNT"
            with m.State("OUTPUT"):
                m.d.comb += [credit.take.eq(issue), issue.eq((addr != n) & credit.room)]
                with m.If(issue):
                    m.d.sync += addr.eq(addr + 1)
                m.d.comb += outputting.eq(1)
                with m.If((addr == n) & ~valid1):
                    m.next = "DONE"
            with m.State("EMPTY"):
                # The empty word takes a credit only with room, as every other word does.
                m.d.comb += [credit.take.eq(credit.room)]
                with m.If(credit.room):
                    empty = Signal(filter_out_layout(ib))
                    m.d.comb += [empty.last.eq(1), empty.empty.eq(1), empty.error.eq(error),
                                 out_queue.w_en.eq(1), out_queue.w_data.eq(empty)]
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += [full.bit_select(sel, 1).eq(0), sel.eq(~sel)]
                m.next = "WAIT"
        # `outputting` lasts while OUTPUT's last reads come back (the FSM leaves OUTPUT only after them).
        m.d.comb += [self.busy.eq(full.any() | (count != 0)),
                     self.idle.eq(~full.any() & (count == 0) & ~out_queue.r_rdy)]
        return m
