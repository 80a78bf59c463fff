"""``rpaccel quality``: ranking quality and compute of single- and multi-stage pipelines on a data file.

Queries are consecutive blocks of ``--candidates`` samples of the data file (as RecPipe forms them from
Criteo). Every model is scored with the integer reference (the exact int32 logits the accelerator must give);
``--float`` weights are evaluated next to them. The default pipelines are RecPipe's (1-stage large, 2-stage
small -> large, 3-stage small -> med -> large, plus single small and medium models) when the quantised models are
rm-small, rm-med and rm-large; ``--pipeline`` gives others (``rm-small:512>rm-large``). The report says how many
queries were evaluated: every whole query of the file, or ``--queries N`` (an error if the file holds fewer,
unless ``--allow-fewer``).
"""

import sys
from pathlib import Path

from .common import CLIError, print_json
from .hostcommon import add_quiet, check_files, host_errors, positive_int, same_file


def register(subparsers):
    p = subparsers.add_parser("quality", help="NDCG@k, AUC and MACs per query of ranking pipelines on a data file",
                              description=__doc__)
    p.add_argument("--data", required=True, help="test data (Criteo TSV or records .npz)")
    p.add_argument("--model", action="append", default=[], required=True, metavar="QFILE",
                   help="quantised model file (repeat for each model)")
    p.add_argument("--float", action="append", default=[], metavar="WEIGHTS", dest="floats",
                   help="float weights file to evaluate as well (repeat)")
    p.add_argument("--candidates", type=positive_int, default=4096, help="candidates per query (default 4096)")
    p.add_argument("--k", type=positive_int, default=64, help="NDCG depth (default 64)")
    p.add_argument("--queries", type=positive_int,
                   help="evaluate this many queries (the first ones of the file; default: every whole query it "
                        "holds); a file holding fewer is an error unless --allow-fewer is given")
    p.add_argument("--allow-fewer", action="store_true",
                   help="with --queries: evaluate the queries the file holds when it holds fewer")
    p.add_argument("--pipeline", action="append", default=[],
                   help="pipeline as model:keep>model:keep>model (repeat; default RecPipe's)")
    p.add_argument("--plot", help="write a plot of quality against MACs per query (.png, .svg, .pdf, ...)")
    p.add_argument("--write", action="store_true", help="record the tables in the results file")
    p.add_argument("--results", default="docs/results.md", help="results file (default docs/results.md)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args):
    from ..host.data import load_records
    from ..host.experiment import evaluate_models, quality_tables
    from ..host.quality import Pipeline, check_plot_path, plot_quality, recpipe_pipelines
    from ..host.quant import load_quantized
    from ..host.train import load_weights
    from .bench import record

    if args.allow_fewer and not args.queries:
        raise CLIError("--allow-fewer goes with --queries (without it every whole query of the file is evaluated)")
    if args.plot:
        try:
            check_plot_path(args.plot)
        except ValueError as error:
            raise CLIError(f"--plot {error}") from None
    check_files([("--data", args.data), *(("--model", path) for path in args.model),
                 *(("--float", path) for path in args.floats)],
                [("--plot", args.plot), ("--results", args.results if args.write else None)])
    with host_errors():
        quantized = {}
        for path in args.model:
            qmodel, meta = load_quantized(path)
            quantized[qmodel.spec.name] = qmodel
            trained_on = meta.get("train", {}).get("data")
            if isinstance(trained_on, str) and same_file(trained_on, args.data):
                print(f"rpaccel quality: warning: {qmodel.spec.name} ({path}) was trained on {args.data}, so these "
                      "figures are not test figures (a disjoint test file: rpaccel data gen --start, rpaccel data "
                      "split)", file=sys.stderr)
        floats = {}
        for path in args.floats:
            model, _ = load_weights(path)
            floats[model.spec.name] = model
        limit = args.queries * args.candidates if args.queries else None
        test = load_records(args.data, limit=limit)
    available = len(test) // args.candidates
    if available == 0:
        raise CLIError(f"{args.data} holds {len(test):,} samples, fewer than one query of {args.candidates}")
    if args.queries and available < args.queries and not args.allow_fewer:
        raise CLIError(f"{args.data} holds {len(test):,} samples, {available:,} queries of {args.candidates:,} "
                       f"candidates, fewer than --queries {args.queries:,} asks (--allow-fewer evaluates "
                       f"{available:,})")
    try:
        if args.pipeline:
            pipelines = [Pipeline.parse(text, args.k) for text in args.pipeline]
        elif {"rm-small", "rm-med", "rm-large"} <= set(quantized):
            pipelines = recpipe_pipelines(args.candidates, args.k)
        else:
            pipelines = [Pipeline.parse(name, args.k) for name in quantized]
        for pipeline in pipelines:
            for stage in pipeline.stages:
                if stage.model not in quantized:
                    raise ValueError(f"pipeline {pipeline.name!r} uses {stage.model}, which no --model file holds "
                                     f"(have: {', '.join(quantized)})")
                if stage.keep > args.candidates:
                    raise ValueError(f"pipeline {pipeline.name!r} keeps {stage.keep} of {args.candidates} candidates")
        report = evaluate_models(test, args.candidates, args.k, pipelines, quantized, floats, quiet=args.quiet)
    except ValueError as error:
        raise CLIError(str(error)) from None
    report["samples"] = {"read": len(test), "evaluated": report["queries"] * args.candidates}
    report["queries_asked"] = args.queries
    pipeline_table, model_table = quality_tables(report)
    evaluated = _evaluated(report, args)
    if args.json:
        print_json(report)
    else:
        print(evaluated + "\n\n" + pipeline_table + "\n\n" + model_table)
    body = f"{evaluated}\n\n{pipeline_table}\n\n{model_table}"
    if args.plot:
        path = plot_quality(report["pipelines"], args.plot, k=args.k)
        print(f"plot written to {path}")
        body += f"\n\n![quality vs MACs]({Path(path).as_posix()})"
    record(args, f"quality-{''.join(c if c.isalnum() else '-' for c in Path(args.data).stem)}",
           f"Ranking quality on {Path(args.data).name}", body)
    return 0


def _evaluated(report, args):
    """The sentence saying how many queries were evaluated, and why not more."""
    queries, samples = report["queries"], report["samples"]
    text = f"Evaluated {queries:,} queries of {args.candidates:,} candidates from `{args.data}`"
    if args.queries and queries < args.queries:
        text += f" (the file holds {samples['read']:,} samples, fewer than the {args.queries:,} queries asked)"
    elif samples["read"] > samples["evaluated"]:
        text += (f" (its last {samples['read'] - samples['evaluated']:,} samples, less than one query, are not "
                 "used)")
    return text + "."
