"""Post-training int8 quantisation of the DLRM-family models, calibrated on data.

The result, a :class:`QuantModel`, holds exactly what the accelerator holds -- int8 weights and embedding rows,
int32 biases, per-layer and per-table requantisation ``(m, s)`` -- plus the host-side dense quantiser, and
computes the exact int32 logits of a batch with :mod:`rpaccel.host.reference` (the RTL's specification). The
model-level decisions (written in ``docs/numerics.md`` and ``docs/host.md``):

* **Dense inputs** are quantised on the host: ``q = clamp(round(log(1 + max(x, 0)) / scale_f), 0, 127)`` per
  feature ``f``, with ``scale_f`` the calibration maximum over 127. It is computed from the raw integer ``x``
  through 127 stored integer thresholds per feature (``q`` = how many thresholds are ``<= max(x, 0)``), so no
  floating-point logarithm enters the integer path. A missing value is 0, so ``q = 0``.
* **Scales.** Every int8 tensor has a float scale (value ~ scale * integer). Weights: symmetric per tensor,
  ``max|w| / 127``, values in [-127, 127]. Activations: the ``percentile`` (99.99 by default) of the
  calibration magnitudes over 127. A layer's input scales are folded into its weights before they are
  quantised (``W'[:, k] = W[:, k] * scale_in[k]``), so inputs with different scales (the concatenated
  interaction output, per-feature dense inputs) need no rescaling step. Bias: ``round(b / scale_w')``.
* **Requantisation** ``(m, s)`` of a layer approximates ``scale_w' / scale_out`` by ``m / 2**s`` with the
  largest ``s <= 63`` for which ``m <= 65535``.
* **Embedding pooling**: the int32 sum of a table's int8 rows, requantised with the table's ``(m, s)`` to the
  pooled-vector scale. For ``dot`` every vector entering the interaction (the bottom MLP's output and each
  pooled vector) shares **one** scale, calibrated over all of them, so all pairwise products have the same
  scale and the interaction has a single ``(m, s)``. For ``cat`` each pooled vector has its own scale.
* **Last layer**: raw int32 ``acc + bias`` (no requantisation; ``m = s = 0`` in the file).
* Parameters are checked so no int32 accumulator can wrap (``|bias| + 128 * sum |w| < 2**31`` per output,
  :func:`rpaccel.host.reference.check_mlp`).

The layers are :class:`rpaccel.host.reference.Layer` records (weights ``K x N``, ``y = x @ W``). Files store each
layer's weights ``(N, K)``, output-major like the float weights file (:mod:`rpaccel.host.train`); saving and
loading transpose them.
"""

import json
import math

import numpy as np

from ..numeric import INT32_MAX, M_MAX, S_MAX, check_requant_params
from .data import check_shape
from .files import FileFormatError, load_arrays, save_arrays
from .models import ModelError, ModelSpec
from .reference import Layer, MLPError, check_mlp, run

__all__ = ["QuantModel", "QuantizationError", "choose_multiplier", "dense_thresholds", "load_quantized",
           "quantize", "save_quantized"]

QUANT_FORMAT = "rpaccel-quant-1"
LEVELS = 127


class QuantizationError(ValueError):
    """A model cannot be quantised under the numeric rules (the message says which layer and why)."""


def choose_multiplier(ratio):
    """``(m, s)`` with ``m / 2**s`` closest to ``ratio`` for the largest shift ``s <= 63`` keeping ``m``
    within 16 bits (``m`` saturates at 65535 when ``ratio`` is that large)."""
    if not math.isfinite(ratio) or ratio < 0:
        raise QuantizationError(f"requantisation ratio must be a finite number >= 0, not {ratio!r}")
    if ratio == 0:
        return 0, 0
    # Largest s with round(ratio * 2**s) <= M_MAX.
    s = max(0, min(S_MAX, math.floor(math.log2((M_MAX + 0.5) / ratio))))
    while s > 0 and math.floor(ratio * 2**s + 0.5) > M_MAX:
        s -= 1
    while s < S_MAX and math.floor(ratio * 2 ** (s + 1) + 0.5) <= M_MAX:
        s += 1
    m = min(M_MAX, math.floor(ratio * 2**s + 0.5))
    return int(m), int(s)


def dense_thresholds(scale):
    """Integer thresholds of the dense quantiser of one feature with step ``scale``: level ``k`` (1..127)
    starts at the smallest integer ``x`` with ``log(1 + x) / scale >= k - 1/2``."""
    k = np.arange(1, LEVELS + 1, dtype=np.float64)
    with np.errstate(over="ignore"):
        bounds = np.expm1((k - 0.5) * scale)
    bounds = np.where(np.isfinite(bounds) & (bounds < 2.0**62), np.ceil(bounds), 2.0**62)
    return bounds.astype(np.int64)


class QuantModel:
    """An int8 model under the numeric rules; :meth:`logits` gives the exact int32 logits of a batch.

    Attributes
    ----------
    spec : ModelSpec
    thresholds : numpy.ndarray
        ``(D, 127)`` int64 dense-quantiser thresholds.
    dense_scale : numpy.ndarray
        ``(D,)`` float step of each dense feature (for information).
    emb : numpy.ndarray
        ``(sum(rows), dim)`` int8 rows of all tables, stacked.
    pool_m, pool_s : numpy.ndarray
        ``(T,)`` requantisation of each table's pooled sum.
    inter_m, inter_s : int
        Requantisation of the ``dot`` interaction's pairwise products (0 for ``cat``).
    layers : list of rpaccel.host.reference.Layer
        Named and ordered as ``spec.layers()``, weights ``K x N``.
    scales : dict
        Float scales of every quantised tensor (for information and the float equivalent).
    """

    def __init__(self, spec, thresholds, dense_scale, emb, pool_m, pool_s, inter_m, inter_s, layers, scales=None):
        self.spec = spec
        self.thresholds = np.asarray(thresholds, dtype=np.int64)
        self.dense_scale = np.asarray(dense_scale, dtype=np.float64)
        self.emb = np.asarray(emb, dtype=np.int8)
        self.pool_m = np.asarray(pool_m, dtype=np.int64)
        self.pool_s = np.asarray(pool_s, dtype=np.int64)
        self.inter_m, self.inter_s = int(inter_m), int(inter_s)
        self.layers = list(layers)
        self.scales = scales or {}
        self.offsets = np.concatenate([[0], np.cumsum(spec.tables)[:-1]]).astype(np.int64)
        self.validate()

    def validate(self):
        """Check shapes, field ranges and that no int32 accumulator can wrap.

        Raises
        ------
        QuantizationError
            Naming the part that is wrong (a layer's problems as :func:`~rpaccel.host.reference.check_mlp`
            words them).
        """
        spec = self.spec
        if self.thresholds.shape != (spec.dense, LEVELS):
            raise QuantizationError(f"dense thresholds have shape {self.thresholds.shape}, not {(spec.dense, LEVELS)}")
        if self.emb.shape != (sum(spec.tables), spec.emb_dim):
            raise QuantizationError(f"embedding rows have shape {self.emb.shape}")
        if self.pool_m.shape != (spec.num_tables,) or self.pool_s.shape != (spec.num_tables,):
            raise QuantizationError("pooling (m, s) must have one entry per table")
        check_requant_params(self.pool_m, self.pool_s)
        check_requant_params(self.inter_m, self.inter_s)
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise QuantizationError(f"layers must be rpaccel.host.reference.Layer records, not "
                                        f"{type(layer).__name__}")
        expected = [(name, (k, n)) for name, k, n, _ in spec.layers()]
        if [(layer.name, layer.shape) for layer in self.layers] != expected:
            raise QuantizationError(f"layers do not match model {spec.name}: expected (name, (K, N)) {expected}")
        for layer, (name, _, _, relu) in zip(self.layers, spec.layers()):
            raw = _raw_output(spec, name, relu)
            if (layer.relu, layer.raw) != (relu, raw):
                raise QuantizationError(f"layer {name}: relu must be {relu} and raw {raw}")
        for layers in self.mlps().values():
            if layers:
                try:
                    check_mlp(layers)
                except MLPError as error:
                    raise QuantizationError(str(error)) from None
        if spec.interaction == "dot" and spec.emb_dim * 128 * 128 > INT32_MAX:
            raise QuantizationError("dot products could overflow int32")

    def mlps(self):
        """The model's MLPs in the order they run: ``{"bottom": [...], "top": [...], "task0": [...], ...}`` (lists
        of :class:`~rpaccel.host.reference.Layer`; ``bottom`` is empty for a model without a bottom MLP)."""
        groups = {"bottom": [], "top": [], **{f"task{task}": [] for task in range(self.spec.tasks)}}
        for layer in self.layers:
            group = "bottom" if layer.name.startswith("bottom") else "top" if layer.name.startswith("top") \
                else layer.name.split(".")[0]
            groups[group].append(layer)
        return groups

    def layer(self, name):
        """The layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def quantize_dense(self, dense, missing=None):
        """int8 dense inputs from raw integer dense features ``(n, D)`` (``missing`` entries count as 0)."""
        dense = np.maximum(np.asarray(dense, dtype=np.int64), 0)
        if missing is not None:
            dense = np.where(missing, 0, dense)
        out = np.empty(dense.shape, dtype=np.int64)
        for f in range(self.spec.dense):
            out[:, f] = np.searchsorted(self.thresholds[f], dense[:, f], side="right")
        return out

    def inputs(self, records):
        """``(dense_q, ids)`` of :class:`~rpaccel.host.data.Records` (DLRM hashing of the categorical values)."""
        check_shape(records, self.spec)
        rows = np.asarray(self.spec.tables, dtype=np.int64)[None, :, None]
        ids = np.where(records.cat_missing, 0, records.cats % rows)
        return self.quantize_dense(records.dense, records.dense_missing), ids

    def logits(self, dense_q, ids, *, trace=False):
        """Exact int32 logits (int64 array, ``(n,)`` or ``(n, tasks)``) of a batch; see
        :func:`rpaccel.host.reference.run`."""
        return run(self, dense_q, ids, trace=trace)

    def logits_from_records(self, records, batch=16384):
        """Logits of raw records (dense quantised, IDs hashed), computed in batches."""
        dense_q, ids = self.inputs(records)
        return np.concatenate([self.logits(dense_q[i:i + batch], ids[i:i + batch])
                               for i in range(0, len(dense_q), batch)])


def _raw_output(spec, name, relu):
    # The model's last layer (each task tower's, for a multi-task model) outputs the raw int32 logit.
    return not relu and (name.startswith("task") or not spec.tasks)


def _percentile_scale(values, percentile):
    values = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    if values.size == 0:
        return 1.0
    top = float(np.percentile(values, percentile)) if percentile < 100 else float(values.max())
    if top <= 0:
        top = float(values.max())
    return top / LEVELS if top > 0 else 1.0


def _quantize_layer(name, w, b, scale_in, scale_out, relu, raw):
    # w is the float (N, K) matrix of the float model; the quantised layer holds it K x N.
    w = np.asarray(w, dtype=np.float64).T * np.asarray(scale_in, dtype=np.float64)[:, None]
    top = float(np.abs(w).max())
    scale_w = top / LEVELS if top > 0 else 1.0
    weights = np.clip(np.floor(w / scale_w + 0.5), -LEVELS, LEVELS).astype(np.int8)
    bias = np.floor(np.asarray(b, dtype=np.float64) / scale_w + 0.5)
    bound = 128 * np.abs(weights.astype(np.int64)).sum(axis=0) + np.abs(bias)
    if bound.max(initial=0) > INT32_MAX:
        column = int(bound.argmax())
        raise QuantizationError(f"layer {name}: the accumulator of output {column} could reach "
                                f"{bound[column]:.4g} (|bias| + 128 * sum |w|), outside int32")
    m, s = (0, 0) if raw else choose_multiplier(scale_w / scale_out)
    return Layer(weights, bias.astype(np.int64), m, s, relu, raw, name), scale_w


def quantize(model, records, *, percentile=99.99, batch=8192):
    """Quantise a :class:`~rpaccel.host.train.FloatModel`, calibrating activation scales on ``records``.

    Parameters
    ----------
    model : FloatModel
    records : Records
        Calibration samples (a few thousand are enough; more give steadier percentiles).
    percentile : float
        Percentile of the activation magnitudes mapped to 127 (100: the maximum).

    Returns
    -------
    QuantModel

    Raises
    ------
    ModelError
        If a parameter of ``model`` is not finite (the message names the array).
    """
    if not 50 <= percentile <= 100:
        raise ValueError(f"percentile must be in [50, 100], not {percentile!r}")
    model.check_finite()
    spec = model.spec
    check_shape(records, spec, "calibration data")
    # Dense quantiser from the calibration range of log(1 + max(x, 0)).
    raw = np.where(records.dense_missing, 0, np.maximum(records.dense, 0))
    logs = np.log1p(raw.astype(np.float64))
    dense_scale = np.array([(logs[:, f].max() / LEVELS) or 1.0 for f in range(spec.dense)]) if spec.dense \
        else np.zeros(0)
    thresholds = np.stack([dense_thresholds(s) for s in dense_scale]) if spec.dense \
        else np.zeros((0, LEVELS), dtype=np.int64)
    dense_q = np.stack([np.searchsorted(thresholds[f], raw[:, f], side="right") for f in range(spec.dense)],
                       axis=1) if spec.dense else np.zeros((len(records), 0), dtype=np.int64)
    dense_f = dense_q * dense_scale[None, :]
    rows = np.asarray(spec.tables, dtype=np.int64)[None, :, None]
    ids = np.where(records.cat_missing, 0, records.cats % rows)

    # Calibration pass of the float model (on the quantised dense inputs).
    keys = ["bottom_out", *(("vectors", "pairs") if spec.interaction == "dot" else ("pooled",)),
            *(f"out:{name}" for name, _, _, _ in spec.layers())]
    acts = {key: [] for key in keys}
    for start in range(0, len(records), batch):
        cache = {}
        model.forward(dense_f[start:start + batch], ids[start:start + batch], cache)
        for key in keys:
            acts[key].append(cache[key])
    acts = {k: np.concatenate(v) for k, v in acts.items()}
    layers_spec = spec.layers()
    names = [n for n, _, _, _ in layers_spec]

    scales = {"dense": dense_scale.tolist()}
    emb = np.empty((sum(spec.tables), spec.emb_dim), dtype=np.int8)
    params = model.params
    table_scale = []
    for offset, n in zip(model.offsets, spec.tables):
        block = np.asarray(params["emb"][offset:offset + n], dtype=np.float64)
        top = float(np.abs(block).max())
        scale = top / LEVELS if top > 0 else 1.0
        emb[offset:offset + n] = np.clip(np.floor(block / scale + 0.5), -LEVELS, LEVELS)
        table_scale.append(scale)
    scales["tables"] = table_scale

    bottom_names = [n for n in names if n.startswith("bottom")]
    if spec.interaction == "dot":
        shared = _percentile_scale(acts["vectors"], percentile)
        pooled_scale = [shared] * spec.num_tables
        bottom_out_scale = shared
        pair_scale = _percentile_scale(acts["pairs"], percentile)
        inter_m, inter_s = choose_multiplier(shared * shared / pair_scale)
        scales.update(vectors=shared, pairs=pair_scale)
        inter_scale = np.concatenate([np.full(spec.emb_dim, shared), np.full(spec.num_pairs, pair_scale)])
    else:
        pooled = acts["pooled"]
        pooled_scale = [_percentile_scale(pooled[:, t], percentile) for t in range(spec.num_tables)]
        if bottom_names:
            bottom_out_scale = _percentile_scale(acts["bottom_out"], percentile)
            dense_side = np.full(spec.bottom_width, bottom_out_scale)
        else:
            dense_side = dense_scale
        inter_m = inter_s = 0
        inter_scale = np.concatenate([dense_side, *[np.full(spec.emb_dim, s) for s in pooled_scale]])
        scales["pooled"] = pooled_scale
    pool = [choose_multiplier(ts / ps) for ts, ps in zip(table_scale, pooled_scale)]

    qlayers = []
    scale_in = dense_scale
    tower_in = None
    for name, _k, n, relu in layers_spec:
        w, b = params[f"{name}.w"], params[f"{name}.b"]
        raw_out = _raw_output(spec, name, relu)
        if name == "top0":
            scale_in = inter_scale
        if name.endswith(".0") and name.startswith("task"):
            scale_in = tower_in
        if raw_out:
            scale_out = None
        elif bottom_names and name == bottom_names[-1] and spec.interaction == "dot":
            scale_out = bottom_out_scale
        else:
            scale_out = _percentile_scale(acts[f"out:{name}"], percentile)
        layer, scale_w = _quantize_layer(name, w, b, scale_in, scale_out or 1.0, relu, raw_out)
        qlayers.append(layer)
        scales[name] = {"weight": scale_w, "out": scale_out}
        if not raw_out:
            scale_in = np.full(n, scale_out)
            if name.startswith("top"):
                tower_in = scale_in
    return QuantModel(spec, thresholds, dense_scale, emb, [m for m, _ in pool], [s for _, s in pool], inter_m,
                      inter_s, qlayers, scales)


def save_quantized(path, qmodel, meta=None):
    """Write a quantised model (deterministic ``.npz``; members listed in ``docs/host.md``)."""
    arrays = {"format": QUANT_FORMAT, "spec": qmodel.spec.to_json(),
              "meta": json.dumps({**(meta or {}), "scales": qmodel.scales}, sort_keys=True),
              "dense_thresholds": qmodel.thresholds, "dense_scale": qmodel.dense_scale, "emb": qmodel.emb,
              "pool_m": qmodel.pool_m, "pool_s": qmodel.pool_s,
              "inter_m": np.int64(qmodel.inter_m), "inter_s": np.int64(qmodel.inter_s)}
    for layer in qmodel.layers:
        arrays[f"{layer.name}.w"] = np.ascontiguousarray(np.asarray(layer.weights, dtype=np.int8).T)
        arrays[f"{layer.name}.b"] = layer.bias.astype(np.int32)
        arrays[f"{layer.name}.m"] = np.int64(layer.m)
        arrays[f"{layer.name}.s"] = np.int64(layer.s)
        arrays[f"{layer.name}.relu"] = np.bool_(layer.relu)
        arrays[f"{layer.name}.raw"] = np.bool_(layer.raw)
    return save_arrays(path, arrays)


def load_quantized(path):
    """Read a quantised model: ``(QuantModel, meta)``.

    Raises
    ------
    FileFormatError
        If the file is missing, not a quantised model, or breaks the numeric rules.
    """
    arrays = load_arrays(path, kind="quantised model file",
                         required=("format", "spec", "dense_thresholds", "emb", "pool_m", "pool_s"))
    if arrays["format"] != QUANT_FORMAT:
        raise FileFormatError(f"{path}: not a quantised model file (format {arrays['format']!r})")
    try:
        spec = ModelSpec.from_json(arrays["spec"])
        layers = [Layer(np.ascontiguousarray(arrays[f"{name}.w"].T), arrays[f"{name}.b"].astype(np.int64),
                        int(arrays[f"{name}.m"]), int(arrays[f"{name}.s"]), bool(arrays[f"{name}.relu"]),
                        bool(arrays[f"{name}.raw"]), name)
                  for name, _, _, _ in spec.layers()]
        meta = json.loads(arrays.get("meta", "{}"))
        qmodel = QuantModel(spec, arrays["dense_thresholds"], arrays["dense_scale"], arrays["emb"], arrays["pool_m"],
                            arrays["pool_s"], arrays["inter_m"], arrays["inter_s"], layers, meta.get("scales"))
    except (KeyError, ModelError, QuantizationError, ValueError) as error:
        raise FileFormatError(f"{path}: bad quantised model file ({error})") from None
    return qmodel, meta
