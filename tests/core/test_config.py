from dataclasses import replace

import pytest

from rpaccel.config import PRESETS, AccelConfig, ConfigError, preset


def test_presets_are_valid_and_named():
    for name, cfg in PRESETS.items():
        assert cfg.name == name
        for n in cfg.splits:
            rows, cols = cfg.subarray_shape(n)
            assert rows % cfg.block == 0 and cols % cfg.block == 0
    assert preset("small").target == "ecp5-85f"
    assert preset("tiny").target == "ice40-up5k"
    assert (preset("paper").array_rows, preset("paper").array_cols) == (128, 128)


def test_paper_splits_match_recpipe():
    paper = preset("paper")
    assert [paper.subarray_shape(n) for n in (4, 16, 64)] == [(64, 64), (32, 32), (16, 16)]
    assert paper.subarray_shape(2) == (128, 64)


def test_derived_values():
    cfg = preset("small")
    assert cfg.pes == cfg.array_rows * cfg.array_cols
    assert cfg.dyn_cache_bytes == cfg.dyn_cache_sets * cfg.dyn_cache_ways * cfg.dyn_cache_line_bytes
    assert cfg.clock_period_ns == pytest.approx(8.0)
    assert cfg.describe()["pes"] == cfg.pes


@pytest.mark.parametrize(("change", "message"), [
    ({"array_rows": 10}, "array_rows must be a multiple of block \\(4\\), not 10"),
    ({"array_cols": 0}, "array_cols must be a positive integer, not 0"),
    ({"block": 2.0}, "block must be a positive integer, not 2.0"),
    ({"splits": (2, 4)}, "splits must be a tuple of sub-array counts including 1"),
    ({"splits": (1, 3)}, "Sub-array count must be 1, 2 or a power of four, not 3"),
    ({"splits": (1, 64)}, "cannot be split into 64 sub-arrays"),
    ({"dyn_cache_sets": 100}, "dyn_cache_sets must be a power of two, not 100"),
    ({"dyn_cache_ways": -1}, "dyn_cache_ways must be a non-negative integer, not -1"),
    ({"k_max": True}, "k_max must be a positive integer, not True"),
    ({"clock_mhz": 0}, "clock_mhz must be a positive number, not 0"),
    ({"target": "virtex"}, "target must be one of"),
])
def test_invalid_configurations_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        replace(preset("small"), **change)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="Unknown preset 'huge'; known presets: tiny, small, paper"):
        preset("huge")


def test_config_is_frozen_and_hashable():
    cfg = AccelConfig()
    with pytest.raises(AttributeError):
        cfg.array_rows = 8
    assert hash(cfg) == hash(AccelConfig())
