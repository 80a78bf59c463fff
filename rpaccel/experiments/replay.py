"""``rpaccel replay``: a query trace served by a backend under load, with tail latency, throughput and quality.

Backends: ``cpu`` (:mod:`rpaccel.host.runtime.cpu`: the pipeline for real on this machine, in worker processes,
under MLPerf LoadGen's Server scenario, once per offered load), ``rtl`` (:mod:`rpaccel.host.runtime.chip`: the
chip's RTL on Verilator, each query sent at its arrival) and ``model`` (the same replay on the chip's
transaction-level timed model, :class:`rpaccel.sim.model.chip.ModelDevice`: the RTL's rankings, its cycles close
to the RTL's but not exact until issue 20's exact model).

Models: quantised (``.q.npz``, ``rpaccel quantize``) or float (``.npz``, ``rpaccel train``) files per stage model,
or, when none are given and the trace's data is the synthetic stream, models trained for seconds on samples of
that stream far beyond any trace's (from sample 2**32).
"""

import time
from pathlib import Path

import numpy as np

from .report import ExperimentError, Report

__all__ = ["chip_device_for", "plot_replay", "run_replay", "run_replay_bench", "run_replay_chip_bench",
           "search_load"]

BACKENDS = ("cpu", "rtl", "model")
#: The backends that run the chip (a :class:`~rpaccel.host.driver.device.Device` each).
CHIP_BACKENDS = ("rtl", "model")
#: How each chip backend runs the chip, for the reports.
CHIP_KIND = {"rtl": "RTL on Verilator", "model": "transaction-level timed model, not cycle-exact (issue 20)"}
# The chip backends' names in section titles.
_BACKEND_TITLES = {"rtl": "RTL", "model": "timed model"}
#: The synthetic stream's first sample the models are trained on when no model files are given.
TRAIN_FIRST = 1 << 32


def chip_device_for(backend, config):
    """The chip of ``config`` for a chip backend: ``"rtl"`` (:func:`rpaccel.sim.chip.chip_device`, Verilator) or
    ``"model"`` (the timed model, every run from reset)."""
    if backend == "rtl":
        from ..sim.chip import chip_device

        return chip_device(config)
    if backend == "model":
        from ..sim.model.chip import ModelDevice

        return ModelDevice(config)
    raise ExperimentError("backend", f"must be one of {', '.join(CHIP_BACKENDS)} to run the chip, not {backend!r}")


def _load_models(stages, files, numerics, header, train_samples, seed, progress):
    from ..host.data import SyntheticConfig
    from ..host.files import FileFormatError
    from ..host.models import get_model
    from ..host.quant import load_quantized
    from ..host.train import load_weights

    names = sorted({stage.model for stage in stages})
    if files:
        models = {}
        for name in names:
            try:
                models[name] = (load_quantized(files[name])[0] if numerics == "int8" else
                                load_weights(files[name])[0])
            except FileFormatError as error:
                raise ExperimentError("models", str(error)) from None
        return models, None
    data = header.data
    if data["kind"] != "synthetic":
        raise ExperimentError("models", "must name a model file per stage model when the trace's data is a file")
    if numerics != "int8":
        raise ExperimentError("numerics", "float32 needs the float models' files (--model NAME=FILE)")
    from .accel import train_models

    specs = {name: get_model(name, max_rows=data["max_rows"]) for name in names}
    if progress:
        progress(f"training {', '.join(names)} on {train_samples:,} synthetic samples")
    config = SyntheticConfig.criteo(max_rows=data["max_rows"], skew=data["skew"], ctr=data["ctr"], seed=data["seed"])
    # Far beyond any trace's samples, so that the queries are never the training data.
    models, _, seconds = train_models(specs, train_samples=train_samples, seed=seed, data=config, first=TRAIN_FIRST)
    return models, (f"models trained in {seconds:.0f} s on {train_samples:,} samples of the stream from sample "
                    f"{TRAIN_FIRST:,} (calibrated on the 2,000 after), none of them a query's")


def _check_models(stages, files):
    """Refuse unknown model names and files that do not match the pipeline's models, before anything runs."""
    from ..host.models import ModelError, get_model

    names = sorted({stage.model for stage in stages})
    for name in names:
        try:
            get_model(name)
        except ModelError as error:
            raise ExperimentError("pipeline", str(error)) from None
    if files:
        unknown = sorted(set(files) - set(names))
        if unknown:
            raise ExperimentError("models", f"names model(s) {', '.join(unknown)} the pipeline does not use")
        missing = [name for name in names if name not in files]
        if missing:
            raise ExperimentError("models", f"gives no file for the pipeline's model(s) {', '.join(missing)}")


def _synthetic_queries(stages, queries, max_rows, seed):
    """A benchmark's queries: ``queries`` of the first stage's items from the synthetic stream (Poisson arrivals at
    1 query/s, scaled by the caller). Returns the trace header, its records and ``{query: candidates}``."""
    from ..host.runtime.trace import TraceData, generate_trace

    data = {"kind": "synthetic", "seed": seed, "max_rows": max_rows, "skew": 1.05, "ctr": 0.25, "start": 22_000}
    header, records = generate_trace(queries, sizes=f"fixed:{stages[0].items}", arrivals="poisson:1", data=data,
                                     seed=seed)
    records = list(records)
    return header, records, _candidates(TraceData(header), records)


def _candidates(data, records, span=1 << 16):
    """``{q: candidates}`` of trace ``records`` from ``data`` (a :class:`~rpaccel.host.runtime.trace.TraceData`),
    read a run of consecutive samples (at most ``span``) at a time: the synthetic stream draws a block's samples
    from the block's start, so reading one query at a time would draw the block again for every query."""
    from dataclasses import replace

    out, run, size = {}, [], 0

    def read():
        whole = data.query(replace(run[0], size=size))
        offset = 0
        for record in run:
            out[record.q] = whole.take(slice(offset, offset + record.size))
            offset += record.size

    for record in records:
        if run and (record.first != run[-1].first + run[-1].size or size + record.size > span):
            read()
            run, size = [], 0
        run.append(record)
        size += record.size
    if run:
        read()
    return out


def _parse_stages(pipeline):
    """The stages of ``MODEL:ITEMS:K,...``, an :class:`ExperimentError` naming the pipeline if it is wrong."""
    from ..host.runtime.pipeline import PipelineError, parse_pipeline

    try:
        return parse_pipeline(pipeline)
    except PipelineError as error:
        raise ExperimentError("pipeline", str(error)) from None


def _num(value, spec=".1f"):
    """``value`` formatted, or "-" for None (a figure that could not be measured)."""
    return "-" if value is None else format(value, spec)


def _check_chip(config, stages):
    """The chip's limits a pipeline must keep, checked before models are trained (the compiler checks the rest)."""
    last = stages[-1]
    if last.k > config.k_max:
        raise ExperimentError("pipeline", f"the last stage ({last}) keeps {last.k}; the {config.name} chip's top-k "
                                          f"units keep at most {config.k_max} (k_max)")
    for number, stage in enumerate(stages[:-1]):
        if stage.items > config.filter_capacity:
            raise ExperimentError("pipeline", f"stage {number} ({stage}) filters {stage.items} items; the "
                                              f"{config.name} chip's filter units hold {config.filter_capacity} "
                                              "(filter_capacity)")


def _ndcg(rankings, queries, k):
    from ..host.quality import ndcg

    labels = [queries[number].labels[indices[:k]] for number, (indices, _) in sorted(rankings.items())
              if len(indices) >= k]
    return float(np.mean(ndcg(np.stack(labels), k))) if labels else None


def run_replay(*, trace, pipeline, backend="cpu", config=None, models=None, numerics="int8", loads=None,
               target_ms=None, percentile=0.95, search=False, workers=1, queries=32, warmup=0, min_queries=200,
               min_duration_s=5.0, k=None, train_samples=20_000, seed=1, outdir=None, mapping="default",
               window=None, overlap=4, progress=None):
    """Serve ``trace``'s queries through ``pipeline`` on ``backend`` at each offered load.

    Parameters
    ----------
    trace : path-like
        A query trace (``rpaccel trace gen``).
    pipeline : str
        ``MODEL:ITEMS:K,...``.
    backend : str
        ``"cpu"`` (the pipeline on this machine under LoadGen), ``"rtl"`` (the chip on Verilator, each query
        sent at its arrival) or ``"model"`` (the same on the chip's timed model).
    config : rpaccel.config.AccelConfig, optional
        The chip (``rtl``, ``model``; default the ``small`` preset).
    models : dict, optional
        Model name -> file; default: trained on the trace's synthetic stream.
    numerics : str
        ``"int8"`` (the integer reference, the chip's rankings) or ``"float32"`` (``cpu`` only).
    loads : sequence of float, optional
        Offered loads in queries per second. ``cpu``: LoadGen's exponential arrivals at each; ``rtl``, ``model``:
        the trace's arrivals scaled to each. Default: the trace's own rate.
    target_ms, percentile : float
        Latency target and its percentile for validity (``cpu``: LoadGen's; without a target LoadGen gets 1 s,
        not judged).
    search : bool
        Search the highest load whose percentile latency meets ``target_ms`` (:func:`search_load`, from the
        trace's own rate) instead of serving fixed loads.
    workers : int
        Worker processes: ``cpu``'s, or with a ``window`` on ``rtl`` and ``model``, processes replaying windows at
        once (each its own chip).
    queries : int
        Trace queries used: LoadGen's working set (``cpu``, the first ones of the trace) or the queries replayed
        (``rtl``, ``model``: as many as the chip's memory holds).
    warmup : int
        Queries left out of the figures at the start (``rtl``, ``model``).
    min_queries, min_duration_s
        LoadGen's minimum query count and duration per load (``cpu``).
    k : int, optional
        NDCG depth (default the last stage's K).
    train_samples, seed : int
    outdir : path-like, optional
        Folder for LoadGen's logs (default a temporary one).
    mapping : str
        ``rtl``, ``model``: ``"default"`` (stage ``s`` on lane ``s`` alone) or ``"auto"`` (the split, lanes and
        sub-batch size :func:`rpaccel.host.runtime.mapping.choose_replay_mapping` chooses for throughput on the
        timed model, once, over the first queries).
    window, overlap : int, optional
        ``rtl``, ``model``: replay the ``queries`` window by window (:func:`rpaccel.host.runtime.chip.replay_windows`:
        ``window`` queries each, ``overlap`` more on either side left out), in bounded memory: the trace is read
        as the windows need it and the latencies go to a histogram, so ``queries`` is not bounded by the chip's
        memory. Default: one replay of every query.
    progress : callable, optional

    Returns
    -------
    Report
    """
    import tempfile

    from ..host.data import DataError
    from ..host.runtime.cpu import NUMERICS
    from ..host.runtime.pipeline import PipelineError, stage_items
    from ..host.runtime.trace import TraceData, read_trace

    if backend not in BACKENDS:
        raise ExperimentError("backend", f"must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if numerics not in NUMERICS or (backend in CHIP_BACKENDS and numerics != "int8"):
        raise ExperimentError("numerics", f"must be one of {', '.join(NUMERICS) if backend == 'cpu' else 'int8'} "
                                          f"on the {backend} backend, not {numerics!r}")
    if loads is not None:
        loads = list(loads)
        if not loads or any(not (isinstance(q, (int, float)) and q > 0) for q in loads):
            raise ExperimentError("load", f"must be positive queries per second, not {loads!r}")
    for name, value in (("workers", workers), ("queries", queries), ("min_queries", min_queries)):
        if not isinstance(value, int) or value < 1:
            raise ExperimentError(name, f"must be a positive integer, not {value!r}")
    if not isinstance(warmup, int) or not 0 <= warmup < queries:
        raise ExperimentError("warmup", f"must be a number of queries in [0, {queries}), not {warmup!r}")
    if target_ms is not None and not (isinstance(target_ms, (int, float)) and target_ms > 0):
        raise ExperimentError("target_ms", f"must be a positive number of ms, not {target_ms!r}")
    if not 0 < percentile < 1:
        raise ExperimentError("percentile", f"must be a fraction in (0, 1), not {percentile!r}")
    if not (isinstance(min_duration_s, (int, float)) and min_duration_s >= 0):
        raise ExperimentError("min_duration_s", f"must be a number of seconds >= 0, not {min_duration_s!r}")
    if search and (target_ms is None or loads is not None):
        raise ExperimentError("search", "needs a latency target (target_ms) and no fixed loads")
    if workers > 1 and backend in CHIP_BACKENDS and window is None:
        raise ExperimentError("workers", f"on {backend} replay windows at once: they need a window")
    if window is not None:
        if backend not in CHIP_BACKENDS:
            raise ExperimentError("window", f"replays a chip backend ({' or '.join(CHIP_BACKENDS)}), not {backend}")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ExperimentError("window", f"must be a positive number of queries, not {window!r}")
        if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
            raise ExperimentError("overlap", f"must be a non-negative number of queries, not {overlap!r}")
    if mapping not in ("default", "auto") or (mapping == "auto" and backend not in CHIP_BACKENDS):
        raise ExperimentError("mapping", f"must be 'default' or 'auto' (on {' or '.join(CHIP_BACKENDS)}), not "
                                         f"{mapping!r} on {backend}")
    if backend in CHIP_BACKENDS:
        from ..config import preset

        config = config or preset("small")
    stages = _parse_stages(pipeline)
    _check_models(stages, models)
    k = k or stages[-1].k
    if not 1 <= k <= stages[-1].k:
        raise ExperimentError("k", f"must be in [1, {stages[-1].k}] (the last stage's K), not {k}")
    if backend in CHIP_BACKENDS:
        _check_chip(config, stages)
    try:
        header, records = read_trace(trace)
        times, chosen = [], []
        for record in records:      # the whole trace is read, so that a truncated or corrupted trace is refused
            if len(times) == queries:
                continue
            try:
                stage_items(stages, record.size)
            except PipelineError as error:
                raise ExperimentError("pipeline", f"trace query {record.q}: {error}") from None
            times.append(record.t_ns)
            if window is None:
                chosen.append(record)
        data = TraceData(header, base=Path(trace).parent)
        candidates = None if window is not None else _candidates(data, chosen)
    except DataError as error:
        raise ExperimentError("trace", str(error)) from None
    if warmup >= len(times):
        raise ExperimentError("warmup", f"must leave queries to measure: the trace holds {len(times)}")
    times = np.array(times, dtype=np.int64)
    trace_qps = (len(times) - 1) / ((times[-1] - times[0]) / 1e9) if len(times) > 1 and times[-1] > times[0] else None
    if trace_qps is None and (search or (loads is not None and backend in CHIP_BACKENDS)):
        raise ExperimentError("load", "cannot be scaled: the trace's first queries arrive all at once")
    if loads is None and trace_qps is None:
        raise ExperimentError("load", "must be given: the trace's first queries arrive all at once")
    loaded, note = _load_models(stages, models, numerics, header, train_samples, seed, progress)
    with tempfile.TemporaryDirectory() as scratch:
        if backend == "cpu":
            serve = _cpu_server(stages, loaded, numerics, candidates, target_ms, percentile, workers, min_queries,
                                min_duration_s, k, seed, outdir, scratch, progress)
        elif window is not None:
            serve = _chip_window_server(backend, config, stages, loaded, trace, data, times, trace_qps, target_ms,
                                        percentile, warmup, k, progress, mapping=mapping, window=window,
                                        overlap=overlap, workers=workers)
        else:
            serve = _chip_server(backend, config, stages, loaded, candidates, times, trace_qps, target_ms,
                                 percentile, warmup, k, progress, mapping=mapping)
        if search:
            rows, best = search_load(serve, trace_qps)
        else:
            rows, best = [serve(load) for load in loads or [trace_qps]], None
    text = _text(backend, rows, header, stages, workers, target_ms, percentile, note, k, len(times), config,
                 window=window, overlap=overlap)
    if search:
        text += (f"Highest load meeting p{percentile * 100:g} <= {target_ms:g} ms: {best['offered_qps']:.1f} "
                 f"queries/s offered, {_num(best['completed_qps'])} completed (searched {len(rows)} loads; "
                 f"{'a valid run' if best['valid'] else 'not a valid run: ' + '; '.join(best['reasons'])}).\n"
                 if best else f"No load met p{percentile * 100:g} <= {target_ms:g} ms (searched {len(rows)} loads)."
                 "\n")
    return Report(rows=rows, text=text, data={"trace": str(trace), "pipeline": pipeline, "backend": backend,
                                              "rows": rows, "best": best, "models": note or "given files"},
                  failures=tuple(f"load {row['offered_qps']:g}: {message}" for row in rows
                                 for message in row.get("mismatches", [])))


def _cpu_server(stages, models, numerics, candidates, target_ms, percentile, workers, min_queries, min_duration_s,
                k, seed, outdir, scratch, progress):
    """``serve(load) -> row``: the pipeline on this machine under LoadGen at ``load`` queries per second."""
    from ..host.runtime.cpu import CpuRanker, run_loadgen

    ranker = CpuRanker(stages, models, numerics)
    served = []

    def serve(load):
        if progress:
            progress(f"serving at {load:g} queries/s for at least {min_duration_s:g} s (LoadGen Server)")
        started = time.monotonic()
        run = run_loadgen(ranker, candidates, qps=load, target_ms=target_ms or 1000.0, percentile=percentile,
                          min_queries=min_queries, min_duration_s=min_duration_s, workers=workers,
                          outdir=Path(outdir or scratch) / f"load-{len(served) + 1}-{load:g}", seed=seed)
        served.append(load)
        report = run.report
        return {"backend": "cpu", "numerics": numerics, "offered_qps": load, "completed_qps": report.completed_qps,
                "queries": report.queries, "p50_ms": report.p50, "p95_ms": report.p95, "p99_ms": report.p99,
                "mean_ms": report.mean, "meets_target": report.meets_target if target_ms else None,
                "valid": report.valid if target_ms else None,
                "loadgen_result": run.loadgen.get("result") if target_ms else None,
                "loadgen_completed_qps": run.loadgen.get("completed_qps"),
                "loadgen_p95_ms": run.loadgen.get("95.00_percentile_ms"),
                f"ndcg@{k}": _ndcg(run.rankings, candidates, k), "wall_s": time.monotonic() - started,
                "reasons": list(report.reasons) if target_ms else [], "cdf": _cdf(run.recorder)}

    return serve


def _chip_server(backend, config, stages, models, candidates, times, trace_qps, target_ms, percentile, warmup, k,
                 progress, runs=None, mapping="default"):
    """``serve(load) -> row``: the trace's queries on the chip (``backend`` ``rtl`` or ``model``), its gaps scaled
    to ``load``; each run's :class:`~rpaccel.host.runtime.chip.ChipReplay` is appended to ``runs`` if given;
    ``mapping`` ``"auto"``: the stage mapping's split, lanes and sub-batch size, chosen once."""
    from ..host.runtime.chip import replay_on_chip
    from ..host.runtime.pipeline import PipelineError
    from ..host.runtime.stats import LatencyRecorder
    from .accel import cache_figures, unit_utilisation

    numbers = sorted(candidates)
    queries = [candidates[number] for number in numbers]
    device = chip_device_for(backend, config)
    schedule = _mapping_schedule(mapping, config, models, stages, queries, progress)

    def serve(load):
        scale = 1.0 if trace_qps is None else trace_qps / load
        arrivals = np.rint((times - times[0]) * scale).astype(np.int64)
        if progress:
            progress(f"replaying {len(queries):,} {'query' if len(queries) == 1 else 'queries'} on the "
                     f"{config.name} chip ({CHIP_KIND[backend]}) at {load:g} queries/s")
        started, cpu = time.perf_counter(), time.process_time()
        try:
            run = replay_on_chip(device, config, models, stages, queries, arrivals, **schedule)
        except PipelineError as error:
            raise ExperimentError("pipeline", str(error)) from None
        host_s, host_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        if runs is not None:
            runs.append(run)
        recorder = LatencyRecorder(warmup=warmup, target_ms=target_ms, percentile=percentile)
        arrival_ns = run.arrivals * 1000 / config.clock_mhz
        for arrival, latency in zip(arrival_ns, run.latencies_ns):
            recorder.record(arrival, arrival + latency)
        report = recorder.report()
        rankings = {number: (np.array([index for _, index in ranking]), None)
                    for number, ranking in zip(numbers, run.rankings)}
        return {"backend": backend, "numerics": "int8", "offered_qps": load, "completed_qps": report.completed_qps,
                "queries": report.queries, "warmup": report.warmup, "p50_ms": report.p50, "p95_ms": report.p95,
                "p99_ms": report.p99, "mean_ms": report.mean, "meets_target": report.meets_target,
                "valid": report.valid, f"ndcg@{k}": _ndcg(rankings, candidates, k),
                "min_latency_cycles": int(np.min(run.finishes - run.arrivals)), "sim_cycles": run.total_cycles,
                "wall_s": run.wall_seconds, "host_s": host_s, "host_cpu_s": host_cpu_s, "checked": not run.mismatches,
                "split": run.split, "lanes": [list(lanes) for lanes in run.lanes],
                "latency_cycles": (run.finishes - run.arrivals).tolist(),
                "utilisation": unit_utilisation(run.counters, max(run.end_cycle, 1), run.split, run.geometry),
                "cache": cache_figures(run.counters),
                "mismatches": list(run.mismatches.values()), "reasons": list(report.reasons),
                "cdf": _cdf(recorder)}

    return serve


def _mapping_schedule(mapping, config, models, stages, queries, progress):
    """:func:`replay_on_chip`'s schedule fields: none for ``"default"``; for ``"auto"``, the split, lanes and
    sub-batch size the stage mapping chooses over ``queries`` (the first few)."""
    if mapping != "auto":
        return {}
    from ..host.driver.chip import CompileError
    from ..host.runtime.mapping import choose_replay_mapping, describe_lanes

    if progress:
        progress("choosing the stage mapping on the timed model ...")
    try:
        chosen = choose_replay_mapping(config, models, stages, queries).schedule
    except CompileError as error:
        raise ExperimentError("pipeline", f"the chip ({config.name}) cannot run it: {error}") from None
    if progress:
        progress(f"split {chosen.split}, lanes {describe_lanes(chosen.lanes)}, sub-batch {chosen.sub_batch}")
    return {"split": chosen.split, "sub_batch": chosen.sub_batch, "lanes": chosen.lanes}


def _trace_stream(trace, data, count, arrivals_ns, window, labels):
    """The first ``count`` queries of ``trace`` as ``(candidates, arrival)`` at ``arrivals_ns``, read a window at a
    time; each query's labels are kept in ``labels`` (by number) until the caller takes them."""
    from ..host.runtime.trace import read_trace

    _, records = read_trace(trace)
    chunk = []
    for number, record in zip(range(count), records):
        chunk.append(record)
        if len(chunk) == window or number == count - 1:
            candidates = _candidates(data, chunk)
            for row in chunk:
                labels[row.q] = candidates[row.q].labels
                yield candidates[row.q], int(arrivals_ns[row.q])
            chunk = []


def _cpu_seconds():
    """CPU seconds of this process and of its children that have ended (a windowed replay's workers)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _chip_window_server(backend, config, stages, models, trace, data, times, trace_qps, target_ms, percentile,
                        warmup, k, progress, *, mapping, window, overlap, workers=1):
    """``serve(load) -> row`` as :func:`_chip_server`'s, the queries replayed window by window
    (:func:`rpaccel.host.runtime.chip.replay_windows`) in bounded memory: the trace read as the windows need it,
    the latencies in a histogram, NDCG, counters and cycles summed over the windows (their overlaps included)."""
    import functools
    from collections import Counter

    from ..host.quality import ndcg
    from ..host.runtime.chip import replay_windows
    from ..host.runtime.pipeline import PipelineError
    from ..host.runtime.stats import LatencyRecorder
    from ..host.runtime.trace import read_trace
    from .accel import cache_figures, unit_utilisation

    # Several workers each make their own chip; one process runs this one.
    device = chip_device_for(backend, config) if workers == 1 else functools.partial(chip_device_for, backend, config)
    first = _candidates(data, [record for _, record in zip(range(4), read_trace(trace)[1])])
    schedule = _mapping_schedule(mapping, config, models, stages, [first[q] for q in sorted(first)], progress)
    count = len(times)

    def serve(load):
        scale = 1.0 if trace_qps is None else trace_qps / load
        arrivals = np.rint((times - times[0]) * scale).astype(np.int64)
        recorder = LatencyRecorder(warmup=warmup, target_ms=target_ms, percentile=percentile)
        labels, counters = {}, Counter()
        gains, checked, mismatches, run = [], True, [], None
        sim_cycles = busy_window = windows = 0
        started, cpu, wall = time.perf_counter(), _cpu_seconds(), 0.0
        stream = _trace_stream(trace, data, count, arrivals, window, labels)
        try:
            for part in replay_windows(device, config, models, stages, stream, window=window, overlap=overlap,
                                       workers=workers, **schedule):
                for arrival, finish in zip(part.arrivals_ns.tolist(), part.finishes_ns.tolist()):
                    recorder.record(arrival, finish)
                mine = [labels.pop(part.first + i) for i in range(len(part.rankings))]
                deep = [truth[[index for _, index in ranking[:k]]] for truth, ranking in zip(mine, part.rankings)
                        if len(ranking) >= k]
                if deep:
                    gains.extend(ndcg(np.stack(deep), k).tolist())
                run = part.replay
                counters.update(run.counters)
                sim_cycles += run.total_cycles
                busy_window += max(run.end_cycle, 1)
                wall += run.wall_seconds
                windows += 1
                checked &= not part.mismatches
                mismatches += list(part.mismatches.values())
                if progress:
                    progress(f"window {windows}: queries {part.first:,} to {part.first + len(part.rankings) - 1:,} "
                             f"({time.perf_counter() - started:.1f} s)")
        except PipelineError as error:
            raise ExperimentError("pipeline", str(error)) from None
        host_s, host_cpu_s = time.perf_counter() - started, _cpu_seconds() - cpu
        report = recorder.report()
        return {"backend": backend, "numerics": "int8", "offered_qps": load, "completed_qps": report.completed_qps,
                "queries": report.queries, "warmup": report.warmup, "p50_ms": report.p50, "p95_ms": report.p95,
                "p99_ms": report.p99, "mean_ms": report.mean, "meets_target": report.meets_target,
                "valid": report.valid, f"ndcg@{k}": float(np.mean(gains)) if gains else None,
                "sim_cycles": sim_cycles, "wall_s": wall, "host_s": host_s, "host_cpu_s": host_cpu_s,
                "checked": checked, "split": run.split, "lanes": [list(lane) for lane in run.lanes],
                "windows": windows, "window": window, "overlap": overlap,
                "utilisation": unit_utilisation(counters, busy_window, run.split, run.geometry),
                "cache": cache_figures(counters), "mismatches": mismatches, "reasons": list(report.reasons),
                "cdf": _cdf(recorder)}

    return serve


def _cdf(recorder, points=50):
    percentiles, latencies = recorder.cdf(points)
    return [[float(p), float(ms)] for p, ms in zip(percentiles, latencies)]


def search_load(serve, start, *, doublings=8, bisections=4):
    """The highest offered load whose rows meet the latency target: ``serve(load)`` (a row with ``meets_target``)
    from ``start``, doubling while the target is met (halving while it is not), then bisecting between the last
    load that met it and the first that did not. Returns ``(rows, best)``: every row served, in order, and the
    best row (None if no load met the target)."""
    rows = []

    def meets(load):
        rows.append(serve(load))
        return bool(rows[-1]["meets_target"])

    low = high = None
    load = start
    for _ in range(doublings + 1):
        if meets(load):
            low, load = load, load * 2
            if high is not None:
                break
        else:
            high, load = load, load / 2
            if low is not None:
                break
        if low is not None and high is not None:
            break
    if low is not None and high is not None:
        for _ in range(bisections):
            middle = (low + high) / 2
            if meets(middle):
                low = middle
            else:
                high = middle
    passing = [row for row in rows if row["meets_target"]]
    best = max(passing, key=lambda row: row["offered_qps"]) if passing else None
    return rows, best


def _text(backend, rows, header, stages, workers, target_ms, percentile, note, k, count, config, window=None,
          overlap=0):
    pipeline = " -> ".join(str(stage) for stage in stages)
    if backend == "cpu":
        lines = [f"Replay on the cpu backend: {pipeline}; {workers} worker process(es); LoadGen Server scenario "
                 f"(exponential arrivals), over the trace's first {count} queries (sizes {header.sizes})."]
    else:
        lines = [f"Replay on the {backend} backend: {pipeline}; the {config.name} chip ({CHIP_KIND[backend]}), "
                 f"RPAccel mode, the trace's first {count} queries each sent at its arrival (the trace's gaps scaled "
                 f"to each load); latency at {config.clock_mhz:g} MHz."]
        if window is not None:
            lines.append(f"Replayed in windows of {window} queries ({workers} worker process(es)), each a replay "
                         "of its own from reset with "
                         f"{overlap} more on either side left out (the queue and cache a window finds, the queries "
                         "competing with its last ones): latencies near a window's edges may differ from one "
                         "replay's where the chip's backlog is longer than the overlap.")
    if note:
        lines.append(note + ".")
    target = f" (target p{percentile * 100:g} {target_ms:g} ms)" if target_ms else ""
    head = ["offered q/s", "completed q/s", "queries", "p50 ms", "p95 ms", "p99 ms", f"NDCG@{k}", "valid" + target]
    head.append("checked" if backend in CHIP_BACKENDS else "LoadGen")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]
    for row in rows:
        verdict = "-" if row["valid"] is None else ("yes" if row["valid"] else "no: " + "; ".join(row["reasons"]))
        ndcg = row[f"ndcg@{k}"]
        cells = [f"{row['offered_qps']:.1f}", _num(row["completed_qps"]), str(row["queries"]),
                 f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}", f"{row['p99_ms']:.3f}",
                 "-" if ndcg is None else f"{ndcg:.4f}", verdict]
        cells.append(("yes" if row["checked"] else "no") if backend in CHIP_BACKENDS else
                     row["loadgen_result"] or "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if backend == "cpu":
        lines.append("Latency: from LoadGen's issue of a query to its ranking (wall clock, HdrHistogram; no warm-up "
                     "left out, as LoadGen leaves none); LoadGen's own figures, from its scheduled issue, are longer "
                     "by the time it takes to issue. valid: our recorder's verdict (early stopping, minimum queries "
                     "and duration); LoadGen: LoadGen's own.")
    else:
        lines.append("Latency: from a query's arrival cycle to its last response (the chip's cycles at the "
                     "preset's clock); checked: every response equals the golden model's.")
        if backend == "model":
            lines.append("The timed model gives the RTL's responses; its cycles are close to the RTL's, not equal "
                         "(`rpaccel bench replay --parts rtl,model` compares them query by query), until issue 20's "
                         "exact model.")
        for row in rows:
            busy = ", ".join(f"{unit} {share:.0%}" for unit, share in row["utilisation"].items())
            cache = row["cache"]
            lines.append(f"At {row['offered_qps']:.1f} q/s, busy share of each unit from the first arrival until "
                         f"the chip is idle: {busy}; embedding lookups {cache['lookups']:,}, static hits "
                         f"{cache['static_hit_rate']:.0%}, line hit rate {cache['line_hit_rate']:.0%}.")
    return "\n".join(lines) + "\n"


def plot_replay(rows, path, *, target_ms=None, percentile=0.95, title=None):
    """Latency against offered load (p50, p95, p99 per backend) and the latency CDF of every load, as one figure
    at ``path`` (the type from its suffix; the file appears only when complete)."""
    from ..host.quality import check_plot_path, save_figure

    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    for backend in dict.fromkeys(row["backend"] for row in rows):
        sub = sorted((row for row in rows if row["backend"] == backend), key=lambda row: row["offered_qps"])
        loads = [row["offered_qps"] for row in sub]
        for name, style in (("p50_ms", ":"), ("p95_ms", "-"), ("p99_ms", "--")):
            left.plot(loads, [row[name] for row in sub], style, marker="o", markersize=4,
                      label=f"{backend} {name[:3]}")
    if target_ms:
        left.axhline(target_ms, color="grey", linewidth=0.8)
        left.annotate(f"target p{percentile * 100:g} {target_ms:g} ms", (0.01, target_ms), fontsize=7,
                      xycoords=("axes fraction", "data"), va="bottom")
    left.set_xscale("log")
    left.set_xlabel("offered load (queries/s)")
    left.set_ylabel("latency (ms)")
    left.set_yscale("log")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    for row in sorted(rows, key=lambda row: row["offered_qps"]):
        percentiles, latencies = zip(*row["cdf"])
        right.plot(latencies, [p / 100 for p in percentiles], label=f"{row['backend']} {row['offered_qps']:.3g} q/s")
    right.set_xscale("log")
    right.set_xlabel("latency (ms)")
    right.set_ylabel("share of queries")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def run_replay_bench(*, pipeline="rm-small:1024:128,rm-large:128:16", workers=1, utilisations=(0.3, 0.6, 0.8),
                     queries=16, min_queries=300, min_duration_s=10.0, simulated=20_000, max_rows=20_000, seed=1,
                     progress=None):
    """The CPU baseline under LoadGen at several loads, beside the queueing simulation (:mod:`~rpaccel.host.
    runtime.sched`) with the service time measured on this machine: the simulation's p95 against LoadGen's.

    Parameters
    ----------
    pipeline : str
    workers : int
        Worker processes (LoadGen) and simulated cores.
    utilisations : sequence of float
        Offered loads as shares of the measured capacity (``workers`` over the median service time).
    queries : int
        Queries in LoadGen's working set (candidates from the synthetic stream).
    min_queries, min_duration_s
        LoadGen's minimum queries and seconds per load.
    simulated : int
        Queries of the simulation per load (Poisson arrivals at the same load).
    max_rows, seed : int

    Returns
    -------
    Report
    """
    import tempfile

    from ..host.runtime.cpu import CpuRanker, run_loadgen, service_times
    from ..host.runtime.sched import SchedConfig, simulate
    from ..host.runtime.stats import loadgen_percentile
    from .report import Section, check_fraction, check_positive

    stages = _parse_stages(pipeline)
    _check_models(stages, None)
    check_positive(workers=workers, queries=queries, min_queries=min_queries, simulated=simulated)
    if not utilisations:
        raise ExperimentError("utilisations", "must name at least one share of capacity")
    for share in utilisations:
        check_fraction("utilisations", share)
        if share <= 0:
            raise ExperimentError("utilisations", f"must be in (0, 1), not {share!r}")
    size = stages[0].items
    header, _, candidates = _synthetic_queries(stages, queries, max_rows, seed)
    models, note = _load_models(stages, None, "int8", header, 20_000, seed, progress)
    ranker = CpuRanker(stages, models)
    if progress:
        progress("measuring the service time of a query in a worker process (median over the working set, three "
                 "rounds)")
    times = service_times(ranker, candidates, rounds=3)
    service_ns = float(np.median(times))
    capacity = workers * 1e9 / service_ns
    rows = []
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as scratch:
        for share in utilisations:
            load = share * capacity
            if progress:
                progress(f"LoadGen at {load:.1f} queries/s ({share:.0%} of capacity) for at least "
                         f"{min_duration_s:g} s")
            run = run_loadgen(ranker, candidates, qps=load, target_ms=1000.0, percentile=0.95,
                              min_queries=min_queries, min_duration_s=min_duration_s, workers=workers,
                              outdir=Path(scratch) / f"load-{share}", seed=seed)
            arrivals = np.cumsum(rng.exponential(1e9 / load, simulated))
            finishes = simulate(arrivals, np.full(simulated, size), SchedConfig(size), workers=workers,
                                cpu=lambda _: service_ns)
            latencies = (finishes - arrivals)[simulated // 10:] / 1e6      # the first tenth as warm-up
            sim = {name: float(loadgen_percentile(latencies, q)) for name, q in
                   (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))}
            loadgen_p95 = run.loadgen.get("95.00_percentile_ms")
            rows.append({"utilisation": share, "offered_qps": load, "completed_qps": run.report.completed_qps,
                         "queries": run.report.queries, "loadgen_p50_ms": run.loadgen.get("50.00_percentile_ms"),
                         "loadgen_p95_ms": loadgen_p95, "loadgen_p99_ms": run.loadgen.get("99.00_percentile_ms"),
                         "measured_p95_ms": run.report.p95, "simulated_p50_ms": sim["p50"],
                         "simulated_p95_ms": sim["p95"], "simulated_p99_ms": sim["p99"],
                         "p95_error": (sim["p95"] - loadgen_p95) / loadgen_p95 if loadgen_p95 else None,
                         f"ndcg@{stages[-1].k}": _ndcg(run.rankings, candidates, stages[-1].k),
                         "loadgen_result": run.loadgen.get("result")})
    k = stages[-1].k
    lines = [f"Pipeline {' -> '.join(str(stage) for stage in stages)}, int8 reference, {workers} worker "
             f"process(es), each with one thread; queries of {size:,} synthetic candidates (LoadGen's working set: "
             f"{queries}). Service time of a query in a worker process, measured here (median of {len(times)}): "
             f"{service_ns / 1e6:.2f} ms, so a capacity of {capacity:.1f} queries/s. {note}.", "",
             "| load (share of capacity) | offered q/s | completed q/s | queries | LoadGen p50 ms | LoadGen p95 ms "
             "| LoadGen p99 ms | simulated p95 ms | p95 error | NDCG@" + str(k) + " |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        error = "-" if row["p95_error"] is None else f"{row['p95_error']:+.1%}"
        ndcg = row[f"ndcg@{k}"]
        lines.append(f"| {row['utilisation']:.0%} | {row['offered_qps']:.1f} | {_num(row['completed_qps'])} | "
                     f"{row['queries']} | {row['loadgen_p50_ms']:.2f} | {row['loadgen_p95_ms']:.2f} | "
                     f"{row['loadgen_p99_ms']:.2f} | {row['simulated_p95_ms']:.2f} | {error} | "
                     f"{'-' if ndcg is None else f'{ndcg:.4f}'} |")
    lines += ["", "LoadGen: MLPerf LoadGen's Server scenario (exponential arrivals at the offered load, its seeds), "
              "each query one sample ranked by a worker process, latency from LoadGen's scheduled issue to the "
              "ranking. Simulated: the same load as a Poisson process through "
              "`rpaccel.host.runtime.sched.simulate` (the workers as first-come-first-served cores, every query the "
              f"measured median service time; {simulated:,} queries, the first tenth left out). p95 error: "
              "simulated over LoadGen's, minus one. The machine is shared (2 cores), so LoadGen's figures include "
              "other processes' interference and the service time's spread, which the simulation's constant "
              "service time does not."]
    text = "\n".join(lines) + "\n"
    return Report(rows=rows, text=text, data={"pipeline": pipeline, "service_ms": service_ns / 1e6,
                                              "capacity_qps": capacity, "rows": rows},
                  sections=(Section("replay-cpu", "The CPU baseline under LoadGen, beside the queueing simulation",
                                    text),))


def run_replay_chip_bench(config, *, backends=("rtl",), pipeline="rm-small:1024:128,rm-large:128:16", queries=8,
                          utilisations=(0.5, 0.9, 1.5), max_rows=20_000, seed=1, progress=None):
    """A short replay on the chip at loads relative to its capacity, on each chip backend (``rtl``: the RTL on
    Verilator; ``model``: the timed model): each query sent at its arrival (Poisson gaps), the latencies in the
    chip's cycles (deterministic, whatever the machine's load).

    The capacity is one over the service time of the first query replayed alone on the first backend; every
    backend runs the same queries at the same loads, so with both the model's cycles are compared with the RTL's
    query by query (:func:`~rpaccel.host.runtime.chip.compare_replays`). Returns a :class:`Report` with a section
    ``replay-BACKEND`` per backend and, with both, ``replay-model-vs-rtl``.
    """
    from ..host.runtime.chip import compare_replays
    from .report import Section, check_positive

    backends = list(dict.fromkeys(backends))
    if not backends or any(backend not in CHIP_BACKENDS for backend in backends):
        raise ExperimentError("backends", f"must name {' or '.join(CHIP_BACKENDS)}, not {backends!r}")
    stages = _parse_stages(pipeline)
    _check_models(stages, None)
    check_positive(queries=queries, max_rows=max_rows)
    if not utilisations or any(not (isinstance(u, (int, float)) and u > 0) for u in utilisations):
        raise ExperimentError("utilisations", f"must be positive shares of capacity, not {list(utilisations)!r}")
    _check_chip(config, stages)
    header, records, candidates = _synthetic_queries(stages, queries, max_rows, seed)
    times = np.array([record.t_ns for record in records], dtype=np.int64)
    trace_qps = (len(times) - 1) / ((times[-1] - times[0]) / 1e9) if queries > 1 else None
    models, note = _load_models(stages, None, "int8", header, 20_000, seed, progress)
    k = stages[-1].k
    alone = _chip_server(backends[0], config, stages, models, {0: candidates[0]}, times[:1], None, None, 0.95, 0, k,
                         progress)
    service = alone(1.0)
    capacity = 1e3 / service["p50_ms"]
    loads = [share * capacity for share in utilisations] if trace_qps else [capacity]
    shares = utilisations if trace_qps else [1.0]
    all_rows, sections, runs, failures = [], [], {}, []
    for backend in backends:
        runs[backend] = []
        serve = _chip_server(backend, config, stages, models, candidates, times, trace_qps, None, 0.95, 0, k,
                             progress, runs[backend])
        rows = [{**serve(load), "load_share": share} for share, load in zip(shares, loads)]
        all_rows += rows
        failures += [f"{backend} at {row['offered_qps']:.1f} q/s: {message}" for row in rows
                     for message in row["mismatches"]]
        text = _chip_bench_text(backend, config, stages, rows, queries, seed, service, capacity, note, k)
        sections.append(Section(f"replay-{backend}", f"A short replay on the chip's {_BACKEND_TITLES[backend]} "
                                                     f"({config.name})", text))
    data = {"pipeline": pipeline, "capacity_qps": capacity, "rows": all_rows}
    if len(backends) == 2:
        lines = [f"The same {queries} queries at the same arrivals on the RTL and on the timed model, per load: each "
                 "query's latency in cycles on both, and whether the rankings are equal. The model is not exact "
                 "(issue 20): its cycles are reported, not held to the RTL's; its rankings must equal the RTL's."]
        comparisons = []
        for share, rtl, model in zip(shares, runs["rtl"], runs["model"]):
            comparison = compare_replays(rtl, model)
            comparisons.append({"load_share": share, "difference": comparison.difference.tolist(),
                                "same_ranking": comparison.same_ranking.tolist()})
            if not comparison.same_ranking.all():
                failures.append(f"at {share:.0%} of capacity the model's rankings differ from the RTL's in "
                                f"{int((~comparison.same_ranking).sum())} queries")
            lines += ["", f"At {share:.0%} of capacity:", "", comparison.table().rstrip()]
        data["model_vs_rtl"] = comparisons
        sections.append(Section("replay-model-vs-rtl", "The timed model against the RTL, query by query",
                                "\n".join(lines) + "\n"))
    return Report(rows=all_rows, text="\n".join(section.body for section in sections), data=data,
                  sections=tuple(sections), failures=tuple(failures))


def _chip_bench_text(backend, config, stages, rows, queries, seed, service, capacity, note, k):
    """The section of one chip backend in :func:`run_replay_chip_bench`."""
    host = sum(row["host_s"] for row in rows) / (queries * len(rows))
    cpu = sum(row["host_cpu_s"] for row in rows) / (queries * len(rows))
    lines = [f"Pipeline {' -> '.join(str(stage) for stage in stages)} on the {config.name} chip "
             f"({CHIP_KIND[backend]}, RPAccel mode, split {rows[0]['split']}); {queries} queries of "
             f"{stages[0].items:,} synthetic candidates, Poisson arrivals (seed {seed}) scaled to each load; "
             f"latency from a query's arrival cycle to its last response at {config.clock_mhz:g} MHz (the preset's "
             f"target clock, not a routed figure). One query alone takes {service['p50_ms']:.3f} ms on the "
             f"{service['backend']} backend: a capacity of {capacity:.1f} queries/s. {note}. Host time: "
             f"{host:.2f} s a query (compiling, the run, checking; {cpu:.2f} s of this process's CPU time"
             f"{', Verilator not counted' if backend == 'rtl' else ''}).", "",
             f"| load (share of capacity) | offered q/s | completed q/s | p50 ms | p95 ms | p99 ms | NDCG@{k} | "
             "checked |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        ndcg = row[f"ndcg@{k}"]
        lines.append(f"| {row['load_share']:.0%} | {row['offered_qps']:.1f} | {_num(row['completed_qps'])} | "
                     f"{row['p50_ms']:.3f} | {row['p95_ms']:.3f} | {row['p99_ms']:.3f} | "
                     f"{'-' if ndcg is None else f'{ndcg:.4f}'} | {'yes' if row['checked'] else 'no'} |")
    lines += ["", "Busy share of each unit from the first arrival until the chip is idle:", "",
              "| load | " + " | ".join(rows[0]["utilisation"]) + " |",
              "| --- |" + " ---: |" * len(rows[0]["utilisation"])]
    for row in rows:
        lines.append(f"| {row['load_share']:.0%} | " + " | ".join(f"{share:.0%}" for share in
                                                                  row["utilisation"].values()) + " |")
    lines += ["", f"{queries} queries are too few for LoadGen's early stopping at p95 (90 with none over a "
              "target): these are the chip's latencies under queueing, not a validated tail."]
    return "\n".join(lines) + "\n"


#: Issue 21's scale: two-stage queries of 4,096 candidates replayed on the model backend, and the time they must take.
SCALE_QUERIES, SCALE_SECONDS = 100_000, 300.0


def run_replay_scale_bench(config, *, pipeline="rm-small:4096:512,rm-large:512:64", queries=24, window=8,
                           overlap=2, utilisation=0.7, compare=8, max_rows=20_000, seed=1, progress=None):
    """Issue 21's scale on the timed model: a trace of ``queries`` queries replayed as ``rpaccel replay --backend
    model --window`` does (the trace streamed, window by window, the latencies in a histogram), its host time per
    query and the time 100,000 would take at that rate, the process's peak memory; and the windows' effect on the
    latencies: the first ``compare`` queries replayed at once and in windows of ``compare // 2``, query by query.

    The load is ``utilisation`` of the capacity (one over a query's service time alone). Returns a :class:`Report`
    with the section ``replay-scale``.
    """
    import resource
    import tempfile

    from ..host.runtime.chip import replay_on_chip, replay_windows
    from ..host.runtime.trace import generate_trace, write_trace
    from .report import Section, check_positive

    stages = _parse_stages(pipeline)
    _check_models(stages, None)
    check_positive(queries=queries, window=window, compare=compare, max_rows=max_rows)
    if compare < 2:
        raise ExperimentError("compare", f"must be at least 2 queries (two windows), not {compare}")
    if not isinstance(overlap, int) or overlap < 0:
        raise ExperimentError("overlap", f"must be a non-negative number of queries, not {overlap!r}")
    if not (isinstance(utilisation, (int, float)) and utilisation > 0):
        raise ExperimentError("utilisation", f"must be a positive share of capacity, not {utilisation!r}")
    _check_chip(config, stages)
    header, records, candidates = _synthetic_queries(stages, compare, max_rows, seed)
    models, note = _load_models(stages, None, "int8", header, 20_000, seed, progress)
    device = chip_device_for("model", config)
    first = [candidates[number] for number in sorted(candidates)]
    service_ns = float(replay_on_chip(device, config, models, stages, first[:1], [0]).latencies_ns[0])
    load = utilisation * 1e9 / service_ns
    # The windows' effect: the same queries at the same arrivals, at once and in two windows or more.
    gap_ns = np.rint(np.array([record.t_ns for record in records], dtype=np.int64) * (1.0 / load)).astype(np.int64)
    if progress:
        progress(f"the first {compare} queries at {load:.1f} q/s, at once and in windows of {compare // 2} ...")
    whole = replay_on_chip(device, config, models, stages, first, gap_ns)
    parts = list(replay_windows(device, config, models, stages, zip(first, gap_ns.tolist()), window=compare // 2,
                                overlap=overlap))
    windowed = np.concatenate([part.finishes_ns - part.arrivals_ns for part in parts])
    exact = np.rint(whole.latencies_ns).astype(np.int64)
    difference = windowed / exact - 1
    same = all(a == b for a, b in zip([r for part in parts for r in part.rankings], whole.rankings))
    failures = [] if same and not whole.mismatches else ["the windows' rankings differ from one replay's"]
    # The scale run, through the replay command's path: a trace file streamed window by window.
    with tempfile.TemporaryDirectory() as scratch:
        data = {"kind": "synthetic", "seed": seed, "max_rows": max_rows, "skew": 1.05, "ctr": 0.25, "start": 22_000}
        trace_header, trace_records = generate_trace(queries, sizes=f"fixed:{stages[0].items}",
                                                     arrivals=f"poisson:{load:.6g}", data=data, seed=seed)
        path = Path(scratch) / "scale.jsonl"
        write_trace(path, trace_header, trace_records)
        report = run_replay(trace=path, pipeline=pipeline, backend="model", config=config, queries=queries,
                            window=window, overlap=overlap, seed=seed, progress=progress)
    row = report.rows[0]
    failures += [f"scale run: {message}" for message in row["mismatches"]]
    per_query = row["host_cpu_s"] / queries        # the process's CPU time: the machine's other jobs not counted
    projected = per_query * SCALE_QUERIES
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"queries": queries, "window": window, "overlap": overlap, "load_qps": load,
               "host_s": row["host_s"], "host_cpu_s": row["host_cpu_s"], "host_s_per_query": per_query,
               "projected_s": projected, "target_s": SCALE_SECONDS, "peak_rss_mb": peak_mb,
               "sim_cycles": row["sim_cycles"], "p50_ms": row["p50_ms"], "p95_ms": row["p95_ms"],
               "compare": compare, "window_difference": difference.tolist(), "checked": row["checked"] and same}
    stage_text = " -> ".join(str(stage) for stage in stages)
    lines = [
        f"Pipeline {stage_text} on the {config.name} chip's timed model (RPAccel mode, split {row['split']}), "
        f"{queries} synthetic queries (Poisson arrivals at {load:.1f} queries/s, {utilisation:.0%} of the "
        f"capacity of one query alone, {service_ns / 1e6:.2f} ms), replayed as `rpaccel replay --backend model "
        f"--window {window} --overlap {overlap}` does: the trace read as the windows need it, each window a "
        f"replay of its own, the latencies in an HdrHistogram. {note}.", "",
        "| queries | windows | wall s | CPU s | host s per query | projected for 100,000 | target | peak memory | "
        "simulated cycles per CPU s | p50 ms | p95 ms | checked |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
        f"| {queries:,} | {row['windows']} | {row['host_s']:.1f} | {row['host_cpu_s']:.1f} | {per_query:.2f} | "
        f"{projected / 3600:,.1f} h | <= {SCALE_SECONDS / 60:g} min (issue 21) | {peak_mb:,.0f} MB | "
        f"{row['sim_cycles'] / row['host_cpu_s']:,.0f} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} | "
        f"{'yes' if figures['checked'] else 'NO'} |", "",
        f"Host time counts everything a query costs (reading and generating its candidates, compiling, the "
        f"model's run of its window with {overlap} queries of overlap on either side, checking every response), "
        "as the replaying process's CPU seconds (the wall clock of this shared machine is longer by what other jobs "
        "take); the projection is that rate times 100,000. Peak memory is this process's (models, one window's "
        "queries and programs): it does not grow with the trace.", "",
        f"The windows' effect on the latencies: the first {compare} queries at the same arrivals replayed at once "
        f"and in windows of {compare // 2} (overlap {overlap}): per query, windowed / at once - 1: "
        + ", ".join(f"{value:+.2%}" for value in difference.tolist())
        + f" (largest {np.max(np.abs(difference)):.2%}); rankings {'equal' if same else 'DIFFERENT'}."]
    section = Section("replay-scale", "Replays at scale: the model backend window by window", "\n".join(lines) + "\n")
    return Report(rows=[figures], text=section.body, data=figures, sections=(section,), failures=tuple(failures))
