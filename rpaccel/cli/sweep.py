"""``rpaccel sweep``: a design-space sweep on the chip's timed model, on Dask (:mod:`rpaccel.experiments.sweep`).

SPEC is a TOML (or JSON) file: the base ``preset``, the sweep's settings (``candidates``, ``queries``, ``seed``,
``train_samples``, ``max_rows``, ``ndcg_k``) and a ``[grid]`` of axes: configuration fields, ``mode``, ``split``,
``sub_batch`` and ``pipeline`` (``MODEL:ITEMS:K,...``); docs/sweep.md has the format. Every point runs as a task
on a local Dask cluster of ``--workers`` processes, or on the cluster of ``--scheduler ADDRESS``. Each point's row
(its parameters and figures: cycles, p95 latency, throughput, NDCG, RecPipe's estimate, busy shares, cache hit
rates, memory lines) is appended to ``--out`` as it completes; run the same command again after an interruption
and the points already in ``--out`` are not run again. ``--plot`` draws NDCG against p95 latency and throughput
with the Pareto front.
"""

from pathlib import Path

from ..results import RESULTS_FILE
from .bench import record
from .common import CLIError, CommandFailed, print_json, say
from .hostcommon import check_files, positive_int


def register(subparsers):
    p = subparsers.add_parser("sweep", help="design-space sweep on the chip's timed model, as Dask tasks",
                              description=__doc__)
    p.add_argument("spec", metavar="SPEC", help="the sweep: a .toml or .json file (docs/sweep.md)")
    p.add_argument("--out", help="results CSV, one row per point; an existing one is resumed (required unless "
                                 "--dry-run)")
    p.add_argument("--plot", help="write the Pareto plots to this image (.png, .svg, ...; must not exist)")
    p.add_argument("--workers", type=positive_int, help="worker processes of the local cluster (default: the "
                                                        "machine's cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster of this scheduler "
                                                          "(tcp://host:8786) instead of a local cluster")
    p.add_argument("--area", action="append", default=[], metavar="FILE",
                   help="synthesis results (rpaccel synth accel --json) giving the area of the points whose "
                        "configuration they measured (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="check SPEC and list its points (and those already in "
                                                          "--out); run nothing")
    p.add_argument("--json", action="store_true", help="print the counts and rows as JSON")
    p.add_argument("--write", action="store_true", help=f"record the sweep's summary in {RESULTS_FILE}")
    p.add_argument("--results", default=str(RESULTS_FILE), help=f"results file (default {RESULTS_FILE})")
    p.set_defaults(func=run)


def _area(paths):
    import json

    results = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as error:
            raise CLIError(f"--area {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise CLIError(f"--area {path}: not JSON ({error})") from None
        results += data if isinstance(data, list) else [data]
    return results


def run(args):
    from ..experiments.sweep import SpecError, SweepFileError, load_spec, read_results, run_sweep

    if args.out is None and not args.dry_run:
        raise CLIError("give --out FILE.csv (the results, resumed if it exists)")
    if args.scheduler is not None and args.workers is not None:
        raise CLIError("--workers sizes the local cluster; with --scheduler the cluster has its own workers")
    check_files([("SPEC", args.spec), *(("--area", a) for a in args.area)], [("--out", args.out),
                                                                               ("--plot", args.plot)])
    if args.plot:
        from ..host.quality import check_plot_path

        if Path(args.plot).exists():
            raise CLIError(f"--plot {args.plot} exists; name a new file (nothing is overwritten)")
        try:
            check_plot_path(args.plot)
        except ValueError as error:
            raise CLIError(f"--plot {error}") from None
    try:
        spec = load_spec(args.spec)
    except SpecError as error:
        raise CLIError(f"{args.spec}: {error}") from None
    area = _area(args.area)
    try:
        done = {row["key"] for row in read_results(args.out)[0]} if args.out and Path(args.out).exists() else set()
        if args.dry_run:
            return _dry_run(spec, done, args)
        report = run_sweep(spec, out=args.out, workers=args.workers, scheduler=args.scheduler, plot=args.plot,
                           area=area, progress=None if args.json else say)
    except SweepFileError as error:
        raise CLIError(f"--out {error}") from None
    if args.json:
        print_json(report.data)
    else:
        print(report.text)
        print(f"rows in {args.out}" + (f"; plot {args.plot}" if args.plot else ""))
    if not report.passed:
        raise CommandFailed(f"{len(report.failures)} point(s) failed; the first: {report.failures[0]}")
    for section in report.sections:
        record(args, section.name, section.title, section.body)
    return 0


def _dry_run(spec, done, args):
    rows = [{"key": p.key, "done": p.key in done, "point": p.label()} for p in spec.points]
    if args.json:
        print_json({"points": len(rows), "done": sum(r["done"] for r in rows), "models": list(spec.models),
                    "ndcg_k": spec.ndcg_k, "rows": rows})
        return 0
    for row in rows:
        print(f"{row['key']} {'done' if row['done'] else 'todo'} {row['point']}")
    print(f"{len(rows)} points ({spec.refused} with a configuration that is refused), {sum(r['done'] for r in rows)}"
          f" already in {args.out}; models {', '.join(spec.models)}; NDCG@{spec.ndcg_k}" if args.out else
          f"{len(rows)} points ({spec.refused} with a configuration that is refused); models "
          f"{', '.join(spec.models)}; NDCG@{spec.ndcg_k}")
    return 0
