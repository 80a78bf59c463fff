"""The synthesis experiments (``bench synth``, ``bench chip``, the synthesis parts of ``bench gemm|embedding``):
the configurations they build and the checks made before any tool runs (the builds themselves take minutes to
hours and are run by the benches)."""

import pytest

from rpaccel.config import PRESETS, preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.chip import run_chip
from rpaccel.experiments.embedding import run_embedding_synth
from rpaccel.experiments.synth import run_synth, synthesize_config, target_presets


def test_each_target_is_built_at_the_presets_meant_for_it():
    assert [c.name for c in target_presets()] == [name for name, c in PRESETS.items() if c.target != "none"]
    assert [c.name for c in target_presets(["ecp5-85f"])] == ["small"]
    assert [c.name for c in target_presets(["ice40-up5k"])] == ["tiny"]
    with pytest.raises(ExperimentError, match="targets has an unknown target 'virtex'"):
        target_presets(["virtex"])


def test_synthesis_needs_a_target_and_a_known_component():
    with pytest.raises(ExperimentError, match="preset paper has no synthesis target"):
        synthesize_config("pe", preset("paper"))
    with pytest.raises(ExperimentError, match="^unknown component 'nosuch'"):
        synthesize_config("nosuch", preset("small"))
    with pytest.raises(ExperimentError, match="components has an unknown component 'nosuch'"):
        run_synth(components=["pe", "nosuch"])


def test_chip_budget_and_embedding_synthesis_check_first():
    with pytest.raises(ExperimentError, match="tiny targets 'ice40-up5k'; the chip budget counts the ECP5-85F"):
        run_chip(preset("tiny"))
    with pytest.raises(ExperimentError, match="pnr_timeout must be a positive number of seconds, not -1"):
        run_embedding_synth(preset("small"), pnr_timeout=-1)
