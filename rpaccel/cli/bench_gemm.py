"""``rpaccel bench gemm``: the MLP engine on RecPipe's bottom MLPs (:mod:`rpaccel.experiments.gemm`)."""

from ..experiments import combine
from ..experiments.gemm import BATCHES, MODELS, SYNTH_RUNS, run_gemm, run_gemm_synth, synth_runs
from .bench import Bench, finish
from .common import CLIError, add_config_arguments, config_from_args, config_given, non_negative_int, positive_ints, say


def _arguments(p):
    from ..config import preset

    add_config_arguments(p)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--splits", help="comma-separated splits (default: every split of the preset)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="probability of idle input / back-pressured output cycles (default 0: utilisation)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed of weights and inputs (default 1)")
    p.add_argument("--cocotb", action="store_true",
                   help="also run RM-large at batch 64 under cocotb to compare the two Verilator harnesses")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise the PEs, the array and the engine (small on ECP5-85F, tiny on iCE40 UP5K; "
                        "with --preset/--set, that configuration's runs on its target)")
    p.add_argument("--synth-runs", metavar="RUNS",
                   help="comma-separated COMPONENT@TARGET of the --synth runs to do (default: all of "
                        + ", ".join(f"{c}@{preset(name).target}" for c, name in SYNTH_RUNS) + ")")
    p.add_argument("--synth-only", action="store_true",
                   help="only the synthesis of --synth, no simulation (writes only the synthesis section)")
    p.add_argument("--router", help="nextpnr router for the ECP5 engine build: router1 (nextpnr's default) or "
                                    "router2")
    p.add_argument("--placer", help="nextpnr placer for the ECP5 engine build: heap (nextpnr's default), static "
                                    "or sa")
    p.add_argument("--pnr-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a synthesis run after SECONDS (synthesis, placement and routing together); its row "
                        "then has Yosys's cell counts and nextpnr's estimate after placement (default: no limit)")


def bench_gemm(args):
    config = config_from_args(args)
    reports = []
    if not args.synth_only:
        reports.append(run_gemm(config, models=args.models.split(","),
                                batches=positive_ints(args.batches, "--batches"),
                                splits=positive_ints(args.splits, "--splits") if args.splits else None,
                                pause=args.pause, seed=args.seed, cocotb=args.cocotb, progress=say))
    if args.synth or args.synth_only:
        runs = synth_runs(config if config_given(args) else None)
        if args.synth_runs:
            known = {f"{component}@{cfg.target}": (component, cfg) for component, cfg in runs}
            wanted = args.synth_runs.split(",")
            for run in wanted:
                if run not in known:
                    raise CLIError(f"--synth-runs: unknown run {run!r} (known: {', '.join(known)})")
            runs = [known[run] for run in wanted]
        reports.append(run_gemm_synth(runs, seed=args.seed, pnr_timeout=args.pnr_timeout, router=args.router,
                                      placer=args.placer, progress=say))
    return finish(args, combine(*reports))


BENCH = Bench("gemm", "the MLP engine on RM-large/RM-small bottom MLPs: cycles, utilisation, sim speed (Verilator)",
              _arguments, bench_gemm)
