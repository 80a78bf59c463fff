"""RecPipe's pipelines on the chip, RPAccel mode against the baseline on the same RTL (``rpaccel bench accel``).

Trains RM-small, RM-med and RM-large (the zoo's, tables capped at ``max_rows``) briefly on synthetic Criteo-like
data, quantises them, and runs RecPipe's 1-, 2- and 3-stage pipelines on the chip (:class:`rpaccel.rtl.accel.top.
RPAccel` on Verilator) in both schedules of :class:`rpaccel.host.driver.chip.Schedule`:

* ``rpaccel``: the array split, a lane per stage, sub-batches with lookahead, filter units between the stages
  (no host step);
* ``baseline``: RecPipe's TPU-like baseline: the whole array, one sub-batch after another (a SYNC after each),
  every logit to the host, which sorts them and writes the next stage's candidate list (the host step itself costs
  no cycles here).

Two more schedules separate the causes (:data:`SCHEDULES`): ``rpaccel-whole`` is RPAccel mode on the whole array
(the stages one after another; sub-batch pipelining and on-chip filtering without the split), and
``baseline-overlapped`` the baseline without its SYNCs (the chip's decoupled units overlap its sub-batches: a
stronger baseline than RecPipe's).

Every response is checked against the golden model (:func:`rpaccel.host.driver.chip.expected_responses`); a
mismatch is a failed check, not a figure. The measured window of a run is bracketed by SYNC + COUNTERS(clear)
after the memory image and the one-time setup (SPLIT, table configuration, WEIGHTS), and SYNC + COUNTERS after
the program, so the figures are the queries' own: cycles from the first command of the program to its last
response, the busy counters of every unit and the embedding unit's cache counters over the same window.
"""

import time

import numpy as np

from ..results import format_table
from .report import ExperimentError, ExperimentFailed, Report, Section, check_fraction, check_positive, check_seed

__all__ = ["FALLBACK", "MEASUREMENT", "MODES", "PIPELINES", "ROLES", "SCHEDULES", "add_ratios", "cache_figures",
           "compile_pipeline", "measure", "measure_program", "pipeline_stages", "run_accel", "tables", "train_models",
           "unit_utilisation"]

#: The three model roles of RecPipe's pipelines and their zoo models.
ROLES = {"small": "rm-small", "med": "rm-med", "large": "rm-large"}
#: RecPipe's pipelines at 4,096 candidates: per stage, (model role, candidates kept). Scaled with the candidates.
PIPELINES = {1: (("large", 64),), 2: (("small", 512), ("large", 64)),
             3: (("small", 512), ("med", 128), ("large", 64))}
#: The schedules a run can compare: name -> :class:`rpaccel.host.driver.chip.Schedule` fields.
SCHEDULES = {"rpaccel": {"mode": "rpaccel"}, "baseline": {"mode": "baseline"},
             "rpaccel-whole": {"mode": "rpaccel", "split": 1},
             "baseline-overlapped": {"mode": "baseline", "serial": False}}
#: The schedules compared by default.
MODES = ("rpaccel", "baseline")
#: RecPipe's candidates per query, the reference of :data:`PIPELINES`' kept counts.
RECPIPE_CANDIDATES = 4096
#: The note of a pipeline whose RM-large was refused (the reason follows it).
FALLBACK = "RM-med in place of RM-large"
#: Tags of the measurement brackets (queries use tags 0 .. queries - 1).
START_TAG, END_TAG = 254, 255


def pipeline_stages(pipeline, candidates, k_max):
    """``[(role, kept), ...]`` of RecPipe's ``pipeline`` (1, 2 or 3) at ``candidates`` candidates: the kept counts
    scaled from RecPipe's 4,096 (at least one, the final one at most ``k_max``)."""
    if pipeline not in PIPELINES:
        raise ExperimentError("pipelines", f"must be of {sorted(PIPELINES)}, not {pipeline!r}")
    stages = []
    for number, (role, kept) in enumerate(PIPELINES[pipeline]):
        kept = max(1, kept * candidates // RECPIPE_CANDIDATES)
        if number == len(PIPELINES[pipeline]) - 1:
            kept = min(kept, k_max)
        stages.append((role, kept))
    return stages


def train_models(specs, *, train_samples=20_000, calibration=2_000, seed=1, data=None, first=0, epochs=1, batch=256):
    """Train ``specs`` (``{role: ModelSpec}``, every spec with the same inputs) briefly on synthetic data and
    quantise them.

    Parameters
    ----------
    specs : dict
    train_samples, calibration : int
        Training and calibration samples (the calibration samples follow the training ones).
    seed : int
    data : rpaccel.host.data.SyntheticConfig, optional
        The data's layout (default: the first spec's dense inputs, tables and pooling).
    first : int
        The stream's first training sample (the calibration samples follow the training ones).
    epochs, batch : int
        Training epochs and samples per step (:class:`rpaccel.host.train.TrainConfig`).

    Returns
    -------
    (dict, SyntheticCriteo, float)
        ``{role: QuantModel}``, the generator (queries are drawn after the calibration samples) and the seconds
        spent.
    """
    from ..host.data import SyntheticConfig, SyntheticCriteo, preprocess
    from ..host.quant import quantize
    from ..host.train import TrainConfig, train

    start = time.monotonic()
    spec = next(iter(specs.values()))
    data = data or SyntheticConfig(dense=spec.dense, rows=spec.tables, pooling=spec.pooling, seed=seed)
    generator = SyntheticCriteo(data)
    records = generator.generate(train_samples, start=first)
    calib = generator.generate(calibration, start=first + train_samples)
    models = {}
    for role, spec in specs.items():
        model, _ = train(spec, *preprocess(records, spec), records.labels,
                         TrainConfig(epochs=epochs, batch=batch, seed=seed))
        models[role] = quantize(model, calib)
    return models, generator, time.monotonic() - start


def _words(program, expected, encoder, setup_count):
    """The run's command words: memory image, setup, SYNC + COUNTERS(clear), the program, SYNC + COUNTERS."""
    parts = [program.setup.load_words(encoder)]
    first, *rest = program.steps
    parts += [encoder.encode(first.records[:setup_count]), encoder.sync(tag=START_TAG),
              encoder.counters(clear=True, tag=START_TAG), encoder.encode(first.records[setup_count:])]
    for step in rest:
        if step.lists:
            parts.append(step.list_words(encoder, expected.lists[step.query, step.stage]))
        parts.append(encoder.encode(step.records))
    parts += [encoder.sync(tag=END_TAG), encoder.counters(tag=END_TAG)]
    return np.concatenate(parts)


def measure_program(program, device, *, pause=0.0, seed=1):
    """Run ``program`` on the chip ``device`` between the measurement brackets.

    Returns
    -------
    (rpaccel.sim.chip.ChipRun, dict)
        The run (its ``mismatches()`` and ``check_lists()`` check it) and the figures: ``cycles`` (from the
        program's first command to its last response), ``counters`` (the window's, by name), ``stage_ends``
        (per query and stage, the cycle its last LOGIT, or with serial sub-batches the DONE after it, left the
        chip, counted from the window's start; baseline only), ``setup_cycles`` and ``total_cycles`` of the run.
    """
    from ..host.driver.chip import ChipEncoder, expected_responses
    from ..rtl.accel.controller import counter_ids
    from ..rtl.accel.isa import ResponseKind
    from ..sim.chip import ChipRun, run_words

    g = program.setup.geometry
    encoder = ChipEncoder(g)
    expected = expected_responses(program)
    setup_count = len(program.setup.setup_records(program.split))
    words = _words(program, expected, encoder, setup_count)
    count = len(expected.responses) + 2 * (1 + len(counter_ids(g)))
    # A stall shows as a run that does not finish: allow far more cycles than any query-stage takes (RM-large on
    # 4,096 candidates of `small` takes 17 million).
    limit = 50_000_000 * len(program.queries) * len(program.stages)
    responses, cycles, total, wall = run_words(device, g, words, count, pause=pause, seed=seed, max_cycles=limit)
    run = ChipRun(responses=responses, cycles=cycles, total_cycles=total, wall_seconds=wall, expected=expected,
                  program=program)
    start = int(cycles[np.flatnonzero(responses.tag == START_TAG)].max())
    ours = np.isin(responses.tag, program.tags)
    end = int(cycles[ours].max()) if ours.any() else start
    stage_ends = {}
    if program.mode == "baseline":
        for q, tag in enumerate(program.tags):
            rows = np.flatnonzero(responses.tag == tag)
            logits = np.flatnonzero(responses.kind[rows] == ResponseKind.LOGIT.value)
            # A stage ends with its last logit, or (serial) the DONE of the SYNC after it.
            ends = [logits[e] + int(program.serial) if e < len(logits) else None
                    for e in np.cumsum(program.items[q]) - 1]
            stage_ends[q] = [int(cycles[rows[e]]) - start if e is not None and e < len(rows) else None
                             for e in ends]
    return run, {"cycles": end - start, "counters": responses.counters(END_TAG), "stage_ends": stage_ends,
                 "setup_cycles": start, "total_cycles": total, "wall_seconds": wall}


def unit_utilisation(counters, window, lanes, g):
    """Busy share of each unit over the ``window`` cycles (lanes: each active lane's)."""
    out = {f"lane{lane}": counters.get(f"BUSY_LANE{lane}", 0) / window for lane in range(lanes)}
    for label, name in (("fetch", "BUSY_FETCH"), ("embedding", "BUSY_EMBEDDING"), ("join", "BUSY_JOIN"),
                        ("interaction", "BUSY_INTERACTION"), ("weights", "BUSY_WEIGHTS")):
        out[label] = counters.get(name, 0) / window
    for unit in range(g.units):
        out[f"topk{unit}"] = counters.get(f"BUSY_TOPK{unit}", 0) / window
    for unit in range(g.filters):
        out[f"filter{unit}"] = counters.get(f"BUSY_FILTER{unit}", 0) / window
    return out


def cache_figures(counters):
    """The embedding unit's lookups, static-cache hit rate, dynamic-cache line hit rate and line misses."""
    lookups = counters.get("EMB_LOOKUPS", 0)
    lines = counters.get("EMB_LINE_HITS", 0) + counters.get("EMB_LINE_MISSES", 0)
    return {"lookups": lookups,
            "static_hit_rate": counters.get("EMB_STATIC_HITS", 0) / lookups if lookups else 0.0,
            "line_hit_rate": counters.get("EMB_LINE_HITS", 0) / lines if lines else 0.0,
            "line_misses": counters.get("EMB_LINE_MISSES", 0)}


def measure(config, program, device, *, pause=0.0, seed=1, note=""):
    """Run ``program`` on the chip ``device`` (:func:`measure_program`) and tabulate it.

    Returns
    -------
    (dict, str or None)
        The row: ``mode``, ``stages``, ``split``, ``sub_batch``, ``queries``, ``cycles_per_query``, ``latency_us``
        (at ``config.clock_mhz``), ``utilisation`` (busy share of each unit over the window), ``cache``,
        ``mem_read_lines``, ``mem_write_lines``, ``checked``, ``rankings`` (the chip's, per query), ``lane_busy``
        (per stage, its lane's busy cycles), ``stage_ends`` (baseline), ``setup_cycles``, ``sim_cycles``,
        ``wall_seconds``, ``note`` and ``counters``; and what differs from the golden model (None if nothing).

    Raises
    ------
    ExperimentFailed
        If Verilator is missing, or the chip does not finish the program (a stall: no figures to give).
    """
    from ..sim.player import PlayerError
    from ..sim.verilator import ToolNotFound

    try:
        run, figures = measure_program(program, device, pause=pause, seed=seed)
    except ToolNotFound as error:
        raise ExperimentFailed(str(error)) from None
    except PlayerError as error:     # the chip stalled: no figures to give
        raise ExperimentFailed(f"{program.mode} mode, {len(program.stages)} stage(s): {error}") from None
    wrong, lists = run.mismatches(), run.check_lists()
    failure = (next(iter(wrong.values())) if wrong else
               f"the chip's logits give other candidate lists at (query, stage) {lists}" if lists else None)
    counters, cycles, queries = figures["counters"], figures["cycles"], len(program.queries)
    window = max(counters.get("CYCLES", 0), 1)
    g, setup = program.setup.geometry, program.setup
    names = [setup.models[setup.number(stage.model)].spec.name for stage in program.stages]
    lanes = [0 if program.mode == "baseline" else s % program.split for s in range(len(program.stages))]
    row = {"mode": program.mode,
           "stages": " -> ".join(f"{name} {items}->{min(stage.k, items)}"
                                 for name, items, stage in zip(names, program.items[0], program.stages)),
           "split": program.split, "sub_batch": program.sub_batch, "queries": queries,
           "cycles_per_query": cycles / queries, "latency_us": cycles / queries / config.clock_mhz,
           "utilisation": unit_utilisation(counters, window, program.split, g), "cache": cache_figures(counters),
           "mem_read_lines": counters.get("MEM_READ_LINES", 0), "mem_write_lines": counters.get("MEM_WRITE_LINES", 0),
           "checked": failure is None,
           "rankings": [run.responses.ranking(tag) if program.mode == "rpaccel" else run.expected.rankings[q]
                        for q, tag in enumerate(program.tags)],
           "lane_busy": [counters.get(f"BUSY_LANE{lane}", 0) for lane in lanes],
           "stage_ends": figures["stage_ends"], "setup_cycles": figures["setup_cycles"],
           "sim_cycles": figures["total_cycles"], "wall_seconds": figures["wall_seconds"], "note": note,
           "counters": counters}
    return row, failure


def _compile(config, models, stages, inputs, queries, mode, sub_batch):
    """A fresh setup of the stages' models and ``queries`` queries of ``inputs``, compiled under the schedule
    ``mode`` (a name of :data:`SCHEDULES`)."""
    from ..host.driver.chip import ChipSetup, Schedule, Stage, compile_queries

    used = list(dict.fromkeys(role for role, _ in stages))
    setup = ChipSetup(config, [models[role] for role in used])
    query_set = [setup.add_query({models[role]: inputs[q][role] for role in used}) for q in range(queries)]
    pipeline = [Stage(models[role], k=kept) for role, kept in stages]
    return compile_queries(setup, pipeline, query_set, Schedule(sub_batch=sub_batch, **SCHEDULES[mode]))


def compile_pipeline(config, models, stages, inputs, queries, modes, sub_batch):
    """``({mode: Program}, note)``: the pipeline compiled in every mode; where the compiler refuses RM-large
    (``large``), the same pipeline with RM-med in its place, and the note says why."""
    from ..host.driver.chip import CompileError

    try:
        return {mode: _compile(config, models, stages, inputs, queries, mode, sub_batch) for mode in modes}, ""
    except CompileError as error:
        if not any(role == "large" for role, _ in stages) or "med" not in models:
            raise ExperimentError(None, f"the pipeline {stages} on {config.name}: {error}") from None
        reason = str(error)
    fallback = [("med" if role == "large" else role, kept) for role, kept in stages]
    try:
        programs = {mode: _compile(config, models, fallback, inputs, queries, mode, sub_batch) for mode in modes}
    except CompileError as error:
        raise ExperimentError(None, f"the pipeline {fallback} on {config.name} (RM-large refused: {reason}): "
                              f"{error}") from None
    return programs, f"{FALLBACK}: the compiler refused RM-large ({reason})"


def run_accel(config, *, candidates=RECPIPE_CANDIDATES, pipelines=(1, 2, 3), modes=MODES, sub_batch=None,
              queries=1, seed=1, pause=0.0, train_samples=20_000, max_rows=5_000, specs=None, progress=None):
    """RecPipe's pipelines on the chip's RTL in RPAccel and baseline mode: cycles, utilisation, cache hit rates.

    Parameters
    ----------
    config : AccelConfig
        The chip.
    candidates : int
        Candidates per query (RecPipe: 4,096; the stages' kept counts scale with it, :func:`pipeline_stages`).
    pipelines : sequence of int
        Of 1, 2, 3 (:data:`PIPELINES`).
    modes : sequence of str
        Of ``"rpaccel"``, ``"baseline"``.
    sub_batch : int, optional
        Sub-batch size (default: the most the lanes hold).
    queries : int
        Queries per program, back to back (the figures are per query).
    seed : int
        Seed of the data, the training and the idle cycles.
    pause : float
        Probability of an idle command / back-pressured response cycle.
    train_samples, max_rows : int
        Training samples; rows of each table (the zoo's Criteo tables capped).
    specs : dict, optional
        ``{"small": spec, "med": spec, "large": spec}`` with the same inputs (default: the zoo's RM models).
    progress : callable, optional
        Called with a line per step.

    Returns
    -------
    Report
        One row per pipeline and mode; the ``accel`` section; a failure per program whose responses differ from
        the golden model's.
    """
    from ..host.data import SyntheticConfig
    from ..host.models import get_model
    from ..sim.chip import chip_device

    say = progress or (lambda line: None)
    check_positive(candidates=candidates, queries=queries, train_samples=train_samples, max_rows=max_rows)
    if sub_batch is not None:
        check_positive(sub_batch=sub_batch)
    check_seed(seed)
    check_fraction("pause", pause)
    pipelines, modes = list(pipelines), list(modes)
    if not pipelines or len(set(pipelines)) != len(pipelines):
        raise ExperimentError("pipelines", f"must be distinct values of {sorted(PIPELINES)}, not {pipelines!r}")
    stage_plans = {p: pipeline_stages(p, candidates, config.k_max) for p in pipelines}
    if not modes or len(set(modes)) != len(modes) or any(mode not in SCHEDULES for mode in modes):
        raise ExperimentError("modes", f"must be distinct values of {', '.join(SCHEDULES)}, not {modes!r}")
    if not 1 <= queries < START_TAG:
        raise ExperimentError("queries", f"must be between 1 and {START_TAG - 1}, not {queries}")

    if specs is None:
        specs = {role: get_model(name, max_rows=max_rows) for role, name in ROLES.items()}
        data = SyntheticConfig.criteo(max_rows=max_rows, seed=seed)
    else:
        data = None
    needed = {role for plan in stage_plans.values() for role, _ in plan}
    if "large" in needed:
        needed.add("med")       # RM-med stands in for RM-large where the compiler refuses it
    specs = {role: spec for role, spec in specs.items() if role in needed}
    say(f"training {', '.join(spec.name for spec in specs.values())} on {train_samples:,} synthetic samples ...")
    models, generator, train_seconds = train_models(specs, train_samples=train_samples, seed=seed, data=data)
    say(f"  trained and quantised in {train_seconds:.1f} s")
    records = generator.generate(queries * candidates, start=train_samples + 2_000)
    inputs = [{role: model.inputs(records.take(slice(q * candidates, (q + 1) * candidates)))
               for role, model in models.items()} for q in range(queries)]

    device = chip_device(config)
    rows, failures = [], []
    for p in pipelines:
        programs, note = compile_pipeline(config, models, stage_plans[p], inputs, queries, modes, sub_batch)
        if note:
            say(f"  {p}-stage: {note}")
        for mode, program in programs.items():
            say(f"running the {p}-stage pipeline in {mode} mode (split {program.split}, sub-batch "
                f"{program.sub_batch}) on the RTL ...")
            row, failure = measure(config, program, device, pause=pause, seed=seed, note=note)
            row["mode"] = mode
            if failure:
                failures.append(f"{p}-stage {mode}: {failure}")
            say(f"  {row['cycles_per_query']:,.0f} cycles per query, {'checked' if row['checked'] else 'MISMATCH'}; "
                f"{row['sim_cycles']:,} cycles simulated in {row['wall_seconds']:.1f} s")
            row = {"pipeline": p, **row}
            rows.append(row)
    add_ratios(rows)
    text, body = _tables(config, rows, candidates, train_samples, max_rows, seed, pause, train_seconds)
    # One query per run measures latency; queries back to back, throughput: each keeps a section of its own.
    name, title = ("accel", "") if queries == 1 else (f"accel-queries-{queries}", f", {queries} queries back to back")
    return Report(rows=rows, text=text, sections=(Section(name, f"RecPipe's pipelines on the chip "
                                                          f"({config.name}, RTL on Verilator{title})", body),),
                  data={"rows": rows, "train_seconds": train_seconds, "candidates": candidates},
                  failures=tuple(failures))


def _pct(value):
    return f"{100 * value:.0f}%"


def tables(config, rows):
    """``(main, busy, cache)``: the Markdown tables of measured ``rows`` (cycles and checks, busy shares, caches
    and memory)."""
    main = format_table(
        ["pipeline", "mode", "stages (items->kept)", "split", "sub-batch", "queries", "cycles/query",
         f"latency us @ {config.clock_mhz:g} MHz", "baseline/this", "checked", "note"],
        [[f"{r['pipeline']}-stage", r["mode"], r["stages"], r["split"], r["sub_batch"], r["queries"],
          round(r["cycles_per_query"]),
          f"{r['latency_us']:.1f}", f"{r['ratio']:.2f}x" if r["ratio"] else "-", "yes" if r["checked"] else "NO",
          r["note"].split(":")[0] or "-"] for r in rows])
    reasons = list(dict.fromkeys(f"{r['pipeline']}-stage: {r['note']}." for r in rows if r["note"]))
    if reasons:
        main += "\n\n" + "\n".join(reasons)
    units = []
    for r in rows:
        units += [unit for unit in r["utilisation"] if unit not in units]
    busy = format_table(
        ["pipeline", "mode", *units],
        [[f"{r['pipeline']}-stage", r["mode"], *(_pct(r["utilisation"][u]) if u in r["utilisation"] else "-"
                                                for u in units)] for r in rows])
    cache = format_table(
        ["pipeline", "mode", "lookups", "static hits", "line hit rate", "line misses", "memory lines read",
         "memory lines written"],
        [[f"{r['pipeline']}-stage", r["mode"], r["cache"]["lookups"], _pct(r["cache"]["static_hit_rate"]),
          _pct(r["cache"]["line_hit_rate"]), r["cache"]["line_misses"], r["mem_read_lines"], r["mem_write_lines"]]
         for r in rows])
    return main, busy, cache


def add_ratios(rows):
    """Set each row's ``ratio``: its pipeline's baseline cycles over its own (None without a baseline row)."""
    runs = {(r["pipeline"], r["mode"]): r for r in rows}
    for row in rows:
        base = runs.get((row["pipeline"], "baseline"))
        row["ratio"] = base["cycles_per_query"] / row["cycles_per_query"] if base else None


#: What the figures mean (the notes of the accel section and the demo).
MEASUREMENT = (
    "Cycles per query: from the program's first command (after SYNC + COUNTERS(clear), which follow the memory "
    "image and the one-time SPLIT, table configuration and WEIGHTS) to its last response, over the queries sent "
    "back to back. rpaccel: the array split into a lane per stage, sub-batches with lookahead, filter units between "
    "the stages; baseline: whole array, sub-batches one after another (a SYNC after each), every logit to the "
    "host, whose sort and candidate-list write cost no cycles here (the list's MEM_WRITEs do); rpaccel-whole: "
    "RPAccel mode on the whole array; baseline-overlapped: the baseline without its SYNCs. Utilisation: busy "
    "cycles over the window's cycles (lanes: each lane of the split). Static hits: lookups served by the static "
    "cache; line hit rate: dynamic-cache line hits over line accesses.")


def _tables(config, rows, candidates, train_samples, max_rows, seed, pause, train_seconds):
    """The report's text and the results section's body."""
    main, busy, cache = tables(config, rows)
    notes = (
        f"Preset `{config.name}` ({config.array_rows}x{config.array_cols} array, K_MAX {config.k_max}, "
        f"{config.mem_latency_cycles}-cycle memory), RTL on Verilator. RecPipe's pipelines at {candidates:,} "
        f"candidates (kept counts scaled from RecPipe's 4,096 -> 512 -> 128 -> 64). Models: the zoo's RM-small, "
        f"RM-med and RM-large with tables capped at {max_rows:,} rows, trained for one epoch on {train_samples:,} "
        f"synthetic Criteo-like samples (seed {seed}, {train_seconds:.0f} s) and quantised to int8. Every response "
        "(ranking, and in baseline mode every logit) equals the golden model's (`rpaccel.host.reference`, "
        f"`numeric.topk`). {MEASUREMENT}"
        + (f" Random idle command and back-pressured response cycles with probability {pause}." if pause else ""))
    text = "\n\n".join([main, busy, cache])
    return text, f"{main}\n\nBusy share of each unit:\n\n{busy}\n\nEmbedding caches and memory:\n\n{cache}\n\n{notes}"
