"""Stream drivers for the Amaranth simulator: a source with random idle cycles, a sink with random back-pressure.

Both work on any :class:`amaranth.lib.stream.Interface`; payload values are Python values packed and unpacked
through the payload's shape (see :mod:`rpaccel.host.driver.codec`). Stall patterns come from :func:`pauses`, seeded,
so a failing run can be replayed exactly. The cocotb twins are in :mod:`rpaccel.sim.cocotb_streams`.

Example::

    async def bench(ctx):
        await StreamSource(dut.i, pause=0.3, seed=1).send(ctx, inputs)

    async def check(ctx):
        assert await StreamSink(dut.o, pause=0.3, seed=2).receive(ctx, len(inputs)) == expected

    run_simulation(dut, [bench, check])
"""

import itertools
import math
import random
import zlib

import numpy as np
from amaranth.hdl import Value
from amaranth.sim import Simulator

from ..host.driver.codec import codec
from .verilator import waves_dir, waves_enabled

__all__ = ["SimulationTimeout", "StreamSink", "StreamSource", "pauses", "payload_shape", "port_seed",
           "run_simulation", "stall_pattern", "stall_threshold", "xorshift_stalls"]


def payload_shape(stream_signature):
    """The payload shape of a :class:`amaranth.lib.stream.Signature` (or of an interface with one)."""
    signature = getattr(stream_signature, "signature", stream_signature)
    return signature.members["payload"].shape


def pauses(pause=0.0, seed=0):
    """An endless iterator of booleans: ``True`` means "stall this cycle".

    Parameters
    ----------
    pause : float or iterable of bool
        Probability in ``[0, 1)`` of stalling each cycle, or an explicit pattern (repeated forever).
    seed : int
        Seed of the random stall pattern.
    """
    if isinstance(pause, (int, float)) and not isinstance(pause, bool):
        if not 0.0 <= pause < 1.0:
            raise ValueError(f"Pause probability must be in [0, 1), not {pause!r}")
        if pause == 0:
            return itertools.repeat(False)
        rng = random.Random(seed)
        return (rng.random() < pause for _ in itertools.count())
    pattern = [bool(p) for p in pause]
    if not pattern:
        raise ValueError("Pause pattern must not be empty")
    if all(pattern):
        raise ValueError("Pause pattern must contain at least one cycle without a stall")
    return itertools.cycle(pattern)


def stall_threshold(pause):
    """The stall threshold out of ``2**16`` of the Player's stall generators for probability ``pause``."""
    if not 0.0 <= pause < 1.0:
        raise ValueError(f"Pause probability must be in [0, 1), not {pause!r}")
    return min(round(pause * 65536), 65535)


def port_seed(seed, port):
    """The seed of port ``port``'s stall generator in a run seeded with ``seed`` (a non-zero 32-bit number)."""
    return (seed * 7919 + zlib.crc32(port.encode()) + 1) % (1 << 32) or 1


def _xorshift_step(state):
    state ^= (state << 13) & 0xFFFF_FFFF
    state ^= state >> 17
    return state ^ (state << 5) & 0xFFFF_FFFF


def _gf2_apply(columns, state):
    """A 32 x 32 matrix over GF(2), given by the images of the unit vectors, applied to ``state``."""
    result, bit = 0, 0
    while state:
        if state & 1:
            result ^= columns[bit]
        state >>= 1
        bit += 1
    return result


def _xorshift_states(seed, count):
    """The first ``count`` states after ``seed`` of the Player's xorshift (13, 17, 5) (the states
    :func:`xorshift_stalls` draws), as a ``uint64`` array: about ``sqrt(count)`` streams, each
    started a jump of as many steps after the one before (the step's matrix over GF(2) raised to that power), step
    side by side."""
    span = max(1, math.isqrt(count))
    streams = -(-count // span)
    jump, power, left = [1 << bit for bit in range(32)], [_xorshift_step(1 << bit) for bit in range(32)], span
    while left:
        if left & 1:
            jump = [_gf2_apply(power, column) for column in jump]
        power = [_gf2_apply(power, column) for column in power]
        left >>= 1
    starts = [seed & 0xFFFF_FFFF or 1]
    for _ in range(streams - 1):
        starts.append(_gf2_apply(jump, starts[-1]))
    state, mask = np.array(starts, dtype=np.uint64), np.uint64(0xFFFF_FFFF)
    states = np.empty((span, streams), dtype=np.uint64)
    for step in range(span):
        state ^= (state << np.uint64(13)) & mask
        state ^= state >> np.uint64(17)
        state ^= (state << np.uint64(5)) & mask
        states[step] = state
    return states.T.reshape(-1)[:count]


def stall_pattern(pause, seed, count):
    """The first ``count`` cycles of :func:`xorshift_stalls` as a ``bool`` array (``True``: stall), drawn
    vectorised (no Python step per cycle), for models that reproduce a Player run."""
    if count <= 0:
        stall_threshold(pause)
        return np.zeros(0, dtype=bool)
    return (_xorshift_states(seed, count) & np.uint64(0xFFFF)) < stall_threshold(pause)


def xorshift_stalls(pause, seed):
    """An endless iterator of booleans, ``True`` for "stall this cycle": the stall pattern of a port of the
    Player's testbench (:mod:`rpaccel.sim.player`), so that a simulator can reproduce a Player run exactly.

    A 32-bit xorshift (13, 17, 5) seeded with ``seed`` steps once per cycle, starting with the cycle 0; the
    cycle stalls when the low 16 bits of the new state are below :func:`stall_threshold` of ``pause``.
    """
    threshold = stall_threshold(pause)
    state = seed & 0xFFFF_FFFF or 1
    while True:
        state ^= (state << 13) & 0xFFFF_FFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFF_FFFF
        yield (state & 0xFFFF) < threshold


class StreamSource:
    """Drive values into a stream from an Amaranth testbench, idling randomly between transfers.

    Parameters
    ----------
    stream : amaranth.lib.stream.Interface
        The stream to drive (the design's input).
    pause : float or iterable of bool
        Idle probability per cycle, or an explicit pattern (see :func:`pauses`).
    seed : int
        Seed of the idle pattern.
    """

    def __init__(self, stream, *, pause=0.0, seed=0):
        self.stream = stream
        self.shape = payload_shape(stream)
        self.codec = codec(self.shape)
        self._pauses = pauses(pause, seed)
        #: Values sent so far.
        self.sent = 0
        #: Clock cycles spent in :meth:`send` so far.
        self.cycles = 0

    async def send(self, ctx, values):
        """Send every value of ``values`` in order; return when the last one has been accepted."""
        payload = Value.cast(self.stream.payload)
        for value in values:
            bits = self.codec.pack_value(value)
            while next(self._pauses):
                ctx.set(self.stream.valid, 0)
                await ctx.tick()
                self.cycles += 1
            ctx.set(payload, bits)
            ctx.set(self.stream.valid, 1)
            accepted = False
            while not accepted:
                _, _, accepted = await ctx.tick().sample(self.stream.ready)
                self.cycles += 1
            self.sent += 1
        ctx.set(self.stream.valid, 0)


class StreamSink:
    """Receive values from a stream in an Amaranth testbench, applying random back-pressure.

    Parameters
    ----------
    stream : amaranth.lib.stream.Interface
        The stream to receive from (the design's output).
    pause : float or iterable of bool
        Probability per cycle of holding ``ready`` low, or an explicit pattern (see :func:`pauses`).
    seed : int
        Seed of the back-pressure pattern.
    """

    def __init__(self, stream, *, pause=0.0, seed=0):
        self.stream = stream
        self.shape = payload_shape(stream)
        self.codec = codec(self.shape)
        self._pauses = pauses(pause, seed)
        #: Clock cycles spent in :meth:`receive` so far.
        self.cycles = 0

    async def receive(self, ctx, count):
        """Receive ``count`` values and return them as a list."""
        payload = Value.cast(self.stream.payload)
        out = []
        while len(out) < count:
            ready = not next(self._pauses)
            ctx.set(self.stream.ready, ready)
            _, _, valid, bits = await ctx.tick().sample(self.stream.valid, payload)
            self.cycles += 1
            if ready and valid:
                out.append(self.codec.unpack_value(bits))
        ctx.set(self.stream.ready, 0)
        return out


class SimulationTimeout(AssertionError):
    """An Amaranth simulation ran past its cycle limit (a testbench is waiting for something that never came)."""


def run_simulation(dut, testbenches, *, processes=(), max_cycles=1_000_000, waves=None, name="sim"):
    """Simulate ``dut`` with a 100 MHz ``sync`` clock until every testbench returns.

    Parameters
    ----------
    dut : amaranth.hdl.Elaboratable
        The design.
    testbenches : sequence of async callables
        ``async def tb(ctx)`` functions (:meth:`amaranth.sim.Simulator.add_testbench`).
    processes : sequence of async callables
        Background processes (:meth:`amaranth.sim.Simulator.add_process`).
    max_cycles : int
        Fail with :class:`SimulationTimeout` after this many cycles.
    waves : bool, optional
        Write a VCD file ``<waves_dir>/<name>.vcd`` (default: the ``RPACCEL_WAVES`` environment variable).
    name : str
        Name of the waveform file.
    """
    period = 1e-8
    sim = Simulator(dut)
    sim.add_clock(period)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)

    async def watchdog(ctx):
        await ctx.delay(max_cycles * period)
        raise SimulationTimeout(f"Simulation {name!r} did not finish within {max_cycles} cycles")

    sim.add_process(watchdog)
    if waves_enabled(waves):
        with sim.write_vcd(str(waves_dir() / f"{name}.vcd")):
            sim.run()
    else:
        sim.run()
