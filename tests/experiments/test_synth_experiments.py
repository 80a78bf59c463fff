"""The synthesis experiments (``bench synth``, ``bench chip``, the synthesis parts of ``bench gemm|embedding``):
the configurations they build and the checks made before any tool runs (the builds themselves take minutes to
hours and are run by the benches)."""

import pytest

from rpaccel.config import PRESETS, preset
from rpaccel.experiments import ExperimentError, ExperimentFailed
from rpaccel.experiments.chip import run_chip, run_chip_routed
from rpaccel.experiments.embedding import run_embedding_synth
from rpaccel.experiments.synth import run_synth, synthesize_config, target_presets
from rpaccel.flow.synth import synthesize


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


@pytest.mark.parametrize("options, message", [
    ({"placer": "static", "density": 0.8}, r"density must be a fraction in \(0, 1\] for the heap placer, not 0.8 "
                                           r"\(placer static\)"),
    ({"density": 1.5}, r"density must be a fraction in \(0, 1\] for the heap placer, not 1.5$"),
    ({"density": True}, "not True"),
])
def test_placement_density_is_checked_before_any_tool_runs(options, message):
    with pytest.raises(ValueError, match=message):
        synthesize("pe", "ecp5-85f", preset("small"), **options)


def test_chip_budget_and_embedding_synthesis_check_first():
    with pytest.raises(ExperimentError, match="tiny targets 'ice40-up5k'; the chip budget counts the ECP5-85F"):
        run_chip(preset("tiny"))
    with pytest.raises(ExperimentError, match="pnr_timeout must be a positive number of seconds, not -1"):
        run_embedding_synth(preset("small"), pnr_timeout=-1)


def _routed(clock_mhz, fmax_mhz):
    """A flow summary of the whole chip as :func:`rpaccel.flow.synth.synthesize` gives it (the figures invented)."""
    used = {"luts": (60_000, 83_640), "ffs": (47_000, 83_640), "dsps": (93, 156), "brams": (185, 208)}
    return {"utilization": {key: {"used": u, "available": a} for key, (u, a) in used.items()},
            "packed_utilization": None, "critical_path": None, "fmax_mhz": fmax_mhz, "clock_constraint_mhz": clock_mhz,
            "meets_timing": fmax_mhz is not None and fmax_mhz >= clock_mhz, "tools": {"nextpnr": "nextpnr-0.11.1"}}


def test_the_routed_chip_is_constrained_at_the_clock_asked_for(monkeypatch):
    calls = []

    def synthesize(component, config, **options):
        calls.append(options)
        clock = options["clock_mhz"] or config.clock_mhz
        return _routed(clock, 27.3)

    monkeypatch.setattr("rpaccel.experiments.chip.synthesize_config", synthesize)
    small = preset("small")
    report = run_chip_routed(small, clock_mhz=25.0, router="router2", placer="heap", density=0.75)
    assert calls[0]["clock_mhz"] == 25.0 and calls[0]["router"] == "router2" and calls[0]["placer"] == "heap"
    assert calls[0]["density"] == 0.75 and "placer heap, placement density 0.75." in report.text
    assert f"Fmax 27.3 MHz against a 25 MHz constraint (met; the preset's clock is {small.clock_mhz:g} MHz)" in \
        report.text
    assert report.data["fits"]
    run_chip_routed(small)
    assert calls[1]["clock_mhz"] is None        # the flow then takes the preset's
    monkeypatch.setattr("rpaccel.experiments.chip.synthesize_config", lambda *a, **k: _routed(25.0, None))
    report = run_chip_routed(small, clock_mhz=25.0)
    assert "did not route within the time given" in report.text and not report.data["fits"]


def test_an_unfinished_build_is_not_summarised(tmp_path):
    with pytest.raises(ExperimentFailed, match="holds no nextpnr report"):
        run_chip_routed(preset("small"), clock_mhz=25.0, from_build=tmp_path)
