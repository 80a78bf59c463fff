"""Processing element of the weight-stationary systolic array."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS, ACT_BITS

__all__ = ["ProcessingElement"]


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

    def elaborate(self, platform):
        m = Module()

        weight = [Signal(signed(ACT_BITS), name=f"weight{bank}") for bank in range(2)]
        with m.If(self.w_shift):
            with m.If(self.w_bank):
                m.d.sync += weight[1].eq(self.w_in)
            with m.Else():
                m.d.sync += weight[0].eq(self.w_in)
        m.d.comb += self.w_out.eq(Mux(self.w_bank, weight[1], weight[0]))

        product = Signal(signed(2 * ACT_BITS))
        with m.If(self.en):
            m.d.sync += [
                self.a_out.eq(self.a_in),
                self.bank_out.eq(self.bank_in),
                product.eq(self.a_in * Mux(self.bank_in, weight[1], weight[0])),
                self.psum_out.eq(self.psum_in + product),
            ]
        return m
