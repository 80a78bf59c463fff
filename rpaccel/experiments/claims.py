"""RecPipe's headline claim against a TPU-like baseline, at iso-quality, on the chip's timed model (issue 22).

RecPipe's abstract: at iso-quality, RPAccel improves latency by 3x and throughput by 6x over prior art, whose code
names a TPU-like accelerator (one monolithic 128 x 128 array, no sub-batching, one cache). Here both run on the
same design in the whole chip's timed model (:mod:`rpaccel.sim.model.chip`): the baseline is RecPipe's 1-stage
RM-large on the whole array in baseline mode (sub-batches one after another, every logit to the host, which sorts);
RPAccel runs the 2- and 3-stage pipelines in RPAccel mode on the array split as RecPipe's configurations split it.
Quality is measured, not assumed: NDCG@k of each query's ranking against the synthetic data's labels, on the same
queries for every configuration. Latency is one query alone (the p95 over the queries); throughput, the queries
back to back in one program. RecPipe's own analytical model (:mod:`rpaccel.sim.model.recpipe`) gives its figure
for the same stages and split beside ours.

On each split RPAccel runs twice where the stage mapping (:func:`rpaccel.host.runtime.mapping.choose_mapping`, for
throughput, on that split, at the lanes' full sub-batch) finds a better lane map than the compiler's default (stage
``s`` on lane ``s`` alone): the default row, and a row with the chosen map (the lanes of each stage; consecutive
queries on a stage's lanes in turn). One query alone runs each stage on one lane either way, so the chosen map
changes the throughput; its latency is measured again all the same.
"""

import time

import numpy as np

from .report import ExperimentError, Report, Section, check_positive, check_seed

__all__ = ["run_claims"]

#: RecPipe's configurations of the 128 x 128 array: one array, 4 x 64 x 64, 16 x 32 x 32, 64 x 16 x 16.
RECPIPE_SPLITS = (1, 4, 16, 64)


def _ndcg(ranking, labels, k):
    from ..host.quality import ndcg

    ranked = np.zeros(k)
    indices = [index for _, index in ranking][:k]
    ranked[:len(indices)] = labels[indices]
    return float(ndcg(ranked[None], k)[0])


def run_claims(preset="paper", *, candidates=4096, queries=4, splits=RECPIPE_SPLITS, k=64, seed=1,
               train_samples=20_000, max_rows=5_000, progress=None):
    """RPAccel (2- and 3-stage, RPAccel mode, each split) against the TPU-like baseline (1-stage RM-large, baseline
    mode, the whole array) on the timed model: latency, throughput, NDCG@k, RecPipe's estimate.

    Parameters
    ----------
    preset : str or rpaccel.config.AccelConfig
        The configuration, or a preset's name (RecPipe's scale: ``paper``).
    candidates, queries, k : int
        Candidates per query (RecPipe: 4,096), queries (each alone for latency, all back to back for
        throughput), the ranking's length (RecPipe: 64).
    splits : sequence of int
        Splits of the array RPAccel mode runs on (those the configuration has and the pipeline fills).
    seed, train_samples, max_rows : int
        Data, training (RM-small, RM-med, RM-large on synthetic Criteo-format data) and table sizes.

    Returns
    -------
    Report
        Section ``claims-<preset>``: a row per configuration, and the iso-quality verdict against RecPipe's 3x and
        6x; a failure for any program whose responses differ from the golden model's.
    """
    from ..config import preset as get_preset
    from ..host.data import SyntheticConfig
    from ..host.driver.chip import ChipSetup, CompileError, Schedule, Stage, compile_queries
    from ..host.models import get_model
    from ..host.runtime.mapping import choose_mapping, describe_lanes
    from ..sim.model.chip import ModelDevice
    from ..sim.model.recpipe import RecPipeStage, recpipe_query
    from .accel import ROLES, measure_program, pipeline_stages, train_models

    check_seed(seed)
    check_positive(candidates=candidates, queries=queries, k=k, train_samples=train_samples, max_rows=max_rows)
    config = get_preset(preset) if isinstance(preset, str) else preset
    preset = config.name
    bad = [n for n in splits if n not in config.splits]
    if bad:
        raise ExperimentError("splits", f"{bad} are not splits of {preset} {config.splits}")
    say = progress or (lambda line: None)
    specs = {role: get_model(name, max_rows=max_rows) for role, name in ROLES.items()}
    say(f"training {', '.join(spec.name for spec in specs.values())} on {train_samples:,} synthetic samples ...")
    models, generator, _ = train_models(specs, train_samples=train_samples, seed=seed,
                                        data=SyntheticConfig.criteo(max_rows=max_rows, seed=seed))
    records = generator.generate(queries * candidates, start=train_samples + 2_000)
    parts = [records.take(slice(q * candidates, (q + 1) * candidates)) for q in range(queries)]
    inputs = [{role: model.inputs(part) for role, model in models.items()} for part in parts]
    labels = [np.asarray(part.labels, dtype=np.float64) for part in parts]

    final = pipeline_stages(1, candidates, config.k_max)[-1][1]
    if k > final:
        raise ExperimentError("k", f"NDCG@{k} needs rankings of {k}; at {candidates:,} candidates the pipelines keep "
                              f"{final} (RecPipe's 64 of 4,096, scaled)")
    cases = [(1, "baseline", 1)] + [(p, "rpaccel", n) for p in (2, 3) for n in splits]
    rows, failures = [], []
    for pipeline, mode, split in cases:
        plan = pipeline_stages(pipeline, candidates, config.k_max)
        roles = [role for role, _ in plan]
        label = f"{pipeline}-stage {mode}, split {split}"

        def place(query_numbers, plan=plan, roles=roles):
            used = list(dict.fromkeys(roles))
            setup = ChipSetup(config, [models[role] for role in used])
            query_set = [setup.add_query({models[role]: inputs[q][role] for role in used}) for q in query_numbers]
            return setup, [Stage(models[role], k=kept) for role, kept in plan], query_set

        def compile_for(query_numbers, schedule):
            return compile_queries(*place(query_numbers), schedule)

        def measure(program, what, label=label):
            run, figures = measure_program(program, ModelDevice(config))
            if run.mismatches():
                failures.append(f"{label}, {what}: the model's responses differ from the golden model's")
            return run, figures

        default = Schedule(mode, split=split)
        try:
            compile_for([0], default)
        except CompileError as error:
            say(f"{label}: refused ({error})")
            rows.append({"pipeline": pipeline, "mode": mode, "split": split, "refused": str(error)})
            continue
        stages, items = [], candidates
        for role, kept in plan:
            stages.append(RecPipeStage(models[role].spec, items, kept))
            items = kept
        estimate = recpipe_query(config, stages, split=split, clock_ns=1000 / config.clock_mhz)
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
            latencies, scores = [], []
            for q in range(queries):
                program = compile_for([q], schedule)
                run, figures = measure(program, f"lanes {lanes}, query {q}")
                ranking = run.responses.ranking(program.tags[0]) if mode == "rpaccel" else run.expected.rankings[0]
                latencies.append(figures["cycles"])
                scores.append(_ndcg(ranking, labels[q], k))
            per_query = cycles / queries
            rows.append({"pipeline": pipeline, "mode": mode, "split": split, "sub_batch": program.sub_batch,
                         "lanes": lanes, "lane_map": schedule.lanes, "mapping": tried,
                         "latency_cycles": latencies, "p95_cycles": float(np.percentile(latencies, 95)),
                         "p95_us": float(np.percentile(latencies, 95)) / config.clock_mhz,
                         "cycles_per_query": per_query, "qps": config.clock_mhz * 1e6 / per_query,
                         "ndcg": float(np.mean(scores)), "recpipe_cycles": estimate.cycles,
                         "seconds": time.perf_counter() - started})
            say(f"  p95 {rows[-1]['p95_us']:,.1f} us, {rows[-1]['qps']:,.0f} queries/s, "
                f"NDCG@{k} {rows[-1]['ndcg']:.4f}")
    text = _table(config, rows, candidates, queries, k, seed, train_samples)
    return Report(rows=rows, text=text, data={"rows": rows, "preset": preset}, failures=tuple(failures),
                  sections=(Section(f"claims-{preset}", f"RecPipe's claim: RPAccel against a TPU-like baseline "
                                    f"({preset}, timed model)", text),))


def _table(config, rows, candidates, queries, k, seed, train_samples):
    measured = [row for row in rows if "refused" not in row]
    lines = [f"Configuration {config.name} ({config.array_rows} x {config.array_cols}, {config.clock_mhz:g} MHz); "
             f"{queries} queries of {candidates:,} candidates (synthetic Criteo-format data, seed {seed}; models "
             f"trained on {train_samples:,} samples); the whole chip's timed model. Latency: each query alone, p95 "
             f"over the queries; throughput: the queries back to back; NDCG@{k}: RecPipe's definition, the mean over "
             "the queries, against the data's labels.", "",
             f"| pipeline | mode | split | lanes per stage | sub-batch | p95 latency (us) | queries/s | NDCG@{k} | "
             "RecPipe model (us) |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if "refused" in row:
            lines.append(f"| {row['pipeline']}-stage | {row['mode']} | {row['split']} | - | - | refused | - | - | - |")
            continue
        lines.append(f"| {row['pipeline']}-stage | {row['mode']} | {row['split']} | {row['lanes']} | "
                     f"{row['sub_batch']} | "
                     f"{row['p95_us']:,.1f} | {row['qps']:,.0f} | {row['ndcg']:.4f} | "
                     f"{row['recpipe_cycles'] / config.clock_mhz:,.1f} |")
    baseline = next((row for row in measured if row["mode"] == "baseline"), None)
    rivals = [row for row in measured if row["mode"] == "rpaccel" and baseline and row["ndcg"] >= baseline["ndcg"]]
    lines.append("")
    if baseline is None:
        lines.append("The baseline did not run: no comparison.")
    elif not rivals:
        lines.append(f"No RPAccel configuration reaches the baseline's NDCG@{k} ({baseline['ndcg']:.4f}) on these "
                     "queries: no iso-quality comparison.")
    else:
        fastest = min(rivals, key=lambda row: row["p95_cycles"])
        busiest = max(rivals, key=lambda row: row["qps"])
        latency = baseline["p95_cycles"] / fastest["p95_cycles"]
        throughput = busiest["qps"] / baseline["qps"]
        lines.append(f"At iso-quality (NDCG@{k} at least the baseline's {baseline['ndcg']:.4f}): p95 latency "
                     f"{latency:.2f}x better ({fastest['pipeline']}-stage, split {fastest['split']}; RecPipe: 3x), "
                     f"throughput {throughput:.2f}x ({busiest['pipeline']}-stage, split {busiest['split']}; "
                     "RecPipe: 6x).")
    lines += ["", "Lanes per stage: `default` is the compiler's map (stage s on lane s alone, the other lanes idle); "
              "otherwise the lane map the stage mapping chose for throughput on that split (`rpaccel.host.runtime."
              "mapping`: lane maps giving each stage up to as many lanes as queries in flight, estimated, the best "
              "measured against the default), stage by stage (`0-1 / 2-3`: the first stage on lanes 0 and 1, the "
              "second on 2 and 3), consecutive queries on a stage's lanes in turn; with "
              f"{queries} queries back to back a stage uses at most {queries} lanes."]
    return "\n".join(lines) + "\n"
