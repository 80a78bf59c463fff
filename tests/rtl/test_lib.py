"""The shared gateware pieces of rpaccel.rtl.lib, each against a golden model, cycle by cycle, under random stalls
and back-pressure, with a planted bug the check must catch, and their parameter checks."""

import random
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rpaccel.rtl.lib.credit import CreditCounter
from rpaccel.rtl.lib.delay import DelayLine, shift_register
from rpaccel.rtl.lib.queue import Queue
from rpaccel.rtl.lib.slice import RegisterSlice
from rpaccel.sim.streams import run_simulation

from stream_fifo import pass_through

LAYOUT = data.StructLayout({"value": signed(12), "last": 1})


# --- Register slice ---------------------------------------------------------------------------------------

def random_items(rng, count):
    return [{"value": int(v), "last": int(last)}
            for v, last in zip(rng.integers(-2048, 2048, count), rng.integers(0, 2, count))]


@pytest.mark.parametrize(("in_pause", "out_pause"), [(0.0, 0.0), (0.4, 0.0), (0.0, 0.4), (0.4, 0.4)])
def test_slice_passes_every_item_in_order_under_stalls(in_pause, out_pause):
    items = random_items(np.random.default_rng(5), 400)
    dut = RegisterSlice(LAYOUT)
    got, cycles, idle = pass_through(dut, items, in_pause, out_pause, after=lambda ctx: ctx.get(dut.idle))
    assert got == items
    assert idle
    if not in_pause and not out_pause:
        assert cycles <= len(items) + 3  # one transfer per cycle


def slice_errors(dut, *, seed, cycles=4000):
    """Random ``i.valid``, ``o.ready`` and ``clear`` every cycle against a two-entry queue with a cycle of latency:
    ``i.ready`` while it holds fewer than two, ``o`` its head, ``idle`` when empty, ``ready_next`` after the cycle's
    transfers and ``clear`` (which drops what it holds and the cycle's input)."""
    rng = random.Random(seed)
    errors = []

    async def bench(ctx):
        queue = deque()
        for cycle in range(cycles):
            i_valid, o_ready, clear = rng.random() < 0.7, rng.random() < 0.6, rng.random() < 0.03
            value = rng.getrandbits(8)
            ctx.set(dut.i.valid, i_valid)
            ctx.set(dut.i.payload, value)
            ctx.set(dut.o.ready, o_ready)
            ctx.set(dut.clear, clear)
            state = (ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.idle))
            expected = (int(len(queue) < 2), int(bool(queue)), int(not queue))
            if state != expected:
                errors.append((cycle, "handshakes", state, expected))
            if queue and ctx.get(dut.o.payload) != queue[0]:
                errors.append((cycle, "payload", ctx.get(dut.o.payload), queue[0]))
            accept = i_valid and len(queue) < 2
            if o_ready and queue:
                queue.popleft()
            if accept:
                queue.append(value)
            if clear:
                queue.clear()
            if ctx.get(dut.ready_next) != int(len(queue) < 2):
                errors.append((cycle, "ready_next", ctx.get(dut.ready_next), int(len(queue) < 2)))
            await ctx.tick()

    run_simulation(dut, [bench], name="register-slice")
    return errors


def test_slice_against_a_two_entry_queue():
    errors = slice_errors(RegisterSlice(8), seed=1)
    assert not errors, errors[:5]


class _ReadyNextLags(RegisterSlice):
    """Planted bug: ``ready_next`` is this cycle's ``i.ready``."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.ready_next.eq(self.i.ready)
        return m


class _ClearIgnored(RegisterSlice):
    """Planted bug: ``clear`` is not passed on to the slice inside."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = RegisterSlice(self.i.payload.shape())
        wiring.connect(m, wiring.flipped(self.i), inner.i)
        wiring.connect(m, inner.o, wiring.flipped(self.o))
        m.d.comb += [self.ready_next.eq(inner.ready_next), self.idle.eq(inner.idle)]
        return m


def test_slice_check_catches_planted_bugs():
    assert any(kind == "ready_next" for _, kind, *_ in slice_errors(_ReadyNextLags(8), seed=1))
    assert slice_errors(_ClearIgnored(8), seed=1)


def test_slice_handshakes_come_from_registers():
    """``i.ready`` and ``o.valid`` are flip-flops: no combinational path from ``o.ready`` or ``i.valid``."""
    dut = RegisterSlice(8)
    # Driving o.ready or i.valid and reading i.ready/o.valid in the same cycle must not change them.
    seen = []

    async def bench(ctx):
        for ready, valid in [(0, 1), (1, 1), (0, 0), (1, 0), (0, 1), (0, 1), (0, 1)]:
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, len(seen))
            before = (ctx.get(dut.i.ready), ctx.get(dut.o.valid))
            ctx.set(dut.o.ready, 1 - ready)
            ctx.set(dut.i.valid, 1 - valid)
            seen.append(before == (ctx.get(dut.i.ready), ctx.get(dut.o.valid)))
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, valid)
            await ctx.tick()
        # Two items went in while the output stalled: the slice is full and says so.
        assert ctx.get(dut.i.ready) == 0 and ctx.get(dut.o.valid) == 1

    run_simulation(dut, [bench])
    assert all(seen)


def test_slice_bad_shape():
    with pytest.raises(TypeError, match="Register slice payload must be a shape, not 'wide'"):
        RegisterSlice("wide")


# --- Queue ------------------------------------------------------------------------------------------------

def queue_errors(dut, *, write_rate, read_rate, seed, cycles=3000):
    """Random writes and reads against a queue model, every cycle: ``level`` and ``w_rdy`` count what was
    accepted, ``r_rdy`` says the oldest entry was accepted two or more cycles ago, ``r_data`` is that entry, and a
    write to a full queue or a read of an empty one changes nothing. Returns the mismatches and the reads."""
    rng = random.Random(seed)
    width, depth = sum(dut.widths), dut.depth
    errors, reads = [], [0]

    async def bench(ctx):
        queue = deque()  # (value, cycle accepted)
        for cycle in range(cycles):
            w_en, r_en = int(rng.random() < write_rate), int(rng.random() < read_rate)
            value = rng.getrandbits(width)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, value)
            ctx.set(dut.r_en, r_en)
            readable = bool(queue) and queue[0][1] <= cycle - 2
            state = (ctx.get(dut.level), ctx.get(dut.w_rdy), ctx.get(dut.r_rdy))
            expected = (len(queue), int(len(queue) < depth), int(readable))
            if state != expected:
                errors.append((cycle, state, expected))
            if r_en and readable:
                if ctx.get(dut.r_data) != queue[0][0]:
                    errors.append((cycle, "r_data", ctx.get(dut.r_data), queue[0][0]))
                queue.popleft()
                reads[0] += 1
            if w_en and expected[1]:
                queue.append((value, cycle))
            await ctx.tick()

    run_simulation(dut, [bench], name="queue")
    return errors, reads[0]


@pytest.mark.parametrize(("widths", "depth", "register", "write_rate", "read_rate"), [
    ([32, 32, 5], 16, "write", 0.7, 0.5), ([32, 32, 5], 16, "write", 0.5, 0.9), ([7], 2, "write", 0.8, 0.8),
    ([3, 9, 1, 4], 4, "write", 1.0, 1.0), (40, 16, "read", 0.7, 0.5), (40, 16, "read", 0.5, 0.9),
    (7, 2, "read", 0.8, 0.8), (9, 5, "read", 1.0, 1.0)])
def test_queue_against_a_queue_model(widths, depth, register, write_rate, read_rate):
    dut = Queue(widths, depth=depth, register=register)
    errors, reads = queue_errors(dut, write_rate=write_rate, read_rate=read_rate, seed=depth + len(register))
    assert not errors, errors[:5]
    assert reads > 1000


class _WrapsEarly(Queue):
    """Planted bug: the pointers wrap after half the entries, so a fuller queue overwrites its oldest entries."""

    def _incr(self, pointer):
        return Mux(pointer >= self.depth // 2 - 1, 0, pointer + 1)


@pytest.mark.parametrize("register", ["write", "read"])
def test_queue_check_catches_a_planted_bug(register):
    errors, _ = queue_errors(_WrapsEarly(8, depth=4, register=register), write_rate=0.8, read_rate=0.4, seed=3)
    assert any(error[1] == "r_data" for error in errors)


def test_queue_bad_parameters():
    with pytest.raises(TypeError, match=r"or a non-empty list of them, not \[32, 0\]"):
        Queue([32, 0], depth=4)
    with pytest.raises(TypeError, match="not 'wide'"):
        Queue("wide", depth=4)
    with pytest.raises(ValueError, match="Queue depth must be an integer of at least 2, not 1"):
        Queue([8], depth=1)
    with pytest.raises(ValueError, match="Queue register must be one of write, read, not 'both'"):
        Queue(8, depth=4, register="both")
    with pytest.raises(ValueError, match=r"register='read' has one slice, not widths \[8, 8\]"):
        Queue([8, 8], depth=4, register="read")


# --- Delay lines ------------------------------------------------------------------------------------------

def delay_line_errors(dut, *, seed, cycles=200):
    """A random input every cycle; from cycle ``delay`` on, ``o`` must show the input of ``delay`` cycles before."""
    width = Shape.cast(dut.i.shape()).width
    rng = random.Random(seed)
    values = [rng.getrandbits(width) for _ in range(cycles)]
    errors = []

    async def bench(ctx):
        for cycle, value in enumerate(values):
            ctx.set(Value.cast(dut.i), value)
            got = ctx.get(Value.cast(dut.o))
            if cycle >= dut.delay and got != values[cycle - dut.delay]:
                errors.append((cycle, got, values[cycle - dut.delay]))
            await ctx.tick()

    run_simulation(dut, [bench], name="delay-line")
    return errors


@pytest.mark.parametrize(("shape", "delay"), [(12, 2), (12, 5), (LAYOUT, 16), (12, 17), (3, 40)])
def test_delay_line_shows_the_input_of_delay_cycles_before(shape, delay):
    dut = DelayLine(shape, delay)
    assert not delay_line_errors(dut, seed=delay)
    assert dut.storage_depth == (16 if delay <= 16 else 32 if delay <= 32 else 64)


class _ShallowStorage(DelayLine):
    """Planted bug: the storage is 16 deep whatever the delay, so a longer delay reads overwritten entries."""

    def __init__(self, shape, delay):
        super().__init__(shape, delay)
        self.storage_depth = 16


def test_delay_line_check_catches_a_planted_bug():
    assert delay_line_errors(_ShallowStorage(12, 20), seed=1)


def test_delay_line_bad_parameters():
    with pytest.raises(ValueError, match="Delay line delay must be an integer of at least 2, not 1"):
        DelayLine(12, 1)
    with pytest.raises(TypeError, match="Delay line shape must be a shape, not 'wide'"):
        DelayLine("wide", 4)


class _Chain(wiring.Component):
    """A :func:`shift_register` with an enable, every stage an output."""

    def __init__(self, depth, *, enable):
        self.depth, self.enable = depth, enable
        super().__init__({"i": In(LAYOUT), "en": In(1), "stages": Out(LAYOUT).array(depth)})

    def elaborate(self, platform):
        m = Module()
        stages = shift_register(m, self.i, self.depth, name="stage", en=self.en if self.enable else None,
                                reset_less=True)
        m.d.comb += [port.eq(stage) for port, stage in zip(self.stages, stages)]
        return m


@pytest.mark.parametrize("enable", [False, True])
def test_shift_register_stages_hold_the_enabled_history(enable):
    """Stage k shows the input of the (k + 1)-th last enabled cycle (every cycle without an enable)."""
    dut = _Chain(4, enable=enable)
    rng = random.Random(7)
    errors = []

    async def bench(ctx):
        history = deque([None] * dut.depth, maxlen=dut.depth)   # newest first
        for cycle in range(500):
            value, en = {"value": rng.randrange(-2048, 2048), "last": rng.randrange(2)}, rng.random() < 0.6
            ctx.set(dut.i, value)
            ctx.set(dut.en, en)
            for k, expected in enumerate(history):
                got = ctx.get(dut.stages[k])
                if expected is not None and {"value": got.value, "last": got.last} != expected:
                    errors.append((cycle, k, got, expected))
            if en or not enable:
                history.appendleft(value)
            await ctx.tick()

    run_simulation(dut, [bench], name="shift-register")
    assert not errors, errors[:5]


def test_shift_register_names_shape_and_bad_depth():
    m = Module()
    value = Signal(range(10))
    stages = shift_register(m, value, 3, name="f{}_valid", first=4)
    assert [s.name for s in stages] == ["f4_valid", "f5_valid", "f6_valid"]
    assert shift_register(m, value + 1, 2, name="d", shape=4)[1].name == "d2"
    assert shift_register(m, value + 1, 1, name="d", shape=4)[0].shape().width == 4
    with pytest.raises(ValueError, match="Shift register depth must be a positive integer, not 0"):
        shift_register(m, value, 0, name="d")
    with pytest.raises(TypeError, match="Shift register shape must be a shape, not 'wide'"):
        shift_register(m, value, 2, name="d", shape="wide")
    Fragment.get(m, None)   # the registers elaborate


# --- Credit counter ---------------------------------------------------------------------------------------

def credit_errors(dut, *, seed, max_take, max_give, cycles=3000):
    """Random takes (only with ``room``) and gives (at most what is taken) against a count: ``count`` and
    ``room`` are the count of the cycle, ``room_next`` that of the next."""
    rng = random.Random(seed)
    errors = []

    async def bench(ctx):
        count = 0
        for cycle in range(cycles):
            room = count + dut.need <= dut.capacity
            take = rng.randint(0, max_take) if room else 0
            give = rng.randint(0, min(max_give, count))
            ctx.set(dut.take, take)
            ctx.set(dut.give, give)
            state = (ctx.get(dut.count), ctx.get(dut.room))
            if state != (count, int(room)):
                errors.append((cycle, state, (count, int(room))))
            count += take - give
            if ctx.get(dut.room_next) != int(count + dut.need <= dut.capacity):
                errors.append((cycle, "room_next", count))
            await ctx.tick()

    run_simulation(dut, [bench], name="credit-counter")
    return errors


@pytest.mark.parametrize("registered", [True, False])
@pytest.mark.parametrize(("capacity", "need", "max_take", "max_give"), [(16, 2, 1, 1), (8, 1, 1, 2), (24, 4, 4, 5)])
def test_credit_counter_against_a_count(capacity, need, max_take, max_give, registered):
    dut = CreditCounter(capacity, need=need, max_take=max_take, max_give=max_give, registered=registered)
    assert not credit_errors(dut, seed=capacity, max_take=max_take, max_give=max_give)


@pytest.mark.parametrize("registered", [True, False])
def test_credit_counter_fills_and_drains_a_small_queue(registered):
    """The lanes' use: one place taken and one given back at most per cycle, taken only with ``room``, never
    more given back than taken; the count goes through every level from empty to full."""
    dut = CreditCounter(3, registered=registered)
    rng = random.Random(7)
    seen = set()

    async def bench(ctx):
        used = 0
        for _ in range(400):
            room = bool(ctx.get(dut.room))
            assert room == (used < 3)
            assert ctx.get(dut.count) == used
            take = room and rng.random() < 0.6
            give = used > 0 and rng.random() < 0.5
            ctx.set(dut.take, take)
            ctx.set(dut.give, give)
            used += take - give
            seen.add(used)
            await ctx.tick()

    run_simulation(dut, [bench], max_cycles=1_000, name="credit-counter")
    assert seen == {0, 1, 2, 3}


class _RoomFromCount(CreditCounter):
    """Planted bug: ``room`` registered from the count of the cycle, not the next one (a cycle late)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.room_next.eq(self.count + self.need <= self.capacity)
        return m


def test_credit_counter_check_catches_a_planted_bug():
    assert credit_errors(_RoomFromCount(8, need=2, max_take=2, max_give=2), seed=1, max_take=2, max_give=2)


def test_credit_counter_bad_parameters():
    with pytest.raises(ValueError, match="Credit counter capacity must be a positive integer, not 0"):
        CreditCounter(0)
    with pytest.raises(ValueError, match="Credit counter maximum give must be a positive integer, not -1"):
        CreditCounter(4, max_give=-1)
    with pytest.raises(ValueError, match="Credit counter need must be a positive integer of at most the capacity 4, "
                                         "not 5"):
        CreditCounter(4, need=5)
    with pytest.raises(TypeError, match="Credit counter registered must be a bool, not 'yes'"):
        CreditCounter(4, registered="yes")
