"""Memory port, timed memory model and block-RAM memory (Amaranth simulator)."""

import numpy as np
import pytest
from amaranth.hdl import Fragment, Instance, Signal
from amaranth.lib.memory import Memory

from rpaccel.rtl.memory import BlockRAMMemory, MemoryModel, MemoryPort, RegisteredRAM
from rpaccel.sim.streams import StreamSink, StreamSource, run_simulation

LINE = 4   # bytes per line in these tests


def model(latency=10, bytes_per_cycle=LINE, lines=64, jitter=0):
    return MemoryModel(lines=lines, line_bytes=LINE, addr_bits=8, max_burst=8, latency=latency,
                       bytes_per_cycle=bytes_per_cycle, queue_depth=16, jitter=jitter)


def read(addr, length=1):
    return {"write": 0, "addr": addr, "length": length - 1, "data": 0}


def write(addr, value):
    return {"write": 1, "addr": addr, "length": 0, "data": value}


def timed_reads(dut, requests, *, preload=16, settle=100):
    """Write lines 0..preload-1 through the host port, wait, then send ``requests`` on the accelerator port
    back to back; return (cycle of each request's acceptance, cycle and value of each line read)."""
    accepted, lines = [], []
    expected = sum(r["length"] + 1 for r in requests)

    async def bench(ctx):
        await StreamSource(dut.host.req).send(ctx, [write(a, 0x1000 + a) for a in range(preload)])
        await ctx.tick().repeat(settle)
        ctx.set(dut.port.resp.ready, 1)
        cycle = 0
        pending = list(requests)
        while pending or len(lines) < expected:
            if pending:
                ctx.set(dut.port.req.payload, pending[0])
            ctx.set(dut.port.req.valid, bool(pending))
            _, _, ready, valid, value = await ctx.tick().sample(dut.port.req.ready, dut.port.resp.valid,
                                                                 dut.port.resp.payload)
            if pending and ready:
                accepted.append(cycle)
                pending.pop(0)
            if valid:
                lines.append((cycle, value))
            cycle += 1

    run_simulation(dut, [bench], max_cycles=20_000, name="memory-timing")
    return accepted, lines


@pytest.mark.parametrize("latency", [5, 7, 30])
def test_first_line_arrives_after_the_latency(latency):
    accepted, lines = timed_reads(model(latency), [read(3, 4)])
    assert [c - accepted[0] for c, _ in lines] == [latency, latency + 1, latency + 2, latency + 3]
    assert [v for _, v in lines] == [0x1003, 0x1004, 0x1005, 0x1006]


def test_single_line_requests_stream_at_one_per_cycle():
    accepted, lines = timed_reads(model(12), [read(a) for a in range(16)])
    assert accepted == list(range(16))                  # the queue accepts one request per cycle
    assert [c for c, _ in lines] == list(range(12, 28))
    assert [v for _, v in lines] == [0x1000 + a for a in range(16)]


@pytest.mark.parametrize("rate", [1, 2, 3])
def test_bandwidth_limit(rate):
    accepted, lines = timed_reads(model(10, rate, lines=128), [read(8 * k, 8) for k in range(8)], preload=64)
    cycles = [c for c, _ in lines]
    assert cycles[0] - accepted[0] == 10
    # 64 lines of 4 bytes at `rate` bytes per cycle; the bucket starts full, so one line may go early.
    span = cycles[-1] - cycles[0]
    assert 63 * LINE / rate - 2 <= span <= 63 * LINE / rate + 1
    assert [v for _, v in lines] == [0x1000 + a for a in range(64)]


@pytest.mark.parametrize("jitter", [1, 5, 23])
def test_jitter_delays_requests_by_up_to_its_cycles_in_order(jitter):
    """Single-line reads back to back: each line comes ``latency`` to ``latency + jitter`` cycles after its request
    (or right after the line before it, which it never overtakes), the extra cycles vary, and every value is
    right."""
    requests = [read(a % 16) for a in range(40)]
    accepted, lines = timed_reads(model(8, jitter=jitter), requests)
    assert [v for _, v in lines] == [0x1000 + a % 16 for a in range(40)]
    delays = [c - a for (c, _), a in zip(lines, accepted)]
    previous = [None, *(c for c, _ in lines[:-1])]
    for delay, (cycle, _), before in zip(delays, lines, previous):
        assert 8 <= delay <= 8 + jitter or cycle == before + 1
    assert len(set(delays)) > 1 and max(delays) > 8


def test_jitter_is_checked():
    with pytest.raises(ValueError, match="Latency jitter must be an integer from 0 to 32767, not -1"):
        model(jitter=-1)


def random_traffic(dut, seed, count=300):
    """Random reads and writes on both ports with stalls; each port owns half of the lines."""
    rng = np.random.default_rng(seed)
    results = {}
    benches = []
    for index, name in enumerate(("port", "host")):
        port = getattr(dut, name)
        shadow = {}
        requests, expected = [], []
        for _ in range(count):
            addr = int(rng.integers(0, 16)) * 2 + index
            if rng.random() < 0.4:
                value = int(rng.integers(0, 1 << 32))
                requests.append(write(addr, value))
                shadow[addr] = value
            else:
                n = int(rng.integers(1, 5))
                requests.append(read(addr, n))
                expected += [shadow.get(addr + k, 0) if (addr + k) % 2 == index else None for k in range(n)]
        results[name] = expected

        def bench(port=port, requests=requests, seed=seed + index):
            async def send(ctx):
                await StreamSource(port.req, pause=0.4, seed=seed).send(ctx, requests)
            return send

        def check(port=port, name=name, seed=seed + index):
            async def receive(ctx):
                got = await StreamSink(port.resp, pause=0.4, seed=seed + 7).receive(ctx, len(results[name]))
                results[name + "_got"] = got
            return receive

        benches += [bench(), check()]
    run_simulation(dut, benches, max_cycles=50_000, name="memory-random")
    for name in ("port", "host"):
        # Lines of the other port's half are written concurrently; only compare a port's own half.
        own = [(g, e) for g, e in zip(results[name + "_got"], results[name]) if e is not None]
        assert [g for g, _ in own] == [e for _, e in own]
        assert len(results[name + "_got"]) == len(results[name])


@pytest.mark.parametrize(("rate", "jitter"), [(1, 0), (4, 0), (4, 13)])
def test_model_random_traffic_under_stalls(rate, jitter):
    random_traffic(model(9, rate, jitter=jitter), seed=rate)


def test_block_ram_memory_random_traffic_under_stalls():
    dut = BlockRAMMemory(lines=64, line_bytes=LINE, addr_bits=8, max_burst=8)
    random_traffic(dut, seed=5)
    _, lines = timed_reads(BlockRAMMemory(lines=64, line_bytes=LINE, addr_bits=8, max_burst=8), [read(0, 2)])
    assert [v for _, v in lines] == [0x1000, 0x1001]


def test_invalid_parameters():
    with pytest.raises(ValueError, match="Latency must be at least 5 cycles"):
        model(latency=4)
    with pytest.raises(ValueError, match="Bandwidth of 8 bytes per cycle exceeds one 4-byte line per cycle"):
        model(bytes_per_cycle=8)
    with pytest.raises(ValueError, match="Memory lines must be a power of two, not 100"):
        model(lines=100)
    with pytest.raises(ValueError, match="Line size must be a power of two, not 12"):
        MemoryPort(addr_bits=8, line_bytes=12, max_burst=4)
    with pytest.raises(ValueError, match="Memory of 512 lines needs more than 8 address bits"):
        model(lines=512)


@pytest.mark.parametrize("kind", ["plain", "input_registers", "row_registers"])
def test_registered_ram_latency_and_collisions(kind):
    """Read data two cycles after the address (three behind input registers, which also delay the write by one;
    five behind row registers, which delay it by two); a read of the word written in the same cycle is not the
    old word (inverted in simulation, undefined on the FPGA)."""
    dut = RegisteredRAM(width=12, depth=40, **({} if kind == "plain" else {kind: True}))
    assert dut.latency == {"plain": 2, "input_registers": 3, "row_registers": 5}[kind]
    rng = np.random.default_rng(4)
    contents = np.zeros(40, int)
    seen = []

    async def bench(ctx):
        for cycle in range(300):
            w_en, w_addr, w_data = int(rng.random() < 0.5), int(rng.integers(40)), int(rng.integers(1 << 12))
            r_addr = w_addr if rng.random() < 0.2 else int(rng.integers(40))
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_addr, w_addr)
            ctx.set(dut.w_data, w_data)
            ctx.set(dut.r_addr, r_addr)
            old = int(contents[r_addr])
            expected = (~old & 0xfff) if w_en and w_addr == r_addr else old
            seen.append((cycle, expected))
            if w_en:
                contents[w_addr] = w_data
            await ctx.tick()
            if cycle + 1 >= dut.latency:
                assert ctx.get(dut.r_data) == seen[cycle + 1 - dut.latency][1], f"cycle {cycle}"

    run_simulation(dut, [bench], max_cycles=400)


def test_registered_ram_uses_the_ecp5_output_register():
    class ECP5:
        family = "ecp5"

    fragment = Fragment.get(RegisteredRAM(width=40, depth=1500), ECP5())
    tiles = [sub for sub, _name, _src in fragment.subfragments if isinstance(sub, Instance)]
    assert len(tiles) == 2 * 3      # 1024 x 18 each: two rows of three
    assert all(t.type == "DP16KD" and t.parameters["REGMODE_B"] == "OUTREG" for t in tiles)


def test_registered_ram_row_registers_on_the_ecp5():
    """Each row of DP16KD blocks takes its write port and read address from registers of its own, which take
    them from a copy per group of rows."""
    class ECP5:
        family = "ecp5"

    dut = RegisteredRAM(width=40, depth=2500, row_registers=True)
    assert dut.latency == 5
    fragment = Fragment.get(dut, ECP5())
    tiles = {name: sub for sub, name, _src in fragment.subfragments if isinstance(sub, Instance)}
    assert len(tiles) == 3 * 3
    for name, tile in tiles.items():
        row = int(name.split("_")[1])
        address = {port: value for port, (value, _dir) in tile.ports.items() if port in ("ADA4", "ADB4", "DIA0")}
        assert {port: value.value.name for port, value in address.items()} == {
            "ADA4": f"w_addr_row{row}", "ADB4": f"r_addr_row{row}", "DIA0": f"w_data_row{row}_wide"}
        assert tile.ports["WEA"][0].name == f"w_en_row{row}"


class _BehaviouralDP16KD(RegisteredRAM):
    """The ECP5 structure of RegisteredRAM (rows, groups, selects) with each DP16KD replaced by a behavioural
    model: x18 mode, write on port A, read on port B into its output register."""

    def elaborate(self, platform):
        class ECP5:
            family = "ecp5"

        return super().elaborate(ECP5())

    def _tiles(self, m, r, columns, tile_bits, w_en, w_addr, r_addr, w_data_row, out):
        for c in range(columns):
            tile = Memory(shape=self.TILE_WIDTH, depth=self.TILE_DEPTH, init=[])
            m.submodules[f"model_{r}_{c}"] = tile
            write, read = tile.write_port(), tile.read_port()
            outreg = Signal(self.TILE_WIDTH, name=f"outreg_{r}_{c}")
            bits = slice(c * self.TILE_WIDTH, (c + 1) * self.TILE_WIDTH)
            m.d.comb += [write.en.eq(w_en), write.addr.eq(w_addr[:tile_bits]), write.data.eq(w_data_row[bits]),
                         read.addr.eq(r_addr[:tile_bits]), out[bits].eq(outreg)]
            m.d.sync += outreg.eq(read.data)


@pytest.mark.parametrize("depth", [2500, 9 * 1024 + 7])
def test_registered_ram_row_registers_ecp5_structure_reads_right(depth):
    """The ECP5 form of row registers (groups of rows, per-row copies, the group and row selects following the
    read) returns the word at the address of five cycles before, on a DP16KD model; reads of a word being
    written are not checked (undefined on the device)."""
    dut = _BehaviouralDP16KD(width=40, depth=depth, row_registers=True)
    rng = np.random.default_rng(7)
    contents = {}
    seen = []

    async def bench(ctx):
        checked = 0
        for cycle in range(1500):
            w_en = int(rng.random() < 0.5)
            w_addr, w_data = int(rng.integers(depth)), int(rng.integers(1 << 40))
            r_addr = int(rng.choice(list(contents))) if contents and rng.random() < 0.7 else int(rng.integers(depth))
            for port, value in ((dut.w_en, w_en), (dut.w_addr, w_addr), (dut.w_data, w_data), (dut.r_addr, r_addr)):
                ctx.set(port, value)
            collided = w_en and w_addr == r_addr
            seen.append(None if collided or r_addr not in contents else contents[r_addr])
            if w_en:
                contents[w_addr] = w_data
            await ctx.tick()
            if cycle + 1 >= dut.latency and seen[cycle + 1 - dut.latency] is not None:
                assert ctx.get(dut.r_data) == seen[cycle + 1 - dut.latency], f"cycle {cycle}"
                checked += 1
        assert checked > 500

    run_simulation(dut, [bench], max_cycles=2000)
