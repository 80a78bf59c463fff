"""The chip end to end on Verilator: compiled programs of trained, quantised models, every response checked
against the golden model (rpaccel.host.reference, rpaccel.numeric.topk) tag by tag; refused commands against the
functional model (rpaccel.sim.model.functional), each followed by good queries that must still be right."""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.experiments.accel import train_models
from rpaccel.host.data import SyntheticConfig
from rpaccel.host.driver.chip import (
    ChipEncoder,
    ChipSetup,
    CompileError,
    Schedule,
    Stage,
    compile_queries,
    decode_responses,
    expected_responses,
)
from rpaccel.host.driver.codec import codec
from rpaccel.host.models import get_model
from rpaccel.rtl.accel.isa import ChipGeometry, FetchSource, Opcode, ResponseKind, ScoreDest
from rpaccel.rtl.accel.join import absorbs, pooled_words
from rpaccel.rtl.embedding import EmbeddingOp
from rpaccel.rtl.mlp import Op
from rpaccel.sim.chip import chip_device, program_words, run_program, run_words
from rpaccel.sim.model.chip import ModelDevice
from rpaccel.sim.model.functional import FunctionalChip

from host_fixtures import quantised, random_inputs, tiny_data, tiny_dot, tiny_wnd

pytestmark = [pytest.mark.verilator, pytest.mark.slow]

TINY = preset("tiny").with_settings(["weight_buffer_words=512"])    # three models' weights at once
G = ChipGeometry(TINY)


@pytest.fixture(scope="module")
def models():
    return [quantised(tiny_dot()), quantised(tiny_dot(name="tiny-dot-b", bottom=(6, 4), top=(5, 1))),
            quantised(tiny_dot(name="tiny-dot-c", bottom=(8, 8, 4), top=(6, 3, 1)))]


@pytest.fixture(scope="module")
def device():
    return chip_device(TINY)


def candidates(qmodel, n, start=5000):
    return qmodel.inputs(tiny_data(qmodel.spec, n, start=start))


def _queries(setup, models, sizes, start=7000):
    return [setup.add_query({model: candidates(model, n, start + n) for model in models}) for n in sizes]


@pytest.mark.parametrize("mode", ["rpaccel", "baseline"])
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_pipelines_on_the_rtl_match_the_golden_model(models, device, mode, stages):
    setup = ChipSetup(TINY, models)
    queries = _queries(setup, models, (30, 19))
    pipeline = [Stage(models[0], k=12), Stage(models[1], k=7), Stage(models[2], k=3)][:stages]
    program = compile_queries(setup, pipeline, queries, Schedule(mode, sub_batch=8))
    run = run_program(program, device=device)
    assert run.mismatches() == {}
    assert run.check_lists() == []


@pytest.mark.parametrize(("split", "sub_batch", "lookahead", "pause"), [
    (2, 5, True, 0.3), (4, 5, True, 0.0), (4, 3, False, 0.5), (2, 10, False, 0.2)])
def test_splits_sub_batches_and_stalls(models, device, split, sub_batch, lookahead, pause):
    """Two stages on the lanes of a split array, sub-batches of several sizes (a query not a multiple of them),
    with and without the lookahead schedule, random idle cycles on the commands and back-pressure on the
    responses; three queries back to back."""
    setup = ChipSetup(TINY, models[:2])
    queries = _queries(setup, models[:2], (41, 17, 33), start=9000)
    program = compile_queries(setup, [Stage(models[0], k=14), Stage(models[1], k=6)], queries,
                              Schedule("rpaccel", split=split, sub_batch=sub_batch, lookahead=lookahead))
    run = run_program(program, device=device, pause=pause, seed=split * 7 + sub_batch)
    assert run.mismatches() == {}


@pytest.mark.parametrize("mode", ["rpaccel", "baseline"])
def test_random_memory_latency(models, big_model, mode):
    """The memory model answers each request after 100 to 131 cycles (pseudo-random, in order): a 2-stage pipeline
    whose second model streams its weights, three queries, random idle cycles and back-pressure on the host
    streams; every response equals the golden model's."""
    config = TINY.with_settings(["mem_latency_jitter=31"])
    setup = ChipSetup(config, [models[0], big_model])
    queries = _queries(setup, [models[0], big_model], (29, 18, 35), start=16000)
    program = compile_queries(setup, [Stage(models[0], k=12), Stage(big_model, k=5)], queries,
                              Schedule(mode, sub_batch=5))
    run = run_program(program, device=chip_device(config), pause=0.3, seed=11)
    assert run.mismatches() == {}
    assert run.check_lists() == []

def _command(op, tag, member=None, /, **fields):
    """A packed command: every field zero but ``fields`` of ``arg.<member>``."""
    template = codec(G.command_layout()).unpack_value(0)
    value = {"op": op.value, "tag": tag, "arg": {"split": {"n": 0}}}
    if member is not None:
        arg = template["arg"][member]
        for name, field in fields.items():
            arg[name] = {**arg[name], **field} if isinstance(field, dict) and name != "arg" else field
        if member == "emb" and "arg" not in fields:
            arg["arg"] = {"lookup": arg["arg"]["lookup"]}
        value["arg"] = {member: arg}
    return codec(G.command_layout()).pack_value(value)


def _raw(packed, path, bits):
    layout, offset = G.command_layout(), 0
    for name in path:
        field = layout[name]
        offset, layout = offset + field.offset, field.shape
    width = layout.size if hasattr(layout, "size") else layout.as_shape().width
    return packed & ~(((1 << width) - 1) << offset) | bits << offset


def bad_commands():
    """Commands the chip refuses, one of each kind, tags from 200."""
    join = {"mode": 0, "vectors": 1, "dim": 4, "m": 1, "s": 0}
    fetch = {"lane": 0, "items": 4, "count": 8, "stride": 2, "join": join}
    return [
        _raw(_command(Opcode.NOP, 200), ("op",), 13),
        _command(Opcode.SPLIT, 201, "split", n=3),
        _command(Opcode.LANE, 202, "lane", lane=3, cmd={"op": Op.INPUT.value, "items": 2, "ktiles": 1}),
        _command(Opcode.SCORE, 203, "score", dest=ScoreDest.TOPK.value, items=2, last=1, k=0),
        _command(Opcode.SCORE, 204, "score", dest=ScoreDest.FILTER.value, items=2, last=1,
                 k=TINY.filter_capacity + 1),
        _command(Opcode.FETCH, 205, "fetch", **{**fetch, "first": 5}),
        _command(Opcode.FETCH, 206, "fetch", **{**fetch, "items": 0}),
        _command(Opcode.LANE, 207, "lane", cmd={"op": Op.LAYER.value, "items": 2, "w_base": 200, "ktiles": 1,
                                                "ntiles": 1}),
        _command(Opcode.EMB, 208, "emb", op=EmbeddingOp.LOOKUP.value, table=1),
        _command(Opcode.FETCH, 209, "fetch", **{**fetch, "source": FetchSource.SURVIVORS.value, "unit": 0,
                                                "first": TINY.k_max - 2}),
        _raw(_command(Opcode.SCORE, 210, "score", items=1), ("arg", "score", "dest"), 3),
        _command(Opcode.SCORE, 211, "score", dest=ScoreDest.FILTER.value, unit=1, items=1),
    ]


def test_bad_commands_are_refused_and_good_queries_still_run(models, device):
    """Every refusal, with its code and detail as the functional model gives them, then two 2-stage queries that
    must still be right; the counters report the refusals."""
    setup = ChipSetup(TINY, models[:2])
    queries = _queries(setup, models[:2], (26, 21), start=11000)
    program = compile_queries(setup, [Stage(models[0], k=9), Stage(models[1], k=4)], queries,
                              Schedule("rpaccel", sub_batch=8))
    encoder = ChipEncoder(TINY)
    bad = np.array([[(word >> (64 * limb)) & ((1 << 64) - 1) for limb in range(G.command_layout().size // 64 + 1)]
                    for word in bad_commands()], dtype=np.uint64)[:, :encoder.encode([]).shape[1]]
    words = np.concatenate([setup.load_words(encoder), bad, program.words(encoder), encoder.counters(tag=250)])
    model = decode_responses(G, FunctionalChip(TINY).run(words).responses)
    refused = list(range(200, 212))
    assert sorted(set(model.tag[model.kind == ResponseKind.ERROR.value].tolist())) == refused
    got, _, _, _ = run_words(device, G, words, len(model), pause=0.2, seed=5)
    for tag in sorted(set(model.tag.tolist()) - {250}):
        assert got.records(tag) == model.records(tag), f"tag {tag}"
    golden = expected_responses(program)
    for tag in program.tags:
        assert got.records(tag) == golden.responses.records(tag)
    counters = got.counters(250)
    assert counters["ERRORS"] == len(refused)
    assert counters["COMMANDS"] == len(words) - 1           # every command but the COUNTERS answering
    assert counters["BUSY_LANE0"] > 0 and counters["BUSY_LANE1"] > 0 and counters["BUSY_FILTER0"] > 0
    assert counters["EMB_LOOKUPS"] == model.counters(250)["EMB_LOOKUPS"]
    # The timed model (issue 20: "a command the chip refuses gets the same error response from the model").
    timed, _, _, _ = run_words(ModelDevice(TINY), G, words, len(model))
    for tag in sorted(set(model.tag.tolist()) - {250}):
        assert timed.records(tag) == got.records(tag), f"tag {tag}"
    assert timed.counters(250)["ERRORS"] == len(refused)


@pytest.fixture(scope="module")
def big_model():
    """552 weight words at split 1 (layers of up to 160): beyond TINY's 512, so it streams."""
    return quantised(tiny_dot(name="tiny-big", bottom=(32, 16, 4), top=(32, 16, 1)))


@pytest.mark.parametrize(("mode", "stages", "split", "sub_batch", "lookahead", "pause", "streamed"), [
    ("rpaccel", 1, 1, 6, True, 0.0, None), ("rpaccel", 1, 1, 7, False, 0.3, None),
    ("rpaccel", 2, 2, 5, True, 0.3, None), ("rpaccel", 2, 2, 4, False, 0.0, None),
    ("rpaccel", 2, 1, 5, True, 0.2, None), ("rpaccel", 2, 2, 5, True, 0.3, (0, 1)),
    ("rpaccel", 2, 2, 3, False, 0.1, (0, 1)), ("baseline", 2, 1, 6, True, 0.2, None)])
def test_streamed_weights_on_the_rtl(models, big_model, device, mode, stages, split, sub_batch, lookahead, pause,
                                     streamed):
    """A model whose weights exceed the weight buffer streams them per sub-batch through slots (the other model
    stays resident; or both stream, each lane with its ring, layers larger than a slot in parts), 1- and 2-stage,
    with and without lookahead, in both modes, with stalls: every response equals the golden model's, and the
    functional model (which runs the loader as far ahead as the waits allow) agrees."""
    a = models[0]
    setup = ChipSetup(TINY, [a, big_model], streamed=streamed)
    plan = setup.weights(split)
    assert set(plan.staged) >= {(1, "bottom"), (1, "top")}
    assert (max(len(layer) for mlp in plan.staged.values() for layer in mlp) > 1) == (streamed is not None)
    queries = _queries(setup, [a, big_model], (23, 16), start=12000)
    pipeline = [Stage(big_model, k=6)] if stages == 1 else [Stage(a, k=11), Stage(big_model, k=5)]
    program = compile_queries(setup, pipeline, queries,
                              Schedule(mode, split=split, sub_batch=sub_batch, lookahead=lookahead))
    run = run_program(program, device=device, pause=pause, seed=sub_batch)
    assert run.mismatches() == {}
    assert run.check_lists() == []
    model = decode_responses(G, FunctionalChip(TINY).run(program_words(program)).responses)
    for tag in program.tags:
        assert model.records(tag) == run.expected.responses.records(tag)



def test_rm_large_streams_while_the_joiner_fifo_is_full():
    """RM-large on ``small`` (its weights stream): the lane's joiner FIFO holds one sub-batch's pooled vectors, not
    two, so the embedding unit waits on it with missed lines in flight while the lane computes the next
    bottom MLP, whose weights come through the same memory port. The embedding unit's read buffer keeps those lines
    from holding the port (this program deadlocked the chip without it); every response equals the golden
    model's."""
    config = preset("small")
    spec = get_model("rm-large", max_rows=100)
    models, generator, _ = train_models({"large": spec}, train_samples=1000, calibration=300,
                                        data=SyntheticConfig.criteo(max_rows=100, seed=1))
    model = models["large"]
    setup = ChipSetup(config, [model])
    assert (0, "bottom") in setup.weights(1).staged                 # it streams
    geometry = ChipGeometry(config)
    one = pooled_words(geometry, 8, spec.num_tables + 1, spec.emb_dim)
    assert one <= config.join_buffer_words < 2 * one
    query = setup.add_query({model: model.inputs(generator.generate(48, start=5000))})
    program = compile_queries(setup, [Stage(model, k=16)], [query], Schedule("baseline", sub_batch=8))
    run = run_program(program, max_cycles=3_000_000)
    assert run.mismatches() == {}


@pytest.fixture(scope="module")
def small_device():
    return chip_device(preset("small"))


@pytest.mark.parametrize("name", ["rm-small", "rm-med", "rm-large", "rmc1"])
def test_every_zoo_model_the_chip_runs_is_bit_exact_on_small(name, small_device):
    """Each zoo model the compiler maps onto ``small`` (tables capped at 200 rows; RM-large and RMC1 stream their
    weights) ranks a query on the RTL exactly as the golden model does, in both modes."""
    spec = get_model(name, max_rows=200)
    models, generator, _ = train_models({name: spec}, train_samples=800, calibration=200)
    model = models[name]
    setup = ChipSetup(preset("small"), [model])
    query = setup.add_query({model: model.inputs(generator.generate(30, start=4000))})
    for mode in ("rpaccel", "baseline"):
        program = compile_queries(setup, [Stage(model, k=8)], [query], Schedule(mode))
        run = run_program(program, device=small_device, max_cycles=5_000_000)
        assert run.mismatches() == {}, (name, mode)


@pytest.mark.parametrize(("mode", "split", "pause"), [("rpaccel", 2, 0.2), ("baseline", 1, 0.0)])
def test_tiny_wide_and_deep_and_task_towers_are_bit_exact(device, mode, split, pause):
    """Wide & Deep of tiny's sizes (5 dense inputs, padded to 8 in the top MLP's input region) and a multi-task
    variant (ranked by task 0's logit), negative dense inputs among them, with idle cycles and back-pressure: every
    response equals the golden model's."""
    rng = np.random.default_rng(split)
    for model in (quantised(tiny_wnd(dense=5, emb_dim=3)),
                  quantised(tiny_wnd(name="tiny-mt-wnd", dense=6, top=(6, 5), tasks=2, tower=(4, 1)))):
        setup = ChipSetup(TINY, [model])
        queries = [setup.add_query({model: random_inputs(model.spec, n, rng)}) for n in (13, 7)]
        program = compile_queries(setup, [Stage(model, k=6)], queries, Schedule(mode, split=split, sub_batch=4))
        run = run_program(program, device=device, pause=pause, seed=split)
        assert run.mismatches() == {}, model.spec.name


def test_wide_and_deep_is_bit_exact_on_small(small_device):
    """WnD (no bottom MLP: its 512 dense inputs go past the joiner into the top MLP's input region; its 1,408 x 1,024
    first layer streams in parts) on the RTL: every logit of a query (baseline: each to the host; RPAccel: all of
    them ranked) equals :func:`rpaccel.host.reference.run`'s."""
    spec = get_model("wnd", max_rows=200)
    models, generator, _ = train_models({"wnd": spec}, train_samples=800, calibration=200)
    model = models["wnd"]
    setup = ChipSetup(preset("small"), [model])
    dense_q, ids = model.inputs(generator.generate(10, start=4000))
    query = setup.add_query({model: (dense_q, ids)})
    logits = model.logits(dense_q, ids)             # rpaccel.host.reference.run
    for mode in ("baseline", "rpaccel"):
        program = compile_queries(setup, [Stage(model, k=10)], [query], Schedule(mode))
        result = run_program(program, device=small_device, max_cycles=5_000_000)
        assert result.mismatches() == {}, mode
        if mode == "baseline":
            indices, scores = result.responses.logits(program.tags[0])
        else:
            scores, indices = np.array(result.responses.ranking(program.tags[0])).T
        assert np.array_equal(scores[np.argsort(indices)], logits), mode


@pytest.mark.parametrize(("name", "reason"), [
    ("rmc2", "embedding dimension 64 exceeds max_emb_dim 32"),
    ("rmc3", "its 2560 dense features take 320 words of 8, and a FETCH's dense_words holds at most 255"),
    ("mt-wnd", r"43 tables exceed the 32 of a model \(max_tables\)")])
def test_zoo_models_the_chip_cannot_run_are_refused_with_the_reason(name, reason):
    spec = get_model(name, max_rows=200)
    models, _, _ = train_models({name: spec}, train_samples=400, calibration=100)
    with pytest.raises(CompileError, match=f"^Model {name} cannot run on small: {reason}"):
        ChipSetup(preset("small"), [models[name]])


def test_interleaved_queries_balanced_with_lookahead_on_both_lanes():
    """RecPipe's 2-stage pipeline over three queries on ``small``: stage 2 of query q (RM-large, streamed, lane 1)
    interleaves with stage 1 of query q + 1 (RM-small, lane 0), several RM-small sub-batches between two RM-large
    ones (in proportion to their estimated cycles; the in-order joiner deadlocked on such a schedule). The joiner
    serves each lane's jobs on their own; the joiner takes an RM-large sub-batch's pooled vectors without its lane
    (they overfill the lane's FIFO, but its output fits the lane's output buffer), not two, so lane 1 takes each
    sub-batch's interaction words before the next FETCH where the stages interleave, and lane 0 looks ahead; every
    response equals the golden model's."""
    config = preset("small")
    specs = {role: get_model(f"rm-{role}", max_rows=300) for role in ("small", "large")}
    models, generator, _ = train_models(specs, train_samples=1000, calibration=300,
                                        data=SyntheticConfig.criteo(max_rows=300, seed=1))
    small, large = models["small"], models["large"]
    setup = ChipSetup(config, [small, large])
    queries = [setup.add_query({m: m.inputs(generator.generate(256, start=5000 + 256 * q)) for m in (small, large)})
               for q in range(3)]
    program = compile_queries(setup, [Stage(small, k=32), Stage(large, k=8)], queries, Schedule("rpaccel"))
    geometry = ChipGeometry(config)
    vectors, dim = large.spec.num_tables + 1, large.spec.emb_dim
    one = (program.sub_batch, large.spec.interaction, vectors, dim)
    assert pooled_words(geometry, program.sub_batch, vectors, dim) > config.join_buffer_words
    assert absorbs(geometry, [one]) and not absorbs(geometry, [one, one])
    # Lookahead (each query's first two FETCHes before its first SCORE) on lane 0, and on lane 1 where it runs alone
    # (the last query's stage 2): there the joiner takes one RM-large sub-batch without the lane, not two.
    order, lanes = {}, []
    for record in program.records():
        if record["op"] in (Opcode.FETCH, Opcode.SCORE):
            order.setdefault((record["arg"]["lane"], record["tag"]), []).append(record["op"])
        if record["op"] is Opcode.FETCH:
            lanes.append(record["arg"]["lane"])
    for (lane, tag), ops in order.items():
        assert ops[:2] == [Opcode.FETCH, Opcode.FETCH if lane == 0 or tag == 2 else Opcode.SCORE], (lane, tag)
    # Balanced: somewhere more than one lane-0 FETCH between two of lane 1's.
    runs = "".join(map(str, lanes)).strip("0").split("1")
    assert max(map(len, runs)) > 1
    run = run_program(program, max_cycles=8_000_000)
    assert run.mismatches() == {}


#: Tiny with a top-k and a filter unit for each of two lanes of a stage.
TINY2 = preset("tiny").with_settings(["topk_units=2", "filter_units=2"])


@pytest.fixture(scope="module")
def device2():
    return chip_device(TINY2)


@pytest.mark.parametrize(("stages", "lanes", "pause"), [
    (2, ((0, 1), (2, 3)), 0.0), (1, ((0, 1),), 0.3), (3, ((0,), (1,), (2, 3)), 0.0)])
def test_lane_maps_on_the_rtl_and_the_model(models, device2, stages, lanes, pause):
    """Queries spread over lanes (Schedule.lanes), four back to back: with two lanes per stage, queries 0 and 1 of
    a stage run on two lanes at once (their FETCHes interleave in the program); every response of the RTL and of
    the timed model equal to the golden model's."""
    a, b = models[:2]
    setup = ChipSetup(TINY2, [a, b])
    queries = _queries(setup, [a, b], (40, 23, 31, 29), start=9500)
    pipeline = [Stage(a, k=14), Stage(b, k=6), Stage(a, items=5, k=3)][:stages]
    program = compile_queries(setup, pipeline, queries, Schedule("rpaccel", split=4, sub_batch=5, lanes=lanes))
    fetches = [(r["tag"], r["arg"]["lane"]) for r in program.records() if r["op"] is Opcode.FETCH]
    if len(lanes[0]) > 1 and stages < 3:
        assert fetches.index((1, lanes[0][1])) < [i for i, f in enumerate(fetches) if f == (0, lanes[0][0])][1]
    run = run_program(program, device=device2, pause=pause, seed=stages)
    assert run.mismatches() == {}
    run = run_program(program, device=ModelDevice(TINY2))
    assert run.mismatches() == {}
