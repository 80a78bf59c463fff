"""Post-processing unit: bias add, requantisation to int8, optional ReLU, or the raw int32 sum."""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS, ACT_BITS, INT8_MAX, INT8_MIN, M_BITS, S_BITS
from .ecp5 import ecp5_registered_multiplier, is_ecp5
from .lib.delay import shift_register

__all__ = ["PostProcessIn", "PostProcessor", "RequantParams", "clamp"]


class RequantParams(data.Struct):
    """Per-layer post-processing parameters (see :func:`rpaccel.numeric.postprocess`).

    Members
    -------
    m : unsigned(16)
        Requantisation multiplier.
    s : unsigned(6)
        Requantisation shift.
    relu : unsigned(1)
        Apply ReLU after requantisation.
    raw : unsigned(1)
        Pass ``acc + bias`` through as int32 instead of requantising (a ranking model's logit).
    """

    m: unsigned(M_BITS)
    s: unsigned(S_BITS)
    relu: unsigned(1)
    raw: unsigned(1)


class PostProcessIn(data.Struct):
    """One accumulator to post-process, with its bias and parameters."""

    acc: signed(ACC_BITS)
    bias: signed(ACC_BITS)
    params: RequantParams


# Product of an int32 by an unsigned 16-bit multiplier: |acc * m| < 2**47, so 49 signed bits hold it.
_PRODUCT_BITS = ACC_BITS + M_BITS + 1
# The shifted product is saturated to this range before rounding: wide enough that rounding and clamping
# the saturated value gives the same int8 as rounding and clamping the exact one (see PostProcessor).
_SAT_LOW, _SAT_HIGH = 2 * INT8_MIN - 2, 2 * INT8_MAX + 2


def clamp(value, low, high):
    """``value`` limited to ``[low, high]`` (an expression; ``low`` and ``high`` are integers)."""
    return Mux(value < low, low, Mux(value > high, high, value))


class PostProcessor(wiring.Component):
    """Bias add, requantise and ReLU, as a pipeline with stream ports.

    For each input ``(acc, bias, params)`` it outputs, in order::

        x = acc + bias                                               (int32)
        x                                                            if params.raw
        clamp((x * m + (1 << (s - 1))) >> s, -128, 127) [ReLU]      if s > 0
        clamp(x * m, -128, 127) [ReLU]                               if s = 0

    bit-exact with :func:`rpaccel.numeric.postprocess`; requantised values come out sign-extended to 32 bits.

    The rounding is done without a wide adder: with ``t = (x * m) >> (s - 1)``,
    ``(x * m + (1 << (s - 1))) >> s == (t + 1) >> 1``, and since that map is monotonic, ``t`` can first be
    saturated to a 10-bit range without changing the clamped result.

    Stages (one register each): 0 bias add and shift amount; 1 two 16 x 16 partial products (one DSP each);
    2 the 49-bit product; 3 coarse shift (multiples of 8); 4 fine shift; 5 saturation; 6 round, clamp, ReLU or
    raw select. The pipeline accepts one input per cycle while its output is accepted; a stalled output holds
    every stage (``i.ready`` follows ``o.ready`` combinationally).

    Members
    -------
    i : In(stream.Signature(PostProcessIn))
        Accumulators with their biases and parameters.
    o : Out(stream.Signature(signed(32)))
        Results.
    """

    #: Cycles from accepting an input to presenting its result.
    LATENCY = 7

    i: In(stream.Signature(PostProcessIn))
    o: Out(stream.Signature(signed(ACC_BITS)))

    def elaborate(self, platform):
        m = Module()

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # valid[k] marks stage k full. The raw sum x[k] and the flags ride along to the last stage; the shift
        # amount s - 1 (0 when s = 0) rides along until the shift is done. Only the valid bits are reset: the data
        # registers are overwritten before any valid bit reaches them.
        depth = self.LATENCY
        last = depth - 1
        payload = self.i.payload
        valid = shift_register(m, self.i.valid, depth, name="valid{}", first=0, en=advance)
        x = shift_register(m, payload.acc + payload.bias, last, name="x{}", first=0, shape=signed(ACC_BITS),
                           en=advance, reset_less=True)
        params = shift_register(m, payload.params, last, name="params{}", first=0, en=advance, reset_less=True)
        shamt = shift_register(m, Mux(payload.params.s == 0, 0, payload.params.s - 1), 5, name="shamt{}", first=0,
                               shape=S_BITS, en=advance, reset_less=True)

        half = ACC_BITS // 2
        lo = Signal(unsigned(2 * M_BITS), name="lo", reset_less=True)         # stage 1: low half of x times m
        hi = Signal(signed(ACC_BITS - half + M_BITS + 1), name="hi", reset_less=True)  # stage 1: high half
        product = Signal(signed(_PRODUCT_BITS), reset_less=True)              # stage 2: x * m
        coarse = Signal(signed(_PRODUCT_BITS), reset_less=True)               # stage 3: shifted by multiples of 8
        fine = Signal(signed(_PRODUCT_BITS), reset_less=True)                 # stage 4: shifted by s - 1
        saturated = Signal(range(_SAT_LOW, _SAT_HIGH + 1), reset_less=True)   # stage 5: saturated
        result = Signal(signed(ACC_BITS), reset_less=True)                    # stage 6: output

        # Combinational part of the last stage: round, clamp.
        rounded = Signal(signed(saturated.shape().width + 1))
        clamped = Signal(signed(ACT_BITS))
        m.d.comb += [
            rounded.eq(Mux(params[last - 1].s == 0, saturated, (saturated + 1) >> 1)),
            clamped.eq(clamp(rounded, INT8_MIN, INT8_MAX)),
        ]

        if is_ecp5(platform):
            # Stage 1 in two MULT18X18D with their own registers: their input registers take copies of x[0]'s
            # halves and of m as x[0] and params[0] do, their output registers are lo and hi.
            total, scale = self.i.payload.acc + self.i.payload.bias, Cat(self.i.payload.params.m, C(0, 1)).as_signed()
            m.submodules.multiplier_lo = ecp5_registered_multiplier(Cat(total[:half], C(0, 1)).as_signed(), scale,
                                                                    lo, advance)
            m.submodules.multiplier_hi = ecp5_registered_multiplier(total[half:ACC_BITS].as_signed(), scale, hi,
                                                                    advance)
        else:
            with m.If(advance):
                m.d.sync += [lo.eq(x[0][:half] * params[0].m), hi.eq(x[0][half:].as_signed() * params[0].m)]
        with m.If(advance):
            m.d.sync += [
                product.eq((hi << half) + lo),
                coarse.eq(product >> Cat(C(0, 3), shamt[2][3:])),
                fine.eq(coarse >> shamt[3][:3]),
            ]
            m.d.sync += saturated.eq(clamp(fine, _SAT_LOW, _SAT_HIGH))
            flags = params[last - 1]
            m.d.sync += result.eq(Mux(flags.raw, x[last - 1], Mux(flags.relu & (clamped < 0), 0, clamped)))

        m.d.comb += [
            self.o.valid.eq(valid[last]),
            self.o.payload.eq(result),
        ]
        return m
