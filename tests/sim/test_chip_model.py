"""The whole chip's timed model (rpaccel.sim.model.chip): the functional model's responses, the simulation's
cycles, as a Device. Its error against the RTL is measured by ``rpaccel bench model`` (not asserted here)."""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.host.driver.chip import ChipSetup, Schedule, Stage, compile_queries, decode_responses, expected_responses
from rpaccel.host.driver.codec import to_ints
from rpaccel.host.driver.device import TimedTrace
from rpaccel.sim.chip import program_words, run_program
from rpaccel.sim.model.chip import ModelDevice, TimedChip
from rpaccel.sim.model.functional import FunctionalChip

from host_fixtures import tiny_data, trained_dot_pair

TINY = preset("tiny")


@pytest.fixture(scope="module")
def program():
    a, b = trained_dot_pair()
    setup = ChipSetup(TINY, [a, b])
    queries = [setup.add_query({m: m.inputs(tiny_data(m.spec, n, start=7000 + n)) for m in (a, b)}) for n in (90, 60)]
    return compile_queries(setup, [Stage(a, k=40), Stage(b, k=5)], queries, Schedule("rpaccel", sub_batch=8))


def test_the_model_device_answers_as_the_golden_model(program):
    run = run_program(program, device=ModelDevice(TINY))
    assert run.mismatches() == {}
    assert (np.diff(run.cycles) >= 1).all()          # one response a cycle, in the order they leave
    assert run.cycles[0] > 0


def test_the_timed_model_gives_the_functional_models_responses(program):
    words = program_words(program, expected_responses(program))
    timed = TimedChip(TINY).run(words)
    functional = FunctionalChip(TINY).run(words)
    g = program.setup.geometry
    ours, theirs = decode_responses(g, timed.responses), decode_responses(g, functional.responses)
    for tag in program.tags:
        assert ours.records(tag) == theirs.records(tag)


def test_a_later_arrival_starts_later_and_takes_as_long(program):
    """The same program held until cycle 100,000 and until cycle 200,000 (the chip idle long before either): every
    response at or after the arrival, each as many cycles after it in both runs."""
    words = to_ints(program_words(program, expected_responses(program)))
    count = len(expected_responses(program).responses)
    runs = [ModelDevice(TINY).run(TimedTrace().send("cmd", words, at=at).expect("rsp", count)).outputs["rsp"].cycles
            for at in (100_000, 200_000)]
    assert runs[0][0] >= 100_000
    assert (runs[1] - 200_000 == runs[0] - 100_000).all()


def test_every_run_of_the_model_device_starts_from_reset(program):
    """Two runs of one ModelDevice answer alike (the chip's memory, counts and split do not carry over)."""
    words = to_ints(program_words(program, expected_responses(program)))
    count = len(expected_responses(program).responses)
    device = ModelDevice(TINY)
    first, second = (device.run(TimedTrace().send("cmd", words).expect("rsp", count)).outputs["rsp"]
                     for _ in range(2))
    assert first.words == second.words and (first.cycles == second.cycles).all()
