"""``rpaccel demo``: the main job on a small default.

Until the accelerator's top level exists, it runs what is built on Verilator, every output checked against the
golden models, with random idle input cycles and back-pressure:

* the block scoreboards (processing element, post-processor) through cocotb, and
* a ranking query through two blocks on the RTL, glued by the host: the MLP engine (``small`` preset) scores
  ``--candidates`` candidates with a random int8 scoring MLP whose last layer emits raw int32 logits, and a
  top-k unit of the preset's ``K_MAX`` keeps the ``k`` best of those logits, sorted.
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
    p.add_argument("--candidates", type=int, default=1024, help="candidates of the ranking query (default 1024)")
    p.add_argument("--k", type=int, default=None, help="results of the ranking query (default: the preset's K_MAX)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


#: Layer widths of the demo's scoring MLP (13 dense features, as Criteo's; one raw int32 logit).
SCORING_MLP = (13, 64, 32, 1)


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


def check_query_args(args, config):
    """Validate the query options before anything runs; return ``k``."""
    k = config.k_max if args.k is None else args.k
    if args.candidates <= 0:
        raise CLIError(f"--candidates must be a positive integer, not {args.candidates}")
    if not 1 <= k <= config.k_max:
        raise CLIError(f"--k must be between 1 and the small preset's K_MAX {config.k_max}, not {k}")
    return k


def run_query(args):
    """One ranking query on the RTL: MLP engine scores, top-k unit selects; both checked. Returns a report."""
    import numpy as np

    from ..config import preset
    from ..host.driver.mlp import plan_engine
    from ..host.driver.topk import pack_elements, unpack_results
    from ..host.reference import mlp_forward
    from ..numeric import topk
    from ..rtl.topk import TopKUnit
    from ..sim.golden.mlp import random_input, random_mlp
    from ..sim.golden.topk import Query, stream_elements, unit_model
    from ..sim.mlp_harness import play_plan
    from ..sim.player import Player
    from ..sim.verilator import ToolNotFound

    config = preset("small")
    k = check_query_args(args, config)
    rng = np.random.default_rng(args.seed)
    layers = random_mlp(rng, SCORING_MLP, raw_last=True)
    features = random_input(rng, args.candidates, SCORING_MLP[0])
    try:
        plan = plan_engine(config, 1, {0: (layers, features)})
        outputs, mlp_run = play_plan(config, plan, pause=args.pause, seed=args.seed)
        logits = np.asarray(outputs[0], dtype=np.int64)[:, 0]
        golden_logits = mlp_forward(layers, features)[:, 0]
        mlp_mismatches = int(np.sum(logits != golden_logits))
        elements = stream_elements([Query.make(logits, k)], k_max=config.k_max)
        expected = unit_model(elements, config.k_max)
        topk_run = Player(TopKUnit, config.k_max).run(
            {"i": pack_elements(elements, config.k_max)}, expect={"o": len(expected)}, pause=args.pause,
            seed=args.seed, packed=True)
    except ToolNotFound as error:
        raise CommandFailed(str(error)) from None
    got = unpack_results(topk_run.outputs["o"])
    topk_mismatches = sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
    # End to end: the RTL's ranking against the golden logits' top k (same tie rule: lower index first).
    best_scores, best_indices = topk(golden_logits, k, np.arange(args.candidates))
    ranking = [(r["score"], r["index"]) for r in got]
    end_to_end = ranking == list(zip(best_scores.tolist(), best_indices.tolist()))
    return {
        "candidates": args.candidates, "k": k, "mlp": "-".join(map(str, SCORING_MLP)), "preset": config.name,
        "pause": args.pause, "seed": args.seed,
        "stages": [
            {"stage": f"MLP engine ({config.array_rows}x{config.array_cols} array), scores",
             "transactions": args.candidates, "mismatches": mlp_mismatches, "cycles": mlp_run.cycles,
             "sim_cycles_per_s": mlp_run.cycles_per_second},
            {"stage": f"top-k unit (K_MAX {config.k_max}), best {k} of {args.candidates}",
             "transactions": len(got), "mismatches": topk_mismatches, "cycles": topk_run.cycles,
             "sim_cycles_per_s": topk_run.cycles_per_second},
        ],
        "ranking_matches_golden": end_to_end and mlp_mismatches == 0 and topk_mismatches == 0,
        "top": ranking[:5],
    }


def table(reports):
    rows = []
    for r in reports:
        transfers = r["transactions"]
        rows.append([r["block"], transfers, r["mismatches"], r["cycles"], transfers / r["cycles"],
                     r["cycles_per_second"], r["build_seconds"]])
    return format_table(["block", "transactions", "mismatches", "cycles", "transactions/cycle",
                         "sim cycles/s", "build s"], rows)


def run(args):
    from ..config import preset

    check_query_args(args, preset("small"))
    reports = run_blocks(args)
    query = run_query(args)
    if args.json:
        print_json({"blocks": reports, "query": query})
        return 0 if query["ranking_matches_golden"] else 1
    print(f"rpaccel demo: blocks on {reports[0]['simulator']}, random inputs with "
          f"{args.pause:.0%} idle input and back-pressured output cycles, seed {args.seed}\n")
    print(table(reports))
    print("\nEvery output matched the golden model (bit-exact)." if all(r["mismatches"] == 0 for r in reports)
          else "\nMISMATCHES: see above.")
    for r in reports:
        if r.get("waves"):
            print(f"waveform: {r['waves']}")
    print(f"\nA ranking query on the RTL ({query['preset']} preset): {query['candidates']} candidates scored by a "
          f"{query['mlp']} int8 MLP on the MLP engine, the best {query['k']} kept by a top-k unit\n")
    print(format_table(["stage", "transactions", "mismatches", "cycles", "sim cycles/s"],
                       [[st["stage"], st["transactions"], st["mismatches"], st["cycles"], st["sim_cycles_per_s"]]
                        for st in query["stages"]]))
    top = ", ".join(f"#{index} ({score})" for score, index in query["top"])
    if not query["ranking_matches_golden"]:
        print("\nMISMATCH: the RTL's ranking differs from the golden model's.")
        return 1
    print(f"\nThe ranking equals the golden model's (bit-exact logits, same order). Best: {top}, ...")
    return 0
