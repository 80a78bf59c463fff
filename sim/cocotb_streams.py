"""Stream drivers for cocotb: a source with random idle cycles, a sink with random back-pressure.

The twins of :mod:`rpaccel.sim.streams` for a design running in a cocotb simulator (Verilator). A stream port
``name`` of an Amaranth component appears in its Verilog as ``name__valid``, ``name__ready`` and
``name__payload``; the payload is packed and unpacked through the stream's shape, so benches never slice bits.

Handshakes are decided in the ``ReadOnly`` phase of each cycle, after combinational logic has settled, so a
``ready`` that depends combinationally on ``valid`` is handled correctly.
"""

from cocotb.triggers import ReadOnly, RisingEdge

from ..host.driver.codec import codec
from .streams import pauses

__all__ = ["StreamSink", "StreamSource"]


def _port(dut, name, member):
    try:
        return getattr(dut, f"{name}__{member}")
    except AttributeError:
        raise AttributeError(f"Design {dut._name!r} has no stream port {name!r} (no signal {name}__{member})") \
            from None


class _StreamPort:
    def __init__(self, dut, name, shape, *, pause=0.0, seed=0, clock=None):
        self.valid = _port(dut, name, "valid")
        self.ready = _port(dut, name, "ready")
        self.payload = _port(dut, name, "payload")
        self.shape = shape
        self.codec = codec(shape)
        self.clock = dut.clk if clock is None else clock
        self._pauses = pauses(pause, seed)


class StreamSource(_StreamPort):
    """Drive values into the stream port ``name`` of ``dut``.

    Parameters
    ----------
    dut : cocotb handle
        The top-level design.
    name : str
        The stream port's name in the component (``"i"`` for ``i__valid`` ...).
    shape : shape-like
        The stream's payload shape (e.g. ``PostProcessIn``).
    pause : float or iterable of bool
        Idle probability per cycle, or an explicit pattern (see :func:`rpaccel.sim.streams.pauses`).
    seed : int
        Seed of the idle pattern.
    clock : cocotb handle, optional
        Clock (default ``dut.clk``).
    """

    def __init__(self, dut, name, shape, **kwargs):
        super().__init__(dut, name, shape, **kwargs)
        self.sent = 0
        self.valid.value = 0

    async def send(self, values):
        """Send every value of ``values`` in order; return in the cycle after the last one was accepted."""
        values = iter(values)
        current = next(values, None)
        while current is not None:
            await RisingEdge(self.clock)
            if next(self._pauses):
                self.valid.value = 0
                continue
            self.payload.value = self.codec.pack_value(current)
            self.valid.value = 1
            await ReadOnly()
            if self.ready.value:
                self.sent += 1
                current = next(values, None)
        await RisingEdge(self.clock)
        self.valid.value = 0


class StreamSink(_StreamPort):
    """Receive values from the stream port ``name`` of ``dut``, applying random back-pressure.

    Parameters are as for :class:`StreamSource`; ``pause`` is the probability per cycle of holding ``ready``
    low.
    """

    def __init__(self, dut, name, shape, **kwargs):
        super().__init__(dut, name, shape, **kwargs)
        self.ready.value = 0

    async def receive(self, count, *, on_value=None):
        """Receive ``count`` values and return them as a list.

        ``on_value(index, value)``, if given, is called as each value arrives (for checking on the fly).
        """
        out = []
        while len(out) < count:
            await RisingEdge(self.clock)
            ready = not next(self._pauses)
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and self.valid.value:
                value = self.codec.unpack_value(int(self.payload.value))
                if on_value is not None:
                    on_value(len(out), value)
                out.append(value)
        await RisingEdge(self.clock)
        self.ready.value = 0
        return out
