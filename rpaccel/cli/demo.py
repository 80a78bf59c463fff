"""``rpaccel demo``: the main job on a small default.

Until the accelerator exists, it runs the blocks built so far on Verilator through their cocotb scoreboards
(random inputs, random idle cycles and back-pressure, every output checked against the golden model) and prints
their figures.
"""

from ..results import format_table
from .common import CLIError, CommandFailed, print_json


def register(subparsers):
    p = subparsers.add_parser("demo", help="run the built blocks on Verilator against their golden models",
                              description=__doc__)
    p.add_argument("--count", type=int, default=10_000, help="random transactions per block (default 10000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--pause", type=float, default=0.3,
                   help="probability of an idle input / back-pressured output cycle (default 0.3)")
    p.add_argument("--waves", action="store_true", help="dump FST waveforms into ./waves")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run_blocks(args):
    """Run every block scoreboard; return the reports (shared with ``rpaccel bench blocks``)."""
    from ..sim.suite import SCOREBOARDS, run_scoreboard
    from ..sim.verilator import CocotbFailure, ToolNotFound

    if args.count <= 0:
        raise CLIError(f"--count must be a positive integer, not {args.count}")
    if not 0.0 <= args.pause < 1.0:
        raise CLIError(f"--pause must be in [0, 1), not {args.pause}")
    reports = []
    for name in SCOREBOARDS:
        try:
            reports.append(run_scoreboard(name, count=args.count, seed=args.seed, pause=args.pause,
                                          waves=args.waves or None))
        except (CocotbFailure, ToolNotFound) as error:
            raise CommandFailed(str(error)) from None
    return reports


def table(reports):
    rows = []
    for r in reports:
        transfers = r["transactions"]
        rows.append([r["block"], transfers, r["mismatches"], r["cycles"], transfers / r["cycles"],
                     r["cycles_per_second"], r["build_seconds"]])
    return format_table(["block", "transactions", "mismatches", "cycles", "transactions/cycle",
                         "sim cycles/s", "build s"], rows)


def run(args):
    reports = run_blocks(args)
    if args.json:
        print_json(reports)
        return 0
    print(f"rpaccel demo: blocks on {reports[0]['simulator']}, random inputs with "
          f"{args.pause:.0%} idle input and back-pressured output cycles, seed {args.seed}\n")
    print(table(reports))
    print("\nEvery output matched the golden model (bit-exact)." if all(r["mismatches"] == 0 for r in reports)
          else "\nMISMATCHES: see above.")
    for r in reports:
        if r.get("waves"):
            print(f"waveform: {r['waves']}")
    return 0
