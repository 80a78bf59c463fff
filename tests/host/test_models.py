"""The model zoo: the papers' layer widths, costs per item, table scaling, clear errors."""

import pytest

from rpaccel.host.models import CRITEO_KAGGLE_ROWS, ZOO, ModelError, ModelSpec, get_model


def test_recpipe_models_have_the_artifact_widths_and_costs():
    small, med, large = (get_model(n) for n in ("rm-small", "rm-med", "rm-large"))
    assert [s.emb_dim for s in (small, med, large)] == [4, 16, 32]
    assert large.bottom == (512, 256, 128, 64, 32) and large.top == (96, 1)
    assert small.tables == large.tables == CRITEO_KAGGLE_ROWS and len(small.tables) == 26
    # 27 vectors (bottom output + 26 tables) give 351 pairs; the top MLP sees the bottom output and the pairs.
    assert small.num_pairs == 351 and small.interaction_width == 4 + 351
    by_hand = (13 * 64 + 64 * 4) + 351 * 4 + (355 * 64 + 64 * 1)
    assert small.macs_per_item() == by_hand == 25_276
    large_by_hand = (13 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 32) + 351 * 32 + (383 * 96 + 96)
    assert large.macs_per_item() == large_by_hand
    assert small.embedding_bytes_per_item() == 26 * 4 and large.embedding_bytes_per_item(4) == 26 * 32 * 4
    assert large.macs_per_item() > 7 * small.macs_per_item()


def test_deeprecsys_models():
    rmc1 = get_model("rmc1")
    assert (rmc1.dense, rmc1.bottom, rmc1.top, len(rmc1.tables), rmc1.emb_dim, rmc1.pooling) == \
        (128, (64, 32), (256, 64, 1), 8, 32, 80)
    assert rmc1.interaction_width == 32 + 8 * 32
    assert rmc1.embedding_bytes_per_item() == 8 * 80 * 32
    wnd = get_model("wnd")
    assert wnd.bottom == () and wnd.interaction_width == 512 + 27 * 32
    mt = get_model("mt-wnd")
    assert mt.tasks == 3 and [name for name, *_ in mt.layers()][-3:] == ["task2.0", "task2.1", "task2.2"]
    for name in ("ncf", "din", "dien"):
        assert not ZOO[name].trainable and ZOO[name].macs_per_item() > 0
    assert {s.name for s in ZOO.values() if s.trainable} == {"rm-small", "rm-med", "rm-large", "rmc1", "rmc2",
                                                                "rmc3", "wnd", "mt-wnd"}


def test_scaling_and_json_roundtrip():
    spec = get_model("rm-med", max_rows=1000)
    assert max(spec.tables) == 1000 and min(spec.tables) == 3
    assert spec.macs_per_item() == get_model("rm-med").macs_per_item()
    assert get_model("rm-med", row_scale=0.001).tables[2] == 10132
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ModelError, match="row_scale must be a number in"):
        spec.scaled(row_scale=2)


def test_errors_name_the_problem():
    with pytest.raises(ModelError, match=r"unknown model 'rm-huge' \(known: rm-small, rm-med, rm-large"):
        get_model("rm-huge")
    with pytest.raises(ModelError, match="bottom MLP to end in emb_dim"):
        ModelSpec("x", "t", 13, (64, 8), (10,), 4, 1, "dot", (1,))
    with pytest.raises(ModelError, match="interaction must be one of"):
        ModelSpec("x", "t", 13, (64, 4), (10,), 4, 1, "sum", (1,))
    with pytest.raises(ModelError, match="tables must be a tuple of positive integers"):
        ModelSpec("x", "t", 13, (64, 4), (), 4, 1, "dot", (1,))
    with pytest.raises(ModelError, match="top MLP must end in one output"):
        ModelSpec("x", "t", 13, (64, 4), (10,), 4, 1, "dot", (8,))
    with pytest.raises(ModelError, match="not a model specification"):
        ModelSpec.from_json("{}")
