"""A stream FIFO with a nested-layout payload: a design for testing the stream drivers themselves."""

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out


class Item(data.Struct):
    tag: unsigned(5)
    values: data.ArrayLayout(signed(7), 3)


class StreamFIFO(wiring.Component):
    """``depth``-entry FIFO of :class:`Item` between stream ports ``i`` and ``o``."""

    i: In(stream.Signature(Item))
    o: Out(stream.Signature(Item))

    def __init__(self, depth=4):
        self.depth = depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = queue = fifo.SyncFIFOBuffered(width=Item.as_shape().size, depth=self.depth)
        m.d.comb += [
            queue.w_stream.payload.eq(self.i.payload),
            queue.w_stream.valid.eq(self.i.valid),
            self.i.ready.eq(queue.w_stream.ready),
            self.o.payload.eq(queue.r_stream.payload),
            self.o.valid.eq(queue.r_stream.valid),
            queue.r_stream.ready.eq(self.o.ready),
        ]
        return m


def random_items(rng, count):
    return [{"tag": int(rng.integers(0, 32)), "values": [int(v) for v in rng.integers(-64, 64, 3)]}
            for _ in range(count)]
