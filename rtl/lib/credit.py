"""The credit counter: places of a resource taken and not yet given back, and whether more may be taken."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CreditCounter"]


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class CreditCounter(wiring.Component):
    """Places of a resource (a queue's entries, the results a pipeline has in flight) taken and not yet given
    back, with the decision "``need`` more may be taken" in a register.

    A producer that takes places only when ``room`` is high never overfills the resource, and its decision
    starts from a flip-flop: ``room`` is decided a cycle ahead, from the count the cycle's ``take`` and ``give``
    make (``room_next``), so it is exactly ``count + need <= capacity`` in every cycle. The resource itself need
    not check its writes.

    Parameters
    ----------
    capacity : int
        Places of the resource.
    need : int
        Places that must be free for ``room`` (the most a producer takes in a cycle, or more when its decision
        lags), at most ``capacity``.
    max_take, max_give : int
        Most places taken and given back in one cycle.

    Members
    -------
    take : In(range(max_take + 1))
        Places taken this cycle.
    give : In(range(max_give + 1))
        Places given back this cycle.
    count : Out(range(capacity + 1))
        Places taken and not given back (a register).
    room : Out(1)
        ``count + need <= capacity`` (a register).
    room_next : Out(1)
        ``room`` of the next cycle.
    """

    def __init__(self, capacity, *, need=1, max_take=1, max_give=1):
        error = None
        for what, value in (("capacity", capacity), ("maximum take", max_take), ("maximum give", max_give)):
            if not _positive(value):
                error = f"Credit counter {what} must be a positive integer, not {value!r}"
                break
        else:
            if not _positive(need) or need > capacity:
                error = f"Credit counter need must be a positive integer of at most the capacity {capacity}, " \
                        f"not {need!r}"
        if error is not None:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise ValueError(error)
        self.capacity, self.need = capacity, need
        super().__init__({"take": In(range(max_take + 1)), "give": In(range(max_give + 1)),
                          "count": Out(range(capacity + 1)), "room": Out(1, init=1), "room_next": Out(1)})

    def elaborate(self, platform):
        m = Module()
        count_next = Signal.like(self.count, name="count_next")
        m.d.comb += [count_next.eq(self.count - self.give + self.take),
                     self.room_next.eq(count_next + self.need <= self.capacity)]
        m.d.sync += [self.count.eq(count_next), self.room.eq(self.room_next)]
        return m
