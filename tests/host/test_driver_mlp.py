"""MLP golden model and host-side layout: numeric rules, clear errors, weight images, command streams."""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import Const
from configs import SMALL16

from rpaccel.config import ConfigError
from rpaccel.host.driver.codec import pack, to_ints, unpack
from rpaccel.host.driver.mlp import (
    chunk_limit,
    layout_weights,
    payload_shapes,
    plan_engine,
    plan_lane,
)
from rpaccel.host.reference import Layer, MLPError, check_mlp, mlp_forward
from rpaccel.numeric import INT32_MAX, postprocess
from rpaccel.rtl.mlp import EngineGeometry, MLPCommand, Op
from rpaccel.sim.golden.mlp import random_input, random_mlp

# The layout arithmetic below is worked out by hand for a 16 x 16 array of 4 x 4 blocks (the small preset before
# it became 16 x 8), so these tests pin that geometry rather than follow the preset.
SMALL = EngineGeometry(replace(SMALL16, name="16x16", array_cols=16, weight_buffer_words=12288,
                               act_buffer_words=4096))


def layer(k, n, *, fill=1, bias=0, m=1, s=0, relu=False, raw=False):
    return Layer(weights=np.full((k, n), fill), bias=np.full(n, bias), m=m, s=s, relu=relu, raw=raw)


def test_forward_follows_the_numeric_rules():
    rng = np.random.default_rng(1)
    layers = random_mlp(rng, [7, 5, 3])
    x = random_input(rng, 9, 7)
    hidden = postprocess(x @ layers[0].weights, layers[0].bias, layers[0].m, layers[0].s, layers[0].relu)
    expected = postprocess(hidden @ layers[1].weights, layers[1].bias, layers[1].m, layers[1].s, raw=True)
    assert np.array_equal(mlp_forward(layers, x), expected)
    assert layers[-1].raw and not layers[0].raw


def test_random_mlps_exercise_requantisation():
    # The (m, s) chosen for random layers put activations across the int8 range, not all at 0 or clamped.
    rng = np.random.default_rng(2)
    layers = random_mlp(rng, [64, 64, 8], raw_last=False, relu=False)
    y = mlp_forward(layers[:1], random_input(rng, 200, 64))
    assert np.mean(np.abs(y) < 127) > 0.2 and np.unique(y).size > 60


@pytest.mark.parametrize(("layers", "message"), [
    ([], "at least one layer"),
    ([layer(3, 4), layer(5, 2)], "layer 1 takes 5 inputs but layer 0 gives 4"),
    ([layer(3, 4, raw=True), layer(4, 2)], "layer 0 outputs raw int32 but is not the last layer"),
    ([layer(3, 4, fill=128)], r"layer 0: layer 0 weights holds 128, outside \[-128, 127\]"),
    ([layer(3, 4, m=1 << 16)], "Requantisation multiplier m must be an integer in"),
    ([Layer(np.ones((3, 4)), np.zeros(3), 1, 0)], "bias must have 4 elements"),
    ([layer(131072, 1, fill=-128)], r"accumulator of output 0 could reach 2147483648 .* outside int32"),
    ([layer(2, 1, bias=INT32_MAX - 255)], "could reach 2147483648"),
])
def test_invalid_mlps_are_refused(layers, message):
    with pytest.raises(MLPError, match=message):
        check_mlp(layers)


def test_accumulator_bound_is_tight():
    # |bias| + 128 * sum |w| up to 2**31 - 1 is allowed, one more is not.
    check_mlp([layer(2, 1, fill=-128, bias=INT32_MAX - 2 * 128 * 128)])
    with pytest.raises(MLPError, match="outside int32"):
        check_mlp([layer(2, 1, fill=-128, bias=INT32_MAX - 2 * 128 * 128 + 1)])


def test_inputs_are_checked():
    with pytest.raises(MLPError, match="Inputs must be an items x 3 matrix"):
        mlp_forward([layer(3, 2)], np.zeros((4, 2)))
    with pytest.raises(MLPError, match="inputs holds 300"):
        mlp_forward([layer(3, 2)], np.full((4, 3), 300))


def test_weight_layout_of_a_partial_tile():
    # Split 2 of the small array: 16 x 8 sub-arrays, two 8-weight rows per 16-byte word, bias in two words.
    w = np.arange(20 * 10).reshape(20, 10) % 251 - 125
    image = layout_weights(SMALL, 2, {"a": [Layer(w, np.arange(10) * 1000 - 3000, 5, 3)]}, base=7)
    shape = SMALL.splits[2]
    assert image.bases == {"a": (7,)}
    per_ntile = shape.bias_words + 2 * shape.tile_words  # two k-tiles
    assert image.words.shape == (2 * per_ntile, 16)
    bias = np.frombuffer(image.words[:2].astype(np.int8).tobytes(), dtype="<i4")
    assert list(bias) == [v * 1000 - 3000 for v in range(8)]
    first_tile = image.words[2:2 + shape.tile_words].reshape(16, 8)
    assert np.array_equal(first_tile, w[:16, :8])
    second_tile = image.words[2 + shape.tile_words:per_ntile].reshape(16, 8)
    assert np.array_equal(second_tile[:4], w[16:, :8]) and not second_tile[4:].any()
    last_ntile_bias = np.frombuffer(image.words[per_ntile:per_ntile + 2].astype(np.int8).tobytes(), dtype="<i4")
    assert list(last_ntile_bias) == [8000 - 3000, 9000 - 3000, 0, 0, 0, 0, 0, 0]


def test_image_must_fit_the_weight_memory():
    # A 256 x 256 layer: 16 n-tiles of (4 bias words + 16 k-tiles of 16 words).
    big = random_mlp(np.random.default_rng(3), [256, 256, 256, 256], raw_last=False)
    with pytest.raises(MLPError, match="need 12480 words of the weight memory, which has 12288"):
        layout_weights(SMALL, 1, {"big": big})
    assert len(layout_weights(SMALL, 1, {"fits": big[:2]}).words) == 2 * 16 * (4 + 16 * 16)


def test_chunks_follow_the_buffers():
    rm_large = random_mlp(np.random.default_rng(5), [13, 512, 256, 128, 64, 32])
    # Per item: 2 x 1 input words, 32 (layer 1 out) and 16 (layer 2 out) hidden words of 16 bytes.
    assert chunk_limit(SMALL, 1, rm_large) == min(64, 4096 // 50)
    assert chunk_limit(SMALL, 4, rm_large) == 2048 // (2 * 2 + 64 + 32)
    wide = [layer(4000, 2)]
    with pytest.raises(MLPError, match="One item needs 2250 activation words per lane in split 4"):
        chunk_limit(SMALL, 4, [layer(9000, 2)])
    assert chunk_limit(SMALL, 1, wide) == min(64, 4096 // 500)


def test_command_stream_of_a_chunked_batch():
    layers = random_mlp(np.random.default_rng(6), [20, 40, 3])
    x = random_input(np.random.default_rng(7), 10, 20)
    program = plan_lane(SMALL, 1, 0, layers, x, (100, 200), chunk=4)
    ops = [(c["op"], c["items"]) for c in program.commands]
    # Three chunks of at most 4 items, as even as possible (a short last chunk would waste cycles).
    assert ops == [(Op.INPUT, 4), (Op.LAYER, 4), (Op.LAYER, 4), (Op.INPUT, 3), (Op.LAYER, 3), (Op.LAYER, 3),
                   (Op.INPUT, 3), (Op.LAYER, 3), (Op.LAYER, 3)]
    inputs = [c for c in program.commands if c["op"] == Op.INPUT]
    assert [c["in_base"] for c in inputs] == [0, 8, 0]         # two input regions, 2 words per item
    assert [c["wait_layers"] for c in inputs] == [0, 0, 1]      # chunk 2 reuses chunk 0's region
    layer_cmds = [c for c in program.commands if c["op"] == Op.LAYER]
    assert [c["wait_layers"] for c in layer_cmds] == [0, 1, 0, 3, 2, 5]
    assert [c["wait_inputs"] for c in layer_cmds] == [1, 1, 2, 2, 3, 3]
    assert [c["w_base"] for c in layer_cmds[:2]] == [100, 200]
    assert [c["to_output"] for c in layer_cmds[:2]] == [0, 1]
    assert layer_cmds[0]["params"]["m"] == layers[0].m and layer_cmds[1]["params"]["raw"] == 1
    # Input words are item-major per chunk: item 0's two words, then item 1's.
    assert np.array_equal(program.inputs[0:8:2, :16], x[:4, :16])
    assert np.array_equal(program.inputs[1:8:2, :4], x[:4, 16:]) and not program.inputs[1:8:2, 4:].any()
    assert program.outputs == 10 and program.macs == 10 * (20 * 40 + 40 * 3)
    # Every command packs into the hardware layout and back.
    for command in program.commands:
        assert unpack(MLPCommand, pack(MLPCommand, command)) == command


def test_decode_reorders_ntile_major_outputs():
    layers = [layer(3, 20, raw=True)]
    program = plan_lane(SMALL, 1, 0, layers, np.zeros((5, 3), dtype=int), (0,), chunk=3)
    assert program.chunks == [(0, 3), (3, 2)]
    # Chunk 0: 3 items x 2 n-tiles, then chunk 1: 2 items x 2 n-tiles; value = 1000 * item + feature.
    words = []
    for start, items in program.chunks:
        for nt in range(2):
            for i in range(items):
                words.append([1000 * (start + i) + nt * 16 + c for c in range(16)])
    out = program.decode(np.array(words))
    assert np.array_equal(out, 1000 * np.arange(5)[:, None] + np.arange(20)[None, :])


def test_plan_errors():
    layers = random_mlp(np.random.default_rng(8), [5, 3])
    with pytest.raises(MLPError, match="Split 3 is not one of the engine's splits"):
        plan_engine(SMALL16, 3, {0: (layers, np.zeros((2, 5), dtype=int))})
    with pytest.raises(MLPError, match="Lane 2 does not exist in split 2"):
        plan_lane(SMALL, 2, 2, layers, np.zeros((2, 5), dtype=int), (0,))
    with pytest.raises(MLPError, match="Chunk must be between 1 and 64"):
        plan_lane(SMALL, 1, 0, layers, np.zeros((2, 5), dtype=int), (0,), chunk=65)
    with pytest.raises(MLPError, match="The batch has no items"):
        plan_lane(SMALL, 1, 0, layers, np.zeros((0, 5), dtype=int), (0,))


def test_plan_words_follow_the_engine_layouts():
    # Every packed word of a two-lane plan equals the scalar packing (the oracle) of the value it stands for.
    layers = random_mlp(np.random.default_rng(9), [20, 12, 5])
    x = random_input(np.random.default_rng(10), 6, 20)
    plan = plan_engine(SMALL16, 2, {0: (layers, x), 1: (layers, x[:3])})
    shapes = payload_shapes(plan.geometry)
    inputs = plan.player_inputs()
    image = plan.weights
    assert inputs["wload"] == [const_bits(shapes["wload"], {"addr": image.base + i, "data": word.tolist()})
                               for i, word in enumerate(image.words)]
    for lane, program in plan.lanes.items():
        assert inputs[f"cmd{lane}"] == [const_bits(MLPCommand, c) for c in program.commands]
        rows = plan.geometry.lane_rows(lane)
        padded = [list(word) + [0] * (rows - len(word)) for word in program.inputs.tolist()]
        assert inputs[f"act{lane}"] == [const_bits(shapes[f"act{lane}"], word) for word in padded]
    # Decoding reads the int32 vectors of the out stream (as packed Python ints or as words).
    vectors = {lane: np.arange(program.outputs * program.lane_cols).reshape(program.outputs, -1) * -99_991
               for lane, program in plan.lanes.items()}
    decoded = plan.decode({f"out{lane}": [const_bits(shapes[f"out{lane}"], v) for v in vectors[lane].tolist()]
                           for lane in plan.lanes})
    for lane, program in plan.lanes.items():
        assert np.array_equal(decoded[lane], program.decode(vectors[lane]))
    words = plan.words()
    assert {port: to_ints(w) for port, w in words.items()} == inputs


def test_commands_are_checked_against_their_layout():
    with pytest.raises(MLPError, match=r"Command field w_base = 70000 does not fit unsigned\(16\)"):
        plan_lane(SMALL, 1, 0, [layer(4, 4)], np.zeros((2, 4), dtype=int), (70000,))


def test_engine_geometry_errors():
    with pytest.raises(ConfigError, match="rows are a multiple of their columns"):
        EngineGeometry(replace(SMALL16, array_rows=8, array_cols=16, splits=(1,)))
    with pytest.raises(ConfigError, match="act_buffer_words must split into 4 power-of-two slices"):
        EngineGeometry(replace(SMALL16, act_buffer_words=3000))
    with pytest.raises(ConfigError, match="acc_buffer_words must be a positive integer"):
        replace(SMALL16, acc_buffer_words=0)


def const_bits(shape, value):
    """The bits of Amaranth's own constant of ``value`` (the oracle of the packed words)."""
    return Const.cast(shape.const(value)).value
