"""The embedding unit's ablation (``rpaccel bench embedding``) called directly, at a tiny configuration."""

import pytest
from configs import SMALL16

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.embedding import EXPONENTS, arrangements, run_embedding

#: The tiny preset with a static cache of the dynamic cache's bytes (so that all of them can go to either).
TINY = ("static_cache_rows=64",)


def test_arrangements_share_the_on_chip_bytes():
    from rpaccel.embedding import EmbeddingGeometry

    config = preset("tiny").with_settings(TINY)
    sizes = {name: (EmbeddingGeometry.from_config(c).static_bytes, EmbeddingGeometry.from_config(c).dynamic_bytes)
             for name, c in arrangements(config).items()}
    assert sizes == {"none": (0, 0), "static": (2048, 0), "dynamic": (0, 2048), "both": (1024, 1024)}
    with pytest.raises(ExperimentError, match="3,072 on-chip cache bytes cannot all go to the dynamic cache"):
        arrangements(preset("tiny"))
    with pytest.raises(ExperimentError, match="has no dynamic cache"):
        arrangements(preset("tiny").with_settings(["dyn_cache_ways=0"]))


@pytest.mark.verilator
@pytest.mark.slow
def test_run_embedding_on_a_tiny_configuration():
    lines = []
    report = run_embedding(preset("tiny").with_settings(TINY), lookups=256, warmup=128, tables=2, rows=512, dim=16,
                           pooling=4, seed=3, drift=0.25, progress=lines.append)
    assert report.passed
    assert [line.split(":")[0].strip() for line in lines] == ["none", "static", "dynamic", "both"]
    ablation = [r for r in report.rows if r["kind"] == "zipf"]
    labels = [f"{a:g}" for a in EXPONENTS] + ["1, 25% drift"]
    assert [(r["arrangement"], r["value"]) for r in ablation] == [
        (name, label) for name in ("none", "static", "dynamic", "both") for label in labels]
    for r in ablation:
        assert r["counters"]["lookups"] == 256
        assert (r["onchip_rate"] == 0) == (r["arrangement"] == "none")
    limits = {r["value"]: r for r in report.rows if r["kind"] == "limit"}
    assert set(limits) == {"all static hits", "all dynamic hits", "all misses"}
    assert limits["all static hits"]["static_hit_rate"] == 1.0
    assert limits["all dynamic hits"]["dynamic_hit_rate"] == 1.0
    assert limits["all misses"]["onchip_rate"] == 0.0
    assert report.sections[0].name == "embedding" and "- Zipf 1, 25% drift: both" in report.sections[0].body


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lookups": 0}, "lookups must be a positive integer, not 0"),
    ({"drift": 1.5}, "drift must be between 0 and 1, not 1.5"),
    ({"dim": 48}, "dim must be a power of two, a multiple of 16 and at most 64, not 48"),
    ({"tables": 70}, "tables must be at most 64, not 70"),
    ({"seed": -1}, "seed must be a non-negative integer, not -1"),
])
def test_run_embedding_checks_its_arguments(kwargs, message):
    with pytest.raises(ExperimentError) as info:
        run_embedding(SMALL16, **kwargs)
    assert str(info.value) == message
