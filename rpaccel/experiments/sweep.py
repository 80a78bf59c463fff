"""Design-space sweeps on the whole chip's timed model, as independent tasks on Dask distributed (``rpaccel sweep``).

A sweep is a grid (or a union of grids) over configuration fields, the schedule and the pipeline, read from a
small TOML or JSON file (:func:`load_spec`, the format in ``docs/sweep.md``)::

    preset = "small"
    candidates = 256
    queries = 2

    [grid]
    array_cols = [8, 16]
    dyn_cache_ways = [0, 4]
    mode = ["rpaccel", "baseline"]
    pipeline = ["rm-small:256:64,rm-large:64:16", "rm-large:256:16"]

Every axis and value is checked before anything runs (:class:`SpecError` names the axis and the value). Each point
is an independent task (:func:`evaluate_point`): it builds its :class:`~rpaccel.config.AccelConfig`, compiles the
pipeline (:func:`rpaccel.host.driver.chip.compile_queries`) and runs it on the chip's timed model
(:class:`rpaccel.sim.model.chip.ModelDevice`): each query alone for its latency, then every query back to back for
the throughput. The models are trained and quantised once, in the process that runs the sweep, and sent to every
worker once. :func:`run_sweep` runs the tasks on a Dask cluster (a local cluster of worker processes by default,
or the scheduler at an address) and appends each point's row to a CSV file as it completes (one line, flushed);
a point whose key (:attr:`Point.key`, a hash of every parameter of the point) is already in the file is not run
again, so a sweep that was interrupted resumes where it stopped. :func:`plot_sweep` draws NDCG against p95
latency and against throughput, the Pareto front marked.

The figures are the timed model's: not exact (about -2% on the split array and -15% on the whole array against
the RTL at 1,024 candidates, docs/model.md), so a sweep ranks configurations; the RTL confirms a chosen one.
"""

import csv
import difflib
import hashlib
import io
import itertools
import json
import os
import pickle
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..config import AccelConfig
from .report import ExperimentError, Report, Section, check_positive

__all__ = ["COLUMNS", "MODES", "SCHEDULE_AXES", "SETTINGS", "Point", "SpecError", "SweepContext", "SweepFileError",
           "SweepSpec", "area_figures", "evaluate_point", "load_spec", "pareto_front", "parse_spec", "plot_sweep",
           "prepare_context", "read_results", "read_row", "run_sweep"]


class SpecError(ValueError):
    """A sweep specification is invalid; the message names the key or axis (``grid.array_cols``) and the value."""


class SweepFileError(ValueError):
    """A results file cannot be resumed: it is not a sweep's CSV (the message says which line and why)."""


#: The schedules a sweep's ``mode`` axis takes: name -> :class:`rpaccel.host.driver.chip.Schedule` fields (the
#: ``split`` axis gives the split; ``rpaccel-whole`` is ``rpaccel`` with ``split = 1``).
MODES = {"rpaccel": {"mode": "rpaccel"}, "baseline": {"mode": "baseline"},
         "baseline-overlapped": {"mode": "baseline", "serial": False}}
#: Schedule and pipeline axes, with their defaults (``"auto"``: the compiler's choice).
SCHEDULE_AXES = {"mode": "rpaccel", "split": "auto", "sub_batch": "auto"}
#: The sweep-wide settings of a specification and their defaults (``grid`` is required).
SETTINGS = {"preset": "small", "set": (), "candidates": 256, "queries": 2, "seed": 1, "train_samples": 3_000,
            "max_rows": 5_000, "ndcg_k": None}
#: The configuration fields a grid may sweep (every field but the name).
CONFIG_AXES = tuple(f.name for f in fields(AccelConfig) if f.name != "name")
#: A point's parameters beyond its configuration: the schedule, the pipeline and the sweep's settings.
_POINT = ("mode", "split", "sub_batch", "pipeline", "candidates", "queries", "seed", "train_samples", "max_rows",
          "ndcg_k")
#: A point's parameters, in the order of the results file's first columns.
PARAMETERS = ("key", "status", "error", "config", *CONFIG_AXES, *_POINT)
#: A point's figures (empty where the point was refused, or a figure does not exist for it).
FIGURES = ("run_split", "run_sub_batch", "cycles_per_query", "latency_us", "p50_latency_us", "p95_latency_us",
           "throughput_cycles_per_query", "qps", "ndcg", "recpipe_cycles", "recpipe_latency_us", "recpipe_error",
           "util_lanes", "util_lane_max", "util_fetch", "util_embedding", "util_join", "util_interaction",
           "util_weights", "util_topk", "util_filter", "static_hit_rate", "line_hit_rate", "lookups_per_query",
           "line_misses_per_query", "mem_read_lines_per_query", "mem_write_lines_per_query", "area_luts",
           "area_source", "checked", "models", "seconds", "note")
#: The columns of the results file, in order.
COLUMNS = PARAMETERS + FIGURES
#: A row's status: measured and checked, refused by the configuration or the compiler, or failed while it ran (the
#: model stalled, or its responses differ from the golden model's).
STATUSES = ("ok", "refused", "failed")
_KEY = re.compile(r"[0-9a-f]{16}\Z")


# The specification ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One point of a sweep: a configuration, a schedule and a pipeline, on the sweep's queries.

    Attributes
    ----------
    config_fields : tuple of (str, object)
        Every configuration field but the name, with the point's value.
    name : str
        The configuration's name: the base's and the fields that differ from it (``small+array_cols=16``).
    changes : tuple of (str, object)
        The swept axes and their values at this point (configuration, schedule and pipeline axes).
    mode : str
        Of :data:`MODES`.
    split, sub_batch : int or str
        A number, or ``"auto"`` (the compiler's choice).
    pipeline : str
        ``MODEL:ITEMS:K,...`` (:func:`rpaccel.host.runtime.pipeline.parse_pipeline`).
    candidates, queries, seed, train_samples, max_rows, ndcg_k : int
        The sweep's settings (:data:`SETTINGS`): the same for every point of a sweep.
    """

    config_fields: tuple
    name: str
    changes: tuple
    mode: str
    split: object
    sub_batch: object
    pipeline: str
    candidates: int
    queries: int
    seed: int
    train_samples: int
    max_rows: int
    ndcg_k: int

    @property
    def key(self):
        """A stable hash of every parameter of the point (16 hex digits): equal points have equal keys, whatever
        the specification that made them (not the configuration's name, nor which axes were swept)."""
        text = json.dumps({"config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.config_fields},
                           **{name: getattr(self, name) for name in _POINT}},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def config(self):
        """The point's :class:`~rpaccel.config.AccelConfig` (raises :class:`~rpaccel.config.ConfigError`)."""
        from ..config import AccelConfig

        return AccelConfig(name=self.name, **dict(self.config_fields))

    def refusal(self):
        """Why the point's configuration is refused (its field checks, or a split it does not have), or None."""
        from ..config import ConfigError

        try:
            config = self.config()
        except ConfigError as error:
            return str(error)
        if self.split != "auto" and self.split not in config.splits:
            return f"split {self.split} is not one of the configuration's splits {config.splits}"
        return None

    def label(self):
        """The swept axes' values, ``field=value ...``."""
        return " ".join(f"{name}={_text(value)}" for name, value in self.changes)

    def parameters(self):
        """The point's columns of :data:`PARAMETERS` (status and error left empty)."""
        return {"key": self.key, "status": "", "error": "", "config": self.name, **dict(self.config_fields),
                **{name: getattr(self, name) for name in _POINT}}


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep specification (:func:`parse_spec`).

    Attributes
    ----------
    base : rpaccel.config.AccelConfig
        The preset with the specification's ``set`` changes.
    points : tuple of Point
        Every point, in grid order, each once.
    models : tuple of str
        The zoo models the pipelines use.
    candidates, queries, seed, train_samples, max_rows, ndcg_k : int
    refused : int
        Points whose configuration is invalid (they become rows with the reason, not tasks).
    """

    base: object
    points: tuple
    models: tuple
    candidates: int
    queries: int
    seed: int
    train_samples: int
    max_rows: int
    ndcg_k: int
    refused: int


def _text(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _close(name, known):
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"


def _field_value(where, field, value):
    """``value`` of the specification as a value of the configuration ``field`` (its type checked)."""
    kind = field.type
    bad = isinstance(value, bool)
    if kind is int and (bad or not isinstance(value, int)):
        raise SpecError(f"{where}: {value!r} is not an integer")
    if kind is float:
        if bad or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: {value!r} is not a number")
        return float(value)
    if kind is tuple:
        if isinstance(value, str):
            try:
                value = [int(part, 0) for part in value.split(",")]
            except ValueError:
                raise SpecError(f"{where}: {value!r} is not a list of integers") from None
        if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int)
                                                            for v in value):
            raise SpecError(f"{where}: {value!r} is not a list of integers")
        return tuple(value)
    if kind is str and not isinstance(value, str):
        raise SpecError(f"{where}: {value!r} is not text")
    return value


def _axis_values(values, field):
    """An axis's values: its list, or a single value as a one-value list (for a field of integer lists such as
    ``splits``, a list of integers is one value, a list of lists or texts several)."""
    if field is not None and field.type is tuple:
        several = isinstance(values, list) and values and all(isinstance(v, (list, str)) for v in values)
        return values if several else [values]
    return values if isinstance(values, list) else [values]


def _schedule_value(where, axis, value):
    if axis == "mode":
        if value not in MODES:
            raise SpecError(f"{where}: {value!r} is not a mode ({', '.join(MODES)})")
    elif value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise SpecError(f"{where}: {value!r} is neither a positive integer nor \"auto\"")
    return value


def _pipeline_value(where, value, candidates, ndcg_k):
    from ..host.models import ModelError, get_model
    from ..host.runtime.pipeline import PipelineError, parse_pipeline

    if not isinstance(value, str):
        raise SpecError(f"{where}: {value!r} is not a pipeline text MODEL:ITEMS:K,...")
    try:
        stages = parse_pipeline(value)
        specs = [get_model(stage.model) for stage in stages]
    except (PipelineError, ModelError) as error:
        raise SpecError(f"{where}: {error}") from None
    reference = get_model("rm-small")
    for stage, spec in zip(stages, specs):
        if (spec.dense, spec.tables, spec.pooling) != (reference.dense, reference.tables, reference.pooling):
            raise SpecError(f"{where}: {value!r}: {stage.model} does not take the RM models' Criteo inputs (13 "
                            "dense features, 26 one-hot tables): the sweep's queries are Criteo-like")
    if stages[0].items != candidates:
        raise SpecError(f"{where}: {value!r}: stage 0 scores {stages[0].items} items; the sweep's queries have "
                        f"candidates = {candidates}")
    if ndcg_k is not None and stages[-1].k < ndcg_k:
        raise SpecError(f"{where}: {value!r}: the final stage keeps {stages[-1].k} items, fewer than ndcg_k = "
                        f"{ndcg_k}")
    return ",".join(str(stage) for stage in stages)


def load_spec(path):
    """Read and check the sweep specification in ``path`` (``.toml`` or ``.json``); see :func:`parse_spec`.

    Raises
    ------
    SpecError
        If the file cannot be read or parsed, or the specification is invalid.
    """
    import tomllib

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"cannot read the specification: {error.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            raise SpecError(f"the specification must be a .toml or .json file, not {path.name!r}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise SpecError(f"not valid {path.suffix.lstrip('.').upper()}: {error}") from None
    return parse_spec(data)


def parse_spec(data):
    """Check a sweep specification (a dict, as read from TOML or JSON) and expand it into its points.

    The keys are the settings of :data:`SETTINGS` and ``grid``: a table of axes, or a list of tables (the points
    are the union of their products). An axis is a configuration field (every field of
    :class:`~rpaccel.config.AccelConfig` but ``name``), ``mode``, ``split``, ``sub_batch`` or ``pipeline``
    (required in every grid), with a list of values (a single value is a one-value axis).

    Raises
    ------
    SpecError
        On an unknown key or axis (with the close names), a value of the wrong type, a value with which no point's
        configuration is valid (with the configuration's reason), a pipeline that does not parse, names a model
        without the RM models' inputs, whose first stage does not score ``candidates`` items or whose last keeps
        fewer than ``ndcg_k``, an axis that repeats a value, or settings that are not positive integers.
    """
    if not isinstance(data, dict):
        raise SpecError(f"the specification must be a table of settings and a grid, not {type(data).__name__}")
    known = [*SETTINGS, "grid"]
    for key in data:
        if key not in known:
            raise SpecError(f"unknown key {key!r}; {_close(key, known)}")
    settings, base = _settings({**SETTINGS, **{key: value for key, value in data.items() if key != "grid"}})
    grids = _grids(data.get("grid"), settings)
    if settings["ndcg_k"] is None:
        settings["ndcg_k"] = min(int(p.rsplit(":", 1)[1]) for _, axes in grids for p in axes["pipeline"])
    points, valid = {}, {}
    for label, axes in grids:
        for values in itertools.product(*axes.values()):
            point = _point(base, dict(zip(axes, values)), settings)
            reason = point.refusal()
            for axis, value in point.changes:
                if axis in CONFIG_AXES or axis == "split":
                    entry = valid.setdefault((label, axis, _text(value)), [False, None])
                    entry[0] = entry[0] or reason is None
                    entry[1] = entry[1] or reason
            points.setdefault(point.key, point)
    for (label, axis, value), (ok, reason) in valid.items():
        if not ok:
            raise SpecError(f"{label}.{axis}: {value} is refused by every configuration of the grid: {reason}")
    points = tuple(points.values())
    models = tuple(dict.fromkeys(stage.split(":")[0] for point in points for stage in point.pipeline.split(",")))
    return SweepSpec(base=base, points=points, models=models,
                     **{name: settings[name] for name in ("candidates", "queries", "seed", "train_samples",
                                                          "max_rows", "ndcg_k")},
                     refused=sum(point.refusal() is not None for point in points))


def _settings(settings):
    """The settings checked, and the base configuration (the preset with the ``set`` changes)."""
    from ..config import ConfigError, preset

    for key in ("candidates", "queries", "train_samples", "max_rows", "ndcg_k"):
        value = settings[key]
        if (value is not None or key != "ndcg_k") and (isinstance(value, bool) or not isinstance(value, int)
                                                       or value <= 0):
            raise SpecError(f"{key}: {value!r} is not a positive integer")
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"seed: {seed!r} is not a non-negative integer")
    if settings["queries"] > 253:
        raise SpecError(f"queries: {settings['queries']} is more than the 253 tags a program gives queries")
    try:
        base = preset(settings["preset"])
    except ConfigError as error:
        raise SpecError(f"preset: {error}") from None
    changes = settings["set"]
    if isinstance(changes, str) or not isinstance(changes, (list, tuple)):
        raise SpecError(f"set: {changes!r} is not a list of \"field=value\" texts")
    try:
        return dict(settings), base.with_settings(changes)
    except ConfigError as error:
        raise SpecError(f"set: {error}") from None


def _grids(grids, settings):
    """``[(label, {axis: values})]`` of the specification's grids, every axis and value checked."""
    if grids is None:
        raise SpecError("no grid: give [grid] with at least a pipeline axis (pipeline = [\"MODEL:ITEMS:K,...\"])")
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) for g in grids):
        raise SpecError("grid must be a table of axes or a list of tables")
    by_name = {f.name: f for f in fields(AccelConfig)}
    axes_known = [*CONFIG_AXES, *SCHEDULE_AXES, "pipeline"]
    parsed = []
    for number, grid in enumerate(grids):
        label = "grid" if len(grids) == 1 else f"grid[{number}]"
        if "pipeline" not in grid:
            raise SpecError(f"{label}: no pipeline axis (pipeline = [\"MODEL:ITEMS:K,...\", ...])")
        axes = {}
        for axis, values in grid.items():
            where = f"{label}.{axis}"
            if axis not in axes_known:
                raise SpecError(f"{where}: unknown axis; {_close(axis, axes_known)}")
            values = _axis_values(values, by_name.get(axis))
            if not values:
                raise SpecError(f"{where}: no values")
            if axis in CONFIG_AXES:
                values = [_field_value(where, by_name[axis], v) for v in values]
            elif axis in SCHEDULE_AXES:
                values = [_schedule_value(where, axis, v) for v in values]
            else:
                values = [_pipeline_value(where, v, settings["candidates"], settings["ndcg_k"]) for v in values]
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                raise SpecError(f"{where}: {_text(repeated[0])} is given twice")
            axes[axis] = values
        parsed.append((label, axes))
    return parsed


def _point(base, chosen, settings):
    """The :class:`Point` of the axes' values ``chosen`` on the ``base`` configuration."""
    base_fields = {name: getattr(base, name) for name in CONFIG_AXES}
    config_fields = {**base_fields, **{k: v for k, v in chosen.items() if k in CONFIG_AXES}}
    name = "+".join([base.name, *(f"{k}={_text(v)}" for k, v in config_fields.items() if v != base_fields[k])])
    return Point(config_fields=tuple(config_fields.items()), name=name, changes=tuple(chosen.items()),
                 **{axis: chosen.get(axis, default) for axis, default in SCHEDULE_AXES.items()},
                 pipeline=chosen["pipeline"], **{key: settings[key] for key in _POINT[4:]})


# Evaluating a point -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepContext:
    """What every point shares, sent to each worker once: the trained models and the queries.

    Attributes
    ----------
    models : dict
        ``{zoo name: QuantModel}``, each table's rows renumbered by descending frequency in the training samples
        (the logits are the same; the static cache holds each table's rows ``0 .. H - 1``).
    counts : dict
        ``{zoo name: [each table's row counts in the training samples, renumbered (descending)]}``: the profile
        the static cache is divided by at each configuration.
    inputs : list of dict
        Per query, ``{zoo name: (dense_q, ids)}`` for the query's candidates (IDs renumbered).
    labels : list of numpy.ndarray
        Per query, the candidates' labels (the synthetic data's planted clicks).
    fingerprint : str
        A hash of the models (12 hex digits): rows measured with other models have another.
    train_seconds : float
    """

    models: dict
    counts: dict
    inputs: list
    labels: list
    fingerprint: str
    train_seconds: float


def _renumbered(model, records):
    """``(model, counts, new_of_old)``: ``model`` with each table's rows in descending order of their count in
    ``records``, the sorted counts, and each table's map from old to new row IDs."""
    import copy

    from ..embedding import renumbering

    _, ids = model.inputs(records)
    emb, counts, maps = model.emb.copy(), [], []
    for t, rows in enumerate(model.spec.tables):
        count = np.bincount(ids[:, t].ravel(), minlength=rows)
        new_of_old, old_of_new = renumbering(count)
        start = model.offsets[t]
        emb[start:start + rows] = model.emb[start + old_of_new]
        counts.append(count[old_of_new])
        maps.append(new_of_old)
    out = copy.copy(model)
    out.emb = emb
    return out, counts, maps


def prepare_context(spec):
    """Train and quantise the models of ``spec`` (:func:`rpaccel.experiments.accel.train_models`), renumber their
    tables by the training samples' frequencies (the host's profile for the static cache), and draw the queries
    from the synthetic stream after the training and calibration samples."""
    from ..host.data import SyntheticConfig
    from ..host.models import get_model
    from .accel import train_models

    specs = {name: get_model(name, max_rows=spec.max_rows) for name in spec.models}
    models, generator, seconds = train_models(specs, train_samples=spec.train_samples, seed=spec.seed,
                                              data=SyntheticConfig.criteo(max_rows=spec.max_rows, seed=spec.seed))
    training = generator.generate(spec.train_samples)
    counts, maps = {}, {}
    for name in models:
        models[name], counts[name], maps[name] = _renumbered(models[name], training)
    c = spec.candidates
    records = generator.generate(spec.queries * c, start=spec.train_samples + 2_000)
    queries = [records.take(slice(q * c, (q + 1) * c)) for q in range(spec.queries)]
    inputs = []
    for query in queries:
        inputs.append({})
        for name, model in models.items():
            dense, ids = model.inputs(query)
            ids = np.stack([maps[name][t][ids[:, t]] for t in range(ids.shape[1])], axis=1)
            inputs[-1][name] = (dense, ids)
    digest = hashlib.sha256()
    for name in sorted(models):
        digest.update(pickle.dumps((name, vars(models[name])), protocol=5))
    return SweepContext(models=models, counts=counts, inputs=inputs, labels=[np.asarray(q.labels) for q in queries],
                        fingerprint=digest.hexdigest()[:12], train_seconds=seconds)


def _static_rows(config, context, used):
    """``{model number: static rows per table}``: the static cache divided among the used models' tables by their
    profile (:func:`rpaccel.embedding.allocate_static`)."""
    from ..embedding import allocate_static
    from ..host.driver.chip.encoding import geometry_of
    from ..host.driver.chip.memory import table_dim

    g = geometry_of(config)
    counts, lines, owners = [], [], []
    for number, name in enumerate(used):
        model = context.models[name]
        row_lines = table_dim(g, model.spec.emb_dim) // g.line_bytes
        counts += context.counts[name]
        lines += [row_lines] * len(context.counts[name])
        owners += [number] * len(context.counts[name])
    rows = allocate_static(counts, lines, g.emb.static_lines)
    return {number: tuple(r for r, owner in zip(rows, owners) if owner == number) for number in range(len(used))}


def _program(config, context, stages, queries, point):
    from ..host.driver.chip import ChipSetup, Schedule, Stage, compile_queries

    used = list(dict.fromkeys(stage.model for stage in stages))
    models = context.models
    setup = ChipSetup(config, [models[name] for name in used], static_rows=_static_rows(config, context, used))
    query_set = [setup.add_query({models[name]: context.inputs[q][name] for name in used}) for q in queries]
    schedule = Schedule(split=None if point.split == "auto" else point.split,
                        sub_batch=None if point.sub_batch == "auto" else point.sub_batch, **MODES[point.mode])
    return compile_queries(setup, [Stage(models[stage.model], k=stage.k) for stage in stages], query_set, schedule)


def _utilisation(row):
    busy = row["utilisation"]
    lanes = [value for unit, value in busy.items() if unit.startswith("lane")]
    return {"util_lanes": float(np.mean(lanes)), "util_lane_max": max(lanes),
            **{f"util_{unit}": busy[unit] for unit in ("fetch", "embedding", "join", "interaction", "weights")},
            "util_topk": max((v for u, v in busy.items() if u.startswith("topk")), default=0.0),
            "util_filter": max((v for u, v in busy.items() if u.startswith("filter")), default=0.0)}


def evaluate_point(point, context, *, area=None):
    """Evaluate one point on the chip's timed model: the task each worker runs.

    Each query runs alone (its latency: the window from its first command to its last response, after the memory
    image and the setup), then every query back to back (the throughput, the busy shares, caches and memory
    lines); NDCG@``ndcg_k`` is measured on the back-to-back run's rankings against the queries' labels, and
    RecPipe's analytical model (:func:`rpaccel.sim.model.recpipe.recpipe_query`) estimates the same stages and
    split at the configuration's clock.

    Parameters
    ----------
    point : Point
    context : SweepContext
    area : dict, optional
        ``{key: (LUTs, source)}`` of synthesis figures (:func:`run_sweep`'s ``area``).

    Returns
    -------
    dict
        The point's row (:data:`COLUMNS`): status ``refused`` with the configuration's or the compiler's message,
        ``failed`` with the reason (a stall, responses that differ from the golden model's, an error of the model),
        or ``ok``.
    """
    from ..config import ConfigError
    from ..host.driver.chip import CompileError
    from ..host.quality import ndcg
    from ..host.reference import MLPError
    from ..host.runtime.pipeline import parse_pipeline
    from ..host.runtime.stats import loadgen_percentile
    from ..sim.model.chip import ModelDevice
    from ..sim.model.recpipe import RecPipeStage, recpipe_query
    from .accel import measure
    from .report import ExperimentFailed

    started = time.perf_counter()
    row = {**point.parameters(), **dict.fromkeys(FIGURES, "")}
    row["models"] = context.fingerprint
    refusal = point.refusal()
    if refusal is not None:
        return {**row, "status": "refused", "error": _one_line(refusal), "seconds": time.perf_counter() - started}
    try:
        config = point.config()
        stages = parse_pipeline(point.pipeline)
        singles = [_program(config, context, stages, [q], point) for q in range(point.queries)]
        together = _program(config, context, stages, range(point.queries), point) if point.queries > 1 else None
    except (ConfigError, CompileError, MLPError) as error:
        return {**row, "status": "refused", "error": _one_line(error), "seconds": time.perf_counter() - started}
    failures, latencies = [], []
    try:
        for program in singles:
            single, failure = measure(config, program, ModelDevice(config))
            latencies.append(single["cycles_per_query"])
            failures.append(failure)
        if together is not None:
            run, failure = measure(config, together, ModelDevice(config))
            failures.append(failure)
        else:
            run = single
    except ExperimentFailed as error:                   # the model stalled
        return {**row, "status": "failed", "error": _one_line(error), "seconds": time.perf_counter() - started}
    except Exception as error:                          # the model's own error: the point's row says which
        return {**row, "status": "failed", "error": _one_line(error, type(error).__name__),
                "seconds": time.perf_counter() - started}
    clock = config.clock_mhz
    program = together or singles[0]
    labels = [context.labels[q][[index for _, index in ranking[:point.ndcg_k]]]
              for q, ranking in enumerate(run["rankings"])]
    queries, cache = point.queries, run["cache"]
    row.update(run_split=program.split, run_sub_batch=program.sub_batch,
               cycles_per_query=float(np.mean(latencies)), latency_us=float(np.mean(latencies)) / clock,
               p50_latency_us=loadgen_percentile(latencies, 0.5) / clock,
               p95_latency_us=loadgen_percentile(latencies, 0.95) / clock,
               throughput_cycles_per_query=run["cycles_per_query"], qps=clock * 1e6 / run["cycles_per_query"],
               ndcg=float(np.mean(ndcg(np.stack(labels), point.ndcg_k))), **_utilisation(run),
               static_hit_rate=cache["static_hit_rate"], line_hit_rate=cache["line_hit_rate"],
               lookups_per_query=cache["lookups"] / queries, line_misses_per_query=cache["line_misses"] / queries,
               mem_read_lines_per_query=run["mem_read_lines"] / queries,
               mem_write_lines_per_query=run["mem_write_lines"] / queries, checked=not any(failures))
    items, estimate_stages = point.candidates, []
    for stage in stages:
        estimate_stages.append(RecPipeStage(context.models[stage.model].spec, items, stage.k))
        items = stage.k
    try:
        estimate = recpipe_query(config, estimate_stages, split=1 if point.mode != "rpaccel" else program.split,
                                 clock_ns=config.clock_period_ns)
        row.update(recpipe_cycles=estimate.cycles, recpipe_latency_us=estimate.cycles / clock,
                   recpipe_error=estimate.cycles / row["cycles_per_query"] - 1)
    except ValueError as error:
        row["note"] = f"RecPipe's model: {_one_line(error)}"
    if area and point.key in area:
        row["area_luts"], row["area_source"] = area[point.key]
    failure = next((f for f in failures if f), None)
    row["status"], row["error"] = ("failed", _one_line(failure)) if failure else ("ok", "")
    row["seconds"] = time.perf_counter() - started
    return row


def _one_line(error, kind=None):
    """``error``'s message on one line (a row is one line of the results file), after ``kind`` if given."""
    text = " ".join(str(error).split())
    return f"{kind}: {text}" if kind else text


# The results file ---------------------------------------------------------------------------------------------------

def _header():
    return ",".join(COLUMNS) + "\n"


def _cell(value):
    """A value as the results file holds it: numbers exactly (``repr`` of a float), a tuple as ``1,2``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return _text(value)


def _line(row):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_cell(row.get(c)) for c in COLUMNS])
    return buffer.getvalue()


def _value(text):
    """A cell of the results file as a number where it is one."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)


#: The columns of text (the others are numbers, ``auto``, True/False or empty).
_TEXT = ("key", "status", "error", "config", "pipeline", "models", "area_source", "note", "splits", "target", "mode")


def read_row(line):
    """A row of the results file from its line (:func:`read_results` reads every line this way).

    Raises
    ------
    ValueError
        If the line is not a row: not :data:`COLUMNS`' number of cells, no key of 16 hex digits, or no status.
    """
    cells = next(csv.reader([line]), [])
    if len(cells) != len(COLUMNS) or not _KEY.match(cells[0]) or cells[1] not in STATUSES:
        raise ValueError(f"{len(cells)} cells of {len(COLUMNS)}, key {cells[0][:20] if cells else ''!r}")
    return {column: cells[i] if column in _TEXT else _value(cells[i]) for i, column in enumerate(COLUMNS)}


def read_results(path):
    """The rows of a sweep's results file, and the bytes of a half-written last line (0 if none).

    A line is complete when it ends with a newline (each row is written as one line and flushed); a last line
    without one is what a killed run left half-written, and is not read. Every complete line must be a row of
    :data:`COLUMNS` with a key and a status.

    Returns
    -------
    (list of dict, int)

    Raises
    ------
    SweepFileError
        If the file's first line is not the header of :data:`COLUMNS` (another file, or a sweep of another version)
        or a complete line is not a row.
    """
    data = Path(path).read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    partial = len(data) - len(complete)
    if not complete:
        if data and not _header().encode().startswith(data):
            raise SweepFileError(f"{path} is not a sweep's results file (its first line is not the header)")
        return [], partial
    lines = complete.decode("utf-8", errors="replace").split("\n")[:-1]
    if lines[0] + "\n" != _header():
        raise SweepFileError(f"{path} is not a sweep's results file of this version (its header is not "
                             f"{len(COLUMNS)} columns key,status,...,note); name a new file")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            rows.append(read_row(line))
        except ValueError as error:
            raise SweepFileError(f"{path} line {number} is not a sweep row ({error}); the file is left as it "
                                 "is") from None
    return rows, partial


class _Writer:
    """Appends rows to the results file, one flushed line each, holding an exclusive lock on it."""

    def __init__(self, path, partial):
        import fcntl

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "ab")   # noqa: SIM115 (closed by close())
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise SweepFileError(f"{path} is being written by another sweep") from None
        if partial:
            self.handle.truncate(self.handle.seek(0, os.SEEK_END) - partial)
        if self.handle.seek(0, os.SEEK_END) == 0:
            self._write(_header())

    def _write(self, text):
        self.handle.write(text.encode())
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def write(self, row):
        self._write(_line(row))

    def close(self):
        self.handle.close()


# Pareto fronts and the plot -------------------------------------------------------------------------------------------

def pareto_front(xs, ys, *, minimise_x):
    """Indices of the points on the Pareto front of ``ys`` (higher is better) against ``xs`` (lower is better with
    ``minimise_x``, else higher), in the order of ``xs``: no other point is at least as good in both and better in
    one."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    order = np.lexsort((-ys, xs if minimise_x else -xs))
    front, best = [], -np.inf
    for i in order:
        if ys[i] > best:
            front.append(int(i))
            best = ys[i]
    return front


def _usable(rows):
    return [r for r in rows if r["status"] == "ok" and isinstance(r.get("ndcg"), (int, float))]


def plot_sweep(rows, path, *, title=None):
    """Plot the measured points of ``rows``: NDCG against p95 latency and against throughput (and against area
    where a row has one), each point coloured by pipeline and shaped by mode, the Pareto front drawn and its
    points ringed. The file type follows ``path``'s suffix; the file appears only once it is complete.

    Returns
    -------
    pathlib.Path
    """
    from ..host.quality import check_plot_path, save_figure
    from .report import ExperimentError

    check_plot_path(path)
    rows = _usable(rows)
    if not rows:
        raise ExperimentError("plot", "has no measured point to draw (every point was refused or failed)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter


    panels = [("p95_latency_us", "p95 latency per query (us, log scale)", True),
              ("qps", "throughput (queries per second at the clock, log scale)", False)]
    if any(isinstance(r.get("area_luts"), (int, float)) for r in rows):
        panels.append(("area_luts", "area (LUTs, synthesis)", True))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.0), dpi=120, squeeze=False)
    pipelines = list(dict.fromkeys(r["pipeline"] for r in rows))
    colours = plt.get_cmap("tab10")
    markers = dict(zip(MODES, "os^"))
    for ax, (column, label, minimise) in zip(axes[0], panels):
        sub = [r for r in rows if isinstance(r.get(column), (int, float))]
        for p, pipeline in enumerate(pipelines):
            for mode, marker in markers.items():
                pts = [r for r in sub if r["pipeline"] == pipeline and r["mode"] == mode]
                if pts:
                    ax.scatter([r[column] for r in pts], [r["ndcg"] for r in pts], s=18, marker=marker,
                               color=colours(p % 10), alpha=0.6, linewidths=0,
                               label=f"{pipeline} ({mode})")
        front = [sub[i] for i in pareto_front([r[column] for r in sub], [r["ndcg"] for r in sub],
                                              minimise_x=minimise)]
        ax.step([r[column] for r in front], [r["ndcg"] for r in front], where="post", color="black", lw=1,
                label="Pareto front")
        ax.scatter([r[column] for r in front], [r["ndcg"] for r in front], s=70, facecolors="none",
                   edgecolors="black", linewidths=1.2)
        if column != "area_luts":
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else
                                                       f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(f"NDCG@{rows[0]['ndcg_k']} (RecPipe's)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle(title or f"Design-space sweep on the chip's timed model: {len(rows)} measured points",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# The sweep -------------------------------------------------------------------------------------------------------

def area_figures(spec, results):
    """``{point key: (LUTs, source)}`` for the points whose configuration a synthesis result measured.

    ``results`` are the dicts ``rpaccel synth accel --json`` (or ``parts``) prints; a result's ``preset`` names its
    configuration as ``--set`` builds it (``small+array_cols=16``), which is rebuilt and compared field by field
    (not by name) with each point's. Points without one get none: no area is estimated.
    """
    from ..config import ConfigError, preset

    measured = []
    for result in results:
        if not isinstance(result, dict) or result.get("component") not in ("accel", "parts"):
            continue
        name, *settings = str(result.get("preset", "")).split("+")
        try:
            config = preset(name).with_settings(settings)
        except ConfigError:
            continue
        luts = (result.get("cells") or {}).get("luts")
        if isinstance(luts, int):
            measured.append(({f: getattr(config, f) for f in CONFIG_AXES}, luts,
                             f"synth {result['component']} on {result.get('target', '?')}"))
    figures = {}
    for point in spec.points:
        for config_fields, luts, source in measured:
            if dict(point.config_fields) == config_fields:
                figures[point.key] = (luts, source)
                break
    return figures


def _summary(row):
    if row["status"] != "ok":
        return f"{row['status']}: {row['error']}"
    return (f"p95 {row['p95_latency_us']:,.1f} us, {row['qps']:,.0f} QPS, NDCG@{row['ndcg_k']} {row['ndcg']:.4f}")


def run_sweep(spec, *, out, workers=None, scheduler=None, plot=None, area=None, progress=None):
    """Run the points of ``spec`` not yet in ``out`` on a Dask cluster, appending a row per point as it completes.

    Parameters
    ----------
    spec : SweepSpec
        From :func:`load_spec` or :func:`parse_spec`.
    out : path-like
        The results CSV (:data:`COLUMNS`). If it exists it must be a sweep's: its rows' points are not run again
        (a half-written last line, from a killed run, is dropped and said so); nothing in it is rewritten.
    workers : int, optional
        Worker processes of the local cluster (default: the machine's cores). Not with ``scheduler``.
    scheduler : str, optional
        The address of a running Dask scheduler (``tcp://host:8786``) whose workers can import rpaccel; default: a
        local cluster, closed at the end.
    plot : path-like, optional
        Where to draw :func:`plot_sweep` of the sweep's rows (those run now and before).
    area : list of dict, optional
        Synthesis results (:func:`area_figures`) giving the area of the points they measured.
    progress : callable, optional
        Called with a line per step and per completed point.

    Returns
    -------
    Report
        The rows of the sweep's points (from the file and run now), a table of the Pareto fronts, and in ``data``
        the counts: ``points``, ``done_before``, ``evaluated``, ``refused``, ``failed``, ``dropped_bytes``.
        A failure for every point that failed (a stall, responses that differ from the golden model's).

    Raises
    ------
    ExperimentError
        On ``workers`` that is not a positive integer or is given with ``scheduler``.
    SweepFileError
        If ``out`` is not a sweep's results file or another sweep is writing it.
    """
    say = progress or (lambda line: None)
    if workers is not None:
        check_positive(workers=workers)
        if scheduler is not None:
            raise ExperimentError("workers", "sizes the local cluster; the scheduler's cluster has its own workers")
    out = Path(out)
    before, partial = read_results(out) if out.exists() else ([], 0)
    if partial:
        say(f"{out}: dropped a half-written last line ({partial} bytes) left by an interrupted run")
    done = {row["key"]: row for row in before}
    todo = [point for point in spec.points if point.key not in done]
    say(f"{len(spec.points)} points: {len(spec.points) - len(todo)} already in {out}, {len(todo)} to run")
    writer = _Writer(out, partial)
    new, started = [], time.monotonic()
    labels = {point.key: point.label() for point in spec.points}
    areas = area_figures(spec, area) if area else None
    try:
        if todo:
            # The cluster first (a scheduler that cannot be reached fails before the training); an interruption
            # (Ctrl-C) closes it, and the rows written stay.
            with _client(workers, scheduler, say) as client:
                say(f"training {', '.join(spec.models)} on {spec.train_samples:,} synthetic samples ...")
                context = prepare_context(spec)
                say(f"  trained and quantised in {context.train_seconds:.1f} s (models {context.fingerprint})")
                for row in _run_points(client, todo, context, areas):
                    writer.write(row)
                    new.append(row)
                    say(f"[{len(new)}/{len(todo)}, {time.monotonic() - started:,.0f} s] {labels[row['key']]}: "
                        f"{_summary(row)}")
    finally:
        writer.close()
    keys = {point.key for point in spec.points}
    rows = [row for row in before if row["key"] in keys] + [_parsed(row) for row in new]
    order = {point.key: i for i, point in enumerate(spec.points)}
    rows.sort(key=lambda row: order[row["key"]])
    if plot is not None:
        plot_sweep(rows, plot)
    return _report(spec, rows, before, new, partial, time.monotonic() - started, out, plot)


def _parsed(row):
    """A row as the results file gives it back (numbers, text; the tuple field as text)."""
    return read_row(_line(row))


@contextmanager
def _client(workers, scheduler, say):
    """A Dask client of a local cluster of ``workers`` processes (closed with it), or of ``scheduler``'s."""
    import logging

    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        say(f"local Dask cluster: {len(cluster.workers)} worker processes at {cluster.scheduler_address}")
    try:
        try:
            client = Client(cluster if cluster is not None else scheduler)
        except (OSError, TimeoutError) as error:
            raise ExperimentError("scheduler", f"{scheduler}: cannot connect ({error})") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def _run_points(client, points, context, areas):
    """Yield each point's row as it completes: configurations that are refused at once, the rest as Dask tasks."""
    from dask.distributed import as_completed

    tasks = []
    for point in points:
        if point.refusal() is None:
            tasks.append(point)
        else:
            yield evaluate_point(point, context)
    shared = client.scatter(context, broadcast=True)
    futures = {client.submit(evaluate_point, point, shared, area=areas, pure=False): point for point in tasks}
    for future in as_completed(futures):
        try:
            yield future.result()
        except Exception as error:      # the task itself failed: a worker died, or it could not be run
            point = futures[future]
            yield {**point.parameters(), **dict.fromkeys(FIGURES, ""), "status": "failed",
                   "error": _one_line(error, type(error).__name__), "models": context.fingerprint}


def _report(spec, rows, before, new, partial, seconds, out, plot):
    from ..results import format_table

    counts = {"points": len(spec.points), "done_before": len(spec.points) - len(new), "evaluated": len(new),
              "refused": sum(r["status"] == "refused" for r in rows),
              "failed": sum(r["status"] == "failed" for r in rows), "dropped_bytes": partial,
              "other_rows": len(before) - (len(spec.points) - len(new)), "seconds": seconds}
    usable = _usable(rows)
    fronts = set()
    for column, minimise in (("p95_latency_us", True), ("qps", False)):
        fronts.update(usable[i]["key"] for i in pareto_front([r[column] for r in usable],
                                                             [r["ndcg"] for r in usable], minimise_x=minimise))
    changes = {point.key: point.label() for point in spec.points}
    front_rows = sorted((r for r in usable if r["key"] in fronts), key=lambda r: r["p95_latency_us"])
    table = format_table(
        ["point", "p95 latency us", "QPS", f"NDCG@{spec.ndcg_k}", "RecPipe model us", "lanes busy",
         "line hit rate"],
        [[changes[r["key"]], f"{r['p95_latency_us']:,.1f}", f"{r['qps']:,.0f}", f"{r['ndcg']:.4f}",
          "-" if r["recpipe_latency_us"] is None else f"{r['recpipe_latency_us']:,.1f}",
          f"{100 * r['util_lanes']:.0f}%", f"{100 * r['line_hit_rate']:.0f}%"] for r in front_rows])
    models = sorted({r["models"] for r in rows if r["models"]})
    lines = [f"Sweep of {counts['points']} points on the chip's timed model (base {spec.base.name}; "
             f"{spec.candidates:,} candidates, {spec.queries} queries, models trained on {spec.train_samples:,} "
             f"samples, seed {spec.seed}): {counts['evaluated']} evaluated now in {seconds:,.0f} s, "
             f"{counts['done_before']} already in {out}; {len(usable)} measured, {counts['refused']} refused, "
             f"{counts['failed']} failed.",
             "", "Pareto front (NDCG against p95 latency or against throughput):", "", table]
    if counts["other_rows"]:
        lines += ["", f"{out} also holds {counts['other_rows']} rows of points not in this sweep (left as they are, "
                  "not in the figures)."]
    if len(models) > 1:
        lines += ["", f"The rows were measured with {len(models)} different sets of models ({', '.join(models)}): "
                  "training was not reproduced; rows of different models do not compare."]
    if plot is not None:
        lines += ["", f"Plot: {plot}"]
    text = "\n".join(lines) + "\n"
    failures = tuple(f"{changes[r['key']]}: {r['error']}" for r in rows if r["status"] == "failed")
    return Report(rows=rows, text=text, data={**counts, "rows": rows},
                  sections=(Section("sweep", f"Design-space sweep ({spec.base.name}, timed model)", text),),
                  failures=failures)

