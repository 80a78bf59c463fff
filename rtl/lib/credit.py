"""The credit counter: places of a resource taken and not yet given back, and whether more may be taken."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CreditCounter"]


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class CreditCounter(wiring.Component):
    """Places of a resource (a queue's entries, the results a pipeline has in flight) taken and not yet given
    back, and whether ``need`` more may be taken.

    A producer that takes places only when ``room`` is high never overfills the resource: the resource itself
    need not check its writes, and the producer's decision never waits on the resource's own level arithmetic.
    ``room`` is exactly ``count + need <= capacity`` in every cycle. By default it is a register, decided a cycle
    ahead from the count that the cycle's ``take`` and ``give`` make (``room_next``), so a decision that fans out
    starts from a flip-flop; with ``registered=False`` it is a compare of the ``count`` register (one flip-flop
    fewer, a compare more in front of the decision).

    Parameters
    ----------
    capacity : int
        Places of the resource.
    need : int
        Places that must be free for ``room`` (the most a producer takes in a cycle, or more when its decision
        lags), at most ``capacity``.
    max_take, max_give : int
        Most places taken and given back in one cycle.
    registered : bool
        ``room`` is a register (default), or a compare of ``count``.

    Members
    -------
    take : In(range(max_take + 1))
        Places taken this cycle.
    give : In(range(max_give + 1))
        Places given back this cycle.
    count : Out(range(capacity + 1))
        Places taken and not given back (a register).
    room : Out(1)
        ``count + need <= capacity`` (a register if ``registered``).
    room_next : Out(1)
        ``room`` of the next cycle.
    """

    def __init__(self, capacity, *, need=1, max_take=1, max_give=1, registered=True):
        error = None
        for what, value in (("capacity", capacity), ("maximum take", max_take), ("maximum give", max_give)):
            if not _positive(value):
                error = ValueError(f"Credit counter {what} must be a positive integer, not {value!r}")
                break
        else:
            if not _positive(need) or need > capacity:
                error = ValueError(f"Credit counter need must be a positive integer of at most the capacity "
                                   f"{capacity}, not {need!r}")
            elif not isinstance(registered, bool):
                error = TypeError(f"Credit counter registered must be a bool, not {registered!r}")
        if error is not None:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise error
        self.capacity, self.need, self.registered = capacity, need, registered
        super().__init__({"take": In(range(max_take + 1)), "give": In(range(max_give + 1)),
                          "count": Out(range(capacity + 1)), "room": Out(1, init=1), "room_next": Out(1)})

    def _room(self, count):
        # `count + need <= capacity` for a count that never exceeds the capacity: the count is none of the top
        # `need` values. Compares with constants stay in LUTs; synthesis would make `<=` a carry chain.
        return ~Cat(count == full for full in range(self.capacity - self.need + 1, self.capacity + 1)).any()

    def elaborate(self, platform):
        m = Module()
        count_next = Signal.like(self.count, name="count_next")
        m.d.comb += [count_next.eq(self.count - self.give + self.take), self.room_next.eq(self._room(count_next))]
        m.d.sync += self.count.eq(count_next)
        if self.registered:
            m.d.sync += self.room.eq(self.room_next)
        else:
            m.d.comb += self.room.eq(self._room(self.count))
        return m
