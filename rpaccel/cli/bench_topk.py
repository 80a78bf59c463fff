"""``rpaccel bench topk``: throughput, latency, area and Fmax of the top-k units (:mod:`rpaccel.experiments.topk`)."""

from ..experiments.topk import run_topk
from .bench import Bench, finish
from .common import add_config_arguments, config_from_args, non_negative_int, positive_ints, say


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--k-max", default="16,64,256", help="comma-separated K_MAX values (default 16,64,256)")
    p.add_argument("--candidates", type=int, default=4096,
                   help="candidates per query in the throughput runs (default 4096, RecPipe's first stage)")
    p.add_argument("--queries", type=int, default=16, help="queries per throughput run (default 16)")
    p.add_argument("--lanes", default="1,2", help="lane counts simulated at the preset's K_MAX (default 1,2)")
    p.add_argument("--seed", type=non_negative_int, default=1,
                   help="random seed and nextpnr placement seed (default 1)")
    p.add_argument("--no-synth", action="store_true", help="skip synthesis (simulation only)")
    p.add_argument("--pnr-timeout", type=float, default=1800.0,
                   help="seconds one unit's synthesis and place-and-route may take; a unit cut short is reported "
                        "with Yosys's cell counts and no Fmax (default 1800)")
    p.add_argument("--build-dir", default="build/synth",
                   help="folder for the synthesis builds (default build/synth; one subfolder per K_MAX)")


def bench_topk(args):
    report = run_topk(config_from_args(args), k_max=positive_ints(args.k_max, "--k-max"),
                      lanes=positive_ints(args.lanes, "--lanes"), candidates=args.candidates, queries=args.queries,
                      seed=args.seed, synth=not args.no_synth, pnr_timeout=args.pnr_timeout,
                      build_dir=args.build_dir, progress=say)
    return finish(args, report)


BENCH = Bench("topk", "top-k units: sustained candidates per cycle, latency, and LUT/FF/Fmax on the ECP5-85F for "
              "K_MAX = 16, 64, 256", _arguments, bench_topk)
