"""Pin-limited synthesis harness: wraps any component so that a handful of pins observe all of it."""

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["HARNESS_PINS", "PinHarness"]

#: Harness ports and their directions; their package pins come from the board's file in ``constraints/``.
HARNESS_PINS = {"clk": "i", "rst": "i", "sin": "i", "sout": "o", "load": "i"}


def _ports(component):
    inputs, outputs = [], []
    for _path, member, value in component.signature.flatten(component):
        (inputs if member.flow == wiring.In else outputs).append(Value.cast(value))
    return inputs, outputs


class PinHarness(Elaboratable):
    """Drive every input of ``dut`` from a serial shift register and fold every output into one pin.

    All inputs come from flip-flops of a shift register fed by the ``sin`` pin; all outputs are captured into a
    register that, while ``load`` is low, shifts out on ``sout``. Every input and output bit therefore reaches
    a pin, so synthesis keeps all of the design, and every path of the design starts and ends at a flip-flop,
    so the reported Fmax is the design's register-to-register Fmax. The harness costs about one flip-flop per
    input bit and one flip-flop and one LUT per output bit (:attr:`overhead_ffs`).

    Parameters
    ----------
    dut : amaranth.lib.wiring.Component
        The design. It runs in the ``sync`` domain, clocked by ``clk`` and reset (synchronised) by ``rst``.
    """

    def __init__(self, dut):
        if not isinstance(dut, wiring.Component):
            raise TypeError(f"Harnessed design must be a wiring.Component, not {dut!r}")
        self.dut = dut
        inputs, outputs = _ports(dut)
        self.in_width = sum(len(v) for v in inputs)
        self.out_width = sum(len(v) for v in outputs)

    @property
    def overhead_ffs(self):
        """Flip-flops the harness adds around the design."""
        return self.in_width + self.out_width

    def elaborate(self, platform):
        m = Module()
        pins = {}
        for name, direction in HARNESS_PINS.items():
            m.submodules[f"{name}_buffer"] = pins[name] = io.Buffer(direction, platform.request(name, 0, dir="-"))

        m.domains.sync = ClockDomain()
        m.d.comb += ClockSignal("sync").eq(pins["clk"].i)
        m.submodules.reset_sync = ResetSynchronizer(pins["rst"].i, domain="sync")
        m.submodules.dut = self.dut

        inputs, outputs = _ports(self.dut)
        if self.in_width:
            # No reset on the shift registers: they carry data, and the reset net need not reach them.
            shift_in = Signal(self.in_width, reset_less=True)
            m.d.sync += shift_in.eq(Cat(pins["sin"].i, shift_in[:-1]))
            m.d.comb += Cat(*inputs).eq(shift_in)
        capture = Signal(max(self.out_width, 1), reset_less=True)
        with m.If(pins["load"].i):
            m.d.sync += capture.eq(Cat(*outputs) if outputs else 0)
        with m.Else():
            m.d.sync += capture.eq(capture >> 1)
        m.d.comb += pins["sout"].o.eq(capture[0])
        return m
