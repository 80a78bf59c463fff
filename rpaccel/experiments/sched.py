"""``rpaccel bench sched``: DeepRecSched against the static scheduler, CPU cores plus the chip.

DeepRecSys's experiment on one model: queries of DeepRecSys's sizes (lognormal by default) arrive as a Poisson
process at a CPU server with ``cores`` cores and one accelerator; the highest load whose p95 meets a target is
found for the static scheduler (fixed batch size, no accelerator) and for DeepRecSched (batch size and
accelerator threshold hill-climbed), and the ratio reported. The queueing is simulated
(:mod:`rpaccel.host.runtime.sched`); the service times are measured:

* CPU: a request of ``B`` items through the float model (numpy float32, one core of this machine), the median of
  repeated runs, at batch sizes from 1 to 1,024 (linear between them);
* accelerator: one query of ``n`` items on the chip's RTL (Verilator; RPAccel mode, k = min(n, K_MAX)), from its
  arrival to its last response at the preset's clock, at a few sizes (linear between them, a stand-in for the
  fast model until it exists).
"""

import time

import numpy as np

from .report import ExperimentError, Report, Section, check_positive, check_seed

__all__ = ["run_sched"]


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

    return measure_cpu_service(lambda n: model.forward(dense[:n], ids[:n]), sizes, repeats=15)


def _cpu_service(model, dense, ids, sizes):
    """The float model's service time by batch size, measured in a spawned process with one BLAS thread (a
    simulated core is one of this machine's)."""
    import concurrent.futures
    import multiprocessing

    from ..host.runtime.cpu import one_thread_children

    with one_thread_children(), concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_forward_service, model, dense, ids, sizes).result()


def run_sched(config, *, model="rmc1", sizes="lognormal:5.1,0.2", queries=5_000, target_ms=20.0, cores=2,
              cpu_sizes=(1, 4, 16, 64, 256, 1024), accel_sizes=(16, 64, 256, 1024), max_rows=5_000, seed=1,
              progress=None):
    """DeepRecSched and the static scheduler on ``model`` (see the module notes).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        The chip (its RTL runs the accelerator's queries).
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
    max_rows, seed : int

    Returns
    -------
    Report
    """
    from ..host.models import ModelError, get_model
    from ..host.runtime.chip import replay_on_chip
    from ..host.runtime.pipeline import PipelineError, StageSpec
    from ..host.runtime.sched import SchedConfig, ServiceTable, deeprecsched, max_load
    from ..host.runtime.trace import ArrivalProcess, SizeDist
    from ..sim.chip import chip_device

    check_positive(queries=queries, cores=cores, max_rows=max_rows)
    check_seed(seed)
    if not target_ms > 0:
        raise ExperimentError("target_ms", f"must be positive, not {target_ms!r}")
    try:
        spec = get_model(model, max_rows=max_rows)
        dist = SizeDist.parse(sizes)
    except (ModelError, ValueError) as error:
        raise ExperimentError("model" if isinstance(error, ModelError) else "sizes", str(error)) from None
    for name, values in (("cpu_sizes", cpu_sizes), ("accel_sizes", accel_sizes)):
        if len(values) < 2 or list(values) != sorted(set(values)) or values[0] < 1:
            raise ExperimentError(name, f"must be two or more increasing positive sizes, not {list(values)!r}")
    started = time.monotonic()
    if progress:
        progress(f"training {spec.name} (float, then int8) on synthetic data")
    float_model, qmodel, generator = _train(spec, seed)
    records = generator.generate(max(max(cpu_sizes), max(accel_sizes)), start=20_000)

    from ..host.data import preprocess

    dense, ids = preprocess(records, spec)
    if progress:
        progress(f"measuring the CPU's service time (float32, one core) at batch sizes {list(cpu_sizes)}")
    cpu = _cpu_service(float_model, dense, ids, list(cpu_sizes))

    if progress:
        progress(f"measuring the chip's service time ({config.name} RTL) at sizes {list(accel_sizes)}")
    device = chip_device(config)
    accel_ns = []
    for n in accel_sizes:
        stages = (StageSpec(spec.name, n, min(n, config.k_max)),)
        try:
            run = replay_on_chip(device, config, {spec.name: qmodel}, stages, [records.take(slice(0, n))], [0])
        except PipelineError as error:
            raise ExperimentError("model", str(error)) from None
        if run.mismatches:
            raise ExperimentError(None, f"the chip's ranking of {n} items differs from the golden model's")
        accel_ns.append(float(run.latencies_ns[0]))
    accel = ServiceTable(tuple(accel_sizes), tuple(accel_ns))

    rng = np.random.default_rng(seed)
    query_sizes = dist.draw(rng, queries)
    gaps = ArrivalProcess.parse("poisson:1").gaps_ns(rng, queries).astype(np.float64)
    gaps[0] = 0
    if progress:
        progress("searching the highest load meeting the target for each setting (simulated)")
    statics = []
    for batch in (16, 32, 64):
        load, tail = max_load(gaps, query_sizes, SchedConfig(batch), target_ms=target_ms, workers=cores, cpu=cpu)
        statics.append((SchedConfig(batch), load, tail))
    best_static = max(statics, key=lambda each: each[1] or 0.0)
    best, best_load, tried = deeprecsched(gaps, query_sizes, target_ms=target_ms, workers=cores, cpu=cpu,
                                          accel=accel)
    ratio = best_load / best_static[1] if best_static[1] else None      # None: no static setting meets the target

    rows = [{"scheduler": "static", "setting": str(c), "max_qps": load, "p95_ms": tail} for c, load, tail in statics]
    rows += [{"scheduler": "DeepRecSched", "setting": str(c), "max_qps": load, "p95_ms": tail}
             for c, load, tail in tried]
    lines = [f"Model {spec.name} (tables capped at {max_rows:,} rows); query sizes {sizes} "
             f"(mean {query_sizes.mean():.0f}, max {query_sizes.max()}); {queries:,} simulated Poisson queries per "
             f"load; {cores} CPU cores (simulated as independent cores, each at the service time measured on one "
             f"core); p95 target {target_ms:g} ms; accelerator: the {config.name} chip at "
             f"{config.clock_mhz:g} MHz.", "",
             "Service times measured: CPU (float32, one core, median), accelerator (the chip's RTL, one query):", "",
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
              f"{static_load} ({best_static[0]}): {verdict} (DeepRecSys reports about 2x across its models on a "
              "40-core server with a GPU).", "",
              "Simulated queueing: requests first come, first served on the cores, whole queries on the accelerator; "
              "a query's latency runs from its arrival to its last request's end. The chip's service time between "
              "the measured sizes is linear (a stand-in for the fast model); the chip's clock is the preset's "
              "target, not a routed figure (issue 19)."]
    text = "\n".join(lines) + "\n"
    return Report(rows=rows, text=text,
                  data={"rows": rows, "ratio": ratio, "best": str(best), "best_static": str(best_static[0]),
                        "cpu_ns": dict(zip(cpu.sizes, cpu.ns)), "accel_ns": dict(zip(accel.sizes, accel.ns)),
                        "seconds": time.monotonic() - started},
                  sections=(Section("sched", "DeepRecSched against the static scheduler (CPU cores and the chip)",
                                    text),))
