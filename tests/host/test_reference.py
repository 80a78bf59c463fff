"""The integer reference model against a direct transcription of the numeric rules in Python integers.

The transcription below reads like DESIGN.md's rules, item by item, with its own requantisation (not
rpaccel.numeric), so a slip in the vectorised reference (pair order, concatenation order, a wrong scale
broadcast) shows up as a mismatch. A planted bug proves the comparison can fail.
"""

import math
from dataclasses import replace

import numpy as np
import pytest

from rpaccel.host.models import get_model
from rpaccel.host.quant import LEVELS, QuantizationError, QuantModel, choose_multiplier, dense_thresholds
from rpaccel.host.reference import Layer

from host_fixtures import random_inputs, tiny_cat_towers, tiny_dot, tiny_wnd


def _rq(acc, m, s, relu=False):
    q = (acc * m + (1 << (s - 1))) >> s if s > 0 else acc * m
    q = max(-128, min(127, q))
    return max(q, 0) if relu else q


def golden_logits(qm, dense, ids):
    """One item at a time, Python integers only."""
    spec = qm.spec
    layers = {layer.name: layer for layer in qm.layers}
    names = [name for name, *_ in spec.layers()]
    out = []
    for n in range(len(dense)):

        def fc(layer, x):
            w, b = layer.weights.T.tolist(), layer.bias.tolist()  # one row of K weights per output
            accs = [sum(wi * xi for wi, xi in zip(row, x)) + bi for row, bi in zip(w, b)]
            return accs if layer.raw else [_rq(a, layer.m, layer.s, layer.relu) for a in accs]

        x = [int(v) for v in dense[n]]
        for name in names:
            if name.startswith("bottom"):
                x = fc(layers[name], x)
        pooled = []
        for t in range(spec.num_tables):
            base = sum(spec.tables[:t])
            sums = [0] * spec.emb_dim
            for i in np.atleast_1d(ids[n, t]).tolist():
                sums = [a + int(v) for a, v in zip(sums, qm.emb[base + i])]
            pooled.append([_rq(a, int(qm.pool_m[t]), int(qm.pool_s[t])) for a in sums])
        if spec.interaction == "dot":
            vectors = [x, *pooled]
            pairs = [_rq(sum(a * b for a, b in zip(vectors[i], vectors[j])), qm.inter_m, qm.inter_s)
                     for i in range(len(vectors)) for j in range(i + 1, len(vectors))]
            x = x + pairs
        else:
            x = x + [v for p in pooled for v in p]
        for name in names:
            if name.startswith("top"):
                x = fc(layers[name], x)
        if spec.tasks:
            logits = []
            for task in range(spec.tasks):
                y = x
                for name in names:
                    if name.startswith(f"task{task}."):
                        y = fc(layers[name], y)
                logits.append(y[0])
            out.append(logits)
        else:
            out.append(x[0])
    return np.array(out, dtype=np.int64)


def random_qmodel(spec, rng):
    """A QuantModel with random int8 parameters and (m, s) that keep outputs mostly unsaturated."""

    def ms(k):
        m = int(rng.integers(16384, 65536))
        return m, round(math.log2(m * 50 * math.sqrt(k) * 60 / 60))

    layers = []
    for name, k, n, relu in spec.layers():
        raw = not relu and (name.startswith("task") or not spec.tasks)
        m, s = (0, 0) if raw else ms(k)
        layers.append(Layer(rng.integers(-127, 128, (k, n)).astype(np.int8), rng.integers(-(1 << 14), 1 << 14, n),
                            m, s, relu, raw, name))
    pool_m, pool_s = zip(*[(int(rng.integers(16384, 65536)), 15 + spec.pooling // 2) for _ in spec.tables])
    inter_m, inter_s = ms(spec.emb_dim)
    thresholds = np.stack([dense_thresholds(0.05) for _ in range(spec.dense)]) if spec.dense \
        else np.zeros((0, LEVELS), np.int64)
    emb = rng.integers(-127, 128, (sum(spec.tables), spec.emb_dim)).astype(np.int8)
    return QuantModel(spec, thresholds, np.full(spec.dense, 0.05), emb, pool_m, pool_s, inter_m, inter_s, layers)


SPECS = [tiny_dot(), tiny_cat_towers(), tiny_wnd(), tiny_dot(pooling=3), get_model("rm-small", max_rows=50)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-p{s.pooling}")
def test_reference_matches_the_rules_item_by_item(spec):
    rng = np.random.default_rng(7)
    qm = random_qmodel(spec, rng)
    dense, ids = random_inputs(spec, 24 if spec.num_tables < 10 else 6, rng)
    logits, trace = qm.logits(dense, ids, trace=True)
    expected = golden_logits(qm, dense, ids if spec.pooling > 1 else ids[:, :, 0])
    assert np.array_equal(logits, expected)
    assert logits.shape == ((len(dense), spec.tasks) if spec.tasks else (len(dense),))
    # The steps are not trivially saturated, and the trace exposes each block's integers.
    assert len(np.unique(trace["pooled"])) > 20 and 0 < (np.abs(trace["pooled"]) == 127).mean() < 0.3
    assert trace["pooled_acc"].shape == (len(dense), spec.num_tables, spec.emb_dim)
    if spec.interaction == "dot":
        assert trace["pairs"].shape == (len(dense), spec.num_pairs)
        assert len(np.unique(trace["pairs"])) > 20
    assert np.array_equal(trace["logits"], logits)


def test_a_planted_bug_is_caught():
    spec = tiny_dot()
    rng = np.random.default_rng(8)
    qm = random_qmodel(spec, rng)
    dense, ids = random_inputs(spec, 40, rng)
    expected = golden_logits(qm, dense, ids[:, :, 0])
    assert np.array_equal(qm.logits(dense, ids), expected)
    qm.pool_s[2] -= 1  # one table's shift off by one
    assert not np.array_equal(qm.logits(dense, ids), expected)
    qm.pool_s[2] += 1
    used = ids[0, 0, 0]
    qm.emb[[used, used + 1 - 2 * (used == 39)]] = qm.emb[[used + 1 - 2 * (used == 39), used]]  # two rows swapped
    assert not np.array_equal(qm.logits(dense, ids), expected)


def test_bad_inputs_and_parameters_are_refused():
    spec = tiny_dot()
    rng = np.random.default_rng(9)
    qm = random_qmodel(spec, rng)
    dense, ids = random_inputs(spec, 4, rng)
    ids[2, 1, 0] = spec.tables[1]
    with pytest.raises(ValueError, match=r"id 30 of item 2, table 1 is outside \[0, 30\)"):
        qm.logits(dense, ids)
    with pytest.raises(OverflowError, match="dense input holds 128"):
        qm.logits(np.full((1, 3), 128), ids[:1] * 0)
    with pytest.raises(ValueError, match=r"dense inputs must have shape \(n, 3\)"):
        qm.logits(np.zeros((1, 4), int), ids[:1] * 0)
    bottom0 = qm.layers[0]
    qm.layers[0] = replace(bottom0, bias=np.where(np.arange(8) == 5, 2**31 - 100, bottom0.bias))
    with pytest.raises(QuantizationError, match="bottom0: the accumulator of output 5 could reach .* outside int32"):
        qm.validate()
    qm.layers[0] = replace(bottom0, raw=True)
    with pytest.raises(QuantizationError, match="layer bottom0: relu must be True and raw False"):
        qm.validate()
    qm.layers[0] = replace(bottom0, weights=bottom0.weights.T)
    with pytest.raises(QuantizationError, match=r"do not match model tiny-dot: expected .*\('bottom0', \(3, 8\)\)"):
        qm.validate()
    qm.layers[0] = "bottom0"
    with pytest.raises(QuantizationError, match="layers must be rpaccel.host.reference.Layer records, not str"):
        qm.validate()


def test_choose_multiplier():
    for ratio in (1e-9, 3.3e-5, 0.0123, 0.5, 1.0, 7.77, 60000.0):
        m, s = choose_multiplier(ratio)
        assert 0 < m <= 65535 and 0 <= s <= 63
        assert m / 2**s == pytest.approx(ratio, rel=2e-5)
        assert s == 0 or round(ratio * 2 ** (s + 1)) > 65535 or s == 63  # the largest usable shift
    assert choose_multiplier(0.0) == (0, 0)
    assert choose_multiplier(1e6) == (65535, 0)
    with pytest.raises(QuantizationError):
        choose_multiplier(float("nan"))


def test_dense_thresholds_quantise_log1p_with_integers_only():
    scale = 0.083
    thresholds = dense_thresholds(scale)
    x = np.arange(0, 200_000)
    q = np.searchsorted(thresholds, x, side="right")
    expected = np.clip(np.floor(np.log1p(x) / scale + 0.5), 0, 127)
    assert np.array_equal(q, expected)
    assert np.all(np.diff(thresholds) >= 0)
