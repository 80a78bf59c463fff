"""Zipf-skewed ID streams, shared by the cache models, the embedding benches and the synthetic data.

``numpy.random.Generator.zipf`` needs an exponent above 1 and an unbounded support; recommendation traces are
modelled with exponents around 0.8-1.2 over a finite table, so this samples the bounded distribution
``P(rank k) = k**-a / H(n, a)`` for ``k = 1..n`` (``a = 0`` is uniform) by inverting its CDF.
"""

import numpy as np

__all__ = ["ZipfSampler"]


class ZipfSampler:
    """Draw IDs ``0 .. n-1`` where ID ``i`` has rank ``i + 1`` (ID 0 is the most frequent).

    Parameters
    ----------
    n : int
        Number of distinct IDs (table rows).
    exponent : float
        Skew ``a >= 0``; 0 gives uniform IDs.
    permute : bool or numpy.random.Generator
        If true (or a generator), hot IDs are scattered over the table by a fixed random permutation instead of
        being 0, 1, 2, ... (what a real trace looks like before profiling renumbers it).

    Examples
    --------
    >>> ids = ZipfSampler(1000, 1.0).sample(np.random.default_rng(0), 5)
    """

    def __init__(self, n, exponent, *, permute=False):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"Number of IDs must be a positive integer, not {n!r}")
        if not np.isfinite(exponent) or exponent < 0:
            raise ValueError(f"Zipf exponent must be a finite number >= 0, not {exponent!r}")
        self.n = int(n)
        self.exponent = float(exponent)
        weights = np.arange(1, self.n + 1, dtype=np.float64) ** -self.exponent
        self.probabilities = weights / weights.sum()
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        if permute is False:
            self.permutation = None
        else:
            rng = permute if isinstance(permute, np.random.Generator) else np.random.default_rng(0)
            self.permutation = rng.permutation(self.n)

    def sample(self, rng, size):
        """``size`` IDs (int64 array) drawn with the random generator ``rng``."""
        ranks = np.searchsorted(self._cdf, rng.random(size), side="right")
        ranks = np.minimum(ranks, self.n - 1)
        return ranks if self.permutation is None else self.permutation[ranks]
