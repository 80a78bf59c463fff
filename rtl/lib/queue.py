"""The queue: a synchronous FIFO in LUT RAM with one register stage, in front of its storage or behind it."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .select import replica

__all__ = ["Queue"]

#: Where a :class:`Queue` has its register stage.
REGISTERS = ("write", "read")


class Queue(wiring.Component):
    """Synchronous FIFO in LUT RAM with one register stage, in front of its storage or behind it.

    Either way an entry can be read two cycles after its write (one more than
    :class:`amaranth.lib.fifo.SyncFIFO`), one write and one read per cycle; the ports are ``SyncFIFO``'s
    (``r_data`` is valid while ``r_rdy``).

    ``register="write"``: the word is cut into slices (``widths``), each a memory of its own with copies of the
    pointers, the write enable and its part of the write data in registers of its own, which the placer can put
    next to the slice. A wide FIFO whose bits go to places far apart (the columns of a result vector, each to its
    own post-processor) is placed spread out, and one read or write pointer would then have to reach every
    storage cell across the die. The write lands a cycle after it is accepted; ``r_data`` is read asynchronously.

    ``register="read"``: the write goes straight into the storage and the head of the queue is a register
    (``r_data`` comes from flip-flops, for a queue whose output leaves the block). One slice.

    Parameters
    ----------
    widths : int or sequence of int
        Width of the word, or of each slice; the word is their concatenation, first slice in the low bits.
    depth : int
        Entries, at least 2.
    register : str
        ``"write"`` (default) or ``"read"``.

    Members
    -------
    w_data : In(sum(widths)), w_en : In(1), w_rdy : Out(1)
        Write side, as ``SyncFIFO``'s.
    r_data : Out(sum(widths)), r_en : In(1), r_rdy : Out(1)
        Read side, as ``SyncFIFO``'s.
    level : Out(range(depth + 1))
        Entries accepted and not yet read (including one still being written).
    """

    def __init__(self, widths, *, depth, register="write"):
        if isinstance(widths, int) and not isinstance(widths, bool):
            widths = [widths]
        error = None
        if (not isinstance(widths, (list, tuple)) or not widths
                or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)):
            error = TypeError(f"Queue widths must be a positive integer or a non-empty list of them, not {widths!r}")
        elif not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
            error = ValueError(f"Queue depth must be an integer of at least 2, not {depth!r}")
        elif register not in REGISTERS:
            error = ValueError(f"Queue register must be one of {', '.join(REGISTERS)}, not {register!r}")
        elif register == "read" and len(widths) > 1:
            error = ValueError(f"A queue with register='read' has one slice, not widths {list(widths)!r}")
        if error is not None:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise error
        self.widths, self.depth, self.register = tuple(widths), depth, register
        width = sum(widths)
        super().__init__({"w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
                          "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1), "level": Out(range(depth + 1))})

    def _incr(self, pointer):
        return Mux(pointer == self.depth - 1, 0, pointer + 1)

    def elaborate(self, platform):
        m = Module()
        do_write, do_read = Signal(), Signal()
        m.d.comb += [
            self.w_rdy.eq(self.level != self.depth),
            do_write.eq(self.w_en & self.w_rdy),
            do_read.eq(self.r_en & self.r_rdy),
        ]
        m.d.sync += self.level.eq(self.level + do_write - do_read)
        if self.register == "write":
            self._write_registered(m, do_write, do_read)
        else:
            self._read_registered(m, do_write)
        return m

    def _write_registered(self, m, do_write, do_read):
        depth = self.depth
        # `level` counts what is accepted (for w_rdy); `filled` what has landed in the slices (for r_rdy).
        filled = Signal(range(depth + 1))
        landing = Signal()  # a write accepted last cycle lands in this cycle
        w_ptr, r_ptr = Signal(range(depth)), Signal(range(depth))
        r_next = Signal.like(r_ptr)
        m.d.comb += [self.r_rdy.eq(filled != 0), r_next.eq(Mux(do_read, self._incr(r_ptr), r_ptr))]
        m.d.sync += [filled.eq(filled + landing - do_read), landing.eq(do_write), r_ptr.eq(r_next)]
        with m.If(do_write):
            m.d.sync += w_ptr.eq(self._incr(w_ptr))

        low, parts = 0, []
        for k, width in enumerate(self.widths):
            memory = Memory(shape=width, depth=depth, init=[])
            m.submodules[f"slice{k}"] = memory
            write, read = memory.write_port(), memory.read_port(domain="comb")
            # The write: enable, address and data registered per slice (no reset: a write that lands during a
            # reset goes to an entry that is not counted). The read address: a copy of the read pointer's next
            # value, so equal to it in every cycle (reset with it).
            we = replica(m, do_write, name=f"slice{k}_we", reset_less=True)
            w_addr = replica(m, w_ptr, name=f"slice{k}_w_addr", reset_less=True)
            w_data = Signal(width, name=f"slice{k}_w_data", reset_less=True)
            r_addr = replica(m, r_next, name=f"slice{k}_r_addr")
            m.d.sync += w_data.eq(self.w_data[low:low + width])
            m.d.comb += [write.en.eq(we), write.addr.eq(w_addr), write.data.eq(w_data), read.addr.eq(r_addr)]
            parts.append(read.data)
            low += width
        m.d.comb += self.r_data.eq(Cat(*parts))

    def _read_registered(self, m, do_write):
        depth, width = self.depth, sum(self.widths)
        m.submodules.storage = storage = Memory(shape=width, depth=depth, init=[])
        write, read = storage.write_port(), storage.read_port(domain="comb")
        produce, consume = Signal(range(depth), name="produce"), Signal(range(depth), name="consume")
        stored = Signal(range(depth + 1))   # entries in the storage (not in the head)
        head = Signal(width, reset_less=True)
        head_valid = Signal()
        load = (stored != 0) & (~head_valid | self.r_en)
        m.d.comb += [write.en.eq(do_write), write.addr.eq(produce), write.data.eq(self.w_data),
                     read.addr.eq(consume), self.r_rdy.eq(head_valid), self.r_data.eq(head)]
        with m.If(do_write):
            m.d.sync += produce.eq(self._incr(produce))
        with m.If(load):
            m.d.sync += [consume.eq(self._incr(consume)), head.eq(read.data), head_valid.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += head_valid.eq(0)
        m.d.sync += stored.eq(stored + do_write - load)
