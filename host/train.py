"""Float training of the DLRM-family models in numpy, with hand-written backpropagation.

No deep-learning framework: the forward pass, the gradients and Adam are a few hundred lines of numpy, so the
default install stays light and a seed gives byte-identical weights (one process, one BLAS; see
``docs/host.md`` for the caveat about BLAS builds).

The model (:class:`FloatModel`) is what :mod:`rpaccel.host.models` specifies: a bottom MLP with ReLU after every
layer (or the dense inputs as they are), sum-pooled embedding lookups, the ``dot`` interaction (the bottom output
and the pooled vectors, pairwise dot products ``(i, j)`` for ``i < j`` in row-major order, concatenated after
the bottom output) or ``cat`` (bottom output, then the pooled vectors in table order), a top MLP with ReLU after
every layer but the last, and optional task towers. Loss: binary cross-entropy on the logits (every task is
trained on the sample's label). Optimiser: Adam for the layers, lazy (row-wise) Adam for the embedding rows.

Weights file (``.npz``, written deterministically by :mod:`rpaccel.host.files`):

=================  ==========================================================================================
member             content
=================  ==========================================================================================
``format``         ``"rpaccel-weights-1"``
``spec``           the :class:`~rpaccel.host.models.ModelSpec` as JSON
``meta``           JSON: training settings, data description, final loss
``emb``            float32 ``(sum(rows), dim)``: the tables stacked in order (table ``t`` starts at row
                   ``sum(rows[:t])``)
``<layer>.w``      float32 ``(N, K)`` for each layer named by ``ModelSpec.layers()`` (``bottom0``, ``top1``,
                   ``task2.0``, ...)
``<layer>.b``      float32 ``(N,)``
=================  ==========================================================================================
"""

import json
import math

import numpy as np

from .files import FileFormatError, load_arrays, save_arrays
from .models import ModelError, ModelSpec, pair_indices

__all__ = ["FloatModel", "TrainConfig", "TrainingDiverged", "load_weights", "save_weights", "train"]

WEIGHTS_FORMAT = "rpaccel-weights-1"


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class FloatModel:
    """A DLRM-family model with float parameters.

    Parameters
    ----------
    spec : ModelSpec
        The model; must be :attr:`~rpaccel.host.models.ModelSpec.trainable`.
    params : dict
        ``emb`` and ``<layer>.w``/``<layer>.b`` arrays (see the module notes).
    """

    def __init__(self, spec, params):
        if not spec.trainable:
            raise ModelError(f"model {spec.name} ({spec.interaction} interaction) is specified for its costs only; "
                             "training and the integer reference implement the dot and cat models")
        self.spec = spec
        self.params = params
        self.offsets = np.concatenate([[0], np.cumsum(spec.tables)[:-1]]).astype(np.int64)
        expected = {"emb": (sum(spec.tables), spec.emb_dim)}
        for name, k, n, _ in spec.layers():
            expected[f"{name}.w"] = (n, k)
            expected[f"{name}.b"] = (n,)
        for name, shape in expected.items():
            if name not in params:
                raise ModelError(f"parameters of {spec.name} lack {name}")
            if params[name].shape != shape:
                raise ModelError(f"parameter {name} of {spec.name} has shape {params[name].shape}, not {shape}")
        self.layer_list = spec.layers()

    @classmethod
    def initial(cls, spec, seed=0, dtype=np.float32):
        """DLRM's initialisation: tables uniform in ``+-sqrt(1/rows)``, weights normal with variance
        ``2 / (K + N)``, biases normal with variance ``1 / N``."""
        rng = np.random.default_rng([seed, 7])
        tables = [rng.uniform(-np.sqrt(1 / r), np.sqrt(1 / r), (r, spec.emb_dim)) for r in spec.tables]
        params = {"emb": np.concatenate(tables).astype(dtype)}
        for name, k, n, _ in spec.layers():
            params[f"{name}.w"] = rng.normal(0, np.sqrt(2 / (k + n)), (n, k)).astype(dtype)
            params[f"{name}.b"] = rng.normal(0, np.sqrt(1 / n), n).astype(dtype)
        return cls(spec, params)

    @property
    def dtype(self):
        return self.params["emb"].dtype

    def nonfinite(self):
        """What is not finite: the first parameter array (in name order) holding a NaN or an infinity, described
        in words, or ``None`` when every parameter is finite."""
        for name in sorted(self.params):
            values = self.params[name]
            bad = ~np.isfinite(values)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                count = int(bad.sum())
                return (f"parameter {name} of {self.spec.name} holds {count:,} non-finite value{'s' * (count > 1)} "
                        f"(first {values[first]} at {list(first)})")
        return None

    def check_finite(self):
        """Raise :class:`~rpaccel.host.models.ModelError` naming the first parameter array that is not finite (the
        mark of a training run that diverged)."""
        what = self.nonfinite()
        if what is not None:
            raise ModelError(f"{what}; a model whose training diverged cannot be used")

    def _groups(self):
        layers = self.layer_list
        bottom = [entry for entry in layers if entry[0].startswith("bottom")]
        top = [entry for entry in layers if entry[0].startswith("top")]
        towers = [[entry for entry in layers if entry[0].startswith(f"task{t}.")] for t in range(self.spec.tasks)]
        return bottom, top, towers

    def _dense_layer(self, name, x, relu, cache):
        z = x @ self.params[f"{name}.w"].T + self.params[f"{name}.b"]
        out = np.maximum(z, 0) if relu else z
        if cache is not None:
            cache[name] = (x, z > 0 if relu else None)
            cache[f"out:{name}"] = out
        return out

    def forward(self, dense, ids, cache=None):
        """Logits of a batch: ``(n,)``, or ``(n, tasks)`` for a multi-task model.

        Parameters
        ----------
        dense : array_like
            ``(n, D)`` preprocessed dense features.
        ids : array_like
            ``(n, T)`` or ``(n, T, P)`` row indices into each table.
        cache : dict, optional
            Filled with what :meth:`backward` needs, and with ``"vectors"``/``"interaction"`` (for calibration).
        """
        spec, dtype = self.spec, self.dtype
        dense = np.asarray(dense, dtype=dtype)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim == 2:
            ids = ids[:, :, None]
        bottom, top, towers = self._groups()
        h = dense
        for name, _, _, relu in bottom:
            h = self._dense_layer(name, h, relu, cache)
        gidx = ids + self.offsets[None, :, None]
        pooled = self.params["emb"][gidx].sum(axis=2)  # (n, T, d)
        n = len(dense)
        if spec.interaction == "dot":
            vectors = np.concatenate([h[:, None, :], pooled], axis=1)
            gram = vectors @ vectors.transpose(0, 2, 1)
            iu, ju = pair_indices(spec.num_vectors)
            pairs = gram[:, iu, ju]
            x = np.concatenate([h, pairs], axis=1)
            if cache is not None:
                cache["vectors"], cache["pairs"] = vectors, pairs
        else:
            x = np.concatenate([h, pooled.reshape(n, -1)], axis=1)
            if cache is not None:
                cache["pooled"] = pooled
        if cache is not None:
            cache["gidx"], cache["bottom_out"], cache["interaction"] = gidx, h, x
        for name, _, _, relu in top:
            x = self._dense_layer(name, x, relu, cache)
        if not towers:
            return x[:, 0]
        outs = []
        for tower in towers:
            y = x
            for name, _, _, relu in tower:
                y = self._dense_layer(name, y, relu, cache)
            outs.append(y[:, 0])
        return np.stack(outs, axis=1)

    def _dense_back(self, cache, name, dy, grads):
        x, mask = cache[name]
        if mask is not None:
            dy = dy * mask
        grads[f"{name}.w"] = dy.T @ x
        grads[f"{name}.b"] = dy.sum(axis=0)
        return dy @ self.params[f"{name}.w"]

    def backward(self, cache, dlogits):
        """Gradients of a loss whose gradient with respect to the logits is ``dlogits``.

        Returns
        -------
        grads : dict
            ``<layer>.w``/``<layer>.b`` gradients.
        rows, row_grads : numpy.ndarray
            Embedding rows touched (flat indices into ``emb``, with repeats) and the gradient of each lookup.
        """
        spec = self.spec
        bottom, top, towers = self._groups()
        grads = {}
        if towers:
            dx = 0
            for t, tower in enumerate(towers):
                dy = dlogits[:, t:t + 1]
                for name, _, _, _ in reversed(tower):
                    dy = self._dense_back(cache, name, dy, grads)
                dx = dx + dy
        else:
            dx = dlogits[:, None]
        for name, _, _, _ in reversed(top):
            dx = self._dense_back(cache, name, dx, grads)
        width = cache["bottom_out"].shape[1]
        dh = dx[:, :width]
        if spec.interaction == "dot":
            vectors = cache["vectors"]
            nvec = spec.num_vectors
            dgram = np.zeros((len(dx), nvec, nvec), dtype=dx.dtype)
            iu, ju = pair_indices(nvec)
            dgram[:, iu, ju] = dx[:, width:]
            dvectors = (dgram + dgram.transpose(0, 2, 1)) @ vectors
            dh = dh + dvectors[:, 0]
            dpooled = dvectors[:, 1:]
        else:
            dpooled = dx[:, width:].reshape(len(dx), spec.num_tables, spec.emb_dim)
        for name, _, _, _ in reversed(bottom):
            dh = self._dense_back(cache, name, dh, grads)
        gidx = cache["gidx"]
        row_grads = np.broadcast_to(dpooled[:, :, None, :], (*gidx.shape, spec.emb_dim))
        return grads, gidx.reshape(-1), row_grads.reshape(-1, spec.emb_dim)

    def loss_and_grads(self, dense, ids, labels):
        """Mean binary cross-entropy of a batch and its gradients (see :meth:`backward`)."""
        cache = {}
        logits = self.forward(dense, ids, cache)
        y = np.asarray(labels, dtype=logits.dtype)
        if logits.ndim == 2:
            y = np.broadcast_to(y[:, None], logits.shape)
        loss = float(np.mean(np.logaddexp(0, logits) - y * logits))
        dlogits = (_sigmoid(logits) - y) / logits.size
        return loss, *self.backward(cache, dlogits)

    def predict(self, dense, ids, batch=8192):
        """Logits in batches (float64 results of the float model)."""
        outs = [self.forward(dense[i:i + batch], ids[i:i + batch]) for i in range(0, len(dense), batch)]
        return np.concatenate(outs)


class TrainingDiverged(ArithmeticError):
    """Training produced a non-finite loss or non-finite parameters.

    Attributes
    ----------
    epoch, step : int
        Where it happened (1-based; ``step`` counts the batches of the epoch, of ``steps``).
    steps : int
        Batches per epoch.
    what : str
        What was found (``"the loss is nan"``, ``"parameter top0.w holds ..."``).
    """

    def __init__(self, epoch, step, steps, what):
        self.epoch, self.step, self.steps, self.what = epoch, step, steps, what
        super().__init__(f"training diverged at epoch {epoch}, step {step} of {steps}: {what}; "
                         "try a lower learning rate")


class TrainConfig:
    """Training settings (all have defaults that train the zoo's Criteo models well on the synthetic data).

    Parameters
    ----------
    epochs : int
    batch : int
        Samples per step.
    lr : float
        Adam step size of the layers.
    emb_lr : float
        Adam step size of the embedding rows.
    seed : int
        Seed of the initial weights and of the sample order.
    """

    def __init__(self, epochs=1, batch=1024, lr=1e-3, emb_lr=5e-3, seed=0):
        for name, value in (("epochs", epochs), ("batch", batch)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name, value in (("lr", lr), ("emb_lr", emb_lr)):
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive finite number, not {value!r}")
        self.epochs, self.batch, self.lr, self.emb_lr, self.seed = epochs, batch, float(lr), float(emb_lr), seed

    def describe(self):
        return {"epochs": self.epochs, "batch": self.batch, "lr": self.lr, "emb_lr": self.emb_lr, "seed": self.seed}


class _Adam:
    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads, lr, emb_rows, emb_grads, emb_lr):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, g in grads.items():
            m, v = self.m[name], self.v[name]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            params[name] -= (lr / c1) * m / (np.sqrt(v / c2) + self.eps)
        # Lazy Adam on the rows this batch touched.
        rows, inverse = np.unique(emb_rows, return_inverse=True)
        g = np.zeros((len(rows), emb_grads.shape[1]), dtype=emb_grads.dtype)
        np.add.at(g, inverse, emb_grads)
        m, v, emb = self.m["emb"], self.v["emb"], params["emb"]
        m_rows = b1 * m[rows] + (1 - b1) * g
        v_rows = b2 * v[rows] + (1 - b2) * g * g
        m[rows], v[rows] = m_rows, v_rows
        emb[rows] -= (emb_lr / c1) * m_rows / (np.sqrt(v_rows / c2) + self.eps)


def train(spec, dense, ids, labels, config=None, *, progress=None):
    """Train ``spec`` on preprocessed data (see :func:`rpaccel.host.data.preprocess`).

    Returns
    -------
    model : FloatModel
    history : list of float
        Mean training loss of each epoch.

    Raises
    ------
    TrainingDiverged
        As soon as a batch's loss is not finite, or when an epoch leaves a parameter that is not.
    """
    config = config or TrainConfig()
    model = FloatModel.initial(spec, config.seed)
    dense = np.asarray(dense, dtype=model.dtype)
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels)
    if not len(dense) == len(ids) == len(labels) or len(labels) == 0:
        raise ValueError(f"dense, ids and labels must have the same non-zero length, not {len(dense)}, "
                         f"{len(ids)}, {len(labels)}")
    rows = np.asarray(spec.tables)[None, :] if ids.ndim == 2 else np.asarray(spec.tables)[None, :, None]
    if ids.min() < 0 or np.any(ids >= rows):
        raise ValueError(f"ids outside the tables of {spec.name}")
    opt = _Adam(dict(model.params.items()))
    history = []
    steps = -(-len(labels) // config.batch)
    for epoch in range(config.epochs):
        order = np.random.default_rng([config.seed, 11, epoch]).permutation(len(labels))
        total, count = 0.0, 0
        for step, start in enumerate(range(0, len(order), config.batch), start=1):
            idx = np.sort(order[start:start + config.batch])
            # Overflow on the way to a non-finite loss is reported below, once, as TrainingDiverged.
            with np.errstate(over="ignore", invalid="ignore"):
                loss, grads, emb_rows, emb_grads = model.loss_and_grads(dense[idx], ids[idx], labels[idx])
                if not np.isfinite(loss):
                    raise TrainingDiverged(epoch + 1, step, steps, f"the loss is {loss}")
                opt.step(model.params, grads, config.lr, emb_rows, emb_grads, config.emb_lr)
            total += loss * len(idx)
            count += len(idx)
            if progress is not None:
                progress.update(len(idx), epoch=epoch + 1, loss=total / count)
        what = model.nonfinite()
        if what is not None:
            raise TrainingDiverged(epoch + 1, steps, steps, what)
        history.append(total / count)
    return model, history


def save_weights(path, model, meta=None):
    """Write a weights file (see the module notes)."""
    arrays = {"format": WEIGHTS_FORMAT, "spec": model.spec.to_json(), "meta": json.dumps(meta or {}, sort_keys=True)}
    arrays.update({k: v.astype(np.float32) for k, v in model.params.items()})
    return save_arrays(path, arrays)


def load_weights(path):
    """Read a weights file: ``(FloatModel, meta)``.

    Raises
    ------
    FileFormatError
        If the file is missing, not a weights file, or holds a parameter that is not finite.
    """
    arrays = load_arrays(path, kind="weights file", required=("format", "spec", "emb"))
    if arrays["format"] != WEIGHTS_FORMAT:
        raise FileFormatError(f"{path}: not a weights file (format {arrays['format']!r})")
    try:
        spec = ModelSpec.from_json(arrays["spec"])
        params = {k: v for k, v in arrays.items() if k not in ("format", "spec", "meta")}
        model = FloatModel(spec, params)
        model.check_finite()
    except ModelError as error:
        raise FileFormatError(f"{path}: bad weights file ({error})") from None
    return model, json.loads(arrays.get("meta", "{}"))
