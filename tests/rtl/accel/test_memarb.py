"""rpaccel.rtl.accel.memarb: several requesters issue random reads and writes through the arbiter to a memory
modelled in the testbench (a Python dict served in order, random latency and back-pressure); every request, every
line and every counter is checked, cycle by cycle, with planted bugs the check must catch."""

import random
import re
from collections import deque

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from rpaccel.rtl.accel.memarb import MemoryArbiter, ReadBuffer
from rpaccel.rtl.memory import MemoryPort
from rpaccel.sim.streams import run_simulation

PORT = MemoryPort(addr_bits=8, line_bytes=4, max_burst=4)
LINES = 1 << PORT.addr_bits
#: Requester ``k`` reads lines ``k * REGION ..`` only, so the memory can tell whose a read is; writes go anywhere
#: and carry their requester in the data's top bits. At most LINES // REGION requesters.
REGION = 32


def random_request(rng, k, seq, write_fraction):
    if rng.random() < write_fraction:
        return {"write": 1, "addr": rng.randrange(LINES), "length": rng.randrange(4),  # length is ignored
                "data": (k << 28) | (seq << 16) | rng.getrandbits(16)}
    length = rng.randrange(PORT.max_burst)
    return {"write": 0, "addr": k * REGION + rng.randrange(REGION - length), "length": length, "data": 0}


def requester_of(request):
    return request["data"] >> 28 if request["write"] else request["addr"] // REGION


def arbiter_errors(dut, *, seed, requests=120, write_fraction=0.4, req_pause=0.3, resp_pause=0.3, mem_pause=0.3,
                   latency=(1, 12), line_pause=0.2, clear_rate=0.02, max_cycles=20_000):
    """Run ``requests`` random requests per requester through ``dut`` and check, every cycle: at most one request
    granted; the memory receives each requester's requests unchanged and in order; every line goes to the
    requester that asked, in order and in the cycle it leaves the memory; at most ``outstanding`` reads in flight;
    ``idle`` and the counters. The memory serves requests in order (a read sees every earlier write), each read's
    lines no earlier than a random latency after it was accepted. Returns ``(errors, stats)``: ``stats`` holds the
    cycles, the most reads in flight and, per request, the grants to others while it waited."""
    rng = random.Random(seed)
    n = dut.n
    memory = {a: rng.getrandbits(32) for a in range(LINES)}
    errors, stats = [], {"cycles": 0, "max_in_flight": 0, "waits": []}

    async def bench(ctx):
        current = [None] * n            # [request, grants to others since it became valid]
        made = [0] * n
        issued = [deque() for _ in range(n)]     # granted, not yet at the memory
        expected = [deque() for _ in range(n)]   # lines the memory read for the requester, not yet delivered
        in_flight = deque()                      # [requester, lines not yet delivered] per granted read
        mem_lines = deque()                      # [cycle from which the line may go, value]
        counts = {"read": 0, "write": 0}
        for cycle in range(max_cycles):
            for k in range(n):
                if current[k] is None and made[k] < requests and rng.random() >= req_pause:
                    current[k] = [random_request(rng, k, made[k], write_fraction), 0]
                    made[k] += 1
                ctx.set(dut.req[k].req.valid, current[k] is not None)
                if current[k] is not None:
                    ctx.set(dut.req[k].req.payload, current[k][0])
                ctx.set(dut.req[k].resp.ready, rng.random() >= resp_pause)
            ctx.set(dut.mem.req.ready, rng.random() >= mem_pause)
            line_valid = bool(mem_lines) and mem_lines[0][0] <= cycle and rng.random() >= line_pause
            ctx.set(dut.mem.resp.valid, line_valid)
            if line_valid:
                ctx.set(dut.mem.resp.payload, mem_lines[0][1])
            clear = rng.random() < clear_rate
            ctx.set(dut.clear, clear)

            state = (ctx.get(dut.idle), ctx.get(dut.read_lines), ctx.get(dut.write_lines))
            model = (int(not any(issued) and not in_flight), counts["read"], counts["write"])
            if state != model:
                errors.append((cycle, "idle, read_lines, write_lines", state, model))

            # Grants.
            granted = [k for k in range(n) if current[k] is not None and ctx.get(dut.req[k].req.ready)]
            if len(granted) > 1:
                errors.append((cycle, "grants", granted))
            for k in granted:
                request, waited = current[k]
                stats["waits"].append((k, request["write"], waited))
                issued[k].append(request)
                if not request["write"]:
                    in_flight.append([k, request["length"] + 1])
                current[k] = None
            for k in range(n):
                if current[k] is not None and granted:
                    current[k][1] += 1
            if len(in_flight) > dut.outstanding:
                errors.append((cycle, "reads in flight", len(in_flight)))
            stats["max_in_flight"] = max(stats["max_in_flight"], len(in_flight))

            # The memory.
            line_in = line_out = 0
            if ctx.get(dut.mem.req.valid) and ctx.get(dut.mem.req.ready):
                request = {name: ctx.get(getattr(dut.mem.req.payload, name))
                           for name in ("write", "addr", "length", "data")}
                k = requester_of(request)
                sent = issued[k].popleft() if k < n and issued[k] else None
                if sent is None:
                    errors.append((cycle, "request nobody sent", request))
                elif (request["write"], request["addr"]) != (sent["write"], sent["addr"]) or (
                        request["data"] != sent["data"] if sent["write"] else request["length"] != sent["length"]):
                    errors.append((cycle, "request changed", k, request, sent))
                elif request["write"]:
                    memory[request["addr"]] = request["data"]
                    line_out = 1
                else:
                    due = cycle + rng.randint(*latency)
                    for i in range(request["length"] + 1):
                        value = memory[(request["addr"] + i) % LINES]
                        expected[k].append(value)
                        mem_lines.append([due, value])
            if line_valid and ctx.get(dut.mem.resp.ready):
                mem_lines.popleft()
                line_in = 1

            # Lines to the requesters.
            delivered = [k for k in range(n) if ctx.get(dut.req[k].resp.valid) and ctx.get(dut.req[k].resp.ready)]
            if len(delivered) != line_in:
                errors.append((cycle, "lines out for lines in", delivered, line_in))
            for k in delivered:
                value = ctx.get(dut.req[k].resp.payload)
                if not in_flight or in_flight[0][0] != k:
                    errors.append((cycle, "line to the wrong requester", k, in_flight[0][0] if in_flight else None))
                    continue
                if value != expected[k].popleft():
                    errors.append((cycle, "line", k, value))
                in_flight[0][1] -= 1
                if not in_flight[0][1]:
                    in_flight.popleft()

            counts = {"read": (0 if clear else counts["read"]) + line_in,
                      "write": (0 if clear else counts["write"]) + line_out}
            await ctx.tick()
            done = all(made[k] == requests and current[k] is None for k in range(n))
            if done and not any(issued) and not in_flight and not mem_lines:
                if not ctx.get(dut.idle):
                    errors.append((cycle, "not idle at the end"))
                if (ctx.get(dut.read_lines), ctx.get(dut.write_lines)) != (counts["read"], counts["write"]):
                    errors.append((cycle, "counters at the end"))
                stats["cycles"] = cycle + 1
                return
        errors.append(("timeout", made, [len(q) for q in issued], len(in_flight)))

    run_simulation(dut, [bench], max_cycles=max_cycles + 10, name="memarb")
    return errors, stats


@pytest.mark.parametrize(("n", "outstanding", "seed", "pauses", "latency"), [
    (3, 16, 1, 0.3, (1, 12)), (3, 3, 2, 0.3, (1, 12)), (3, 4, 3, 0.0, (1, 3)), (3, 16, 4, 0.5, (5, 30)),
    (1, 3, 5, 0.3, (1, 8)), (5, 8, 6, 0.2, (2, 20))])
def test_requesters_get_their_lines(n, outstanding, seed, pauses, latency):
    dut = MemoryArbiter(PORT, n, outstanding=outstanding)
    errors, stats = arbiter_errors(dut, seed=seed, req_pause=pauses, resp_pause=pauses, mem_pause=pauses,
                                   line_pause=pauses, latency=latency)
    assert not errors, errors[:5]
    if outstanding <= 4:
        assert stats["max_in_flight"] == outstanding  # the bound was reached, and held


def test_one_request_per_cycle():
    """Writes only, nothing stalls: one grant per cycle, requesters taking turns."""
    dut = MemoryArbiter(PORT, 3)
    errors, stats = arbiter_errors(dut, seed=7, requests=100, write_fraction=1.0, req_pause=0.0, resp_pause=0.0,
                                   mem_pause=0.0, line_pause=0.0, clear_rate=0.0)
    assert not errors, errors[:5]
    assert stats["cycles"] <= 300 + 3
    assert max(waited for _, _, waited in stats["waits"]) == 2


def fairness(dut, seed):
    """The most grants to others any request waited for, in a busy run whose read queue never fills."""
    errors, stats = arbiter_errors(dut, seed=seed, requests=150, write_fraction=0.5, req_pause=0.1, resp_pause=0.0,
                                   mem_pause=0.5, line_pause=0.0, latency=(5, 10))
    assert stats["max_in_flight"] <= dut.outstanding - 2  # a read could always be granted
    return errors, max(waited for _, _, waited in stats["waits"])


def test_no_requester_waits_more_than_a_round():
    errors, worst = fairness(MemoryArbiter(PORT, 4, outstanding=64), seed=8)
    assert not errors, errors[:5]
    assert worst <= 3


class _FixedPriority(MemoryArbiter):
    """Planted bug: requester 0 always first, then 1, ..."""

    def _priority(self, last):
        return list(range(self.n))


class _ResponsesSwapped(MemoryArbiter):
    """Planted bug: the lines of requesters 0 and 1 go to each other."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = MemoryArbiter(self.port, self.n, outstanding=self.outstanding)
        for k in range(self.n):
            wiring.connect(m, wiring.flipped(self.req[k].req), inner.req[k].req)
            wiring.connect(m, inner.req[k].resp, wiring.flipped(self.req[k ^ 1 if k < 2 else k].resp))
        wiring.connect(m, inner.mem, wiring.flipped(self.mem))
        m.d.comb += [inner.clear.eq(self.clear), self.idle.eq(inner.idle), self.read_lines.eq(inner.read_lines),
                     self.write_lines.eq(inner.write_lines)]
        return m


def test_checks_catch_planted_bugs():
    errors, _ = arbiter_errors(_ResponsesSwapped(PORT, 3), seed=1, requests=30)
    assert any(error[1] == "line to the wrong requester" for error in errors)
    errors, worst = fairness(_FixedPriority(PORT, 4, outstanding=64), seed=8)
    assert not errors and worst > 3


def test_bad_parameters():
    with pytest.raises(TypeError, match="Memory arbiter port must be a MemoryPort, not 8"):
        MemoryArbiter(8, 2)
    with pytest.raises(ValueError, match="Memory arbiter requesters must be a positive integer, not 0"):
        MemoryArbiter(PORT, 0)
    with pytest.raises(ValueError, match="Memory arbiter outstanding reads must be an integer of at least 3, not 2"):
        MemoryArbiter(PORT, 2, outstanding=2)


# The read buffer ---------------------------------------------------------------------------------------------------


def read_buffer_errors(dut, *, seed, requests=150, write_fraction=0.2, req_pause=0.2, hold=0.9, hold_cycles=60,
                       latency=(1, 10), max_cycles=30_000):
    """Random reads and writes from a requester that holds its lines up for long spells (``hold``: probability that
    a spell of up to ``hold_cycles`` cycles of ``resp.ready`` low begins after a line), through ``dut`` to a memory
    that answers each read after a random latency and never waits. Checked every cycle: requests reach the memory
    unchanged and in order; the buffer never refuses a line the memory offers; the requester gets every line, in
    order; at most ``dut.lines`` lines are requested and not yet taken; ``idle``. Returns ``(errors, stats)``."""
    rng = random.Random(seed)
    memory = {a: rng.getrandbits(32) for a in range(LINES)}
    errors, stats = [], {"most_lines": 0, "held_reads": 0}

    async def bench(ctx):
        made, current, sent = 0, None, deque()
        expected, mem_lines = deque(), deque()      # lines the requester must get; [due cycle, value] at the memory
        owed = 0                                    # lines requested and not yet taken
        held = 0
        for cycle in range(max_cycles):
            if current is None and made < requests and rng.random() >= req_pause:
                current = random_request(rng, 0, made, write_fraction)
                made += 1
            ctx.set(dut.requester.req.valid, current is not None)
            if current is not None:
                ctx.set(dut.requester.req.payload, current)
            ctx.set(dut.requester.resp.ready, held == 0)
            ctx.set(dut.mem.req.ready, 1)
            line_valid = bool(mem_lines) and mem_lines[0][0] <= cycle
            ctx.set(dut.mem.resp.valid, line_valid)
            if line_valid:
                ctx.set(dut.mem.resp.payload, mem_lines[0][1])

            if ctx.get(dut.idle) != (owed == 0):
                errors.append((cycle, "idle", ctx.get(dut.idle), owed))
            if current is not None and not current["write"] and not ctx.get(dut.requester.req.ready):
                stats["held_reads"] += 1
            if current is not None and ctx.get(dut.requester.req.ready):
                sent.append(current)
                if not current["write"]:
                    owed += current["length"] + 1
                current = None
            stats["most_lines"] = max(stats["most_lines"], owed)
            if owed > dut.lines:
                errors.append((cycle, "lines requested and not taken", owed))
            if ctx.get(dut.mem.req.valid) and ctx.get(dut.mem.req.ready):
                request = {name: ctx.get(getattr(dut.mem.req.payload, name))
                           for name in ("write", "addr", "length", "data")}
                want = sent.popleft() if sent else None
                if want is None or (request["write"], request["addr"]) != (want["write"], want["addr"]) or (
                        request["data"] != want["data"] if want["write"] else request["length"] != want["length"]):
                    errors.append((cycle, "request", request, want))
                elif request["write"]:
                    memory[request["addr"]] = request["data"]
                else:
                    due = cycle + rng.randint(*latency)
                    for i in range(request["length"] + 1):
                        value = memory[(request["addr"] + i) % LINES]
                        expected.append(value)
                        mem_lines.append([due, value])
            if line_valid:
                if ctx.get(dut.mem.resp.ready):
                    mem_lines.popleft()
                else:
                    errors.append((cycle, "a line from the memory refused"))
            if ctx.get(dut.requester.resp.valid) and ctx.get(dut.requester.resp.ready):
                value = ctx.get(dut.requester.resp.payload)
                if not expected or value != expected.popleft():
                    errors.append((cycle, "line", value))
                owed -= 1
                if rng.random() < hold:
                    held = rng.randint(1, hold_cycles)
            elif held:
                held -= 1
            await ctx.tick()
            if made == requests and current is None and not sent and not expected and not owed:
                return
        errors.append(("timeout", made, len(expected), owed))

    run_simulation(dut, [bench], max_cycles=max_cycles + 10, name="read-buffer")
    return errors, stats


@pytest.mark.parametrize(("lines", "seed", "hold", "latency"), [
    (PORT.max_burst, 1, 0.9, (1, 10)), (3 * PORT.max_burst, 2, 0.5, (1, 30)), (2 * PORT.max_burst, 3, 0.0, (1, 3))])
def test_read_buffer_takes_every_line_the_memory_offers(lines, seed, hold, latency):
    """However long the requester holds its lines up, the memory's lines are always taken: the buffer passes a read
    only while it has room for its lines."""
    dut = ReadBuffer(PORT, lines)
    errors, stats = read_buffer_errors(dut, seed=seed, hold=hold, latency=latency)
    assert not errors, errors[:5]
    if hold:
        assert stats["held_reads"] > 0 and stats["most_lines"] > lines - PORT.max_burst   # the bound was reached


class _NoRoomCheck(ReadBuffer):
    """Planted bug: reads pass whether or not the queue has room for their lines."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += [self.mem.req.valid.eq(self.requester.req.valid), self.requester.req.ready.eq(self.mem.req.ready)]
        return m


def test_read_buffer_check_catches_a_buffer_without_credit():
    errors, _ = read_buffer_errors(_NoRoomCheck(PORT, PORT.max_burst), seed=1)
    assert any(error[1] in ("a line from the memory refused", "lines requested and not taken") for error in errors)


@pytest.mark.parametrize(("lines", "message"), [
    (3, "Read buffer lines must be an integer of at least the longest read (4 lines), not 3"),
    (True, "Read buffer lines must be an integer of at least the longest read (4 lines), not True")])
def test_read_buffer_rejects_bad_parameters(lines, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ReadBuffer(PORT, lines)
