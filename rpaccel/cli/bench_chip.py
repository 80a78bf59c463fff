"""``rpaccel bench chip``: do the preset's large units fit one ECP5-85F together? (:mod:`rpaccel.experiments.chip`)"""

from ..experiments.chip import run_chip, run_chip_routed
from .bench import Bench, finish
from .common import add_config_arguments, config_from_args, say


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--whole", action="store_true",
                   help="pack the units as one design (rpaccel synth parts) instead of adding up their packings")
    p.add_argument("--accel", action="store_true",
                   help="place and route the whole chip (rpaccel synth accel) and report Fmax, area, critical path")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (--accel; default 1)")
    p.add_argument("--router", choices=("router1", "router2"), help="nextpnr router (--accel)")
    p.add_argument("--placer", choices=("heap", "static", "sa"), help="nextpnr placer (--accel)")
    p.add_argument("--density", type=float, metavar="FRACTION",
                   help="largest placement density of the heap placer (--accel; nextpnr's default 0.9)")
    p.add_argument("--clock", type=float, metavar="MHZ",
                   help="clock constraint for place-and-route (--accel; default: the preset's clock)")
    p.add_argument("--pnr-timeout", type=int, help="seconds for synthesis and place-and-route (--accel)")
    p.add_argument("--build-dir", default="build/bench-chip", help="build folder (default build/bench-chip)")
    p.add_argument("--from-build", metavar="DIR",
                   help="run nothing: summarise the place-and-route that finished in DIR (--accel; the options "
                        "above say how it was run: --router, --placer, --density, --seed, --clock)")


def bench_chip(args):
    config = config_from_args(args)
    if args.accel:
        return finish(args, run_chip_routed(config, seed=args.seed, router=args.router, placer=args.placer,
                                            density=args.density, clock_mhz=args.clock, timeout=args.pnr_timeout,
                                            build_dir=f"{args.build_dir}/accel", from_build=args.from_build,
                                            progress=say))
    return finish(args, run_chip(config, whole=args.whole, build_dir=args.build_dir, progress=say))


BENCH = Bench("chip", "the preset's units on the ECP5-85F: do they fit together (--accel: the whole chip placed "
              "and routed)", _arguments, bench_chip)
