"""``bench claims``: RecPipe's claim on the timed model at iso-quality. The statistics (Student's t, the paired
interval, the non-inferiority rule), the candidate pipelines and which are timed, the models' cache, and small runs:
quality on more queries than are timed, every timed ranking checked against the reference's (a planted wrong
reference caught), quality against cost and its plot, the stage mapping's lane map."""

import numpy as np
import pytest

from rpaccel.experiments import ExperimentError
from rpaccel.experiments.claims import (
    ISO_MARGIN,
    candidate_pipelines,
    paired_interval,
    quality_cost,
    run_claims,
    t_quantile,
    trained_models,
)

#: A small run's settings: the models are trained once per module (the cache below) and reused.
SMALL = {"candidates": 512, "k": 8, "train_samples": 800, "max_rows": 300}
TWO_STAGE = "rm-small:512:64,rm-large:64:8"      # RecPipe's at 512 candidates


@pytest.fixture(autouse=True, scope="module")
def _model_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RPACCEL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.mark.parametrize(("p", "df", "quantile"), [
    (0.975, 1, 12.7062), (0.975, 10, 2.2281), (0.95, 5, 2.0150), (0.975, 511, 1.9647), (0.5, 3, 0.0),
])
def test_t_quantile_matches_the_tables(p, df, quantile):
    assert t_quantile(p, df) == pytest.approx(quantile, abs=2e-4)


def test_t_quantile_refuses_what_it_cannot_give():
    for p, df in ((1.0, 5), (0.4, 5), (0.975, 0), (0.999, 1)):
        with pytest.raises(ValueError):
            t_quantile(p, df)


def test_the_paired_interval_decides_iso_quality_by_the_margin():
    reference = np.array([0.80, 0.70, 0.90, 0.60, 0.75])
    change = np.array([0.2, -0.4, 0.0, -0.2, -0.1])          # points
    found = paired_interval(reference + change / 100, reference)
    half = t_quantile(0.975, 4) * change.std(ddof=1) / np.sqrt(5)
    assert found["points"] == pytest.approx(-0.1) and found["error"] == pytest.approx(change.std(ddof=1) / np.sqrt(5))
    assert (found["low"], found["high"]) == pytest.approx((-0.1 - half, -0.1 + half))
    # low is -0.1 - 2.776 * 0.1 = -0.38: inside a margin of 0.4, outside one of 0.35; a pipeline as good as the
    # baseline on every query passes even at no margin.
    assert found["low"] == pytest.approx(-0.3776, abs=1e-4)
    assert paired_interval(reference + change / 100, reference, margin=0.4)["iso"]
    assert not paired_interval(reference + change / 100, reference, margin=0.35)["iso"]
    assert paired_interval(reference, reference, margin=0)["iso"]
    with pytest.raises(ValueError, match="at least two paired queries"):
        paired_interval([0.5], [0.5])


def test_the_candidate_pipelines_start_with_recpipes_and_scale():
    pipelines = [",".join(map(str, stages)) for stages in candidate_pipelines(4096, 64)]
    assert pipelines[0] == "rm-small:4096:512,rm-large:512:64"
    assert "rm-small:4096:512,rm-med:512:128,rm-large:128:64" in pipelines
    assert "rm-small:4096:2048,rm-med:2048:512,rm-large:512:64" in pipelines
    assert len(pipelines) == len(set(pipelines)) == 9
    # At 256 candidates and k = 16 the 3-stage pipelines keeping 8 or 16 items in their second stage are left out.
    small = candidate_pipelines(256, 16)
    assert all(stages[0].items == 256 and stages[-1].k == 16 for stages in small)
    assert [",".join(map(str, stages)) for stages in small if len(stages) == 3] == [
        "rm-small:256:128,rm-med:128:32,rm-large:32:16"]


def test_the_timed_pipelines_are_recpipes_and_the_least_of_each_model_sequence():
    from rpaccel.experiments.claims import _timed_pipelines

    pipelines = candidate_pipelines(4096, 64)
    iso = {"rm-small:4096:1024,rm-large:1024:64", "rm-small:4096:2048,rm-large:2048:64",
           "rm-med:4096:2048,rm-large:2048:64", "rm-small:4096:512,rm-med:512:128,rm-large:128:64"}
    quality = {stages: {"iso": ",".join(map(str, stages)) in iso} for stages in pipelines}
    timed = {",".join(map(str, stages)): why for stages, why in _timed_pipelines(pipelines, quality, 4096, 64)}
    assert timed == {"rm-small:4096:512,rm-large:512:64": "RecPipe's",
                     "rm-small:4096:1024,rm-large:1024:64": "at iso-quality, the fewest items of its models",
                     "rm-med:4096:2048,rm-large:2048:64": "at iso-quality, the fewest items of its models",
                     "rm-small:4096:512,rm-med:512:128,rm-large:128:64": "RecPipe's, at iso-quality"}


def test_trained_models_come_from_the_cache_the_second_time():
    from rpaccel.host.data import SyntheticConfig
    from rpaccel.host.models import get_model

    specs = {"rm-small": get_model("rm-small", max_rows=300)}
    data = SyntheticConfig.criteo(max_rows=300, seed=4)
    first, generator, _, cached = trained_models(specs, train_samples=300, seed=4, data=data, calibration=200)
    again, _, _, hit = trained_models(specs, train_samples=300, seed=4, data=data, calibration=200)
    assert (cached, hit) == (False, True)
    inputs = first["rm-small"].inputs(generator.generate(64, start=500))
    assert np.array_equal(first["rm-small"].logits(*inputs), again["rm-small"].logits(*inputs))
    *_, hit = trained_models(specs, train_samples=301, seed=4, data=data, calibration=200)
    assert not hit


def test_the_claims_measure_quality_on_more_queries_than_they_time():
    """The NDCG of every pipeline on six queries by the reference, paired against the baseline's; one query timed,
    its ranking the reference's (no failure); the table gives each row's interval and iso-quality."""
    report = run_claims("small", queries=1, quality_queries=6, splits=(1,), pipelines=[TWO_STAGE], **SMALL)
    assert report.passed, report.failures
    baseline, two = report.rows
    assert (baseline["mode"], two["mode"], two["stages"]) == ("baseline", "rpaccel", TWO_STAGE)
    assert len(two["ndcg_queries"]) == len(baseline["ndcg_queries"]) == 6
    expected = paired_interval(two["ndcg_queries"], baseline["ndcg_queries"])
    assert two["points"] == pytest.approx(expected["points"]) and two["iso"] == (expected["low"] >= -ISO_MARGIN)
    assert two["ndcg"] == pytest.approx(np.mean(two["ndcg_queries"]))
    assert all(row["p95_cycles"] > 0 and row["qps"] > 0 and 0 <= row["ndcg"] <= 1 for row in report.rows)
    cells = f"| {TWO_STAGE} | rpaccel | 1 | default |"
    assert cells in report.text and f"[{two['low']:+.2f}, {two['high']:+.2f}] | {'yes' if two['iso'] else 'no'} |" \
        in report.text
    assert report.data["settings"]["pipelines"][0]["timed"] == "RecPipe's" + (", at iso-quality" if two["iso"] else "")
    assert ("At iso-quality, RecPipe's choice" in report.text) == two["iso"]
    assert ("No RPAccel pipeline is at iso-quality" in report.text) != two["iso"]


def test_a_wrong_reference_ranking_is_caught(monkeypatch):
    """A planted bug: the reference's rankings of the timed queries reversed. The timed model's rankings no longer
    match them, and the run fails saying so."""
    from rpaccel.experiments import claims

    honest = claims._quality

    def reversed_rankings(*args, **kwargs):
        scored, rankings = honest(*args, **kwargs)
        return scored, {stages: ranking[:, ::-1] for stages, ranking in rankings.items()}

    monkeypatch.setattr(claims, "_quality", reversed_rankings)
    report = run_claims("small", queries=1, quality_queries=2, splits=(1,), pipelines=[TWO_STAGE], **SMALL)
    assert not report.passed
    assert any("ranking differs from the integer reference's" in failure for failure in report.failures)


@pytest.mark.parametrize(("changes", "match"), [
    ({"quality_queries": 1, "queries": 1}, "at least 2"),
    ({"quality_queries": 4, "queries": 5}, "at least 2 and at least the 5 timed queries"),
    ({"k": 100}, "longer than small's top-k units keep"),
    ({"pipelines": ["rm-small:256:64,rm-large:64:8"]}, "must score the 512 candidates first"),
    ({"pipelines": ["rm-small:512:64,rm-large:32:8"]}, "scores 32 items, but stage 0 keeps 64"),
    ({"margin": -1}, "margin"),
])
def test_the_claims_refuse_bad_settings(changes, match):
    settings = {**SMALL, "queries": 1, "quality_queries": 2, "splits": (1,), **changes}
    with pytest.raises(ExperimentError, match=match):
        run_claims("small", **settings)


def test_the_claims_draw_quality_against_cost(tmp_path):
    """A small run of the claims gives the quality-against-cost table (every measured configuration, its factors
    over the baseline, the Pareto fronts) and its plot, linked from the section relative to the results file."""
    plot = tmp_path / "img" / "claims.png"
    report = run_claims("small", queries=1, quality_queries=3, splits=(1,), pipelines=[TWO_STAGE], plot=plot,
                        results=tmp_path / "results.md", **SMALL)
    assert report.passed, report.failures
    assert plot.read_bytes().startswith(b"\x89PNG") and "![NDCG@8 against p95 latency" in report.sections[0].body
    assert "(img/claims.png)" in report.sections[0].body
    costs = quality_cost(report.rows)
    baseline = next(row for row in costs if row["mode"] == "baseline")
    assert baseline["latency_x"] == baseline["qps_x"] == 1 and baseline["ndcg_points"] == 0
    for row in costs:
        assert row["latency_x"] == pytest.approx(baseline["p95_us"] / row["p95_us"])
        cells = f"| {row['pipeline']}-stage {row['mode']} | {row['stages']} | {row['split']} | {row['lanes']} | "
        assert cells + f"{row['ndcg']:.4f} |" in report.text
        # On the latency front exactly when no other configuration has an NDCG at least its own at a lower p95.
        beaten = any(other["ndcg"] >= row["ndcg"] and other["p95_us"] < row["p95_us"] for other in costs)
        assert ("latency" in row["front"]) != beaten
    with pytest.raises(ExperimentError, match="plot"):
        run_claims("small", candidates=512, splits=(1,), k=8, plot=tmp_path / "claims.txt")


def test_quality_cost_marks_the_pareto_fronts():
    """A dominated configuration is on neither front; the best at each cost is on its own; ties in NDCG leave only
    the cheaper one."""
    def row(mode, ndcg, p95, qps):
        return {"pipeline": 1, "stages": "m", "mode": mode, "split": 1, "lanes": "default", "ndcg": ndcg,
                "ndcg_queries": [ndcg - 0.01, ndcg + 0.01] if mode == "baseline" else [ndcg, ndcg], "p95_us": p95,
                "qps": qps}

    rows = quality_cost([row("baseline", 0.70, 100.0, 10.0), row("rpaccel", 0.71, 50.0, 20.0),
                         row("rpaccel", 0.71, 60.0, 30.0), row("rpaccel", 0.60, 70.0, 5.0),
                         row("rpaccel", 0.50, 40.0, 8.0)])
    assert [each["front"] for each in rows] == [(), ("latency",), ("throughput",), (), ("latency",)]
    assert rows[1]["latency_x"] == 2 and rows[2]["qps_x"] == 3 and rows[1]["ndcg_points"] == pytest.approx(1)
    # Paired over the queries: differences of +2 and 0 points, a standard error of 1 point, t(0.975, 1) = 12.71.
    assert rows[1]["ndcg_interval"] == pytest.approx((1 - 12.7062, 1 + 12.7062), abs=1e-3)
    assert rows[0]["ndcg_interval"] is None
    alone = quality_cost([row("rpaccel", 0.5, 1.0, 1.0)])[0]
    assert alone["latency_x"] is None and alone["ndcg_interval"] is None


def test_the_claims_add_the_stage_mappings_lane_map_where_it_is_better():
    """With units for two lanes per stage and a split of four, the claims' RPAccel rows on split 4 are the default
    map's and the stage mapping's (queries spread over the lanes): every response checked, the chosen map's
    throughput at least the default's on the same queries, its quality the same (the same rankings)."""
    from rpaccel.config import preset

    config = preset("small").with_settings(["splits=1,2,4", "topk_units=2", "filter_units=2"])
    report = run_claims(config, queries=2, quality_queries=2, splits=(4,), pipelines=["rm-small:512:64,rm-large:64:8"],
                        **SMALL)
    assert report.passed, report.failures
    default, chosen = [row for row in report.rows if row["pipeline"] == 2]
    assert default["lanes"] == "default" and default["mapping"] == {"candidates": 4, "refused": 0, "measured": 2}
    assert max(map(len, chosen["lane_map"])) == 2 and chosen["lanes"] != "default"
    assert chosen["qps"] > default["qps"] and chosen["ndcg"] == default["ndcg"]
    assert "| lanes per stage |" in report.text and report.sections[0].name == f"claims-{config.name}"
