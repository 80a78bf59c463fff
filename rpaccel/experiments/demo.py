"""The main job on a small default (``rpaccel demo``).

Until the accelerator's top level exists, it runs what is built on Verilator, every output checked against the
golden models, with random idle input cycles and back-pressure:

* the block scoreboards (processing element, post-processor) through cocotb, and
* a ranking query through two blocks on the RTL, glued by the host: the MLP engine scores ``candidates``
  candidates with a random int8 scoring MLP whose last layer emits raw int32 logits, and a top-k unit of the
  configuration's ``K_MAX`` keeps the ``k`` best of those logits, sorted.
"""

from ..results import format_table
from .blocks import run_scoreboards
from .report import ExperimentError, ExperimentFailed, Report, check_fraction, check_positive, check_seed

__all__ = ["SCORING_MLP", "run_demo", "run_query"]

#: Layer widths of the demo's scoring MLP (13 dense features, as Criteo's; one raw int32 logit).
SCORING_MLP = (13, 64, 32, 1)


def _check_query(config, candidates, k, seed, pause):
    """Check the query's parameters before anything runs; return ``k``."""
    k = config.k_max if k is None else k
    check_positive(candidates=candidates)
    if not isinstance(k, int) or not 1 <= k <= config.k_max:
        raise ExperimentError("k", f"must be between 1 and the {config.name} preset's K_MAX {config.k_max}, not {k}")
    check_seed(seed)
    check_fraction("pause", pause)
    return k


def run_query(config, *, candidates=1024, k=None, seed=1, pause=0.3):
    """One ranking query on the RTL: the MLP engine scores, a top-k unit selects; both checked.

    Parameters
    ----------
    config : AccelConfig
        The configuration of the engine and the top-k unit.
    candidates : int
        Candidates of the query.
    k : int, optional
        Results kept (default: the configuration's ``k_max``).
    seed : int
        Random seed of the MLP, the features and the idle cycles.
    pause : float
        Probability of an idle input / back-pressured output cycle.

    Returns
    -------
    dict
        The query, its stages (transactions, mismatches, cycles, simulation speed), whether the RTL's ranking
        equals the golden model's (``ranking_matches_golden``), and the first five results.
    """
    import numpy as np

    from ..host.driver.mlp import MLPError, plan_engine
    from ..host.driver.topk import pack_elements, unpack_results
    from ..host.reference import mlp_forward
    from ..numeric import topk
    from ..rtl.topk import TopKUnit
    from ..sim.golden.mlp import random_input, random_mlp
    from ..sim.golden.topk import Query, stream_elements, unit_model
    from ..sim.mlp_harness import play_plan
    from ..sim.player import Player
    from ..sim.verilator import ToolNotFound

    k = _check_query(config, candidates, k, seed, pause)
    rng = np.random.default_rng(seed)
    layers = random_mlp(rng, SCORING_MLP, raw_last=True)
    features = random_input(rng, candidates, SCORING_MLP[0])
    try:
        plan = plan_engine(config, 1, {0: (layers, features)})
    except MLPError as error:
        raise ExperimentError(None, f"the scoring MLP on the {config.name} configuration: {error}") from None
    try:
        outputs, mlp_run = play_plan(config, plan, pause=pause, seed=seed)
        logits = np.asarray(outputs[0], dtype=np.int64)[:, 0]
        golden_logits = mlp_forward(layers, features)[:, 0]
        mlp_mismatches = int(np.sum(logits != golden_logits))
        elements = stream_elements([Query.make(logits, k)], k_max=config.k_max)
        expected = unit_model(elements, config.k_max)
        topk_run = Player(TopKUnit, config.k_max).run(
            {"i": pack_elements(elements, config.k_max)}, expect={"o": len(expected)}, pause=pause,
            seed=seed, packed=True)
    except ToolNotFound as error:
        raise ExperimentFailed(str(error)) from None
    got = unpack_results(topk_run.outputs["o"])
    topk_mismatches = sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
    # End to end: the RTL's ranking against the golden logits' top k (same tie rule: lower index first).
    best_scores, best_indices = topk(golden_logits, k, np.arange(candidates))
    ranking = [(r["score"], r["index"]) for r in got]
    end_to_end = ranking == list(zip(best_scores.tolist(), best_indices.tolist()))
    return {
        "candidates": candidates, "k": k, "mlp": "-".join(map(str, SCORING_MLP)), "preset": config.name,
        "pause": pause, "seed": seed,
        "stages": [
            {"stage": f"MLP engine ({config.array_rows}x{config.array_cols} array), scores",
             "transactions": candidates, "mismatches": mlp_mismatches, "cycles": mlp_run.cycles,
             "sim_cycles_per_s": mlp_run.cycles_per_second},
            {"stage": f"top-k unit (K_MAX {config.k_max}), best {k} of {candidates}",
             "transactions": len(got), "mismatches": topk_mismatches, "cycles": topk_run.cycles,
             "sim_cycles_per_s": topk_run.cycles_per_second},
        ],
        "ranking_matches_golden": end_to_end and mlp_mismatches == 0 and topk_mismatches == 0,
        "top": ranking[:5],
    }


def _blocks_table(reports):
    """The scoreboards' table: transactions, mismatches, cycles, simulation speed, build time."""
    rows = []
    for r in reports:
        transfers = r["transactions"]
        rows.append([r["block"], transfers, r["mismatches"], r["cycles"], transfers / r["cycles"],
                     r["cycles_per_second"], r["build_seconds"]])
    return format_table(["block", "transactions", "mismatches", "cycles", "transactions/cycle",
                         "sim cycles/s", "build s"], rows)


def run_demo(config, *, count=10_000, candidates=1024, k=None, seed=1, pause=0.3, waves=False):
    """The block scoreboards, then a ranking query on the RTL (:func:`run_query`).

    Parameters
    ----------
    config : AccelConfig
        The configuration of the query's engine and top-k unit.
    count : int
        Random transactions per block scoreboard.
    candidates, k : int
        The query's candidates and results (``k`` default: the configuration's ``k_max``).
    seed : int
        Random seed.
    pause : float
        Probability of an idle input / back-pressured output cycle.
    waves : bool
        Dump FST waveforms of the scoreboards into ``./waves``.

    Returns
    -------
    Report
        The scoreboards' rows; ``data`` holds them (``blocks``) and the query (``query``); a failure if the RTL's
        ranking differs from the golden model's.
    """
    _check_query(config, candidates, k, seed, pause)
    check_positive(count=count)
    reports = run_scoreboards(count=count, seed=seed, pause=pause, waves=waves)
    query = run_query(config, candidates=candidates, k=k, seed=seed, pause=pause)
    lines = [f"rpaccel demo: blocks on {reports[0]['simulator']}, random inputs with "
             f"{pause:.0%} idle input and back-pressured output cycles, seed {seed}\n", _blocks_table(reports),
             "\nEvery output matched the golden model (bit-exact)." if all(r["mismatches"] == 0 for r in reports)
             else "\nMISMATCHES: see above."]
    lines += [f"waveform: {r['waves']}" for r in reports if r.get("waves")]
    lines += [f"\nA ranking query on the RTL ({query['preset']} preset): {query['candidates']} candidates scored by a "
              f"{query['mlp']} int8 MLP on the MLP engine, the best {query['k']} kept by a top-k unit\n",
              format_table(["stage", "transactions", "mismatches", "cycles", "sim cycles/s"],
                           [[st["stage"], st["transactions"], st["mismatches"], st["cycles"], st["sim_cycles_per_s"]]
                            for st in query["stages"]])]
    top = ", ".join(f"#{index} ({score})" for score, index in query["top"])
    if query["ranking_matches_golden"]:
        lines.append(f"\nThe ranking equals the golden model's (bit-exact logits, same order). Best: {top}, ...")
        failures = ()
    else:
        lines.append("\nMISMATCH: the RTL's ranking differs from the golden model's.")
        failures = ("the RTL's ranking differs from the golden model's",)
    return Report(rows=reports, text="\n".join(lines), data={"blocks": reports, "query": query}, failures=failures)
