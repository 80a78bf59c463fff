"""``rpaccel train``: train a zoo model (float, numpy) on a data file and save its weights."""

from pathlib import Path

from .common import CLIError, CommandFailed, print_json
from .hostcommon import add_quiet, check_files, host_errors, positive_int


def register(subparsers):
    p = subparsers.add_parser("train", help="train a model (float, CPU) on a data file; writes a weights .npz",
                              description=__doc__ + " The same data, options and seed give a byte-identical "
                              "weights file. A run whose loss stops being finite stops with exit status 1 and "
                              "writes nothing.")
    p.add_argument("--model", required=True, help="zoo model (see rpaccel models)")
    p.add_argument("--data", required=True, help="training data: Criteo TSV (.tsv/.txt/.gz) or records .npz")
    p.add_argument("--out", required=True, help="weights file to write (.npz)")
    p.add_argument("--max-rows", type=positive_int, default=20_000,
                   help="cap every table at this many rows; categorical values are hashed into the table "
                        "(default 20000, the data generator's default)")
    p.add_argument("--epochs", type=positive_int, default=1, help="passes over the data (default 1)")
    p.add_argument("--batch", type=positive_int, default=1024, help="samples per step (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam step size of the layers (default 0.001)")
    p.add_argument("--emb-lr", type=float, default=5e-3, help="Adam step size of the embeddings (default 0.005)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and sample order (default 0)")
    p.add_argument("--limit", type=positive_int, help="use at most this many samples")
    p.add_argument("--valid", help="validation data: report its log loss and AUC")
    p.add_argument("--skip-bad", action="store_true", help="skip and count bad lines instead of stopping")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args):
    import numpy as np

    from ..host.data import ReadStats, load_records, preprocess
    from ..host.models import get_model
    from ..host.progress import Progress
    from ..host.quality import auc
    from ..host.train import TrainConfig, TrainingDiverged, save_weights, train

    check_files([("--data", args.data), ("--valid", args.valid)], [("--out", args.out)])
    with host_errors():
        spec = get_model(args.model, max_rows=args.max_rows)
        if not spec.trainable:
            raise CLIError(f"model {spec.name} ({spec.interaction} interaction) is specified for its costs only; "
                           "trainable: the dot and cat models (see rpaccel models)")
        try:
            settings = TrainConfig(args.epochs, args.batch, args.lr, args.emb_lr, args.seed)
        except ValueError as error:
            raise CLIError(str(error)) from None
        stats = ReadStats()
        with Progress(f"reading {Path(args.data).name}", args.limit or 0, "samples", enabled=not args.quiet) as bar:
            records = load_records(args.data, limit=args.limit, on_error="skip" if args.skip_bad else "raise",
                                   stats=stats, progress=bar)
        dense, ids = preprocess(records, spec)
        valid = load_records(args.valid) if args.valid else None
        if valid is not None:
            valid_inputs = preprocess(valid, spec)
    try:
        with Progress(f"training {spec.name}", args.epochs * len(records), "samples", enabled=not args.quiet) as bar:
            model, losses = train(spec, dense, ids, records.labels, settings, progress=bar)
    except TrainingDiverged as error:
        raise CommandFailed(f"training diverged at epoch {error.epoch}, step {error.step} of {error.steps}: "
                            f"{error.what}; try a lower --lr (now {args.lr:g}) or --emb-lr (now {args.emb_lr:g}); "
                            f"{args.out} not written") from None
    summary = {"model": spec.name, "samples": len(records), "skipped_lines": stats.total_skipped,
               "epoch_losses": losses, "train": settings.describe(), "max_rows": args.max_rows,
               "data": str(args.data)}
    if valid is not None:
        logits = model.predict(*valid_inputs)
        logits = logits[:, 0] if logits.ndim == 2 else logits
        y = valid.labels.astype(np.float64)
        summary["valid"] = {"samples": len(valid), "auc": auc(logits, y),
                            "log_loss": float(np.mean(np.logaddexp(0, logits) - y * logits))}
    save_weights(args.out, model, {k: v for k, v in summary.items() if k != "valid"})
    if args.json:
        print_json(summary)
    else:
        print(f"trained {spec.name} on {len(records):,} samples: loss per epoch "
              + ", ".join(f"{v:.4f}" for v in losses) + f"; weights in {args.out}")
        if valid is not None:
            print(f"validation ({len(valid):,} samples): log loss {summary['valid']['log_loss']:.4f}, "
                  f"AUC {summary['valid']['auc']:.4f}")
    return 0
