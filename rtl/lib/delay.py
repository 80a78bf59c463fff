"""Delay lines: a value as it was some cycles before.

:func:`shift_register` is a chain of registers, every stage of which can be read (the side-band registers that
travel beside a pipeline, with or without its clock enable). :class:`DelayLine` is a wide value delayed by a
fixed number of cycles in LUT RAM: a slice per four bits of width instead of a flip-flop per bit and cycle.
"""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["DelayLine", "shift_register"]


def _check_shape(what, shape, component=None):
    try:
        Shape.cast(shape)
    except TypeError:
        if component is not None:
            component._MustUse__silence = True  # never built: no "created but never used" warning on the error
        raise TypeError(f"{what} must be a shape, not {shape!r}") from None


def shift_register(m, value, depth, *, name, first=1, shape=None, en=None, reset_less=False, domain="sync"):
    """A chain of ``depth`` registers fed with ``value``: stage ``k`` (from 0) holds ``value`` as it was ``k + 1``
    cycles before (cycles in which ``en`` was high, if given).

    Parameters
    ----------
    m : Module
        Where the registers are added.
    value : value-like
        What enters the chain.
    depth : int
        Number of stages, at least 1.
    name : str
        Name of the stages: stage ``k`` is numbered ``first + k``, the number put in place of ``{}`` in ``name``
        or after it.
    first : int
        Number of stage 0 (default 1: the stages are numbered by their delay).
    shape : shape-like, optional
        Shape of the stages (default: ``value``'s, a layout for a view).
    en : value-like, optional
        Clock enable of every stage.
    reset_less : bool
        No reset (for data that a valid bit beside them qualifies).
    domain : str
        Clock domain.

    Returns
    -------
    list of Signal
        The stages, ``depth`` of them, least delayed first.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"Shift register depth must be a positive integer, not {depth!r}")
    if shape is not None:
        _check_shape("Shift register shape", shape)
    template = name if "{}" in name else name + "{}"
    stages = []
    for k in range(depth):
        kwargs = {"name": template.format(first + k), "reset_less": reset_less}
        stages.append(Signal(shape, **kwargs) if shape is not None else Signal.like(value, **kwargs))
    statements = [stage.eq(source) for stage, source in zip(stages, [value, *stages[:-1]])]
    if en is None:
        m.d[domain] += statements
    else:
        with m.If(en):
            m.d[domain] += statements
    return stages


class DelayLine(wiring.Component):
    """``o`` shows ``i`` of ``delay`` cycles before: a LUT RAM written every cycle at a running pointer and read
    from a second pointer ``delay - 1`` behind it, into an output register. A wide value costs a LUT RAM slice
    per four bits instead of ``delay`` flip-flops per bit, and no enable. Neither the storage nor the output
    register is reset: for ``delay`` cycles after a reset ``o`` is undefined.

    Parameters
    ----------
    shape : shape-like
        Shape of the value.
    delay : int
        Cycles, at least 2 (the storage is 16 entries deep, or the next power of two above ``delay``).

    Members
    -------
    i : In(shape)
    o : Out(shape)
    """

    def __init__(self, shape, delay):
        _check_shape("Delay line shape", shape, self)
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 2:
            self._MustUse__silence = True
            raise ValueError(f"Delay line delay must be an integer of at least 2, not {delay!r}")
        self.delay = delay
        #: Entries of the storage (LUT RAM is 16 deep).
        self.storage_depth = max(16, 1 << (delay - 1).bit_length())
        super().__init__({"i": In(shape), "o": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        depth, width = self.storage_depth, Shape.cast(self.i.shape()).width
        m.submodules.storage = storage = Memory(shape=width, depth=depth, init=[])
        write, read = storage.write_port(), storage.read_port(domain="comb")
        produce = Signal(range(depth))
        consume = Signal(range(depth), init=-(self.delay - 1) % depth)
        out = Signal(width, reset_less=True)
        m.d.comb += [write.en.eq(1), write.addr.eq(produce), write.data.eq(self.i), read.addr.eq(consume),
                     self.o.eq(out)]
        m.d.sync += [produce.eq(produce + 1), consume.eq(consume + 1), out.eq(read.data)]
        return m
