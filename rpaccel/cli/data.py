"""``rpaccel data``: generate synthetic Criteo-like click data, split a data file, or check and summarise one.

``data gen`` writes the Criteo Kaggle TSV format (``.tsv``, ``.txt``, ``.gz``) or, for models that are not shaped
like Criteo (``--model rmc1``: 128 dense, 8 tables pooling 80), a records ``.npz``. Sample ``i`` of a stream
depends only on the options and ``i``, so a test file disjoint from a training file of ``N`` samples is the same
command with ``--start N``. ``data split`` cuts a file (the real Criteo data, say) into a training file and a
test file holding its last samples. ``data stats`` reads a file through the same reader training uses and reports
what it holds; a bad line stops it with ``file:line: field: what`` unless ``--skip-bad`` is given.
"""

from pathlib import Path

from .common import CLIError, print_json
from .hostcommon import add_quiet, check_files, host_errors, positive_int


def register(subparsers):
    p = subparsers.add_parser("data", help="generate synthetic click data, split or check a data file",
                              description=__doc__)
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=type(p))
    sub.required = True
    g = sub.add_parser("gen", help="generate synthetic Criteo-like data (deterministic by seed)",
                       description="Generate synthetic click data: Zipf-skewed IDs, labels from a planted model. "
                                   "The same arguments give a byte-identical file.")
    g.add_argument("--out", required=True, help="output file: .tsv/.txt/.gz (Criteo TSV) or .npz (records)")
    g.add_argument("--samples", type=positive_int, default=100_000, help="samples to write (default 100000)")
    g.add_argument("--start", type=int, default=0,
                   help="index of the first sample in the stream the seed and options define (default 0): a test "
                        "file disjoint from a training file of N samples is the same command with --start N")
    g.add_argument("--seed", type=int, default=1,
                   help="seed of the planted model and the samples (default 1); another seed is another planted "
                        "model, so train and test files share the seed and differ in --start")
    g.add_argument("--skew", type=float, default=1.05, help="Zipf exponent of the IDs (default 1.05)")
    g.add_argument("--max-rows", type=positive_int, default=20_000,
                   help="cap on distinct IDs per feature (Criteo Kaggle cardinalities capped; default 20000)")
    g.add_argument("--ctr", type=float, default=0.25, help="target click rate (default 0.25)")
    g.add_argument("--model", help="shape the data for this zoo model instead of Criteo (writes .npz)")
    add_quiet(g)
    g.set_defaults(func=run_gen)
    t = sub.add_parser("split", help="split a data file into a training file and a disjoint test file",
                       description="Write the last --test samples of a data file (lines of a TSV file, as they "
                                   "are) to --test-out and the others to --train-out, in the input's format: data "
                                   "in time order, like Criteo's click logs, is tested on what came after "
                                   "training, as DLRM holds out the last day.")
    t.add_argument("file", help="data file (Criteo TSV, .gz too, or records .npz)")
    t.add_argument("--train-out", required=True, help="training file to write")
    t.add_argument("--test-out", required=True, help="test file to write")
    t.add_argument("--test", type=positive_int, required=True, metavar="N",
                   help="samples for the test file (e.g. 524288: 128 queries of 4096 candidates)")
    add_quiet(t)
    t.set_defaults(func=run_split)
    s = sub.add_parser("stats", help="read a data file and summarise it (checks every line)",
                       description="Read a Criteo TSV or records .npz file and report samples, click rate, missing "
                                   "fields and distinct values.")
    s.add_argument("file", help="data file")
    s.add_argument("--limit", type=positive_int, help="read at most this many samples")
    s.add_argument("--skip-bad", action="store_true", help="skip and count bad lines instead of stopping")
    s.add_argument("--json", action="store_true", help="print as JSON")
    add_quiet(s)
    s.set_defaults(func=run_stats)


def run_gen(args):
    from ..host.data import SyntheticConfig, SyntheticCriteo, save_records, write_criteo_tsv
    from ..host.models import get_model
    from ..host.progress import Progress

    out = Path(args.out)
    if args.start < 0:
        raise CLIError(f"--start must be >= 0, not {args.start}")
    check_files([], [("--out", out)])
    try:
        if args.model:
            with host_errors():
                spec = get_model(args.model, max_rows=args.max_rows)
            if not spec.trainable:
                raise CLIError(f"model {spec.name} is specified for its costs only; no data shape to generate")
            config = SyntheticConfig.for_model(spec, skew=args.skew, ctr=args.ctr, seed=args.seed)
        else:
            config = SyntheticConfig.criteo(max_rows=args.max_rows, skew=args.skew, ctr=args.ctr, seed=args.seed)
    except ValueError as error:
        raise CLIError(str(error)) from None
    criteo = config.dense == 13 and len(config.rows) == 26 and config.pooling == 1
    if out.suffix != ".npz" and not criteo:
        raise CLIError(f"model {args.model} is not shaped like Criteo; write a .npz file, not {out.name}")
    generator = SyntheticCriteo(config)
    block = 262_144
    with Progress(f"generating {out.name}", args.samples, "samples", enabled=not args.quiet) as bar:
        if out.suffix == ".npz":
            save_records(out, generator.generate(args.samples, args.start, progress=bar))
        else:
            write_criteo_tsv(out, (generator.generate(min(block, args.samples - first), args.start + first,
                                                      progress=bar) for first in range(0, args.samples, block)))
    end = args.start + args.samples
    print(f"wrote {args.samples:,} samples to {out}: samples {args.start:,} to {end - 1:,} of seed {args.seed}'s "
          f"stream (a disjoint file: the same options with --start {end})")
    return 0


def run_split(args):
    from ..host.data import split_data
    from ..host.progress import Progress

    check_files([("FILE", args.file)], [("--train-out", args.train_out), ("--test-out", args.test_out)])
    with host_errors(), Progress(f"splitting {Path(args.file).name}", 0, "samples", enabled=not args.quiet) as bar:
        train, test = split_data(args.file, args.train_out, args.test_out, args.test, progress=bar)
    unit = "samples" if Path(args.file).suffix == ".npz" else "lines"
    print(f"wrote {train:,} {unit} to {args.train_out} and the last {test:,} to {args.test_out}")
    return 0


def run_stats(args):
    import numpy as np

    from ..host.data import ReadStats, load_records
    from ..host.progress import Progress

    stats = ReadStats()
    with host_errors(), Progress(f"reading {Path(args.file).name}", args.limit or 0, "samples",
                                 enabled=not args.quiet) as bar:
        records = load_records(args.file, limit=args.limit, on_error="skip" if args.skip_bad else "raise",
                               stats=stats, progress=bar)
    distinct = [len(np.unique(records.cats[:, t])) for t in range(records.num_tables)]
    report = {"file": args.file, "lines": stats.lines, "samples": len(records), "skipped": dict(stats.skipped),
              "click_rate": float(records.labels.mean()), "dense": records.num_dense,
              "tables": records.num_tables, "pooling": records.pooling,
              "dense_missing": [round(float(v), 4) for v in records.dense_missing.mean(axis=0)],
              "cat_missing": [round(float(v), 4) for v in records.cat_missing.mean(axis=(0, 2))],
              "distinct_values": distinct}
    if args.json:
        print_json(report)
        return 0
    print(f"{args.file}: {len(records):,} samples, click rate {report['click_rate']:.4f}, {records.num_dense} dense "
          f"and {records.num_tables} categorical features (pooling {records.pooling})")
    if stats.total_skipped:
        reasons = ", ".join(f"{k} {v:,}" for k, v in stats.skipped.items())
        print(f"skipped {stats.total_skipped:,} bad lines: {reasons}")
        for example in stats.examples:
            print(f"  {example}")
    print("missing dense:", " ".join(f"{v:.2f}" for v in report["dense_missing"]))
    print("missing categorical:", " ".join(f"{v:.2f}" for v in report["cat_missing"]))
    print("distinct values:", " ".join(map(str, distinct)))
    return 0
