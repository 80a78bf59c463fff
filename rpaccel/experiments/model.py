"""``rpaccel bench model``: the fast model against the RTL, side by side in one run.

So far its units (issue 20 builds it unit by unit, docs/model.md): the MLP engine (:mod:`rpaccel.sim.model.engine`)
and the interaction unit (:mod:`rpaccel.sim.model.interaction`). Per case, the RTL on Verilator (the file-driven
Player, a stand-alone binary; its wall-clock seconds of simulation, the build excluded) and the model on the same
stimulus: every output transfer's cycle compared, the run's cycles, and the model's host time (the median of three
runs) against the RTL's. The whole chip's cases (RecPipe's pipelines, with RecPipe's analytical model beside them)
come when the units are composed.
"""

import time

import numpy as np

from .report import Report, Section, check_seed

__all__ = ["ENGINE_CASES", "INTERACTION_CASES", "run_model_chip", "run_model_regression", "run_model_units"]

#: Engine cases: (name, {lane: (model, items)}, split, pause). RecPipe's bottom MLPs, random int8 weights.
ENGINE_CASES = (
    ("rm-large bottom, 1,024 items, one lane", {0: ("rm-large", 1024)}, 1, 0.0),
    ("rm-small 4,096 and rm-large 512 on two lanes (RecPipe's stages)", {0: ("rm-small", 4096), 1: ("rm-large", 512)},
     2, 0.0),
    ("rm-small 512 and rm-large 128 on two lanes, 30% idle inputs and back-pressure",
     {0: ("rm-small", 512), 1: ("rm-large", 128)}, 2, 0.3),
)
#: Interaction cases: (name, mode, vectors, dim, items, pause).
INTERACTION_CASES = (
    ("RM-small's dot (27 x 4), 10,000 items", "dot", 27, 4, 10_000, 0.0),
    ("RM-small's dot (27 x 4), 10,000 items, 40% back-pressure", "dot", 27, 4, 10_000, 0.4),
    ("RMC1's cat (9 x 32), 20,000 items", "cat", 9, 32, 20_000, 0.0),
)


def _median_seconds(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times))


def _engine_case(config, lanes, split, pause, seed):
    from ..host.driver.mlp import plan_engine
    from ..sim.golden.mlp import random_input
    from ..sim.mlp_harness import play_plan
    from ..sim.model.engine import engine_timing
    from .gemm import MODELS, bottom_mlp

    rng = np.random.default_rng(seed)
    mlps = {name: bottom_mlp(rng, MODELS[name]) for name, _ in lanes.values()}
    jobs = {lane: (mlps[name], random_input(rng, items, MODELS[name][0])) for lane, (name, items) in lanes.items()}
    plan = plan_engine(config, split, jobs)
    _, rtl = play_plan(config, plan, pause=pause, seed=seed, output_cycles=True)
    timing, seconds = _median_seconds(lambda: engine_timing(plan, pause=pause or None, seed=seed))
    differ = 0
    for port, cycles in rtl.output_cycles.items():        # every lane's port; the model has those of the plan
        cycles, model = np.asarray(cycles), timing.outputs.get(port, np.zeros(0, dtype=np.int64))
        differ += int(np.count_nonzero(model != cycles)) if len(model) == len(cycles) else max(len(cycles), 1)
    return rtl, timing.cycles, differ, sum(len(c) for c in rtl.output_cycles.values()), seconds


def _interaction_case(config, mode, vectors, dim, items, pause, seed):
    from ..host.driver.interaction import encode_items
    from ..rtl.interaction import Interaction
    from ..sim.model.interaction import InteractionModel
    from ..sim.player import Player
    from ..sim.streams import port_seed, stall_pattern

    unit = InteractionModel.for_config(config)
    rng = np.random.default_rng(seed)
    words = encode_items(mode, rng.integers(-128, 128, (items, vectors, dim)), 40_503, 21, lanes=unit.lanes,
                         max_vectors=unit.max_vectors, max_dim=unit.max_dim)
    expected = unit.run(words, values=False)
    result = Player(Interaction.for_config, config).run(
        {"i": words}, expect={"o": len(expected.output_cycles)}, pause={"o": pause}, seed=seed, packed=True,
        words=True, direct=True, output_cycles=True)
    ready = ~stall_pattern(pause, port_seed(seed, "o"), result.cycles + 1) if pause else None
    run, seconds = _median_seconds(lambda: unit.run(words, ready=ready, values=False))
    cycles = np.asarray(result.output_cycles["o"])
    differ = int(np.count_nonzero(run.output_cycles != cycles)) if len(run.output_cycles) == len(cycles) else len(
        cycles)
    return result, run.cycles, differ, len(cycles), seconds


def run_model_units(config=None, *, seed=1, engine=True, interaction=True, progress=None):
    """The engine's and the interaction unit's models against their RTL (see the module notes).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig, optional
        Default: ``small`` with room in the weight buffer for RM-large's bottom MLP (32,768 words; the chip
        streams it, the engine alone cannot).
    seed : int
    engine, interaction : bool
        Which units to run.

    Returns
    -------
    Report
        A row per case; a failure for every case whose output cycles differ from the RTL's.
    """
    from ..config import preset

    check_seed(seed)
    config = config or preset("small").with_settings(["weight_buffer_words=32768"])
    rows, failures = [], []
    cases = ([("engine", case) for case in ENGINE_CASES] if engine else []) + (
        [("interaction", case) for case in INTERACTION_CASES] if interaction else [])
    for unit, case in cases:
        name = case[0]
        if progress:
            progress(f"{unit}: {name} (RTL on Verilator, then the model)")
        if unit == "engine":
            rtl, model_cycles, differ, outputs, seconds = _engine_case(config, *case[1:], seed)
        else:
            rtl, model_cycles, differ, outputs, seconds = _interaction_case(config, *case[1:], seed)
        row = {"unit": unit, "case": name, "rtl_cycles": rtl.cycles, "model_cycles": model_cycles,
               "outputs": outputs, "differing_outputs": differ, "rtl_seconds": rtl.wall_seconds,
               "model_seconds": seconds, "speedup": rtl.wall_seconds / seconds if seconds else None}
        rows.append(row)
        if differ or model_cycles != rtl.cycles:
            failures.append(f"{unit}, {name}: {differ} of {outputs} output cycles and the run's cycles "
                            f"({model_cycles} against {rtl.cycles}) differ from the RTL's")
    lines = [f"Configuration {config.name}; seed {seed}. Each case: the RTL on Verilator (the file-driven Player, a "
             "stand-alone binary; seconds of simulation, the build excluded) and the model on the same stimulus "
             "(seconds: the median of three runs).", "",
             "| unit | case | RTL cycles | model cycles | output cycles equal | RTL s | model s | speed-up |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in rows:
        equal = ("all " + f"{row['outputs']:,}" if not row["differing_outputs"] else
                 f"{row['outputs'] - row['differing_outputs']:,} of {row['outputs']:,}")
        lines.append(f"| {row['unit']} | {row['case']} | {row['rtl_cycles']:,} | {row['model_cycles']:,} | {equal} | "
                     f"{row['rtl_seconds']:.2f} | {row['model_seconds']:.4f} | {row['speedup']:,.0f}x |")
    lines += ["", "The issue's target is 1,000x on the whole chip's query; the units are its parts. What limits "
              "each unit's speed is in docs/model.md. The machine is shared: both timings vary with its load, "
              "the ratio less."]
    text = "\n".join(lines) + "\n"
    return Report(rows=rows, text=text, data={"config": config.name, "rows": rows}, failures=tuple(failures),
                  sections=(Section("model-units", "The fast model's units against the RTL", text),))


def run_model_chip(config=None, *, candidates=1024, pipelines=(1, 2), modes=("rpaccel", "baseline"), queries=1,
                   seed=1, train_samples=3_000, max_rows=5_000, rtl=True, paper=True, progress=None):
    """The whole chip's timed model (:class:`rpaccel.sim.model.chip.TimedChip`) against the RTL and RecPipe's
    analytical model, on RecPipe's pipelines (:data:`rpaccel.experiments.accel.PIPELINES`, scaled to
    ``candidates``); with ``paper``, RecPipe's 2-stage pipeline on 4,096 candidates on the ``paper`` preset too,
    on the model only (too large for the RTL): its host time against issue 20's 100 ms.

    Per pipeline and mode, the same program (memory image, setup, the measured window between two COUNTERS) runs
    on the RTL (Verilator, ``rtl=True``) and on the model; the row has both windows' cycles, the model's error,
    RecPipe's estimate for the same stages and split and its error, both host times and the speed-up, and whether
    both gave the golden model's responses. The model is not exact (docs/model.md): its error is the figure.

    Returns
    -------
    Report
        Section ``model-chip``; a failure for every program whose responses (RTL or model) differ from the golden
        model's.
    """
    from ..config import preset
    from ..host.data import SyntheticConfig
    from ..host.models import get_model
    from ..sim.chip import chip_device
    from ..sim.model.chip import ModelDevice
    from ..sim.model.recpipe import RecPipeStage, recpipe_query
    from .accel import PIPELINES, ROLES, SCHEDULES, compile_pipeline, measure_program, pipeline_stages, train_models
    from .report import ExperimentError, check_positive

    say = progress or (lambda line: None)
    check_seed(seed)
    check_positive(candidates=candidates, queries=queries, train_samples=train_samples, max_rows=max_rows)
    config = config or preset("small")
    pipelines, modes = list(pipelines), list(modes)
    if not pipelines or any(p not in PIPELINES for p in pipelines):
        raise ExperimentError("pipelines", f"must be values of {sorted(PIPELINES)}, not {pipelines!r}")
    if not modes or any(mode not in SCHEDULES for mode in modes):
        raise ExperimentError("modes", f"must be values of {', '.join(SCHEDULES)}, not {modes!r}")
    plans = {p: pipeline_stages(p, candidates, config.k_max) for p in pipelines}
    needed = {role for plan in plans.values() for role, _ in plan} | {"med"}
    specs = {role: get_model(ROLES[role], max_rows=max_rows) for role in needed}
    say(f"training {', '.join(spec.name for spec in specs.values())} on {train_samples:,} synthetic samples ...")
    models, generator, _ = train_models(specs, train_samples=train_samples, seed=seed,
                                        data=SyntheticConfig.criteo(max_rows=max_rows, seed=seed))
    records = generator.generate(queries * candidates, start=train_samples + 2_000)
    inputs = [{role: model.inputs(records.take(slice(q * candidates, (q + 1) * candidates)))
               for role, model in models.items()} for q in range(queries)]
    rows, failures = [], []
    device = chip_device(config) if rtl else None
    for p in pipelines:
        programs, note = compile_pipeline(config, models, plans[p], inputs, queries, modes, None)
        for mode, program in programs.items():
            label = f"{p}-stage {mode} (split {program.split}, sub-batch {program.sub_batch})"
            say(f"{label}: the model ...")
            model_run, model = measure_program(program, ModelDevice(config))
            model_seconds = model["wall_seconds"]       # the device's run, as for the RTL
            row = {"pipeline": p, "mode": mode, "split": program.split, "sub_batch": program.sub_batch,
                   "queries": queries, "model_cycles": model["cycles"], "model_seconds": model_seconds,
                   "model_checked": not model_run.mismatches(), "note": note}
            if not row["model_checked"]:
                failures.append(f"{label}: the model's responses differ from the golden model's")
            roles = [(role if not note else ("med" if role == "large" else role), kept) for role, kept in plans[p]]
            stages, items = [], candidates
            for role, kept in roles:
                stages.append(RecPipeStage(models[role].spec, items, kept))
                items = kept
            estimate = recpipe_query(config, stages, split=1 if mode.startswith("baseline") else program.split,
                                     clock_ns=1000 / config.clock_mhz)
            row["recpipe_cycles"] = estimate.cycles * queries
            if rtl:
                say(f"{label}: the RTL on Verilator ...")
                rtl_run, figures = measure_program(program, device)
                row.update(rtl_cycles=figures["cycles"], rtl_seconds=figures["wall_seconds"],
                           rtl_checked=not rtl_run.mismatches(),
                           rtl_rate=figures["total_cycles"] / max(figures["wall_seconds"], 1e-9))
                row["error"] = row["model_cycles"] / row["rtl_cycles"] - 1
                row["recpipe_error"] = row["recpipe_cycles"] / row["rtl_cycles"] - 1
                # The model runs the whole program (memory image included) in its host time; the RTL's rate is its
                # simulated cycles per second over the same program.
                row["speedup"] = figures["wall_seconds"] / model_seconds
                if not row["rtl_checked"]:
                    failures.append(f"{label}: the RTL's responses differ from the golden model's")
                say(f"  RTL {row['rtl_cycles']:,} cycles, model {row['model_cycles']:,} ({row['error']:+.1%}), "
                    f"RecPipe {row['recpipe_cycles']:,.0f} ({row['recpipe_error']:+.1%}); speed-up "
                    f"{row['speedup']:,.0f}x")
            rows.append(row)
    if paper:
        from ..config import preset as _preset

        big = _preset("paper")
        programs, note = compile_pipeline(big, models, pipeline_stages(2, 4096, big.k_max),
                                          [{role: model.inputs(generator.generate(4096, start=train_samples + 9_000))
                                            for role, model in models.items()}], 1, ("rpaccel",), None)
        program = programs["rpaccel"]
        say(f"paper: 2-stage rpaccel on 4,096 candidates (split {program.split}), the model ...")
        started = time.perf_counter()
        model_run, model = measure_program(program, ModelDevice(big))
        seconds, whole = model["wall_seconds"], time.perf_counter() - started
        stages, items = [], 4096
        for role, kept in pipeline_stages(2, 4096, big.k_max):
            stages.append(RecPipeStage(models[role].spec, items, kept))
            items = kept
        estimate = recpipe_query(big, stages, split=program.split, clock_ns=1000 / big.clock_mhz)
        paper_row = {"config": "paper", "pipeline": 2, "mode": "rpaccel", "split": program.split,
                     "model_cycles": model["cycles"], "model_seconds": seconds, "program_seconds": whole,
                     "recpipe_cycles": estimate.cycles,
                     "model_checked": not model_run.mismatches()}
        if not paper_row["model_checked"]:
            failures.append("paper, 2-stage rpaccel: the model's responses differ from the golden model's")
        say(f"  {model['cycles']:,} cycles ({model['cycles'] / big.clock_mhz:,.0f} us at {big.clock_mhz:g} MHz), "
            f"RecPipe {estimate.cycles:,.0f}; {seconds:.1f} s of host time")
    lines = [f"Configuration {config.name}; {candidates:,} candidates per query, {queries} query(ies) back to back; "
             f"models trained on {train_samples:,} synthetic samples (seed {seed}). Cycles: the measured window "
             "(first command after the setup to the last response). Error: model / RTL - 1. Seconds: each device's "
             "run of the whole program's words (memory image, setup, query), on the RTL (Verilator) and on the model "
             "(the program's encoding and the golden model's answers outside both).", "",
             "| pipeline | mode | split | RTL cycles | model cycles | error | RecPipe model | its error | RTL s | "
             "model s | speed-up |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        rtl_part = (f"{row['rtl_cycles']:,} | {row['model_cycles']:,} | {row['error']:+.1%} | "
                    f"{row['recpipe_cycles']:,.0f} | {row['recpipe_error']:+.1%} | {row['rtl_seconds']:.1f} | "
                    f"{row['model_seconds']:.2f} | {row['speedup']:,.0f}x" if rtl else
                    f"- | {row['model_cycles']:,} | - | {row['recpipe_cycles']:,.0f} | - | - | "
                    f"{row['model_seconds']:.2f} | -")
        lines.append(f"| {row['pipeline']}-stage | {row['mode']} | {row['split']} | {rtl_part} |")
    if paper:
        lines += ["", "On `paper` (128 x 128, model only), RecPipe's 2-stage pipeline on 4,096 candidates in RPAccel "
                  f"mode (split {paper_row['split']}): {paper_row['model_cycles']:,} cycles "
                  f"({paper_row['model_cycles'] / big.clock_mhz:,.0f} us at {big.clock_mhz:g} MHz) against RecPipe's "
                  f"{paper_row['recpipe_cycles']:,.0f}, in {paper_row['model_seconds']:.2f} s of host time (issue 20's "
                  "target: 0.1 s; the model's run of the program's words, its memory image included; "
                  f"{paper_row['program_seconds']:.2f} s with the program's encoding and the golden model's "
                  "answers)."]
        rows.append(paper_row)
    lines += ["", "The model is transaction-level (a unit's instruction at a time, segments of words between units, "
              "memory requests in order from the memory's queue): "
              "not the exact model issue 20 asks for, which is built unit by unit "
              "(docs/model.md). Its error on each case is the figure to read."]
    text = "\n".join(lines) + "\n"
    return Report(rows=rows, text=text, data={"config": config.name, "rows": rows}, failures=tuple(failures),
                  sections=(Section("model-chip", f"The whole chip's timed model against the RTL ({config.name})",
                                    text),))


#: The regression's models: two small DLRM ``dot`` models (four tables), as the chip's tests use.
REGRESSION_TABLES = (40, 30, 20, 12)


def _regression_models(seed):
    from ..host.data import SyntheticConfig, SyntheticCriteo, preprocess
    from ..host.models import ModelSpec
    from ..host.quant import quantize
    from ..host.train import TrainConfig, train

    models = []
    for name, bottom, top in (("reg-a", (8, 4), (8, 1)), ("reg-b", (6, 4), (5, 1))):
        spec = ModelSpec(name=name, source="regression", dense=3, bottom=bottom, tables=REGRESSION_TABLES,
                         emb_dim=4, pooling=1, interaction="dot", top=top)
        data = SyntheticCriteo(SyntheticConfig(dense=3, rows=REGRESSION_TABLES, pooling=1, latent=8, seed=seed + 2))
        records = data.generate(1500)
        model, _ = train(spec, *preprocess(records, spec), records.labels,
                         TrainConfig(epochs=1, batch=256, lr=3e-3, emb_lr=2e-2, seed=seed))
        models.append((quantize(model, records.take(slice(0, 800))), data))
    return models


def _random_program(rng, config, models, number):
    """A random program the compiler accepts: 1 to 3 stages, RPAccel or baseline mode, a random sub-batch, 1 to 3
    queries of 24 to 120 candidates (None if ten draws are refused)."""
    from ..host.driver.chip import ChipSetup, CompileError, Schedule, Stage, compile_queries

    for _ in range(10):
        stages = int(rng.integers(1, 4))
        mode = "baseline" if rng.random() < 0.3 else "rpaccel"
        queries = int(rng.integers(1, 4))
        sizes = rng.integers(24, 121, queries).tolist()
        smallest = min(sizes)
        ks, previous = [], smallest
        for s in range(stages):
            k = int(rng.integers(2, max(3, previous // 2)))
            if s == stages - 1:
                k = min(k, config.k_max)
            ks.append(k)
            previous = k
        setup = ChipSetup(config, [model for model, _ in models])
        picks = [models[(s + number) % 2][0] for s in range(stages)]
        query_set = [setup.add_query({model: model.inputs(data.generate(size, start=5000 + 997 * number + 131 * q))
                                      for model, data in models}) for q, size in enumerate(sizes)]
        schedule = Schedule(mode, sub_batch=int(rng.integers(1, 33)),
                            split=None if mode == "baseline" or rng.random() < 0.7 else 1)
        try:
            program = compile_queries(setup, [Stage(model, k=k) for model, k in zip(picks, ks)], query_set, schedule)
        except CompileError:
            continue
        label = (f"{stages}-stage {mode}, split {program.split}, sub-batch {program.sub_batch}, "
                 f"{queries} quer{'y' if queries == 1 else 'ies'} of {', '.join(map(str, sizes))}")
        return program, label
    return None


def run_model_regression(presets=("tiny", "small"), *, programs=4, seed=1, progress=None):
    """Random programs on the RTL and on the whole chip's timed model, every response's cycle compared.

    Per configuration (``presets``) ``programs`` random programs (:func:`_random_program`: 1 to 3 stages, either
    mode, random sub-batches, 1 to 3 queries back to back) run whole (memory image, setup, queries) on Verilator
    and on :class:`rpaccel.sim.model.chip.ModelDevice`. Per program: the responses whose cycle equals the RTL's,
    the largest difference, and the last response's error relative to the RTL's cycles. Issue 20's regression: its
    goal is every cycle equal.

    Returns
    -------
    Report
        Section ``model-regression``; a failure for a program whose responses (values) differ between the two.
    """
    from ..config import preset
    from ..sim.chip import chip_device, run_program
    from ..sim.model.chip import ModelDevice

    check_seed(seed)
    rng = np.random.default_rng(seed)
    say = progress or (lambda line: None)
    say("training the regression's two models ...")
    models = _regression_models(seed)
    rows, failures = [], []
    for name in presets:
        config = preset(name)
        device = chip_device(config)
        for number in range(programs):
            drawn = _random_program(rng, config, models, number)
            if drawn is None:
                continue
            program, label = drawn
            say(f"{name}: {label}")
            rtl = run_program(program, device=device, max_cycles=50_000_000)
            started = time.perf_counter()
            model = run_program(program, device=ModelDevice(config))
            seconds = time.perf_counter() - started
            if rtl.mismatches() or model.mismatches():
                failures.append(f"{name}, {label}: responses differ from the golden model's "
                                f"({'RTL' if rtl.mismatches() else 'model'})")
            ours, theirs = _cycles_by_tag(model), _cycles_by_tag(rtl)
            differences = np.concatenate([ours[tag] - theirs[tag] for tag in theirs if len(ours.get(tag, ())) ==
                                          len(theirs[tag])] or [np.zeros(0, np.int64)])
            last_rtl, last_model = int(rtl.cycles[-1]), int(model.cycles[-1])
            rows.append({"config": name, "program": label, "responses": len(rtl.cycles),
                         "equal": int(np.count_nonzero(differences == 0)),
                         "max_difference": int(np.abs(differences).max(initial=0)),
                         "rtl_last": last_rtl, "model_last": last_model, "error": last_model / last_rtl - 1,
                         "rtl_seconds": rtl.wall_seconds, "model_seconds": seconds})
            say(f"  last response: RTL {last_rtl:,}, model {last_model:,} ({rows[-1]['error']:+.2%}); "
                f"{rows[-1]['equal']} of {rows[-1]['responses']} cycles equal")
    lines = [f"Random programs (seed {seed}; two small `dot` models, four tables): each whole program (memory image, "
             "setup, queries) on the RTL (Verilator) and on the timed model. Equal: responses whose cycle is the "
             "RTL's; error: the last response's cycle, model / RTL - 1.", "",
             "| configuration | program | responses | equal | largest difference | RTL last | model last | error |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['config']} | {row['program']} | {row['responses']:,} | {row['equal']:,} | "
                     f"{row['max_difference']:,} | {row['rtl_last']:,} | {row['model_last']:,} | {row['error']:+.2%} |")
    lines += ["", "The model is transaction-level (docs/model.md): its rules are per instruction, its transfers "
              "segments. The memory's arbiter and queue, the embedding unit's requantiser, miss queue and misses, "
              "the lanes' tiles (the engine model's rules) and the filter's output pass follow the RTL; the "
              "mechanisms still inexact (the fetcher at segment grain, the joiner a job at a time, the lanes "
              "sharing the weight memory) are named in docs/model.md."]
    text = "\n".join(lines) + "\n"
    return Report(rows=rows, text=text, data={"rows": rows, "seed": seed}, failures=tuple(failures),
                  sections=(Section("model-regression", "The timed model against the RTL on random programs",
                                    text),))


def _cycles_by_tag(run):
    """``{tag: cycles of its responses, in order}`` of a :class:`rpaccel.sim.chip.ChipRun`."""
    tags = run.responses.tag
    return {int(tag): np.asarray(run.cycles)[tags == tag].astype(np.int64) for tag in np.unique(tags)}
