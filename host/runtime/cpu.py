"""The CPU baseline: a ranking pipeline run for real on this machine, under MLPerf LoadGen's Server scenario.

:class:`CpuRanker` runs a pipeline (:mod:`.pipeline`) on one query's candidates: each stage scores its items with
its model and keeps the best ``k`` for the next; the last stage's ``k`` best are the ranking. Two numerics:

* ``"int8"``: the integer reference (:func:`rpaccel.host.reference.run`, the logits the chip computes bit for bit),
  top-k by :func:`rpaccel.numeric.topk` (ties to the lower candidate index), so its rankings equal the chip's;
* ``"float32"``: the trained float model (:class:`rpaccel.host.train.FloatModel`), what a CPU server would run.

:func:`run_loadgen` serves a trace's queries with ``workers`` processes under LoadGen (the ``mlcommons-loadgen``
wheel): LoadGen draws the arrivals (exponential gaps at ``qps``, its own seeds), issues each query as one sample
(a trace query: its candidates), and judges the run (early stopping, minimum queries and duration). LoadGen
chooses the queries it issues from a working set of ``sample_count`` trace queries (its "performance sample
count"), loaded before the timed run: the workers prepare their model inputs then, so the timed run measures
inference and the top-k only, as the accelerator's replay starts from candidates already in its memory.
"""

import concurrent.futures
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...numeric import topk
from ...threads import one_thread_children
from ..data import preprocess
from .pipeline import PipelineError, stage_items
from .stats import LatencyRecorder

__all__ = ["CpuRanker", "LoadGenRun", "run_loadgen", "service_times"]

NUMERICS = ("int8", "float32")


class CpuRanker:
    """A pipeline's ranking of one query's candidates on the CPU.

    Parameters
    ----------
    stages : tuple of StageSpec
    models : dict
        Model name -> :class:`~rpaccel.host.quant.QuantModel` (``int8``) or
        :class:`~rpaccel.host.train.FloatModel` (``float32``), one for every stage's model.
    numerics : str
        ``"int8"`` or ``"float32"``.
    """

    def __init__(self, stages, models, numerics="int8"):
        if numerics not in NUMERICS:
            raise ValueError(f"Numerics must be one of {NUMERICS}, not {numerics!r}")
        missing = sorted({stage.model for stage in stages} - set(models))
        if missing:
            raise PipelineError(f"No model given for the pipeline's stage model(s) {', '.join(missing)}")
        self.stages, self.models, self.numerics = tuple(stages), dict(models), numerics

    def prepare(self, records):
        """Each stage model's inputs for all of a query's candidates (done before the query is timed)."""
        inputs = {}
        for name in {stage.model for stage in self.stages}:
            model = self.models[name]
            inputs[name] = model.inputs(records) if self.numerics == "int8" else preprocess(records, model.spec)
        return len(records), inputs

    def rank(self, prepared):
        """``(indices, scores)`` of the final stage's ``k`` best candidates, best first (candidate indices into
        the query). Scores are int32 logits (``int8``) or float logits (``float32``); a multi-task model ranks by
        task 0's."""
        size, inputs = prepared
        items = np.arange(size)
        stage_items(self.stages, size)
        for number, stage in enumerate(self.stages):
            dense, ids = inputs[stage.model]
            if self.numerics == "int8":
                logits = _ranked(self.models[stage.model].logits(dense[items], ids[items]))
                scores, best = topk(logits, stage.k, items)
            else:
                logits = _ranked(self.models[stage.model].forward(dense[items], ids[items]))
                # Highest first, ties to the lower candidate index (a stable sort of the negated scores).
                order = np.argsort(-logits, kind="stable")[:stage.k]
                scores, best = logits[order], items[order]
            if number == len(self.stages) - 1:
                return best, scores
            items = np.sort(best)


def _ranked(logits):
    # A multi-task model (logits (n, tasks)) ranks by task 0's logit, as the chip does (host.driver.chip.chip_logits).
    return logits[:, 0] if logits.ndim == 2 else logits


@dataclass
class LoadGenRun:
    """What a LoadGen run measured.

    Attributes
    ----------
    report : rpaccel.host.runtime.stats.LatencyReport
        Our figures, from the issue callback to the ranking (wall clock; LoadGen's own start at its scheduled
        issue, a little earlier).
    loadgen : dict
        LoadGen's own summary (``mlperf_log_summary.txt``): ``result`` (VALID/INVALID), ``completed_qps``,
        ``scheduled_qps``, latency percentiles in ms, ``early_stopping`` and the raw ``text``.
    rankings : dict
        Trace query number -> ``(indices, scores)`` of its last ranking.
    issued : int
        Queries served (issued by LoadGen and ranked without error).
    recorder : rpaccel.host.runtime.stats.LatencyRecorder
        The latencies behind ``report`` (its CDF).
    """

    report: object
    loadgen: dict
    rankings: dict
    issued: int
    recorder: object = None


# Worker processes: the ranker and the prepared queries live in each worker, set up once.
_worker = {}

def _pool(workers, ranker, queries):
    """``workers`` spawned processes holding ``ranker`` and ``queries`` prepared, each with one thread."""
    context = multiprocessing.get_context("spawn")
    with one_thread_children():
        return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                      initargs=(ranker, queries, context.Barrier(workers)))


def _worker_init(ranker, queries, barrier):
    # Ctrl-C is the parent's to handle: a worker interrupted in multiprocessing's loop would print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["ranker"] = ranker
    _worker["prepared"] = {number: ranker.prepare(records) for number, records in queries.items()}
    _worker["barrier"] = barrier


def _worker_ready():
    """Wait until every worker has prepared its queries (one call per worker: a worker blocked here takes no
    other call, so ``workers`` calls reach ``workers`` different processes)."""
    _worker["barrier"].wait(timeout=600)


def _worker_rank(number):
    return _worker["ranker"].rank(_worker["prepared"][number])


def _worker_times(numbers, rounds):
    times = []
    for _ in range(rounds):
        for number in numbers:
            start = time.perf_counter_ns()
            _worker_rank(number)
            times.append(time.perf_counter_ns() - start)
    return times


def service_times(ranker, queries, *, rounds=3):
    """Each of ``queries``' (trace query number -> candidates) ranking times in nanoseconds, ``rounds`` times over,
    measured in one worker process as :func:`run_loadgen`'s workers run (spawned, one thread)."""
    with _pool(1, ranker, queries) as pool:
        return pool.submit(_worker_times, sorted(queries), rounds).result()


def _parse_summary(text):
    """LoadGen's summary: result, completed and scheduled QPS, latency percentiles (ms), early stopping."""
    out = {"text": text}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Result is":
            out["result"] = value
        elif key == "Completed samples per second":
            out["completed_qps"] = float(value)
        elif key == "Scheduled samples per second":
            out["scheduled_qps"] = float(value)
        elif key.endswith("percentile latency (ns)") or key in ("Min latency (ns)", "Max latency (ns)",
                                                                 "Mean latency (ns)"):
            out[key.replace(" (ns)", "").replace(" latency", "").lower().replace(" ", "_") + "_ms"] = (
                float(value) / 1e6)
        elif key == "Early stopping satisfied":
            out["early_stopping"] = value == "Yes"
    return out


def run_loadgen(ranker, trace_queries, *, qps, target_ms, percentile=0.95, min_queries=100, min_duration_s=1.0,
                max_duration_s=None, workers=1, sample_count=None, outdir, seed=1):
    """Serve ``trace_queries`` with ``ranker`` under LoadGen's Server scenario at ``qps``.

    Parameters
    ----------
    ranker : CpuRanker
    trace_queries : dict
        Trace query number -> its candidates (:class:`~rpaccel.host.data.Records`), LoadGen's sample library.
    qps : float
        Offered load (LoadGen's ``server_target_qps``; exponential gaps).
    target_ms, percentile : float
        The latency target and its percentile (LoadGen's ``server_target_latency_ns`` and
        ``server_target_latency_percentile``).
    min_queries, min_duration_s, max_duration_s
        LoadGen's ``min_query_count``, ``min_duration_ms`` and ``max_duration_ms``.
    workers : int
        Worker processes (each ranks one query at a time).
    sample_count : int, optional
        LoadGen's working set of queries (default all of ``trace_queries``, at most 64).
    outdir : path-like
        Folder for LoadGen's logs (created; its files are LoadGen's own).
    seed : int
        LoadGen's schedule, sample-index and QSL seeds.

    Returns
    -------
    LoadGenRun
    """
    import mlperf_loadgen as lg

    if not qps > 0:
        raise ValueError(f"The offered load must be positive, not {qps!r} queries/s")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Workers must be a positive integer, not {workers!r}")
    numbers = sorted(trace_queries)
    if not numbers:
        raise ValueError("No queries to serve")
    for number in numbers:
        stage_items(ranker.stages, len(trace_queries[number]))     # every query fits the pipeline
    sample_count = min(sample_count or 64, len(numbers))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    state = {"pool": None}
    lock = threading.Lock()
    issued, times, rankings, failures = [0], [], {}, []

    # An exception must not leave a callback: LoadGen calls them from C++ and would crash. What fails is recorded,
    # every sample is still completed (or LoadGen would wait forever), and the error is raised after the run.
    def fail(where, error):
        with lock:
            failures.append(f"{where}: {type(error).__name__}: {error}")

    def load(samples):
        try:
            chosen = {numbers[index]: None for index in samples}       # LoadGen passes sample indices
            queries = {number: trace_queries[number] for number in chosen}
            state["pool"] = _pool(workers, ranker, queries)
            # Every worker started and its queries prepared before the timed run.
            for future in [state["pool"].submit(_worker_ready) for _ in range(workers)]:
                future.result()
        except BaseException as error:
            fail("preparing the workers", error)

    def unload(samples):
        if state["pool"] is not None:
            state["pool"].shutdown(cancel_futures=True)
            state["pool"] = None

    def issue(samples):
        for sample in samples:
            start = time.monotonic_ns()
            number = numbers[sample.index]
            try:
                future = state["pool"].submit(_worker_rank, number)
            except BaseException as error:
                fail(f"query {number}", error)
                lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, 0, 0)])
                continue

            def done(future, sample=sample, start=start, number=number):
                finish = time.monotonic_ns()
                try:
                    result = future.result()
                except BaseException as error:
                    fail(f"query {number}", error)
                else:
                    with lock:
                        times.append((start, finish))
                        rankings[number] = result
                        issued[0] += 1
                try:
                    lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, 0, 0)])
                except BaseException as error:
                    fail(f"completing query {number}", error)

            future.add_done_callback(done)

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = float(qps)
    settings.server_target_latency_ns = int(target_ms * 1e6)
    settings.server_target_latency_percentile = float(percentile)
    settings.min_query_count = int(min_queries)
    settings.min_duration_ms = int(min_duration_s * 1000)
    if max_duration_s is not None:
        settings.max_duration_ms = int(max_duration_s * 1000)
    settings.schedule_rng_seed = settings.sample_index_rng_seed = settings.qsl_rng_seed = int(seed)
    log = lg.LogSettings()
    log.log_output.outdir = str(outdir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(len(numbers), sample_count, load, unload)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        unload(None)
    if failures:
        raise RuntimeError(f"The CPU backend failed {len(failures)} time(s); the first: {failures[0]}")
    recorder = LatencyRecorder(target_ms=target_ms, percentile=percentile, min_queries=min_queries,
                               min_duration_s=min_duration_s)
    for start, finish in sorted(times):
        recorder.record(start, finish)
    summary = _parse_summary((outdir / "mlperf_log_summary.txt").read_text())
    return LoadGenRun(report=recorder.report(), loadgen=summary, rankings=rankings, issued=issued[0],
                      recorder=recorder)
