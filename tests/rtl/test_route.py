"""rpaccel.rtl.lib.route: the route-steered demultiplexer and multiplexer against the order their routes give,
every transfer checked, under random idle cycles and back-pressure on every port, with planted bugs the check
must catch, their throughput, the handshakes that must not depend on the route, and their parameter checks."""

import random

import pytest
from amaranth.hdl import Module, Shape, unsigned
from amaranth.lib import wiring

from rpaccel.rtl.lib.route import RouteDemux, RouteMux, route_layout
from rpaccel.sim.streams import SimulationTimeout, StreamSink, StreamSource, run_simulation

WIDTH = 16


def random_routes(rng, n, count_bits, entries):
    """``entries`` route entries: random ports; counts mostly small, some 0, some the largest ``count`` holds."""
    top = (1 << count_bits) - 1
    routes = []
    for _ in range(entries):
        draw = rng.random()
        count = 0 if draw < 0.15 else top if draw < 0.25 else rng.randint(1, min(top, 6))
        routes.append((rng.randrange(n), count))
    return routes


def split(routes, n):
    """Items ``0, 1, ...`` dealt out as ``routes`` says: ``(items in order, the items of each port in order)``."""
    items, per_port = [], [[] for _ in range(n)]
    for port, count in routes:
        for _ in range(count):
            per_port[port].append(len(items))
            items.append(len(items))
    return items, per_port


async def receive_each(sink, ctx, count, into):
    """Receive ``count`` values one by one into the list ``into`` (so a run cut short keeps what came)."""
    for _ in range(count):
        into.extend(await sink.receive(ctx, 1))


def demux_errors(dut, routes, *, pause, seed, max_cycles=20_000):
    """Send the items ``0, 1, ...`` into ``dut.i`` and ``routes`` into ``dut.route``, receive every output; the
    mismatches between what each output received and the items its route entries give it, and the cycles the
    data source took to send everything (``None`` if the run timed out)."""
    n = len(dut.o)
    items, per_port = split(routes, n)
    got = [[] for _ in range(n)]
    cycles = []

    async def send_routes(ctx):
        await StreamSource(dut.route, pause=pause, seed=seed).send(
            ctx, [{"port": port, "count": count} for port, count in routes])

    async def send_items(ctx):
        source = StreamSource(dut.i, pause=pause, seed=seed + 1)
        await source.send(ctx, items)
        cycles.append(source.cycles)

    def receiver(k):
        async def bench(ctx):
            await receive_each(StreamSink(dut.o[k], pause=pause, seed=seed + 2 + k), ctx, len(per_port[k]), got[k])
        return bench

    errors = []
    try:
        run_simulation(dut, [send_routes, send_items] + [receiver(k) for k in range(n)], max_cycles=max_cycles,
                       name="route-demux")
    except SimulationTimeout:
        errors.append("timeout")
    errors += [(k, got[k], per_port[k]) for k in range(n) if got[k] != per_port[k]]
    return errors, cycles[0] if cycles else None


def mux_errors(dut, routes, *, pause, seed, max_cycles=20_000):
    """Send each input the items its route entries give it and ``routes`` into ``dut.route``; the mismatch between
    what ``dut.o`` received and the items in route order, and the cycles the sink took (``None`` on timeout)."""
    n = len(dut.i)
    items, per_port = split(routes, n)
    got, cycles = [], []

    async def send_routes(ctx):
        await StreamSource(dut.route, pause=pause, seed=seed).send(
            ctx, [{"port": port, "count": count} for port, count in routes])

    def sender(k):
        async def bench(ctx):
            await StreamSource(dut.i[k], pause=pause, seed=seed + 2 + k).send(ctx, per_port[k])
        return bench

    async def receive(ctx):
        sink = StreamSink(dut.o, pause=pause, seed=seed + 1)
        await receive_each(sink, ctx, len(items), got)
        cycles.append(sink.cycles)

    errors = []
    try:
        run_simulation(dut, [send_routes, receive] + [sender(k) for k in range(n)], max_cycles=max_cycles,
                       name="route-mux")
    except SimulationTimeout:
        errors.append("timeout")
    if got != items:
        errors.append((got, items))
    return errors, cycles[0] if cycles else None


CASES = [(3, 4, 0.0, 1), (3, 4, 0.3, 2), (3, 4, 0.6, 3), (1, 3, 0.3, 4), (5, 2, 0.4, 5)]


@pytest.mark.parametrize(("n", "count_bits", "pause", "seed"), CASES)
def test_demux_follows_its_routes(n, count_bits, pause, seed):
    routes = random_routes(random.Random(seed), n, count_bits, 120)
    errors, _ = demux_errors(RouteDemux(WIDTH, n, count_bits), routes, pause=pause, seed=seed)
    assert not errors, errors[:3]


@pytest.mark.parametrize(("n", "count_bits", "pause", "seed"), CASES)
def test_mux_follows_its_routes(n, count_bits, pause, seed):
    routes = random_routes(random.Random(seed), n, count_bits, 120)
    errors, _ = mux_errors(RouteMux(WIDTH, n, count_bits), routes, pause=pause, seed=seed)
    assert not errors, errors[:3]


def test_one_transfer_per_cycle_across_entries():
    """Without stalls and without empty entries, consecutive entries leave no idle cycle."""
    routes = [(port, count) for port, count in random_routes(random.Random(9), 3, 3, 80) if count]
    total = sum(count for _, count in routes)
    errors, cycles = demux_errors(RouteDemux(WIDTH, 3, 3), routes, pause=0.0, seed=9)
    assert not errors and cycles <= total + 2
    errors, cycles = mux_errors(RouteMux(WIDTH, 3, 3), routes, pause=0.0, seed=9)
    assert not errors and cycles <= total + 2


class _EmptyEntrySent(RouteDemux):
    """Planted bug: an entry with ``count`` 0 forwards one transfer."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = RouteDemux(self.i.payload.shape(), self.n, self.count_bits)
        m.d.comb += [inner.route.valid.eq(self.route.valid), self.route.ready.eq(inner.route.ready),
                     inner.route.payload.port.eq(self.route.payload.port),
                     inner.route.payload.count.eq(self.route.payload.count | (self.route.payload.count == 0))]
        wiring.connect(m, wiring.flipped(self.i), inner.i)
        for k in range(self.n):
            wiring.connect(m, inner.o[k], wiring.flipped(self.o[k]))
        return m


class _PortsSwapped(RouteMux):
    """Planted bug: inputs 0 and 1 are swapped."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = RouteMux(self.o.payload.shape(), self.n, self.count_bits)
        wiring.connect(m, wiring.flipped(self.route), inner.route)
        for k in range(self.n):
            wiring.connect(m, wiring.flipped(self.i[k ^ 1 if k < 2 else k]), inner.i[k])
        wiring.connect(m, inner.o, wiring.flipped(self.o))
        return m


def test_check_catches_planted_bugs():
    routes = random_routes(random.Random(2), 3, 4, 60)
    errors, _ = demux_errors(_EmptyEntrySent(WIDTH, 3, 4), routes, pause=0.3, seed=2, max_cycles=3000)
    assert any(error != "timeout" for error in errors)
    errors, _ = mux_errors(_PortsSwapped(WIDTH, 3, 4), routes, pause=0.3, seed=2, max_cycles=3000)
    assert errors


@pytest.mark.parametrize("kind", [RouteDemux, RouteMux])
def test_handshakes_do_not_wait_for_the_route_or_the_data(kind):
    """``route.ready`` does not depend on ``route.valid``; the data side's handshake towards the producer
    (``i.ready`` of the demultiplexer, ``o.valid`` of the multiplexer) does not depend on the route port."""
    dut = kind(8, 2, 3)
    rng = random.Random(4)
    outputs = [dut.route.ready] + ([dut.i.ready] if kind is RouteDemux else [dut.o.valid])
    inputs = [dut.route.valid, dut.route.payload.port, dut.route.payload.count]
    drive = ([dut.i.valid] + [o.ready for o in dut.o] if kind is RouteDemux
             else [dut.o.ready] + [i.valid for i in dut.i])
    same, moved = [], []

    async def bench(ctx):
        for _ in range(300):
            for signal in drive:
                ctx.set(signal, rng.random() < 0.7)
            values = [rng.random() < 0.5, rng.randrange(2), rng.randrange(8)]
            for signal, value in zip(inputs, values):
                ctx.set(signal, value)
            before = [ctx.get(s) for s in outputs]
            for signal, value in zip(inputs, values):
                ctx.set(signal, 1 - value if signal is not dut.route.payload.count else 7 - value)
            same.append(before == [ctx.get(s) for s in outputs])
            for signal, value in zip(inputs, values):
                ctx.set(signal, value)
            moved.append(ctx.get(outputs[1]))
            await ctx.tick()

    run_simulation(dut, [bench])
    assert all(same)
    assert any(moved) and not all(moved)  # the data side did move


def test_route_layout():
    layout = route_layout(5, 3)
    assert Shape.cast(layout["port"].shape) == unsigned(3) and layout["count"].shape == unsigned(3) and layout.size == 6


@pytest.mark.parametrize("kind", [RouteDemux, RouteMux])
def test_bad_parameters(kind):
    name = "Route demultiplexer" if kind is RouteDemux else "Route multiplexer"
    with pytest.raises(TypeError, match=f"{name} payload must be a shape, not 'wide'"):
        kind("wide", 2)
    with pytest.raises(ValueError, match=f"{name} port count must be a positive integer, not 0"):
        kind(8, 0)
    with pytest.raises(ValueError, match=f"{name} count bits must be a positive integer, not True"):
        kind(8, 2, True)
