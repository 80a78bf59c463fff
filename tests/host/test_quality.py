"""Ranking metrics and multi-stage pipelines on hand-checked examples."""

import itertools
import math

import numpy as np
import pytest

from rpaccel.host.quality import Pipeline, Stage, auc, evaluate_pipeline, ndcg, recpipe_pipelines, run_pipeline, topk


def test_topk_orders_by_score_then_lower_index():
    scores = np.array([[3, 7, 7, 1, 7], [0, 0, 0, 0, 0]])
    assert topk(scores, 4).tolist() == [[1, 2, 4, 0], [0, 1, 2, 3]]
    assert topk(np.array([0.5, -1.0, 0.5]), 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="NaN"):
        topk(np.array([1.0, np.nan]), 1)


def test_ndcg_definitions_by_hand():
    ranked = np.array([[1, 0, 1, 0], [0, 0, 0, 0]])
    d = [1 / math.log2(i + 2) for i in range(4)]
    assert ndcg(ranked, 4).tolist() == pytest.approx([(d[0] + d[2]) / sum(d), 0.0])
    # Standard: ideal of the first query is two ones on top; a query without positives scores 0.
    assert ndcg(ranked, 4, definition="standard").tolist() == pytest.approx([(d[0] + d[2]) / (d[0] + d[1]), 0.0])
    # With all labels given, positives beyond the ranked list raise the ideal.
    full = np.array([[1, 0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1]])
    assert ndcg(ranked, 4, definition="standard", all_labels=full)[0] == pytest.approx((d[0] + d[2]) / sum(d))
    assert ndcg(ranked, 2).tolist() == pytest.approx([d[0] / (d[0] + d[1]), 0.0])
    with pytest.raises(ValueError, match="at least 5 ranked items"):
        ndcg(ranked, 5)


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, 60)
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(pos, neg)]
    assert auc(scores, labels) == pytest.approx(np.mean(pairs))
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([1, 2], [1, 1])


def test_pipeline_filters_then_reranks_and_counts_macs():
    # One query of 8 candidates; the cheap model likes 0..3, the big model ranks 3 > 2 > 7 > ...
    small = np.array([[9, 8, 7, 6, 1, 1, 1, 5]])
    large = np.array([[1, 2, 3, 4, 9, 9, 9, 3]])
    labels = np.array([[0, 0, 1, 1, 1, 1, 1, 0]])
    scores = {"s": small, "l": large}
    two = Pipeline("two", (Stage("s", 4), Stage("l", 2)))
    assert run_pipeline(two, scores, 2).tolist() == [[3, 2]]
    one = Pipeline("one", (Stage("l", 2),))
    assert run_pipeline(one, scores, 2).tolist() == [[4, 5]]
    # Later stages break ties by candidate index too: 2 and 7 tie in the big model.
    tie = Pipeline("tie", (Stage("s", 5), Stage("l", 3)))
    assert run_pipeline(tie, {"s": np.array([[0, 0, 5, 0, 0, 0, 0, 6]]), "l": large}, 3).tolist() == [[3, 2, 7]]
    row = evaluate_pipeline(two, scores, labels, 2, {"s": 10, "l": 1000})
    assert row["macs_per_query"] == 8 * 10 + 4 * 1000 and row["items"] == [8, 4]
    assert row["ndcg"] == pytest.approx(1.0) and row["stages"] == "s (8) -> l (4)"
    with pytest.raises(ValueError, match="ends with 2 items, fewer than k=3"):
        run_pipeline(two, scores, 3)


def test_pipeline_parsing_and_recpipe_defaults():
    p = Pipeline.parse("rm-small:512>rm-med:128>rm-large", 64)
    assert p.stages == (Stage("rm-small", 512), Stage("rm-med", 128), Stage("rm-large", 64))
    assert p.items_per_stage(4096) == [4096, 512, 128]
    for bad, message in [("a>b", "needs a size"), ("a:x>b", "not a positive integer"), ("a:10>b:20", "non-increasing"),
                         (">b", "empty stage")]:
        with pytest.raises(ValueError, match=message):
            Pipeline.parse(bad, 16)
    names = [p.name for p in recpipe_pipelines()]
    assert names == ["1-stage rm-small", "1-stage rm-med", "1-stage rm-large", "2-stage rm-small -> rm-large",
                     "3-stage rm-small -> rm-med -> rm-large"]
    assert recpipe_pipelines()[4].items_per_stage(4096) == [4096, 512, 128]


def test_paired_difference():
    from rpaccel.host.quality import paired_difference

    mean, sem = paired_difference([0.5, 0.7, 0.9], [0.4, 0.5, 0.9])
    assert mean == pytest.approx(0.1) and sem == pytest.approx(np.std([0.1, 0.2, 0.0], ddof=1) / math.sqrt(3))


def test_findings_state_the_paired_comparisons():
    from rpaccel.host.experiment import findings

    report = {"k": 2, "pipelines": [], "models": []}
    for name, macs, per_query in [("1-stage rm-large", 100, [0.5, 0.6]),
                                  ("2-stage rm-small -> rm-large", 30, [0.5, 0.7]),
                                  ("3-stage rm-small -> rm-med -> rm-large", 20, [0.4, 0.6]),
                                  ("1-stage rm-small", 10, [0.1, 0.2])]:
        report["pipelines"].append({"pipeline": name, "kind": "int8", "macs_per_query": macs,
                                    "ndcg_per_query": per_query})
    for model in ("rm-small", "rm-med", "rm-large"):
        report["models"] += [{"model": model, "kind": "int8", "ndcg": 0.5}, {"model": model, "kind": "float",
                                                                              "ndcg": 0.503}]
    text = findings(report)
    assert "1-stage rm-small scores -40.00 ± 0.00 points of NDCG@2" in text
    assert "2-stage pipeline scores +5.00 ± 5.00 points at 30.0% of its MACs" in text
    assert "3-stage pipeline -5.00 ± 5.00 points at 20.0%" in text and "within 0.30 points" in text
