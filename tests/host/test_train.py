"""Float training: hand-written gradients against finite differences, learning, byte-identical weights."""

import numpy as np
import pytest

from rpaccel.host.data import preprocess
from rpaccel.host.files import FileFormatError
from rpaccel.host.models import ModelError, get_model
from rpaccel.host.quality import auc
from rpaccel.host.quant import quantize
from rpaccel.host.train import FloatModel, TrainConfig, TrainingDiverged, load_weights, save_weights, train

from host_fixtures import tiny_cat_towers, tiny_data, tiny_dot, tiny_wnd


@pytest.mark.parametrize("make", [tiny_dot, tiny_cat_towers, tiny_wnd])
def test_gradients_match_finite_differences(make):
    spec = make()
    rng = np.random.default_rng(0)
    model = FloatModel.initial(spec, seed=1, dtype=np.float64)
    for name in model.params:  # move off the initial point so ReLUs are mixed
        model.params[name] += rng.normal(0, 0.3, model.params[name].shape)
    n = 16
    dense = rng.normal(0, 1, (n, spec.dense))
    ids = np.stack([rng.integers(0, r, (n, spec.pooling)) for r in spec.tables], axis=1)
    labels = rng.integers(0, 2, n)
    _loss, grads, rows, row_grads = model.loss_and_grads(dense, ids, labels)
    emb_grad = np.zeros_like(model.params["emb"])
    np.add.at(emb_grad, rows, row_grads)
    grads["emb"] = emb_grad
    eps = 1e-6
    checked = 0
    for name, value in model.params.items():
        flat = value.reshape(-1)
        candidates = np.flatnonzero(grads[name].reshape(-1)) if name == "emb" else np.arange(flat.size)
        for i in rng.choice(candidates, size=min(4, len(candidates)), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = model.loss_and_grads(dense, ids, labels)[0]
            flat[i] = old - eps
            down = model.loss_and_grads(dense, ids, labels)[0]
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            assert grads[name].reshape(-1)[i] == pytest.approx(numeric, rel=1e-4, abs=1e-8), (name, i)
            checked += 1
    assert checked > 12


def test_training_learns_and_is_byte_identical(tmp_path):
    spec = tiny_dot()
    records = tiny_data(spec, 24000)
    test = tiny_data(spec, 6000, start=24000)
    dense, ids = preprocess(records, spec)
    config = TrainConfig(epochs=2, batch=256, lr=3e-3, emb_lr=2e-2, seed=4)
    model, history = train(spec, dense, ids, records.labels, config)
    assert history[1] < history[0]
    scores = model.predict(*preprocess(test, spec))
    assert auc(scores, test.labels) > 0.7
    save_weights(tmp_path / "a.npz", model, {"note": "x"})
    again, _ = train(spec, dense, ids, records.labels, config)
    save_weights(tmp_path / "b.npz", again, {"note": "x"})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded, meta = load_weights(tmp_path / "a.npz")
    assert meta == {"note": "x"} and loaded.spec == spec
    assert np.array_equal(loaded.predict(*preprocess(test, spec)), scores)
    other, _ = train(spec, dense, ids, records.labels, TrainConfig(epochs=2, batch=256, lr=3e-3, emb_lr=2e-2, seed=5))
    assert not np.array_equal(other.params["emb"], model.params["emb"])


def test_multi_task_model_trains():
    spec = tiny_cat_towers()
    records = tiny_data(spec, 4000)
    model, history = train(spec, *preprocess(records, spec), records.labels, TrainConfig(batch=128))
    assert model.predict(*preprocess(records.take(slice(0, 10)), spec)).shape == (10, 2)
    assert np.isfinite(history[0])


def test_errors(tmp_path):
    with pytest.raises(ModelError, match="specified for its costs only"):
        FloatModel.initial(get_model("din", max_rows=10))
    with pytest.raises(ValueError, match="epochs must be a positive integer, not 0"):
        TrainConfig(epochs=0)
    with pytest.raises(FileFormatError, match=r"w\.npz: no such weights file"):
        load_weights(tmp_path / "w.npz")
    (tmp_path / "bad.npz").write_text("junk")
    with pytest.raises(FileFormatError, match=r"bad\.npz: not a weights file"):
        load_weights(tmp_path / "bad.npz")
    spec = tiny_dot()
    with pytest.raises(ValueError, match="ids outside the tables"):
        train(spec, np.zeros((2, 3)), np.full((2, 4), 99), np.zeros(2))


def test_training_that_diverges_stops_and_names_where():
    spec = tiny_dot()
    records = tiny_data(spec, 2000)
    dense, ids = preprocess(records, spec)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+ of 8: the loss is nan; try a lower") as info:
        train(spec, dense, ids, records.labels, TrainConfig(batch=256, lr=1e30, emb_lr=1e30))
    assert info.value.epoch == 1 and 1 <= info.value.step <= 8 and info.value.steps == 8
    # One step whose loss is finite but whose update leaves infinite weights (float32) is caught at the epoch's end.
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step 1 of 1: parameter \S+ of tiny-dot holds \d+"):
        train(spec, dense, ids, records.labels, TrainConfig(batch=2000, lr=1e39))
    # A sane step size on the same data trains to a finite loss.
    _, history = train(spec, dense, ids, records.labels, TrainConfig(batch=256))
    assert np.isfinite(history[0])
    for value in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            TrainConfig(lr=value)


def test_non_finite_weights_are_refused_by_name(tmp_path):
    model = FloatModel.initial(tiny_dot(), seed=1)
    assert model.nonfinite() is None
    model.params["top0.w"][2, 3] = np.inf
    model.params["top0.w"][4, 0] = np.nan
    message = r"parameter top0\.w of tiny-dot holds 2 non-finite values \(first inf at \[2, 3\]\)"
    with pytest.raises(ModelError, match=message):
        model.check_finite()
    with pytest.raises(ModelError, match=message):
        quantize(model, tiny_data(model.spec, 100))
    save_weights(tmp_path / "nan.npz", model)
    with pytest.raises(FileFormatError, match=r"nan\.npz: bad weights file \(" + message):
        load_weights(tmp_path / "nan.npz")
