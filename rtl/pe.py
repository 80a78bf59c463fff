"""Processing element of the weight-stationary systolic array."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..numeric import ACC_BITS, ACT_BITS
from .ecp5 import ecp5_registered_multiplier, is_ecp5

__all__ = ["MULTIPLIERS", "ProcessingElement", "lut_multiply", "lut_partial_products", "lut_product"]

#: How a processing element may implement its multiplier.
MULTIPLIERS = ("dsp", "lut")


def lut_partial_products(a, w):
    """The first half of :func:`lut_multiply`: two partial sums ``(low, high)`` of the product of two int8
    values, ``a * w == (low + (high << 4)) mod 2**16`` read as signed; ``low`` is 16 bits, ``high`` 12.

    Yosys maps every ``*`` it sees to a DSP block when the target has them; an array larger than the device's
    DSP count needs some multipliers in soft logic. This is the Baugh-Wooley form of the signed product: eight
    unsigned 8-bit partial-product rows (row ``i`` is ``w[i] & a[j]`` for ``j < 7`` and the complement of
    ``w[i] & a[7]``; the last row complements the other way) plus the constant ``2**8 + 2**15``, all modulo
    ``2**16``, so nothing is sign-extended. The constant costs no adder: its two bits are the empty ninth bit of
    the first and of the last row. The rows are summed pairwise in two levels of adders as wide as their
    operands; :func:`lut_product` adds the last level.
    """
    au = a.as_unsigned()
    top = ACT_BITS - 1
    # Row i < 7 is ``a`` with its top bit inverted when w[i] is set, else only that top bit; the last row is
    # ``a`` with its low bits inverted when w[7] is set, else only those low bits. Whole-word multiplexers of
    # constants: the same logic as bit by bit, but one operation per row in Verilator, not eight.
    flip_top, flip_low = 1 << top, (1 << top) - 1
    rows = [Mux(w[i], au ^ flip_top, flip_top) for i in range(top)]
    rows.append(Mux(w[top], au ^ flip_low, flip_low))
    rows[0] = Cat(rows[0], Const(1, 1))    # + 2**8
    rows[top] = Cat(rows[top], Const(1, 1))  # + 2**15 (the last row is shifted by 7)
    pairs = [rows[2 * j] + (rows[2 * j + 1] << 1) for j in range(4)]
    low, high = pairs[0] + (pairs[1] << 2), pairs[2] + (pairs[3] << 2)
    return low[:2 * ACT_BITS], high[:2 * ACT_BITS - 4]


def lut_product(low, high):
    """The signed 16-bit product from the partial sums of :func:`lut_partial_products`."""
    return (low + (high << 4))[:2 * ACT_BITS].as_signed()


def lut_multiply(a, w):
    """``a * w`` for two int8 values, from LUTs and carry chains (:func:`lut_partial_products`, then
    :func:`lut_product`).

    A PE with ``multiplier="lut"`` registers the two partial sums and adds the last level in its third stage,
    next to the accumulation, so that both stages have two adder levels (all three in one stage limited the PE
    to 97.6 MHz on the ECP5-85F; ``rpaccel bench gemm --synth`` gives the current figure as ``pe-lut``).
    Measured during design per multiplier (ECP5, Verilator bench of 128 multipliers): about 153 LUTs and
    8.0 ns per simulated cycle for this form with bit-by-bit rows; a tree of sign-extended partial products
    147 LUTs, 21.4 ns; the same sums in full 16-bit modular arithmetic 244 LUTs (too many for the first ``small``
    16 x 16 array's 132 LUT multipliers to fit the device), 2.8 ns.
    """
    return lut_product(*lut_partial_products(a, w))


class ProcessingElement(wiring.Component):
    """Weight-stationary int8 multiply, int32 accumulate cell with two weight banks.

    Activations travel right (``a_in`` to ``a_out``), partial sums travel down (``psum_in`` to ``psum_out``),
    each through one register. The weight stays in the cell. There are two weight registers (banks) so that the
    next tile's weights can be shifted in while the current tile computes: every activation carries the bank
    it is to be multiplied with (``bank_in``, passed on to ``bank_out`` beside it), and the load chain writes the
    bank named by ``w_bank``, which the array controller keeps different from any bank still in flight.

    The weight is selected in one stage, multiplied in the next and added in the third, so that the hard
    multiplier's inputs and output are all registers (a bank multiplexer in front of a combinational multiplier
    put the PE's whole cycle into one path) and a carry chain gets a cycle of its own. Yosys maps a ``*`` to an
    ECP5 MULT18X18D without its registers, so these registers would be fabric flip-flops, and in a full array the
    placer put many of them far across the die from their DSP block (one hop in, the multiplier, one hop out, in
    one cycle). On the ECP5 (a platform whose ``family`` is ``"ecp5"``) the PE therefore instantiates the block
    itself (:func:`ecp5_registered_multiplier`): its input registers A and B take ``a_in`` and the selected
    weight, duplicating ``a_out`` and ``selected`` (``a_out`` stays in the fabric for the next PE), and its
    output register is ``product``, all enabled by ``en``, so the hops into and out of the block are timed
    apart from the multiplier. Everywhere else (simulation, iCE40, ``multiplier="lut"``) the three stages are
    written out as below; ``tests/test_pe_dsp.py`` checks the Yosys-mapped ECP5 PE against this form cycle for
    cycle. On every cycle with ``en`` high::

        a_out    <= a_in
        bank_out <= bank_in
        selected <= weight[bank_in]
        product  <= a_out * selected                      (int16)
        psum_out <= psum_in + product                     (int32)

    so the ``psum_in`` of a cycle meets the product of the activation that arrived two enabled cycles earlier
    (:attr:`LATENCY` ``= 3`` enabled cycles from ``a_in`` to ``psum_out``). In an array this costs two cycles of
    latency and nothing else: activations move right one column per cycle and partial sums down one row per
    cycle, so an activation entering row r in cycle t + r meets, in every column c, the partial sum of the rows
    above it in cycle t + r + c + 2. The weight bank is read when the activation arrives, as with a
    single-stage multiplier, so loading the other bank may follow the last activation of a tile as closely.

    On every cycle with ``w_shift`` high (independently of ``en``)::

        weight[w_bank] <= w_in[w_bank]

    and ``w_out`` always shows both banks, so the cells of a column form a shift chain per bank that loads a
    column of weights in as many cycles as it has rows. ``w_bank`` only enables a bank's register: it is not on
    the chain's data path, where it would add a multiplexer between every two cells of a column (the cells of a
    column share ``w_shift`` and ``w_bank``, so a chain per bank loads what one chain through the selected bank
    would). The sum is computed modulo ``2**psum_bits``; the
    array's parameter checks make overflow impossible (see :mod:`rpaccel.numeric`).

    Parameters
    ----------
    multiplier : str
        ``"dsp"`` (default): a hard multiplier: on the ECP5 an instantiated MULT18X18D with its own registers,
        elsewhere ``a * w``, which synthesis maps to a hard multiplier (SB_MAC16 on iCE40). ``"lut"``: the
        product is an adder tree of partial products (:func:`lut_multiply`), built from LUTs and carry chains,
        for arrays with more PEs than the device has DSP blocks. All compute the same value in the same cycle.
    psum_bits : int
        Width of the partial sums (default 32). Inside an array of R rows a partial sum never exceeds
        ``16384 * R`` in magnitude, so the array gives its PEs just enough bits for that (20 for R = 16).
    dsp_site : str or None
        Where the ECP5 multiplier block goes (a nextpnr BEL name; the array's floorplan,
        :mod:`rpaccel.rtl.floorplan`); None lets the placer choose. Only for ``multiplier="dsp"``.

    Members
    -------
    en : In(1)
        Advance the compute registers.
    a_in : In(signed(8)), a_out : Out(signed(8))
        Activation from the left neighbour, and to the right neighbour.
    bank_in : In(1), bank_out : Out(1)
        Weight bank for ``a_in``, and for ``a_out``.
    psum_in : In(signed(psum_bits)), psum_out : Out(signed(psum_bits))
        Partial sum from above, and to the cell below.
    w_in : In(data.ArrayLayout(signed(8), 2)), w_out : Out(data.ArrayLayout(signed(8), 2))
        Weight load chains (one per bank) in, and out to the next cell of the chains: the two banks.
    w_shift : In(1)
        Shift the load chain by one cell.
    w_bank : In(1)
        Bank the load chain writes.
    """

    #: Enabled cycles from an activation at ``a_in`` to its product in ``psum_out``.
    LATENCY = 3

    def __init__(self, *, multiplier="dsp", psum_bits=ACC_BITS, dsp_site=None):
        error = None
        if multiplier not in MULTIPLIERS:
            error = f"PE multiplier must be one of {', '.join(MULTIPLIERS)}, not {multiplier!r}"
        elif not isinstance(psum_bits, int) or not 2 * ACT_BITS < psum_bits <= 64:
            error = f"PE partial sums must be 17 to 64 bits wide, not {psum_bits!r}"
        elif dsp_site is not None and (multiplier != "dsp" or not isinstance(dsp_site, str)):
            error = f"PE multiplier site must be a BEL name of a PE with multiplier='dsp', not {dsp_site!r}"
        if error:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise ValueError(error)
        self.multiplier = multiplier
        self.psum_bits = psum_bits
        self.dsp_site = dsp_site
        super().__init__({
            "en": In(1),
            "a_in": In(signed(ACT_BITS)),
            "a_out": Out(signed(ACT_BITS)),
            "bank_in": In(1),
            "bank_out": Out(1),
            "psum_in": In(signed(psum_bits)),
            "psum_out": Out(signed(psum_bits)),
            "w_in": In(data.ArrayLayout(signed(ACT_BITS), 2)),
            "w_out": Out(data.ArrayLayout(signed(ACT_BITS), 2)),
            "w_shift": In(1),
            "w_bank": In(1),
        })

    def elaborate(self, platform):
        m = Module()

        # Datapath registers have no reset (a reset is for control state; these are overwritten before use).
        weight = [Signal(signed(ACT_BITS), name=f"weight{bank}", reset_less=True) for bank in range(2)]
        for bank in range(2):
            with m.If(self.w_shift & (self.w_bank == bank)):
                m.d.sync += weight[bank].eq(self.w_in[bank])
            m.d.comb += self.w_out[bank].eq(weight[bank])

        a_out = Signal(signed(ACT_BITS), reset_less=True)
        bank_out = Signal(reset_less=True)
        psum_out = Signal(signed(self.psum_bits), reset_less=True)
        m.d.comb += [self.a_out.eq(a_out), self.bank_out.eq(bank_out), self.psum_out.eq(psum_out)]
        selected = Signal(signed(ACT_BITS), name="selected", reset_less=True)
        weight_in = Mux(self.bank_in, weight[1], weight[0])
        if self.multiplier == "lut":
            # Two adder levels of the product in the second stage, the last one next to the accumulation.
            low, high = lut_partial_products(a_out, selected)
            stage = [Signal(len(low), name="product_low", reset_less=True),
                     Signal(len(high), name="product_high", reset_less=True)]
            staged = [selected.eq(weight_in), stage[0].eq(low), stage[1].eq(high)]
            product = lut_product(*stage)
        elif is_ecp5(platform):
            # The DSP block's input registers hold copies of a_out and selected, its output register the product.
            product = Signal(signed(2 * ACT_BITS))
            m.submodules.multiplier = ecp5_registered_multiplier(self.a_in, weight_in, product, self.en,
                                                                   site=self.dsp_site)
            staged = []
        else:
            product = Signal(signed(2 * ACT_BITS), reset_less=True)
            staged = [selected.eq(weight_in), product.eq(a_out * selected)]
        with m.If(self.en):
            m.d.sync += [
                a_out.eq(self.a_in),
                bank_out.eq(self.bank_in),
                *staged,
                psum_out.eq(self.psum_in + product),
            ]
        return m
