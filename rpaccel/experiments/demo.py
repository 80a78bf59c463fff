"""The main job (``rpaccel demo``): RecPipe's 2-stage query on the chip's RTL.

RM-small scores every candidate and keeps an eighth of them, a larger model scores those and keeps the best ``k``
(RecPipe's 4,096 -> 512 -> 64 with RM-small and RM-large, scaled to ``candidates``), with trained, quantised models on
synthetic Criteo-like
data, on :class:`rpaccel.rtl.accel.top.RPAccel` on Verilator. The query runs twice on the same RTL: in RPAccel mode
(the array split, a lane per stage, sub-batches, a filter unit between the stages) and in the baseline mode (whole
array, every logit to the host). Every response is checked against the golden model, and the chip's ranking against
the host's reference pipeline (:func:`rpaccel.host.quality.run_pipeline` on the integer reference's logits).
"""

import time

from ..results import format_table
from .accel import MEASUREMENT, ROLES, add_ratios, compile_pipeline, measure, tables, train_models
from .report import ExperimentError, Report, check_fraction, check_positive, check_seed

__all__ = ["DEMO_CANDIDATES", "run_demo"]

#: The demo's candidates by default: 1,024 -> 128 -> 16 runs in well under two minutes on a built chip.
DEMO_CANDIDATES = 1024


def _check(config, candidates, k, seed, pause):
    """Check the query's parameters before anything runs; return ``(kept by stage 1, k)``."""
    check_positive(candidates=candidates)
    if candidates < 8:
        raise ExperimentError("candidates", f"must be at least 8 (stage 1 keeps an eighth), not {candidates}")
    kept = candidates // 8
    k = min(max(1, candidates // 64), config.k_max, kept) if k is None else k
    if not isinstance(k, int) or not 1 <= k <= config.k_max:
        raise ExperimentError("k", f"must be between 1 and the {config.name} preset's K_MAX {config.k_max}, not {k}")
    if k > kept:
        raise ExperimentError("k", f"must be at most {kept}, the candidates stage 1 keeps, not {k}")
    check_seed(seed)
    check_fraction("pause", pause)
    return kept, k


def run_demo(config, *, candidates=DEMO_CANDIDATES, k=None, seed=1, pause=0.0, train_samples=10_000,
             max_rows=5_000, specs=None, progress=None):
    """RecPipe's 2-stage query on the chip's RTL in RPAccel and baseline mode, checked.

    Parameters
    ----------
    config : AccelConfig
        The chip.
    candidates : int
        Candidates of the query; stage 1 keeps ``candidates // 8``.
    k : int, optional
        Results (default ``candidates // 64``, at most ``K_MAX``).
    seed : int
        Seed of the data, the training and the idle cycles.
    pause : float
        Probability of an idle command / back-pressured response cycle.
    train_samples, max_rows : int
        Training samples; rows of each embedding table.
    specs : dict, optional
        ``{"small": spec, "large": spec}`` with the same inputs (default: the zoo's RM-small and RM-large); with
        ``"med"`` too, RM-med stands in for RM-large where the compiler refuses it, and the output says so.
    progress : callable, optional
        Called with a line per step.

    Returns
    -------
    Report
        One row per mode (:func:`rpaccel.experiments.accel.measure`); ``data`` adds the per-stage figures and
        the check against the host's pipeline; a failure if a response or the ranking differs.
    """
    from ..host.data import SyntheticConfig
    from ..host.models import get_model
    from ..host.quality import Pipeline, run_pipeline
    from ..host.quality import Stage as QualityStage
    from ..host.reference import run
    from ..sim.chip import chip_device

    kept, k = _check(config, candidates, k, seed, pause)
    check_positive(train_samples=train_samples, max_rows=max_rows)
    say = progress or (lambda line: None)
    start = time.monotonic()
    data = None
    if specs is None:
        specs = {role: get_model(name, max_rows=max_rows) for role, name in ROLES.items()
                 if role in ("small", "large")}
        data = SyntheticConfig.criteo(max_rows=max_rows, seed=seed)
    say(f"training {', '.join(spec.name for spec in specs.values())} on {train_samples:,} synthetic samples ...")
    models, generator, train_seconds = train_models(specs, train_samples=train_samples, seed=seed, data=data)
    records = generator.generate(candidates, start=train_samples + 2_000)
    inputs = [{role: model.inputs(records) for role, model in models.items()}]
    programs, note = compile_pipeline(config, models, [("small", kept), ("large", k)], inputs, 1,
                                      ("rpaccel", "baseline"), None)
    if note:
        say(f"  {note}")
    device = chip_device(config)
    rows, failures = [], []
    for mode, program in programs.items():
        say(f"running the query in {mode} mode (split {program.split}, sub-batch {program.sub_batch}) on the RTL "
            "(Verilator; the first run builds the chip) ...")
        row, failure = measure(config, program, device, pause=pause, seed=seed, note=note)
        rows.append({"pipeline": 2, **row})
        if failure:
            failures.append(f"{mode} mode: {failure}")
    add_ratios(rows)

    # The host's reference pipeline on the same candidates (RecPipe's stage rule, ties to the lower index).
    roles = [("small", kept), ("med" if note else "large", k)]
    scores = {role: run(models[role], *inputs[0][role])[None, :] for role, _ in roles}
    want = run_pipeline(Pipeline("2-stage", tuple(QualityStage(role, n) for role, n in roles)), scores, k)[0]
    ranking = rows[0]["rankings"][0]
    matches = [index for _, index in ranking] == want.tolist()
    if not matches:
        failures.append("the chip's ranking differs from the host's reference pipeline")

    fast, base = rows
    names = [models[role].spec.name for role, _ in roles]
    ends = base["stage_ends"][0]
    stage_rows = [[f"{s + 1}: {names[s]}", f"{[candidates, kept][s]:,} -> {n:,}", s % fast["split"],
                   fast["lane_busy"][s], ends[s] - (ends[s - 1] if s else 0),
                   f"{(ends[s] - (ends[s - 1] if s else 0)) / config.clock_mhz:.1f}"]
                  for s, (_, n) in enumerate(roles)]
    stage_table = format_table(
        ["stage", "candidates -> kept", "rpaccel lane", "rpaccel lane busy cycles", "baseline cycles",
         f"baseline us @ {config.clock_mhz:g} MHz"], stage_rows)
    main, busy, cache = tables(config, rows)
    peer = _recpipe_estimate(config, models, roles, candidates, fast["split"], rows)
    top = ", ".join(f"#{index} ({score})" for score, index in ranking[:5])
    verdict = (f"The chip's ranking equals the host's reference pipeline (bit-exact logits, same order). Best: "
               f"{top}, ..." if matches and not failures else "MISMATCH: " + "; ".join(failures))
    elapsed = time.monotonic() - start
    text = "\n".join([
        f"rpaccel demo: RecPipe's 2-stage query on the chip ({config.name} preset, RTL on Verilator): "
        f"{names[0]} scores {candidates:,} candidates and keeps {kept:,}, {names[1]} keeps the best {k}; models "
        f"trained on {train_samples:,} synthetic samples (seed {seed}, {train_seconds:.0f} s) and quantised to int8.",
        *([f"Note: {note}."] if note else []),
        "", stage_table, "", main, "", "Busy share of each unit:", "", busy, "", "Embedding caches and memory:", "",
        cache, "", MEASUREMENT, "", peer, "", verdict,
        f"Wall clock {elapsed:.0f} s (training {train_seconds:.0f} s, simulation "
        f"{sum(r['wall_seconds'] for r in rows):.0f} s)."])
    data = {"candidates": candidates, "kept": kept, "k": k, "preset": config.name, "seed": seed, "pause": pause,
            "models": names, "note": note, "rows": rows, "stages": stage_rows, "ranking": ranking,
            "ranking_matches_host_pipeline": matches, "train_seconds": train_seconds, "wall_seconds": elapsed,
            "recpipe_model": peer}
    return Report(rows=rows, text=text, data=data, failures=tuple(failures))


def _recpipe_estimate(config, models, roles, candidates, split, rows):
    """RecPipe's analytical model (:mod:`rpaccel.sim.model.recpipe`) on the same query and configuration, beside
    the chip's measured cycles."""
    from ..sim.model.recpipe import RecPipeStage, recpipe_query

    stages, items = [], candidates
    for role, kept in roles:
        stages.append(RecPipeStage(models[role].spec, items, kept))
        items = kept
    measured = {row["mode"]: row["cycles_per_query"] for row in rows}
    parts = []
    for mode, n in (("rpaccel", split), ("baseline", 1)):
        estimate = recpipe_query(config, stages, split=n, clock_ns=1000 / config.clock_mhz)
        parts.append(f"{mode} (split {n}) {estimate.cycles:,.0f} cycles against {measured[mode]:,} measured")
    return ("RecPipe's analytical model (its formulas and constants: 50% miss rate, per-layer weight reloads, no "
            "overlap) on this query and configuration: " + "; ".join(parts) + ".")
