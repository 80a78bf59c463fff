"""``rpaccel quantize``: post-training int8 quantisation of a trained model, calibrated on data."""

from .common import CLIError, print_json
from .hostcommon import add_quiet, check_files, host_errors, positive_int


def register(subparsers):
    p = subparsers.add_parser("quantize", help="quantise trained weights to int8 (the integer reference model)",
                              description=__doc__ + " Writes int8 weights and embedding rows, int32 biases and "
                              "per-layer/per-table (m, s) (see docs/numerics.md); deterministic.")
    p.add_argument("--weights", required=True,
                   help="weights file from rpaccel train (refused if a parameter is NaN or infinite)")
    p.add_argument("--data", required=True, help="calibration data (its first --samples samples are used)")
    p.add_argument("--out", required=True, help="quantised model file to write (.npz)")
    p.add_argument("--samples", type=positive_int, default=8192, help="calibration samples (default 8192)")
    p.add_argument("--skip", type=int, default=0, help="samples of the data file to skip first (default 0)")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="percentile of activation magnitudes mapped to 127 (default 99.99; 100 = maximum)")
    p.add_argument("--json", action="store_true", help="print the layers as JSON")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args):
    from ..host.data import load_records
    from ..host.quant import quantize, save_quantized
    from ..host.train import load_weights

    if not 50 <= args.percentile <= 100:
        raise CLIError(f"--percentile must be in [50, 100], not {args.percentile}")
    if args.skip < 0:
        raise CLIError(f"--skip must be >= 0, not {args.skip}")
    check_files([("--weights", args.weights), ("--data", args.data)], [("--out", args.out)])
    with host_errors():
        model, meta = load_weights(args.weights)
        records = load_records(args.data, limit=args.samples, skip=args.skip)
        qmodel = quantize(model, records, percentile=args.percentile)
    save_quantized(args.out, qmodel, {"weights": str(args.weights), "calibration": {
        "data": str(args.data), "samples": len(records), "skip": args.skip, "percentile": args.percentile},
        "train": meta})
    rows = [{"layer": layer.name, "shape": list(layer.shape), "m": layer.m, "s": layer.s, "relu": layer.relu,
             "raw": layer.raw} for layer in qmodel.layers]
    if args.json:
        print_json({"model": qmodel.spec.name, "layers": rows, "pool_m": qmodel.pool_m.tolist(),
                    "pool_s": qmodel.pool_s.tolist(), "inter_m": qmodel.inter_m, "inter_s": qmodel.inter_s})
    else:
        print(f"quantised {qmodel.spec.name} on {len(records):,} calibration samples -> {args.out}")
        for row in rows:
            kind = "raw int32 logit" if row["raw"] else f"m={row['m']} s={row['s']}" + (" relu" if row["relu"] else "")
            print(f"  {row['layer']:<10} {row['shape'][1]:>5} -> {row['shape'][0]:<5} {kind}")
        if qmodel.spec.interaction == "dot":
            print(f"  interaction pairs m={qmodel.inter_m} s={qmodel.inter_s}")
    return 0
