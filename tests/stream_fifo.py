"""A stream FIFO with a nested-layout payload: a design for testing the stream drivers themselves."""

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation


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


def pass_through(dut, items, in_pause, out_pause, after=None):
    """Send ``items`` through ``dut.i`` and receive as many from ``dut.o`` (seeded pauses on both sides) in the
    Amaranth simulator; ``(received, cycles the sink took, after(ctx) one cycle after the last item or None)``."""
    got, cycles, extra = [], 0, []

    async def send(ctx):
        await StreamSource(dut.i, pause=in_pause, seed=1).send(ctx, items)

    async def receive(ctx):
        nonlocal cycles
        sink = StreamSink(dut.o, pause=out_pause, seed=2)
        got.extend(await sink.receive(ctx, len(items)))
        cycles = sink.cycles
        if after is not None:
            await ctx.tick()
            extra.append(after(ctx))

    run_simulation(dut, [send, receive])
    return got, cycles, extra[0] if extra else None
