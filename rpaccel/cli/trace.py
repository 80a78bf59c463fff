"""``rpaccel trace``: generate a query trace, or check and summarise one.

``trace gen`` writes a trace (:mod:`rpaccel.host.runtime.trace`: JSON Lines, versioned, one record per query) of
``--queries`` queries with sizes from ``--sizes`` and arrivals from ``--arrivals``, over consecutive samples of a
synthetic stream (default) or of a data file (``--data FILE``). The same options write the same bytes. ``trace
info`` reads a trace, checking every line, and reports its load and its size and gap statistics; a bad line stops
it with ``file:line: field: what``.
"""

import os
from pathlib import Path

from .common import CLIError, print_json
from .hostcommon import add_quiet, check_files, host_errors, positive_int


def register(subparsers):
    p = subparsers.add_parser("trace", help="generate a query trace (sizes, arrivals, data) or summarise one",
                              description=__doc__)
    sub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", parser_class=type(p))
    sub.required = True
    g = sub.add_parser("gen", help="generate a query trace (deterministic by seed)",
                       description="Generate a query trace. Sizes: fixed:N (RecPipe: fixed:4096), normal:MEAN,STD "
                                   "and lognormal:MU,SIGMA (DeepRecSys: normal:165,16, lognormal:5.1,0.2; clipped "
                                   "to --min-size/--max-size), table:mlperf-dlrm (MLPerf DLRM's quantiles, 100 to "
                                   "700 pairs) or table:V1,V2,.... Arrivals: poisson:QPS (exponential gaps, as "
                                   "LoadGen) or recpipe:MEAN_MS (RecPipe's whole-millisecond Poisson gaps, for "
                                   "comparison). The same options write the same bytes.")
    g.add_argument("--out", required=True, help="trace file to write (.jsonl, or .jsonl.gz compressed)")
    g.add_argument("--queries", type=positive_int, default=1000, help="queries (default 1000)")
    g.add_argument("--sizes", default="fixed:4096", help="query size distribution (default fixed:4096)")
    g.add_argument("--min-size", type=positive_int, default=1, help="smallest query after clipping (default 1)")
    g.add_argument("--max-size", type=positive_int, default=1024,
                   help="largest query after clipping (default 1024, DeepRecSys's; fixed:N is never clipped)")
    g.add_argument("--arrivals", default="poisson:100", help="arrival process (default poisson:100)")
    g.add_argument("--seed", type=int, default=1, help="seed of the sizes and gaps (default 1)")
    g.add_argument("--data", metavar="FILE",
                   help="queries take consecutive samples of this data file (Criteo TSV or records .npz), wrapping "
                        "around at its end (default: the synthetic stream below)")
    g.add_argument("--data-seed", type=int, default=1, help="synthetic stream's seed (default 1, as rpaccel data gen)")
    g.add_argument("--max-rows", type=positive_int, default=20_000,
                   help="synthetic stream's distinct IDs per feature (default 20000, as rpaccel data gen)")
    g.add_argument("--skew", type=float, default=1.05, help="synthetic stream's Zipf exponent (default 1.05)")
    g.add_argument("--ctr", type=float, default=0.25, help="synthetic stream's click rate (default 0.25)")
    g.add_argument("--start", type=int, default=0,
                   help="first sample of the synthetic stream the queries take (default 0; use the size of the "
                        "training data to query unseen samples)")
    add_quiet(g)
    g.set_defaults(func=run_gen)
    i = sub.add_parser("info", help="read a trace (checks every line) and summarise it",
                       description="Read a trace and report its queries, duration, offered load, and its size and "
                                   "gap statistics (with the share of zero gaps).")
    i.add_argument("trace", help="trace file (.jsonl or .jsonl.gz)")
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=run_info)


def _data_source(args):
    """The trace header's ``data``: a data file's path and sample count, or the synthetic stream's options."""
    if args.data is None:
        if args.start < 0:
            raise CLIError(f"--start must be >= 0, not {args.start}")
        return {"kind": "synthetic", "seed": args.data_seed, "max_rows": args.max_rows, "skew": args.skew,
                "ctr": args.ctr, "start": args.start}
    from ..host.data import load_records

    path = Path(args.data)
    if not path.is_file():
        raise CLIError(f"--data {path}: no such file")
    with host_errors():
        samples = len(load_records(path))
    # Relative to the trace's folder, so that a trace and its data move together.
    return {"kind": "file", "path": os.path.relpath(path.resolve(), Path(args.out).resolve().parent),
            "samples": samples}


def run_gen(args):
    from ..host.progress import Progress
    from ..host.runtime.trace import ArrivalProcess, SizeDist, generate_trace, write_trace

    out = Path(args.out)
    check_files([("--data", args.data)], [("--out", out)])
    if not (out.name.endswith(".jsonl") or out.name.endswith(".jsonl.gz")):
        raise CLIError(f"--out {out}: a trace is a .jsonl or .jsonl.gz file")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, not {args.seed}")
    try:
        sizes = SizeDist.parse(args.sizes, low=args.min_size, high=args.max_size)
    except ValueError as error:
        raise CLIError(f"--sizes: {error}") from None
    try:
        arrivals = ArrivalProcess.parse(args.arrivals)
    except ValueError as error:
        raise CLIError(f"--arrivals: {error}") from None
    data = _data_source(args)
    try:
        header, records = generate_trace(args.queries, sizes=sizes, arrivals=arrivals, data=data, seed=args.seed)
    except ValueError as error:     # the data options (--data-seed, --max-rows, --skew, --ctr, --start, --data)
        raise CLIError(str(error)) from None
    with Progress(f"writing {out.name}", args.queries, "queries", enabled=not args.quiet) as bar:
        write_trace(out, header, records, progress=bar)
    print(f"wrote {args.queries:,} queries to {out} (sizes {args.sizes}, arrivals {args.arrivals}, seed "
          f"{args.seed})")
    return 0


def run_info(args):
    from ..host.runtime.trace import read_trace, trace_summary

    with host_errors():
        header, records = read_trace(args.trace)
        summary = trace_summary(header, records)
    if args.json:
        print_json(summary)
        return 0
    size, gap = summary["size"], summary["gap_ms"]
    data = summary["data"]
    source = (f"data file {data['path']} ({data['samples']:,} samples)" if data["kind"] == "file" else
              f"synthetic stream (seed {data['seed']}, from sample {data['start']:,})")
    lines = [f"{args.trace}: {summary['queries']:,} queries, {summary['candidates']:,} candidates, over "
             f"{summary['duration_s']:.3f} s" + (f" ({summary['offered_qps']:,.1f} queries/s offered)"
                                                 if summary["offered_qps"] else ""),
             f"  sizes {summary['sizes']}: min {size['min']:.0f}, mean {size['mean']:.1f}, p50 {size['p50']:.0f}, "
             f"p95 {size['p95']:.0f}, p99 {size['p99']:.0f}, max {size['max']:.0f}"]
    if gap:
        lines.append(f"  arrivals {summary['arrivals']}: gaps (ms) mean {gap['mean']:.3f}, p50 {gap['p50']:.3f}, "
                     f"p95 {gap['p95']:.3f}, p99 {gap['p99']:.3f}, max {gap['max']:.3f}; "
                     f"{summary['zero_gaps']:.1%} of gaps are 0")
    lines.append(f"  seed {summary['seed']}; {source}")
    print("\n".join(lines))
    return 0
