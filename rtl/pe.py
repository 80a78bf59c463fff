"""Processing element of the weight-stationary systolic array."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS, ACT_BITS

__all__ = ["MULTIPLIERS", "ProcessingElement", "lut_multiply"]

#: How a processing element may implement its multiplier.
MULTIPLIERS = ("dsp", "lut")


def lut_multiply(a, w):
    """``a * w`` for two int8 values, written as an adder tree so that synthesis builds it from LUTs.

    Yosys maps every ``*`` it sees to a DSP block when the target has them; an array larger than the device's
    DSP count needs some multipliers in soft logic. The eight partial products ``w[i] ? a << i : 0`` (the last
    one subtracted: ``w`` is two's complement) are summed pairwise in three levels, all modulo 2**16 on ``a``
    sign-extended to 16 bits: the product fits in 16 bits, so the wrapped sums give it exactly.

    Uniform 16-bit unsigned arithmetic is a measured choice. Narrower, sign-extended adders (each only as wide
    as its operands) save about 100 LUTs per PE on the ECP5, but reach 99 MHz instead of 118 MHz in the PE
    harness and simulate 7.6 times slower in Verilator (every odd-width sign extension costs instructions).
    """
    width = 2 * ACT_BITS
    a16 = Cat(a, a[ACT_BITS - 1].replicate(width - ACT_BITS))
    terms = [(Mux(w[i], a16, 0) << i)[:width] for i in range(ACT_BITS)]
    pairs = [(terms[0] + terms[1])[:width], (terms[2] + terms[3])[:width], (terms[4] + terms[5])[:width],
             (terms[6] - terms[7])[:width]]
    return ((pairs[0] + pairs[1])[:width] + (pairs[2] + pairs[3])[:width])[:width].as_signed()


class ProcessingElement(wiring.Component):
    """Weight-stationary int8 multiply, int32 accumulate cell with two weight banks.

    Activations travel right (``a_in`` to ``a_out``), partial sums travel down (``psum_in`` to ``psum_out``),
    each through one register. The weight stays in the cell. There are two weight registers (banks) so that the
    next tile's weights can be shifted in while the current tile computes: every activation carries the bank
    it is to be multiplied with (``bank_in``, passed on to ``bank_out`` beside it), and the load chain writes the
    bank named by ``w_bank``, which the array controller keeps different from any bank still in flight.

    The multiply and the add are in separate pipeline stages (so that a hard multiplier and a carry chain each
    get a full cycle). On every cycle with ``en`` high::

        a_out    <= a_in
        bank_out <= bank_in
        product  <= a_in * weight[bank_in]                (int16)
        psum_out <= psum_in + product                     (int32)

    so the ``psum_in`` of a cycle meets the product of the activation that arrived on the previous enabled
    cycle. In an array this costs one cycle of latency and nothing else: activations move right one column per
    cycle and partial sums down one row per cycle, so an activation entering row r in cycle t + r meets, in
    every column c, the partial sum of the rows above it in cycle t + r + c + 1.

    On every cycle with ``w_shift`` high (independently of ``en``)::

        weight[w_bank] <= w_in

    and ``w_out`` always shows ``weight[w_bank]``, so the cells of a column form a shift chain that loads a
    column of weights in as many cycles as it has rows. The sum is computed modulo 2**32; the array's
    parameter checks make overflow impossible (see :mod:`rpaccel.numeric`).

    Parameters
    ----------
    multiplier : str
        ``"dsp"`` (default): the product is written ``a * w``, which synthesis maps to a hard multiplier
        (MULT18X18D on ECP5, SB_MAC16 on iCE40). ``"lut"``: the product is an adder tree of partial products
        (:func:`lut_multiply`), built from LUTs and carry chains, for arrays with more PEs than the device
        has DSP blocks. Both compute the same value in the same cycle.

    Members
    -------
    en : In(1)
        Advance the compute registers.
    a_in : In(signed(8)), a_out : Out(signed(8))
        Activation from the left neighbour, and to the right neighbour.
    bank_in : In(1), bank_out : Out(1)
        Weight bank for ``a_in``, and for ``a_out``.
    psum_in : In(signed(32)), psum_out : Out(signed(32))
        Partial sum from above, and to the cell below.
    w_in : In(signed(8)), w_out : Out(signed(8))
        Weight load chain input, and output to the next cell of the chain.
    w_shift : In(1)
        Shift the load chain by one cell.
    w_bank : In(1)
        Bank the load chain writes and shows.
    """

    en: In(1)
    a_in: In(signed(ACT_BITS))
    a_out: Out(signed(ACT_BITS))
    bank_in: In(1)
    bank_out: Out(1)
    psum_in: In(signed(ACC_BITS))
    psum_out: Out(signed(ACC_BITS))
    w_in: In(signed(ACT_BITS))
    w_out: Out(signed(ACT_BITS))
    w_shift: In(1)
    w_bank: In(1)

    def __init__(self, *, multiplier="dsp"):
        if multiplier not in MULTIPLIERS:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise ValueError(f"PE multiplier must be one of {', '.join(MULTIPLIERS)}, not {multiplier!r}")
        self.multiplier = multiplier
        super().__init__()

    def elaborate(self, platform):
        m = Module()

        # Datapath registers have no reset (a reset is for control state; these are overwritten before use).
        weight = [Signal(signed(ACT_BITS), name=f"weight{bank}", reset_less=True) for bank in range(2)]
        with m.If(self.w_shift):
            with m.If(self.w_bank):
                m.d.sync += weight[1].eq(self.w_in)
            with m.Else():
                m.d.sync += weight[0].eq(self.w_in)
        m.d.comb += self.w_out.eq(Mux(self.w_bank, weight[1], weight[0]))

        product = Signal(signed(2 * ACT_BITS), reset_less=True)
        a_out = Signal(signed(ACT_BITS), reset_less=True)
        bank_out = Signal(reset_less=True)
        psum_out = Signal(signed(ACC_BITS), reset_less=True)
        m.d.comb += [self.a_out.eq(a_out), self.bank_out.eq(bank_out), self.psum_out.eq(psum_out)]
        selected = Mux(self.bank_in, weight[1], weight[0])
        if self.multiplier == "lut":
            multiplied = lut_multiply(self.a_in, selected)
        else:
            multiplied = self.a_in * selected
        with m.If(self.en):
            m.d.sync += [
                a_out.eq(self.a_in),
                bank_out.eq(self.bank_in),
                product.eq(multiplied),
                psum_out.eq(self.psum_in + product),
            ]
        return m
