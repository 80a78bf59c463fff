"""Tiny models and data shared by the host tests (kept small: the whole host suite runs in about a minute)."""

import numpy as np

from rpaccel.host.data import SyntheticConfig, SyntheticCriteo
from rpaccel.host.models import ModelSpec

TINY_ROWS = (40, 30, 20, 12)


def tiny_dot(**changes):
    base = {"name": "tiny-dot", "source": "test", "dense": 3, "bottom": (8, 4), "tables": TINY_ROWS,
            "emb_dim": 4, "pooling": 1, "interaction": "dot", "top": (8, 1)}
    return ModelSpec(**{**base, **changes})


def tiny_cat_towers(**changes):
    base = {"name": "tiny-cat", "source": "test", "dense": 3, "bottom": (6,), "tables": TINY_ROWS, "emb_dim": 3,
            "pooling": 2, "interaction": "cat", "top": (7, 5), "tasks": 2, "tower": (4, 1)}
    return ModelSpec(**{**base, **changes})


def tiny_wnd(**changes):
    base = {"name": "tiny-wnd", "source": "test", "dense": 3, "bottom": (), "tables": TINY_ROWS, "emb_dim": 2,
            "pooling": 1, "interaction": "cat", "top": (6, 1)}
    return ModelSpec(**{**base, **changes})


def tiny_data(spec, n, start=0, seed=3, **kwargs):
    config = SyntheticConfig(dense=spec.dense, rows=spec.tables, pooling=spec.pooling, latent=8, seed=seed,
                             **kwargs)
    return SyntheticCriteo(config).generate(n, start)


def random_inputs(spec, n, rng):
    dense = rng.integers(-128, 128, (n, spec.dense))
    ids = np.stack([rng.integers(0, rows, (n, spec.pooling)) for rows in spec.tables], axis=1)
    return dense, ids


def quantised(spec, samples=1500, calibration=800):
    """``spec`` trained for one epoch on ``samples`` of its tiny data and quantised on the first ``calibration``."""
    from rpaccel.host.data import preprocess
    from rpaccel.host.quant import quantize
    from rpaccel.host.train import TrainConfig, train

    records = tiny_data(spec, samples)
    model, _ = train(spec, *preprocess(records, spec), records.labels,
                     TrainConfig(epochs=1, batch=256, lr=3e-3, emb_lr=2e-2, seed=1))
    return quantize(model, records.take(slice(0, calibration)))


def trained_dot_pair():
    """Two small trained, quantised ``dot`` models of tiny's sizes (``tiny_dot`` and a narrower variant), as the
    chip's functional and timed models' tests run them."""
    return [quantised(spec) for spec in (tiny_dot(), tiny_dot(name="tiny-dot-b", bottom=(6, 4), top=(5, 1)))]
