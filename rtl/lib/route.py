"""Order-directed streams: a demultiplexer and a multiplexer steered by a stream of route entries.

Each route entry ``{port, count}`` says "the next ``count`` transfers go to (or come from) ``port``". A unit that
knows the order of its work ahead of the data (a controller issuing instructions to lanes, an arbiter granting
requests) writes the entries; the data then follows without tags of its own.
"""

from amaranth.hdl import Array, Cat, Module, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RouteDemux", "RouteMux", "route_layout"]


def route_layout(n, count_bits=16):
    """The layout of a route entry: ``port`` (``range(n)``) and ``count`` (``unsigned(count_bits)``)."""
    return data.StructLayout({"port": range(n), "count": unsigned(count_bits)})


def _check(kind, shape, n, count_bits):
    """The parameter checks of both components (``kind`` names the component in the messages)."""
    try:
        Shape.cast(shape)
    except TypeError:
        return TypeError(f"{kind} payload must be a shape, not {shape!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return ValueError(f"{kind} port count must be a positive integer, not {n!r}")
    if not isinstance(count_bits, int) or isinstance(count_bits, bool) or count_bits < 1:
        return ValueError(f"{kind} count bits must be a positive integer, not {count_bits!r}")
    return None


def _entry(m, route, count_bits, transfer):
    """The route entry being served, in registers: ``(port, active)``, ``active`` while transfers of it remain.

    ``transfer`` is the cycle's data transfer. The next entry is taken when none is active or in the cycle of the
    current one's last transfer (``last``, a register), so consecutive entries leave no idle cycle between them;
    an entry with ``count`` 0 is taken and dropped. ``route.ready`` depends on registers and ``transfer`` only.
    """
    port = Signal(route.payload.port.shape(), name="port")
    left = Signal(count_bits, name="left")
    active, last = Signal(name="active"), Signal(name="last")
    m.d.comb += route.ready.eq(~active | (last & transfer))
    count = route.payload.count
    with m.If(route.valid & route.ready):
        m.d.sync += [port.eq(route.payload.port), left.eq(count), active.eq(count != 0), last.eq(count == 1)]
    with m.Elif(transfer):
        m.d.sync += [left.eq(left - 1), active.eq(~last), last.eq(left == 2)]
    return port, active


class RouteDemux(wiring.Component):
    """Stream demultiplexer steered by route entries: ``count`` transfers of ``i`` to ``o[port]`` per entry.

    Entries are served in order; an entry with ``count`` 0 is skipped. One transfer per cycle, also across
    entries (the next entry is taken in the cycle of the current one's last transfer). The entry is held in
    registers, so ``i.ready`` is the selected ``o[port].ready`` through one multiplexer (gated by a register), and
    ``route.ready`` is a function of registers and the cycle's transfer. ``o[k].payload`` is ``i.payload`` for
    every ``k``; only the selected output is valid.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    n : int
        Number of outputs.
    count_bits : int
        Width of a route entry's ``count``.

    Members
    -------
    route : In(stream.Signature(route_layout(n, count_bits)))
        Route entries ``{port, count}``.
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape)).array(n)
    """

    def __init__(self, shape, n, count_bits=16):
        error = _check("Route demultiplexer", shape, n, count_bits)
        if error is not None:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise error
        self.n, self.count_bits = n, count_bits
        super().__init__({"route": In(stream.Signature(route_layout(n, count_bits))),
                          "i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)).array(n)})

    def elaborate(self, platform):
        m = Module()
        transfer = Signal()
        port, active = _entry(m, self.route, self.count_bits, transfer)
        readies = Array(o.ready for o in self.o)
        m.d.comb += [self.i.ready.eq(active & readies[port]), transfer.eq(self.i.valid & self.i.ready)]
        for k, o in enumerate(self.o):
            m.d.comb += [o.valid.eq(active & (port == k) & self.i.valid), o.payload.eq(self.i.payload)]
        return m


class RouteMux(wiring.Component):
    """Stream multiplexer steered by route entries: ``count`` transfers from ``i[port]`` to ``o`` per entry.

    Entries are served in order; an entry with ``count`` 0 is skipped. One transfer per cycle, also across
    entries (the next entry is taken in the cycle of the current one's last transfer). The entry is held in
    registers: ``o.valid`` and ``o.payload`` are the selected input's through one multiplexer, ``i[k].ready`` is
    ``o.ready`` gated by a register, and ``route.ready`` is a function of registers and the cycle's transfer.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    n : int
        Number of inputs.
    count_bits : int
        Width of a route entry's ``count``.

    Members
    -------
    route : In(stream.Signature(route_layout(n, count_bits)))
        Route entries ``{port, count}``.
    i : In(stream.Signature(shape)).array(n)
    o : Out(stream.Signature(shape))
    """

    def __init__(self, shape, n, count_bits=16):
        error = _check("Route multiplexer", shape, n, count_bits)
        if error is not None:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise error
        self.n, self.count_bits = n, count_bits
        super().__init__({"route": In(stream.Signature(route_layout(n, count_bits))),
                          "i": In(stream.Signature(shape)).array(n), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        transfer = Signal()
        port, active = _entry(m, self.route, self.count_bits, transfer)
        valids = Cat(i.valid for i in self.i)
        payloads = Array(Value.cast(i.payload) for i in self.i)
        m.d.comb += [self.o.valid.eq(active & valids.bit_select(port, 1)), self.o.payload.eq(payloads[port]),
                     transfer.eq(self.o.valid & self.o.ready)]
        for k, i in enumerate(self.i):
            m.d.comb += i.ready.eq(active & (port == k) & self.o.ready)
        return m
