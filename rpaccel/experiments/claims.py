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

Quality against cost, as RecPipe's figures show it: a second table gives each configuration's NDCG@k, p95 latency
and throughput beside the baseline's, and whether it is on the Pareto front (no other configuration at least as good
in quality and in that cost, better in one); :func:`plot_claims` draws them, NDCG against p95 latency and against
throughput, one marker per configuration, the baseline's iso-quality line and the Pareto fronts.
"""

import os
import time
from pathlib import Path

import numpy as np

from ..results import RESULTS_FILE
from .report import ExperimentError, Report, Section, check_positive, check_seed
from .sweep import pareto_front

__all__ = ["RECPIPE_SPLITS", "plot_claims", "quality_cost", "run_claims"]

#: RecPipe's configurations of the 128 x 128 array: one array, 4 x 64 x 64, 16 x 32 x 32, 64 x 16 x 16.
RECPIPE_SPLITS = (1, 4, 16, 64)


def _ndcg(ranking, labels, k):
    from ..host.quality import ndcg

    ranked = np.zeros(k)
    indices = [index for _, index in ranking][:k]
    ranked[:len(indices)] = labels[indices]
    return float(ndcg(ranked[None], k)[0])


def run_claims(preset="paper", *, candidates=4096, queries=4, splits=RECPIPE_SPLITS, k=64, seed=1,
               train_samples=20_000, max_rows=5_000, plot=None, results=RESULTS_FILE, progress=None):
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
    plot : path-like, optional
        Where to draw quality against cost (:func:`plot_claims`; the file type follows the suffix), linked from
        the section.
    results : path-like
        The results file the section's link to ``plot`` is relative to.

    Returns
    -------
    Report
        Section ``claims-<preset>``: a row per configuration, the iso-quality verdict against RecPipe's 3x and
        6x, and quality against cost (:func:`quality_cost`); a failure for any program whose responses differ from
        the golden model's.
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
            rows.append({"pipeline": pipeline, "models": " -> ".join(models[role].spec.name for role in roles),
                         "mode": mode, "split": split, "sub_batch": program.sub_batch,
                         "lanes": lanes, "lane_map": schedule.lanes, "mapping": tried,
                         "latency_cycles": latencies, "p95_cycles": float(np.percentile(latencies, 95)),
                         "p95_us": float(np.percentile(latencies, 95)) / config.clock_mhz,
                         "cycles_per_query": per_query, "qps": config.clock_mhz * 1e6 / per_query,
                         "ndcg": float(np.mean(scores)), "ndcg_queries": scores, "recpipe_cycles": estimate.cycles,
                         "seconds": time.perf_counter() - started})
            say(f"  p95 {rows[-1]['p95_us']:,.1f} us, {rows[-1]['qps']:,.0f} queries/s, "
                f"NDCG@{k} {rows[-1]['ndcg']:.4f}")
    text = _table(config, rows, candidates, queries, k, seed, train_samples)
    measured = [row for row in rows if "refused" not in row]
    text += "\n" + _cost_table(quality_cost(measured), k)
    body = text
    if plot is not None and measured:
        path = plot_claims(measured, plot, k=k, title=f"Quality against cost on {preset} (timed model): "
                           f"{queries} queries of {candidates:,} candidates")
        rel = os.path.relpath(Path(path).resolve(), Path(results).resolve().parent)
        body += f"\n![NDCG@{k} against p95 latency and throughput]({rel})\n"
    return Report(rows=rows, text=text, data={"rows": rows, "preset": preset, "plot": plot and str(plot)},
                  failures=tuple(failures),
                  sections=(Section(f"claims-{preset}", f"RecPipe's claim: RPAccel against a TPU-like baseline "
                                    f"({preset}, timed model)", body),))


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


def quality_cost(rows):
    """Each measured configuration's quality against its cost, beside the baseline's.

    Parameters
    ----------
    rows : list of dict
        :func:`run_claims`'s measured rows (``pipeline``, ``models``, ``mode``, ``split``, ``lanes``, ``ndcg``,
        ``ndcg_queries``: each query's, ``p95_us``, ``qps``); the baseline is the row in baseline mode, if any.

    Returns
    -------
    list of dict
        In the order of ``rows``, each with ``ndcg_points`` (its NDCG minus the baseline's, in points: hundredths)
        and ``ndcg_error`` (that difference's standard error, paired over the queries; None for one query),
        ``latency_x`` (the baseline's p95 over its own) and ``qps_x`` (its throughput over the baseline's), None
        without a baseline, and ``front``: the Pareto fronts it is on (``"latency"``, ``"throughput"``: no other
        configuration has an NDCG at least its own at a lower p95, or a higher throughput; of configurations equal
        in both, the first).
    """
    baseline = next((row for row in rows if row["mode"] == "baseline"), None)
    ndcg = [row["ndcg"] for row in rows]
    fronts = {"latency": set(pareto_front([row["p95_us"] for row in rows], ndcg, minimise_x=True)),
              "throughput": set(pareto_front([row["qps"] for row in rows], ndcg, minimise_x=False))}
    out = []
    for index, row in enumerate(rows):
        error = None
        if baseline is not None and len(row["ndcg_queries"]) > 1:
            change = 100 * (np.asarray(row["ndcg_queries"]) - np.asarray(baseline["ndcg_queries"]))
            error = float(change.std(ddof=1) / np.sqrt(len(change)))
        out.append({**row, "front": tuple(name for name, members in fronts.items() if index in members),
                    "ndcg_points": None if baseline is None else 100 * (row["ndcg"] - baseline["ndcg"]),
                    "ndcg_error": error,
                    "latency_x": None if baseline is None else baseline["p95_us"] / row["p95_us"],
                    "qps_x": None if baseline is None else row["qps"] / baseline["qps"]})
    return out


def _cost_table(rows, k):
    """The quality-against-cost table of :func:`quality_cost`'s rows (Markdown, with its heading line)."""
    def factor(value):
        return "-" if value is None else f"{value:.2f}x"

    lines = [f"Quality against cost (RecPipe's figures as a table): NDCG@{k} against p95 latency and throughput, "
             "each beside the baseline's (the NDCG's difference ± its standard error, paired over the queries); on "
             "the Pareto front of NDCG against latency or throughput where no other configuration has an NDCG at "
             "least its own at a lower p95 latency, or a higher throughput.", "",
             f"| configuration | stages | split | lanes per stage | NDCG@{k} | vs baseline (points) | "
             "p95 latency (us) | baseline's p95 / this | QPS | this / baseline's QPS | Pareto front |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        points = ("-" if row["ndcg_points"] is None else f"{row['ndcg_points']:+.2f}" +
                  ("" if row["ndcg_error"] is None else f" ± {row['ndcg_error']:.2f}"))
        lines.append(f"| {row['pipeline']}-stage {row['mode']} | {row['models']} | {row['split']} | {row['lanes']} | "
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
    pipelines = list(dict.fromkeys((row["pipeline"], row["mode"], row["models"]) for row in rows))
    colours = {key: plt.get_cmap("tab10")(n % 10) for n, key in enumerate(pipelines)}
    splits = sorted({row["split"] for row in rows})
    shapes = {split: "osD^vP"[n % 6] for n, split in enumerate(splits)}
    panels = [("p95_us", "p95 latency per query (us, log scale)", "latency"),
              ("qps", "throughput (queries per second at the clock, log scale)", "throughput")]
    fig, axes = plt.subplots(1, 2, figsize=(12.4, 5.2), dpi=120)
    for ax, (column, label, front) in zip(axes, panels):
        for row in rows:
            colour = colours[row["pipeline"], row["mode"], row["models"]]
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
    handles = [Line2D([], [], ls="", marker="*" if mode == "baseline" else "o", color=colours[pipeline, mode, models],
                      markersize=9, label=f"{pipeline}-stage {mode}: {models}") for pipeline, mode, models in pipelines]
    handles += [Line2D([], [], ls="", marker=shapes[split], color="dimgrey", markersize=7, label=f"split {split}")
                for split in splits]
    handles += [Line2D([], [], ls="", marker="o", markerfacecolor="none", color="dimgrey", markersize=7,
                       label="hollow: the stage mapping's lane map"),
                Line2D([], [], color="black", lw=1, marker="o", markerfacecolor="none", markersize=11,
                       label="Pareto front")]
    if baseline is not None:
        handles.append(Line2D([], [], color="grey", ls="--", lw=1, label=f"iso-quality: the baseline's NDCG@{k}"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title or "Quality against cost on the chip's timed model", fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return save_figure(fig, path)
