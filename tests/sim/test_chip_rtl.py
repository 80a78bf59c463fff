"""The chip end to end on Verilator: compiled programs of trained, quantised models, every response checked
against the golden model (rpaccel.host.reference, rpaccel.numeric.topk), tag by tag."""

import pytest

from rpaccel.config import preset
from rpaccel.host.data import preprocess
from rpaccel.host.driver.chip import ChipSetup, Schedule, Stage, compile_queries
from rpaccel.host.quant import quantize
from rpaccel.host.train import TrainConfig, train
from rpaccel.sim.chip import chip_device, run_program

from host_fixtures import tiny_data, tiny_dot

pytestmark = [pytest.mark.verilator, pytest.mark.slow]

TINY = preset("tiny")


def quantised(spec, samples=1500):
    records = tiny_data(spec, samples)
    model, _ = train(spec, *preprocess(records, spec), records.labels,
                     TrainConfig(epochs=1, batch=256, lr=3e-3, emb_lr=2e-2, seed=1))
    return quantize(model, records.take(slice(0, 800)))


@pytest.fixture(scope="module")
def models():
    return [quantised(tiny_dot()), quantised(tiny_dot(name="tiny-dot-b", bottom=(6, 4), top=(5, 1)))]


@pytest.fixture(scope="module")
def device():
    return chip_device(TINY)


def candidates(qmodel, n, start=5000):
    return qmodel.inputs(tiny_data(qmodel.spec, n, start=start))


def _query(setup, models, n, start):
    return setup.add_query({model: candidates(model, n, start) for model in models})


@pytest.mark.parametrize("mode", ["rpaccel", "baseline"])
@pytest.mark.parametrize("stages", [1, 2])
def test_pipelines_on_the_rtl_match_the_golden_model(models, device, mode, stages):
    a, b = models
    setup = ChipSetup(TINY, [a, b])
    queries = [_query(setup, [a, b], n, 7000 + n) for n in (30, 19)]
    pipeline = [Stage(a, k=12), Stage(b, k=5)][:stages]
    program = compile_queries(setup, pipeline, queries, Schedule(mode, sub_batch=8))
    run = run_program(program, device=device)
    assert run.mismatches() == {}
    assert run.check_lists() == []
