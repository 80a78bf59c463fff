"""The chip's functional model (rpaccel.sim.model.functional) on hand-built programs and the driver's.

Programs are encoded here with the codec straight from the layouts of rtl/accel/isa.py: memory written and read
back, an MLP run through the dense path, the joiner and a SCORE to the response stream against
host.reference.mlp_forward, a 1-stage and a 2-stage query of trained, quantised RM models against host.reference.run
and numeric.topk, a 2-stage chain keeping more than k_max candidates on a filter unit, a filter query beyond the
unit's capacity, every error code (the filter checks also against the RTL controller), and programs whose streams or
waits do not line up raising Deadlock. Programs of the driver (rpaccel.host.driver.chip), whose intermediate stages
keep on filter units, against its golden model.
"""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.lib import data

from rpaccel.cachemodel import EmbeddingCacheModel
from rpaccel.config import preset
from rpaccel.embedding import EmbeddingLayout, TableSpec, pool_bags
from rpaccel.host.driver.chip import (
    ChipSetup,
    ProgramError,
    Schedule,
    Stage,
    check_program,
    compile_queries,
    decode_responses,
    expected_responses,
)
from rpaccel.host.driver.codec import codec, from_ints, to_ints
from rpaccel.host.driver.embedding import line_limbs
from rpaccel.host.driver.interaction import output_width, output_words
from rpaccel.host.driver.mlp import layout_weights
from rpaccel.host.models import get_model
from rpaccel.host.reference import mlp_forward
from rpaccel.numeric import topk
from rpaccel.rtl.accel.controller import Controller
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
from rpaccel.rtl.accel.join import absorbs, output_buffer_words, pooled_words
from rpaccel.rtl.embedding import EmbeddingOp
from rpaccel.rtl.mlp import Op
from rpaccel.sim.chip import program_words
from rpaccel.sim.golden.mlp import random_mlp
from rpaccel.sim.model.functional import Deadlock, FunctionalChip, PagedMemory, _Fetcher
from rpaccel.sim.streams import StreamSink, run_simulation

from host_fixtures import quantised, tiny_data, trained_dot_pair

TINY, SMALL = preset("tiny"), preset("small")


# A small encoder of the chip's commands (the driver's ChipEncoder replaces it) ----------------------------------


def _value(shape, given=None):
    """A value of ``shape`` from the fields ``given`` (nested dicts), every other field 0 (a union's member: the one
    given, or its first)."""
    layout = shape if isinstance(shape, data.Layout) else (
        data.Layout.cast(shape) if isinstance(shape, type) and issubclass(shape, data.View) else None)
    if isinstance(layout, data.ArrayLayout):
        return given if given is not None else [_value(layout.elem_shape) for _ in range(layout.length)]
    if isinstance(layout, data.UnionLayout):
        name = next(iter(given)) if given else next(iter(layout))[0]
        return {name: _value(layout[name].shape, (given or {}).get(name))}
    if isinstance(layout, data.StructLayout):
        unknown = set(given or {}) - {name for name, _ in layout}
        assert not unknown, f"no fields {unknown}"
        return {name: _value(field.shape, (given or {}).get(name)) for name, field in layout}
    return 0 if given is None else given


class Program:
    """Commands of one program, each tagged by its position (modulo 256)."""

    def __init__(self, geometry):
        self.g = geometry
        self.layout = geometry.command_layout()
        self.codec = codec(self.layout)
        self.blocks, self.values, self.tag = [], [], 0
        self.raw = []   # (row in self.values, bit offset, value): fields set to values their enum does not have

    def _flush(self):
        if self.values:
            ints = to_ints(self.codec.pack_values(self.values))
            for row, offset, value in self.raw:
                ints[row] |= value << offset
            self.blocks.append(from_ints(ints, self.codec.width))
            self.values, self.raw = [], []

    def add(self, opcode, member=None, /, *, raw=None, **fields):
        """One command, its ``arg.member`` from ``fields``; returns its tag. ``opcode`` a raw number, or ``raw``
        (``{field of arg.member: number}``), set a field to a value its enum does not have (left 0 in the value)."""
        arg = _value(self.layout["arg"].shape, {member: fields} if member else None)
        tag = self.tag
        row = len(self.values)
        if not isinstance(opcode, Opcode):
            self.raw.append((row, self.layout["op"].offset, opcode))
        for name, value in (raw or {}).items():
            offset = self.layout["arg"].offset + self.layout["arg"].shape[member].shape[name].offset
            self.raw.append((row, offset, value))
        self.values.append({"op": opcode.value if isinstance(opcode, Opcode) else 0, "tag": tag, "arg": arg})
        self.tag = (self.tag + 1) % 256
        return tag

    def mem_write(self, addr, lines):
        """MEM_WRITE of ``lines`` (``(n, line_bytes)`` bytes) from line ``addr``, packed as a batch."""
        self._flush()
        lines = np.asarray(lines)
        limbs = line_limbs(lines)
        data_ = limbs[:, 0] if self.g.line_bytes <= 8 else limbs
        tags = (self.tag + np.arange(len(lines))) % 256
        self.tag = (self.tag + len(lines)) % 256
        self.blocks.append(self.codec.pack({"op": Opcode.MEM_WRITE.value, "tag": tags, "arg": {"mem_write": {
            "addr": addr + np.arange(len(lines)), "data": data_}}}))

    def lane(self, lane, cmd, **fields):
        return self.add(Opcode.LANE, "lane", lane=lane, cmd=cmd, **fields)

    def words(self):
        self._flush()
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, self.codec.limbs), dtype=np.uint64)


def decode(chip, words):
    """Response columns as numpy arrays."""
    return codec(chip.geometry.response_layout()).unpack(words)


def of_kind(responses, kind, tag=None):
    where = responses["kind"] == kind.value
    if tag is not None:
        where &= responses["tag"] == tag
    return {name: value[where] for name, value in responses.items()}


def as_lines(values, line_bytes):
    """int8/uint8 bytes (1-D) as ``(n, line_bytes)`` lines, zero-padded."""
    values = np.asarray(values).astype(np.uint8).reshape(-1)
    lines = np.zeros((-(-len(values) // line_bytes) or 1, line_bytes), dtype=np.uint8)
    lines.reshape(-1)[:len(values)] = values
    return lines


# Memory images: records, weights, tables ---------------------------------------------------------------------------


def record_set(g, dense, lookups):
    """Candidate records (docs/chip.md): ``dense`` ``(n, D)`` int8, ``lookups`` per item a list of ``(table, id,
    last)`` (``end`` on the final). Returns ``(lines, stride, dense_lines)``."""
    lb, entry = g.line_bytes, g.lookup_entry_bits // 8
    dense = np.asarray(dense)
    dense_lines = -(-dense.shape[1] // lb)
    most = max(len(item) for item in lookups)
    stride = dense_lines + -(-(most + 1) * entry // lb)
    image = np.zeros((len(dense), stride * lb), dtype=np.uint8)
    image[:, :dense.shape[1]] = dense.astype(np.int8).view(np.uint8)
    entry_codec = codec(g.lookup_entry_layout())
    for i, item in enumerate(lookups):
        values = [len(item)]
        if item:
            table, ids, last = (np.array(column) for column in zip(*item))
            end = np.zeros(len(item), dtype=np.int64)
            end[-1] = 1
            values += entry_codec.pack({"table": table, "id": ids, "last": last, "end": end})[:, 0].tolist()
        raw = np.array(values, dtype=f"<u{entry}").view(np.uint8)
        image[i, dense_lines * lb:dense_lines * lb + len(raw)] = raw
    return image.reshape(-1, lb), stride, dense_lines


def stage_weights(program, g, image, mem_addr, *, flip=None):
    """Stage a weight image in memory from line ``mem_addr`` (with byte ``flip`` changed: a planted bug) and load
    it with one WEIGHTS; returns the lines."""
    lines = as_lines(image.words.view(np.uint8), g.line_bytes)
    if flip is not None:
        lines.reshape(-1)[flip] ^= 0x40
    program.mem_write(mem_addr, lines)
    program.add(Opcode.WEIGHTS, "weights", mem_addr=mem_addr, w_addr=image.base, words=len(image.words))
    return len(lines)


class LanePlan:
    """A lane's MLP commands, fully ordered: every INPUT waits for the lane's earlier layers, every LAYER for the
    lane's earlier inputs and layers (one set of regions; a test planner, not the driver's)."""

    def __init__(self, g, split, lane):
        self.g, self.shape, self.lane = g, g.engine.splits[split], lane
        self.inputs = self.layers = 0

    def mlp(self, program, layers, w_bases, items, *, src, src_words, dst, wait_weights):
        r, c = self.shape.rows, self.shape.cols
        in_words = -(-layers[0].shape[0] // r)
        hidden = max([-(-layer.shape[1] // r) for layer in layers[:-1]], default=0)
        bases = (in_words * items, (in_words + hidden) * items)
        assert (in_words + 2 * hidden) * items <= self.shape.act_words
        program.lane(self.lane, {"op": Op.INPUT, "wait_layers": self.layers % 256, "items": items, "stride": items,
                                 "ktiles": in_words}, src=src.value, src_words=src_words, wait_weights=wait_weights)
        self.inputs += 1
        for n, (layer, w_base) in enumerate(zip(layers, w_bases)):
            last = n == len(layers) - 1
            program.lane(self.lane, {
                "op": Op.LAYER, "wait_inputs": self.inputs % 256, "wait_layers": self.layers % 256, "items": items,
                "stride": items, "in_base": bases[(n - 1) % 2] if n else 0, "out_base": 0 if last else bases[n % 2],
                "w_base": w_base, "ktiles": -(-layer.shape[0] // r), "ntiles": -(-layer.shape[1] // c),
                "params": {"m": layer.m, "s": layer.s, "relu": int(layer.relu), "raw": int(layer.raw)},
                "to_output": int(last)}, dst=dst.value, wait_weights=wait_weights)
            self.layers += 1


# (a) memory ----------------------------------------------------------------------------------------------------


def test_memory_written_and_read_back():
    chip = FunctionalChip(TINY)
    g, rng = chip.geometry, np.random.default_rng(1)
    program = Program(g)
    program.add(Opcode.NOP)
    lines = rng.integers(0, 256, (40, g.line_bytes), dtype=np.uint8)
    program.mem_write(100, lines[:30])
    program.mem_write((1 << g.addr_bits) - 10, lines[30:])
    reads = [program.add(Opcode.MEM_READ, "mem_read", addr=90, length=49),
             program.add(Opcode.MEM_READ, "mem_read", addr=(1 << g.addr_bits) - 10, length=9)]
    sync = program.add(Opcode.SYNC)
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    first = of_kind(responses, ResponseKind.DATA, reads[0])
    expected = np.zeros((50, g.line_bytes), dtype=np.uint8)
    expected[10:40] = lines[:30]
    assert np.array_equal(line_limbs(expected), first["data"])
    assert first["last"].tolist() == [0] * 49 + [1]
    assert np.array_equal(line_limbs(lines[30:]), of_kind(responses, ResponseKind.DATA, reads[1])["data"])
    assert of_kind(responses, ResponseKind.DONE, sync)["last"].tolist() == [1]
    assert result.counters["COMMANDS"] == 1 + 40 + 3 and result.counters["ERRORS"] == 0
    # The controller's memory accesses go through the memory arbiter, which counts them.
    assert (result.counters["MEM_READ_LINES"], result.counters["MEM_WRITE_LINES"]) == (60, 40)
    # COUNTERS answers every counter but itself; with clear, it is not counted at all.
    program = Program(g)
    first = program.add(Opcode.COUNTERS, "counters", clear=1)
    program.add(Opcode.FETCH, "fetch", items=0)          # refused: one error
    second = program.add(Opcode.COUNTERS, "counters")
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    assert (result.counters["COMMANDS"], result.counters["ERRORS"]) == (2, 1)
    for tag, commands, errors in ((first, 44, 0), (second, 1, 1)):
        answered = of_kind(responses, ResponseKind.COUNTER, tag)
        values = dict(zip(answered["index"].tolist(), answered["score"].tolist()))
        assert (values[Counter.COMMANDS.value], values[Counter.ERRORS.value]) == (commands, errors)
        assert answered["last"].tolist() == [0] * (len(values) - 1) + [1]


# (b) one MLP through the dense path, the joiner and a SCORE to the responses ---------------------------------------


def mlp_program(chip, split, lane, dense, bottom, top, *, source=FetchSource.RANGE, order=None, planted=None):
    """A program running ``bottom`` (to the joiner: ``cat`` of one vector passes it through) then ``top`` (raw, one
    output) on ``lane``, candidates fetched as ``source`` (``order`` the LIST), logits to the responses."""
    g = chip.geometry
    program = Program(g)
    if split != 1:
        program.add(Opcode.SPLIT, "split", n=split)
    image = layout_weights(g.engine, split, {"bottom": bottom, "top": top})
    weights_at = 8
    staged = stage_weights(program, g, image, weights_at, flip=planted)
    lines, stride, dense_lines = record_set(g, dense, [[] for _ in dense])
    base = weights_at + staged
    program.mem_write(base, lines)
    items, d = len(dense), bottom[-1].shape[1]
    fetch = {"lane": lane, "source": source.value, "items": items, "base": base, "stride": stride, "count": items,
             "dense_lines": dense_lines, "dense_words": -(-dense.shape[1] // g.rows),
             "join": {"mode": 1, "vectors": 1, "dim": d}}
    if source == FetchSource.LIST:
        list_at = base + len(lines)
        program.mem_write(list_at, as_lines(np.asarray(order, dtype="<u2").view(np.uint8), g.line_bytes))
        fetch["list_addr"] = list_at
    program.add(Opcode.FETCH, "fetch", **fetch)
    plan = LanePlan(g, split, lane)
    plan.mlp(program, bottom, image.bases["bottom"], items, src=ActSource.DENSE, src_words=fetch["dense_words"],
             dst=OutDest.JOIN, wait_weights=1)
    plan.mlp(program, top, image.bases["top"], items, src=ActSource.INTERACT,
             src_words=output_words("cat", 1, d, g.rows), dst=OutDest.SCORE, wait_weights=1)
    score = program.add(Opcode.SCORE, "score", lane=lane, dest=ScoreDest.RSP.value, items=items, last=1)
    return program, score


@pytest.mark.parametrize(("split", "lane", "items"), [(1, 0, 12), (2, 1, 12), (4, 3, 8)])
def test_one_mlp_on_a_lane_matches_mlp_forward(split, lane, items):
    chip = FunctionalChip(TINY)
    rng = np.random.default_rng(split)
    bottom = random_mlp(rng, (7, 9, 5), raw_last=False)
    top = random_mlp(rng, (5, 6, 1))
    dense = rng.integers(-128, 128, (items, 7))
    program, score = mlp_program(chip, split, lane, dense, bottom, top)
    logits = of_kind(decode(chip, chip.run(program.words()).responses), ResponseKind.LOGIT, score)
    expected = mlp_forward(bottom + top, dense)[:, 0]
    assert np.array_equal(logits["score"], expected)
    assert logits["index"].tolist() == list(range(len(dense)))
    assert logits["last"].tolist() == [0] * (len(dense) - 1) + [1]
    assert np.unique(expected).size > 6   # not degenerate


def test_a_planted_weight_error_changes_the_logits():
    chip = FunctionalChip(TINY)
    rng = np.random.default_rng(7)
    bottom, top = random_mlp(rng, (7, 9, 5), raw_last=False), random_mlp(rng, (5, 6, 1))
    dense = rng.integers(-128, 128, (12, 7))
    first_weight = chip.geometry.engine.splits[1].bias_words * chip.geometry.engine.word_bytes
    program, score = mlp_program(chip, 1, 0, dense, bottom, top, planted=first_weight)
    logits = of_kind(decode(chip, chip.run(program.words()).responses), ResponseKind.LOGIT, score)["score"]
    assert not np.array_equal(logits, mlp_forward(bottom + top, dense)[:, 0])


def test_a_list_fetches_in_its_order_and_an_index_beyond_the_set_is_an_error():
    chip = FunctionalChip(TINY)
    rng = np.random.default_rng(3)
    bottom, top = random_mlp(rng, (6, 5), raw_last=False), random_mlp(rng, (5, 1))
    dense = rng.integers(-128, 128, (10, 6))
    order = [7, 2, 2, 15, 0, 9, 300, 4, 1, 3]   # 15 and 300 are beyond the set of 10
    program, score = mlp_program(chip, 1, 0, dense, bottom, top, source=FetchSource.LIST, order=order)
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    used = np.minimum(order, len(dense) - 1)
    logits = of_kind(responses, ResponseKind.LOGIT, score)
    assert logits["index"].tolist() == used.tolist()
    assert np.array_equal(logits["score"], mlp_forward(bottom + top, dense[used])[:, 0])
    errors = of_kind(responses, ResponseKind.ERROR)
    assert errors["code"].tolist() == [ErrorCode.INDEX.value] * 2
    assert errors["index"].tolist() == [Opcode.FETCH.value] * 2 and errors["score"].tolist() == [15, 300]
    assert result.counters["ERRORS"] == 0         # the controller's counter: refused commands only


def shared_unit_program(chip, *, close=(True, True)):
    """Lanes 0 and 1 (split 2) each rank 24 candidates with their own MLPs on top-k unit 0, their sub-batches'
    SCOREs interleaved in the program (``close[lane]``: whether the lane's final SCORE has ``last``). Returns the
    program, each lane's SCORE tags, MLPs and the candidates' dense features."""
    g = chip.geometry
    rng = np.random.default_rng(12)
    mlps = {lane: (random_mlp(rng, (6, 5), raw_last=False), random_mlp(rng, (5, 4, 1))) for lane in (0, 1)}
    dense = rng.integers(-128, 128, (24, 6))
    program = Program(g)
    program.add(Opcode.SPLIT, "split", n=2)
    image = layout_weights(g.engine, 2, {(lane, part): mlp for lane, pair in mlps.items()
                                         for part, mlp in zip(("bottom", "top"), pair)})
    records_at = 8 + stage_weights(program, g, image, 8)
    records, stride, dense_lines = record_set(g, dense, [[] for _ in dense])
    program.mem_write(records_at, records)
    plans, scores = {lane: LanePlan(g, 2, lane) for lane in mlps}, {lane: [] for lane in mlps}
    for first in (0, 12):
        for lane, (bottom, top) in mlps.items():
            program.add(Opcode.FETCH, "fetch", lane=lane, first=first, items=12, base=records_at, stride=stride,
                        count=len(dense), dense_lines=dense_lines, dense_words=2,
                        join={"mode": 1, "vectors": 1, "dim": 5})
            plans[lane].mlp(program, bottom, image.bases[lane, "bottom"], 12, src=ActSource.DENSE, src_words=2,
                            dst=OutDest.JOIN, wait_weights=1)
            plans[lane].mlp(program, top, image.bases[lane, "top"], 12, src=ActSource.INTERACT, src_words=2,
                            dst=OutDest.SCORE, wait_weights=1)
        for lane in mlps:
            scores[lane].append(program.add(Opcode.SCORE, "score", lane=lane, dest=ScoreDest.TOPK.value, items=12,
                                            last=int(first == 12 and close[lane]), k=5, report=1))
    return program, scores, mlps, dense


def test_two_lanes_share_a_top_k_unit_one_query_at_a_time():
    """The unit serves one query from its first candidate to its last; each ranking is its own lane's."""
    chip = FunctionalChip(TINY)
    program, tags, mlps, dense = shared_unit_program(chip)
    responses = decode(chip, chip.run(program.words()).responses)
    for lane, (bottom, top) in mlps.items():
        scores, indices = topk(mlp_forward(bottom + top, dense)[:, 0], 5)
        ranking = of_kind(responses, ResponseKind.RANK, tags[lane][-1])
        assert ranking["score"].tolist() == scores.tolist() and ranking["index"].tolist() == indices.tolist()


def test_a_query_never_closed_holds_its_top_k_unit():
    chip = FunctionalChip(TINY)
    program, tags, _, _ = shared_unit_program(chip, close=(False, True))
    with pytest.raises(Deadlock) as error:
        chip.run(program.words())
    assert error.value.blocked == [     # lane 1's first SCORE waits behind lane 0's two
        f"score sequencer 1: SCORE (tag {tags[1][0]}) waits for top-k unit 0, which holds lane 0's query",
        "top-k unit 0: holds an open query of lane 0 (no SCORE with last closes it)"]


# Filter units: a stage's k best as a set, fetched by the next stage ----------------------------------------------


class DenseStages:
    """Stages of dense-only MLPs (a bottom MLP to the joiner, ``cat`` of one vector, a raw top MLP of one output) on
    lane 0 of split 1, over one candidate set in memory; ``dense`` the candidates' features."""

    def __init__(self, chip, program, dense, stages):
        g = self.g = chip.geometry
        self.program, self.dense, self.stages = program, dense, stages
        self.image = layout_weights(g.engine, 1, {(n, part): mlp for n, pair in enumerate(stages)
                                                  for part, mlp in zip(("bottom", "top"), pair)})
        self.records = 8 + stage_weights(program, g, self.image, 8)
        lines, self.stride, self.dense_lines = record_set(g, dense, [[] for _ in dense])
        program.mem_write(self.records, lines)
        self.plan = LanePlan(g, 1, 0)

    def sub_batch(self, stage, items, **fetch):
        """FETCH ``items`` candidates (``fetch``: the source fields) and stage ``stage``'s MLPs on lane 0."""
        g, (bottom, top) = self.g, self.stages[stage]
        d, words = bottom[-1].shape[1], -(-self.dense.shape[1] // g.rows)
        self.program.add(Opcode.FETCH, "fetch", items=items, base=self.records, stride=self.stride,
                         count=len(self.dense), dense_lines=self.dense_lines, dense_words=words,
                         join={"mode": 1, "vectors": 1, "dim": d}, **fetch)
        self.plan.mlp(self.program, bottom, self.image.bases[stage, "bottom"], items, src=ActSource.DENSE,
                      src_words=words, dst=OutDest.JOIN, wait_weights=1)
        self.plan.mlp(self.program, top, self.image.bases[stage, "top"], items, src=ActSource.INTERACT,
                      src_words=output_words("cat", 1, d, g.rows), dst=OutDest.SCORE, wait_weights=1)

    def logits(self, stage, rows):
        bottom, top = self.stages[stage]
        return mlp_forward(bottom + top, self.dense[rows])[:, 0]


def dense_stages(rng, count):
    """Two stages' MLPs and ``count`` candidates' dense features."""
    stages = [(random_mlp(rng, (6, 4), raw_last=False), random_mlp(rng, (4, 6, 1))) for _ in range(2)]
    return stages, rng.integers(-128, 128, (count, 6))


def test_a_two_stage_query_keeps_more_than_k_max_through_a_filter():
    """Stage 1 keeps its 64 best of 200 (k_max is 16) as a set on the filter unit; stage 2 fetches them from the
    filter's holder and ranks them on the top-k unit: the reference chain's result."""
    chip = FunctionalChip(TINY)
    g = chip.geometry
    assert g.k_max < 64 <= g.filter_capacity
    stages, dense = dense_stages(np.random.default_rng(21), 200)
    program = Program(g)
    chain = DenseStages(chip, program, dense, stages)
    keep, k = 64, 10
    for n, first in enumerate(range(0, 200, 40)):
        chain.sub_batch(0, 40, source=FetchSource.RANGE.value, first=first)
        kept = program.add(Opcode.SCORE, "score", dest=ScoreDest.FILTER.value, unit=0, items=40, last=int(n == 4),
                           k=keep, keep=1, report=1)
    for n, first in enumerate((0, 32)):
        chain.sub_batch(1, 32, source=FetchSource.SURVIVORS.value, unit=g.units, first=first, wait_results=1,
                        release=n)
        rank = program.add(Opcode.SCORE, "score", dest=ScoreDest.TOPK.value, unit=0, items=32, last=n, k=k,
                           report=1)
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    first_logits = chain.logits(0, np.arange(200))
    assert np.unique(first_logits).size > 150
    survivors = np.sort(topk(first_logits, keep)[1])     # the set, in the order stage 1 scored it
    answered = of_kind(responses, ResponseKind.KEPT, kept)
    assert answered["index"].tolist() == survivors.tolist() and answered["score"].tolist() == [0] * keep
    assert answered["last"].tolist() == [0] * (keep - 1) + [1]
    scores, indices = topk(chain.logits(1, survivors), k, survivors)
    ranking = of_kind(responses, ResponseKind.RANK, rank)
    assert ranking["score"].tolist() == scores.tolist() and ranking["index"].tolist() == indices.tolist()
    assert len(responses["kind"]) == keep + k and result.counters["ERRORS"] == 0
    assert (chip.filters[0].results_done, chip.filters[0].releases) == (1, 1)
    assert (chip.topk[0].results_done, chip.topk[0].releases) == (0, 0)


def test_a_filter_query_beyond_the_capacity_keeps_the_best_of_the_first_and_answers_an_error():
    chip = FunctionalChip(TINY.with_settings(["filter_capacity=32"]))
    g = chip.geometry
    stages, dense = dense_stages(np.random.default_rng(22), 40)
    program = Program(g)
    chain = DenseStages(chip, program, dense, stages)
    tags = []
    for report in (1, 0):
        chain.sub_batch(0, 40, source=FetchSource.RANGE.value, first=0)
        tags.append(program.add(Opcode.SCORE, "score", dest=ScoreDest.FILTER.value, items=40, last=1, k=5, keep=1,
                                report=report))
    chain.sub_batch(1, 5, source=FetchSource.SURVIVORS.value, unit=g.units, wait_results=2, release=1)
    logits = program.add(Opcode.SCORE, "score", dest=ScoreDest.RSP.value, items=5)
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    held = chain.logits(0, np.arange(32))                   # candidates 32 .. 39 were dropped
    kept = np.sort(topk(held, 5)[1])
    assert topk(chain.logits(0, np.arange(40)), 5)[1].max() >= 32   # which changes the result
    reported = of_kind(responses, ResponseKind.KEPT, tags[0])
    assert reported["index"].tolist() == kept[:-1].tolist() and reported["last"].tolist() == [0] * 4
    errors = of_kind(responses, ResponseKind.ERROR)
    assert list(zip(*(errors[name].tolist() for name in ("tag", "code", "index", "score", "last")))) == [
        (tag, ErrorCode.ITEMS.value, Opcode.SCORE.value, 0, 1) for tag in tags]
    assert len(of_kind(responses, ResponseKind.KEPT, tags[1])["kind"]) == 0
    assert of_kind(responses, ResponseKind.LOGIT, logits)["index"].tolist() == kept.tolist()
    assert result.counters["ERRORS"] == 0                   # the controller's counter: refused commands only


def test_a_fetch_of_a_filter_result_never_kept_deadlocks():
    chip = FunctionalChip(TINY)
    program = Program(chip.geometry)
    program.add(Opcode.FETCH, "fetch", source=FetchSource.SURVIVORS.value, unit=1, wait_results=1, items=2, count=4,
                stride=1, dense_lines=1, dense_words=1, join={"vectors": 1, "dim": 4})
    with pytest.raises(Deadlock) as error:
        chip.run(program.words())
    assert error.value.blocked == ["fetcher: FETCH (tag 0) waits for result 1 of filter unit 0 (0 done)"]


@pytest.fixture(scope="module")
def dot_models():
    """Two small trained, quantised ``dot`` models of tiny's sizes."""
    return trained_dot_pair()


@pytest.mark.parametrize("ks", [(40, 5), (40, 20, 5)], ids=["2-stage", "3-stage"])
def test_driver_pipelines_keeping_on_filters_match_the_golden_model(dot_models, ks):
    """The driver's programs (rpaccel.host.driver.chip): every stage but the last keeps its k best (above k_max)
    on a filter unit, the next fetches them from the filter's holder; responses as the golden model's."""
    a, b = dot_models
    setup = ChipSetup(TINY, [a, b])
    queries = [setup.add_query({m: m.inputs(tiny_data(m.spec, n, start=7000 + n)) for m in (a, b)}) for n in (90, 60)]
    program = compile_queries(setup, [Stage((a, b)[n % 2], k=k) for n, k in enumerate(ks)], queries,
                              Schedule("rpaccel", sub_batch=8))
    expected = expected_responses(program)
    chip = FunctionalChip(TINY)
    words = program_words(program, expected)
    commands = codec(chip.geometry.command_layout()).unpack(words)
    to_filters = (commands["op"] == Opcode.SCORE.value) & (commands["arg"]["score"]["dest"] == ScoreDest.FILTER.value)
    assert to_filters.any() and max(ks[:-1]) > chip.geometry.k_max
    responses = decode_responses(chip.geometry, chip.run(words).responses)
    for tag in sorted(set(program.tags)):
        assert responses.records(tag) == expected.responses.records(tag), tag
    assert len(responses.kind) == len(queries) * ks[-1]
    kept = [(holder.results_done, holder.releases) for holder in chip.holders]
    assert kept == [(0, 0), (len(queries) * (len(ks) - 1),) * 2]


# The embedding unit: bags, the static and dynamic caches, UPDATE and FLUSH ----------------------------------------


def test_paged_memory_reads_what_was_written_last():
    # Runs of lines across pages, several in one write (with gaps, over each other: the later wins), scattered
    # lines with duplicates, addresses beyond the memory (they wrap), against a dict of lines; unwritten lines
    # read as zero.
    rng = np.random.default_rng(3)
    lines, line_bytes, page = 1 << 20, 4, 1 << PagedMemory.PAGE_BITS
    memory, reference = PagedMemory(lines, line_bytes), {}
    for _ in range(60):
        kind = rng.random()
        if kind < 0.35:
            start = int(rng.integers(0, lines + 3 * page))
            addresses = start + np.arange(int(rng.integers(1, 3 * page)))
        elif kind < 0.65:
            runs = [int(rng.integers(lines - 2 * page, lines + 3 * page)) + np.arange(int(rng.integers(64, 2 * page)))
                    for _ in range(int(rng.integers(2, 5)))]
            addresses = np.concatenate([*runs, runs[0][:100] + 7])
        else:
            addresses = rng.integers(0, 2 * lines, int(rng.integers(1, 300)))
            addresses[rng.random(len(addresses)) < 0.2] = addresses[0]
        data = rng.integers(0, 256, (len(addresses), line_bytes), dtype=np.uint8)
        memory.write(addresses, data)
        for address, line in zip(addresses.tolist(), data):
            reference[address % lines] = line
        probe = np.concatenate([rng.choice(list(reference), 200), rng.integers(0, 2 * lines, 50)])
        expected = [reference.get(address % lines, np.zeros(line_bytes, np.uint8)) for address in probe.tolist()]
        assert np.array_equal(memory.read(probe), np.array(expected))
        for line in [*probe[:5].tolist(), lines - 2]:                # runs of lines across pages, and the end
            count = int(rng.integers(1, 3 * page * line_bytes))
            expected = memory.read(line + np.arange(-(-count // line_bytes))).reshape(-1)[:count]
            assert np.array_equal(memory.read_bytes(line, count), expected)


def test_a_line_written_while_cached_reads_its_filled_data_until_its_next_miss():
    # Rows of one line in tiny's dynamic cache (2 ways): lines 3, 35 and 67 share a set. Line 3 cached, then
    # written: a hit reads the data it was filled with; evicted and missed, it reads memory from then on. An
    # UPDATE of a cached row updates its copy.
    chip = FunctionalChip(TINY)
    unit, lb = chip.embedding, chip.geometry.line_bytes
    unit._command({"op": EmbeddingOp.CONFIG.value, "table": 0, "arg": {"config": {
        "rows": 100, "static_rows": 0, "static_base": 0, "mem_base": 0, "row_lines": 0, "m": 1, "s": 0}}})
    rng = np.random.default_rng(5)
    old, new = (rng.integers(-128, 128, (100, lb)).astype(np.int8) for _ in range(2))
    chip.memory.write(np.arange(100), old.view(np.uint8))

    def pooled(rows):
        return unit._lookups(np.stack([np.zeros(len(rows), int), rows, np.ones(len(rows), int),
                                       np.ones(len(rows), int)], axis=1))[0]

    assert np.array_equal(pooled(np.array([3, 4])), old[[3, 4]])
    unit.write_memory(np.array([3, 4, 5]), new[[3, 4, 5]].view(np.uint8))
    got = pooled(np.array([3, 4, 5, 35, 67, 3, 3]))        # 67 evicts 3: its next use misses
    assert np.array_equal(got, np.concatenate([old[[3, 4]], new[[5]], old[[35, 67]], new[[3, 3]]]))
    assert np.array_equal(pooled(np.array([4])), old[[4]])
    unit._command({"op": EmbeddingOp.UPDATE.value, "table": 0,
                   "arg": {"update": {"id": 4, "line": 0, "data": np.frombuffer(new[4].tobytes(), "<u8")}}})
    assert np.array_equal(pooled(np.array([4])), new[[4]])
    unit._command({"op": EmbeddingOp.FLUSH.value, "table": 0})
    assert not unit.stale


def _layer(chip, lane, **cmd):
    """Run one LAYER on ``lane`` of ``chip`` (its waits met)."""
    fields = {"op": Op.LAYER, "wait_inputs": 0, "wait_layers": lane.layers_done, "acc_base": 0, "to_output": 1,
              "in_base": 0, "out_base": 0, "stride": 1, "params": {"m": 1, "s": 0, "relu": 0, "raw": 1}}
    lane.layers.append((0, {"dst": OutDest.SCORE.value, "cmd": fields | cmd}))
    assert lane._layer()


def test_a_layers_products_are_exact_and_its_accumulator_wraps():
    # A layer of 12 products a sum on tiny (float32), over the weight buffer's end, and one of 1,200 on small
    # (float64: the sum of its first column, 1,198 products of 127 * 127 and one of 127, is odd and past 2**24,
    # which float32 cannot hold); extreme int8 values, biases that take the sums past int32 (they wrap). A WEIGHTS
    # over a layer's words (on tiny, those after the buffer's end) is seen by the next LAYER (the layer's weights
    # are kept until then).
    rng = np.random.default_rng(8)
    for config, w_base, ktiles, ntiles, items, rewritten in ((TINY, 250, 3, 2, 5, 0), (SMALL, 200, 150, 2, 7, 205)):
        chip = FunctionalChip(config)
        lane, buffer = chip.lanes[0], chip.weight_buffer
        shape = chip.geometry.engine.splits[1]
        r, c, bias_words = shape.rows, shape.cols, shape.bias_words
        span = bias_words + ktiles * r
        words_of = (w_base + np.arange(ntiles)[:, None] * span + np.arange(span)) % len(buffer)
        buffer[:] = rng.choice(np.array([-128, 127, -1, 3], np.int8), buffer.shape)
        lane.memory[:] = rng.choice(np.array([-128, 127, 2], np.int8), lane.memory.shape)
        if ktiles * r > 1024:
            lane.memory[:] = 127
            buffer[words_of[0, bias_words:], 0] = 127
            buffer[words_of[0, bias_words:bias_words + 2], 0] = [1, 0]
        biases = rng.choice(np.array([2**31 - 1, -2**31, -5]), ntiles * c).astype("<i4")
        buffer[words_of[:, :bias_words]] = biases.view(np.int8).reshape(ntiles, bias_words, -1)
        for rewrite in (False, True):
            if rewrite:
                data = rng.choice(np.array([-128, 127, 5], np.int8), (40, buffer.shape[1]))
                chip.memory.write(np.arange(40 * buffer.shape[1] // chip.geometry.line_bytes),
                                  data.view(np.uint8).reshape(-1, chip.geometry.line_bytes))
                chip.weights.queue.append((0, {"mem_addr": 0, "w_addr": rewritten, "words": 40, "wait": 0,
                                               "lane": 0, "wait_layers": 0}))
                chip.weights.step()
            _layer(chip, lane, w_base=w_base, ktiles=ktiles, ntiles=ntiles, items=items, stride=items)
            got = chip.logits[0].take(ntiles * items)
            expected = np.zeros((ntiles, items, c), dtype=np.int64)
            x = lane.memory[(np.arange(ktiles)[:, None] * items + np.arange(items)) % len(lane.memory)]
            x = x.transpose(1, 0, 2).reshape(items, -1).astype(np.int64)
            for j in range(ntiles):
                words = buffer[words_of[j]].astype(np.int64)
                bias = words[:bias_words].astype(np.int8).reshape(-1).view("<i4")[:c]
                weights = words[bias_words:].reshape(ktiles * r, c)
                total = x @ weights + bias
                expected[j] = (total + 2**31) % 2**32 - 2**31
                if ktiles * r > 1024 and j == 0 and not rewrite:
                    assert (x.astype(np.float32) @ weights.astype(np.float32))[0, 0] != (x @ weights)[0, 0]
            assert np.array_equal(got, expected.reshape(-1, c)), (ktiles, rewrite)


def _raw_logits(chip, lane, w_base, ktiles, ntiles, items):
    """A raw output layer's ``(ntiles * items, cols)`` results from the weight buffer's and the activation memory's
    words (inputs at word 0, stride ``items``), by the layout."""
    shape, buffer = chip.geometry.engine.splits[chip.split], chip.weight_buffer
    r, c, bias_words = shape.rows, shape.cols, shape.bias_words
    span = bias_words + ktiles * r
    x = lane.memory[(np.arange(ktiles)[:, None] * items + np.arange(items)) % len(lane.memory)]
    x = x.transpose(1, 0, 2).reshape(items, -1).astype(np.int64)
    expected = []
    for j in range(ntiles):
        words = buffer[(w_base + j * span + np.arange(span)) % len(buffer)].astype(np.int64)
        bias = words[:bias_words].astype(np.int8).reshape(-1).view("<i4")[:c]
        expected.append(((x @ words[bias_words:].reshape(ktiles * r, c) + bias) + 2**31) % 2**32 - 2**31)
    return np.concatenate(expected)


def test_a_layer_loaded_again_from_the_same_memory_reads_the_same_weights():
    # Two layers loaded by one WEIGHTS, the same memory loaded again elsewhere in the buffer, then memory written
    # and loaded again where the first was: each LAYER computes with the words its buffer holds (the layers kept by
    # the memory their words came from are those words).
    chip = FunctionalChip(TINY)
    lane, g = chip.lanes[0], chip.geometry
    rng = np.random.default_rng(13)
    ktiles, ntiles, items = 2, 2, 3
    shape = g.engine.splits[1]
    span = shape.bias_words + ktiles * shape.rows
    words = 2 * ntiles * span
    lane.memory[:] = rng.integers(-128, 128, lane.memory.shape)

    def load(at):
        chip.weights.queue.append((0, {"mem_addr": 0, "w_addr": at, "words": words, "wait": 0, "lane": 0,
                                       "wait_layers": 0}))
        chip.weights.step()

    def stage():
        data = rng.integers(0, 256, (words * g.engine.word_bytes // g.line_bytes, g.line_bytes), dtype=np.uint8)
        chip.memory.write(np.arange(len(data)), data)

    def layer(base):
        _layer(chip, lane, w_base=base, ktiles=ktiles, ntiles=ntiles, items=items, stride=items)
        got = chip.logits[0].take(ntiles * items)
        assert np.array_equal(got, _raw_logits(chip, lane, base, ktiles, ntiles, items)), base
        return got

    stage()
    load(0)
    first, second = layer(0), layer(ntiles * span)
    load(100)
    again = layer(100)
    stage()
    load(0)
    changed = layer(0)
    assert np.array_equal(first, again) and not np.array_equal(first, second)
    assert not np.array_equal(first, changed)


def test_a_layer_reads_and_writes_the_activation_memory_as_its_words_lie():
    # On every split of tiny and small (a word of one n-tile's results, or of two), strides equal to the items and
    # larger, bases that take the words past the memory's end, n-tiles that fill whole words or leave the last
    # one's end alone: the layer's inputs and results where a word-by-word transcription of the layout puts them.
    rng = np.random.default_rng(12)
    for config in (TINY, SMALL):
        for split, shape in ChipGeometry(config).engine.splits.items():
            r, c = shape.rows, shape.cols
            for stride_extra, base, ntiles in ((0, 0, 4), (3, 0, 4), (0, shape.act_words - 5, 4),
                                               (3, shape.act_words - 5, 4), (0, 0, 3), (0, 0, 1), (3, 0, 3)):
                chip = FunctionalChip(config)
                chip.split = split
                lane = chip.lanes[0]
                lane.reset_memory(split)
                items, ktiles = 5, 3
                stride = items + stride_extra
                chip.weight_buffer[:] = rng.integers(-128, 128, chip.weight_buffer.shape)
                lane.memory[:] = rng.integers(-128, 128, lane.memory.shape)
                before = lane.memory.copy()
                params = {"m": 1, "s": 0, "relu": 0, "raw": 1}
                _layer(chip, lane, w_base=0, ktiles=ktiles, ntiles=ntiles, items=items, stride=stride, in_base=base,
                       out_base=base + 1, to_output=0, params=params)
                weights, bias = chip.layer_weights(0, ktiles, ntiles)
                x = np.array([[before[(base + j * stride + i) % len(before)] for j in range(ktiles)]
                              for i in range(items)]).reshape(items, -1)
                results = ((x @ weights.astype(np.int64) + bias) + 128) % 256 - 128
                expected = before.copy()
                for j in range(ntiles):
                    for i in range(items):
                        word = (base + 1 + (j * c) // r * stride + i) % len(expected)
                        expected[word, (j * c) % r:(j * c) % r + c] = results[i, j * c:(j + 1) * c]
                assert np.array_equal(lane.memory, expected), (config, split, stride, base)


def test_requantize_equals_the_numeric_rule():
    from rpaccel.numeric import requantize
    from rpaccel.sim.model.functional import _requantize

    rng = np.random.default_rng(14)
    acc = np.concatenate([rng.integers(-2**31, 2**31, 2000), [-2**31, 2**31 - 1, 0, -1, 1, 127, -128]])
    for s in range(64):
        for m in (0, 1, 65535, int(rng.integers(0, 1 << 16))):
            for relu in (0, 1):
                assert np.array_equal(_requantize(acc, m, s, relu), requantize(acc, m, s, bool(relu))), (m, s, relu)


def test_the_dot_interaction_equals_the_golden_model():
    from rpaccel.sim.golden.interaction import interaction_model, random_items
    from rpaccel.sim.model.functional import _dot_interaction

    rng = np.random.default_rng(9)
    for count, vectors, dim in ((1, 2, 1), (64, 27, 64), (5, 4, 1100), (3, 9, 1024)):
        items = random_items(rng, count, vectors, dim, extremes=0.5)
        items[0] = 127                              # 1,100 products of 127 * 127 pass 2**24 at odd counts
        m, s = int(rng.integers(0, 1 << 16)), int(rng.integers(0, 40))
        assert np.array_equal(_dot_interaction(items, m, s), interaction_model("dot", items, m, s))


def test_pooled_bags_equal_their_sums_requantised():
    # Bags of one, of one length, and of any length (a bag across two blocks, bags longer than the tables go),
    # tables of several (m, s), configured again between the cases; and accumulators of 10 bits, which bags of more
    # than 4 lookups wrap.
    from rpaccel.numeric import requantize
    from rpaccel.sim.model.functional import _wrap

    rng = np.random.default_rng(10)
    for max_pooling in (256, 4):
        chip = FunctionalChip(TINY)
        unit = chip.embedding
        unit.geometry = replace(unit.geometry, max_pooling=max_pooling)
        for lengths in ([1] * 30, [3] * 10, [1] * 30, [1, 20, 2, 40, 5, 1]):
            for table, shift in enumerate((0, 5, 17, 40)):     # each case's own (m, s)
                unit._command({"op": EmbeddingOp.CONFIG.value, "table": table, "arg": {"config": {
                    "rows": 0, "static_rows": 0, "static_base": 0, "mem_base": 0, "row_lines": 0,
                    "m": int(rng.integers(0, 1 << 16)), "s": shift}}})
            ends = np.cumsum(lengths) - 1
            rows = rng.choice(np.array([-128, 127, 1], np.int8), (ends[-1] + 1, 8))
            tables = rng.integers(0, 4, len(rows))
            last = np.zeros(len(rows), int)
            last[ends] = 1
            cut = len(rows) // 2
            got = np.concatenate([unit._pool(rows[:cut], tables[:cut], last[:cut]),
                                  unit._pool(rows[cut:], tables[cut:], last[cut:])])
            sums = np.add.reduceat(rows.astype(np.int64), np.r_[0, ends[:-1] + 1], axis=0)
            m, s = unit.config["m"][tables[ends]], unit.config["s"][tables[ends]]
            expected = requantize(_wrap(sums, unit.geometry.acc_bits), m[:, None], s[:, None])
            assert np.array_equal(got, expected), (max_pooling, lengths)


def test_embedding_updates_reach_every_copy_and_memory_writes_reach_the_cache_after_a_flush():
    """Bags of three IDs pooled (``cat`` join with the bottom output); UPDATE of a static and of a cached row is
    seen at once, a MEM_WRITE behind the dynamic cache only after a FLUSH."""
    chip = FunctionalChip(TINY)
    g = chip.geometry
    rng = np.random.default_rng(11)
    rows, dim, static_rows, m, s = 8, g.line_bytes, 2, 3, 3
    table = rng.integers(-128, 128, (rows, dim))
    layout = EmbeddingLayout(g.emb, [TableSpec(rows, dim, static_rows, m, s)])
    bottom, top = random_mlp(rng, (5, 4), raw_last=False), random_mlp(rng, (8, 6, 1))
    dense = rng.integers(-128, 128, (6, 5))
    ids = rng.integers(0, rows, (6, 3))
    ids[:, 0] = [0, 5, 6, 1, 5, 6]       # every item looks up a changed row
    image = layout_weights(g.engine, 1, {"bottom": bottom, "top": top})
    records, stride, dense_lines = record_set(g, dense, [[(0, int(i), int(k == 2)) for k, i in enumerate(item)]
                                                         for item in ids])
    program = Program(g)
    program.mem_write(0, table.astype(np.int8).view(np.uint8))
    weights_at = rows
    records_at = weights_at + stage_weights(program, g, image, weights_at)
    program.mem_write(records_at, records)
    program.add(Opcode.EMB, "emb", op=EmbeddingOp.CONFIG.value, table=0, arg={"config": {
        "rows": rows, "static_rows": static_rows, "static_base": 0, "mem_base": 0, "row_lines": 0, "m": m, "s": s}})
    program.add(Opcode.EMB, "emb", op=EmbeddingOp.PRELOAD.value, table=0)
    plan, scores = LanePlan(g, 1, 0), []

    def query():
        program.add(Opcode.FETCH, "fetch", items=len(dense), base=records_at, stride=stride, count=len(dense),
                    dense_lines=dense_lines, dense_words=-(-dense.shape[1] // g.rows),
                    join={"mode": 1, "vectors": 2, "dim": 4})
        plan.mlp(program, bottom, image.bases["bottom"], len(dense), src=ActSource.DENSE,
                 src_words=-(-dense.shape[1] // g.rows), dst=OutDest.JOIN, wait_weights=1)
        plan.mlp(program, top, image.bases["top"], len(dense), src=ActSource.INTERACT,
                 src_words=output_words("cat", 2, 4, g.rows), dst=OutDest.SCORE, wait_weights=1)
        scores.append(program.add(Opcode.SCORE, "score", dest=ScoreDest.RSP.value, items=len(dense)))

    def expected(data):
        pooled = pool_bags(layout, [data], np.zeros(len(ids), dtype=np.int64), np.arange(0, ids.size + 1, 3),
                           ids.reshape(-1))
        joined = np.concatenate([mlp_forward(bottom, dense), pooled[:, :4]], axis=1)
        return mlp_forward(top, joined)[:, 0]

    query()
    updated = table.copy()
    for row in (0, 5):                    # static, and cached by the first query
        updated[row] = rng.integers(-128, 128, dim)
        program.add(Opcode.EMB, "emb", op=EmbeddingOp.UPDATE.value, table=0,
                    arg={"update": {"id": row, "line": 0, "data": int.from_bytes(
                        updated[row].astype(np.int8).tobytes(), "little")}})
    behind = updated.copy()
    behind[6] = rng.integers(-128, 128, dim)
    program.mem_write(6, behind[6:7].astype(np.int8).view(np.uint8))
    query()
    program.add(Opcode.EMB, "emb", op=EmbeddingOp.FLUSH.value)
    query()
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    got = [of_kind(responses, ResponseKind.LOGIT, tag)["score"] for tag in scores]
    for logits, rows_seen in zip(got, (table, updated, behind)):    # the second query sees row 6 stale
        assert np.array_equal(logits, expected(rows_seen))
    assert not np.array_equal(expected(updated), expected(behind))
    words = program.words()
    host_writes = int(np.count_nonzero(codec(g.command_layout()).unpack(words)["op"] == Opcode.MEM_WRITE.value))
    assert result.counters["MEM_WRITE_LINES"] == host_writes + 2          # and the UPDATEs' write-throughs
    assert result.counters["EMB_LOOKUPS"] == 3 * ids.size
    assert result.counters["EMB_STATIC_HITS"] == 3 * int(np.count_nonzero(ids < static_rows))


def fetch_batches_program(g, rng):
    """Queries of three tables (static, cached and missed rows; bags of two IDs, two bags per item) whose FETCHes
    the fetcher prepares together, with EMB UPDATE and FLUSH between some, a LIST with an index beyond its set,
    and two FETCHes whose joins take other than their own vectors: one takes one of its items' two, the next (of
    a wider join) three a item, the first one's left over among them."""
    rows, dim = 16, g.line_bytes
    tables = rng.integers(-128, 128, (3, rows, dim))
    dense = rng.integers(-128, 128, (10, 5))
    lookups = [[(t, int(rng.integers(0, rows)), k) for t in (0, 1, 2)[:2 + i % 2] for k in (0, 1)][:4]
               for i in range(len(dense))]
    for item in lookups:                       # two bags of two IDs each: the second and the fourth end a bag
        item[:] = [(t, row, int(k % 2 == 1)) for k, (t, row, _) in enumerate(item)]
    records, stride, dense_lines = record_set(g, dense, lookups)
    bottoms = {d: random_mlp(rng, (5, d), raw_last=False) for d in (4, 8)}
    tops = {(f, d): random_mlp(rng, (f * d, 1)) for f, d in ((3, 4), (3, 8), (2, 4), (4, 8))}
    image = layout_weights(g.engine, 1, {**{("bottom", d): mlp for d, mlp in bottoms.items()},
                                         **{("top", *key): mlp for key, mlp in tops.items()}})
    program = Program(g)
    program.mem_write(0, tables.astype(np.int8).view(np.uint8).reshape(-1, g.line_bytes))
    weights_at = 3 * rows
    records_at = weights_at + stage_weights(program, g, image, weights_at)
    program.mem_write(records_at, records)
    list_at = records_at + len(records)
    program.mem_write(list_at, as_lines(np.array([3, 9, 12, 0, 4], "<u2").view(np.uint8), g.line_bytes))
    for t in range(3):
        program.add(Opcode.EMB, "emb", op=EmbeddingOp.CONFIG.value, table=t, arg={"config": {
            "rows": rows, "static_rows": 2 if t == 0 else 0, "static_base": 0, "mem_base": t * rows,
            "row_lines": 0, "m": int(rng.integers(1, 1 << 12)), "s": 9}})
    program.add(Opcode.EMB, "emb", op=EmbeddingOp.PRELOAD.value, table=0)
    plan, words = LanePlan(g, 1, 0), -(-dense.shape[1] // g.rows)

    def query(f, d, items, **source):
        program.add(Opcode.FETCH, "fetch", items=items, base=records_at, stride=stride, count=len(dense),
                    dense_lines=dense_lines, dense_words=words, join={"mode": 1, "vectors": f, "dim": d}, **source)
        plan.mlp(program, bottoms[d], image.bases["bottom", d], items, src=ActSource.DENSE, src_words=words,
                 dst=OutDest.JOIN, wait_weights=1)
        plan.mlp(program, tops[f, d], image.bases["top", f, d], items, src=ActSource.INTERACT,
                 src_words=output_words("cat", f, d, g.rows), dst=OutDest.SCORE, wait_weights=1)
        program.add(Opcode.SCORE, "score", dest=ScoreDest.RSP.value, items=items, last=1)

    query(3, 4, 6)
    query(3, 8, 4, first=6)
    query(3, 4, 5, source=FetchSource.LIST.value, list_addr=list_at)
    program.add(Opcode.EMB, "emb", op=EmbeddingOp.UPDATE.value, table=1, arg={"update": {
        "id": lookups[0][0][1], "line": 0, "data": int(rng.integers(0, 1 << 62))}})
    query(2, 4, 6)                       # one of each item's two vectors: six left over
    program.add(Opcode.EMB, "emb", op=EmbeddingOp.FLUSH.value)
    query(4, 8, 6, first=2)              # three a item: the six left over, then its own
    query(3, 8, 10)
    query(3, 4, 8, first=1)
    return program.words()


def test_fetches_prepared_together_answer_as_each_alone(monkeypatch):
    """The fetcher prepares a run of FETCHes at once and the embedding unit pools only the bytes their joins read:
    the responses and counters of FETCHes each prepared alone, every byte pooled. A planted bug, the joins' bytes
    pooled whatever vectors they take, is caught."""
    words = fetch_batches_program(TINY_GEOMETRY := ChipGeometry(TINY), np.random.default_rng(31))
    assert TINY_GEOMETRY.emb.row_bytes > 8

    def run():
        chip = FunctionalChip(TINY)
        prepared = []
        prepare = chip.fetcher._prepare
        chip.fetcher._prepare = lambda: prepared.append(len(chip.fetcher.queue)) or prepare()
        return chip.run(words), prepared

    batched, prepared = run()
    assert len(prepared) < 7                                   # some FETCHes went together
    assert of_kind(decode(FunctionalChip(TINY), batched.responses), ResponseKind.ERROR)["code"].tolist() == \
        [ErrorCode.INDEX.value]
    with monkeypatch.context() as patch:
        patch.setattr(_Fetcher, "BATCH", 1)
        patch.setattr(_Fetcher, "_width", lambda self, fetches, bags: self.chip.geometry.emb.row_bytes)
        alone, prepared = run()
        assert len(prepared) == 7
    assert np.array_equal(batched.responses, alone.responses) and batched.counters == alone.counters

    def planted(self, fetches, bags):
        return max(arg["join"]["dim"] for arg in fetches)
    monkeypatch.setattr(_Fetcher, "_width", planted)
    with pytest.raises(ValueError, match="dimension 1"):      # the 4 bytes left over cannot join a job of 8
        run()


# (c), (d) queries of trained, quantised RM models ------------------------------------------------------------


def trained(name, rows=60, samples=2000):
    return quantised(get_model(name, max_rows=rows), samples, calibration=1000)


@pytest.fixture(scope="module")
def rm_models():
    return trained("rm-small"), trained("rm-med")


class Loaded:
    """A model on the chip: tables in memory and configured from chip table ``first_table``, weights loaded for
    ``split`` at word ``w_base``, its candidate records in memory."""

    def __init__(self, program, g, qmodel, split, *, first_table, mem_at, w_base, weights_done, records):
        spec = qmodel.spec
        self.qmodel, self.first_table = qmodel, first_table
        dim = max(spec.emb_dim, g.line_bytes)          # rows padded to whole lines
        static = [min(4, rows) for rows in spec.tables]
        self.layout = EmbeddingLayout(g.emb, [TableSpec(rows, dim, s, int(m), int(sh)) for rows, s, m, sh in
                                              zip(spec.tables, static, qmodel.pool_m, qmodel.pool_s)])
        padded = np.zeros((len(qmodel.emb), dim), dtype=np.int8)
        padded[:, :spec.emb_dim] = qmodel.emb
        tables = np.zeros((self.layout.mem_lines * g.line_bytes,), dtype=np.uint8)
        for t, rows in enumerate(spec.tables):
            start = self.layout.mem_base[t] * g.line_bytes
            chunk = padded[qmodel.offsets[t]:qmodel.offsets[t] + rows].view(np.uint8).reshape(-1)
            tables[start:start + len(chunk)] = chunk
        self.table_base = mem_at
        program.mem_write(mem_at, tables.reshape(-1, g.line_bytes))
        for t in range(len(spec.tables)):
            program.add(Opcode.EMB, "emb", op=EmbeddingOp.CONFIG.value, table=first_table + t, arg={"config": {
                "rows": spec.tables[t], "static_rows": static[t],
                "static_base": self.layout.static_base[t] + (0 if first_table == 0 else g.emb.static_lines // 2),
                "mem_base": mem_at + self.layout.mem_base[t], "row_lines": self.layout.row_lines[t].bit_length() - 1,
                "m": int(qmodel.pool_m[t]), "s": int(qmodel.pool_s[t])}})
            program.add(Opcode.EMB, "emb", op=EmbeddingOp.PRELOAD.value, table=first_table + t)
        at = mem_at + self.layout.mem_lines
        mlps = qmodel.mlps()
        self.image = layout_weights(g.engine, split, {"bottom": mlps["bottom"], "top": mlps["top"]}, base=w_base)
        at += stage_weights(program, g, self.image, at)
        self.weights_done = weights_done + 1
        self.dense_q, self.ids = records
        lookups = [[(first_table + t, int(self.ids[i, t, 0]), 1) for t in range(len(spec.tables))]
                   for i in range(len(self.dense_q))]
        lines, self.stride, self.dense_lines = record_set(g, self.dense_q, lookups)
        self.records = at
        program.mem_write(at, lines)
        self.end = at + len(lines)
        self.g = g

    def sub_batch(self, program, plan, lane, items, fetch):
        """FETCH ``items`` candidates (``fetch`` gives the source fields) and the lane's two MLPs."""
        g, q = self.g, self.qmodel
        spec = q.spec
        vectors, d = spec.num_vectors, spec.emb_dim
        program.add(Opcode.FETCH, "fetch", lane=lane, items=items, base=self.records, stride=self.stride,
                    count=len(self.dense_q), dense_lines=self.dense_lines, dense_words=-(-spec.dense // g.rows),
                    join={"mode": 0, "vectors": vectors, "dim": d, "m": q.inter_m, "s": q.inter_s}, **fetch)
        mlps = q.mlps()
        plan.mlp(program, mlps["bottom"], self.image.bases["bottom"], items, src=ActSource.DENSE,
                 src_words=-(-spec.dense // g.rows), dst=OutDest.JOIN, wait_weights=self.weights_done)
        assert output_width("dot", vectors, d) == mlps["top"][0].shape[0]
        plan.mlp(program, mlps["top"], self.image.bases["top"], items, src=ActSource.INTERACT,
                 src_words=output_words("dot", vectors, d, g.rows), dst=OutDest.SCORE, wait_weights=self.weights_done)

    def expected_counts(self, order):
        """The embedding counters of the preloads and of looking up the records ``order`` (in order), by the cache
        model."""
        model = EmbeddingCacheModel(self.layout)
        for t in range(len(self.layout)):
            model.preload(t)
        for item in order:
            for t in range(self.ids.shape[1]):
                model.lookup(t, [self.ids[item, t, 0]])
        return model.counts


def test_a_one_stage_query_matches_the_reference(rm_models):
    qmodel = rm_models[0]
    chip = FunctionalChip(SMALL)
    g = chip.geometry
    records = tiny_data(qmodel.spec, 150, start=5000, seed=9)
    program = Program(g)
    model = Loaded(program, g, qmodel, 1, first_table=0, mem_at=0, w_base=0, weights_done=0,
                   records=qmodel.inputs(records))
    plan = LanePlan(g, 1, 0)
    sizes = [32, 32, 32, 32, 22]     # within the lane's 32 accumulator rows
    logits_tags, first = [], 0
    for size in sizes:
        model.sub_batch(program, plan, 0, size, {"source": FetchSource.RANGE.value, "first": first})
        logits_tags.append(program.add(Opcode.SCORE, "score", lane=0, dest=ScoreDest.RSP.value, items=size))
        first += size
    # The same query again, ranked on chip.
    first = 0
    for n, size in enumerate(sizes):
        model.sub_batch(program, plan, 0, size, {"source": FetchSource.RANGE.value, "first": first})
        rank = program.add(Opcode.SCORE, "score", lane=0, dest=ScoreDest.TOPK.value, unit=0, items=size,
                           last=int(n == len(sizes) - 1), k=20, report=1)
        first += size
    counters = program.add(Opcode.COUNTERS, "counters")
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    expected = qmodel.logits(model.dense_q, model.ids)
    logits = np.concatenate([of_kind(responses, ResponseKind.LOGIT, tag)["score"] for tag in logits_tags])
    assert np.array_equal(logits, expected)
    assert np.unique(expected).size > 100
    ranking = of_kind(responses, ResponseKind.RANK, rank)
    scores, indices = topk(expected, 20)
    assert ranking["score"].tolist() == scores.tolist() and ranking["index"].tolist() == indices.tolist()
    assert ranking["last"].tolist() == [0] * 19 + [1]
    # The embedding counters are the cache model's on the lookups in fetch order.
    counts = model.expected_counts(list(range(150)) * 2)
    for name, value in counts.items():
        assert result.counters[f"EMB_{name.upper()}"] == value, name
    assert counts["static_hits"] and counts["line_hits"] and counts["line_misses"]
    answered = of_kind(responses, ResponseKind.COUNTER, counters)
    values = dict(zip(answered["index"].tolist(), answered["score"].tolist()))
    assert values[Counter.EMB_LOOKUPS.value] == 2 * 150 * 26 and values[Counter.ERRORS.value] == 0
    assert sorted(values) == sorted([c.value for c in Counter if c not in (Counter.BUSY_LANE0, Counter.BUSY_TOPK0)]
                                    + [Counter.BUSY_LANE0.value + lane for lane in range(g.lanes)]
                                    + [Counter.BUSY_TOPK0.value + unit for unit in range(g.units)])


def test_a_two_stage_query_filters_on_chip(rm_models):
    small_model, med_model = rm_models
    chip = FunctionalChip(SMALL)         # 52 tables on chip (emb_tables)
    g = chip.geometry
    raw = tiny_data(small_model.spec, 160, start=7000, seed=11)
    program = Program(g)
    program.add(Opcode.SPLIT, "split", n=2)
    first_stage = Loaded(program, g, small_model, 2, first_table=0, mem_at=0, w_base=0, weights_done=0,
                         records=small_model.inputs(raw))
    second_stage = Loaded(program, g, med_model, 2, first_table=26, mem_at=first_stage.end,
                          w_base=len(first_stage.image.words), weights_done=1, records=med_model.inputs(raw))
    keep, k = 48, 10
    plan0, plan1 = LanePlan(g, 2, 0), LanePlan(g, 2, 1)
    for n, first in enumerate(range(0, 160, 32)):       # sub-batches of the lane's 32 accumulator rows
        first_stage.sub_batch(program, plan0, 0, 32, {"source": FetchSource.RANGE.value, "first": first})
        program.add(Opcode.SCORE, "score", lane=0, dest=ScoreDest.TOPK.value, unit=0, items=32, last=int(n == 4),
                    k=keep, keep=1)
    sizes = [20, 20, 8]
    for n, first in enumerate(np.cumsum([0, *sizes[:-1]]).tolist()):
        second_stage.sub_batch(program, plan1, 1, sizes[n], {
            "source": FetchSource.SURVIVORS.value, "first": first, "unit": 0, "wait_results": 1,
            "release": int(n == len(sizes) - 1)})
        rank = program.add(Opcode.SCORE, "score", lane=1, dest=ScoreDest.TOPK.value, unit=0, items=sizes[n],
                           last=int(n == len(sizes) - 1), k=k, report=1)
    result = chip.run(program.words())
    responses = decode(chip, result.responses)
    _, survivors = topk(small_model.logits(first_stage.dense_q, first_stage.ids), keep)
    logits = med_model.logits(second_stage.dense_q[survivors], second_stage.ids[survivors])
    scores, indices = topk(logits, k, survivors)
    ranking = of_kind(responses, ResponseKind.RANK, rank)
    assert ranking["score"].tolist() == scores.tolist() and ranking["index"].tolist() == indices.tolist()
    assert len(of_kind(responses, ResponseKind.RANK)["kind"]) == k   # the first stage reported nothing
    assert result.counters["ERRORS"] == 0
    assert chip.topk[0].results_done == 1 and chip.topk[0].releases == 1


# (e) errors --------------------------------------------------------------------------------------------------------


def test_every_error_code_with_its_detail_and_no_effect():
    """The controller's checks (rtl/accel/controller.py), in its priority order, with its details."""
    # Twelve tables: a table field of four bits can name a table the chip does not have.
    chip = FunctionalChip(TINY.with_settings(["emb_tables=12"]))
    g = chip.geometry
    lines = 1 << g.addr_bits
    acc_rows = g.engine.splits[1].acc_rows
    dim_bits = g.max_dim.bit_length()
    program = Program(g)
    good_fetch = {"lane": 0, "items": 2, "count": 4, "stride": 1, "dense_lines": 1, "dense_words": 1,
                  "join": {"vectors": 1, "dim": 4}}
    layer = {"op": Op.LAYER, "items": 1, "ktiles": 1, "ntiles": 1}
    cases = [
        (13, None, {}, ErrorCode.OPCODE, 13),
        (Opcode.SCORE, "score", {"lane": 1, "items": 0}, ErrorCode.LANE, 1),
        (Opcode.FETCH, "fetch", {**good_fetch, "lane": 2, "items": 0}, ErrorCode.LANE, 2),
        (Opcode.WEIGHTS, "weights", {"lane": 3, "wait": 1, "words": 0}, ErrorCode.LANE, 3),
        (Opcode.LANE, "lane", {"lane": 1, "cmd": {"items": 0}}, ErrorCode.LANE, 1),
        (Opcode.SPLIT, "split", {"n": 3}, ErrorCode.SPLIT, 3),
        (Opcode.SCORE, "score", {"items": 1, "last": 1, "k": 0}, ErrorCode.K, 0),
        (Opcode.SCORE, "score", {"items": 1, "last": 1, "k": g.k_max + 1}, ErrorCode.K, g.k_max + 1),
        (Opcode.FETCH, "fetch", {**good_fetch, "items": 0, "raw": {"source": 3}}, ErrorCode.ITEMS, 0),
        (Opcode.LANE, "lane", {"cmd": {**layer, "items": acc_rows + 1}}, ErrorCode.ITEMS, acc_rows + 1),
        (Opcode.SCORE, "score", {"items": 0, "unit": 1}, ErrorCode.ITEMS, 0),
        (Opcode.SCORE, "score", {"items": 1, "unit": 1, "last": 1}, ErrorCode.UNIT, 1),
        (Opcode.WEIGHTS, "weights", {"w_addr": 250, "words": 10, "mem_addr": lines - 1}, ErrorCode.WEIGHTS, 260),
        (Opcode.WEIGHTS, "weights", {"w_addr": 3, "words": 0}, ErrorCode.WEIGHTS, 3),
        (Opcode.LANE, "lane", {"cmd": {**layer, "w_base": 9}}, ErrorCode.WEIGHTS, 9),
        (Opcode.EMB, "emb", {"op": EmbeddingOp.FLUSH.value, "table": g.emb.tables}, ErrorCode.TABLE, g.emb.tables),
        (Opcode.FETCH, "fetch", {**good_fetch, "join": {"vectors": 2, "dim": 4}}, ErrorCode.TABLE, 1),
        (Opcode.FETCH, "fetch", {**good_fetch, "first": 3, "join": {"vectors": 2, "dim": 4}}, ErrorCode.INDEX, 5),
        (Opcode.FETCH, "fetch", {**good_fetch, "source": FetchSource.SURVIVORS.value, "first": 15},
         ErrorCode.INDEX, 17),
        (Opcode.FETCH, "fetch", {**good_fetch, "source": FetchSource.SURVIVORS.value, "unit": 1,
                                 "first": g.filter_capacity - 1}, ErrorCode.INDEX, g.filter_capacity + 1),
        (Opcode.MEM_READ, "mem_read", {"addr": lines - 2, "length": 2}, ErrorCode.ADDRESS, lines - 2),
        (Opcode.WEIGHTS, "weights", {"mem_addr": lines - 1, "words": 8}, ErrorCode.ADDRESS, lines - 1),
        (Opcode.EMB, "emb", {"op": EmbeddingOp.LOOKUP.value, "table": g.emb.tables}, ErrorCode.FIELD,
         EmbeddingOp.LOOKUP.value),
        (Opcode.EMB, "emb", {"op": EmbeddingOp.COUNTERS.value}, ErrorCode.FIELD, EmbeddingOp.COUNTERS.value),
        (Opcode.FETCH, "fetch", {**good_fetch, "raw": {"source": 3}, "join": {"vectors": 0, "dim": 4}},
         ErrorCode.FIELD, 3),
        (Opcode.FETCH, "fetch", {**good_fetch, "join": {"vectors": 0, "dim": 4}, "unit": 1,
                                 "source": FetchSource.SURVIVORS.value}, ErrorCode.FIELD, 4),
        (Opcode.FETCH, "fetch", {**good_fetch, "join": {"vectors": 1, "dim": 0}}, ErrorCode.FIELD, 1 << dim_bits),
    ]
    assert {code for *_, code, _ in cases} == set(ErrorCode) - {ErrorCode.NONE}
    tags = [program.add(op, member, **fields) for op, member, fields, *_ in cases]
    # Nothing refused had an effect: the split is still 1, no weight page is loaded, no table configured (a CONFIG
    # of 0 rows configures none); and the chip serves the next commands.
    after = [program.add(Opcode.LANE, "lane", lane=1, cmd={"items": 1}),
             program.add(Opcode.LANE, "lane", cmd={**layer, "w_base": 9}),
             program.add(Opcode.WEIGHTS, "weights", w_addr=8, words=2),
             program.add(Opcode.LANE, "lane", cmd={**layer, "w_base": 9}),
             program.add(Opcode.EMB, "emb", op=EmbeddingOp.CONFIG.value, table=3, arg={"config": {"rows": 0}}),
             program.add(Opcode.FETCH, "fetch", **{**good_fetch, "join": {"vectors": 2, "dim": 4}}),
             program.add(Opcode.EMB, "emb", op=EmbeddingOp.CONFIG.value, table=3, arg={"config": {"rows": 5}}),
             program.add(Opcode.FETCH, "fetch", **{**good_fetch, "join": {"vectors": 3, "dim": 4}})]
    read = program.add(Opcode.MEM_READ, "mem_read", addr=0, length=0)
    result = chip.run(program.words())
    errors = of_kind(decode(chip, result.responses), ResponseKind.ERROR)
    expected = [(tag, code.value, op if isinstance(op, int) else op.value, detail)
                for tag, (op, _, _, code, detail) in zip(tags, cases)]
    expected += [(after[0], ErrorCode.LANE.value, Opcode.LANE.value, 1),
                 (after[1], ErrorCode.WEIGHTS.value, Opcode.LANE.value, 9),
                 (after[5], ErrorCode.TABLE.value, Opcode.FETCH.value, 1),
                 (after[7], ErrorCode.TABLE.value, Opcode.FETCH.value, 2)]
    got = list(zip(*(errors[name].tolist() for name in ("tag", "code", "index", "score"))))
    assert got == expected
    assert errors["last"].tolist() == [1] * len(expected)
    assert result.counters["ERRORS"] == len(expected)
    assert result.counters["COMMANDS"] == len(cases) + len(after) + 1
    assert len(of_kind(decode(chip, result.responses), ResponseKind.DATA, read)["kind"]) == 1


def controller_errors(geometry, words):
    """The ERROR responses of :class:`rpaccel.rtl.accel.controller.Controller` (in the Amaranth simulator, every
    unit queue drained, the chip quiet) to packed command ``words`` ending in a SYNC, as ``(tag, code, index,
    score)``."""
    ctrl = Controller(geometry, mem_lines=1 << geometry.addr_bits)
    got = []

    async def driver(ctx):
        ctx.set(ctrl.quiet, 1)
        for port in (ctrl.fetch, ctrl.weights, *ctrl.lane, *ctrl.score):
            ctx.set(port.ready, 1)
        for word in to_ints(words):
            ctx.set(Value.cast(ctrl.cmd.payload), int(word))
            ctx.set(ctrl.cmd.valid, 1)
            accepted = False
            while not accepted:
                _, _, accepted = await ctx.tick().sample(ctrl.cmd.ready)
        ctx.set(ctrl.cmd.valid, 0)

    async def responder(ctx):
        while not got or got[-1]["kind"] != ResponseKind.DONE:
            got.extend(await StreamSink(ctrl.rsp).receive(ctx, 1))

    run_simulation(ctrl, [driver, responder], max_cycles=5_000, name="controller_checks")
    return [(r["tag"], r["code"].value, r["index"], r["score"]) for r in got if r["kind"] == ResponseKind.ERROR]


def test_the_checks_of_filter_units_and_holders():
    """SCORE to a filter unit and FETCH from a holder, checked as the controller checks them (priorities and
    details): the model's refusals are the RTL controller's on the same words."""
    # Holders: top-k units 0 and 1, filter unit 0 as holder 2; a two-bit holder field can name a fourth.
    chip = FunctionalChip(TINY.with_settings(["topk_units=2"]))
    g = chip.geometry
    cap, filter_ = g.filter_capacity, ScoreDest.FILTER.value
    survivors = {"items": 2, "count": 4, "stride": 1, "dense_lines": 1, "dense_words": 1,
                 "join": {"vectors": 1, "dim": 4}, "source": FetchSource.SURVIVORS.value}
    cases = [
        # dest 3 is a FIELD error, after LANE and ITEMS and before UNIT and K.
        (Opcode.SCORE, "score", {"lane": 1, "items": 0, "raw": {"dest": 3}}, ErrorCode.LANE, 1),
        (Opcode.SCORE, "score", {"items": 0, "raw": {"dest": 3}}, ErrorCode.ITEMS, 0),
        (Opcode.SCORE, "score", {"items": 1, "unit": 1, "last": 1, "raw": {"dest": 3}}, ErrorCode.FIELD, 3),
        (Opcode.SCORE, "score", {"dest": filter_, "items": 1, "unit": 1, "last": 1}, ErrorCode.UNIT, 1),
        (Opcode.SCORE, "score", {"dest": filter_, "items": 1, "last": 1}, ErrorCode.K, 0),
        (Opcode.SCORE, "score", {"dest": filter_, "items": 1, "last": 1, "k": cap + 1}, ErrorCode.K, cap + 1),
        (Opcode.SCORE, "score", {"dest": ScoreDest.TOPK.value, "items": 1, "last": 1, "k": g.k_max + 1},
         ErrorCode.K, g.k_max + 1),
        (Opcode.FETCH, "fetch", {**survivors, "unit": 3, "first": cap}, ErrorCode.UNIT, 3),
        (Opcode.FETCH, "fetch", {**survivors, "unit": 1, "first": g.k_max - 1}, ErrorCode.INDEX, g.k_max + 1),
        (Opcode.FETCH, "fetch", {**survivors, "unit": 2, "first": cap - 1}, ErrorCode.INDEX, cap + 1),
    ]
    program = Program(g)
    tags = [program.add(op, member, **fields) for op, member, fields, *_ in cases]
    # Accepted: up to the filter's positions from its holder; a filter's k unchecked without last, k = capacity.
    program.add(Opcode.FETCH, "fetch", **survivors, unit=2, first=cap - 2, wait_results=1)
    program.add(Opcode.SCORE, "score", dest=filter_, items=1, k=cap + 1)
    program.add(Opcode.SCORE, "score", dest=filter_, items=1, last=1, k=cap)
    with pytest.raises(Deadlock) as error:       # the accepted commands wait for what never comes
        chip.run(program.words())
    assert error.value.blocked == [
        "fetcher: FETCH (tag 10) waits for result 1 of filter unit 0 (0 done)",
        "score sequencer 0: SCORE (tag 11) waits for 1 on logits[0] (0 there)"]
    errors = of_kind(decode(chip, chip.responses.pack()), ResponseKind.ERROR)
    got = list(zip(*(errors[name].tolist() for name in ("tag", "code", "index", "score"))))
    assert got == [(tag, code.value, op.value, detail) for tag, (op, _, _, code, detail) in zip(tags, cases)]
    assert chip.counters[Counter.ERRORS] == len(cases)
    program.add(Opcode.SYNC)
    assert controller_errors(g, program.words()) == got


# (f) programs that do not line up --------------------------------------------------------------------------------


def test_a_lane_taking_more_dense_words_than_fetched_deadlocks():
    chip = FunctionalChip(TINY)
    rng = np.random.default_rng(5)
    bottom, top = random_mlp(rng, (6, 5), raw_last=False), random_mlp(rng, (5, 1))
    program, _ = mlp_program(chip, 1, 0, rng.integers(-128, 128, (8, 6)), bottom, top)
    words = program.words()
    columns = codec(chip.geometry.command_layout()).unpack(words)
    first_input = int(np.flatnonzero(columns["op"] == Opcode.LANE.value)[0])
    columns["arg"] = {"lane": {**columns["arg"]["lane"], "src_words": np.where(
        np.arange(len(words)) == first_input, 3, columns["arg"]["lane"]["src_words"])}}
    broken = codec(chip.geometry.command_layout()).pack(columns)
    # 16 dense words: 5 items of 3 taken, the last word left.
    with pytest.raises(Deadlock, match=r"lane 0: INPUT \(tag \d+\) has taken 5 of 8 items and waits for 9 words on "
                       r"dense\[0\] \(1 there\)") as error:
        chip.run(broken)
    assert any(line.startswith("joiner:") for line in error.value.blocked)


def test_a_survivors_fetch_of_a_result_never_kept_deadlocks_and_a_sync_waits_for_it():
    chip = FunctionalChip(TINY)
    program = Program(chip.geometry)
    program.add(Opcode.FETCH, "fetch", source=FetchSource.SURVIVORS.value, wait_results=1, items=2, count=4,
                stride=1, dense_lines=1, dense_words=1, join={"vectors": 1, "dim": 4})
    program.add(Opcode.SYNC)
    with pytest.raises(Deadlock) as error:
        chip.run(program.words())
    assert error.value.blocked == [
        "controller: SYNC (tag 1) waits for the chip to be quiet (every queue empty, every unit idle)",
        "fetcher: FETCH (tag 0) waits for result 1 of top-k unit 0 (0 done)"]


def test_logits_nobody_scores_are_work_left():
    chip = FunctionalChip(TINY)
    rng = np.random.default_rng(6)
    bottom, top = random_mlp(rng, (6, 5), raw_last=False), random_mlp(rng, (5, 1))
    program, _ = mlp_program(chip, 1, 0, rng.integers(-128, 128, (8, 6)), bottom, top)
    words = program.words()[:-1]     # without the SCORE
    with pytest.raises(Deadlock, match=r"logits\[0\] holds 8 transfers no command takes"):
        chip.run(words)


def test_bounded_queues_keep_the_waits_within_their_window(dot_models):
    """A lane that streams its weights behind a long first stage: with the controller's queues unbounded the weight
    loader's and the lanes' counts drifted more than 128 apart and a modulo-256 wait read as met (wrong logits on
    the second stage, where the RTL was right); bounded as the RTL's, the responses are the golden model's."""
    a, b = dot_models
    config = TINY.with_settings(["weight_buffer_words=128"])
    setup = ChipSetup(config, [a, b])
    query = setup.add_query({m: m.inputs(tiny_data(m.spec, 250, start=9000)) for m in (a, b)})
    program = compile_queries(setup, [Stage(a, k=80), Stage(b, k=5)], [query], Schedule("rpaccel", sub_batch=1))
    weights = sum(record["op"] == Opcode.WEIGHTS for record in program.records())
    assert weights > 128, weights            # the second stage streams: more WEIGHTS than the window
    expected = expected_responses(program)
    chip = FunctionalChip(config)
    responses = decode_responses(chip.geometry, chip.run(program_words(program, expected)).responses)
    assert responses.records(program.tags[0]) == expected.responses.records(program.tags[0])


def test_lookahead_beyond_the_joiners_buffers_deadlocks_and_the_checker_refuses_it(dot_models):
    """Lookahead with sub-batches whose pooled vectors and interaction output overfill the lanes' joiner buffers of
    a smaller configuration: on it the model deadlocks (a lane takes a sub-batch's interaction words only after the
    next sub-batch's dense words, which the fetcher sends only once the joiner has taken the sub-batch's pooled
    vectors) and the checker refuses the program; compiled for that configuration, the program has no lookahead, puts
    each sub-batch's top MLP right after its bottom MLP where the two stages interleave, and runs."""
    a, b = dot_models
    wide_config = TINY.with_settings(["act_buffer_words=1024"])        # room for sub-batches of 30 on a lane
    narrow = wide_config.with_settings(["join_buffer_words=32", "join_output_words=64"])
    stages, schedule = [Stage(a, k=30), Stage(b, k=5)], Schedule("rpaccel", sub_batch=30)
    for config in (wide_config, narrow):
        setup = ChipSetup(config, [a, b])
        queries = [setup.add_query({m: m.inputs(tiny_data(m.spec, 60, start=9500 + q)) for m in (a, b)})
                   for q in range(2)]
        program = compile_queries(setup, stages, queries, schedule)
        check_program(config, program.records(), memory=setup.memory)
        expected = expected_responses(program)
        words = program_words(program, expected)
        chip = FunctionalChip(config)
        responses = decode_responses(chip.geometry, chip.run(words).responses)
        for tag in program.tags:
            assert responses.records(tag) == expected.responses.records(tag), (config.name, tag)
        if config is wide_config:
            wide, wide_words = program, words
        else:
            # No sub-batch fits: each one's top MLP and SCORE before the next FETCH, also where stages interleave.
            ops = [record["op"] for record in program.records() if record["op"] in (Opcode.FETCH, Opcode.SCORE)]
            assert ops == [Opcode.FETCH, Opcode.SCORE] * (len(ops) // 2)
            lanes = "".join(str(record["arg"]["lane"]) for record in program.records() if record["op"] is Opcode.FETCH)
            assert "10" in lanes            # query 1's stage 0 after query 0's stage 1 began: they interleave
    # 30 items: the output buffer holds 16 items' output, the other 14 items' pooled vectors take 56 FIFO words.
    vectors, dim = a.spec.num_tables + 1, a.spec.emb_dim
    assert absorbs(ChipGeometry(wide_config), [(30, "dot", vectors, dim)])
    assert not absorbs(ChipGeometry(narrow), [(30, "dot", vectors, dim)])
    assert 64 // output_buffer_words(ChipGeometry(narrow), 1, "dot", vectors, dim) == 16
    assert pooled_words(ChipGeometry(narrow), 14, vectors, dim) == 56
    with pytest.raises(ProgramError, match=r"^command \d+ \(FETCH\): the joiner cannot take the FETCH's pooled vectors "
                                           r"while lane 0 leaves the interaction words of 30 items untaken before the "
                                           r"next FETCH, the bottom blocks of 30 of them given \(join_buffer_words 32, "
                                           r"join_output_words 64\)"):
        check_program(narrow, wide.records(), memory=wide.setup.memory)
    with pytest.raises(Deadlock, match=r"the pooled writer waits to put \d+ vectors of FETCH \(tag 0\) into FIFO\[0\]"):
        FunctionalChip(narrow).run(wide_words)
