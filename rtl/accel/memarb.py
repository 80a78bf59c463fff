"""The memory arbiter: the chip's requesters (fetcher, embedding unit, weight loader) share one memory port; and
the read buffer, which lets a requester that may hold its lines up share the port without holding up the others."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..lib.credit import CreditCounter
from ..lib.queue import Queue
from ..lib.route import RouteDemux, route_layout
from ..lib.select import pick
from ..lib.slice import RegisterSlice
from ..memory import MemoryPort, checked_init

__all__ = ["MemoryArbiter", "ReadBuffer"]


class MemoryArbiter(wiring.Component):
    """Round-robin arbiter of ``n`` requesters over one :class:`~rpaccel.rtl.memory.MemoryPort`.

    Each cycle at most one request is granted, to the first requester with a request after the one granted last
    (round robin, so a requester waits at most ``n - 1`` grants to others while its request can be granted).
    Requests go to the memory unchanged. Each granted read leaves its entry ``{requester, lines}`` in a queue, and
    the lines coming back from the memory (in request order) go to the requester at the head of the queue,
    ``lines`` of them, in order (a :class:`~rpaccel.rtl.lib.route.RouteDemux`). A read is granted only while the
    queue has room, so at most ``outstanding`` reads are in flight (granted and not all their lines delivered).
    Writes are posted: they have no entry and no response, and are granted even when reads are not. Lines are
    delivered in memory order, so a requester that holds its lines up (``resp.ready`` low) holds up every later
    line of every requester: a requester should read only what it has room for.

    Latency: a granted request goes through a :class:`~rpaccel.rtl.lib.slice.RegisterSlice` and reaches ``mem.req``
    one cycle after its transfer on ``req[k].req``, so the arbiter's decision and the payload multiplexer end in
    registers. Lines pass from ``mem.resp`` to ``req[k].resp`` in the same cycle (``mem.resp.ready`` is the
    requester's ready through one multiplexer). A read's entry is ready for its lines three cycles after its grant
    (two after the memory can have accepted the read): lines that come back sooner wait for it. The chip's
    memories answer in five cycles at the earliest (:attr:`rpaccel.rtl.memory.MemoryModel.MIN_LATENCY`).

    Parameters
    ----------
    port : rpaccel.rtl.memory.MemoryPort
        The signature of the memory port (requesters and memory alike).
    n : int
        Requesters.
    outstanding : int
        Most reads in flight (at least 3: a queue of ``outstanding - 1`` entries and the read being answered).

    Members
    -------
    req : In(port).array(n)
        The requesters' ports (``wiring.connect(m, requester.mem, arbiter.req[k])``).
    mem : Out(port)
        To the memory.
    read_lines, write_lines : Out(32)
        Lines read (transfers on ``mem.resp``) and written (write requests on ``mem.req``), modulo ``2**32``.
    clear : In(1)
        Restart the counters: after a cycle with ``clear`` they hold that cycle's lines only.
    idle : Out(1)
        Nothing in flight: no granted request waits for the memory and every line read has been delivered.
    """

    @checked_init
    def __init__(self, port, n, *, outstanding=16):
        if not isinstance(port, MemoryPort):
            raise TypeError(f"Memory arbiter port must be a MemoryPort, not {port!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"Memory arbiter requesters must be a positive integer, not {n!r}")
        if not isinstance(outstanding, int) or isinstance(outstanding, bool) or outstanding < 3:
            raise ValueError(f"Memory arbiter outstanding reads must be an integer of at least 3, not {outstanding!r}")
        self.port, self.n, self.outstanding = port, n, outstanding
        #: Most lines of one read (``length + 1``, ``length`` as wide as the port makes it).
        self.max_lines = port.max_lines
        super().__init__({"req": In(port).array(n), "mem": Out(port), "read_lines": Out(32), "write_lines": Out(32),
                          "clear": In(1), "idle": Out(1)})

    def _priority(self, last):
        """The requesters in order of priority after requester ``last`` was granted."""
        return [(last + 1 + j) % self.n for j in range(self.n)]

    def elaborate(self, platform):
        m = Module()
        n, request = self.n, self.port.request
        entry_layout = route_layout(n, self.max_lines.bit_length())
        m.submodules.slice = slice_ = RegisterSlice(request)
        m.submodules.entries = entries = Queue(entry_layout.size, depth=self.outstanding - 1, register="read")
        m.submodules.demux = demux = RouteDemux(unsigned(8 * self.port.line_bytes), n, self.max_lines.bit_length())

        # The grant: round robin among the requesters whose request can go (a read needs a place in the queue).
        eligible = Cat(r.req.valid & (r.req.payload.write | entries.w_rdy) for r in self.req)
        last = Signal(range(n), init=n - 1)
        grant = Signal(range(n))
        with m.Switch(last):
            for previous in range(n):
                with m.Case(previous):
                    m.d.comb += grant.eq(pick([(eligible[k], k) for k in self._priority(previous)]))
        chosen = Signal(request)
        take = Signal()
        m.d.comb += [chosen.eq(Array(Value.cast(r.req.payload) for r in self.req)[grant]),
                     slice_.i.valid.eq(eligible.any()), slice_.i.payload.eq(chosen),
                     take.eq(slice_.i.valid & slice_.i.ready)]
        for k, r in enumerate(self.req):
            m.d.comb += r.req.ready.eq(slice_.i.ready & eligible[k] & (grant == k))
        with m.If(take):
            m.d.sync += last.eq(grant)
        wiring.connect(m, slice_.o, wiring.flipped(self.mem.req))

        # A granted read's entry, and the lines back to its requester.
        entry = Signal(entry_layout)
        m.d.comb += [entry.port.eq(grant), entry.count.eq(chosen.length + 1),
                     entries.w_en.eq(take & ~chosen.write), entries.w_data.eq(entry),
                     demux.route.valid.eq(entries.r_rdy), demux.route.payload.eq(entries.r_data),
                     entries.r_en.eq(demux.route.ready)]
        wiring.connect(m, wiring.flipped(self.mem.resp), demux.i)
        for k, r in enumerate(self.req):
            wiring.connect(m, demux.o[k], wiring.flipped(r.resp))

        # Lines granted and not delivered, for `idle`.
        pending = Signal(range(self.outstanding * self.max_lines + 1))
        line_in = self.mem.resp.valid & self.mem.resp.ready
        m.d.sync += pending.eq(pending + Mux(entries.w_en, entry.count, 0) - line_in)
        m.d.comb += self.idle.eq(slice_.idle & (pending == 0))

        # Counters.
        line_out = self.mem.req.valid & self.mem.req.ready & self.mem.req.payload.write
        for counter, line in ((self.read_lines, line_in), (self.write_lines, line_out)):
            m.d.sync += counter.eq(Mux(self.clear, 0, counter) + line)
        return m


class ReadBuffer(wiring.Component):
    """Holds a requester's read lines until it takes them, so that it never holds up a shared memory port.

    The :class:`MemoryArbiter` delivers lines in memory order: a requester that stops taking its lines stops every
    requester's. The embedding unit does: it takes a missed line only when its pooled output can move, and that
    output waits on the joiner, which waits on the lanes, which may wait on weights that the weight loader reads
    through the same port (a deadlock). Between such a requester and the arbiter, the buffer passes a read only
    while it has room for all of the read's lines besides the lines already requested and not yet taken
    (a :class:`~rpaccel.rtl.lib.credit.CreditCounter`), and puts every line into a queue, so it takes each line
    as it comes and the requester takes them at its own pace. Writes pass unchanged.

    A line reaches the requester two cycles after it leaves the memory port (the queue's latency, its head in a
    register); the request path adds no register (its ``valid`` is the requester's, gated by a registered ``room``).

    Parameters
    ----------
    port : rpaccel.rtl.memory.MemoryPort
        The signature of the memory port (both sides).
    lines : int
        Lines the buffer holds: the most lines requested and not yet taken (at least the longest read,
        ``port.max_lines``). A requester that itself keeps to fewer lines in flight is never held back.

    Members
    -------
    requester : In(port)
        The requester's port (``wiring.connect(m, requester.mem, buffer.requester)``).
    mem : Out(port)
        Towards the memory or the arbiter.
    idle : Out(1)
        Every line read has been taken by the requester.
    """

    @checked_init
    def __init__(self, port, lines):
        if not isinstance(port, MemoryPort):
            raise TypeError(f"Read buffer port must be a MemoryPort, not {port!r}")
        self.port, self.max_lines = port, port.max_lines
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < self.max_lines:
            raise ValueError(f"Read buffer lines must be an integer of at least the longest read "
                             f"({self.max_lines} lines), not {lines!r}")
        self.lines = lines
        super().__init__({"requester": In(port), "mem": Out(port), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        up, down = self.requester, self.mem
        m.submodules.credit = credit = CreditCounter(self.lines, need=self.max_lines, max_take=self.max_lines)
        # In block RAM (a line is wide and the requester may keep many in flight), its head in a register.
        m.submodules.queue = queue = SyncFIFOBuffered(width=8 * self.port.line_bytes, depth=self.lines)
        request = up.req.payload
        can_go = request.write | credit.room
        m.d.comb += [
            down.req.payload.eq(request), down.req.valid.eq(up.req.valid & can_go),
            up.req.ready.eq(down.req.ready & can_go),
            credit.take.eq(Mux(down.req.valid & down.req.ready & ~request.write, request.length + 1, 0)),
            # Every line in flight has its place: the queue is never full when one comes back.
            queue.w_data.eq(down.resp.payload), queue.w_en.eq(down.resp.valid), down.resp.ready.eq(queue.w_rdy),
            up.resp.payload.eq(queue.r_data), up.resp.valid.eq(queue.r_rdy), queue.r_en.eq(up.resp.ready),
            credit.give.eq(up.resp.valid & up.resp.ready),
            self.idle.eq(credit.count == 0),
        ]
        return m
