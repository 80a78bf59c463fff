"""The chip's host driver: command and response encoding, memory images, the query compiler and the checker.

The RTL top level is not there to run the programs on, so the tests hold the driver to the layouts (every command
through the batch encoder, the scalar packer and back), to the memory formats of docs/chip.md (records, lists and
weight images decoded back by hand), to the static checker (every compiled program passes; planted
inconsistencies are each caught with the right message) and to the integer reference (the expected answers of a
compiled pipeline equal rankings computed here from ``QuantModel.logits``).
"""

from collections import defaultdict, deque
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.embedding import EmbeddingLayout, TableSpec
from rpaccel.host.data import preprocess
from rpaccel.host.driver.chip import (
    ChipCommandError,
    ChipEncoder,
    ChipSetup,
    CompileError,
    ProgramError,
    Schedule,
    Stage,
    check_program,
    chip_mlps,
    compile_queries,
    decode_commands,
    decode_list,
    decode_records,
    decode_responses,
    encode_list,
    encode_records,
    encode_responses,
    expected_responses,
    stage_weights,
)
from rpaccel.host.driver.chip.program import MAX_SLOTS
from rpaccel.host.driver.codec import codec, to_ints
from rpaccel.host.driver.interaction import output_words
from rpaccel.host.driver.mlp import layout_weights
from rpaccel.host.models import get_model, pair_indices
from rpaccel.host.quant import quantize
from rpaccel.host.train import TrainConfig, train
from rpaccel.numeric import postprocess, requantize, topk
from rpaccel.rtl.accel.isa import (
    ActSource,
    ChipGeometry,
    Counter,
    ErrorCode,
    FetchSource,
    Opcode,
    OutDest,
    ResponseKind,
    ScoreDest,
)
from rpaccel.rtl.embedding import EmbeddingOp
from rpaccel.rtl.interaction import MODES
from rpaccel.rtl.mlp import Op

from host_fixtures import random_inputs, tiny_data, tiny_dot, tiny_wnd

TINY, SMALL = preset("tiny"), preset("small")
WIDE = SMALL.with_settings(["mem_bytes=4294967296"])     # lookup entries of 64 bits
CONFIGS = [TINY, SMALL, WIDE]


def plain(value):
    """Enum members as their values, recursively (records compare by value)."""
    if isinstance(value, dict):
        return {name: plain(item) for name, item in value.items()}
    return value.value if hasattr(value, "value") else int(value)


def quantised(spec, samples=1500):
    """``spec`` trained for one short epoch on synthetic data and quantised."""
    records = tiny_data(spec, samples)
    model, _ = train(spec, *preprocess(records, spec), records.labels,
                     TrainConfig(epochs=1, batch=256, lr=3e-3, emb_lr=2e-2, seed=1))
    return quantize(model, records.take(slice(0, 800)))


def candidates(qmodel, n, start=5000):
    return qmodel.inputs(tiny_data(qmodel.spec, n, start=start))


def random_mlp_command(rng, op):
    fields = {name: int(rng.integers(0, 1 << 16)) for name in
              ("stride", "in_base", "out_base", "acc_base", "w_base", "ktiles", "ntiles")}
    return {"op": op, "wait_inputs": int(rng.integers(0, 256)), "wait_layers": int(rng.integers(0, 256)),
            "items": int(rng.integers(1, 33)), **fields,
            "params": {"m": int(rng.integers(0, 1 << 16)), "s": int(rng.integers(0, 64)),
                       "relu": int(rng.integers(0, 2)), "raw": int(rng.integers(0, 2))},
            "to_output": int(rng.integers(0, 2))}


# Commands --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: config.name)
def test_every_command_round_trips(config):
    """Every opcode: the batch encoder's words equal the scalar packer's, decode to the fields given, and encode
    back to the same words."""
    encoder = ChipEncoder(config)
    g = encoder.geometry
    rng = np.random.default_rng(7)
    lb, lanes = g.line_bytes, g.lanes
    lines = rng.integers(0, 256, (5, lb), dtype=np.uint8)
    update = rng.integers(-128, 128, (2, lb))
    layout = EmbeddingLayout(g.emb, [TableSpec(30, lb, 4, 300, 10), TableSpec(20, g.emb.row_bytes, 0, 900, 9)])
    mlp = [random_mlp_command(rng, Op.INPUT), random_mlp_command(rng, Op.LAYER)]
    join = {"mode": 0, "vectors": g.max_vectors, "dim": g.max_dim, "m": 40000, "s": 17}
    fetch = {"lane": [0, lanes - 1, 1], "source": [0, 1, 2], "first": [3, 2, 0], "list_addr": [0, 0, 77],
             "unit": 0, "wait_results": [0, 255, 0], "release": [0, 1, 0], "items": [5, 4, 30], "base": 900,
             "stride": 8, "count": 800, "dense_lines": 2, "dense_words": 2}
    score = {"lane": [0, 1], "dest": [0, 1], "unit": 0, "items": [16, 3], "last": [1, 1], "k": [g.k_max, 0],
             "keep": [1, 0], "report": [0, 0]}
    emb_config = {"op": EmbeddingOp.CONFIG.value, "arg": {"config": {
        "rows": 30, "static_rows": 4, "static_base": layout.static_base[0], "mem_base": 0, "row_lines": 0,
        "m": 300, "s": 10}}}
    cases = [
        (encoder.nop(2), [(Opcode.NOP, 0, {})] * 2),
        (encoder.sync(tag=7), [(Opcode.SYNC, 7, {})]),
        (encoder.mem_write(10, lines, tag=1),
         [(Opcode.MEM_WRITE, 1, {"addr": 10 + i, "data": int.from_bytes(line.tobytes(), "little")})
          for i, line in enumerate(lines)]),
        (encoder.mem_read([3, 9], [1, 4]), [(Opcode.MEM_READ, 0, {"addr": 3, "length": 0}),
                                            (Opcode.MEM_READ, 0, {"addr": 9, "length": 3})]),
        *[(encoder.split(n), [(Opcode.SPLIT, 0, {"n": n})]) for n in config.splits],
        (encoder.weights(100, 4, 20, wait=1, lane=lanes - 1, wait_layers=200, tag=255),
         [(Opcode.WEIGHTS, 255, {"mem_addr": 100, "w_addr": 4, "words": 20, "wait": 1, "lane": lanes - 1,
                                 "wait_layers": 200})]),
        (encoder.emb_config(layout)[:1], [(Opcode.EMB, 0, {**emb_config, "table": 0})]),
        (encoder.emb_preload(1), [(Opcode.EMB, 0, {"op": EmbeddingOp.PRELOAD.value, "table": 1,
                                                   "arg": {"counters": {"clear": 0}}})]),
        (encoder.emb_flush(), [(Opcode.EMB, 0, {"op": EmbeddingOp.FLUSH.value, "table": 0,
                                                "arg": {"counters": {"clear": 0}}})]),
        (encoder.emb_update(1, 7, update),
         [(Opcode.EMB, 0, {"op": EmbeddingOp.UPDATE.value, "table": 1, "arg": {"update": {
             "id": 7, "line": i, "data": int.from_bytes(np.asarray(line, np.int8).tobytes(), "little")}}})
          for i, line in enumerate(update)]),
        (encoder.fetch(**fetch, join=join, tag=3),
         [(Opcode.FETCH, 3, {**{name: value[i] if isinstance(value, list) else value
                                for name, value in fetch.items()}, "join": join}) for i in range(3)]),
        (encoder.lane(lanes - 1, mlp, src=[ActSource.DENSE, ActSource.INTERACT], src_words=[3, 9],
                      dst=OutDest.SCORE, wait_weights=12),
         [(Opcode.LANE, 0, {"lane": lanes - 1, "wait_weights": 12, "src": src, "src_words": words, "dst": 1,
                            "cmd": command}) for src, words, command in zip((0, 1), (3, 9), mlp)]),
        (encoder.score(**score, tag=9),
         [(Opcode.SCORE, 9, {name: value[i] if isinstance(value, list) else value for name, value in score.items()})
          for i in range(2)]),
        (encoder.counters(clear=True), [(Opcode.COUNTERS, 0, {"clear": 1})]),
    ]
    scalar = codec(g.command_layout())
    member = {Opcode.MEM_WRITE: "mem_write", Opcode.MEM_READ: "mem_read", Opcode.SPLIT: "split",
              Opcode.WEIGHTS: "weights", Opcode.EMB: "emb", Opcode.FETCH: "fetch", Opcode.LANE: "lane",
              Opcode.SCORE: "score", Opcode.COUNTERS: "counters"}
    for words, expected in cases:
        packed = [scalar.pack_value({"op": op, "tag": tag, "arg": {member[op]: arg} if op in member
                                     else {"counters": {"clear": 0}}}) for op, tag, arg in expected]
        assert to_ints(words) == packed, expected[0][0]
        records = decode_commands(config, words)
        assert [(record["op"], record["tag"], plain(record["arg"])) for record in records] == expected
        assert np.array_equal(encoder.encode(records), words), expected[0][0]
    everything = np.concatenate([words for words, _ in cases])
    assert np.array_equal(encoder.encode(decode_commands(config, everything)), everything)


def _tiny_fetch(**changes):
    fields = {"lane": 0, "items": 4, "base": 100, "stride": 3, "count": 10, "dense_lines": 1, "dense_words": 1,
              "join": {"mode": "dot", "vectors": 5, "dim": 4, "m": 1, "s": 0}}
    fields.update(changes)
    return fields


@pytest.mark.parametrize(("command", "message"), [
    (lambda e: e.score(0, 4, last=1, k=0), r"^SCORE: k = 0 is outside \[1, 16\]$"),
    (lambda e: e.score(0, 4, unit=1), r"^SCORE: unit = 1 is outside \[0, 0\]$"),
    (lambda e: e.score([0, 0, 5], 1), r"^SCORE: lane = 5 is outside \[0, 3\] \(command 2 of the batch\)$"),
    (lambda e: e.score(0, 4, tag=300), r"^SCORE: tag = 300 does not fit unsigned\(8\)"),
    (lambda e: e.score([0, 1], [3, 4, 5]), "SCORE: fields of different lengths"),
    (lambda e: e.fetch(**_tiny_fetch(lane=4)), r"^FETCH: lane = 4 is outside \[0, 3\]$"),
    (lambda e: e.fetch(**_tiny_fetch(items=0)), r"^FETCH: items = 0 is outside \[1, 64\]$"),
    (lambda e: e.fetch(**_tiny_fetch(first=8)), r"^FETCH: first \+ items = 12 is outside \[1, 10\]$"),
    (lambda e: e.fetch(**_tiny_fetch(source=FetchSource.SURVIVORS, first=14)),
     r"^FETCH: first \+ items = 18 is outside \[1, 16\]$"),
    (lambda e: e.fetch(**_tiny_fetch(stride=1)), r"^FETCH: stride = 1 is outside \[2, 65536\]$"),
    (lambda e: e.fetch(**_tiny_fetch(dense_words=5)), r"^FETCH: dense_words \* rows = 20 is outside \[0, 19\]$"),
    (lambda e: e.fetch(**_tiny_fetch(join={"mode": "ncf", "vectors": 5, "dim": 4, "m": 1, "s": 0})),
     "^FETCH: join mode must be one of dot, cat, not 'ncf'$"),
    (lambda e: e.fetch(**_tiny_fetch(join={"mode": "dot", "vectors": 10, "dim": 4, "m": 1, "s": 0})),
     r"^FETCH: join.vectors = 10 is outside \[1, 9\]$"),
    (lambda e: e.fetch(**_tiny_fetch(base=8190)), r"^FETCH: base \+ count \* stride = 8220 is outside \[0, 8192\]$"),
    (lambda e: e.split(3), r"^SPLIT: n = 3 is not one of the configuration's splits \(1, 2, 4\)$"),
    (lambda e: e.weights(0, 250, 50), r"^WEIGHTS: w_addr \+ words = 300 is outside \[1, 256\]$"),
    (lambda e: e.weights(8190, 0, 40), r"^WEIGHTS: mem_addr \+ lines = 8200 is outside \[1, 8192\]$"),
    (lambda e: e.emb(*e.unit.lookups([0], [1], [1], [1])), "^EMB: op LOOKUP is not an EMB command"),
    (lambda e: e.mem_write(8192, np.zeros((1, 16))), r"^MEM_WRITE: addr = 8192 is outside \[0, 8191\]$"),
    (lambda e: e.mem_write(0, np.zeros((1, 8))), r"^MEM_WRITE: lines must be given as \(n, 16\) bytes"),
    (lambda e: e.mem_read(8190, 4), r"^MEM_READ: addr \+ length = 8193 is outside \[0, 8191\]$"),
    (lambda e: e.lane(0, random_mlp_command(np.random.default_rng(1), Op.INPUT), src_words=0),
     r"^LANE: src_words = 0 is outside \[1, 255\]$"),
])
def test_bad_commands_are_refused_naming_the_command_and_field(command, message):
    with pytest.raises(ChipCommandError, match=message):
        command(ChipEncoder(TINY))


# Responses -------------------------------------------------------------------------------------------------------

def test_responses_decode_into_rankings_logits_counters_and_errors():
    g = ChipGeometry(TINY)
    line = np.arange(16, dtype=np.uint8)
    rows = [  # kind, tag, last, code, index, score
        (ResponseKind.RANK, 4, 0, 0, 17, 900), (ResponseKind.LOGIT, 5, 0, 0, 2, -3),
        (ResponseKind.RANK, 4, 1, 0, 3, 800), (ResponseKind.LOGIT, 5, 1, 0, 0, 7),
        (ResponseKind.COUNTER, 6, 0, 0, Counter.CYCLES.value, 12345),
        (ResponseKind.COUNTER, 6, 0, 0, Counter.BUSY_LANE0.value + 1, 99),
        (ResponseKind.COUNTER, 6, 0, 0, Counter.BUSY_TOPK0.value, 5),
        (ResponseKind.COUNTER, 6, 1, 0, Counter.MEM_READ_LINES.value, -1),
        (ResponseKind.ERROR, 8, 0, ErrorCode.K.value, Opcode.SCORE.value, 0),
        (ResponseKind.ERROR, 9, 0, ErrorCode.OPCODE.value, 13, 13),
        (ResponseKind.ERROR, 10, 0, ErrorCode.ADDRESS.value, Opcode.MEM_READ.value, 9000),
        (ResponseKind.DATA, 11, 1, 0, 0, 0), (ResponseKind.DONE, 12, 0, 0, 0, 0),
    ]
    columns = {name: np.array([row[i] if i else row[i].value for row in rows])
               for i, name in enumerate(("kind", "tag", "last", "code", "index", "score"))}
    data = np.zeros((len(rows), 16), dtype=np.uint8)
    data[-2] = line
    words = encode_responses(g, {**columns, "data": data}, len(rows))
    responses = decode_responses(g, to_ints(words))
    assert len(responses) == len(rows)
    assert responses.ranking(4) == [(900, 17), (800, 3)]
    assert [values.tolist() for values in responses.logits(5)] == [[2, 0], [-3, 7]]
    assert responses.counters(6) == {"CYCLES": 12345, "BUSY_LANE1": 99, "BUSY_TOPK0": 5,
                                     "MEM_READ_LINES": 0xFFFF_FFFF}
    assert np.array_equal(responses.lines(11), line[None])
    assert responses.done() == 1 and responses.done(4) == 0
    assert responses.records(5) == [(ResponseKind.LOGIT.value, 0, 0, 2, -3), (ResponseKind.LOGIT.value, 1, 0, 0, 7)]
    errors = responses.errors()
    assert [str(error) for error in errors] == [
        "SCORE refused: k 0 is outside [1, 16] (a top-k unit) or [1, 256] (a filter unit)",
        "opcode 13 refused: opcode 13 is not one the chip knows",
        "MEM_READ refused: an access from line 9000 goes beyond the memory's 8192 lines"]
    assert (errors[0].op, errors[0].code, errors[0].detail, errors[0].tag) == (Opcode.SCORE, ErrorCode.K, 0, 8)


# Memory images ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: config.name)
def test_records_hold_dense_bytes_then_counted_lookup_entries(config):
    g = ChipGeometry(config)
    rng = np.random.default_rng(3)
    n, dense, tables, pooling, base = 7, 19, 5, 3, 2
    dense_q = rng.integers(-128, 128, (n, dense))
    ids = rng.integers(0, 1 << g.emb.id_bits, (n, tables, pooling))
    lines, dense_lines, stride = encode_records(g, dense_q, ids, table_base=base)
    lb, entry = g.line_bytes, g.lookup_entry_bits // 8
    assert dense_lines == -(-dense // lb) and stride == dense_lines + -(-(1 + tables * pooling) * entry // lb)
    assert lines.shape == (n * stride, lb)
    raw = lines.reshape(n, stride * lb)
    # By hand, record 4: dense bytes, zero padding, the count, then entry 1 (table ``base``, first ID).
    assert raw[4, :dense].view(np.int8).tolist() == dense_q[4].tolist()
    assert not raw[4, dense:dense_lines * lb].any()
    area = dense_lines * lb
    assert int.from_bytes(raw[4, area:area + entry].tobytes(), "little") == tables * pooling
    first = int.from_bytes(raw[4, area + entry:area + 2 * entry].tobytes(), "little")
    assert first == int(ids[4, 0, 0]) | base << g.emb.id_bits
    back, counts, entries = decode_records(g, lines, count=n, stride=stride, dense_lines=dense_lines, dense=dense)
    assert np.array_equal(back, dense_q) and (counts == tables * pooling).all()
    assert np.array_equal(entries["id"], ids.reshape(n, -1))
    assert np.array_equal(entries["table"], np.broadcast_to(base + np.arange(tables).repeat(pooling), (n, 15)))
    assert np.array_equal(entries["last"], np.broadcast_to(np.tile(np.arange(pooling) == 2, tables), (n, 15)))
    assert np.array_equal(entries["end"], np.broadcast_to(np.arange(15) == 14, (n, 15)))
    with pytest.raises(ChipCommandError, match=r"Records name chip tables .* \(emb_tables\)"):
        encode_records(g, dense_q, ids, table_base=g.emb.tables - 4)


@pytest.mark.parametrize("config", [TINY, SMALL], ids=lambda config: config.name)
def test_lists_and_staged_weights_read_back(config):
    g = ChipGeometry(config)
    indices = np.random.default_rng(2).integers(0, 1 << 16, 37)
    lines = encode_list(g, indices)
    assert lines.shape == (-(-74 // g.line_bytes), g.line_bytes)
    assert np.array_equal(decode_list(g, lines, 37), indices)
    assert lines.reshape(-1)[:2].tolist() == [indices[0] & 255, indices[0] >> 8]
    qmodel = quantised(tiny_dot())
    mlps = qmodel.mlps()
    image = layout_weights(g.engine, 2, {"bottom": mlps["bottom"], "top": mlps["top"]})
    staged = stage_weights(g, image.words)
    per_line = g.line_bytes // g.engine.word_bytes
    assert len(staged) == -(-len(image.words) // per_line)
    # Word j at line j // per_line, byte (j % per_line) * array_cols.
    j = len(image.words) - 1
    line = staged[j // per_line].view(np.int8)
    offset = j % per_line * g.engine.word_bytes
    assert line[offset:offset + g.engine.word_bytes].tolist() == image.words[j].tolist()
    back = staged.view(np.int8).reshape(-1, g.engine.word_bytes)[:len(image.words)]
    assert np.array_equal(back, image.words)


# Models on chip --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models():
    return [quantised(tiny_dot()), quantised(tiny_dot(name="tiny-dot-b", bottom=(6, 4), top=(5, 1))),
            quantised(tiny_dot(name="tiny-cat", interaction="cat", top=(6, 1), emb_dim=4))]


def test_setup_places_tables_configures_them_and_stages_weights(tiny_models):
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b], static_rows={1: (4, 0, 2, 0)})
    g, encoder = setup.geometry, ChipEncoder(TINY)
    assert setup.resident and setup.table_base == [0, 4]
    layout = setup.layouts[0]
    for number, qmodel in enumerate((a, b)):
        for t, rows in enumerate(qmodel.spec.tables):
            chip = setup.table_base[number] + t
            assert layout.tables[chip].dim == g.line_bytes      # emb_dim 4 padded to a whole line
            stored = setup.memory.read(layout.mem_base[chip], rows).view(np.int8)
            expected = qmodel.emb[qmodel.offsets[t]:qmodel.offsets[t] + rows]
            assert np.array_equal(stored[:, :4], expected) and not stored[:, 4:].any()
            assert (layout.tables[chip].m, layout.tables[chip].s) == (qmodel.pool_m[t], qmodel.pool_s[t])
    records = setup.setup_records(2)
    assert np.array_equal(encoder.encode(records), np.concatenate([
        encoder.split(2), encoder.emb_config(layout), encoder.emb_preload(4), encoder.emb_preload(6),
        encoder.nop(0)[:0], encoder.weights(*_weights_fields(setup, 2))]))
    plan = setup.weights(2)
    image, addr = plan.image, plan.addr
    assert plan.staged == {} and plan.region == len(image.words)
    staged = setup.memory.read(addr, -(-len(image.words) * g.engine.word_bytes // g.line_bytes))
    assert np.array_equal(staged.view(np.int8).reshape(-1, g.engine.word_bytes)[:len(image.words)], image.words)
    assert setup.weights(2) is plan      # staged once per split
    query = setup.add_query({a: candidates(a, 9), 1: candidates(b, 9)})
    dense_q, ids = query.inputs[1]
    records_b = query.records[1]
    lines = setup.memory.read(records_b.base, records_b.count * records_b.stride)
    back, _, entries = decode_records(g, lines, count=9, stride=records_b.stride,
                                      dense_lines=records_b.dense_lines, dense=3)
    assert np.array_equal(back, dense_q) and np.array_equal(entries["id"], ids.reshape(9, -1))
    assert entries["table"].min() == 4 and entries["table"].max() == 7
    with pytest.raises(CompileError, match="must be as many for every model: 9 and 8"):
        setup.add_query({a: candidates(a, 9), b: candidates(b, 8)})


def _weights_fields(setup, split):
    plan = setup.weights(split)
    return plan.addr, plan.image.base, len(plan.image.words)


def test_models_that_cannot_run_on_chip_are_refused(tiny_models):
    a = tiny_models[0]
    with pytest.raises(CompileError, match="A chip setup needs at least one model"):
        ChipSetup(TINY, [])
    big = quantised(tiny_dot(name="tiny-wide", emb_dim=32, bottom=(8, 32)))
    with pytest.raises(CompileError, match="tiny-wide cannot run on tiny: embedding dimension 32 exceeds"):
        ChipSetup(TINY, [big])
    many = quantised(tiny_dot(name="tiny-many", tables=(10,) * 9))
    with pytest.raises(CompileError, match=r"tiny-many cannot run on tiny: 9 tables exceed the 8 of a model "
                                           r"\(max_tables\)$"):
        ChipSetup(TINY, [many])
    bare = quantised(tiny_wnd(name="tiny-bare", dense=0))
    with pytest.raises(CompileError, match=r"tiny-bare cannot run on tiny: it has neither a bottom MLP nor dense "
                                           r"inputs \(a sub-batch starts with an INPUT of dense words\)$"):
        ChipSetup(TINY, [bare])
    setup = ChipSetup(TINY, [a])
    with pytest.raises(CompileError, match="Model tiny-dot-b is not loaded"):
        compile_queries(setup, [Stage(tiny_models[1], k=4)], [])


# The compiler ----------------------------------------------------------------------------------------------------

def reference_rankings(program):
    """The pipeline computed here: each stage's logits by ``QuantModel.logits``, ranked by (score desc, index asc)
    with numpy's lexsort, the next stage taking the best candidates."""
    rankings = []
    for q, query in enumerate(program.queries):
        kept = np.arange(query.count)
        for s, stage in enumerate(program.stages):
            number = program.setup.number(stage.model)
            kept = kept[:program.items[q][s]]
            dense_q, ids = query.inputs[number]
            logits = stage.model.logits(dense_q[kept], ids[kept])
            if stage.model.spec.tasks:
                logits = logits[:, 0]       # the chip ranks a multi-task model by task 0's logit
            order = np.lexsort((kept, -logits))[:stage.k]
            kept, scores = kept[order], logits[order]
        rankings.append(list(zip(scores.tolist(), kept.tolist())))
    return rankings


def check_structure(program):
    """What each query's stages send: a FETCH, the LANE commands and a SCORE per sub-batch of at most
    ``sub_batch`` items, sources and result numbers as the mode says, activation regions within the lane."""
    g = program.setup.geometry
    shape = g.engine.splits[program.split]
    records = program.records()
    fetches = [r["arg"] for r in records if r["op"] is Opcode.FETCH]
    scores = [r["arg"] for r in records if r["op"] is Opcode.SCORE]
    lanes = [r["arg"] for r in records if r["op"] is Opcode.LANE]
    assert len(fetches) == len(scores)
    expected_items = [items for per_query in program.items for items in per_query]
    assert sum(f["items"] for f in fetches) == sum(expected_items)
    assert max(f["items"] for f in fetches) <= program.sub_batch <= shape.acc_rows
    for arg in lanes:
        cmd = arg["cmd"]
        words = cmd["ktiles"] if cmd["op"] == Op.INPUT else 0
        assert cmd["in_base"] + words * cmd["stride"] <= shape.act_words
        assert cmd["stride"] == program.sub_batch
    closing = [s for s in scores if s["last"]]
    assert len(closing) == len(expected_items)
    if program.mode == "baseline":
        assert program.split == 1 and all(s["dest"] is ScoreDest.RSP for s in scores)
        assert {f["source"] for f in fetches} <= {FetchSource.RANGE, FetchSource.LIST}
        assert len(program.steps) == 1 + len(expected_items)
    else:
        # Per query (its tag), its stages' closing SCOREs in stage order: a filter unit keeps each stage's result
        # but the last's, which a top-k unit reports (the queries' stages may interleave in the program).
        stages = len(program.stages)
        per_query = {}
        for record in records:
            if record["op"] is Opcode.SCORE and record["arg"]["last"]:
                per_query.setdefault(record["tag"], []).append(record["arg"])
        assert sorted(per_query) == sorted(program.tags)
        for closing_of in per_query.values():
            assert [s["dest"] for s in closing_of] == [ScoreDest.FILTER] * (stages - 1) + [ScoreDest.TOPK]
            assert [s["keep"] for s in closing_of] == [1] * (stages - 1) + [0]
            assert [s["report"] for s in closing_of] == [0] * (stages - 1) + [1]
        survivors = [f for f in fetches if f["source"] is FetchSource.SURVIVORS]
        releases = [f["wait_results"] for f in survivors if f["release"]]
        assert len(releases) == len(program.queries) * (stages - 1)
        if g.units == 1:
            assert releases == list(range(1, len(releases) + 1))


def run_pipeline(setup, stages, queries, schedule):
    program = compile_queries(setup, stages, queries, schedule)
    check_program(setup.geometry, program.records(), memory=setup.memory)
    check_program(setup.geometry, program.words(), memory=setup.memory)
    check_structure(program)
    expected = expected_responses(program)
    assert expected.rankings == reference_rankings(program)
    check_by_interpreting(setup, program, expected)
    return program, expected


@pytest.mark.parametrize("mode", ["rpaccel", "baseline"])
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_tiny_pipelines_compile_check_and_match_the_reference(tiny_models, mode, stages):
    a, b, _ = tiny_models
    setup = ChipSetup(TINY.with_settings(["topk_units=2"]) if stages == 3 else TINY, [a, b])
    queries = [setup.add_query({a: candidates(a, n, 5000 + n), b: candidates(b, n, 5000 + n)}) for n in (40, 23)]
    pipeline = [Stage(a, k=16), Stage(b, k=9), Stage(a, items=6, k=3)][:stages]
    program, expected = run_pipeline(setup, pipeline, queries, Schedule(mode, sub_batch=7))
    assert program.sub_batch == 7 and program.tags == [0, 1]
    responses = expected.responses
    for q in range(2):
        if mode == "rpaccel":
            assert responses.ranking(q) == expected.rankings[q]
        else:
            indices, logits = responses.logits(q)
            assert len(indices) == sum(program.items[q])
            first = program.items[q][0]
            assert np.array_equal(logits[:first], a.logits(*[x[:first] for x in queries[q].inputs[0]]))
            for s in range(1, stages):
                step = program.steps[1 + q * stages + s]
                assert (step.query, step.stage) == (q, s)
                assert sum(items for _, _, items in step.lists) == program.items[q][s]
                words = step.list_words(ChipEncoder(TINY), expected.lists[q, s])
                lines = np.stack([np.frombuffer(record["arg"]["data"].to_bytes(16, "little"), dtype=np.uint8)
                                  for record in decode_commands(TINY, words)])
                first_addr, _, first_items = step.lists[0]
                assert np.array_equal(decode_list(TINY, lines[:-(-2 * first_items // 16)], first_items),
                                      expected.lists[q, s][:first_items])
                assert decode_commands(TINY, words)[0]["arg"]["addr"] == first_addr


def test_sub_batches_default_to_what_the_lanes_hold_and_are_checked(tiny_models):
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b])
    query = setup.add_query({a: candidates(a, 50), b: candidates(b, 50)})
    program, _ = run_pipeline(setup, [Stage(a, k=10), Stage(b, k=4)], [query], Schedule())
    assert program.split == 2 and program.sub_batch >= 8
    with pytest.raises(CompileError, match=r"Sub-batch size 99 is outside \[1, \d+\] for lane 0 of split 2"):
        compile_queries(setup, [Stage(a, k=10), Stage(b, k=4)], [query], Schedule(sub_batch=99))
    with pytest.raises(CompileError, match=r"Stage 1 scores 12 candidates of query 0; it has 10 \(kept by stage 0\)"):
        compile_queries(setup, [Stage(a, k=10), Stage(b, items=12, k=4)], [query])
    with pytest.raises(CompileError, match=r"Stage 0: k = 17 is outside \[1, 16\] \(k_max\)"):
        compile_queries(setup, [Stage(a, k=17)], [query])
    with pytest.raises(CompileError, match="The baseline runs on the whole array"):
        compile_queries(setup, [Stage(a, k=4)], [query], Schedule("baseline", split=2))


def test_the_baseline_runs_sub_batches_one_after_another(tiny_models):
    """Serial sub-batches (the baseline's default): a SYNC after every sub-batch's SCORE, in the query's tag, and no
    lookahead; ``serial=False`` leaves them out; RPAccel mode refuses them (a SYNC would wait for its open query)."""
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b])
    query = setup.add_query({a: candidates(a, 30), b: candidates(b, 30)})
    stages = [Stage(a, k=10), Stage(b, k=4)]

    def ops(program):
        return [record["op"] for record in program.records()]

    serial, _ = run_pipeline(setup, stages, [query], Schedule("baseline", sub_batch=4))
    assert serial.serial
    sequence = ops(serial)
    syncs = [i for i, op in enumerate(sequence) if op is Opcode.SYNC]
    assert len(syncs) == len(serial.sub_batches(0, 0)) + len(serial.sub_batches(0, 1)) == 8 + 3
    assert all(sequence[i - 1] is Opcode.SCORE for i in syncs)
    assert all(record["tag"] == serial.tags[0] for record in serial.records() if record["op"] is Opcode.SYNC)
    # No lookahead: each sub-batch's top MLP and SCORE come before the next sub-batch's FETCH.
    fetches = [i for i, op in enumerate(sequence) if op is Opcode.FETCH]
    assert all(any(f < i < g for i in syncs) for f, g in pairwise(fetches))
    overlapped, _ = run_pipeline(setup, stages, [query], Schedule("baseline", sub_batch=4, serial=False))
    assert not overlapped.serial and Opcode.SYNC not in ops(overlapped)
    with pytest.raises(CompileError, match=r"^Serial sub-batches \(a SYNC after each\) need the baseline mode"):
        compile_queries(setup, stages, [query], Schedule("rpaccel", serial=True))

def test_models_beyond_emb_tables_are_configured_stage_by_stage(tiny_models):
    a, b, c = tiny_models
    setup = ChipSetup(TINY.with_settings(["emb_tables=8"]), [a, b, c])
    assert not setup.resident and setup.table_base == [0, 0, 0]
    query = setup.add_query({a: candidates(a, 30), b: candidates(b, 30), c: candidates(c, 30)})
    for mode in ("rpaccel", "baseline"):
        program, _ = run_pipeline(setup, [Stage(a, k=12), Stage(c, k=5)], [query, query], Schedule(mode))
        configs = [(i, r["arg"]["arg"]["config"]["mem_base"]) for i, r in enumerate(program.records())
                   if r["op"] is Opcode.EMB and r["arg"]["table"] == 0]
        # Stage 0 of each query configures a's tables, stage 1 c's, each placed after the other's in memory.
        assert [base for _, base in configs] == [setup.layouts[0].mem_base[0], setup.layouts[2].mem_base[0]] * 2
    # Without its CONFIG the records would look up tables no CONFIG set up.
    records = [r for r in program.records() if r["op"] is not Opcode.EMB]
    with pytest.raises(ProgramError, match=r"\(FETCH\): the join needs 4 tables; 0 are configured$"):
        check_program(TINY, records, memory=setup.memory, tables=0)


@pytest.fixture(scope="module")
def rm_models():
    return {name: quantised(get_model(name, max_rows=200), samples=1000) for name in ("rm-small", "rm-med")}


@pytest.mark.parametrize("mode", ["rpaccel", "baseline"])
def test_rm_pipelines_on_small(rm_models, mode):
    small, med = rm_models["rm-small"], rm_models["rm-med"]
    setup = ChipSetup(SMALL, [small, med])
    assert setup.resident and setup.table_base == [0, 26]       # 52 tables of emb_tables' 64
    queries = [setup.add_query({small: candidates(small, 300, 7000 + q), med: candidates(med, 300, 7000 + q)})
               for q in range(2)]
    for stages in ([Stage(small, k=64)], [Stage(small, k=64), Stage(med, k=16)],
                   [Stage(small, k=64), Stage(med, k=32), Stage(small, items=20, k=8)]):
        _, expected = run_pipeline(setup, stages, queries, Schedule(mode))
        assert len(expected.rankings[0]) == stages[-1].k


def test_rm_large_streams_on_small_in_parts():
    """RM-large's widest layers take more than half of small's weight buffer: they stream in parts of whole
    n-tiles, each a WEIGHTS and a LAYER, and the program still gives the reference's answers."""
    large = quantised(get_model("rm-large", max_rows=200), samples=600)
    setup = ChipSetup(SMALL, [large])
    plan = setup.weights(1)
    assert plan.addr is None and 2 * plan.slot_words <= SMALL.weight_buffer_words
    parts = [len(layer) for mlp in plan.staged.values() for layer in mlp]
    assert max(parts) > 1 and parts[len(large.spec.bottom) - 1] == parts[-1] == 1      # output layers whole
    query = setup.add_query({large: candidates(large, 20)})
    program, expected = run_pipeline(setup, [Stage(large, k=8)], [query], Schedule(split=1, sub_batch=10))
    layers = [r for r in program.records() if r["op"] is Opcode.LANE and r["arg"]["cmd"]["op"] == Op.LAYER]
    assert len(layers) == 2 * sum(parts)
    slots = {arg["w_addr"] for _, arg in _weights_commands(program.records())}
    assert 2 <= len(slots) <= MAX_SLOTS
    assert len(expected.rankings[0]) == 8


# An untimed interpreter of compiled programs ----------------------------------------------------------------------

def interpret(setup, program, lists):
    """Run ``program`` command by command as docs/chip.md and rtl/mlp.py describe each one, from the memory image
    alone (tables, records, staged weights; ``lists`` written where the baseline steps read them): the fetcher's
    records, the embedding unit's pooling from the configured tables, the lanes' INPUT and LAYER commands on an
    activation memory, the joiner's interaction, the score sequencers and top-k units. Written independently of
    the compiler; returns ``{tag: [(kind, last, code, index, score), ...]}``."""
    g, memory = setup.geometry, setup.memory
    for step in program.steps:
        for addr, first, items in step.lists:
            memory.write(addr, encode_list(g, lists[step.query, step.stage][first:first + items]))
    wb, lb, rows = g.engine.word_bytes, g.line_bytes, g.rows
    weights = np.zeros((g.engine.weight_words, wb), dtype=np.int64)
    tables, queues, jobs, out = {}, defaultdict(deque), defaultdict(deque), defaultdict(list)
    kept, pending = defaultdict(list), defaultdict(lambda: ([], []))
    shape = act = None

    def take(kind, lane, count):
        return [queues[kind, lane].popleft() for _ in range(count)]

    def join(lane):
        # Each lane's jobs in order, whatever another lane's wait for.
        while jobs[lane]:
            items, params, pooled = jobs[lane][0]
            ntiles = -(-params["dim"] // shape.cols)
            if len(queues["bottom", lane]) < items * ntiles:
                return
            block = np.array(take("bottom", lane, items * ntiles)).reshape(ntiles, items, shape.cols)
            bottom = block.transpose(1, 0, 2).reshape(items, -1)[:, :params["dim"]]
            if MODES[params["mode"]] == "dot":
                vectors = np.concatenate([bottom[:, None], pooled], axis=1)
                iu, ju = pair_indices(params["vectors"])
                gram = np.einsum("nid,njd->nij", vectors, vectors)[:, iu, ju]
                x = np.concatenate([bottom, requantize(gram, params["m"], params["s"])], axis=1)
            else:
                x = np.concatenate([bottom, pooled.reshape(items, -1)], axis=1)
            words = output_words(MODES[params["mode"]], params["vectors"], params["dim"], rows)
            padded = np.zeros((items, words * rows), dtype=np.int64)
            padded[:, :x.shape[1]] = x
            queues["inter", lane].extend(padded.reshape(items, words, rows))
            jobs[lane].popleft()

    for record in program.records():
        op, arg, tag = record["op"], record["arg"], record["tag"]
        if op is Opcode.SYNC:       # every earlier command has finished: its responses come first
            out[tag].append((ResponseKind.DONE.value, 1, 0, 0, 0))
        elif op is Opcode.SPLIT:
            shape = g.engine.splits[arg["n"]]
            act = {lane: np.zeros((shape.act_words, shape.rows), dtype=np.int64) for lane in range(arg["n"])}
        elif op is Opcode.WEIGHTS:
            count = arg["words"]
            staged = memory.read(arg["mem_addr"], -(-count * wb // lb)).view(np.int8).reshape(-1, wb)
            weights[arg["w_addr"]:arg["w_addr"] + count] = staged[:count]
        elif op is Opcode.EMB and plain(arg["op"]) == EmbeddingOp.CONFIG.value:
            tables[arg["table"]] = arg["arg"]["config"]
        elif op is Opcode.FETCH:
            lane, items, first = arg["lane"], arg["items"], arg["first"]
            source = FetchSource(plain(arg["source"]))
            if source is FetchSource.RANGE:
                indices = first + np.arange(items)
            elif source is FetchSource.SURVIVORS:
                indices = kept[arg["unit"]][arg["wait_results"] - 1][first:first + items]
            else:
                indices = decode_list(g, memory.read(arg["list_addr"], -(-2 * items // lb)), items)
            stride, dense = arg["stride"], min(arg["dense_words"] * rows, arg["dense_lines"] * lb)
            lines = np.concatenate([memory.read(arg["base"] + index * stride, stride) for index in indices])
            dense_q, counts, entries = decode_records(g, lines, count=items, stride=stride,
                                                      dense_lines=arg["dense_lines"], dense=dense)
            words = np.zeros((items, arg["dense_words"] * rows), dtype=np.int64)
            words[:, :dense] = dense_q
            queues["dense", lane].extend(words.reshape(items, -1, rows))
            queues["index", lane].extend(indices.tolist())
            params = arg["join"]
            pooled = np.zeros((items, params["vectors"] - 1, params["dim"]), dtype=np.int64)
            for item in range(items):
                bag, acc = 0, 0
                for e in range(counts[item]):
                    config = tables[entries["table"][item, e]]
                    row_lines = 1 << config["row_lines"]
                    row = memory.read(config["mem_base"] + entries["id"][item, e] * row_lines, row_lines)
                    acc = acc + row.view(np.int8).reshape(-1).astype(np.int64)
                    if entries["last"][item, e]:
                        pooled[item, bag] = requantize(acc, config["m"], config["s"])[:params["dim"]]
                        bag, acc = bag + 1, 0
            jobs[lane].append((items, params, pooled))
        elif op is Opcode.LANE:
            lane, cmd = arg["lane"], arg["cmd"]
            r, c, items, stride = shape.rows, shape.cols, cmd["items"], cmd["stride"]
            if cmd["op"] == Op.INPUT:
                kind = "dense" if plain(arg["src"]) == ActSource.DENSE.value else "inter"
                join(lane)
                for i, item in enumerate(take(kind, lane, items)):
                    cut = item.reshape(-1, r)[:cmd["ktiles"]]
                    act[lane][cmd["in_base"] + np.arange(cmd["ktiles"]) * stride + i] = cut
                continue
            kt, nt = cmd["ktiles"], cmd["ntiles"]
            x = act[lane][cmd["in_base"] + np.arange(kt)[:, None] * stride + np.arange(items)]   # (kt, items, r)
            x = x.transpose(1, 0, 2).reshape(items, kt * r)
            w_words, biases, blocks = cmd["w_base"], [], []
            for _ in range(nt):
                raw = weights[w_words:w_words + shape.bias_words].astype(np.int8).reshape(-1)
                biases.append(raw.view("<i4")[:c].astype(np.int64))
                w_words += shape.bias_words
                blocks.append(weights[w_words:w_words + kt * shape.tile_words].reshape(kt * r, c))
                w_words += kt * shape.tile_words
            p = cmd["params"]
            y = postprocess(x @ np.concatenate(blocks, axis=1), np.concatenate(biases), p["m"], p["s"],
                            bool(p["relu"]), bool(p["raw"]))
            if cmd["to_output"]:
                kind = "bottom" if plain(arg["dst"]) == OutDest.JOIN.value else "logits"
                queues[kind, lane].extend(y.reshape(items, nt, c).transpose(1, 0, 2).reshape(-1, c))
            else:
                element = np.arange(nt * c)
                act[lane][cmd["out_base"] + (element // r)[None, :] * stride + np.arange(items)[:, None],
                          element % r] = y
        elif op is Opcode.SCORE:
            lane, items = arg["lane"], arg["items"]
            logits = [vector[0] for vector in take("logits", lane, items)]
            indices = take("index", lane, items)
            if plain(arg["dest"]) == ScoreDest.RSP.value:
                out[tag] += [(ResponseKind.LOGIT.value, int(arg["last"] and i == items - 1), 0, index, int(logit))
                             for i, (index, logit) in enumerate(zip(indices, logits))]
                continue
            filtered = plain(arg["dest"]) == ScoreDest.FILTER.value
            holder = g.units + arg["unit"] if filtered else arg["unit"]
            scores, held = pending[holder]
            scores += logits
            held += indices
            if arg["last"]:
                best, best_indices = topk(np.array(scores), arg["k"], np.array(held))
                if filtered:        # the set, in the order it was scored
                    best_indices = np.array(held)[np.isin(held, best_indices)]
                    best = np.zeros(len(best_indices), dtype=np.int64)
                if arg["keep"]:
                    kept[holder].append(best_indices)
                if arg["report"]:
                    kind = ResponseKind.KEPT if filtered else ResponseKind.RANK
                    out[tag] += [(kind.value, int(i == len(best) - 1), 0, int(index), int(score))
                                 for i, (score, index) in enumerate(zip(best, best_indices))]
                del pending[holder]
    assert not any(jobs.values()) and not any(queues.values()), "streams left with data"
    return out


def check_by_interpreting(setup, program, expected):
    answers = interpret(setup, program, expected.lists)
    for tag in set(program.tags):
        assert answers[tag] == expected.responses.records(tag), f"tag {tag}"


# The checker -----------------------------------------------------------------------------------------------------

@pytest.fixture()
def two_stage(tiny_models):
    """A checked 2-stage rpaccel program over three queries, its records and setup."""
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b])
    queries = [setup.add_query({a: candidates(a, 20, 6000 + q), b: candidates(b, 20, 6000 + q)}) for q in range(3)]
    program = compile_queries(setup, [Stage(a, k=12), Stage(b, k=5)], queries, Schedule(sub_batch=8))
    records = program.records()
    check_program(TINY, records, memory=setup.memory)
    return records, setup


def _find(records, op, start=0, **where):
    for index in range(start, len(records)):
        record = records[index]
        if record["op"] is op and all(_field(record["arg"], name) == value for name, value in where.items()):
            return index
    raise AssertionError(f"no {op.name} with {where}")


def _field(arg, name):
    for part in name.split("__"):
        arg = arg[part]
    return arg.value if hasattr(arg, "value") else arg


def _changed(records, index, **fields):
    records = [dict(record) for record in records]
    arg = {**records[index]["arg"]}
    for name, value in fields.items():
        if name.startswith("cmd__"):
            arg["cmd"] = {**arg["cmd"], name[5:]: value}
        else:
            arg[name] = value
    records[index] = {**records[index], "arg": arg}
    return records


def test_checker_catches_planted_inconsistencies(two_stage):
    records, setup = two_stage

    def refused(message, program):
        with pytest.raises(ProgramError, match=message):
            check_program(TINY, program, memory=setup.memory)

    dense_input = _find(records, Opcode.LANE, src=ActSource.DENSE.value, cmd__op=Op.INPUT)
    fetch = _find(records, Opcode.FETCH)
    refused(rf"^command {dense_input} \(LANE\): INPUT\(DENSE\) takes 2 words per item of dense \(lane 0\), but "
            rf"command {fetch} \(FETCH\) \(its dense words\) sends 1$",
            _changed(records, dense_input, src_words=2))
    # A missing SCORE (the first sub-batch's): its candidates' indices and logits are taken by no one.
    score = _find(records, Opcode.SCORE)
    refused(r"items of (index|logits) \(lane 0\) .* that no command takes$", records[:score] + records[score + 1:])
    layer = _find(records, Opcode.LANE, start=dense_input + 2, cmd__op=Op.LAYER)
    refused(rf"^command {layer} \(LANE\): wait_layers = 9, but only 1 layers of lane 0 come before it$",
            _changed(records, layer, cmd__wait_layers=9))
    refused(rf"^command {dense_input} \(LANE\): waits for 2 WEIGHTS commands; only 1 come before it$",
            _changed(records, dense_input, wait_weights=2))
    # A result read after its release: the releasing FETCH repeated.
    release = _find(records, Opcode.FETCH, release=1)
    refused(rf"^command {release + 1} \(FETCH\): reads kept result 1 of filter unit 0 after its release$",
            [*records[:release + 1], records[release], *records[release + 1:]])
    # Result 3 reuses result 1's bank, which query 0's last stage-1 fetch no longer releases.
    keep3 = [i for i, r in enumerate(records) if r["op"] is Opcode.SCORE and r["arg"]["keep"]][2]
    refused(rf"^command {keep3} \(SCORE\): keeps result 3 of filter unit 0 in the bank of result 1, which no "
            "earlier FETCH releases$", _changed(records, release, release=0))
    wait = _find(records, Opcode.FETCH, source=FetchSource.SURVIVORS.value)
    refused(rf"^command {wait} \(FETCH\): waits for kept result 2 of filter unit 0; only 1 are kept before it$",
            _changed(records, wait, wait_results=2))
    closing = _find(records, Opcode.SCORE, last=1)
    refused(rf"^command {closing} \(SCORE\): k = 0 is outside \[1, 256\]$", _changed(records, closing, k=0))
    refused(rf"^command {fetch} \(FETCH\): candidate 0's record holds 4 bags; the join takes 3$",
            _changed(records, fetch, join={**records[fetch]["arg"]["join"], "vectors": 4}))
    refused(r"^command 0 \(SPLIT\): split 3 is not one of \(1, 2, 4\)$", _changed(records, 0, n=3))
    second_lane = _find(records, Opcode.FETCH, lane=1)
    refused(rf"^command {second_lane} \(FETCH\): lane 1 is not active in split 1$", _changed(records, 0, n=1))
    refused(rf"^command {layer} \(LANE\): the words from in_base 250 \(\d+ per item, stride 8\) go beyond the "
            r"lane's 128 activation words$", _changed(records, layer, cmd__in_base=250))
    refused(rf"^command {layer} \(LANE\): stride 3 is below the \d+ items", _changed(records, layer, cmd__stride=3))
    weights = _find(records, Opcode.WEIGHTS)
    refused(r"\(LANE\): the layer's weights \(words \d+ \.\. \d+\) are not all loaded by earlier WEIGHTS$",
            _changed(records, weights, words=8))
    refused(r"^End of program: kept result 3 of filter unit 0 is never released",
            _changed(records, max(i for i, r in enumerate(records) if r["op"] is Opcode.FETCH and r["arg"]["release"]),
                     release=0))


def test_the_interpreter_catches_a_planted_compiler_bug(tiny_models):
    """The interpreter is a scoreboard that can fail: the interaction's requantisation shift changed in one FETCH
    of a compiled program gives other answers than the golden model."""
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b])
    query = setup.add_query({a: candidates(a, 30), b: candidates(b, 30)})
    program, expected = run_pipeline(setup, [Stage(a, k=10), Stage(b, k=4)], [query], Schedule(sub_batch=6))
    fetch = _find(program.steps[0].records, Opcode.FETCH, source=FetchSource.SURVIVORS.value)     # stage 1's
    join = program.steps[0].records[fetch]["arg"]["join"]
    program.steps[0].records = _changed(program.steps[0].records, fetch,
                                        join={**join, "s": join["s"] + 1})
    with pytest.raises(AssertionError, match="tag 0"):
        check_by_interpreting(setup, program, expected)


# Models without a bottom MLP, and task towers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide_models():
    """Wide & Deep of tiny's sizes (no bottom MLP; 5 dense inputs, not a whole word of tiny's 4 rows) and a
    multi-task variant (two towers after the top MLP)."""
    return [quantised(tiny_wnd(dense=5, emb_dim=3)),
            quantised(tiny_wnd(name="tiny-mt-wnd", dense=6, top=(6, 5), tasks=2, tower=(4, 1)))]


def test_a_model_without_a_bottom_mlp_runs_a_stub_and_zero_rows(wide_models):
    """The chip's MLPs of Wide & Deep: a stub bottom layer giving a zero vector of ``emb_dim``, and the first top
    layer's weights with zero rows for the dense padding (5 -> 8) and the stub's vector, the rest the model's; a
    multi-task model's top MLP runs on into task 0's tower."""
    wnd, mt = wide_models
    (stub,), top = chip_mlps(TINY, wnd)
    d, first = wnd.spec.emb_dim, wnd.mlps()["top"][0]
    assert stub.shape == (1, d) and not stub.weights.any() and not stub.bias.any()
    weights = top[0].weights
    assert weights.shape == (8 + d + wnd.spec.num_tables * d, first.shape[1])
    assert np.array_equal(weights[:5], first.weights[:5]) and not weights[5:8 + d].any()
    assert np.array_equal(weights[8 + d:], first.weights[5:])
    assert np.array_equal(top[0].bias, first.bias) and (top[0].m, top[0].s, top[0].relu) == (first.m, first.s, True)
    assert top[1:] == wnd.mlps()["top"][1:]
    _, top = chip_mlps(TINY, mt)
    mlps = mt.mlps()
    assert [layer.name for layer in top] == ["top0", "top1", "task0.0", "task0.1"] and top[-1].raw
    assert top[1:] == mlps["top"][1:] + mlps["task0"]


@pytest.mark.parametrize(("mode", "split"), [("rpaccel", 1), ("rpaccel", 2), ("rpaccel", 4), ("baseline", 1)])
def test_models_without_a_bottom_mlp_compile_check_and_match_the_reference(wide_models, mode, split):
    """Wide & Deep and its multi-task variant on every split of tiny (lanes of 4 and 2 rows), negative dense inputs
    among them: the dense INPUT goes to the top MLP's input region, where the stub reads its first word, the
    interaction's INPUT after the dense words; the interpreter's answers equal the golden model's (task 0's logit
    for the multi-task model)."""
    rng = np.random.default_rng(split)
    for model in wide_models:
        setup = ChipSetup(TINY, [model])
        queries = [setup.add_query({model: random_inputs(model.spec, n, rng)}) for n in (21, 9)]
        program, _ = run_pipeline(setup, [Stage(model, k=7)], queries, Schedule(mode, split=split, sub_batch=4))
        rows = setup.geometry.engine.splits[split].rows
        lanes = [r["arg"] for r in program.records() if r["op"] is Opcode.LANE]
        inputs = {ActSource.DENSE: [], ActSource.INTERACT: []}
        for arg, after in pairwise(lanes):
            cmd, layer = arg["cmd"], after["cmd"]
            if cmd["op"] == Op.INPUT:
                # The stub (after the dense INPUT) and the top MLP (after the interaction's) read from the region's
                # first word: the dense words' (8 per item) and then the interaction's.
                joined = (model.spec.num_tables + 1) * model.spec.emb_dim
                assert layer["op"] == Op.LAYER and layer["ktiles"] == (1 if arg["src"] is ActSource.DENSE else
                                                                        -(-(8 + joined) // rows))
                inputs[arg["src"]].append(cmd["in_base"] - layer["in_base"])
                assert cmd["ktiles"] == (8 // rows if arg["src"] is ActSource.DENSE else -(-joined // rows))
        assert set(inputs[ActSource.DENSE]) == {0} and set(inputs[ActSource.INTERACT]) == {8 // rows * 4}


def test_the_interpreter_catches_dense_words_out_of_place(wide_models, monkeypatch):
    """The scoreboard can fail here: first top layer weights without the dense inputs' padding to a whole word
    (their rows then meet the wrong activations) give other logits than the golden model's."""
    from rpaccel.host.driver.chip import program as compiler

    def unpadded(config, qmodel):
        bottom, top = chip_mlps(config, qmodel)
        weights = np.delete(top[0].weights, slice(qmodel.spec.dense, 8), axis=0)
        weights = np.concatenate([weights, np.zeros((8 - qmodel.spec.dense, weights.shape[1]), weights.dtype)])
        return bottom, [replace(top[0], weights=weights), *top[1:]]

    monkeypatch.setattr(compiler, "chip_mlps", unpadded)
    wnd = wide_models[0]
    setup = ChipSetup(TINY, [wnd])
    query = setup.add_query({wnd: random_inputs(wnd.spec, 12, np.random.default_rng(5))})
    with pytest.raises(AssertionError, match="tag 0"):
        run_pipeline(setup, [Stage(wnd, k=12)], [query], Schedule())


# Streaming weights -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_model():
    """A model whose weights (312 words at split 1) exceed tiny's weight buffer (256 words)."""
    return quantised(tiny_dot(name="tiny-big", bottom=(16, 16, 4), top=(16, 16, 1)))


def _weights_commands(records):
    return [(i, r["arg"]) for i, r in enumerate(records) if r["op"] is Opcode.WEIGHTS]


@pytest.mark.parametrize(("mode", "stages", "split", "lookahead"), [
    ("rpaccel", 1, 1, True), ("rpaccel", 2, 2, True), ("rpaccel", 2, 2, False), ("rpaccel", 2, 1, True),
    ("baseline", 2, 1, True)])
def test_weights_beyond_the_buffer_stream_through_slots(tiny_models, big_model, mode, stages, split, lookahead):
    """The model that does not fit streams (the other stays resident): per sub-batch a WEIGHTS before each of its
    layers, into alternating slots, each waiting for the layer that last read its slot; the program passes the
    checker and the interpreter gives the golden model's answers."""
    a = tiny_models[0]
    setup = ChipSetup(TINY, [a, big_model])
    plan = setup.weights(split)
    assert set(plan.staged) == {(1, "bottom"), (1, "top")} and set(plan.image.bases) == {(0, "bottom"), (0, "top")}
    queries = [setup.add_query({a: candidates(a, n, 8000 + n), big_model: candidates(big_model, n, 8000 + n)})
               for n in (21, 13)]
    pipeline = [Stage(big_model, k=5)] if stages == 1 else [Stage(a, k=9), Stage(big_model, k=4)]
    program, expected = run_pipeline(setup, pipeline, queries,
                                     Schedule(mode, split=split, sub_batch=5, lookahead=lookahead))
    records = program.records()
    weights = _weights_commands(records)
    sub_batches = sum(-(-program.items[q][-1] // 5) for q in range(2))
    assert len(weights) == 1 + 6 * sub_batches      # the resident image, then six layers per sub-batch
    streamed = [arg for _, arg in weights[1:]]
    slots = sorted({arg["w_addr"] for arg in streamed})
    assert len(slots) >= 2 and slots[0] == plan.region and all(arg["lane"] == (stages - 1) % split for arg in streamed)
    assert [arg["w_addr"] for arg in streamed] == [slots[i % len(slots)] for i in range(len(streamed))]
    assert [arg["wait"] for arg in streamed] == [int(i >= len(slots)) for i in range(len(streamed))]
    if mode == "rpaccel":
        for q in range(2):
            assert expected.responses.ranking(q) == expected.rankings[q]


def test_streaming_on_every_lane_and_when_it_cannot(tiny_models, big_model):
    """Both stages' models streamed (``streamed``), each lane with a ring of its own (in parts where the room
    divided by the lanes is smaller than a layer); too little room is an error naming the lanes."""
    a = tiny_models[0]
    wide = TINY.with_settings(["weight_buffer_words=512"])
    setup = ChipSetup(wide, [a, big_model], streamed=(0, 1))
    queries = [setup.add_query({a: candidates(a, 17, 8100 + q), big_model: candidates(big_model, 17, 8100 + q)})
               for q in range(2)]
    program, _ = run_pipeline(setup, [Stage(a, k=8), Stage(big_model, k=6)], queries, Schedule(split=2, sub_batch=4))
    streamed = [arg for _, arg in _weights_commands(program.records())]
    lanes = {lane: {arg["w_addr"] for arg in streamed if arg["lane"] == lane} for lane in (0, 1)}
    assert lanes[0] and lanes[1] and not lanes[0] & lanes[1]
    # Query 0's stage 1 (lane 1) and query 1's stage 0 (lane 0) interleave: the loader serves the lanes in turn.
    order = [arg["lane"] for arg in streamed]
    switches = sum(1 for x, y in pairwise(order) if x != y)
    assert switches > 2 * len(queries)
    assert setup.weights(2).addr is None        # nothing resident: no WEIGHTS before the first layer's
    # Both models streamed on tiny's 256 words: two lanes' rings of slots of 64, the 80-word layers in parts.
    setup = ChipSetup(TINY, [a, big_model], streamed=(0, 1))
    assert setup.weights(2).slot_words <= 64 and max(map(len, setup.weights(2).staged[1, "top"])) == 2
    queries = [setup.add_query({a: candidates(a, 17, 8100), big_model: candidates(big_model, 17, 8100)})]
    run_pipeline(setup, [Stage(a, k=8), Stage(big_model, k=6)], queries, Schedule(split=2, sub_batch=4))
    # One streamed model on two lanes: the plan divided the room for one, so it is made again with slots for two
    # (smaller, the 80-word layers in parts), each lane's ring of its own.
    setup = ChipSetup(TINY, [a, big_model])
    queries = [setup.add_query({a: candidates(a, 17, 8100), big_model: candidates(big_model, 17, 8100)})]
    program, _ = run_pipeline(setup, [Stage(big_model, k=8), Stage(big_model, k=3)], queries, Schedule(split=2))
    assert setup.weights(2, 2).slot_words < setup.weights(2).slot_words == 80
    streamed = [arg for _, arg in _weights_commands(program.records())]
    assert {arg["lane"] for arg in streamed} == {0, 1}
    with pytest.raises(CompileError, match=r"^tiny-big's bottom layer 1 at split 1 cannot stream: 1 n-tiles of 20 "
                                           r"words each in a slot, and the 32 words the resident weights leave "
                                           "hold slots of 16$"):
        ChipSetup(TINY.with_settings(["weight_buffer_words=32"]), [big_model]).weights(1)
    with pytest.raises(CompileError, match=r"^Streamed models \[2\] must be model numbers below 2$"):
        ChipSetup(TINY, [a, big_model], streamed=(2,))


def test_balanced_interleave_runs_cheap_sub_batches_between_expensive_ones(tiny_models, big_model):
    """Stage 1 of query q (the big streamed model, lane 1) and stage 0 of query q + 1 (a small resident one, lane
    0) interleave: balanced, several of lane 0's sub-batches go between two of lane 1's, in proportion to their
    estimated cycles; otherwise one each in turn. Both programs check and answer as the golden model."""
    a = tiny_models[0]
    setup = ChipSetup(TINY, [a, big_model])
    queries = [setup.add_query({a: candidates(a, 40, 8200 + q), big_model: candidates(big_model, 40, 8200 + q)})
               for q in range(3)]
    runs = {}
    for balance in (True, False):
        program, _ = run_pipeline(setup, [Stage(a, k=12), Stage(big_model, k=4)], queries,
                                  Schedule(split=2, sub_batch=4, balance=balance))
        # Lane 0's FETCHes between two of lane 1's.
        between, count = [], None
        for record in program.records():
            if record["op"] is not Opcode.FETCH:
                continue
            if record["arg"]["lane"] == 1:
                if count is not None:
                    between.append(count)
                count = 0
            elif count is not None:
                count += 1
        runs[balance] = between
    # Stage 0 has 10 sub-batches, stage 1 3 (query 2's stage 1 runs alone, at the end).
    assert runs[False] == [1, 1, 8, 1, 1, 8, 0, 0]
    assert runs[True] == [3, 4, 3, 3, 4, 3, 0, 0]


def test_checker_catches_planted_streaming_errors(tiny_models, big_model):
    a = tiny_models[0]
    setup = ChipSetup(TINY, [a, big_model])
    queries = [setup.add_query({a: candidates(a, 20, 8200), big_model: candidates(big_model, 20, 8200)})]
    program = compile_queries(setup, [Stage(a, k=9), Stage(big_model, k=4)], queries, Schedule(sub_batch=5))
    records = program.records()
    check_program(TINY, records, memory=setup.memory)

    def refused(message, changed):
        with pytest.raises(ProgramError, match=message):
            check_program(TINY, changed, memory=setup.memory)

    waiting = next(i for i, arg in _weights_commands(records) if arg["wait"])
    layers = records[waiting]["arg"]["wait_layers"]
    refused(rf"^command {waiting} \(WEIGHTS\): overwrites weights that layer {layers} of lane 1 reads; it does not "
            "wait for it$", _changed(records, waiting, wait=0))
    refused(rf"^command {waiting} \(WEIGHTS\): overwrites weights that layer {layers} of lane 1 reads; it waits "
            rf"for {layers - 1} layers of lane 1$", _changed(records, waiting, wait_layers=layers - 1))
    refused(rf"^command {waiting} \(WEIGHTS\): overwrites weights that layer {layers} of lane 1 reads; it waits "
            rf"for {layers} layers of lane 0$", _changed(records, waiting, lane=0))
    layer = waiting + 1
    assert records[layer]["op"] is Opcode.LANE and records[layer]["arg"]["cmd"]["op"] == Op.LAYER
    count = records[layer]["arg"]["wait_weights"]
    refused(rf"^command {layer} \(LANE\): reads weights WEIGHTS command {count} loads, but waits for {count - 1}$",
            _changed(records, layer, wait_weights=count - 1))
    # A WEIGHTS moved before the layer it waits for: the wait cannot be met by commands before it.
    reader = [i for i in range(waiting) if records[i]["op"] is Opcode.LANE and records[i]["arg"]["lane"] == 1
              and records[i]["arg"]["cmd"]["op"] == Op.LAYER][layers - 1]
    moved = [*records[:reader], records[waiting], *records[reader:waiting], *records[waiting + 1:]]
    refused(rf"^command {reader} \(WEIGHTS\): waits for {layers} layers of lane 1; only {layers - 1} come before it$",
            moved)


#: Tiny with a top-k and a filter unit for each of two lanes of a stage.
TINY2 = TINY.with_settings(["topk_units=2", "filter_units=2"])


@pytest.mark.parametrize(("stages", "lanes", "interleave", "interleaved"), [
    (1, ((0, 1),), True, True), (2, ((0, 1), (2, 3)), True, True), (3, ((0,), (1,), (2, 3)), True, True),
    (2, ((0, 1, 2), (3,)), True, False),        # three lanes of a stage share two filter units
    (2, ((0, 1), (0, 1)), True, False),         # lanes serving two stages
    (2, ((0, 1), (2, 3)), False, False)])
def test_lane_maps_spread_queries_over_lanes(tiny_models, stages, lanes, interleave, interleaved):
    """Stage ``s`` of query ``q`` on lane ``lanes[s][q % len(lanes[s])]``: every program passes the checker and the
    interpreter; where every lane serves one stage and every unit one lane, queries of the same stage on two lanes
    interleave (several queries in flight on a stage); otherwise each query's commands stay together."""
    a, b, _ = tiny_models
    setup = ChipSetup(TINY2, [a, b])
    queries = [setup.add_query({a: candidates(a, n, 5000 + n), b: candidates(b, n, 5000 + n)})
               for n in (40, 23, 31, 29, 35)]
    pipeline = [Stage(a, k=16), Stage(b, k=9), Stage(a, items=6, k=3)][:stages]
    program, _ = run_pipeline(setup, pipeline, queries,
                              Schedule(split=4, sub_batch=5, lanes=lanes, interleave=interleave))
    assert program.lanes == lanes
    records = program.records()
    closing = [(r["tag"], r["arg"]["lane"], r["arg"]["dest"], r["arg"]["unit"]) for r in records
               if r["op"] is Opcode.SCORE and r["arg"]["last"]]
    for q in range(len(queries)):
        assert [lane for tag, lane, _, _ in closing if tag == q] == [lanes[s][q % len(lanes[s])]
                                                                     for s in range(stages)]
    tags = [r["tag"] for r in records if r["op"] is Opcode.FETCH]
    if not interleaved:
        assert tags == sorted(tags)
    else:
        owners = defaultdict(set)
        for _, lane, dest, unit in closing:
            owners[dest, unit].add(lane)
        assert all(len(lanes_of) == 1 for lanes_of in owners.values())
        if min(map(len, lanes[:-1] or lanes)) > 1:
            # Waves of two queries: query 1's first stage starts (on its second lane) before query 0's (on its
            # first) has fetched its second sub-batch.
            fetches = [(r["tag"], r["arg"]["lane"]) for r in records if r["op"] is Opcode.FETCH]
            assert fetches.index((1, lanes[0][1])) < [i for i, f in enumerate(fetches) if f == (0, lanes[0][0])][1]


def test_the_default_lane_map_is_stage_s_on_lane_s_alone(tiny_models):
    """``lanes=None`` is stage ``s`` on lane ``s % split``: given explicitly, the same program word for word."""
    a, b, _ = tiny_models
    for split, lanes in ((2, ((0,), (1,))), (1, ((0,), (0,)))):
        words = []
        for given in (None, lanes):
            setup = ChipSetup(TINY, [a, b])
            queries = [setup.add_query({a: candidates(a, n, 5000 + n), b: candidates(b, n, 5000 + n)})
                       for n in (40, 23)]
            program = compile_queries(setup, [Stage(a, k=16), Stage(b, k=9)], queries,
                                      Schedule(split=split, sub_batch=5, lanes=given))
            assert program.lanes == lanes
            words.append(program.words())
        assert np.array_equal(*words)


@pytest.mark.parametrize(("lanes", "message"), [
    (((0,), (4,)), r"^Stage 1's lane 4 is not a lane of split 4 \(0 to 3\)$"),
    (((0, 1), ()), r"^Stage 1 has no lanes in the lane map \(\(0, 1\), \(\)\)$"),
    (((0,),), r"^The lane map \(\(0,\),\) must give a tuple of lanes for each of the 2 stages$"),
    (((0, 0), (1,)), r"^Stage 0 names a lane twice in the lane map: \(0, 0\)$"),
    (((0,), ("1",)), r"^Stage 1's lane '1' is not a lane of split 4 \(0 to 3\)$"),
    (((0,), (True,)), r"^Stage 1's lane True is not a lane of split 4 \(0 to 3\)$"),
    ((0, 1), r"^Stage 0's entry 0 in the lane map \(0, 1\) is not a tuple of lanes$")])
def test_impossible_lane_maps_are_refused_naming_the_value(tiny_models, lanes, message):
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b])
    with pytest.raises(CompileError, match=message):
        compile_queries(setup, [Stage(a, k=16), Stage(b, k=9)], [], Schedule(split=4, lanes=lanes))


def test_a_lane_map_streaming_on_more_lanes_than_the_buffer_holds_is_refused(big_model):
    """A streamed model on four lanes: the weight buffer's room divided into two slots for each is too small for
    a layer's n-tile (one lane runs it)."""
    config = TINY.with_settings(["weight_buffer_words=64"])
    setup = ChipSetup(config, [big_model])
    queries = [setup.add_query({big_model: candidates(big_model, 17, 8100 + q)}) for q in range(2)]
    compile_queries(setup, [Stage(big_model, k=8)], queries, Schedule(split=4, lanes=((0,),)))
    with pytest.raises(CompileError, match=r"^tiny-big's bottom layer 1 at split 4 cannot stream: 1 n-tiles of 10 "
                                           r"words each in a slot, and the 64 words the resident weights leave hold "
                                           r"slots of 8 \(two for each of 4 streaming lanes\)$"):
        compile_queries(setup, [Stage(big_model, k=8)], queries, Schedule(split=4, lanes=((0, 1, 2, 3),)))


def test_checker_catches_a_unit_keeping_results_from_two_lanes_out_of_order(tiny_models):
    """Stage 0 on lanes 0 and 1 sharing tiny's one filter unit, each query's commands together: query 1's stage 0
    (lane 1) comes after query 0's stage 1 waits for query 0's kept result, so the unit closes them in the program's
    order. Planted: query 1's stage 0 moved before query 0's stage 1, the filter unit may close query 1 first and
    number its result 1; the checker refuses it (and accepts the compiled order)."""
    a, b, _ = tiny_models
    setup = ChipSetup(TINY, [a, b])
    queries = [setup.add_query({a: candidates(a, n, 5000 + n), b: candidates(b, n, 5000 + n)}) for n in (40, 23)]
    program = compile_queries(setup, [Stage(a, k=16), Stage(b, k=9)], queries,
                              Schedule(split=4, sub_batch=5, lanes=((0, 1), (2,))))
    records = program.records()
    check_program(TINY, records, memory=setup.memory)
    setup_count = len(setup.setup_records(4))
    runs = []       # the program's tasks: runs of one query's commands on one lane
    for record in records[setup_count:]:
        key = (record["tag"], record["arg"]["lane"])
        if not runs or runs[-1][0] != key:
            runs.append((key, []))
        runs[-1][1].append(record)
    assert [key for key, _ in runs] == [(0, 0), (0, 2), (1, 1), (1, 2)]
    planted = records[:setup_count] + runs[0][1] + runs[2][1] + runs[1][1] + runs[3][1]
    with pytest.raises(ProgramError, match=r"^command \d+ \(SCORE\): filter unit 0 takes a query from lane 1 after "
                                           r"one from lane 0, whose kept result 1 no FETCH before command \d+ "
                                           r"\(this query's\) waits for"):
        check_program(TINY, planted, memory=setup.memory)
