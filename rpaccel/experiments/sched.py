"""``rpaccel bench sched``: DeepRecSched against the static scheduler, CPU cores plus the chip.

DeepRecSys's experiment: queries of DeepRecSys's sizes (lognormal by default) arrive as a Poisson process at a CPU
server with ``cores`` cores and one accelerator; the highest load whose p95 meets a target is found for the static
scheduler (fixed batch size, no accelerator) and for DeepRecSched (batch size and accelerator threshold
hill-climbed), and the ratio reported. :func:`run_sched` does it for one model (section ``sched``),
:func:`run_sched_models` for a list of the zoo's models on the same queries (section ``sched-models``), with
DeepRecSched on the CPU alone beside it (DeepRecSys's 2x is on server CPUs), a p95 target per model (by default
:data:`TARGET_X` times its one-core service time of a query of the mean size: the models' costs span orders of
magnitude) and the geometric mean of the ratios.

The queueing is simulated (:mod:`rpaccel.host.runtime.sched`); the service times are measured, per model:

* CPU: a request of ``B`` items through the float model (numpy float32, one core of this machine), its CPU time
  at a low quantile of repeated runs (:data:`CPU_QUANTILE`: the machine is shared), at batch sizes from 1 to 1,024
  (linear between them);
* accelerator: one query of ``n`` items alone on the chip (RPAccel mode, k = min(n, K_MAX)), from its arrival to
  its last response at the preset's clock, at a few sizes (linear between them), on the chip's RTL (Verilator) or
  on the whole chip's timed model (:class:`rpaccel.sim.model.chip.ModelDevice`, the same interface); with the
  model, one size is checked on the RTL and the error reported.

The chip runs WnD with its dense inputs past the joiner, and would rank MT-WnD by task 0's logit
(:func:`rpaccel.host.driver.chip.chip_mlps`; docs/chip.md). A model the chip cannot run (the compiler's reason:
more tables than the preset's ``max_tables``, as MT-WnD's 43, an embedding wider than the preset's) is scheduled on
the CPU alone and the reason given in its row; a model with no float implementation
(the zoo's cost-only kinds) is listed with that reason and not run. :func:`run_sched_models` writes section
``sched-models`` for the default configuration (``small``) and ``sched-models-<name>`` for another (``paper``:
RecPipe's 128 x 128 chip, which holds the models too large for ``small``); a configuration meant for modelling only
(no FPGA target) has no RTL to check its timed model against.
"""

import math
import os
import re
import time

import numpy as np

from ..config import NO_TARGET
from ..host.runtime.sched import CLIMB_TOLERANCE
from .report import ExperimentError, Report, Section, check_positive, check_seed

__all__ = ["CPU_QUANTILE", "CPU_REPEATS", "CPU_SIZES", "DEVICES", "STATIC_BATCHES", "TARGET_X", "ZOO_MODELS",
           "models_section", "run_sched", "run_sched_models"]

#: Where the chip's service times come from: its RTL on Verilator, or the whole chip's timed model.
DEVICES = ("rtl", "model")

#: The models :func:`run_sched_models` runs by default: DeepRecSys's models with a float implementation (the DLRM
#: family) and RecPipe's three.
ZOO_MODELS = ("rmc1", "rmc2", "rmc3", "wnd", "mt-wnd", "rm-small", "rm-med", "rm-large")

#: The static scheduler's batch sizes (DeepRecSys's static runs use 16 to 64), no accelerator.
STATIC_BATCHES = (16, 32, 64)

#: Batch sizes at which the CPU's service time is measured by default: the schedulers' batch sizes and the ends.
CPU_SIZES = (1, 16, 32, 64, 128, 256, 512, 1024)

#: Runs per batch size, and the quantile of them taken as the CPU's service time, each run timed in the process's
#: CPU time: the machine is shared, and its other processes' time slices (which wall-clock time would count) and
#: their use of the caches lengthen some runs, so the CPU time at a low quantile estimates a core of its own.
CPU_REPEATS, CPU_QUANTILE = 21, 0.1

#: :func:`run_sched_models`'s default p95 target: this many times a model's one-core service time of a query of
#: the mean size.
TARGET_X = 3.0


def _train(spec, seed, samples=8_000, calibration=1_000):
    from ..host.data import SyntheticConfig, SyntheticCriteo, preprocess
    from ..host.quant import quantize
    from ..host.train import TrainConfig, train

    generator = SyntheticCriteo(SyntheticConfig.for_model(spec, seed=seed))
    records = generator.generate(samples)
    model, _ = train(spec, *preprocess(records, spec), records.labels, TrainConfig(epochs=1, batch=256, seed=seed))
    return model, quantize(model, generator.generate(calibration, start=samples)), generator


def _forward_service(model, dense, ids, sizes):
    from ..host.runtime.sched import measure_cpu_service

    return measure_cpu_service(lambda n: model.forward(dense[:n], ids[:n]), sizes, repeats=CPU_REPEATS,
                               quantile=CPU_QUANTILE, clock=time.process_time_ns)


def _cpu_service(model, dense, ids, sizes):
    """The float model's service time by batch size, measured in a spawned process with one BLAS thread (a
    simulated core is one of this machine's)."""
    import concurrent.futures
    import multiprocessing

    from ..threads import one_thread_children

    with one_thread_children(), concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_forward_service, model, dense, ids, sizes).result()


def _device(config, device):
    """The chip of ``config`` as a device: ``"rtl"`` (Verilator) or ``"model"`` (the timed model)."""
    if device == "rtl":
        from ..sim.chip import chip_device

        return chip_device(config)
    from ..sim.model.chip import ModelDevice

    return ModelDevice(config)


def _cpu_statistic():
    return f"the process's CPU time, the {CPU_QUANTILE:.0%} quantile of {CPU_REPEATS} runs"


def _chip_refusal(config, qmodel):
    """Why the chip of ``config`` cannot hold ``qmodel`` (the compiler's one line, without its "Model m cannot
    run on c: "), or None if it can."""
    from ..host.driver.chip import ChipSetup, CompileError

    try:
        ChipSetup(config, [qmodel])
    except (CompileError, ValueError) as error:
        return re.sub(r"^Model \S+ cannot run on \S+: ", "", str(error))
    return None


def _chip_ns(device, config, spec, qmodel, records, n):
    """Nanoseconds of one query of the first ``n`` of ``records`` alone on ``device``; a ranking other than the
    golden model's is an error."""
    from ..host.runtime.chip import replay_on_chip
    from ..host.runtime.pipeline import StageSpec

    stages = (StageSpec(spec.name, n, min(n, config.k_max)),)
    run = replay_on_chip(device, config, {spec.name: qmodel}, stages, [records.take(slice(0, n))], [0])
    if run.mismatches:
        raise ExperimentError(None, f"the chip's ranking of {n} items of {spec.name} differs from the golden "
                              "model's")
    return float(run.latencies_ns[0])


def _check_target(name, value):
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ExperimentError(name, f"must be positive, not {value!r}")


def _check_settings(sizes, queries, cores, max_rows, seed, cpu_sizes, accel_sizes, device):
    """The parsed size distribution, after checking the settings both experiments share."""
    from ..host.runtime.trace import SizeDist

    check_positive(queries=queries, cores=cores, max_rows=max_rows)
    check_seed(seed)
    if device not in DEVICES:
        raise ExperimentError("device", f"must be one of {', '.join(DEVICES)}, not {device!r}")
    for name, values in (("cpu_sizes", cpu_sizes), ("accel_sizes", accel_sizes)):
        if len(values) < 2 or list(values) != sorted(set(values)) or values[0] < 1:
            raise ExperimentError(name, f"must be two or more increasing positive sizes, not {list(values)!r}")
    try:
        return SizeDist.parse(sizes)
    except ValueError as error:
        raise ExperimentError("sizes", str(error)) from None


def _trace(dist, queries, seed):
    """Query sizes and Poisson gaps (ns, at 1 query/s; the first 0), drawn from ``seed``."""
    from ..host.runtime.trace import ArrivalProcess

    rng = np.random.default_rng(seed)
    query_sizes = dist.draw(rng, queries)
    gaps = ArrivalProcess.parse("poisson:1").gaps_ns(rng, queries).astype(np.float64)
    gaps[0] = 0
    return query_sizes, gaps


def _schedule(gaps, query_sizes, *, target_ms, cores, cpu, accel):
    """The static settings' and DeepRecSched's highest loads meeting ``target_ms`` (``accel`` None: the CPU alone).

    Returns
    -------
    dict
        ``statics`` and ``tried`` (lists of ``(SchedConfig, load, tail_ms)``, load None where none meets the
        target), ``best_static`` (one of ``statics``), ``best`` and ``best_load`` (DeepRecSched's choice),
        ``cpu_best`` and ``cpu_load`` (its best setting without the accelerator: the climb over batch sizes).
    """
    from ..host.runtime.sched import SchedConfig, deeprecsched, max_load

    statics = []
    for batch in STATIC_BATCHES:
        load, tail = max_load(gaps, query_sizes, SchedConfig(batch), target_ms=target_ms, workers=cores, cpu=cpu)
        statics.append((SchedConfig(batch), load, tail))
    best_static = max(statics, key=lambda each: each[1] or 0.0)
    best, best_load, tried = deeprecsched(gaps, query_sizes, target_ms=target_ms, workers=cores, cpu=cpu,
                                          accel=accel)
    cpu_best, cpu_load, _ = max((each for each in tried if each[0].threshold is None), key=lambda e: e[1] or 0.0)
    return {"statics": statics, "best_static": best_static, "best": best, "best_load": best_load, "tried": tried,
            "cpu_best": cpu_best, "cpu_load": cpu_load or 0.0}


def _ratio(load, static_load):
    """``load`` over the static scheduler's (None if no static setting meets the target)."""
    return load / static_load if static_load else None


def run_sched(config, *, model="rmc1", sizes="lognormal:5.1,0.2", queries=5_000, target_ms=20.0, cores=2,
              cpu_sizes=CPU_SIZES, accel_sizes=(16, 64, 256, 1024), device="rtl", max_rows=5_000,
              seed=1, progress=None):
    """DeepRecSched and the static scheduler on ``model`` (see the module notes).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        The chip (it runs the accelerator's queries).
    model : str
        A zoo model the chip runs (RMC1, the RM models).
    sizes : str
        Query sizes (:class:`rpaccel.host.runtime.trace.SizeDist`).
    queries : int
        Simulated queries per load.
    target_ms : float
        The p95 target.
    cores : int
        Simulated CPU cores (each runs one request at a time at the measured service time).
    cpu_sizes, accel_sizes : sequence of int
        Sizes at which the CPU and the accelerator service times are measured.
    device : str
        The chip's service times from its RTL (``"rtl"``) or its timed model (``"model"``).
    max_rows, seed : int

    Returns
    -------
    Report
    """
    from ..host.data import preprocess
    from ..host.models import ModelError, get_model
    from ..host.runtime.pipeline import PipelineError
    from ..host.runtime.sched import ServiceTable

    _check_target("target_ms", target_ms)
    dist = _check_settings(sizes, queries, cores, max_rows, seed, cpu_sizes, accel_sizes, device)
    try:
        spec = get_model(model, max_rows=max_rows)
    except ModelError as error:
        raise ExperimentError("model", str(error)) from None
    started = time.monotonic()
    if progress:
        progress(f"training {spec.name} (float, then int8) on synthetic data")
    float_model, qmodel, generator = _train(spec, seed)
    records = generator.generate(max(max(cpu_sizes), max(accel_sizes)), start=20_000)
    dense, ids = preprocess(records, spec)
    if progress:
        progress(f"measuring the CPU's service time (float32, one core) at batch sizes {list(cpu_sizes)}")
    cpu = _cpu_service(float_model, dense, ids, list(cpu_sizes))

    where = "RTL" if device == "rtl" else "timed model"
    if progress:
        progress(f"measuring the chip's service time ({config.name} {where}) at sizes {list(accel_sizes)}")
    chip = _device(config, device)
    try:
        accel = ServiceTable(tuple(accel_sizes),
                             tuple(_chip_ns(chip, config, spec, qmodel, records, n) for n in accel_sizes))
    except PipelineError as error:
        raise ExperimentError("model", str(error)) from None

    query_sizes, gaps = _trace(dist, queries, seed)
    if progress:
        progress("searching the highest load meeting the target for each setting (simulated)")
    result = _schedule(gaps, query_sizes, target_ms=target_ms, cores=cores, cpu=cpu, accel=accel)
    statics, best_static, best, best_load = (result[key] for key in ("statics", "best_static", "best", "best_load"))
    ratio = _ratio(best_load, best_static[1])

    rows = [{"scheduler": "static", "setting": str(c), "max_qps": load, "p95_ms": tail} for c, load, tail in statics]
    rows += [{"scheduler": "DeepRecSched", "setting": str(c), "max_qps": load, "p95_ms": tail}
             for c, load, tail in result["tried"]]
    lines = [f"Model {spec.name} (tables capped at {max_rows:,} rows); query sizes {sizes} "
             f"(mean {query_sizes.mean():.0f}, max {query_sizes.max()}); {queries:,} simulated Poisson queries per "
             f"load; {cores} CPU cores (simulated as independent cores, each at the service time measured on one "
             f"core); p95 target {target_ms:g} ms; accelerator: the {config.name} chip at "
             f"{config.clock_mhz:g} MHz.", "",
             f"Service times measured: CPU (float32, one core, {_cpu_statistic()}), accelerator (the chip's "
             f"{where}, one query):", "",
             "| items | CPU ms | chip ms |", "| ---: | ---: | ---: |"]
    for n in sorted(set(cpu_sizes) | set(accel_sizes)):
        cpu_ms = f"{cpu(n) / 1e6:.3f}" if n in cpu_sizes else "-"
        chip_ms = f"{accel(n) / 1e6:.3f}" if n in accel_sizes else "-"
        lines.append(f"| {n:,} | {cpu_ms} | {chip_ms} |")
    lines += ["", "| scheduler | setting (B: batch, T: threshold) | highest load meeting p95 (q/s) | p95 there ms |",
              "| --- | --- | ---: | ---: |"]
    for row in rows:
        load, tail = row["max_qps"], row["p95_ms"]
        lines.append(f"| {row['scheduler']} | {row['setting']} | "
                     f"{'unachievable' if load is None else f'{load:.1f}'} | "
                     f"{'-' if tail is None else f'{tail:.2f}'} |")
    verdict = (f"**{ratio:.2f}x**" if ratio is not None else "no static setting meets the target")
    static_load = "-" if best_static[1] is None else f"{best_static[1]:.1f}"
    lines += ["", f"DeepRecSched ({best}) reaches {best_load:.1f} queries/s against the best static setting's "
              f"{static_load} ({best_static[0]}): {verdict} (DeepRecSys reports 2x on server CPUs across its eight "
              "models).", "",
              "Simulated queueing: requests first come, first served on the cores, whole queries on the accelerator; "
              "a query's latency runs from its arrival to its last request's end. The chip's service time between "
              "the measured sizes is linear; the chip's clock is the preset's target, not a routed figure "
              f"(issue 19). DeepRecSched's walks stop when the load falls more than {CLIMB_TOLERANCE:.0%} below the "
              "best of the walk."]
    text = "\n".join(lines) + "\n"
    return Report(rows=rows, text=text,
                  data={"rows": rows, "ratio": ratio, "best": str(best), "best_static": str(best_static[0]),
                        "cpu_ns": dict(zip(cpu.sizes, cpu.ns)), "accel_ns": dict(zip(accel.sizes, accel.ns)),
                        "device": device, "seconds": time.monotonic() - started},
                  sections=(Section("sched", "DeepRecSched against the static scheduler (CPU cores and the chip)",
                                    text),))


def _measure_model(config, name, *, device, cpu_sizes, accel_sizes, check_rtl, train_samples, max_rows, seed,
                   say):
    """One model's service times: ``{"model", "cpu", "accel", "chip", "rtl_check", "refused", "load_average"}``
    (``accel`` None and ``chip`` the compiler's reason when the chip cannot run it; ``refused`` the reason when the
    CPU cannot; ``load_average`` the machine's over the minute of the CPU's measurement)."""
    from ..host.data import preprocess
    from ..host.models import get_model
    from ..host.runtime.pipeline import PipelineError
    from ..host.runtime.sched import ServiceTable

    spec = get_model(name, max_rows=max_rows)
    entry = {"model": spec.name, "cpu": None, "accel": None, "chip": None, "rtl_check": None, "refused": None,
             "load_average": None}
    if not spec.trainable:
        entry["refused"] = f"no float implementation of the {spec.interaction} interaction (cost model only)"
        return entry
    say(f"{spec.name}: training (float, then int8) on {train_samples:,} synthetic samples")
    float_model, qmodel, generator = _train(spec, seed, samples=train_samples, calibration=min(1_000, train_samples))
    records = generator.generate(max(*cpu_sizes, *accel_sizes, check_rtl or 1), start=train_samples + 2_000)
    dense, ids = preprocess(records, spec)
    say(f"{spec.name}: the CPU's service time (float32, one core) at batch sizes {list(cpu_sizes)}")
    entry["cpu"] = _cpu_service(float_model, dense, ids, list(cpu_sizes))
    entry["load_average"] = os.getloadavg()[0]
    entry["chip"] = _chip_refusal(config, qmodel)
    if entry["chip"] is not None:
        say(f"{spec.name}: the chip cannot run it ({entry['chip']})")
        return entry
    where = "RTL" if device == "rtl" else "timed model"
    say(f"{spec.name}: the chip's service time ({config.name} {where}) at sizes {list(accel_sizes)}")
    chip = _device(config, device)
    try:
        accel = ServiceTable(tuple(accel_sizes),
                             tuple(_chip_ns(chip, config, spec, qmodel, records, n) for n in accel_sizes))
        if device == "model" and check_rtl:
            say(f"{spec.name}: {check_rtl} items on the RTL, against the timed model")
            model_ns = (accel(check_rtl) if check_rtl in accel_sizes else
                        _chip_ns(chip, config, spec, qmodel, records, check_rtl))
            entry["rtl_check"] = (check_rtl, _chip_ns(_device(config, "rtl"), config, spec, qmodel, records,
                                                      check_rtl), model_ns)
    except PipelineError as error:
        entry["chip"] = str(error)
        say(f"{spec.name}: the chip cannot run it ({entry['chip']})")
        return entry
    entry["accel"] = accel
    return entry


def models_section(config):
    """The results section :func:`run_sched_models` writes for ``config``: ``sched-models`` for ``small`` (the
    default), ``sched-models-<name>`` for another configuration (its name's other characters as dashes)."""
    if config.name == "small":
        return "sched-models"
    return "sched-models-" + re.sub(r"[^A-Za-z0-9]+", "-", config.name).strip("-").lower()


def _geomean(values):
    """The geometric mean of the ratios that exist (``None``: no ratio); 0 if one is 0 (DeepRecSched meets the
    target at no load where a static setting does)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return 0.0 if min(values) == 0 else math.exp(sum(math.log(v) for v in values) / len(values))


def _models(count):
    return f"{count} model{'' if count == 1 else 's'}"


def run_sched_models(config, *, models=ZOO_MODELS, device="model", sizes="lognormal:5.1,0.2", queries=2_000,
                     target_ms=None, target_x=None, cores=2, cpu_sizes=CPU_SIZES, accel_sizes=(16, 64, 256, 1024),
                     check_rtl=64, train_samples=2_000, max_rows=5_000, seed=1, progress=None):
    """DeepRecSched against the static scheduler on each of ``models``, the same queries for all (see the module
    notes).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        The chip.
    models : sequence of str
        Zoo models; those the chip cannot run are scheduled on the CPU alone (the reason in their row), those
        without a float implementation are listed and not run.
    device : str
        The chip's service times from its timed model (``"model"``) or its RTL (``"rtl"``).
    sizes : str
        Query sizes (:class:`rpaccel.host.runtime.trace.SizeDist`).
    queries : int
        Simulated queries per load.
    target_ms, target_x : float, optional
        The p95 target: ``target_ms`` for every model, or ``target_x`` times each model's one-core service time
        of a query of the mean size (the models' costs span orders of magnitude, as DeepRecSys's per-model targets
        do); one of them, by default ``target_x`` :data:`TARGET_X`.
    cores : int
        Simulated CPU cores.
    cpu_sizes, accel_sizes : sequence of int
        Sizes at which the CPU and the accelerator service times are measured.
    check_rtl : int or None
        With the timed model, a query size also run on the RTL, its error reported (None or 0: none; none on a
        configuration meant for modelling only, whose RTL is not simulated).
    train_samples, max_rows, seed : int
        Training samples per model (the service times do not depend on the model's quality), table rows, seed.

    Returns
    -------
    Report
        Section :func:`models_section` (``sched-models`` on ``small``): per model the service times, the best
        static setting's highest load, and DeepRecSched's on the CPU alone and with the chip, each with its ratio;
        the geometric means of the ratios.
    """
    from ..host.models import ModelError, get_model

    if target_ms is not None and target_x is not None:
        raise ExperimentError(None, "give target_ms or target_x, not both")
    if target_ms is None:
        target_x = TARGET_X if target_x is None else target_x
        _check_target("target_x", target_x)
    else:
        _check_target("target_ms", target_ms)
    dist = _check_settings(sizes, queries, cores, max_rows, seed, cpu_sizes, accel_sizes, device)
    check_positive(train_samples=train_samples)
    models = list(models)
    if not models or len(set(models)) != len(models):
        raise ExperimentError("models", f"must be one or more distinct zoo models, not {models!r}")
    if check_rtl is not None and (not isinstance(check_rtl, int) or isinstance(check_rtl, bool) or check_rtl < 0):
        raise ExperimentError("check_rtl", f"must be a non-negative integer or None, not {check_rtl!r}")
    if config.target == NO_TARGET and (check_rtl or device == "rtl"):
        what = f"check_rtl={check_rtl}" if check_rtl else "device='rtl'"
        raise ExperimentError("check_rtl" if check_rtl else "device",
                              f"{what}: the {config.name} configuration is for modelling only (no FPGA target), its "
                              "RTL is not simulated; use the timed model with no RTL check")
    for name in models:                                 # every name checked before anything runs
        try:
            get_model(name)
        except ModelError as error:
            raise ExperimentError("models", f"has an {error}") from None
    say = progress or (lambda line: None)
    started = time.monotonic()
    query_sizes, gaps = _trace(dist, queries, seed)
    results = []
    for name in models:
        began = time.monotonic()
        entry = _measure_model(config, name, device=device, cpu_sizes=cpu_sizes, accel_sizes=accel_sizes,
                               check_rtl=check_rtl or None, train_samples=train_samples, max_rows=max_rows,
                               seed=seed, say=say)
        if entry["cpu"] is not None:
            entry["target_ms"] = target_ms or target_x * entry["cpu"](float(query_sizes.mean())) / 1e6
            say(f"{entry['model']}: searching the highest load meeting {entry['target_ms']:.3g} ms for each setting")
            entry.update(_schedule(gaps, query_sizes, target_ms=entry["target_ms"], cores=cores, cpu=entry["cpu"],
                                   accel=entry["accel"]))
            static_load = entry["best_static"][1]
            entry["ratio_cpu"] = _ratio(entry["cpu_load"], static_load)
            entry["ratio"] = _ratio(entry["best_load"], static_load) if entry["accel"] is not None else None
            say(f"{entry['model']}: static {static_load or 0:.1f}, DeepRecSched {entry['cpu_load']:.1f} (CPU), "
                f"{entry['best_load']:.1f} queries/s ({time.monotonic() - began:.0f} s)")
        results.append(entry)
    rows = [_row(entry) for entry in results]
    summary = {"geomean_cpu": _geomean(row["ratio_cpu"] for row in rows),
               "geomean": _geomean(row["ratio"] for row in rows)}
    text = _models_text(config, rows, summary, device=device, sizes=sizes, query_sizes=query_sizes, queries=queries,
                        target_ms=target_ms, target_x=target_x, cores=cores, cpu_sizes=cpu_sizes,
                        accel_sizes=accel_sizes, max_rows=max_rows, train_samples=train_samples)
    return Report(rows=rows, text=text,
                  data={"rows": rows, **summary, "device": device, "preset": config.name, "target_ms": target_ms,
                        "target_x": target_x, "seconds": time.monotonic() - started},
                  sections=(Section(models_section(config), "DeepRecSched against the static scheduler across the "
                                    "zoo's models (CPU cores and the "
                                    f"{'' if config.name == 'small' else config.name + ' '}chip)", text),))


def _row(entry):
    """The JSON-able row of one model's results."""
    row = {"model": entry["model"], "refused": entry["refused"], "chip": entry["chip"],
           "cpu_ns": None if entry["cpu"] is None else dict(zip(entry["cpu"].sizes, entry["cpu"].ns)),
           "accel_ns": None if entry["accel"] is None else dict(zip(entry["accel"].sizes, entry["accel"].ns)),
           "rtl_check": entry["rtl_check"], "load_average": entry["load_average"]}
    if entry["cpu"] is None:
        return row | {"target_ms": None, "static": None, "static_qps": None, "cpu_best": None, "cpu_qps": None,
                      "ratio_cpu": None, "best": None, "best_qps": None, "ratio": None}
    static = entry["best_static"]
    return row | {"target_ms": entry["target_ms"], "static": str(static[0]), "static_qps": static[1],
                  "cpu_best": str(entry["cpu_best"]), "cpu_qps": entry["cpu_load"], "ratio_cpu": entry["ratio_cpu"],
                  "best": str(entry["best"]) if entry["accel"] is not None else None,
                  "best_qps": entry["best_load"] if entry["accel"] is not None else None, "ratio": entry["ratio"]}


def _models_text(config, rows, summary, *, device, sizes, query_sizes, queries, target_ms, target_x, cores,
                 cpu_sizes, accel_sizes, max_rows, train_samples):
    from ..host.models import get_model

    where = ("its RTL on Verilator" if device == "rtl" else
             "the whole chip's timed model (`rpaccel.sim.model.chip.ModelDevice`)")
    target = (f"p95 target {target_ms:g} ms" if target_ms else
              f"p95 target {target_x:g} times the model's one-core service time of a query of the mean size (as "
              "DeepRecSys sets a target per model)")
    loads = [row["load_average"] for row in rows if row["load_average"] is not None]
    lines = [f"Query sizes {sizes} (mean {query_sizes.mean():.0f}, max {query_sizes.max()}), the same {queries:,} "
             f"simulated Poisson queries per load for every model; {cores} CPU cores (simulated as independent cores, "
             f"each at the service time measured on one core of this machine); {target}; accelerator: the "
             f"{config.name} chip at {config.clock_mhz:g} MHz, its service times from {where}. Tables capped at "
             f"{max_rows:,} rows; models trained on {train_samples:,} synthetic samples (the service times do not "
             "depend on their quality).", "",
             f"Service times measured (ms): CPU at each batch size (float32, one core, {_cpu_statistic()}), chip "
             "at each query size (one query alone, RPAccel mode):", ""]
    headers = ["model"] + [f"CPU {n:,}" for n in cpu_sizes] + [f"chip {n:,}" for n in accel_sizes]
    checked = [row for row in rows if row["rtl_check"]]
    if checked:
        headers.append("RTL check: model / RTL - 1")
    lines += ["| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    for row in rows:
        if row["cpu_ns"] is None:
            continue
        cells = [row["model"]] + [f"{row['cpu_ns'][n] / 1e6:.3f}" for n in cpu_sizes]
        cells += ([f"{row['accel_ns'][n] / 1e6:.3f}" for n in accel_sizes] if row["accel_ns"] else
                  ["-"] * len(accel_sizes))
        if checked:
            check = row["rtl_check"]
            cells.append(f"{check[2] / check[1] - 1:+.1%} at {check[0]:,} items" if check else "-")
        lines.append("| " + " | ".join(cells) + " |")
    towers = [row["model"] for row in rows if row["accel_ns"] and get_model(row["model"]).tasks]
    if towers:
        lines += ["", f"The chip ranks {', '.join(towers)} by task 0's logit and runs task 0's tower alone "
                  "(docs/chip.md); the CPU's float model runs every task's tower."]
    if loads:
        lines += ["", f"The machine's 1-minute load average after each model's CPU measurement: {min(loads):.1f} to "
                  f"{max(loads):.1f} on its {os.cpu_count()} cores (other jobs share it): the CPU's times are CPU "
                  "time at a low quantile of the runs for that reason, and still vary from run to run (caches and "
                  "memory are shared)."]

    def load(value):
        return "unachievable" if not value else f"{value:.1f}"

    def ratio(value):
        return "-" if value is None else f"{value:.2f}x"

    lines += ["", "Highest load meeting the p95 target (queries/s): the best static setting (B: batch per CPU "
              "request, no accelerator), DeepRecSched on the CPU alone (its climb over batch sizes) and with the chip "
              "(then the threshold T from which a query goes whole to the chip), each ratio over the best static "
              "setting's load:", "",
              "| model | chip | p95 target ms | best static | static q/s | DeepRecSched, CPU | CPU q/s | ratio, CPU | "
              "DeepRecSched, CPU + chip | CPU + chip q/s | ratio, CPU + chip |",
              "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | --- | ---: | ---: |"]
    for row in rows:
        if row["refused"]:
            lines.append(f"| {row['model']} | not run: {row['refused']} | - | - | - | - | - | - | - | - | - |")
            continue
        chip = "runs" if row["chip"] is None else f"cannot run: {row['chip']}"
        lines.append(f"| {row['model']} | {chip} | {row['target_ms']:.3g} | {row['static']} | "
                     f"{load(row['static_qps'])} | {row['cpu_best']} | {load(row['cpu_qps'])} | "
                     f"{ratio(row['ratio_cpu'])} | {row['best'] or '-'} | "
                     f"{'-' if row['best'] is None else load(row['best_qps'])} | {ratio(row['ratio'])} |")
    counts = [sum(row[key] is not None for row in rows) for key in ("ratio_cpu", "ratio")]
    lines.append(f"| geometric mean | - | - | - | - | - | - | {ratio(summary['geomean_cpu'])} | - | - | "
                 f"{ratio(summary['geomean'])} |")
    lines += ["", f"Geometric mean of the ratios: {ratio(summary['geomean_cpu'])} on the CPU alone "
              f"({_models(counts[0])}), {ratio(summary['geomean'])} with the chip ({_models(counts[1])} the chip "
              "runs); a ratio needs a static setting that meets the target. DeepRecSys reports about 2x on server "
              "CPUs across its eight models.", "",
              "Simulated queueing: requests first come, first served on the cores, whole queries on the accelerator; "
              "a query's latency runs from its arrival to its last request's end. Service times between the measured "
              "sizes are linear; the chip's clock is the preset's target, not a routed figure (issue 19). "
              f"DeepRecSched's walks stop when the load falls more than {CLIMB_TOLERANCE:.0%} below the best of the "
              "walk."]
    return "\n".join(lines) + "\n"
