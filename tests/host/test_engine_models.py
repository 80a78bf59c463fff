"""Trained, quantised ranking models on the MLP engine, held to the integer reference bit for bit.

RM-small and RM-med are trained briefly on synthetic Criteo-like data and quantised; their bottom and top MLPs
run on the small engine in Verilator (pooling and interaction on the host), and every element of the bottom
output, the top MLP's input and the logits is compared with ``host.reference.run(..., trace=True)``; RM-large
too, at split 1. Tiny models of the other shapes (cat interaction with task towers, no bottom MLP) run too, and
one on the tiny engine in the Amaranth simulator. Planted bugs in the programs (a requantisation shift, one
weight) show the comparison can fail.
"""

import numpy as np
import pytest
from configs import SMALL16

from rpaccel.config import preset
from rpaccel.host.data import preprocess
from rpaccel.host.driver.models import EngineModel
from rpaccel.host.models import get_model
from rpaccel.host.quant import quantize
from rpaccel.host.reference import MLPError
from rpaccel.host.train import TrainConfig, train
from rpaccel.rtl.mlp import Op
from rpaccel.sim.mlp_harness import play_model, play_plan, simulate_plan

from host_fixtures import tiny_cat_towers, tiny_data, tiny_dot, tiny_wnd

TINY, SMALL = preset("tiny"), SMALL16


def trained_quantised(spec, samples=6000, test=300):
    """``(QuantModel, dense_q, ids)``: ``spec`` trained for one epoch, quantised, and an unseen test batch."""
    records = tiny_data(spec, samples)
    model, _ = train(spec, *preprocess(records, spec), records.labels,
                     TrainConfig(epochs=1, batch=256, lr=3e-3, emb_lr=2e-2, seed=1))
    qmodel = quantize(model, records.take(slice(0, 2000)))
    return (qmodel, *qmodel.inputs(tiny_data(spec, test, start=samples)))


@pytest.fixture(scope="module", params=["rm-small", "rm-med"])
def rm_model(request):
    return trained_quantised(get_model(request.param, max_rows=200))


def compare(qmodel, tensors, trace):
    """Every tensor the engine computed equals the reference's, element for element."""
    mlps = qmodel.mlps()
    expected_keys = {layers[-1].name for layers in mlps.values() if layers} | {"interaction", "logits"}
    assert set(tensors) == expected_keys
    for key, value in tensors.items():
        assert value.shape == trace[key].shape, key
        wrong = np.argwhere(value != trace[key])
        assert not wrong.size, f"{key}: {len(wrong)} elements differ, first at {wrong[:3].tolist()}"


@pytest.mark.verilator
@pytest.mark.parametrize(("split", "pause"), [(1, 0.0), (4, 0.2)])
def test_trained_rm_models_on_the_engine_match_the_reference(rm_model, split, pause):
    qmodel, dense_q, ids = rm_model
    logits, trace = qmodel.logits(dense_q, ids, trace=True)
    tensors, results = play_model(SMALL, qmodel, dense_q, ids, split=split, pause=pause, seed=split)
    compare(qmodel, tensors, trace)
    assert set(results) == {"bottom", "top"} and all(result.cycles > 0 for result in results.values())
    # What is compared is not degenerate: trained activations spread over the int8 range, distinct logits.
    bottom = tensors[qmodel.mlps()["bottom"][-1].name]
    assert bottom.max() > 60 and np.unique(bottom).size > 50
    assert np.unique(logits).size > 250


@pytest.mark.verilator
def test_trained_rm_large_on_the_engine_matches_the_reference():
    """RM-large's five-layer bottom MLP (13-512-256-128-64-32: 23,280 weight words, the most the small preset's
    weight memory was sized for) and its (32 + 351)-96-1 top MLP."""
    qmodel, dense_q, ids = trained_quantised(get_model("rm-large", max_rows=200), samples=3000, test=200)
    _, trace = qmodel.logits(dense_q, ids, trace=True)
    tensors, _ = play_model(SMALL, qmodel, dense_q, ids, split=1)
    compare(qmodel, tensors, trace)


@pytest.mark.verilator
def test_planted_bugs_in_the_programs_are_caught():
    qmodel, dense_q, ids = trained_quantised(get_model("rm-small", max_rows=200), samples=3000, test=120)
    _, trace = qmodel.logits(dense_q, ids, trace=True)
    engine = EngineModel(qmodel, SMALL, split=2)

    def run(corrupt):
        def execute(plan):
            corrupt(plan)
            return play_plan(SMALL, plan)[0]
        return engine.run(dense_q, ids, execute)

    def shift_of_bottom_last_layer(plan):
        if id(engine.mlps["bottom"]) in plan.weights.bases:
            last = [command for command in plan.lanes[1].commands if command["op"] == Op.LAYER][-1]
            last["params"]["s"] += 1  # lane 1's last chunk: the bottom's last layer requantised one bit short

    tensors = run(shift_of_bottom_last_layer)
    wrong = np.unique(np.argwhere(tensors["bottom1"] != trace["bottom1"])[:, 0])
    assert wrong.size and wrong.min() >= 60  # only lane 1's items (the second half of the batch)
    assert not np.array_equal(tensors["logits"], trace["logits"])

    # One weight of layer top0 in its first tile (n-tile 0, k-tile 0), one that matters: its input is the busiest
    # of the tile's rows, its output the busiest of the tile's columns.
    shape = engine.geometry.splits[2]
    k = int(np.abs(trace["interaction"][:, :shape.rows]).mean(axis=0).argmax())
    n = int(trace["top0"][:, :shape.cols].mean(axis=0).argmax())
    word, byte = divmod(k * shape.cols + n, engine.geometry.word_bytes)

    def one_top_weight(plan):
        if id(engine.mlps["top"]) in plan.weights.bases:
            base = plan.weights.bases[id(engine.mlps["top"])][0]
            plan.weights.words[base + shape.bias_words + word, byte] ^= 0x40

    tensors = run(one_top_weight)
    assert np.array_equal(tensors["bottom1"], trace["bottom1"])
    assert np.array_equal(tensors["interaction"], trace["interaction"])
    assert not np.array_equal(tensors["logits"], trace["logits"])


@pytest.mark.verilator
@pytest.mark.parametrize("make", [tiny_dot, tiny_cat_towers, tiny_wnd], ids=lambda make: make.__name__)
def test_other_model_shapes_on_the_engine(make):
    """The other model shapes: cat interaction with two task towers and pooling 2, no bottom MLP."""
    qmodel, dense_q, ids = trained_quantised(make(), samples=2000, test=50)
    _, trace = qmodel.logits(dense_q, ids, trace=True)
    tensors, _ = play_model(SMALL, qmodel, dense_q, ids, split=2, pause=0.3, seed=5)
    compare(qmodel, tensors, trace)


def test_a_model_on_the_tiny_engine_in_the_amaranth_simulator():
    qmodel, dense_q, ids = trained_quantised(tiny_wnd(), samples=2000, test=8)
    _, trace = qmodel.logits(dense_q, ids, trace=True)
    engine = EngineModel(qmodel, TINY, split=2)
    compare(qmodel, engine.run(dense_q, ids, lambda plan: simulate_plan(TINY, plan, pause=0.3, seed=3)[0]), trace)


def test_batches_spread_over_the_lanes_in_item_order():
    qmodel, dense_q, _ = trained_quantised(tiny_dot(), samples=2000, test=10)
    engine = EngineModel(qmodel, SMALL, split=4)
    plan = engine.plan("bottom", dense_q)
    assert [program.chunks for program in plan.lanes.values()] == [[(0, 3)], [(0, 3)], [(0, 2)], [(0, 2)]]
    assert list(plan.weights.bases) == [id(engine.mlps["bottom"])]  # the lanes share one weight image
    outputs = {lane: np.full((program.chunks[0][1], 4), lane) for lane, program in plan.lanes.items()}
    assert engine.decode(plan, outputs)[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert list(engine.plan("top", np.zeros((2, 14), dtype=int)).lanes) == [0, 1]  # fewer items than lanes
    with pytest.raises(ValueError, match=r"Expected the outputs of lanes \[0, 1, 2, 3\], got lanes \[0, 1\]"):
        engine.decode(plan, {0: outputs[0], 1: outputs[1]})
    with pytest.raises(MLPError, match="tiny-dot has no 'task0' MLP; it has bottom, top"):
        engine.plan("task0", dense_q)
    with pytest.raises(MLPError, match="Split 3 is not one of the engine's splits"):
        EngineModel(qmodel, SMALL, split=3)


def test_a_model_too_large_for_the_engine_is_refused_naming_the_buffer():
    qmodel = trained_quantised(get_model("rm-small", max_rows=50), samples=2000, test=1)[0]
    with pytest.raises(MLPError, match=r"rm-small bottom MLP on tiny split 1: The weights need \d+ words of the weight "
                                       r"memory, which has 256 \(weight_buffer_words\)"):
        EngineModel(qmodel, TINY)
