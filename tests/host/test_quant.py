"""Post-training quantisation: numeric fields in range, quality kept, deterministic files, round trips."""

import numpy as np
import pytest

from rpaccel.host.data import preprocess
from rpaccel.host.files import FileFormatError
from rpaccel.host.quality import auc
from rpaccel.host.quant import load_quantized, quantize, save_quantized
from rpaccel.host.train import TrainConfig, save_weights, train

from host_fixtures import tiny_cat_towers, tiny_data, tiny_dot, tiny_wnd


@pytest.fixture(scope="module")
def trained():
    spec = tiny_dot()
    records = tiny_data(spec, 24000)
    model, _ = train(spec, *preprocess(records, spec), records.labels,
                     TrainConfig(epochs=2, batch=256, lr=3e-3, emb_lr=2e-2, seed=4))
    return model, tiny_data(spec, 2000, start=24000), tiny_data(spec, 8000, start=26000)


def test_quantised_model_follows_the_rules_and_keeps_quality(trained):
    model, calib, test = trained
    qm = quantize(model, calib)
    assert qm.emb.dtype == np.int8 and np.abs(qm.emb.astype(int)).max() <= 127
    for layer in qm.layers:
        assert layer.weights.dtype == np.int8 and np.abs(layer.weights.astype(int)).max() == 127
        assert layer.shape == {name: (k, n) for name, k, n, _ in qm.spec.layers()}[layer.name]
        assert layer.raw == (layer.name == "top1")
        assert (layer.m, layer.s) == (0, 0) if layer.raw else (32768 <= layer.m <= 65535 and 0 < layer.s <= 63)
    assert np.all((qm.pool_m >= 32768) & (qm.pool_m <= 65535)) and 32768 <= qm.inter_m <= 65535
    dense_q, ids = qm.inputs(test)
    assert dense_q.min() >= 0 and dense_q.max() <= 127 and np.all(dense_q[test.dense_missing] == 0)
    logits, trace = qm.logits(dense_q, ids, trace=True)
    assert logits.dtype == np.int64 and np.abs(logits).max() < 2**31
    # Calibrated scales use the int8 range without saturating much.
    for key in ("bottom0", "pooled", "pairs", "top0"):
        values = np.abs(trace[key])
        assert values.max() >= 100 and (values == 127).mean() < 0.01, key
    float_auc = auc(model.predict(*preprocess(test, model.spec)), test.labels)
    assert float_auc > 0.7
    assert auc(logits, test.labels) == pytest.approx(float_auc, abs=0.01)


@pytest.mark.parametrize("make", [tiny_cat_towers, tiny_wnd])
def test_cat_models_quantise(make):
    spec = make()
    records = tiny_data(spec, 6000)
    model, _ = train(spec, *preprocess(records, spec), records.labels, TrainConfig(batch=256, lr=3e-3, emb_lr=2e-2))
    qm = quantize(model, records.take(slice(0, 2000)))
    logits = qm.logits_from_records(records)
    assert logits.shape == ((6000, spec.tasks) if spec.tasks else (6000,))
    scores = model.predict(*preprocess(records, spec))
    float_scores, int_scores = (scores[:, 0], logits[:, 0]) if spec.tasks else (scores, logits)
    assert np.corrcoef(float_scores, int_scores)[0, 1] > 0.98


def test_files_are_deterministic_and_round_trip(tmp_path, trained):
    model, calib, test = trained
    save_quantized(tmp_path / "a.q.npz", quantize(model, calib), {"x": 1})
    save_quantized(tmp_path / "b.q.npz", quantize(model, calib), {"x": 1})
    assert (tmp_path / "a.q.npz").read_bytes() == (tmp_path / "b.q.npz").read_bytes()
    loaded, meta = load_quantized(tmp_path / "a.q.npz")
    assert meta["x"] == 1 and "scales" in meta
    assert np.array_equal(loaded.logits_from_records(test), quantize(model, calib).logits_from_records(test))
    with np.load(tmp_path / "a.q.npz") as archive:
        assert archive["top0.w"].dtype == np.int8 and archive["top0.b"].dtype == np.int32
        # Files keep the output-major (N, K) orientation of the float weights file; in memory a layer is K x N.
        assert archive["top0.w"].shape == (8, 14)
        assert np.array_equal(archive["top0.w"].T, loaded.layer("top0").weights)
    save_weights(tmp_path / "w.npz", model)
    with pytest.raises(FileFormatError, match=r"w\.npz: not a quantised model file"):
        load_quantized(tmp_path / "w.npz")
    with pytest.raises(FileFormatError, match=r"none\.npz: no such quantised model file"):
        load_quantized(tmp_path / "none.npz")
