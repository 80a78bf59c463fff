"""The block scoreboards: which bench checks which component, run on Verilator.

Used by the tests, by ``rpaccel demo`` and by ``rpaccel bench blocks``, so all three run the same benches.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..rtl.pe import ProcessingElement
from ..rtl.postproc import PostProcessor
from .verilator import run_cocotb, verilator_version
from .verilog import generate_verilog

__all__ = ["SCOREBOARDS", "Scoreboard", "run_scoreboard"]


@dataclass(frozen=True)
class Scoreboard:
    """A component and the cocotb bench that checks it against its golden model.

    Attributes
    ----------
    name : str
        Short name (as in the synthesis catalog).
    factory : callable
        Builds the component (no arguments).
    module : str
        The cocotb bench module.
    unit : str
        What the bench's ``count`` counts.
    """

    name: str
    factory: Callable
    module: str
    unit: str


SCOREBOARDS = {s.name: s for s in [
    Scoreboard("pe", ProcessingElement, "rpaccel.sim.benches.pe", "cycles"),
    Scoreboard("postproc", PostProcessor, "rpaccel.sim.benches.postproc", "transactions"),
]}


def run_scoreboard(name, *, count, seed=1, pause=0.3, quiet=True, waves=None):
    """Run the scoreboard ``name`` with ``count`` random transactions; return its report with run details.

    ``pause`` is the probability of an idle input cycle and of a back-pressured output cycle (for the PE: of a
    stalled cycle). Raises :class:`~rpaccel.sim.verilator.CocotbFailure` on any mismatch.
    """
    board = SCOREBOARDS[name]
    args = {"count": count, "seed": seed, "in_pause": pause, "out_pause": pause, "stall": pause}
    result = run_cocotb(generate_verilog(board.factory), board.module, args=args, quiet=quiet, waves=waves,
                        name=f"{name}-scoreboard")
    return {"block": name, **result.report, "build_seconds": round(result.build_seconds, 2),
            "simulator": verilator_version(), "waves": str(result.waves) if result.waves else None,
            "cocotb_tests": [asdict(test) for test in result.tests]}
