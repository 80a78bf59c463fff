"""``rpaccel replay``: serve a query trace through a ranking pipeline under load (:mod:`rpaccel.experiments.replay`).

The trace (``rpaccel trace gen``) gives the queries' sizes and candidates; ``--pipeline`` the stages
(``MODEL:ITEMS:K,...``, e.g. ``rm-small:4096:512,rm-large:512:64``); ``--backend cpu`` runs them for real on this
machine under MLPerf LoadGen's Server scenario at each ``--load`` (queries per second, exponential arrivals);
``--backend rtl`` runs them on the chip's RTL (Verilator, ``--preset``/``--set``), each query sent at its arrival
in the trace (gaps scaled to each ``--load``; default the trace's own rate), every response checked; ``--backend
model`` the same on the chip's transaction-level timed model (the RTL's rankings; its cycles close to the RTL's,
not exact until issue 20), as many queries as the chip's memory holds, or with ``--window W`` any number, W at a
time in bounded memory (``--overlap`` more on either side of each window, left out). ``--mapping auto`` (``rtl``,
``model``) runs them on the split, lanes per stage and sub-batch size RecPipe's stage mapping chooses for
throughput on the timed model over the first queries (:mod:`rpaccel.host.runtime.mapping`), in place of stage ``s``
on lane ``s`` alone.
Per load: completed queries per second, p50/p95/p99 latency, NDCG@k of the rankings, and with ``--target-ms``
LoadGen's validity (early stopping, minimum queries and duration). ``--out`` writes the rows as JSON and CSV and
keeps LoadGen's logs; nothing is written until the run is complete.
"""

from pathlib import Path

from .common import (
    CLIError,
    CommandFailed,
    add_config_arguments,
    config_from_args,
    non_negative_int,
    print_json,
    say,
)
from .hostcommon import check_files, positive_int


def _loads(text):
    import argparse

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError(f"loads must be positive queries per second, not {text!r}")
    return values


def _model(text):
    import argparse

    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FILE")
    return name, path


def register(subparsers):
    p = subparsers.add_parser("replay", help="serve a query trace through a pipeline under load (cpu, rtl, model)",
                              description=__doc__)
    p.add_argument("--trace", required=True, help="query trace (rpaccel trace gen)")
    p.add_argument("--pipeline", required=True, help="stages MODEL:ITEMS:K,... (e.g. rm-small:4096:512,"
                                                     "rm-large:512:64)")
    p.add_argument("--backend", default="cpu",
                   help="cpu (default), rtl (the chip's RTL on Verilator) or model (the chip's timed model)")
    add_config_arguments(p)
    p.add_argument("--model", type=_model, action="append", default=[], metavar="NAME=FILE",
                   help="a stage model's file: quantised .q.npz (int8) or float weights .npz (float32); default: "
                        "trained for seconds on the trace's synthetic stream")
    p.add_argument("--numerics", default="int8", help="int8 (the integer reference: the chip's rankings) or float32")
    p.add_argument("--load", type=_loads, metavar="QPS,...",
                   help="offered loads in queries per second (default: the trace's own rate)")
    p.add_argument("--target-ms", type=float, help="latency target for validity (LoadGen's)")
    p.add_argument("--percentile", type=float, default=95.0, help="the target's percentile (default 95)")
    p.add_argument("--search", action="store_true",
                   help="search the highest load meeting --target-ms (doubling from the trace's rate, then "
                        "bisecting) instead of fixed loads")
    p.add_argument("--plot", help="write latency vs load and the latency CDFs to this image (.png, .svg, ...)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes: cpu's, or with --window on rtl and model, windows replayed at once "
                        "(default 1)")
    p.add_argument("--queries", type=positive_int, default=32,
                   help="the trace's first queries used: LoadGen's working set (cpu) or those replayed (rtl, model) "
                        "(default 32)")
    p.add_argument("--warmup", type=int, default=0,
                   help="queries left out of the figures at the start (rtl, model)")
    p.add_argument("--min-queries", type=positive_int, default=200, help="LoadGen's minimum queries (default 200)")
    p.add_argument("--min-duration", type=float, default=5.0, help="LoadGen's minimum seconds per load (default 5)")
    p.add_argument("--k", type=positive_int, help="NDCG depth (default the last stage's K)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of training and of LoadGen (default 1)")
    p.add_argument("--mapping", choices=("default", "auto"), default="default",
                   help="rtl, model: stage s on lane s alone (default), or auto: the split, lanes per stage and "
                        "sub-batch size the stage mapping chooses for throughput on the timed model")
    p.add_argument("--window", type=positive_int,
                   help="rtl, model: replay the queries in windows of this many, in bounded memory (any --queries, "
                        "not only what the chip's memory holds)")
    p.add_argument("--overlap", type=non_negative_int, default=4,
                   help="with --window: queries replayed on either side of each window and left out (default 4)")
    p.add_argument("--out", help="folder for rows.json, rows.csv and LoadGen's logs (must not exist)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run)


def run(args):
    import csv
    import json
    import shutil
    import tempfile

    from ..experiments.replay import run_replay

    out = Path(args.out) if args.out else None
    check_files([("--trace", args.trace)], [("--out", out)] if out is not None and not out.exists() else [])
    if out is not None and out.exists():
        raise CLIError(f"--out {out} exists; name a new folder (nothing is overwritten)")
    if not 0 < args.percentile < 100:
        raise CLIError(f"--percentile must be in (0, 100), not {args.percentile}")
    if args.plot:
        from ..host.quality import check_plot_path

        check_files([("--trace", args.trace)], [("--plot", args.plot)])
        try:
            check_plot_path(args.plot)
        except ValueError as error:
            raise CLIError(f"--plot {error}") from None
    models = dict(args.model)
    scratch = Path(tempfile.mkdtemp(prefix=".replay-", dir=out.parent if out else None)) if out else None
    try:
        report = run_replay(trace=args.trace, pipeline=args.pipeline, backend=args.backend,
                            config=config_from_args(args), models=models or None, numerics=args.numerics,
                            loads=args.load, target_ms=args.target_ms, percentile=args.percentile / 100,
                            search=args.search,
                            workers=args.workers, queries=args.queries, warmup=args.warmup,
                            min_queries=args.min_queries, min_duration_s=args.min_duration, k=args.k,
                            seed=args.seed, outdir=scratch, mapping=args.mapping, window=args.window,
                            overlap=args.overlap,
                            progress=None if args.json else say)
        if out is not None:
            (scratch / "rows.json").write_text(json.dumps(report.data, indent=2) + "\n")
            with open(scratch / "rows.csv", "w", newline="") as handle:
                fields = [key for key in report.rows[0]
                          if key not in ("reasons", "cdf", "mismatches", "utilisation", "cache", "latency_cycles",
                                         "lanes")]
                writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(report.rows)
            scratch.rename(out)
            scratch = None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.plot:
        from ..experiments.replay import plot_replay

        plot_replay(report.rows, args.plot, target_ms=args.target_ms, percentile=args.percentile / 100,
                    title=f"{args.pipeline} on {args.backend}, trace {Path(args.trace).name}")
    if args.json:
        print_json(report.data)
    else:
        print(report.text)
        if out is not None:
            print(f"\nwrote {out}/rows.json, rows.csv" + (" and LoadGen's logs (load-N-QPS/)" if args.backend == "cpu"
                                                            else ""))
        if args.plot:
            print(f"wrote {args.plot}")
    if not report.passed:
        raise CommandFailed(report.failures[0])
    return 0

