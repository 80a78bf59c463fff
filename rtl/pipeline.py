"""Pipeline registers between blocks: a stream register slice."""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice"]


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
