from dataclasses import replace

import pytest

from rpaccel.config import NO_TARGET, PRESETS, TARGETS, AccelConfig, ConfigError, preset


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
    assert preset("paper").clock_period_ns == pytest.approx(8.0)    # 125 MHz, RecPipe's clock
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


def test_settings_parse_by_the_fields_type_and_name_the_configuration():
    cfg = preset("tiny").with_settings(["array_rows=8", "splits=1,2", "clock_mhz=50", "target=none",
                                        "mem_bytes=0x40000"])
    assert (cfg.array_rows, cfg.splits, cfg.clock_mhz, cfg.target, cfg.mem_bytes) == (8, (1, 2), 50.0, "none", 1 << 18)
    assert cfg.name == "tiny+array_rows=8+splits=1,2+clock_mhz=50+target=none+mem_bytes=262144"
    assert cfg.array_cols == preset("tiny").array_cols
    # A later setting of a field wins; an explicit name is kept; no settings is the configuration itself.
    assert preset("small").with_settings(["k_max=16", "k_max=32"]).k_max == 32
    assert preset("small").with_settings(["name=mine", "k_max=16"]).name == "mine"
    assert preset("small").with_settings([]) is preset("small")


@pytest.mark.parametrize(("setting", "message"), [
    ("array_row=8", "unknown configuration field 'array_row' in 'array_row=8'; did you mean array_rows, array_cols"),
    ("zzz=1", "unknown configuration field 'zzz' in 'zzz=1'; fields: name, array_rows, array_cols"),
    ("array_rows", "a setting must be field=value, not 'array_rows'"),
    ("=4", "a setting must be field=value, not '=4'"),
    ("array_rows=eight", "array_rows must be an integer, not 'eight'"),
    ("splits=1,two", "splits must be comma-separated integers, not '1,two'"),
    ("clock_mhz=fast", "clock_mhz must be a number, not 'fast'"),
    ("array_rows=6", "tiny with array_rows=6: A 6x4 array of 2x2 blocks cannot be split into 4 sub-arrays"),
    ("k_max=0", "tiny with k_max=0: k_max must be a positive integer, not 0"),
    ("target=virtex", "target must be one of ice40-up5k, ecp5-85f, none, not 'virtex'"),
])
def test_bad_settings_name_the_field(setting, message):
    with pytest.raises(ConfigError) as info:
        preset("tiny").with_settings([setting])
    assert message in str(info.value)


def test_one_list_of_targets():
    from rpaccel.flow.synth import TARGETS as BOARDS

    assert list(BOARDS) == list(TARGETS) == ["ice40-up5k", "ecp5-85f"]
    assert all(board.name == name for name, board in BOARDS.items())
    assert {cfg.target for cfg in PRESETS.values()} <= {*TARGETS, NO_TARGET}
