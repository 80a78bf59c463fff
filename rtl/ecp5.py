"""What the blocks build differently on the ECP5: the test for the platform, and the MULT18X18D with its own
pipeline registers that the processing element, the post-processor and the embedding unit's requantiser use.

Yosys maps a ``*`` on the ECP5 to a MULT18X18D without any of its registers, so the flip-flops in front of and
behind a multiplier are fabric flip-flops that the placer may put far from the block. A component that wants the
registers inside the block instantiates it here when ``is_ecp5(platform)``, and writes the multiplication out
with fabric registers everywhere else (simulation, iCE40); ``rpaccel.flow.equivalence`` checks that the two agree.
(``rtl.memory.RegisteredRAM`` builds its DP16KD blocks itself on the same test.)
"""

from amaranth.hdl import ClockSignal, Const, Instance

__all__ = ["ECP5_MULTIPLIER_REGISTERS", "ecp5_registered_multiplier", "is_ecp5"]


def is_ecp5(platform):
    """Whether ``platform`` is an ECP5 (anything whose ``family`` is ``"ecp5"``, such as the stand-in of
    :mod:`rpaccel.flow.equivalence`)."""
    return getattr(platform, "family", None) == "ecp5"


#: The registers of :func:`ecp5_registered_multiplier`'s MULT18X18D, all on CLK0, CE0 and RST0.
ECP5_MULTIPLIER_REGISTERS = ("INPUTA", "INPUTB", "OUTPUT")


def ecp5_registered_multiplier(a, b, product, en, *, site=None):
    """An ECP5 MULT18X18D computing ``product <= A * B; A <= a; B <= b`` on every cycle with ``en`` high.

    ``a`` and ``b`` are signed values of at most 18 bits (sign-extended into the block), ``product`` takes the
    low bits of the 36-bit product. The input registers A and B and the output register are the DSP block's own
    (``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``, ``REG_OUTPUT_CLK``), clocked by the sync domain's clock on CLK0 and
    enabled by ``en`` on CE0; their reset RST0 is tied low and the global set/reset is off, as for the fabric
    registers they replace. The pipeline register between multiplier and output register is not used (it would
    add a cycle). nextpnr times this configuration as ``MULT18X18D_REGS_ALL``: A and B are register inputs and P
    register outputs of CLK0, so routing to and from the block is timed on its own and the multiplier inside it
    is not (Yosys maps a ``*`` to a MULT18X18D without registers, which nextpnr times as one combinational path
    from the flip-flops in front of the block to those behind it).
    """
    registers = {}
    for register in ECP5_MULTIPLIER_REGISTERS:
        registers |= {f"p_REG_{register}_CLK": "CLK0", f"p_REG_{register}_CE": "CE0",
                      f"p_REG_{register}_RST": "RST0"}
    ports = [("i", f"{name}{i}", value[min(i, len(value) - 1)]) for name, value in (("A", a), ("B", b))
             for i in range(18)]
    ports += [("i", f"C{i}", Const(0)) for i in range(18)]
    ports += [("o", f"P{i}", product[i]) for i in range(len(product))]
    attrs = {} if site is None else {"a_BEL": site}
    return Instance(
        "MULT18X18D", *ports, **registers, **attrs,
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED", p_RESETMODE="SYNC",
        i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
        i_CLK0=ClockSignal(), i_CE0=en, i_RST0=Const(0))
