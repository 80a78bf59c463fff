"""The chip's controller (rpaccel.rtl.accel.controller) in the Amaranth simulator: dispatch, checks, barriers."""

import enum

import pytest
from amaranth.hdl import Elaboratable, Module, Value
from amaranth.lib import wiring

from rpaccel.config import preset
from rpaccel.host.driver.codec import codec
from rpaccel.rtl.accel.controller import QUIET_CYCLES, Controller, counter_ids
from rpaccel.rtl.accel.isa import ChipGeometry, Counter, ErrorCode, FetchSource, Opcode, ResponseKind, ScoreDest
from rpaccel.rtl.embedding import EmbeddingOp
from rpaccel.rtl.memory import MemoryModel
from rpaccel.rtl.mlp import Op
from rpaccel.sim.streams import StreamSink, StreamSource, pauses, run_simulation

CONFIG = preset("tiny")
G = ChipGeometry(CONFIG)
MEM_LINES = 1 << 10


class _Bench(Elaboratable):
    """The controller with a memory model on its host port (the accelerator port idle)."""

    def __init__(self, planted=False):
        geometry = G
        if planted:     # a controller that believes K_MAX is one higher: the SCORE with k = 17 gets through
            geometry = ChipGeometry(CONFIG)
            geometry.k_max += 1
        self.ctrl = Controller(geometry, mem_lines=MEM_LINES)
        self.memory = MemoryModel(lines=MEM_LINES, line_bytes=G.line_bytes, addr_bits=G.addr_bits,
                                  max_burst=G.emb.max_burst, latency=6, bytes_per_cycle=G.line_bytes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl, m.submodules.memory = self.ctrl, self.memory
        wiring.connect(m, self.ctrl.mem, self.memory.host)
        m.d.comb += [self.memory.port.req.valid.eq(0), self.memory.port.resp.ready.eq(0)]
        return m


def command(op, tag=0, member=None, /, **fields):
    """A command value with every field zero but ``fields`` of ``arg.<member>`` (nested dicts allowed)."""
    value = codec(G.command_layout()).unpack_value(0)
    value["op"], value["tag"] = op.value if isinstance(op, Opcode) else op, tag
    if member is None:
        value["arg"] = {"split": {"n": 0}}
    else:
        arg = value["arg"][member]
        for name, field in fields.items():
            if isinstance(field, dict) and name != "arg":      # "arg" of an EMB is a union: replaced
                arg[name] = {**arg[name], **field}
            else:
                arg[name] = field
        if member == "emb" and "arg" not in fields:          # the unit command's own union: one member
            arg["arg"] = {"lookup": arg["arg"]["lookup"]}
        value["arg"] = {member: arg}
    return value


def raw(value, path, bits):
    """The packed ``value`` with the field at ``path`` (names from the command layout down) set to ``bits``: for
    values the codec refuses (an enum outside its members)."""
    layout, offset = G.command_layout(), 0
    for name in path:
        field = layout[name]
        offset, layout = offset + field.offset, field.shape
    width = layout.size if hasattr(layout, "size") else layout.as_shape().width
    packed = codec(G.command_layout()).pack_value(value)
    return packed & ~(((1 << width) - 1) << offset) | bits << offset


def emb_config(table, rows, tag=0):
    config = codec(G.emb_layouts.table_config).unpack_value(0)
    config["rows"] = rows
    return command(Opcode.EMB, tag, "emb", op=EmbeddingOp.CONFIG.value, table=table,
                   arg={"config": config})


def fetch(tag=0, **fields):
    join = {"mode": 0, "vectors": 3, "dim": 4, "m": 1, "s": 0}
    join.update(fields.pop("join", {}))
    base = {"lane": 0, "source": FetchSource.RANGE.value, "items": 2, "count": 2, "stride": 2, "join": join}
    base.update(fields)
    return command(Opcode.FETCH, tag, "fetch", **base)


def lane(tag=0, lane=0, **cmd):
    fields = {"op": Op.LAYER.value, "items": 4, "ktiles": 1, "ntiles": 1}
    fields.update(cmd)
    return command(Opcode.LANE, tag, "lane", lane=lane, cmd=fields)


def score(tag=0, **fields):
    base = {"lane": 0, "dest": ScoreDest.RSP.value, "items": 3}
    base.update(fields)
    return command(Opcode.SCORE, tag, "score", **base)


def error(tag, code, op, detail):
    return ("error", tag, code.value, op.value if isinstance(op, Opcode) else op, detail)


PROGRAM = [
    (command(Opcode.SPLIT, 1, "split", n=3), error(1, ErrorCode.SPLIT, Opcode.SPLIT, 3)),
    (command(Opcode.SPLIT, 2, "split", n=2), None),
    (lane(3, lane=2), error(3, ErrorCode.LANE, Opcode.LANE, 2)),
    (command(Opcode.WEIGHTS, 4, "weights", mem_addr=0, w_addr=0, words=8), "weights"),
    (lane(5, lane=1, w_base=4), "lane1"),
    (lane(6, lane=0, w_base=200), error(6, ErrorCode.WEIGHTS, Opcode.LANE, 200)),
    (lane(7, lane=0, op=Op.INPUT.value, items=0), error(7, ErrorCode.ITEMS, Opcode.LANE, 0)),
    (score(8, dest=ScoreDest.TOPK.value, last=1, k=0), error(8, ErrorCode.K, Opcode.SCORE, 0)),
    (score(9, dest=ScoreDest.TOPK.value, last=1, k=17), error(9, ErrorCode.K, Opcode.SCORE, 17)),
    (score(10, dest=ScoreDest.TOPK.value, unit=1, k=4), error(10, ErrorCode.UNIT, Opcode.SCORE, 1)),
    (score(11), "score0"),
    (score(30, dest=ScoreDest.FILTER.value, unit=1, k=4), error(30, ErrorCode.UNIT, Opcode.SCORE, 1)),
    (score(31, dest=ScoreDest.FILTER.value, last=1, k=CONFIG.filter_capacity + 1),
     error(31, ErrorCode.K, Opcode.SCORE, CONFIG.filter_capacity + 1)),
    (score(32, dest=ScoreDest.FILTER.value, last=1, k=CONFIG.filter_capacity), "score0"),
    (raw(score(33), ("arg", "score", "dest"), 3), error(33, ErrorCode.FIELD, Opcode.SCORE, 3)),
    (emb_config(2, 10, tag=12), "fetch"),
    (fetch(13), error(13, ErrorCode.TABLE, Opcode.FETCH, 2)),
    (emb_config(3, 5, tag=14), "fetch"),
    (fetch(15), "fetch"),
    (fetch(16, first=1), error(16, ErrorCode.INDEX, Opcode.FETCH, 3)),
    (raw(fetch(17), ("arg", "fetch", "source"), 3), error(17, ErrorCode.FIELD, Opcode.FETCH, 3)),
    (fetch(18, lane=2), error(18, ErrorCode.LANE, Opcode.FETCH, 2)),
    (fetch(35, source=FetchSource.SURVIVORS.value, unit=0, first=CONFIG.k_max - 1),
     error(35, ErrorCode.INDEX, Opcode.FETCH, CONFIG.k_max + 1)),
    (fetch(36, source=FetchSource.SURVIVORS.value, unit=G.units, first=CONFIG.k_max - 1), "fetch"),
    (raw(command(Opcode.NOP, 19), ("op",), 12), error(19, ErrorCode.OPCODE, 12, 12)),
    (command(Opcode.EMB, 20, "emb", op=EmbeddingOp.LOOKUP.value, table=1),
     error(20, ErrorCode.FIELD, Opcode.EMB, EmbeddingOp.LOOKUP.value)),
    (command(Opcode.EMB, 21, "emb", op=EmbeddingOp.FLUSH.value, table=1), "fetch"),
    (command(Opcode.MEM_WRITE, 22, "mem_write", addr=MEM_LINES, data=1),
     error(22, ErrorCode.ADDRESS, Opcode.MEM_WRITE, MEM_LINES)),
    (command(Opcode.MEM_WRITE, 23, "mem_write", addr=5, data=0x1234), None),
    (command(Opcode.MEM_WRITE, 24, "mem_write", addr=6, data=0xABCD << 64), None),
    (command(Opcode.MEM_READ, 25, "mem_read", addr=5, length=1), ("data", 25, [0x1234, 0xABCD << 64])),
    (command(Opcode.NOP, 26), None),
    (command(Opcode.SYNC, 27), ("done", 27)),
]


def _expectations(program):
    units, responses, errors = {}, [], 0
    for value, expect in program:
        if isinstance(expect, str):
            units.setdefault(expect, []).append(value)
        elif isinstance(expect, tuple) and expect[0] == "error":
            _, tag, code, op, detail = expect
            errors += 1
            responses.append({"kind": ResponseKind.ERROR.value, "tag": tag, "code": code, "index": op,
                              "score": detail, "last": 1})
        elif isinstance(expect, tuple) and expect[0] == "data":
            lines = expect[2]
            for i, line in enumerate(lines):
                responses.append({"kind": ResponseKind.DATA.value, "tag": expect[1], "data": line,
                                  "last": int(i == len(lines) - 1)})
        elif isinstance(expect, tuple) and expect[0] == "done":
            responses.append({"kind": ResponseKind.DONE.value, "tag": expect[1], "last": 1})
    return units, responses, errors


def _plain(value):
    return value.value if isinstance(value, enum.Enum) else value


def _subset(response, expected):
    return {name: _plain(response[name]) for name in expected}


def _queue_payload(name, value):
    """What the unit queue ``name`` should carry for the command ``value``."""
    arg = value["arg"]
    if name == "fetch":
        emb = value["op"] == Opcode.EMB.value
        return {"tag": value["tag"], "emb": int(emb), "arg": arg}
    if name.startswith("lane"):
        return arg["lane"]
    if name.startswith("score"):
        return {"tag": value["tag"], "score": arg["score"]}
    return arg["weights"]


async def send(ctx, port, values, *, pause=0.0, seed=0):
    """Send command values (dicts, or packed ints for what the codec refuses) on ``port``, idling randomly."""
    command_codec = codec(G.command_layout())
    idle = pauses(pause, seed)
    for value in values:
        while next(idle):
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(Value.cast(port.payload), value if isinstance(value, int) else command_codec.pack_value(value))
        ctx.set(port.valid, 1)
        accepted = False
        while not accepted:
            _, _, accepted = await ctx.tick().sample(port.ready)
    ctx.set(port.valid, 0)


def _run_program(pause, planted=False):
    bench = _Bench(planted)
    ctrl = bench.ctrl
    units, responses, errors = _expectations(PROGRAM)
    ports = {"fetch": ctrl.fetch, "weights": ctrl.weights, **{f"lane{i}": ctrl.lane[i] for i in range(G.lanes)},
             **{f"score{i}": ctrl.score[i] for i in range(G.lanes)}}
    got = {}
    counters_base = len([1 for value, _ in PROGRAM])

    async def driver(ctx):
        ctx.set(ctrl.quiet, 1)
        await send(ctx, ctrl.cmd, [value for value, _ in PROGRAM], pause=pause, seed=1)

    def make_sink(name):
        async def sink(ctx):
            want = units.get(name, [])
            got[name] = await StreamSink(ports[name], pause=pause, seed=hash(name) % 1000).receive(ctx, len(want))
        return sink

    async def responder(ctx):
        got["rsp"] = await StreamSink(ctrl.rsp, pause=pause, seed=7).receive(ctx, len(responses))

    run_simulation(bench, [driver, responder, *(make_sink(name) for name in ports)], max_cycles=20_000,
                   name="controller")
    assert [_subset(r, e) for r, e in zip(got["rsp"], responses, strict=True)] == responses
    for name, values in units.items():
        assert got[name] == [codec(ports[name].payload.shape()).unpack_value(
            codec(ports[name].payload.shape()).pack_value(_queue_payload(name, v))) for v in values], name
    assert counters_base == len(PROGRAM) and errors > 0


@pytest.mark.parametrize("pause", [0.0, 0.3])
def test_controller_dispatches_checks_and_answers(pause):
    _run_program(pause)


def test_controller_scoreboard_catches_planted_bug():
    with pytest.raises(AssertionError):
        _run_program(0.0, planted=True)


def test_barrier_waits_for_quiet_and_counters_answer():
    bench = _Bench()
    ctrl = bench.ctrl
    ids = counter_ids(G)
    emb_counters = codec(G.emb_layouts.counters).unpack_value(0)
    emb_counters.update(lookups=11, line_misses=3, mem_lines=7)
    seen = {}

    async def driver(ctx):
        ctx.set(ctrl.quiet, 0)
        await send(ctx, ctrl.cmd, [command(Opcode.SPLIT, 1, "split", n=5), command(Opcode.SYNC, 2)])
        for _ in range(40):      # not quiet: the SYNC waits
            assert not ctx.get(ctrl.rsp.valid) or ctx.get(ctrl.rsp.payload.tag) != 2
            await ctx.tick()
        ctx.set(ctrl.quiet, 1)
        ctx.set(ctrl.busy.lanes, 0b0010)
        await send(ctx, ctrl.cmd, [command(Opcode.COUNTERS, 3, "counters", clear=1),
                                command(Opcode.COUNTERS, 4, "counters", clear=0)])

    async def embedding(ctx):
        sink, source = StreamSink(ctrl.fetch), StreamSource(ctrl.emb_counters)
        for clear in (1, 0):
            request, = await sink.receive(ctx, 1)
            assert request["emb"] == 1 and request["arg"]["emb"]["op"] == EmbeddingOp.COUNTERS
            assert request["arg"]["emb"]["arg"]["counters"]["clear"] == clear
            await source.send(ctx, [emb_counters])

    async def responder(ctx):
        got = await StreamSink(ctrl.rsp).receive(ctx, 2 + 2 * len(ids))
        seen["rsp"] = got

    run_simulation(bench, [driver, embedding, responder], max_cycles=5_000, name="controller_counters")
    rsp = seen["rsp"]
    assert rsp[0]["kind"] == ResponseKind.ERROR and rsp[0]["code"] == ErrorCode.SPLIT
    assert rsp[1]["kind"] == ResponseKind.DONE and rsp[1]["tag"] == 2
    first, second = rsp[2:2 + len(ids)], rsp[2 + len(ids):]
    for block, tag in ((first, 3), (second, 4)):
        assert [r["index"] for r in block] == ids
        assert all(r["kind"] == ResponseKind.COUNTER and r["tag"] == tag for r in block)
        assert [r["last"] for r in block] == [0] * (len(ids) - 1) + [1]
    values = {r["index"]: r["score"] for r in first}
    assert values[Counter.ERRORS.value] == 1
    assert values[Counter.COMMANDS.value] == 2                     # SPLIT 5 and SYNC
    assert values[Counter.EMB_LOOKUPS.value] == 11 and values[Counter.EMB_LINE_MISSES.value] == 3
    assert values[Counter.BUSY_LANE0.value + 1] > QUIET_CYCLES and values[Counter.BUSY_LANE0.value] == 0
    assert values[Counter.CYCLES.value] > 40
    after = {r["index"]: r["score"] for r in second}
    assert after[Counter.ERRORS.value] == 0 and after[Counter.COMMANDS.value] == 0   # cleared by the first
    assert after[Counter.CYCLES.value] < values[Counter.CYCLES.value]
