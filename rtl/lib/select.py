"""Selection helpers shared by the blocks whose wiring follows the run-time split."""

from amaranth.hdl import Cat, Mux, Signal, Value

__all__ = ["REPLICA_ATTR", "pick", "pick_keyed", "replica", "split_modes"]

#: Attribute that marks a register as a deliberate replica. Synthesis would merge identical registers into one
#: (Yosys ``opt_merge``), giving a single driver with a fan-out of thousands across the die; the flow in
#: :mod:`rpaccel.flow.synth` sets ``keep`` on the flip-flops of wires with this attribute so each copy stays
#: next to its loads.
REPLICA_ATTR = "rpaccel_replica"


def pick(choices, default=0):
    """The ``value`` of the ``(condition, value)`` in ``choices`` whose condition holds, else ``default``.

    The conditions are meant to be exclusive (one-hot decodes of the split): the result is a chain of
    ``Mux`` with the first choice nearest the output.
    """
    out = default
    for condition, value in reversed(choices):
        out = Mux(condition, value, out)
    return out


def pick_keyed(choices, value_of, default=0):
    """Like :func:`pick`, for ``(condition, key)`` choices whose value is ``value_of(key)``: the conditions of
    equal keys are merged first, so the multiplexer has one input per distinct value, not per condition."""
    conditions = {}
    for condition, key in choices:
        conditions.setdefault(key, []).append(condition)
    return pick([(Cat(*group).any() if len(group) > 1 else group[0], value_of(key))
                 for key, group in conditions.items()], default)


def replica(m, value, *, name, init=0, reset_less=False):
    """A register of ``value`` that synthesis keeps as a copy of its own (see :data:`REPLICA_ATTR`).

    ``reset_less`` for copies of data and addresses, which the next cycle overwrites anyway: the reset net
    then need not reach every copy across the die."""
    reg = Signal(Value.cast(value).shape(), name=name, init=init, reset_less=reset_less, attrs={REPLICA_ATTR: 1})
    m.d.sync += reg.eq(value)
    return reg


def split_modes(m, split, modes, *, name):
    """A local, registered one-hot decode of ``split``: ``{n: split == n}`` one cycle later, for every ``n`` of
    ``modes``. Each caller gets its own replica, so the decode reaches its loads from a nearby register rather
    than through a die-wide net. The copies take no reset (they are a function of ``split`` alone), so the
    reset net need not reach them."""
    return {n: replica(m, split == n, name=f"{name}_mode{n}", reset_less=True) for n in modes}
