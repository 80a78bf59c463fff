"""The block scoreboards on Verilator, and the simulation speed of the two harnesses (``rpaccel bench blocks``)."""

import time

from ..results import format_table
from .report import ExperimentFailed, Report, Section, check_fraction, check_positive, check_seed

__all__ = ["run_blocks", "run_scoreboards"]


def run_scoreboards(*, count=10_000, seed=1, pause=0.3, waves=None):
    """Run every block scoreboard (:data:`rpaccel.sim.suite.SCOREBOARDS`) through cocotb; return their reports.

    Parameters
    ----------
    count : int
        Random transactions per block.
    seed : int
        Random seed.
    pause : float
        Probability of an idle input cycle and of a back-pressured output cycle.
    waves : bool, optional
        Dump FST waveforms (default: as ``RPACCEL_WAVES`` says).

    Raises
    ------
    ExperimentFailed
        If a scoreboard finds a mismatch or Verilator is missing.
    """
    from ..sim.suite import SCOREBOARDS, run_scoreboard
    from ..sim.verilator import CocotbFailure, ToolNotFound

    check_positive(count=count)
    check_seed(seed)
    check_fraction("pause", pause)
    reports = []
    for name in SCOREBOARDS:
        try:
            reports.append(run_scoreboard(name, count=count, seed=seed, pause=pause, waves=waves or None))
        except (CocotbFailure, ToolNotFound) as error:
            raise ExperimentFailed(str(error)) from None
    return reports


def run_blocks(*, count=10_000, player_count=200_000, seed=1, pause=0.3):
    """The block scoreboards under cocotb, and a long post-processor run through the file-driven player.

    Parameters
    ----------
    count : int
        Transactions per block for the cocotb scoreboards.
    player_count : int
        Transactions of the post-processor through the player.
    seed : int
        Random seed.
    pause : float
        Probability of an idle input / back-pressured output cycle.

    Returns
    -------
    Report
        Rows per harness (mismatches, cycles, simulated cycles per second), the ``blocks-harness`` section;
        a failure if the player's outputs differ from the golden model.
    """
    import numpy as np

    from ..rtl.postproc import PostProcessor
    from ..sim.golden.postproc import postprocess_payloads, random_postprocess_payloads
    from ..sim.player import Player

    check_positive(count=count, player_count=player_count)
    reports = run_scoreboards(count=count, seed=seed, pause=pause, waves=False)
    rows = [[r["block"], "cocotb drivers, Python every cycle", r["transactions"], r["mismatches"], r["cycles"],
             r["cycles_per_second"]] for r in reports]

    payloads = random_postprocess_payloads(np.random.default_rng(seed), player_count)
    expected = postprocess_payloads(payloads)
    started = time.perf_counter()
    result = Player(PostProcessor).run({"i": payloads}, expect={"o": len(payloads)}, pause=pause, seed=seed)
    total = time.perf_counter() - started
    mismatches = sum(a != b for a, b in zip(result.outputs["o"], expected))
    rows.append(["postproc", "player, Python woken once", len(payloads), mismatches, result.cycles,
                 result.cycles_per_second])
    failures = ((f"post-processor player run: {mismatches} mismatches against the golden model",)
                if mismatches else ())
    data = {"scoreboards": reports, "player": {"transactions": len(payloads), "cycles": result.cycles,
                                               "cycles_per_second": result.cycles_per_second,
                                               "total_seconds": total}}
    table = format_table(["block", "harness", "transactions", "mismatches", "cycles", "sim cycles/s"], rows)
    notes = (f"Random inputs, seed {seed}, {pause:.0%} idle input and back-pressured output cycles; every "
             f"output compared with the golden model. Simulator: {reports[0]['simulator']}. The cocotb drivers "
             "wake Python twice per cycle per stream; the player (rpaccel.sim.player) moves the streams through "
             "files from a self-clocked Verilog testbench and wakes Python once per run. Its cycles/s count "
             f"simulation only; writing and reading the {len(payloads):,} payloads in Python took "
             f"{total - result.wall_seconds:.1f} s more.")
    section = Section("blocks-harness", "Block scoreboards and simulation speed on Verilator", table + "\n\n" + notes)
    return Report(rows=[dict(zip(("block", "harness", "transactions", "mismatches", "cycles", "cycles_per_second"),
                                 row)) for row in rows],
                  text=table, sections=(section,), data=data, failures=failures)
