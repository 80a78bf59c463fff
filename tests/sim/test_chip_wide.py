"""Models without a bottom MLP (Wide & Deep) and multi-task models on the whole chip's timed model
(:class:`rpaccel.sim.model.chip.ModelDevice`): the chip's answers equal the golden model's, every logit
:func:`rpaccel.host.reference.run`'s (task 0's for a multi-task model). The RTL runs WnD in test_chip_rtl.py."""

import numpy as np
import pytest

from rpaccel.config import preset
from rpaccel.experiments.accel import train_models
from rpaccel.host.driver.chip import ChipSetup, Schedule, Stage, compile_queries
from rpaccel.host.models import get_model
from rpaccel.sim.chip import run_program
from rpaccel.sim.model.chip import ModelDevice

from host_fixtures import quantised, random_inputs, tiny_wnd

TINY = preset("tiny")


@pytest.fixture(scope="module")
def wide_models():
    return [quantised(tiny_wnd(dense=5, emb_dim=3)),
            quantised(tiny_wnd(name="tiny-mt-wnd", dense=6, top=(6, 5), tasks=2, tower=(4, 1)))]


def _logits(result, program, mode):
    """Every logit the chip answered for the program's one query, in candidate order."""
    if mode == "baseline":
        indices, scores = result.responses.logits(program.tags[0])
    else:
        scores, indices = np.array(result.responses.ranking(program.tags[0])).T
    return scores[np.argsort(indices)]


@pytest.mark.parametrize(("mode", "split"), [("rpaccel", 1), ("rpaccel", 4), ("baseline", 1)])
def test_tiny_wide_and_deep_and_towers_on_the_timed_model(wide_models, mode, split):
    rng = np.random.default_rng(split)
    for model in wide_models:
        setup = ChipSetup(TINY, [model])
        dense_q, ids = random_inputs(model.spec, 15, rng)       # negative dense inputs among them
        query = setup.add_query({model: (dense_q, ids)})
        program = compile_queries(setup, [Stage(model, k=TINY.k_max)], [query],
                                  Schedule(mode, split=split, sub_batch=4))
        result = run_program(program, device=ModelDevice(TINY))
        assert result.mismatches() == {}, model.spec.name
        logits = model.logits(dense_q, ids)
        assert np.array_equal(_logits(result, program, mode), logits[:, 0] if model.spec.tasks else logits)


def test_the_zoos_wide_and_deep_on_small_on_the_timed_model():
    """The zoo's WnD (tables capped at 200 rows) on ``small``: its first top layer streams in parts; every logit of
    a query ranked equals the reference's."""
    config = preset("small")
    models, generator, _ = train_models({"wnd": get_model("wnd", max_rows=200)}, train_samples=600,
                                        calibration=150)
    model = models["wnd"]
    setup = ChipSetup(config, [model])
    assert len(setup.weights(1).staged[0, "top"][0]) > 1
    dense_q, ids = model.inputs(generator.generate(9, start=4000))
    query = setup.add_query({model: (dense_q, ids)})
    program = compile_queries(setup, [Stage(model, k=9)], [query], Schedule("rpaccel"))
    result = run_program(program, device=ModelDevice(config))
    assert result.mismatches() == {}
    assert np.array_equal(_logits(result, program, "rpaccel"), model.logits(dense_q, ids))
