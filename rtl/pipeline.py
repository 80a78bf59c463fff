"""Pipeline registers between blocks: a stream register slice, and a FIFO whose storage is cut into slices."""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .select import replica

__all__ = ["RegisterSlice", "SlicedFIFO"]


class RegisterSlice(wiring.Component):
    """Two-entry stream register slice: ``i.ready`` is a register and ``o`` comes from registers, so nothing
    combinational passes between its two sides, and it still passes one transfer per cycle.

    Put between two blocks that may be placed apart, it cuts the paths from one block's stream logic into the
    other's (valid and payload forward, ready backward) at the cost of one cycle of latency.

    Parameters
    ----------
    shape : shape-like
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    idle : Out(1)
        The slice holds nothing.
    """

    def __init__(self, shape):
        try:
            Shape.cast(shape)
        except TypeError:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise TypeError(f"Register slice payload must be a shape, not {shape!r}") from None
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        shape = self.i.payload.shape()
        main, spare = Signal(shape, reset_less=True, name="main"), Signal(shape, reset_less=True, name="spare")
        main_valid, spare_valid = Signal(name="main_valid"), Signal(name="spare_valid")
        free = ~main_valid | self.o.ready
        m.d.comb += [self.i.ready.eq(~spare_valid), self.o.valid.eq(main_valid), self.o.payload.eq(main),
                     self.idle.eq(~main_valid & ~spare_valid)]
        # The data registers' enables depend on registers and o.ready only; i.valid sets the flags.
        with m.If(~spare_valid):
            m.d.sync += spare.eq(self.i.payload)
        with m.If(free):
            m.d.sync += [main.eq(Mux(spare_valid, spare, self.i.payload)), main_valid.eq(spare_valid | self.i.valid),
                         spare_valid.eq(0)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += spare_valid.eq(1)
        return m


class SlicedFIFO(wiring.Component):
    """Synchronous FIFO whose storage is cut into slices, each addressed and written from registers of its own.

    A wide FIFO of LUT RAM whose bits go to places far apart (the columns of a result vector, each to its own
    post-processor) is placed spread out, and one read or write pointer then has to reach every storage cell
    across the die. Here each slice of the word (``widths``) is a memory of its own with copies of the
    pointers, the write enable and its part of the write data in registers of its own, which the placer can
    put next to the slice. The write lands a cycle after it is accepted, so an entry can be read two cycles
    after its write (one more than :class:`amaranth.lib.fifo.SyncFIFO`); reads are as in ``SyncFIFO``
    (``r_data`` is valid while ``r_rdy``, asynchronously read).

    Parameters
    ----------
    widths : sequence of int
        Width of each slice; the word is their concatenation, first slice in the low bits.
    depth : int
        Entries, at least 2.

    Members
    -------
    w_data : In(sum(widths)), w_en : In(1), w_rdy : Out(1)
        Write side, as ``SyncFIFO``'s.
    r_data : Out(sum(widths)), r_en : In(1), r_rdy : Out(1)
        Read side, as ``SyncFIFO``'s.
    level : Out(range(depth + 1))
        Entries accepted and not yet read (including one still being written).
    """

    def __init__(self, widths, *, depth):
        if (not isinstance(widths, (list, tuple)) or not widths
                or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)):
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise TypeError(f"Sliced FIFO widths must be a non-empty list of positive integers, not {widths!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
            self._MustUse__silence = True
            raise ValueError(f"Sliced FIFO depth must be an integer of at least 2, not {depth!r}")
        self.widths, self.depth = tuple(widths), depth
        width = sum(widths)
        super().__init__({"w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
                          "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1), "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        depth = self.depth

        def incr(pointer):
            return Mux(pointer == depth - 1, 0, pointer + 1)

        # `level` counts what is accepted (for w_rdy); `filled` what has landed in the slices (for r_rdy).
        filled = Signal(range(depth + 1))
        landing = Signal()  # a write accepted last cycle lands in this cycle
        w_ptr, r_ptr = Signal(range(depth)), Signal(range(depth))
        r_next = Signal.like(r_ptr)
        do_write, do_read = Signal(), Signal()
        m.d.comb += [
            self.w_rdy.eq(self.level != depth),
            self.r_rdy.eq(filled != 0),
            do_write.eq(self.w_en & self.w_rdy),
            do_read.eq(self.r_en & self.r_rdy),
            r_next.eq(Mux(do_read, incr(r_ptr), r_ptr)),
        ]
        m.d.sync += [
            self.level.eq(self.level + do_write - do_read),
            filled.eq(filled + landing - do_read),
            landing.eq(do_write),
            r_ptr.eq(r_next),
        ]
        with m.If(do_write):
            m.d.sync += w_ptr.eq(incr(w_ptr))

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
        return m
