"""Latency statistics of a replay, in bounded memory, judged as MLPerf LoadGen judges a Server run.

:class:`LatencyRecorder` takes each query's arrival and finish (nanoseconds) and keeps them in an HdrHistogram
(three significant digits: a percentile is within 0.1% of the exact one, whatever the number of queries), so a
replay of millions of queries needs no list of latencies. The first ``warmup`` queries (by arrival order) are
left out of every figure and counted apart, and a report says so.

Validity follows LoadGen's Server scenario (``loadgen/results.cc``, ``early_stopping.cc`` of mlcommons/inference):

* **Early stopping**: with ``t`` queries over the latency target, the run must hold at least ``h + t`` queries,
  where ``h`` is the least number of queries such that ``t`` or fewer over the target among ``h + t`` would
  happen with probability below 1% if the true share over the target were ``1 - percentile`` (binomial; 99%
  confidence, no tolerance). For the 99th percentile: 459 queries with none over the target, 662 with one, 2,010
  with ten, 6,898 with fifty (:func:`min_queries_for`).
* **Minimum queries** and **minimum duration**: the run's own thresholds (LoadGen's defaults are per benchmark).

Percentiles are LoadGen's: the ``floor(n p) + 1``-th smallest latency of ``n`` (from the histogram, within
0.1%); whether the target is met is decided exactly, from the count of queries over it. Throughput is the
measured queries over the time from the first measured arrival to the last finish (LoadGen's "completed samples
per second" counts from the test's start instead).
"""

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = ["LatencyRecorder", "LatencyReport", "loadgen_percentile", "min_queries_for"]

#: Largest latency the histogram holds: one hour in nanoseconds (anything longer is recorded as one hour).
MAX_LATENCY_NS = 3600 * 10**9
#: LoadGen's early-stopping confidence.
CONFIDENCE = 0.99


def _log_binomial_cdf(t, n, q):
    """log P(X <= t) for X ~ Binomial(n, q), summed in log space (exact for the t + 1 terms)."""
    logs = [math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * math.log(q)
            + (n - x) * math.log1p(-q) for x in range(t + 1)]
    top = max(logs)
    return top + math.log(sum(math.exp(value - top) for value in logs))


def loadgen_percentile(values, fraction):
    """LoadGen's percentile of ``values`` (any unit): the ``floor(n fraction) + 1``-th smallest."""
    values = np.sort(np.asarray(values))
    return values[min(math.floor(len(values) * fraction), len(values) - 1)]


@lru_cache(maxsize=4096)
def min_queries_for(overlatency, percentile, confidence=CONFIDENCE):
    """The least number of queries a run with ``overlatency`` queries over the target must hold to be valid:
    ``h + t``, ``h`` the least for which ``t`` or fewer over the target among ``h + t`` has probability below
    ``1 - confidence`` when each query is over the target with probability ``1 - percentile`` (LoadGen's
    ``find_min_passing``).

    Parameters
    ----------
    overlatency : int
        Queries over the latency target (``t`` >= 0).
    percentile : float
        The target's percentile as a fraction (0.95, 0.99), in (0, 1).
    confidence : float
    """
    if not isinstance(overlatency, int) or overlatency < 0:
        raise ValueError(f"Over-latency queries must be a non-negative integer, not {overlatency!r}")
    if not 0 < percentile < 1:
        raise ValueError(f"The percentile must be a fraction in (0, 1), not {percentile!r}")
    t, q, limit = overlatency, 1 - percentile, math.log(1 - confidence)
    low, high = 1, 2
    while _log_binomial_cdf(t, high + t, q) >= limit:     # find a passing h, then bisect
        low, high = high, high * 2
    while low < high:
        mid = (low + high) // 2
        if _log_binomial_cdf(t, mid + t, q) < limit:
            high = mid
        else:
            low = mid + 1
    return low + t


@dataclass(frozen=True)
class LatencyReport:
    """What a replay measured, latencies in milliseconds.

    Attributes
    ----------
    queries : int
        Queries measured (after the warm-up).
    warmup : int
        Queries left out at the start.
    p50, p95, p99, mean, max : float
        Latency (finish - arrival) percentiles as LoadGen takes them (the ``floor(n p) + 1``-th smallest), mean
        and maximum, in ms (HdrHistogram, within 0.1%).
    completed_qps : float or None
        Measured queries over the time from their first arrival to their last finish (None if that time is 0).
    duration_s : float
        That time.
    target_ms, percentile : float or None
        The latency target and its percentile (fraction), if one was set.
    overlatency : int
        Measured queries over the target.
    meets_target : bool or None
        Whether the percentile's latency is within the target, decided exactly: at most ``n - 1 - floor(n p)``
        queries over it.
    early_stopping_queries : int or None
        Queries the run needs for LoadGen's early stopping given ``overlatency``.
    valid : bool or None
        LoadGen's Server rules that apply to a replay: early stopping, minimum queries and minimum duration all
        met (None without a target; LoadGen's performance constraints are not checked here).
    reasons : tuple of str
        What makes the run invalid.
    """

    queries: int
    warmup: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float
    completed_qps: float
    duration_s: float
    target_ms: float = None
    percentile: float = None
    overlatency: int = 0
    meets_target: bool = None
    early_stopping_queries: int = None
    valid: bool = None
    reasons: tuple = ()

    def to_json(self):
        return {**asdict(self), "reasons": list(self.reasons)}


class LatencyRecorder:
    """Per-query latencies of a replay in bounded memory, and the :class:`LatencyReport` they make.

    Parameters
    ----------
    warmup : int
        Queries at the start (in the order recorded, which must be arrival order) left out of every figure.
    target_ms : float, optional
        Latency target (ms) for validity and ``meets_target``.
    percentile : float
        The target's percentile as a fraction (default 0.95, RecPipe's p95).
    min_queries : int
        Measured queries a valid run holds at least (default 1: early stopping alone decides).
    min_duration_s : float
        Measured time a valid run lasts at least (default 0).
    """

    def __init__(self, *, warmup=0, target_ms=None, percentile=0.95, min_queries=1, min_duration_s=0.0):
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"The warm-up must be a non-negative number of queries, not {warmup!r}")
        if target_ms is not None and not (isinstance(target_ms, (int, float)) and target_ms > 0):
            raise ValueError(f"The latency target must be a positive number of ms, not {target_ms!r}")
        if not 0 < percentile < 1:
            raise ValueError(f"The percentile must be a fraction in (0, 1), not {percentile!r}")
        self.warmup, self.target_ms, self.percentile = warmup, target_ms, percentile
        self.min_queries, self.min_duration_s = min_queries, min_duration_s
        self._histogram = HdrHistogram(1, MAX_LATENCY_NS, 3)
        self._seen = 0
        self._first_arrival = self._last_finish = None
        self._overlatency = 0
        self._target_ns = None if target_ms is None else target_ms * 1e6

    def record(self, arrival_ns, finish_ns):
        """Record one query (in arrival order)."""
        if finish_ns < arrival_ns:
            raise ValueError(f"Query {self._seen} finishes ({finish_ns} ns) before it arrives ({arrival_ns} ns)")
        self._seen += 1
        if self._seen <= self.warmup:
            return
        latency = int(finish_ns - arrival_ns)
        self._histogram.record_value(min(max(latency, 1), MAX_LATENCY_NS))
        if self._first_arrival is None:
            self._first_arrival = arrival_ns
        self._last_finish = finish_ns if self._last_finish is None else max(self._last_finish, finish_ns)
        if self._target_ns is not None and latency > self._target_ns:
            self._overlatency += 1

    def percentile_ms(self, fraction):
        """LoadGen's percentile of the measured latencies in ms: the ``floor(n fraction) + 1``-th smallest."""
        n = self._histogram.get_total_count()
        rank = min(math.floor(n * fraction) + 1, n)
        return self._histogram.get_value_at_percentile(100 * rank / n) * 1e-6

    def cdf(self, points=200):
        """The latency distribution as ``(percentiles, latencies_ms)`` arrays at ``points`` percentiles from 0 to
        100 (the histogram's, within 0.1%), for a CDF plot."""
        percentiles = np.linspace(0, 100, points)
        values = [self._histogram.get_value_at_percentile(p) for p in percentiles]
        return percentiles, np.asarray(values, dtype=np.float64) * 1e-6

    def report(self):
        """The :class:`LatencyReport` of the queries recorded so far.

        Raises
        ------
        ValueError
            If no query was measured (all within the warm-up).
        """
        n = self._histogram.get_total_count()
        if not n:
            raise ValueError(f"No query measured: {self._seen} recorded, {self.warmup} of warm-up")
        h = self._histogram
        duration = (self._last_finish - self._first_arrival) / 1e9
        figures = {"queries": n, "warmup": min(self.warmup, self._seen), "p50": self.percentile_ms(0.50),
                   "p95": self.percentile_ms(0.95), "p99": self.percentile_ms(0.99),
                   "mean": h.get_mean_value() * 1e-6, "max": h.get_max_value() * 1e-6,
                   "completed_qps": n / duration if duration > 0 else None, "duration_s": duration}
        if self.target_ms is None:
            return LatencyReport(**figures)
        needed = min_queries_for(self._overlatency, self.percentile)
        reasons = []
        if n < needed:
            reasons.append(f"early stopping needs {needed} queries with {self._overlatency} over the target, "
                           f"the run measured {n}")
        if n < self.min_queries:
            reasons.append(f"{n} queries measured, fewer than the minimum {self.min_queries}")
        if duration < self.min_duration_s:
            reasons.append(f"{duration:.3f} s measured, shorter than the minimum {self.min_duration_s} s")
        allowed = n - 1 - math.floor(n * self.percentile)     # over the target, with the percentile within it
        return LatencyReport(**figures, target_ms=self.target_ms, percentile=self.percentile,
                             overlatency=self._overlatency, meets_target=self._overlatency <= allowed,
                             early_stopping_queries=needed, valid=not reasons, reasons=tuple(reasons))
