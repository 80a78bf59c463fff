"""RecPipe's analytical cost model (rpaccel.sim.model.recpipe).

Against the artifact's own logs (harvard-acc/RecPipe, logs/example_logs/figure13_accel_{1,2}_stage.out: the
"Infer mean time" of each configuration, the sum of a query's per-stage service times) with the artifact's
parameters on the ``paper`` preset; term by term against hand-computed figures on small arrays (tiling on a
non-square sub-array, weight slices, a model of another interaction); the configuration's memory as the default;
the unit corrections; the ``small`` and ``tiny`` presets; and the errors.
"""

from dataclasses import replace

import pytest

from rpaccel.config import preset
from rpaccel.host.models import ModelSpec
from rpaccel.sim.model.recpipe import RECPIPE_CLOCK_NS, RECPIPE_DRAM_BYTES_PER_CYCLE, TERMS, RecPipeStage, recpipe_query

PAPER, SMALL, TINY = preset("paper"), preset("small"), preset("tiny")


def _large(items):
    return [RecPipeStage("rm-large", items, 64)]


def _small_large(front, back):
    return [RecPipeStage("rm-small", front, back), RecPipeStage("rm-large", back, 64)]


# The artifact's figures -----------------------------------------------------------------------------------------

def test_design_check_values():
    """DESIGN.md's check values: RM-large on 4,096 items on one 128 x 128 array, and 4,096 -> 512 on 64 x 64."""
    one = recpipe_query(PAPER, _large(4096), dram_bytes_per_cycle=RECPIPE_DRAM_BYTES_PER_CYCLE)
    two = recpipe_query(PAPER, _small_large(4096, 512), split=4, dram_bytes_per_cycle=RECPIPE_DRAM_BYTES_PER_CYCLE)
    assert round(one.ms, 2) == 2.09
    assert round(two.ms, 2) == 1.39
    assert one.stages[0].engines == 1 and [s.engines for s in two.stages] == [2, 2]
    assert [(s.rows, s.cols) for s in two.stages] == [(64, 64), (64, 64)]


# (stages, split, items per stage, bandwidth fraction, logged seconds). 6,140 is the artifact's own figure. The
# 64-way configurations take a quarter of the bandwidth: hardconf_64.json gives a 16 x 16 engine 0.125 GB/s, not
# 32 / 64.
LOGGED = [
    (1, 1, (4096,), 1, 0.0020907438257427224),
    (1, 1, (6140,), 1, 0.003055358489553452),
    (1, 1, (12288,), 1, 0.00595678434136772),
    (1, 4, (4096,), 1, 0.004683535302970886),
    (1, 4, (10240,), 1, 0.011277368849845888),
    (1, 16, (4096,), 1, 0.013682197211883546),
    (1, 16, (8192,), 1, 0.02665160933688355),
    (1, 64, (4096,), 1 / 4, 0.09408653139013669),
    (2, (4, 4), (4096, 512), 1, 0.001394389622154236),
    (2, (4, 4), (12288, 1280), 1, 0.003150167073326111),
    (2, (16, 4), (4096, 512), 1, 0.002000305286735535),
    (2, (4, 16), (6140, 1024), 1, 0.004744819796566009),
    (2, (16, 16), (8192, 1024), 1, 0.006176543519866944),
    (2, (64, 64), (4096, 512), 1 / 4, 0.02714175181787109),
]


@pytest.mark.parametrize(("stages", "split", "items", "bandwidth", "seconds"), LOGGED)
def test_reproduces_the_artifacts_logs(stages, split, items, bandwidth, seconds):
    pipeline = _large(*items) if stages == 1 else _small_large(*items)
    estimate = recpipe_query(PAPER, pipeline, split=split,
                             dram_bytes_per_cycle=RECPIPE_DRAM_BYTES_PER_CYCLE * bandwidth)
    assert estimate.seconds == pytest.approx(seconds, rel=1e-12)


def test_the_configurations_memory_is_the_default():
    """``paper``'s 256 bytes a cycle are 32e9 bytes/s where RecPipe's "32 GB/s" are 32 GiB/s."""
    pipeline = _small_large(4096, 512)
    default = recpipe_query(PAPER, pipeline, split=4)
    assert default == recpipe_query(PAPER, pipeline, split=4, dram_bytes_per_cycle=256, dram_latency_cycles=100)
    assert [s.dram_bytes_per_cycle for s in default.stages] == [64, 64]
    slower = replace(PAPER, mem_bytes_per_cycle=128, mem_latency_cycles=200)
    assert recpipe_query(slower, pipeline, split=4) == recpipe_query(
        PAPER, pipeline, split=4, dram_bytes_per_cycle=128, dram_latency_cycles=200)
    artifact = recpipe_query(PAPER, pipeline, split=4, dram_bytes_per_cycle=RECPIPE_DRAM_BYTES_PER_CYCLE)
    assert default.cycles > artifact.cycles
    # Only the DRAM-bound parts move: PCIe, sort and the array's compute do not depend on the bandwidth.
    for term in ("pcie_in", "sort", "pcie_out"):
        assert default.terms()[term] == artifact.terms()[term]


# Term by term, by hand ------------------------------------------------------------------------------------------

TOY = ModelSpec(name="toy", source="test", dense=4, bottom=(8,), tables=(100, 100), emb_dim=8, pooling=1,
                interaction="dot", top=(12, 1))


def test_terms_by_hand_on_a_split_array():
    """``small`` split in two: 8 x 4 sub-arrays, each with half of the 16 bytes a cycle."""
    estimate = recpipe_query(SMALL, [RecPipeStage(TOY, 20, 5)], split=2)
    (stage,) = estimate.stages
    assert (stage.rows, stage.cols, stage.engines, stage.dram_bytes_per_cycle) == (8, 4, 2, 8)
    # 5 "ms" + 12 "ms" per 4,096 items, times 1,000.
    assert stage.pcie_in == 5000 + 12 / 4096 * 20 * 1000
    # 20 items x 2 lookups x 8 values x 4 bytes = 1,280 bytes; half from DRAM (100 + 640 / 8), half at 64 a cycle.
    assert stage.embedding == 180 + 10
    # Bottom 4 -> 8: 128 weight bytes (100 + 128 / 8) and 1 x 2 tiles of (min(8, 4) + min(4, 8) + 20).
    assert stage.bottom == 116 + 2 * 28
    # Top: RecPipe's input 8 x (2 + 1) = 24 -> 12: 1,152 bytes (100 + 144), 3 x 3 tiles of (4 + 8 + 20);
    # 12 -> 1: 48 bytes (100 + 6), 2 x 1 tiles of (1 + 8 + 20).
    assert stage.top == 244 + 9 * 32 + 106 + 2 * 29
    assert stage.weight_load == 116 + 244 + 106
    # 20 items // 16 a cycle = 1, // the 8 ns clock period = 0 (Python 2's integer division).
    assert stage.sort == 0
    assert stage.pcie_out == 5000
    assert estimate.cycles == stage.cycles == sum(stage.terms().values()) == 11116.59375
    assert list(estimate.terms()) == list(TERMS)
    assert estimate.seconds == 11116.59375 * 8e-9
    assert recpipe_query(SMALL, [RecPipeStage(TOY, 20, 5)], split=2, fix_sort=True).stages[0].sort == 2

    with_k = recpipe_query(SMALL, [RecPipeStage(TOY, 20, 5)], split=2, pcie_out_k=True)
    assert with_k.stages[0].pcie_out == 5000 + 5 / 4096 * 5 * 1000


def test_weights_beyond_the_sram_load_in_slices():
    estimate = recpipe_query(SMALL, [RecPipeStage(TOY, 20, 5)], split=2, weight_sram_bytes=100)
    # Bottom 4 -> 8: 128 bytes in two slices of 100 bytes each (the artifact loads min(SRAM, weights) per slice).
    assert estimate.stages[0].bottom == 2 * (100 + 100 / 8) + 2 * 28


def test_a_model_of_another_interaction_keeps_its_top_width():
    """A ``cat`` model without a bottom MLP: its own top input (4 dense + 3 tables x 8), pooling 2 per lookup."""
    model = ModelSpec(name="cat-toy", source="test", dense=4, bottom=(), tables=(50,) * 3, emb_dim=8, pooling=2,
                      interaction="cat", top=(8, 1))
    (stage,) = recpipe_query(SMALL, [RecPipeStage(model, 10, 1)]).stages
    assert stage.bottom == 0
    # 10 x 3 x 2 x 8 x 4 = 1,920 bytes: 100 + 960 / 16 from DRAM, 960 / 64 from the cache.
    assert stage.embedding == 160 + 15
    # 28 -> 8: 896 bytes (100 + 56), 4 x 1 tiles of (8 + 8 + 10); 8 -> 1: 32 bytes (100 + 2), (1 + 8 + 10).
    assert stage.top == 156 + 4 * 26 + 102 + 19


def test_unit_corrections():
    pipeline = _small_large(4096, 512)
    faithful = recpipe_query(PAPER, pipeline, split=4)
    fixed = recpipe_query(PAPER, pipeline, split=4, fix_pcie=True, fix_sort=True)
    for a, b in zip(faithful.stages, fixed.stages):
        # ms counted as ms at 8 ns: 125 times RecPipe's ms * 1000; the sort no longer divided by 8.
        assert b.pcie_in == pytest.approx(a.pcie_in * 125) and b.pcie_out == pytest.approx(a.pcie_out * 125)
        assert b.sort == a.sort * 8
        assert (b.embedding, b.bottom, b.top) == (a.embedding, a.bottom, a.top)
    assert fixed.stages[0].pcie_in == pytest.approx(17e6 / 8)
    assert fixed.fix_pcie and fixed.fix_sort and not faithful.fix_pcie


def test_clock():
    """At the chip's clock (``tiny``: 30 MHz) the faithful PCIe terms stay, the corrected ones follow the period;
    the faithful sort is divided by the period (4,096 // 16 = 256 cycles over 8 ns: 32, over 33.3 ns: 7)."""
    pipeline = [RecPipeStage("rm-small", 4096, 16)]
    at_8ns = recpipe_query(TINY, pipeline, clock_ns=RECPIPE_CLOCK_NS)
    at_chip = recpipe_query(TINY, pipeline, clock_ns=TINY.clock_period_ns)
    assert at_chip.stages[0].pcie_in == at_8ns.stages[0].pcie_in
    assert (at_8ns.stages[0].sort, at_chip.stages[0].sort) == (32, 7)
    assert at_chip.seconds == pytest.approx(at_chip.cycles * TINY.clock_period_ns * 1e-9)
    fixed = recpipe_query(TINY, pipeline, clock_ns=TINY.clock_period_ns, fix_pcie=True)
    assert fixed.stages[0].pcie_in == pytest.approx((5 + 12) * 1e6 / TINY.clock_period_ns)


# Presets and pipelines ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [SMALL, TINY], ids=lambda c: c.name)
def test_every_split_of_the_fpga_presets(config):
    pipeline = [RecPipeStage("rm-small", 1024, 128), RecPipeStage("rm-med", 128, 32), RecPipeStage("rm-large", 32, 8)]
    for split in config.splits:
        estimate = recpipe_query(config, pipeline, split=split)
        assert [s.engines for s in estimate.stages] == [split // 3] * 3
        assert all((s.rows, s.cols) == config.subarray_shape(split) for s in estimate.stages)
        assert all(value > 0 for s in estimate.stages for term, value in s.terms().items() if term != "sort")
        # Stages are estimated independently: the pipeline is the sum of its stages alone.
        alone = sum(recpipe_query(config, [stage], split=split).cycles for stage in pipeline)
        assert estimate.cycles == pytest.approx(alone)


def test_a_smaller_sub_array_is_slower_per_query():
    times = [recpipe_query(PAPER, _large(4096), split=n).cycles for n in PAPER.splits]
    assert times == sorted(times)


def test_describe():
    estimate = recpipe_query(PAPER, _small_large(4096, 512), split=(16, 4))
    described = estimate.describe()
    assert described["config"] == "paper" and described["cycles"] == estimate.cycles
    assert [s["array"] for s in described["stages"]] == [[32, 32], [64, 64]]
    assert [s["engines"] for s in described["stages"]] == [8, 2]
    assert described["terms"] == estimate.terms()


# Errors ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stages", "kwargs", "message"), [
    ([], {}, "stages is empty"),
    ([RecPipeStage("rm-large", 32, 64)], {}, r"k=64 of items=32"),
    ([RecPipeStage("rm-large", 0, 0)], {}, r"stage 0 items must be a positive integer, not 0"),
    ([RecPipeStage("rm-small", 4096, 512), RecPipeStage("rm-large", 1024, 64)], {},
     r"stage 1 scores items=1024, more than stage 0 keeps \(k=512\)"),
    ([RecPipeStage("rm-huge", 64, 8)], {}, r"unknown model 'rm-huge'"),
    ([("rm-large", 64, 8)], {}, r"stage 0 must be a RecPipeStage"),
    ([RecPipeStage("rm-large", 64, 8)], {"split": 8}, r"split 8 is not one of paper's splits"),
    ([RecPipeStage("rm-large", 64, 8)], {"split": True}, r"split True is not one of"),
    ([RecPipeStage("rm-large", 64, 8)], {"split": (4, 4)}, r"2 sub-array counts for 1 stages"),
    ([RecPipeStage("rm-large", 64, 8)], {"l1_miss_rate": 1.5}, r"l1_miss_rate must be a number in \[0, 1\], not 1.5"),
    ([RecPipeStage("rm-large", 64, 8)], {"dram_bytes_per_cycle": 0}, r"dram_bytes_per_cycle must be .*not 0"),
    ([RecPipeStage("rm-large", 64, 8)], {"clock_ns": -8}, r"clock_ns must be a positive number, not -8"),
])
def test_bad_input(stages, kwargs, message):
    with pytest.raises(ValueError, match=message):
        recpipe_query(PAPER, stages, **kwargs)


def test_unknown_split_of_a_smaller_preset():
    with pytest.raises(ValueError, match=r"split 4 is not one of small's splits \(1, 2\)"):
        recpipe_query(SMALL, [RecPipeStage("rm-small", 64, 8)], split=4)
