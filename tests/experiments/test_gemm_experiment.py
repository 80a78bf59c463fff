"""The MLP engine's experiment (``rpaccel bench gemm``) called directly, at a tiny configuration."""

import pytest
from configs import SMALL16

from rpaccel.config import preset
from rpaccel.experiments import ExperimentError
from rpaccel.experiments.gemm import MODELS, SYNTH_RUNS, run_gemm, run_gemm_synth, synth_runs, tile_bound

#: The issue's example, ``--preset tiny --set array_rows=8``, with room for RM-small's weights.
TINY8 = ("array_rows=8", "weight_buffer_words=512")


@pytest.mark.verilator
def test_run_gemm_on_a_tiny_configuration():
    config = preset("tiny").with_settings(TINY8)
    lines = []
    report = run_gemm(config, models=["rm-small"], batches=[16], splits=[1, 4], seed=2, progress=lines.append)
    assert report.passed, report.failures
    assert [(r["model"], r["split"], r["batch"]) for r in report.rows] == [("rm-small", 1, 16), ("rm-small", 4, 16)]
    for row in report.rows:
        assert row["mismatches"] == 0
        assert row["ideal"] == 16 * (13 * 64 + 64 * 4) / (8 * 4)
        assert row["ideal"] < row["cycles"] < row["total_cycles"]
        assert row["utilisation"] <= row["tile_bound"] == tile_bound(config, MODELS["rm-small"], row["split"])
    assert len(lines) == 2 and lines[0].startswith("  rm-small split 1 batch 16:")
    [section] = report.sections
    assert section.name == "gemm"
    assert "Preset `tiny+array_rows=8+weight_buffer_words=512` (8x4 array" in section.body
    assert report.text.splitlines()[0].startswith("| model | split | batch | chunk | cycles |")
    assert report.data["runs"] == report.rows


@pytest.mark.verilator
def test_run_gemm_reports_outputs_that_differ_from_the_golden_model(monkeypatch):
    import rpaccel.host.reference as golden

    forward = golden.mlp_forward
    monkeypatch.setattr(golden, "mlp_forward", lambda layers, x: forward(layers, x) ^ 1)   # a planted bug
    report = run_gemm(preset("tiny").with_settings(TINY8), models=["rm-small"], batches=[16], splits=[1], seed=2)
    assert not report.passed
    assert report.failures == ("rm-small, split 1, batch 16: 64 outputs differ from the golden model",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"models": ["rm-huge"]}, "models has an unknown model 'rm-huge' (known: rm-large, rm-small)"),
    ({"batches": [16, 0]}, "batches must be positive integers, not [16, 0]"),
    ({"batches": []}, "batches must be positive integers, not []"),
    ({"splits": [16]}, "splits has 16, which is not one of the small16 configuration's splits (1, 2, 4)"),
    ({"pause": -0.5}, "pause must be in [0, 1), not -0.5"),
    ({"seed": -1}, "seed must be a non-negative integer, not -1"),
])
def test_run_gemm_checks_its_arguments(kwargs, message):
    with pytest.raises(ExperimentError, match=None) as info:
        run_gemm(SMALL16, **kwargs)
    assert str(info.value) == message


def test_a_batch_that_does_not_divide_or_a_model_that_does_not_fit_is_an_error():
    with pytest.raises(ExperimentError, match="batches has 6, which does not divide among 4 sub-arrays"):
        run_gemm(SMALL16, models=["rm-small"], batches=[6], splits=[4])
    with pytest.raises(ExperimentError, match="rm-large on the tiny configuration, split 1: The weights need"):
        run_gemm(preset("tiny"), models=["rm-large"], batches=[16], splits=[1])


def test_synthesis_runs_follow_the_presets_targets():
    runs = synth_runs()
    assert [(c, cfg.name, cfg.target) for c, cfg in runs] == [
        (c, name, preset(name).target) for c, name in SYNTH_RUNS]
    # An explicit configuration replaces the preset meant for its target.
    custom = preset("tiny").with_settings(["array_rows=8"])
    assert synth_runs(custom) == [("array", custom), ("mlp", custom)]
    assert [c for c, _ in synth_runs(SMALL16)] == ["pe", "pe-lut", "mlp"]
    with pytest.raises(ExperimentError, match="paper has no synthesis runs"):
        synth_runs(preset("paper"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"router": "router3"}, "router must be one of router1, router2, not 'router3'"),
    ({"placer": "quick"}, "placer must be one of heap, static, sa, not 'quick'"),
    ({"pnr_timeout": 0}, "pnr_timeout must be a positive number of seconds, not 0"),
])
def test_run_gemm_synth_checks_its_arguments_before_building(kwargs, message):
    with pytest.raises(ExperimentError) as info:
        run_gemm_synth(**kwargs)
    assert str(info.value) == message
