"""RecPipe's headline claim against a TPU-like baseline, at iso-quality, on the chip's timed model (issue 22).

RecPipe's abstract: at iso-quality, RPAccel improves latency by 3x and throughput by 6x over prior art, whose code
names a TPU-like accelerator (one monolithic 128 x 128 array, no sub-batching, one cache). Here both run on the
same design in the whole chip's timed model (:mod:`rpaccel.sim.model.chip`): the baseline is RecPipe's 1-stage
RM-large on the whole array in baseline mode (sub-batches one after another, every logit to the host, which sorts);
RPAccel runs 2- and 3-stage pipelines in RPAccel mode on the array split as RecPipe's configurations split it.

Quality is measured, not assumed, in two steps:

* **quality**: NDCG@k of the baseline and of every candidate pipeline (:func:`candidate_pipelines`: the first
  stages' models and the items each stage keeps) on many queries (hundreds), each query's ranking computed by the
  integer reference (:mod:`rpaccel.host.reference`: the chip's logits bit for bit; top-k ties to the lower candidate
  index, as the chip breaks them) against the synthetic data's labels, paired per query against the baseline. A
  pipeline is at **iso-quality** when the confidence interval of that paired difference (Student's t, 95%) lies
  above minus a stated margin (:data:`ISO_MARGIN` points of NDCG): a non-inferiority test;
* **time**: p95 latency (each query alone, over the timed queries) and throughput (the timed queries back to back)
  on the timed model, on the first few of the same queries, for the baseline, RecPipe's own 2- and 3-stage
  pipelines, and each iso-quality pipeline no other iso-quality pipeline of the same models dominates (as few items
  or fewer at every stage). Every ranking the timed model returns is checked against the reference's, so the
  quality measured on many queries is the timed pipeline's.

RecPipe's method picks the cheapest pipeline at iso-quality: the RPAccel row is the iso-quality row of the lowest
p95 latency (for the latency claim) and of the highest throughput (for the throughput claim); without one, the
section names the pipeline that came closest and by how much. RecPipe's own analytical model
(:mod:`rpaccel.sim.model.recpipe`) gives its figure for the same stages and split beside ours.

The models (RM-small, RM-med, RM-large of the zoo, trained on synthetic Criteo-format data and quantised) are
cached in the project's build cache (:mod:`rpaccel.sim.cache`, kind ``models``), keyed by their settings and the
training and quantisation code: a rerun with the same settings loads them.

On each split RPAccel runs twice where the stage mapping (:func:`rpaccel.host.runtime.mapping.choose_mapping`, for
throughput, on that split, at the lanes' full sub-batch) finds a better lane map than the compiler's default (stage
``s`` on lane ``s`` alone): the default row, and a row with the chosen map (the lanes of each stage; consecutive
queries on a stage's lanes in turn). One query alone runs each stage on one lane either way, so the chosen map
changes the throughput; its latency is measured again all the same.

Quality against cost, as RecPipe's figures show it: a further table gives each timed configuration's NDCG@k, p95
latency and throughput beside the baseline's, and whether it is on the Pareto front (no other configuration at least
as good in quality and in that cost, better in one); :func:`plot_claims` draws them, NDCG against p95 latency and
against throughput, one marker per configuration, the baseline's iso-quality line and the Pareto fronts.
"""

import itertools
import math
import os
import time
from pathlib import Path

import numpy as np

from ..results import RESULTS_FILE
from .report import ExperimentError, Report, Section, check_positive, check_seed
from .sweep import pareto_front

__all__ = ["CONFIDENCE", "ISO_MARGIN", "RECPIPE_SPLITS", "candidate_pipelines", "paired_interval", "plot_claims",
           "quality_cost", "run_claims", "t_quantile", "trained_models"]

#: RecPipe's configurations of the 128 x 128 array: one array, 4 x 64 x 64, 16 x 32 x 32, 64 x 16 x 16.
RECPIPE_SPLITS = (1, 4, 16, 64)
#: The non-inferiority margin of iso-quality, in points of NDCG (hundredths): a pipeline is at iso-quality when the
#: confidence interval of its paired difference from the baseline lies above minus this.
ISO_MARGIN = 0.5
#: The confidence of the paired difference's interval (two-sided).
CONFIDENCE = 0.95
#: RecPipe's candidates per query, the reference of the kept counts below (scaled with the candidates).
RECPIPE_CANDIDATES = 4096
#: The candidate pipelines' first stages (model, then the items it keeps, at 4,096 candidates) of 2-stage pipelines
#: ending in RM-large, and (items the first keeps, items the second keeps) of 3-stage RM-small -> RM-med ->
#: RM-large; RecPipe's own come first.
TWO_STAGE = (("rm-small", 512), ("rm-small", 1024), ("rm-small", 2048),
             ("rm-med", 512), ("rm-med", 1024), ("rm-med", 2048))
THREE_STAGE = ((512, 128), (1024, 256), (2048, 512))
#: Samples the models are quantised on (they follow the training samples; the queries follow them).
CALIBRATION = 8_192
#: Samples per training step.
TRAIN_BATCH = 1024
#: Queries scored by the reference at a time (their model inputs are the memory the quality step needs).
QUALITY_CHUNK = 16


def t_quantile(p, df):
    """Student's t distribution's quantile ``p`` (``0.5 <= p < 1``) at ``df`` degrees of freedom, by integrating its
    density (accurate to about 1e-6 for the quantiles of confidence intervals).

    Raises
    ------
    ValueError
        On ``p`` outside ``[0.5, 1)``, ``df`` below 1, or a quantile beyond 64 (``df = 1`` and ``p`` above 0.995).
    """
    if not 0.5 <= p < 1:
        raise ValueError(f"p must be in [0.5, 1), not {p!r}")
    if not df >= 1:
        raise ValueError(f"df must be at least 1, not {df!r}")
    x = np.linspace(0.0, 64.0, 1 << 18)
    log_scale = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_scale - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])
    if p > cdf[-1]:
        raise ValueError(f"the t quantile {p} at {df} degrees of freedom lies beyond 64")
    return float(np.interp(p, cdf, x))


def paired_interval(values, reference, *, confidence=CONFIDENCE, margin=ISO_MARGIN):
    """The paired difference ``values - reference`` (per query, on the same queries) in points (hundredths) and
    its confidence interval (Student's t), and whether it shows iso-quality.

    Parameters
    ----------
    values, reference : array_like
        Per-query figures (NDCG) of a pipeline and of the reference, at least two queries.
    confidence : float
        The two-sided interval's confidence.
    margin : float
        The non-inferiority margin, in points.

    Returns
    -------
    dict
        ``points`` (the mean difference), ``error`` (its standard error), ``low`` and ``high`` (the interval), and
        ``iso`` (``low >= -margin``).
    """
    from ..host.quality import paired_difference

    values, reference = 100 * np.asarray(values, dtype=np.float64), 100 * np.asarray(reference, dtype=np.float64)
    if values.ndim != 1 or values.shape != reference.shape or len(values) < 2:
        raise ValueError(f"a paired interval needs at least two paired queries, not {values.shape} and "
                         f"{reference.shape}")
    mean, error = paired_difference(values, reference)
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * error
    return {"points": mean, "error": error, "low": mean - half, "high": mean + half, "iso": mean - half >= -margin}


def candidate_pipelines(candidates=RECPIPE_CANDIDATES, k=64):
    """The RPAccel pipelines the bench considers, as :class:`rpaccel.host.runtime.pipeline.StageSpec` tuples:
    2-stage RM-small or RM-med -> RM-large and 3-stage RM-small -> RM-med -> RM-large, the items each stage keeps
    (:data:`TWO_STAGE`, :data:`THREE_STAGE`) scaled from RecPipe's 4,096 candidates to ``candidates``, the last stage
    keeping ``k``; RecPipe's own (4096 -> 512 -> 64, 4096 -> 512 -> 128 -> 64) first. A pipeline whose kept counts
    do not fall strictly from ``candidates`` to ``k`` at that scale is left out."""
    shapes = [((first, kept), ("rm-large", None)) for first, kept in TWO_STAGE]
    shapes += [(("rm-small", one), ("rm-med", two), ("rm-large", None)) for one, two in THREE_STAGE]
    out = []
    for shape in shapes:
        pipeline = _scaled(shape, candidates, k)
        if pipeline is not None and pipeline not in out:
            out.append(pipeline)
    return out


def _scaled(shape, candidates, k):
    """The pipeline of ``shape`` (``(model, kept at 4,096 candidates)`` per stage, the last one's kept ``None``: it
    keeps ``k``) at ``candidates``, or None if its kept counts do not fall strictly from ``candidates`` to ``k``."""
    from ..host.runtime.pipeline import parse_pipeline

    keeps = [k if kept is None else kept * candidates // RECPIPE_CANDIDATES for _, kept in shape]
    if not all(a > b for a, b in itertools.pairwise([candidates, *keeps])):
        return None
    items = [candidates, *keeps[:-1]]
    return parse_pipeline(",".join(f"{model}:{n}:{kept}" for (model, _), n, kept in zip(shape, items, keeps)))


def _text(stages):
    return ",".join(map(str, stages))


def trained_models(specs, *, train_samples, seed, data, epochs=1, batch=TRAIN_BATCH, calibration=CALIBRATION,
                   progress=None):
    """``specs`` (``{name: ModelSpec}``) trained on ``train_samples`` synthetic samples of ``data`` and quantised on
    the ``calibration`` samples after them (:func:`rpaccel.experiments.accel.train_models`), from the build cache
    when they were trained before with the same settings and the same training code.

    Returns
    -------
    (dict, SyntheticCriteo, float, bool)
        ``{name: QuantModel}``, the data's generator, the seconds spent (training, or loading) and whether the
        models came from the cache.
    """
    from ..host import data as data_module
    from ..host import models as models_module
    from ..host import quant, reference, train
    from ..host.data import SyntheticCriteo
    from ..host.quant import load_quantized, save_quantized
    from ..numeric import __file__ as numeric_file
    from ..sim.cache import cache_entry, digest, mark_complete, source_digest
    from .accel import train_models

    code = source_digest(*(module.__file__ for module in (data_module, models_module, quant, reference, train)),
                         numeric_file)
    key = digest("claims-models", {name: spec.to_json() for name, spec in sorted(specs.items())}, train_samples,
                 calibration, epochs, batch, seed, repr(data), code)
    started = time.monotonic()
    with cache_entry("models", key) as (folder, complete):
        if complete:
            models = {name: load_quantized(folder / f"{name}.npz")[0] for name in specs}
            return models, SyntheticCriteo(data), time.monotonic() - started, True
        if progress:
            progress(f"training {', '.join(specs)} on {train_samples:,} synthetic samples ({epochs} epoch(s), batch "
                     f"{batch}) ...")
        models, generator, seconds = train_models(specs, train_samples=train_samples, calibration=calibration,
                                                  seed=seed, data=data, epochs=epochs, batch=batch)
        for name, model in models.items():
            save_quantized(folder / f"{name}.npz", model, meta={"train_samples": train_samples, "seed": seed})
        mark_complete(folder)
    return models, generator, seconds, False


def run_claims(preset="paper", *, candidates=4096, queries=16, quality_queries=256, splits=RECPIPE_SPLITS, k=64,
               seed=1, train_samples=1_000_000, epochs=1, margin=ISO_MARGIN, pipelines=None, max_rows=5_000,
               plot=None, results=RESULTS_FILE, progress=None):
    """RPAccel (2- and 3-stage pipelines, RPAccel mode, each split) against the TPU-like baseline (1-stage
    RM-large, baseline mode, the whole array) at iso-quality: NDCG@k on ``quality_queries`` queries by the integer
    reference, paired against the baseline; latency, throughput and RecPipe's estimate on the timed model.

    Parameters
    ----------
    preset : str or rpaccel.config.AccelConfig
        The configuration, or a preset's name (RecPipe's scale: ``paper``).
    candidates, k : int
        Candidates per query (RecPipe: 4,096) and the ranking's length (RecPipe: 64).
    queries : int
        Timed queries (each alone for latency, all back to back for throughput): the first of the quality queries.
    quality_queries : int
        Queries the NDCG is measured on (at least two, and at least ``queries``).
    splits : sequence of int
        Splits of the array RPAccel mode runs on (those the configuration has and the pipeline fills).
    seed, train_samples, epochs, max_rows : int
        Data and training (RM-small, RM-med, RM-large on synthetic Criteo-format data; :func:`trained_models`,
        cached) and table sizes.
    margin : float
        The non-inferiority margin of iso-quality, in points of NDCG.
    pipelines : sequence, optional
        The candidate RPAccel pipelines (each a :class:`~rpaccel.host.runtime.pipeline.StageSpec` tuple or its text,
        ``rm-small:4096:1024,rm-large:1024:64``; the first stage scores ``candidates``, the last keeps ``k``;
        default :func:`candidate_pipelines`).
    plot : path-like, optional
        Where to draw quality against cost (:func:`plot_claims`; the file type follows the suffix), linked from
        the section.
    results : path-like
        The results file the section's link to ``plot`` is relative to.

    Returns
    -------
    Report
        Section ``claims-<preset>``: the quality of every candidate pipeline, a row per timed configuration, the
        iso-quality verdict against RecPipe's 3x and 6x, and quality against cost (:func:`quality_cost`); a
        failure for any program whose responses differ from the golden model's, or whose ranking differs from the
        reference's.
    """
    from ..config import preset as get_preset
    from ..host.data import SyntheticConfig
    from ..host.driver.chip import ChipSetup, CompileError, Schedule, Stage, compile_queries
    from ..host.models import ModelError, get_model
    from ..host.runtime.mapping import choose_mapping, describe_lanes
    from ..host.runtime.pipeline import PipelineError, parse_pipeline
    from ..sim.model.chip import ModelDevice
    from ..sim.model.recpipe import RecPipeStage, recpipe_query
    from .accel import measure_program

    check_seed(seed)
    check_positive(candidates=candidates, queries=queries, quality_queries=quality_queries, k=k,
                   train_samples=train_samples, epochs=epochs, max_rows=max_rows)
    if quality_queries < max(2, queries):
        raise ExperimentError("quality_queries", f"must be at least 2 and at least the {queries} timed queries, not "
                              f"{quality_queries}")
    if not (isinstance(margin, (int, float)) and 0 <= margin < math.inf):
        raise ExperimentError("margin", f"must be a finite number of points >= 0, not {margin!r}")
    if plot is not None:
        from ..host.quality import check_plot_path

        try:
            check_plot_path(plot)
        except ValueError as error:
            raise ExperimentError("plot", str(error)) from None
    config = get_preset(preset) if isinstance(preset, str) else preset
    preset = config.name
    bad = [n for n in splits if n not in config.splits]
    if bad:
        raise ExperimentError("splits", f"{bad} are not splits of {preset} {config.splits}")
    if k > config.k_max:
        raise ExperimentError("k", f"a ranking of {k} is longer than {preset}'s top-k units keep ({config.k_max})")
    if k >= candidates:
        raise ExperimentError("k", f"must be below the {candidates:,} candidates, not {k}")
    try:
        pipelines = candidate_pipelines(candidates, k) if pipelines is None else [
            parse_pipeline(p) if isinstance(p, str) else tuple(p) for p in pipelines]
    except PipelineError as error:
        raise ExperimentError("pipelines", str(error)) from None
    for stages in pipelines:
        if stages[0].items != candidates or stages[-1].k != k:
            raise ExperimentError("pipelines", f"{_text(stages)} must score the {candidates:,} candidates first and "
                                  f"keep {k} last")
    if not pipelines:
        raise ExperimentError("pipelines", f"none fits {candidates:,} candidates and k = {k}")
    baseline = parse_pipeline(f"rm-large:{candidates}:{k}")
    say = progress or (lambda line: None)
    names = sorted({stage.model for stages in (baseline, *pipelines) for stage in stages})
    try:
        specs = {name: get_model(name, max_rows=max_rows) for name in names}
    except (KeyError, ModelError) as error:
        raise ExperimentError("pipelines", str(error)) from None
    models, generator, train_seconds, cached = trained_models(
        specs, train_samples=train_samples, epochs=epochs, seed=seed,
        data=SyntheticConfig.criteo(max_rows=max_rows, seed=seed), progress=say)
    say(f"models {'loaded from the cache' if cached else 'trained'} in {train_seconds:,.0f} s")
    first = train_samples + CALIBRATION

    say(f"quality: {len(pipelines) + 1} pipelines on {quality_queries} queries of {candidates:,} candidates, by the "
        "integer reference ...")
    started = time.monotonic()
    scored, references = _quality(models, generator, [baseline, *pipelines], queries=quality_queries,
                                  candidates=candidates, k=k, first=first, keep=queries)
    quality_seconds = time.monotonic() - started
    quality = {baseline: {"ndcg": float(scored[baseline].mean()), "points": 0.0, "error": 0.0, "low": 0.0,
                          "high": 0.0, "iso": True}}
    for stages in pipelines:
        quality[stages] = {"ndcg": float(scored[stages].mean()),
                           **paired_interval(scored[stages], scored[baseline], margin=margin)}
    plans = _timed_pipelines(pipelines, quality, candidates, k)
    say(f"  {quality_seconds:,.0f} s; at iso-quality: "
        f"{sum(quality[stages]['iso'] for stages in pipelines)} of {len(pipelines)}; timing {len(plans)}")

    records = generator.generate(queries * candidates, start=first)
    parts = [records.take(slice(q * candidates, (q + 1) * candidates)) for q in range(queries)]
    inputs = [{name: model.inputs(part) for name, model in models.items()} for part in parts]
    cases = [(baseline, "baseline", 1, "the baseline")]
    cases += [(stages, "rpaccel", split, why) for stages, why in plans for split in splits]
    rows, failures = [], []
    for stages, mode, split, why in cases:
        label = f"{_text(stages)} {mode}, split {split}"
        quality_row = quality[stages]

        def place(query_numbers, stages=stages):
            used = list(dict.fromkeys(stage.model for stage in stages))
            setup = ChipSetup(config, [models[name] for name in used])
            query_set = [setup.add_query({models[name]: inputs[q][name] for name in used}) for q in query_numbers]
            return setup, [Stage(models[stage.model], k=stage.k) for stage in stages], query_set

        def compile_for(query_numbers, schedule):
            return compile_queries(*place(query_numbers), schedule)

        def measure(program, what, label=label):
            run, figures = measure_program(program, ModelDevice(config))
            if run.mismatches():
                failures.append(f"{label}, {what}: the model's responses differ from the golden model's")
            return run, figures

        base = {"pipeline": len(stages), "stages": _text(stages),
                "models": " -> ".join(stage.model for stage in stages), "mode": mode, "split": split, "why": why,
                "ndcg": quality_row["ndcg"], "ndcg_queries": scored[stages].tolist(),
                **{key: quality_row[key] for key in ("points", "error", "low", "high", "iso")}}
        default = Schedule(mode, split=split)
        try:
            compile_for([0], default)
        except CompileError as error:
            say(f"{label}: refused ({error})")
            rows.append({**base, "refused": str(error)})
            continue
        estimate = recpipe_query(config, [RecPipeStage(models[stage.model].spec, stage.items, stage.k)
                                          for stage in stages], split=split, clock_ns=1000 / config.clock_mhz)
        started = time.perf_counter()
        if mode == "rpaccel":
            say(f"{label}: the stage mapping for {queries} queries back to back, on the model ...")
            choice = choose_mapping(*place(range(queries)), objective="throughput", splits=[split],
                                    sub_batches=(1,), keep=1,
                                    measure=lambda program: measure(program, "back to back")[1]["cycles"])
            mapped = [(default, choice.default["cycles"])]
            if choice.best is not choice.default:
                mapped.append((choice.schedule, choice.best["cycles"]))
            tried = {"candidates": len(choice.rows), "refused": choice.refused,
                     "measured": sum(row["cycles"] is not None for row in choice.rows)}
        else:
            say(f"{label}: {queries} queries back to back, on the model ...")
            _, figures = measure(compile_for(range(queries), default), "back to back")
            mapped, tried = [(default, figures["cycles"])], None
        for schedule, cycles in mapped:
            lanes = "default" if schedule.lanes is None else describe_lanes(schedule.lanes)
            say(f"{label}, lanes {lanes}: {queries} queries alone on the model ...")
            latencies = []
            for q in range(queries):
                program = compile_for([q], schedule)
                run, figures = measure(program, f"lanes {lanes}, query {q}")
                ranking = run.responses.ranking(program.tags[0]) if mode == "rpaccel" else run.expected.rankings[0]
                if [index for _, index in ranking] != references[stages][q].tolist():
                    failures.append(f"{label}, lanes {lanes}, query {q}: the ranking differs from the integer "
                                    "reference's, whose NDCG the section gives")
                latencies.append(figures["cycles"])
            per_query = cycles / queries
            rows.append({**base, "sub_batch": program.sub_batch, "lanes": lanes, "lane_map": schedule.lanes,
                         "mapping": tried, "latency_cycles": latencies,
                         "p95_cycles": float(np.percentile(latencies, 95)),
                         "p95_us": float(np.percentile(latencies, 95)) / config.clock_mhz,
                         "cycles_per_query": per_query, "qps": config.clock_mhz * 1e6 / per_query,
                         "recpipe_cycles": estimate.cycles, "seconds": time.perf_counter() - started})
            say(f"  p95 {rows[-1]['p95_us']:,.1f} us, {rows[-1]['qps']:,.0f} queries/s")
    settings = {"candidates": candidates, "queries": queries, "quality_queries": quality_queries, "k": k,
                "seed": seed, "train_samples": train_samples, "epochs": epochs, "batch": TRAIN_BATCH,
                "calibration": CALIBRATION, "margin": margin, "confidence": CONFIDENCE,
                "train_seconds": train_seconds, "cached": cached, "quality_seconds": quality_seconds}
    timed = dict(plans)
    settings["pipelines"] = [{"stages": _text(stages), "timed": timed.get(stages), **quality[stages]}
                             for stages in pipelines]
    text = _quality_table(config, models, baseline, pipelines, quality, plans, settings)
    text += "\n" + _table(config, rows, settings)
    measured = [row for row in rows if "refused" not in row]
    text += "\n" + _cost_table(quality_cost(measured), k)
    body = text
    if plot is not None and measured:
        path = plot_claims(measured, plot, k=k, title=f"Quality against cost on {preset} (timed model): NDCG@{k} "
                           f"on {quality_queries} queries of {candidates:,} candidates, time on {queries}")
        rel = os.path.relpath(Path(path).resolve(), Path(results).resolve().parent)
        body += f"\n![NDCG@{k} against p95 latency and throughput]({rel})\n"
    return Report(rows=rows, text=text,
                  data={"rows": rows, "preset": preset, "plot": plot and str(plot), "settings": settings},
                  failures=tuple(failures),
                  sections=(Section(f"claims-{preset}", f"RecPipe's claim: RPAccel against a TPU-like baseline "
                                    f"({preset}, timed model)", body),))


def _quality(models, generator, pipelines, *, queries, candidates, k, first, keep):
    """Each pipeline's NDCG@k on ``queries`` queries (``{stages: (queries,) array}``) by the integer reference,
    and its rankings of the first ``keep`` queries (``{stages: (keep, k) array}``)."""
    from ..host.quality import Pipeline, ndcg, run_pipeline
    from ..host.quality import Stage as QualityStage

    names = sorted({stage.model for stages in pipelines for stage in stages})
    runs = {stages: Pipeline(_text(stages), tuple(QualityStage(stage.model, stage.k) for stage in stages))
            for stages in pipelines}
    scored = {stages: np.empty(queries) for stages in pipelines}
    rankings = {stages: [] for stages in pipelines}
    for start in range(0, queries, QUALITY_CHUNK):
        count = min(QUALITY_CHUNK, queries - start)
        records = generator.generate(count * candidates, start=first + start * candidates)
        labels = np.asarray(records.labels, dtype=np.float64).reshape(count, candidates)
        scores = {name: models[name].logits(*models[name].inputs(records)).reshape(count, candidates)
                  for name in names}
        for stages, pipeline in runs.items():
            ranking = run_pipeline(pipeline, scores, k)
            scored[stages][start:start + count] = ndcg(np.take_along_axis(labels, ranking, axis=1), k)
            rankings[stages].append(ranking[:max(0, keep - start)])
    return scored, {stages: np.concatenate(parts) for stages, parts in rankings.items()}


def _timed_pipelines(pipelines, quality, candidates, k):
    """``[(stages, why)]``: RecPipe's own 2- and 3-stage pipelines among ``pipelines`` (4096 -> 512 -> 64 and
    4096 -> 512 -> 128 -> 64, scaled to ``candidates`` and ``k``, where they fit),
    and each iso-quality pipeline that no other iso-quality pipeline of the same models dominates (as many items or
    fewer at every stage: it cannot cost more)."""
    recpipe = [_scaled((TWO_STAGE[0], ("rm-large", None)), candidates, k),
               _scaled((("rm-small", THREE_STAGE[0][0]), ("rm-med", THREE_STAGE[0][1]), ("rm-large", None)),
                       candidates, k)]
    out = []
    for stages in pipelines:
        iso = quality[stages]["iso"]
        dominated = iso and any(
            other != stages and quality[other]["iso"] and [s.model for s in other] == [s.model for s in stages]
            and all(a.items <= b.items for a, b in zip(other, stages)) for other in pipelines)
        if stages in recpipe:
            out.append((stages, "RecPipe's" + (", at iso-quality" if iso else "")))
        elif iso and not dominated:
            out.append((stages, "at iso-quality, the fewest items of its models"))
    return out


def _interval(row):
    """``+0.04 [-0.10, +0.18]``: a row's paired difference from the baseline and its interval, in points."""
    return f"{row['points']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]"


def _quality_table(config, models, baseline, pipelines, quality, plans, settings):
    s, k = settings, settings["k"]
    macs = {name: model.spec.macs_per_item() for name, model in models.items()}

    def cost(stages):
        return sum(stage.items * macs[stage.model] for stage in stages)

    timed = dict(plans)
    lines = [f"Configuration {config.name} ({config.array_rows} x {config.array_cols}, {config.clock_mhz:g} MHz). "
             f"Synthetic Criteo-format data (seed {s['seed']}); RM-small, RM-med and RM-large trained on "
             f"{s['train_samples']:,} samples ({s['epochs']} epoch, batch {s['batch']}, Adam) and quantised on "
             f"{s['calibration']:,} more; queries of {s['candidates']:,} consecutive unseen samples.", "",
             f"Quality: NDCG@{k} (RecPipe's definition, against the data's labels) of every candidate pipeline on "
             f"{s['quality_queries']} queries, each ranking computed by the integer reference (the chip's logits bit "
             "for bit; the timed model's rankings of the timed queries are checked equal to it), paired per query "
             f"against the baseline: the mean difference in points (hundredths) and its {CONFIDENCE:.0%} confidence "
             f"interval (Student's t). **Iso-quality**: the interval lies above -{s['margin']:g} points (a "
             f"non-inferiority margin of {s['margin']:g} points of NDCG@{k}). Timed: the baseline, RecPipe's own "
             "2- and 3-stage pipelines, and each iso-quality pipeline no other iso-quality pipeline of the same "
             "models dominates (as many items or fewer at every stage).", "",
             f"| pipeline (MODEL:ITEMS:K per stage) | stages | NDCG@{k} | vs baseline (points, {CONFIDENCE:.0%} CI) "
             "| iso-quality | MACs per query vs baseline | timed |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- |",
             f"| {_text(baseline)} (baseline) | 1 | {quality[baseline]['ndcg']:.4f} | 0 | - | 100.0% | yes |"]
    for stages in pipelines:
        row = quality[stages]
        lines.append(f"| {_text(stages)} | {len(stages)} | {row['ndcg']:.4f} | {_interval(row)} | "
                     f"{'yes' if row['iso'] else 'no'} | {cost(stages) / cost(baseline):.1%} | "
                     f"{timed.get(stages, 'no')} |")
    return "\n".join(lines) + "\n"


def _table(config, rows, settings):
    k, queries = settings["k"], settings["queries"]
    measured = [row for row in rows if "refused" not in row]
    lines = [f"Time on the whole chip's timed model, the first {queries} of the queries: latency, each query alone "
             "(p95 over them); throughput, the queries back to back.", "",
             f"| pipeline | stages | mode | split | lanes per stage | sub-batch | p95 latency (us) | queries/s | "
             f"NDCG@{k} | vs baseline (points, {CONFIDENCE:.0%} CI) | iso-quality | RecPipe model (us) |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for row in rows:
        head = f"| {row['pipeline']}-stage | {row['stages']} | {row['mode']} | {row['split']} |"
        if row["mode"] == "baseline":
            quality = f"{row['ndcg']:.4f} | 0 | - |"
        else:
            quality = f"{row['ndcg']:.4f} | {_interval(row)} | {'yes' if row['iso'] else 'no'} |"
        if "refused" in row:
            lines.append(f"{head} - | - | refused | - | {quality} - |")
            continue
        lines.append(f"{head} {row['lanes']} | {row['sub_batch']} | {row['p95_us']:,.1f} | {row['qps']:,.1f} | "
                     f"{quality} {row['recpipe_cycles'] / config.clock_mhz:,.1f} |")
    baseline = next((row for row in measured if row["mode"] == "baseline"), None)
    rpaccel = [row for row in measured if row["mode"] == "rpaccel"]
    rivals = [row for row in rpaccel if row["iso"]]
    lines.append("")
    if baseline is None:
        lines.append("The baseline did not run: no comparison.")
    elif not rivals:
        closest = max(settings["pipelines"], key=lambda row: row["low"])
        lines.append(f"No RPAccel pipeline is at iso-quality on these queries: the closest, {closest['stages']}, "
                     f"differs from the baseline by {_interval(closest)} points of NDCG@{k}: its interval's lower "
                     f"end is {-settings['margin'] - closest['low']:.2f} points below the margin "
                     f"(-{settings['margin']:g}). No iso-quality comparison.")
    else:
        fastest = min(rivals, key=lambda row: row["p95_cycles"])
        busiest = max(rivals, key=lambda row: row["qps"])
        lines.append(f"At iso-quality, RecPipe's choice (the cheapest iso-quality configuration): p95 latency "
                     f"{baseline['p95_cycles'] / fastest['p95_cycles']:.2f}x better ({fastest['stages']}, split "
                     f"{fastest['split']}, lanes {fastest['lanes']}; RecPipe: 3x), throughput "
                     f"{busiest['qps'] / baseline['qps']:.2f}x ({busiest['stages']}, split {busiest['split']}, lanes "
                     f"{busiest['lanes']}; RecPipe: 6x).")
    lines += ["", "Lanes per stage: `default` is the compiler's map (stage s on lane s alone, the other lanes idle); "
              "otherwise the lane map the stage mapping chose for throughput on that split (`rpaccel.host.runtime."
              "mapping`: lane maps giving each stage up to as many lanes as queries in flight, estimated, the best "
              "measured against the default), stage by stage (`0-1 / 2-3`: the first stage on lanes 0 and 1, the "
              "second on 2 and 3), consecutive queries on a stage's lanes in turn; with "
              f"{queries} queries back to back a stage uses at most {queries} lanes."]
    return "\n".join(lines) + "\n"


def quality_cost(rows):
    """Each measured configuration's quality against its cost, beside the baseline's.

    Parameters
    ----------
    rows : list of dict
        :func:`run_claims`'s measured rows (``stages``, ``mode``, ``split``, ``lanes``, ``ndcg``, ``ndcg_queries``:
        each quality query's, ``p95_us``, ``qps``); the baseline is the row in baseline mode, if any.

    Returns
    -------
    list of dict
        In the order of ``rows``, each with ``ndcg_points`` (its NDCG minus the baseline's, in points: hundredths)
        and ``ndcg_interval`` (that difference's confidence interval, paired over the queries, by
        :func:`paired_interval`; None for the baseline or one query), ``latency_x`` (the baseline's p95 over its
        own) and ``qps_x`` (its throughput over the baseline's), None without a baseline, and ``front``: the
        Pareto fronts it is on (``"latency"``, ``"throughput"``: no other configuration has an NDCG at least its
        own at a lower p95, or a higher throughput; of configurations equal in both, the first).
    """
    baseline = next((row for row in rows if row["mode"] == "baseline"), None)
    ndcg = [row["ndcg"] for row in rows]
    fronts = {"latency": set(pareto_front([row["p95_us"] for row in rows], ndcg, minimise_x=True)),
              "throughput": set(pareto_front([row["qps"] for row in rows], ndcg, minimise_x=False))}
    out = []
    for index, row in enumerate(rows):
        interval = None
        if baseline is not None and row is not baseline and len(row["ndcg_queries"]) > 1:
            paired = paired_interval(row["ndcg_queries"], baseline["ndcg_queries"])
            interval = (paired["low"], paired["high"])
        out.append({**row, "front": tuple(name for name, members in fronts.items() if index in members),
                    "ndcg_points": None if baseline is None else 100 * (row["ndcg"] - baseline["ndcg"]),
                    "ndcg_interval": interval,
                    "latency_x": None if baseline is None else baseline["p95_us"] / row["p95_us"],
                    "qps_x": None if baseline is None else row["qps"] / baseline["qps"]})
    return out


def _cost_table(rows, k):
    """The quality-against-cost table of :func:`quality_cost`'s rows (Markdown, with its heading line)."""
    def factor(value):
        return "-" if value is None else f"{value:.2f}x"

    lines = [f"Quality against cost (RecPipe's figures as a table): NDCG@{k} against p95 latency and throughput, "
             f"each beside the baseline's (the NDCG's difference and its {CONFIDENCE:.0%} confidence interval, "
             "paired over the queries); on the Pareto front of NDCG against latency or throughput where no other "
             "configuration has an NDCG at least its own at a lower p95 latency, or a higher throughput.", "",
             f"| configuration | stages | split | lanes per stage | NDCG@{k} | vs baseline (points) | "
             "p95 latency (us) | baseline's p95 / this | QPS | this / baseline's QPS | Pareto front |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        points = ("-" if row["ndcg_points"] is None else f"{row['ndcg_points']:+.2f}" +
                  ("" if row["ndcg_interval"] is None else " [{:+.2f}, {:+.2f}]".format(*row["ndcg_interval"])))
        lines.append(f"| {row['pipeline']}-stage {row['mode']} | {row['stages']} | {row['split']} | {row['lanes']} | "
                     f"{row['ndcg']:.4f} | {points} | {row['p95_us']:,.1f} | {factor(row['latency_x'])} | "
                     f"{row['qps']:,.0f} | {factor(row['qps_x'])} | {', '.join(row['front']) or '-'} |")
    return "\n".join(lines) + "\n"


def plot_claims(rows, path, *, k=64, title=None):
    """Draw quality against cost as RecPipe's figures do: NDCG@k against p95 latency and against throughput
    (both on log scales), one marker per configuration (colour: the pipeline; shape: the split; hollow: a lane map
    the stage mapping chose), the baseline's NDCG as the iso-quality line, the Pareto front of each panel drawn
    and its points ringed. The file type follows ``path``'s suffix; the file appears only once it is complete.

    Parameters
    ----------
    rows : list of dict
        :func:`run_claims`'s measured rows.
    path : path-like
    k : int
        The NDCG's depth (the axis's label).
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    from ..host.quality import check_plot_path, save_figure

    check_plot_path(path)
    if not rows:
        raise ExperimentError("plot", "has no measured configuration to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter


    rows = quality_cost(rows)
    baseline = next((row for row in rows if row["mode"] == "baseline"), None)
    pipelines = list(dict.fromkeys((row["stages"], row["mode"]) for row in rows))
    colours = {key: plt.get_cmap("tab10")(n % 10) for n, key in enumerate(pipelines)}
    splits = sorted({row["split"] for row in rows})
    shapes = {split: "osD^vP"[n % 6] for n, split in enumerate(splits)}
    panels = [("p95_us", "p95 latency per query (us, log scale)", "latency"),
              ("qps", "throughput (queries per second at the clock, log scale)", "throughput")]
    fig, axes = plt.subplots(1, 2, figsize=(12.4, 5.2), dpi=120)
    for ax, (column, label, front) in zip(axes, panels):
        for row in rows:
            colour = colours[row["stages"], row["mode"]]
            marker = "*" if row["mode"] == "baseline" else shapes[row["split"]]
            chosen = row["lanes"] != "default"
            ax.scatter([row[column]], [row["ndcg"]], marker=marker, s=160 if marker == "*" else 55, zorder=3,
                       facecolors="none" if chosen else colour, edgecolors=colour, linewidths=1.4)
        on = sorted((row for row in rows if front in row["front"]), key=lambda row: row[column])
        ax.step([row[column] for row in on], [row["ndcg"] for row in on], where="post" if front == "latency" else
                "pre", color="black", lw=1, zorder=2)
        ax.scatter([row[column] for row in on], [row["ndcg"] for row in on], s=230, facecolors="none",
                   edgecolors="black", linewidths=0.9, zorder=2)
        if baseline is not None:
            ax.axhline(baseline["ndcg"], color="grey", ls="--", lw=1, zorder=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(f"NDCG@{k} (RecPipe's)")
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], ls="", marker="*" if mode == "baseline" else "o", color=colours[stages, mode],
                      markersize=9, label=f"{stages} ({mode})") for stages, mode in pipelines]
    handles += [Line2D([], [], ls="", marker=shapes[split], color="dimgrey", markersize=7, label=f"split {split}")
                for split in splits]
    handles += [Line2D([], [], ls="", marker="o", markerfacecolor="none", color="dimgrey", markersize=7,
                       label="hollow: the stage mapping's lane map"),
                Line2D([], [], color="black", lw=1, marker="o", markerfacecolor="none", markersize=11,
                       label="Pareto front")]
    if baseline is not None:
        handles.append(Line2D([], [], color="grey", ls="--", lw=1, label=f"iso-quality: the baseline's NDCG@{k}"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(title or "Quality against cost on the chip's timed model", fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return save_figure(fig, path)
