"""The stream register slice."""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """Two-entry stream register slice: ``i.ready`` is a register and ``o`` comes from registers, so nothing
    combinational passes between its two sides, and it still passes one transfer per cycle.

    Put between two blocks that may be placed apart, it cuts the paths from one block's stream logic into the
    other's (valid and payload forward, ready backward) at the cost of one cycle of latency. As a skid buffer, it
    lets a producer register its own decision to send: ``ready_next`` is what ``i.ready`` will be in the next
    cycle, a function of this cycle's handshakes.

    Parameters
    ----------
    shape : shape-like
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    clear : In(1)
        Drop what the slice holds (at the end of the cycle; a transfer on ``i`` in that cycle is dropped too).
        Unconnected, it is low.
    ready_next : Out(1)
        ``i.ready`` of the next cycle.
    idle : Out(1)
        The slice holds nothing.
    """

    def __init__(self, shape):
        try:
            Shape.cast(shape)
        except TypeError:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise TypeError(f"Register slice payload must be a shape, not {shape!r}") from None
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)), "clear": In(1),
                          "ready_next": Out(1), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        shape = self.i.payload.shape()
        main, spare = Signal(shape, reset_less=True, name="main"), Signal(shape, reset_less=True, name="spare")
        main_valid, spare_valid = Signal(name="main_valid"), Signal(name="spare_valid")
        spare_next = Signal(name="spare_valid_next")
        free = ~main_valid | self.o.ready    # the main register can be refilled this cycle
        m.d.comb += [self.i.ready.eq(~spare_valid), self.o.valid.eq(main_valid), self.o.payload.eq(main),
                     self.idle.eq(~main_valid & ~spare_valid),
                     spare_next.eq(~self.clear & ~free & (spare_valid | self.i.valid)),
                     self.ready_next.eq(~spare_next)]
        m.d.sync += spare_valid.eq(spare_next)
        # The data registers' enables depend on registers and o.ready only; i.valid sets the flags.
        with m.If(~spare_valid):
            m.d.sync += spare.eq(self.i.payload)
        with m.If(free):
            m.d.sync += [main.eq(Mux(spare_valid, spare, self.i.payload)), main_valid.eq(spare_valid | self.i.valid)]
        with m.If(self.clear):
            m.d.sync += main_valid.eq(0)
        return m
