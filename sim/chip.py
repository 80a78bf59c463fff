"""The chip (:class:`rpaccel.rtl.accel.top.RPAccel`) on Verilator: programs in, responses and their cycles out.

:func:`chip_device` builds the chip with the timed memory model inside (Verilog storage, so a large memory costs no
simulation time until it is used) behind a :class:`~rpaccel.sim.device.PlayerDevice`. :func:`run_program` sends a
compiled program (:func:`rpaccel.host.driver.chip.compile_queries`) after the memory image's MEM_WRITEs in one timed
trace and returns the decoded responses with the cycle each left the chip.

A baseline program has a host step between stages (the host sorts a stage's logits and writes the next stage's
candidate list). One run cannot wait for the host, so the lists are those of the golden model
(:func:`~rpaccel.host.driver.chip.expected_responses`), written by MEM_WRITEs between the steps (barriers: the
chip finishes the stage first, as it would wait for the host); :meth:`ChipRun.check_lists` then checks that the
chip's own logits give the same lists, so a chip whose stage-1 logits were wrong cannot pass on the golden lists.
"""

from dataclasses import dataclass

import numpy as np

from ..host.driver.chip import ChipEncoder, decode_responses, expected_responses
from ..host.driver.device import TimedTrace
from ..numeric import topk
from ..rtl.accel.isa import ResponseKind
from ..rtl.accel.top import RPAccel
from .device import PlayerDevice

__all__ = ["ChipRun", "chip_device", "program_words", "run_program", "run_words"]


def chip_device(config, *, mem_lines=None):
    """A :class:`~rpaccel.sim.device.PlayerDevice` of the chip of ``config`` with its memory model inside."""
    return PlayerDevice(RPAccel, config, memory="model", mem_lines=mem_lines, storage="verilog")


@dataclass
class ChipRun:
    """What the chip answered to a program.

    Attributes
    ----------
    responses : rpaccel.host.driver.chip.Responses
    cycles : numpy.ndarray
        The cycle each response left the chip.
    total_cycles : int
        Cycles of the whole run (memory loading included).
    wall_seconds : float
    expected : rpaccel.host.driver.chip.Expected
        The golden model's answers.
    program : rpaccel.host.driver.chip.Program
    """

    responses: object
    cycles: np.ndarray
    total_cycles: int
    wall_seconds: float
    expected: object
    program: object

    def mismatches(self):
        """Per tag, whether the responses equal the golden model's (``{tag: message}`` of those that do not)."""
        out = {}
        for tag in sorted(set(self.program.tags)):
            got, want = self.responses.records(tag), self.expected.responses.records(tag)
            if got != want:
                first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                out[tag] = (f"tag {tag}: {len(got)} responses, {len(want)} expected; first difference at "
                            f"{first}: {got[first] if first < len(got) else None} != "
                            f"{want[first] if first < len(want) else None}")
        return out

    def check_lists(self):
        """Baseline: the lists the host writes, recomputed from the chip's own LOGIT responses, equal those sent
        (the golden model's); returns the stages whose lists differ."""
        program, wrong = self.program, []
        if program.mode != "baseline":
            return wrong
        for (q, s), sent in self.expected.lists.items():
            tag = program.tags[q]
            rows = np.flatnonzero((self.responses.kind == ResponseKind.LOGIT.value) & (self.responses.tag == tag))
            # The stage's logits: the responses of stage s - 1 of the query, in order.
            counts = program.items[q]
            start = sum(counts[:s - 1])
            scores = self.responses.score[rows[start:start + counts[s - 1]]]
            indices = self.responses.index[rows[start:start + counts[s - 1]]]
            if len(scores) != counts[s - 1]:
                wrong.append((q, s))
                continue
            _, best = topk(scores, program.stages[s - 1].k, indices)
            if not np.array_equal(best[:len(sent)], np.asarray(sent)):
                wrong.append((q, s))
        return wrong


def program_words(program, expected=None, encoder=None):
    """The command words of ``program`` after its memory image: the setup's MEM_WRITEs, then each step (a
    baseline step after the MEM_WRITEs of its candidate lists, the golden model's)."""
    encoder = encoder or ChipEncoder(program.setup.geometry)
    expected = expected if expected is not None else expected_responses(program)
    parts = [program.setup.load_words(encoder)]
    for step in program.steps:
        if step.lists:
            parts.append(step.list_words(encoder, expected.lists[step.query, step.stage]))
        parts.append(encoder.encode(step.records))
    return np.concatenate(parts)


def run_program(program, *, device=None, pause=0.0, seed=1, max_cycles=20_000_000):
    """Run ``program`` on the chip (RTL, Verilator) and return a :class:`ChipRun`.

    Parameters
    ----------
    program : rpaccel.host.driver.chip.Program
    device : PlayerDevice, optional
        The chip (default: :func:`chip_device` of the program's configuration).
    pause : float or dict
        Random idle cycles on ``cmd`` and back-pressure on ``rsp`` (probability per cycle, or per port).
    seed : int
    max_cycles : int
    """
    geometry = program.setup.geometry
    device = device or chip_device(geometry.config)
    expected = expected_responses(program)
    responses, cycles, total, wall = run_words(device, geometry, program_words(program, expected),
                                               len(expected.responses), pause=pause, seed=seed,
                                               max_cycles=max_cycles)
    return ChipRun(responses=responses, cycles=cycles, total_cycles=total, wall_seconds=wall, expected=expected,
                   program=program)


def run_words(device, geometry, words, expect, *, pause=0.0, seed=1, max_cycles=20_000_000):
    """Send packed command ``words`` (``(n, limbs)``) to the chip ``device`` and collect ``expect`` responses.

    Returns
    -------
    (Responses, numpy.ndarray, int, float)
        The responses, the cycle each left the chip, the run's cycles and its wall-clock seconds.
    """
    trace = TimedTrace().send("cmd", words).expect("rsp", expect)
    result = device.run(trace, pause=pause, seed=seed, max_cycles=max_cycles)
    out = result.outputs["rsp"]
    return (decode_responses(geometry, out.words), np.asarray(out.cycles), result.cycles, result.wall_seconds)
