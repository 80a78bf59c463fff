"""``rpaccel bench replay``: the CPU baseline under MLPerf LoadGen at several loads, beside the queueing simulation
with the service time measured here (:func:`rpaccel.experiments.replay.run_replay_bench`), and a short replay on the
chip's RTL, its timed model or both, compared query by query
(:func:`rpaccel.experiments.replay.run_replay_chip_bench`), and issue 21's scale on the timed model, window by window
(:func:`rpaccel.experiments.replay.run_replay_scale_bench`)."""

from ..experiments import combine
from ..experiments.replay import run_replay_bench, run_replay_chip_bench, run_replay_scale_bench
from .bench import Bench, finish
from .common import CLIError, add_config_arguments, config_from_args, non_negative_int, say
from .hostcommon import positive_int


def _shares(text):
    import argparse

    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--parts", default="cpu,rtl",
                   help="any of cpu (LoadGen beside the simulation), rtl (a short replay on the chip's RTL) and "
                        "model (the same on the chip's timed model; with rtl, compared query by query), scale "
                        "(RecPipe's 2-stage queries of 4,096 on the timed model, window by window: host time per "
                        "query, projected to 100,000) (default cpu,rtl)")
    p.add_argument("--scale-queries", type=positive_int, default=24,
                   help="queries of the scale part (default 24)")
    p.add_argument("--window", type=positive_int, default=8, help="the scale part's window (default 8)")
    p.add_argument("--overlap", type=non_negative_int, default=2,
                   help="the scale part's overlap on either side of a window (default 2)")
    p.add_argument("--rtl-queries", type=positive_int, default=8,
                   help="queries of the rtl and model parts (default 8)")
    p.add_argument("--pipeline", default="rm-small:1024:128,rm-large:128:16",
                   help="stages MODEL:ITEMS:K,... (default rm-small:1024:128,rm-large:128:16)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes and simulated cores (default 1: two compute processes on this 2-vCPU "
                        "machine slow each other several times over, which the simulation does not model)")
    p.add_argument("--utilisations", type=_shares, default=[0.3, 0.6, 0.8],
                   help="offered loads as shares of the measured capacity (default 0.3,0.6,0.8)")
    p.add_argument("--queries", type=positive_int, default=16, help="LoadGen's working set (default 16)")
    p.add_argument("--min-queries", type=positive_int, default=300, help="LoadGen's minimum queries (default 300)")
    p.add_argument("--min-duration", type=float, default=10.0, help="LoadGen's minimum seconds (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed (default 1)")


def run(args):
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - {"cpu", "rtl", "model", "scale"})
    if unknown or not parts:
        raise CLIError(f"--parts must name any of cpu, rtl, model and scale, not {args.parts!r}")
    progress = None if args.json else say
    reports = []
    if "cpu" in parts:
        reports.append(run_replay_bench(pipeline=args.pipeline, workers=args.workers, utilisations=args.utilisations,
                                        queries=args.queries, min_queries=args.min_queries,
                                        min_duration_s=args.min_duration, seed=args.seed, progress=progress))
    chip = [backend for backend in ("rtl", "model") if backend in parts]
    if chip:
        reports.append(run_replay_chip_bench(config_from_args(args), backends=chip, pipeline=args.pipeline,
                                             queries=args.rtl_queries, seed=args.seed, progress=progress))
    if "scale" in parts:
        reports.append(run_replay_scale_bench(config_from_args(args), queries=args.scale_queries, window=args.window,
                                              overlap=args.overlap, seed=args.seed, progress=progress))
    return finish(args, combine(*reports))


BENCH = Bench("replay", "the CPU baseline under LoadGen beside the queueing simulation; a short replay on the RTL "
              "and on the timed model; replays at scale on the timed model",
              _arguments, run)
