"""DeepRecSys's schedulers over CPU workers and an accelerator, replayed as a queueing simulation.

DeepRecSched (Gupta et al., ISCA 2020) serves a query of ``n`` items on a CPU server by splitting it into
``ceil(n / B)`` requests of at most ``B`` items, each run by the next free core, and sends a query of at least
``T`` items whole to the accelerator; it tunes ``B`` and ``T`` by hill-climbing on the highest load whose tail
latency meets a target. The static scheduler it is compared with keeps a fixed ``B`` and no accelerator.

:func:`simulate` replays arrivals and sizes through that server: ``workers`` cores taking requests first come,
first served, each for the CPU service time of its batch size (a :class:`ServiceTable` measured on this machine by
:func:`measure_cpu_service`), and one accelerator taking whole queries first come, first served, for the time a
function of the query's size gives (the fast model's or the chip's figure). A query's latency runs from its
arrival to the end of its last request. :func:`max_load` finds the highest load (the trace's gaps scaled) whose
percentile latency meets a target; :func:`deeprecsched` walks batch sizes and thresholds as DeepRecSched does.
"""

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np

from .stats import loadgen_percentile

__all__ = ["CLIMB_TOLERANCE", "SchedConfig", "ServiceTable", "deeprecsched", "max_load", "measure_cpu_service",
           "simulate"]


#: DeepRecSched's walks stop when the load falls more than this fraction below the best of the walk.
CLIMB_TOLERANCE = 0.05


@dataclass(frozen=True)
class ServiceTable:
    """CPU service time of a request by batch size: medians measured at ``sizes`` (increasing), linear between
    them and beyond the last (from the last two), in nanoseconds.

    Attributes
    ----------
    sizes : tuple of int
    ns : tuple of float
    """

    sizes: tuple
    ns: tuple

    def __post_init__(self):
        if len(self.sizes) < 2 or len(self.sizes) != len(self.ns) or list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"A service table needs two or more increasing sizes, one time each, not "
                             f"{self.sizes!r} and {self.ns!r}")

    def __call__(self, size):
        """Service time (ns) of a request of ``size`` items."""
        sizes, ns = self.sizes, self.ns
        if size <= sizes[-1]:
            return float(np.interp(size, sizes, ns))
        slope = (ns[-1] - ns[-2]) / (sizes[-1] - sizes[-2])
        return ns[-1] + slope * (size - sizes[-1])


def measure_cpu_service(rank, sizes, *, repeats=9, quantile=0.5, clock=None):
    """A :class:`ServiceTable` of ``rank(size)`` (runs one request of ``size`` items, its inputs prepared), the
    ``quantile`` of ``repeats`` runs per size (default the median) after one warm-up run of each. The sizes take
    turns in every round, so a burst of other work on a shared machine lands on all of them rather than on one
    size's every run.

    ``clock`` (nanoseconds, default :func:`time.perf_counter_ns`: wall-clock time) may be
    :func:`time.process_time_ns`, the CPU time of this process, which leaves out the time slices other processes
    take on a shared machine; a low quantile then also sets aside runs slowed by their use of the caches.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"The quantile must be in [0, 1], not {quantile!r}")
    clock = clock or time.perf_counter_ns
    sizes = list(sizes)
    for size in sizes:
        rank(size)
    times = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            start = clock()
            rank(size)
            times[size].append(clock() - start)
    return ServiceTable(tuple(sizes), tuple(float(np.quantile(times[size], quantile)) for size in sizes))


@dataclass(frozen=True)
class SchedConfig:
    """A scheduler's setting: batch size ``batch`` per CPU request, queries of at least ``threshold`` items to
    the accelerator (``None``: none go)."""

    batch: int
    threshold: int = None

    def __str__(self):
        return f"B={self.batch}, T={'-' if self.threshold is None else self.threshold}"


def simulate(arrivals_ns, sizes, config, *, workers, cpu, accel=None):
    """Finish time (ns) of every query served under ``config``.

    Parameters
    ----------
    arrivals_ns, sizes : array_like
        Per query, in arrival order.
    config : SchedConfig
    workers : int
        CPU cores, each running one request at a time.
    cpu : callable
        Service time (ns) of a CPU request of a given number of items (e.g. a :class:`ServiceTable`).
    accel : callable, optional
        Service time (ns) of a whole query on the accelerator by its size; required when ``config.threshold``
        is set.

    Returns
    -------
    numpy.ndarray
        Finish times (ns), float64.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Workers must be a positive integer, not {workers!r}")
    if not isinstance(config.batch, int) or config.batch < 1:
        raise ValueError(f"The batch size must be a positive integer, not {config.batch!r}")
    if config.threshold is not None and accel is None:
        raise ValueError("A threshold sends queries to the accelerator: give its service time (accel)")
    arrivals = np.asarray(arrivals_ns, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if arrivals.shape != sizes.shape or (np.diff(arrivals) < 0).any():
        raise ValueError("Arrivals must be non-decreasing, one per query size (first come, first served)")
    cores = [0.0] * workers         # a heap of the cores' free times
    accel_free = 0.0
    finishes = np.empty(len(arrivals))
    costs = {}
    for i, (arrival, size) in enumerate(zip(arrivals, sizes)):
        if config.threshold is not None and size >= config.threshold:
            start = max(arrival, accel_free)
            accel_free = finishes[i] = start + accel(int(size))
            continue
        full, rest = divmod(int(size), config.batch)
        finish = arrival
        for batch in [config.batch] * full + ([rest] if rest else []):
            if batch not in costs:
                costs[batch] = cpu(batch)
            free = heapq.heappop(cores)
            end = max(arrival, free) + costs[batch]
            heapq.heappush(cores, end)
            finish = max(finish, end)
        finishes[i] = finish
    return finishes


def _tail_ms(arrivals, finishes, percentile, warmup):
    """LoadGen's percentile of the latencies after ``warmup``, in ms."""
    return float(loadgen_percentile((finishes - arrivals)[warmup:], percentile)) / 1e6


def max_load(gaps_ns, sizes, config, *, target_ms, percentile=0.95, warmup=0, workers, cpu, accel=None,
             low=None, high=None, steps=20):
    """The highest load (queries per second) at which ``config``'s percentile latency meets ``target_ms``: the
    trace's gaps (``gaps_ns``, the first 0) scaled to each load, bisected ``steps`` times on a log scale between
    ``low`` and ``high`` (default: around the load that keeps every core or the accelerator busy).

    Returns
    -------
    (float, float) or (None, None)
        The load and its percentile latency in ms; ``(None, None)`` if even ``low`` misses the target (RecPipe's
        "unachievable").
    """
    gaps = np.asarray(gaps_ns, dtype=np.float64)
    base = (len(gaps) - 1) / max(gaps.sum(), 1.0) * 1e9    # the trace's own rate: n - 1 gaps after the first arrival

    def tail(load):
        arrivals = np.cumsum(gaps * (base / load))
        return _tail_ms(arrivals, simulate(arrivals, sizes, config, workers=workers, cpu=cpu, accel=accel),
                        percentile, warmup)

    if high is None:
        mean = float(np.mean(sizes))
        work = math.ceil(mean / config.batch) * cpu(min(config.batch, mean)) / workers
        if config.threshold is not None:
            work = min(work, accel(int(mean)))
        high = 4e9 / work
    low = low or high / 1e4
    if tail(low) > target_ms:
        return None, None
    for _ in range(steps):
        middle = math.sqrt(low * high)
        if tail(middle) <= target_ms:
            low = middle
        else:
            high = middle
    return low, tail(low)


def deeprecsched(gaps_ns, sizes, *, target_ms, percentile=0.95, warmup=0, workers, cpu, accel=None,
                 batches=(512, 256, 128, 64, 32), thresholds=(96, 128, 192, 256, 384, 512), tolerance=CLIMB_TOLERANCE):
    """DeepRecSched's hill-climb: walk the batch sizes (largest first) until the highest load meeting the target
    falls more than ``tolerance`` below the best of the walk; then, with an accelerator, walk the thresholds
    (smallest first, the most queries offloaded) the same way from the best batch size. The best setting seen wins.

    The tolerance lets the walk cross a plateau: batch sizes above most queries' sizes split few of them, so their
    loads differ by the few that are split, and a walk stopping at the first fall, however small, ends before the
    batch sizes that matter.

    Returns
    -------
    (SchedConfig, float, list)
        The chosen setting, its highest load meeting the target (0.0 if none does), and every ``(SchedConfig,
        load, tail_ms)`` tried (``load`` and ``tail_ms`` None where no load meets it).
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"The tolerance must be in [0, 1), not {tolerance!r}")
    tried = []

    def score(config):
        load, tail = max_load(gaps_ns, sizes, config, target_ms=target_ms, percentile=percentile, warmup=warmup,
                              workers=workers, cpu=cpu, accel=accel)
        tried.append((config, load, tail))
        return 0.0 if load is None else load

    best, best_load = None, -1.0

    def climb(configs):
        nonlocal best, best_load
        top = -1.0
        for config in configs:
            load = score(config)
            if load > best_load:
                best, best_load = config, load
            if load < (1 - tolerance) * top:
                break
            top = max(top, load)

    climb([SchedConfig(batch) for batch in batches])
    if accel is not None:
        climb([SchedConfig(best.batch, threshold) for threshold in thresholds])
    return best, best_load, tried
