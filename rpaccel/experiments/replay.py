"""``rpaccel replay``: a query trace served by a backend under load, with tail latency, throughput and quality.

So far the ``cpu`` backend (:mod:`rpaccel.host.runtime.cpu`): the pipeline runs for real on this machine, in
worker processes, under MLPerf LoadGen's Server scenario, once per offered load. The ``model`` and ``rtl``
backends (the fast model, the chip on Verilator) come with issue 21's next parts.

Models: quantised (``.q.npz``, ``rpaccel quantize``) or float (``.npz``, ``rpaccel train``) files per stage model,
or, when none are given and the trace's data is the synthetic stream, models trained for seconds on the start of
that stream (the trace's queries should then start after it: ``rpaccel trace gen --start``).
"""

import time
from pathlib import Path

import numpy as np

from .report import ExperimentError, Report

__all__ = ["run_replay"]

BACKENDS = ("cpu",)


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
    models, _, seconds = train_models(specs, train_samples=train_samples, seed=seed, data=config)
    overlap = data["start"] < train_samples + 2_000
    return models, (f"models trained in {seconds:.0f} s on samples 0 to {train_samples + 1_999:,} of the stream"
                    + (" (the trace's queries overlap them: generate it with --start "
                       f"{train_samples + 2_000})" if overlap else ""))


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


def _ndcg(rankings, queries, k):
    from ..host.quality import ndcg

    labels = np.stack([queries[number].labels[indices[:k]] for number, (indices, _) in sorted(rankings.items())
                       if len(indices) >= k])
    return float(np.mean(ndcg(labels, k))) if len(labels) else None


def run_replay(*, trace, pipeline, backend="cpu", models=None, numerics="int8", loads=(100.0,), target_ms=None,
               percentile=0.95, workers=1, working_set=32, min_queries=200, min_duration_s=5.0, k=None,
               train_samples=20_000, seed=1, outdir=None, progress=None):
    """Serve ``trace``'s queries through ``pipeline`` on ``backend`` at each offered load.

    Parameters
    ----------
    trace : path-like
        A query trace (``rpaccel trace gen``).
    pipeline : str
        ``MODEL:ITEMS:K,...``.
    backend : str
        ``"cpu"``.
    models : dict, optional
        Model name -> file; default: trained on the trace's synthetic stream.
    numerics : str
        ``"int8"`` (the integer reference, the chip's rankings) or ``"float32"``.
    loads : sequence of float
        Offered loads in queries per second (LoadGen's exponential arrivals).
    target_ms, percentile : float
        Latency target for validity (default: none; LoadGen needs one, so 1 s is used and not judged).
    workers : int
        Worker processes.
    working_set : int
        Trace queries LoadGen draws from (its performance sample count): the first ones of the trace.
    min_queries, min_duration_s
        LoadGen's minimum query count and duration per load.
    k : int, optional
        NDCG depth (default the last stage's K).
    train_samples, seed : int
    outdir : path-like, optional
        Folder for LoadGen's logs (default a temporary one).
    progress : callable, optional

    Returns
    -------
    Report
    """
    import tempfile

    from ..host.data import DataError
    from ..host.runtime.cpu import NUMERICS, CpuRanker, run_loadgen
    from ..host.runtime.pipeline import PipelineError, parse_pipeline, stage_items
    from ..host.runtime.trace import TraceData, read_trace

    if backend not in BACKENDS:
        raise ExperimentError("backend", f"must be one of {', '.join(BACKENDS)} (model and rtl: issue 21's next "
                                         f"parts), not {backend!r}")
    if numerics not in NUMERICS:
        raise ExperimentError("numerics", f"must be one of {', '.join(NUMERICS)}, not {numerics!r}")
    loads = list(loads)
    if not loads or any(not (isinstance(q, (int, float)) and q > 0) for q in loads):
        raise ExperimentError("load", f"must be positive queries per second, not {loads!r}")
    for name, value in (("workers", workers), ("working_set", working_set), ("min_queries", min_queries)):
        if not isinstance(value, int) or value < 1:
            raise ExperimentError(name, f"must be a positive integer, not {value!r}")
    try:
        stages = parse_pipeline(pipeline)
    except PipelineError as error:
        raise ExperimentError("pipeline", str(error)) from None
    _check_models(stages, models)
    k = k or stages[-1].k
    if not 1 <= k <= stages[-1].k:
        raise ExperimentError("k", f"must be in [1, {stages[-1].k}] (the last stage's K), not {k}")
    try:
        header, records = read_trace(trace)
        queries_meta = [record for _, record in zip(range(working_set), records)]
        for record in queries_meta:
            try:
                stage_items(stages, record.size)
            except PipelineError as error:
                raise ExperimentError("pipeline", f"trace query {record.q}: {error}") from None
        data = TraceData(header, base=Path(trace).parent if header.data["kind"] == "file" else None)
        queries = {record.q: data.query(record) for record in queries_meta}
    except DataError as error:
        raise ExperimentError("trace", str(error)) from None
    loaded, note = _load_models(stages, models, numerics, header, train_samples, seed, progress)
    ranker = CpuRanker(stages, loaded, numerics)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for load in loads:
            if progress:
                progress(f"serving at {load:g} queries/s for at least {min_duration_s:g} s (LoadGen Server)")
            out = Path(outdir or scratch) / f"load-{load:g}"
            started = time.monotonic()
            run = run_loadgen(ranker, queries, qps=load, target_ms=target_ms or 1000.0, percentile=percentile,
                              min_queries=min_queries, min_duration_s=min_duration_s, workers=workers,
                              outdir=out, seed=seed)
            report = run.report
            rows.append({"backend": backend, "numerics": numerics, "offered_qps": load,
                         "completed_qps": report.completed_qps, "queries": report.queries, "p50_ms": report.p50,
                         "p95_ms": report.p95, "p99_ms": report.p99, "mean_ms": report.mean,
                         "meets_target": report.meets_target if target_ms else None,
                         "valid": report.valid if target_ms else None,
                         "loadgen_result": run.loadgen.get("result") if target_ms else None,
                         "loadgen_completed_qps": run.loadgen.get("completed_qps"),
                         "loadgen_p95_ms": run.loadgen.get("95.00_percentile_ms"),
                         f"ndcg@{k}": _ndcg(run.rankings, queries, k), "wall_s": time.monotonic() - started,
                         "reasons": list(report.reasons) if target_ms else []})
    text = _text(rows, header, stages, workers, target_ms, percentile, note, k, len(queries))
    return Report(rows=rows, text=text, data={"trace": str(trace), "pipeline": pipeline, "rows": rows,
                                              "models": note or "given files"})


def _text(rows, header, stages, workers, target_ms, percentile, note, k, working_set):
    pipeline = " -> ".join(str(stage) for stage in stages)
    lines = [f"Replay on the cpu backend: {pipeline}; {workers} worker process(es); LoadGen Server scenario "
             f"(exponential arrivals), over the trace's first {working_set} queries (sizes {header.sizes})."]
    if note:
        lines.append(note + ".")
    target = f" (target p{percentile * 100:g} {target_ms:g} ms)" if target_ms else ""
    head = ["offered q/s", "completed q/s", "queries", "p50 ms", "p95 ms", "p99 ms", f"NDCG@{k}", "valid" + target]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]
    for row in rows:
        verdict = "-" if row["valid"] is None else ("yes" if row["valid"] else "no: " + "; ".join(row["reasons"]))
        ndcg = row[f"ndcg@{k}"]
        lines.append(f"| {row['offered_qps']:g} | {row['completed_qps']:.1f} | {row['queries']} | "
                     f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{'-' if ndcg is None else f'{ndcg:.4f}'} | {verdict} |")
    lines.append("")
    lines.append("Latency: from LoadGen's issue of a query to its ranking (wall clock, HdrHistogram); LoadGen's own "
                 "p95 agrees within the time LoadGen takes to issue.")
    return "\n".join(lines)
