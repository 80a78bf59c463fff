"""Selection helpers shared by the blocks whose wiring follows the run-time split."""

from amaranth.hdl import Cat, Mux

__all__ = ["pick", "pick_keyed"]


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
