import numpy as np
import pytest

from rpaccel.zipf import ZipfSampler


def test_frequencies_follow_the_law():
    sampler = ZipfSampler(100, 1.0)
    ids = sampler.sample(np.random.default_rng(1), 200_000)
    counts = np.bincount(ids, minlength=100)
    assert ids.min() >= 0 and ids.max() < 100
    # Rank 1 is twice as frequent as rank 2 and ten times rank 10 (within sampling noise).
    assert counts[0] / counts[1] == pytest.approx(2.0, rel=0.05)
    assert counts[0] / counts[9] == pytest.approx(10.0, rel=0.1)
    assert counts[0] / len(ids) == pytest.approx(sampler.probabilities[0], rel=0.02)


def test_uniform_and_deterministic():
    a = ZipfSampler(50, 0.0).sample(np.random.default_rng(3), 50_000)
    assert np.bincount(a, minlength=50).min() > 800
    assert np.array_equal(a, ZipfSampler(50, 0.0).sample(np.random.default_rng(3), 50_000))


def test_permutation_scatters_hot_ids():
    sampler = ZipfSampler(1000, 1.2, permute=np.random.default_rng(5))
    ids = sampler.sample(np.random.default_rng(0), 10_000)
    hottest = np.bincount(ids, minlength=1000).argmax()
    assert hottest == sampler.permutation[0]


@pytest.mark.parametrize(("n", "a", "message"), [(0, 1.0, "positive integer, not 0"), (10, -1, ">= 0, not -1"),
                                                 (10, float("nan"), ">= 0, not nan")])
def test_bad_parameters(n, a, message):
    with pytest.raises(ValueError, match=message):
        ZipfSampler(n, a)
