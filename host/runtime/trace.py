"""Query traces: when each recommendation query arrives, how many candidates it ranks and which samples they are.

A trace is what the runtime replays (issue 21): one record per query, generated from three choices that the
trace's header keeps, so a trace says how it was made.

* **Sizes** (:class:`SizeDist`): RecPipe's fixed-size queries (``fixed:4096``), DeepRecSys's ``normal:165,16`` and
  ``lognormal:5.1,0.2`` (clipped to ``[1, 1024]`` as DeepRecSys clips them), or a percentile table sampled by
  inverse transform as MLPerf LoadGen's DLRM harness does (``table:mlperf-dlrm``, the quantile file of MLPerf
  Inference's DLRM benchmark, 100 to 700 user-item pairs per query, or ``table:V1,V2,...`` of your own).
* **Arrivals** (:class:`ArrivalProcess`): a Poisson process (``poisson:QPS``, exponential gaps, as LoadGen's Server
  scenario draws them), or RecPipe's and DeepRecSys's artifacts' gaps (``recpipe:MEAN_MS``): ``numpy.random.poisson``
  of the mean in whole milliseconds, so at a 0.5 ms mean 61% of the gaps are 0 (for comparison only).
* **Data**: query ``q`` ranks ``size`` consecutive samples of a data stream, the next query the samples after them
  (RecPipe's queries: consecutive samples of the test file). The stream is :class:`~rpaccel.host.data.SyntheticCriteo`
  (its seed and options in the header, so the samples are generated again) or a data file (Criteo TSV or records
  ``.npz``), read from its first sample and wrapped around at its end.

The format, version 1 (``.jsonl``, or ``.jsonl.gz`` compressed): JSON Lines, UTF-8, one object per line, written
with sorted keys and no spaces, so the same arguments write the same bytes with the same numpy (its random
generators) and zlib (``.gz``; the file has no time stamp).

* Line 1, the header: ``{"format": "rpaccel-trace", "version": 1, "queries": N, "seed": S, "sizes": "...",
  "min_size": A, "max_size": B, "arrivals": "...", "data": {...}}`` (sizes are clipped to ``[A, B]``);
  ``data`` is ``{"kind": "synthetic", "seed": ..., "max_rows": ..., "skew": ..., "ctr": ..., "start": ...}`` or
  ``{"kind": "file", "path": "...", "samples": M}`` (the path relative to the trace's folder).
* Lines 2 to N + 1, one per query, in arrival order: ``{"q": i, "t_ns": T, "size": n, "first": f}``: query number
  (0, 1, 2, ...), arrival in nanoseconds from the trace's start (non-decreasing), candidates, and the index of the
  first sample in the data stream (the query ranks samples ``f`` to ``f + n - 1``, wrapping around a file's end).

:func:`read_trace` streams a trace back, checking every line; a bad line raises
:class:`~rpaccel.host.data.DataError` naming the file, the line and the field, and a trace with fewer records than
its header announces is refused as truncated.
"""

import gzip
import io
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import DataError
from ..files import replacing

__all__ = [
    "MLPERF_DLRM_QUANTILES",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "ArrivalProcess",
    "QueryRecord",
    "SizeDist",
    "TraceData",
    "TraceHeader",
    "generate_trace",
    "read_trace",
    "trace_summary",
    "write_trace",
]

TRACE_FORMAT = "rpaccel-trace"
TRACE_VERSION = 1

#: MLPerf Inference DLRM's query-size quantiles (``tools/dist_quantile.txt`` of mlcommons/inference, the file
#: LoadGen's DLRM harness passes as ``--samples-to-aggregate-quantile-file``): user-item pairs per query at
#: probabilities 0.05, 0.10, ..., 1.0; a query's size is one of them drawn uniformly.
MLPERF_DLRM_QUANTILES = (100, 100, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 300, 300, 400, 500,
                         600, 700)

_TABLES = {"mlperf-dlrm": MLPERF_DLRM_QUANTILES}
#: Queries drawn per block: the draws of a seed do not depend on how many queries are asked for.
_BLOCK = 4096


def _numbers(text, count, what):
    """``count`` comma-separated numbers of ``text`` (the error names ``what``)."""
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"{what} needs {count} numbers, not {text!r}") from None
    if len(values) != count or not all(math.isfinite(value) for value in values):
        raise ValueError(f"{what} needs {count} finite numbers, not {text!r}")
    return values


@dataclass(frozen=True)
class SizeDist:
    """A distribution of query sizes (candidates per query), parsed from its text form by :meth:`parse`.

    Attributes
    ----------
    kind : str
        ``"fixed"``, ``"normal"``, ``"lognormal"`` or ``"table"``.
    params : tuple
        ``(n,)``, ``(mean, std)``, ``(mu, sigma)`` (of the underlying normal) or the table's values.
    low, high : int
        Sizes are rounded to integers and clipped to ``[low, high]`` (DeepRecSys: ``[1, 1024]``).
    text : str
        The form it was parsed from (kept in a trace's header).
    """

    kind: str
    params: tuple
    low: int = 1
    high: int = 1024
    text: str = ""

    @classmethod
    def parse(cls, text, *, low=1, high=1024):
        """Read ``fixed:N``, ``normal:MEAN,STD``, ``lognormal:MU,SIGMA``, ``table:NAME`` (``mlperf-dlrm``) or
        ``table:V1,V2,...``.

        Raises
        ------
        ValueError
            Naming the text and what is wrong with it.
        """
        if not isinstance(low, int) or not isinstance(high, int) or not 1 <= low <= high:
            raise ValueError(f"Query sizes must be clipped to 1 <= low <= high, not [{low}, {high}]")
        kind, _, rest = str(text).partition(":")
        if kind == "fixed":
            (n,) = _numbers(rest, 1, "fixed:N")
            if n != int(n) or n < 1:
                raise ValueError(f"fixed:N needs a positive integer, not {rest!r}")
            return cls("fixed", (int(n),), low, max(high, int(n)), text)
        if kind in ("normal", "lognormal"):
            a, b = _numbers(rest, 2, f"{kind}:{'MEAN,STD' if kind == 'normal' else 'MU,SIGMA'}")
            if b < 0:
                raise ValueError(f"{kind}: the spread must be >= 0, not {b}")
            return cls(kind, (a, b), low, high, text)
        if kind == "table":
            if rest in _TABLES:
                values = _TABLES[rest]
                if min(values) < low or max(values) > high:
                    raise ValueError(f"table: {rest} has sizes outside [{low}, {high}] (the clipping bounds)")
                return cls("table", values, low, high, text)
            try:
                values = _numbers(rest, len(rest.split(",")), "table:V1,V2,...")
            except ValueError:
                values = None
            if not values or any(value != int(value) or value < 1 for value in values):
                raise ValueError(f"table: needs a known name ({', '.join(_TABLES)}) or positive integers, not "
                                 f"{rest!r}")
            values = tuple(int(value) for value in values)
            if min(values) < low or max(values) > high:
                raise ValueError(f"table: {text!r} has sizes outside [{low}, {high}] (the clipping bounds)")
            return cls("table", values, low, high, text)
        raise ValueError(f"Unknown size distribution {text!r}: use fixed:N, normal:MEAN,STD, lognormal:MU,SIGMA "
                         f"or table:NAME|V1,V2,...")

    @property
    def largest(self):
        """The largest size this distribution gives."""
        if self.kind == "fixed":
            return self.params[0]
        return max(self.params) if self.kind == "table" else self.high

    def draw(self, rng, n):
        """``n`` sizes from ``rng`` (a :class:`numpy.random.Generator`), as int64."""
        if self.kind == "fixed":
            return np.full(n, self.params[0], dtype=np.int64)
        if self.kind == "normal":
            values = rng.normal(*self.params, size=n)
        elif self.kind == "lognormal":
            values = rng.lognormal(*self.params, size=n)
        else:
            values = np.asarray(self.params)[rng.integers(0, len(self.params), size=n)]
        return np.clip(np.rint(values), self.low, self.high).astype(np.int64)


@dataclass(frozen=True)
class ArrivalProcess:
    """How queries arrive, parsed from its text form by :meth:`parse`.

    Attributes
    ----------
    kind : str
        ``"poisson"``: exponential gaps of mean ``1 / qps`` seconds; ``"recpipe"``: gaps of
        ``numpy.random.poisson(mean_ms)`` whole milliseconds, as RecPipe's and DeepRecSys's load generators draw
        them.
    rate : float
        Queries per second (``poisson``) or the mean gap in milliseconds (``recpipe``).
    text : str
    """

    kind: str
    rate: float
    text: str = ""

    @classmethod
    def parse(cls, text):
        """Read ``poisson:QPS`` or ``recpipe:MEAN_MS``.

        Raises
        ------
        ValueError
            Naming the text and what is wrong with it.
        """
        kind, _, rest = str(text).partition(":")
        if kind not in ("poisson", "recpipe"):
            raise ValueError(f"Unknown arrival process {text!r}: use poisson:QPS or recpipe:MEAN_MS")
        (rate,) = _numbers(rest, 1, f"{kind}:{'QPS' if kind == 'poisson' else 'MEAN_MS'}")
        if rate <= 0:
            raise ValueError(f"{kind}: the rate must be positive, not {rest!r}")
        # Gaps of at most a day on average keep a trace's times within int64 nanoseconds.
        if (kind == "poisson" and rate < 1 / 86_400) or (kind == "recpipe" and rate > 86_400_000):
            raise ValueError(f"{kind}: a mean gap of more than a day ({rest!r}) is not a load")
        return cls(kind, rate, text)

    def gaps_ns(self, rng, n):
        """``n`` gaps between arrivals in nanoseconds (int64; the first query arrives at 0)."""
        if self.kind == "poisson":
            return np.rint(rng.exponential(1e9 / self.rate, size=n)).astype(np.int64)
        return rng.poisson(self.rate, size=n).astype(np.int64) * 1_000_000


@dataclass(frozen=True)
class QueryRecord:
    """One query of a trace: number ``q``, arrival ``t_ns`` from the trace's start, ``size`` candidates, the
    samples ``first`` to ``first + size - 1`` of the data stream."""

    q: int
    t_ns: int
    size: int
    first: int


@dataclass(frozen=True)
class TraceHeader:
    """A trace's first line: how it was made.

    Attributes
    ----------
    queries : int
        Records that follow.
    seed : int
    sizes, arrivals : str
        The text forms of the :class:`SizeDist` and :class:`ArrivalProcess`.
    min_size, max_size : int
        The sizes' clipping bounds.
    data : dict
        The data stream: ``{"kind": "synthetic", ...}`` (the :class:`~rpaccel.host.data.SyntheticConfig`'s seed,
        max_rows, skew and ctr, and the stream's first sample ``start``) or ``{"kind": "file", "path": ...,
        "samples": M}``.
    """

    queries: int
    seed: int
    sizes: str
    arrivals: str
    data: dict
    min_size: int = 1
    max_size: int = 1024

    def to_json(self):
        return {"format": TRACE_FORMAT, "version": TRACE_VERSION, "queries": self.queries, "seed": self.seed,
                "sizes": self.sizes, "min_size": self.min_size, "max_size": self.max_size,
                "arrivals": self.arrivals, "data": self.data}


class _DataFieldError(ValueError):
    """A field of a trace's ``data`` is missing or bad (``field`` names it)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def _check_data(data):
    """Check a trace's ``data`` object field by field (raising :class:`_DataFieldError` naming the field)."""
    if not isinstance(data, dict) or data.get("kind") not in ("synthetic", "file"):
        raise _DataFieldError("kind", f"must be {{'kind': 'synthetic' or 'file', ...}}, not {data!r}")

    def need(name, kind, check, what):
        value = data.get(name)
        if name not in data:
            raise _DataFieldError(name, "missing")
        if not isinstance(value, kind) or isinstance(value, bool) or not check(value):
            raise _DataFieldError(name, f"must be {what}, not {value!r}")

    if data["kind"] == "file":
        need("path", str, bool, "a file's path")
        need("samples", int, lambda v: v >= 1, "a positive integer")
    else:
        need("seed", int, lambda v: v >= 0, "a non-negative integer")
        need("max_rows", int, lambda v: v >= 1, "a positive integer")
        need("skew", (int, float), lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
        need("ctr", (int, float), lambda v: 0 < v < 1, "in (0, 1)")
        need("start", int, lambda v: v >= 0, "a non-negative integer")


def generate_trace(queries, *, sizes, arrivals, data, seed=1):
    """Generate a trace: its :class:`TraceHeader` and an iterator over its :class:`QueryRecord` s.

    Parameters
    ----------
    queries : int
        Queries in the trace (positive).
    sizes : str or SizeDist
    arrivals : str or ArrivalProcess
    data : dict
        The data stream (see :class:`TraceHeader`).
    seed : int
        Seeds the sizes and the gaps (two independent streams, so changing the load keeps the sizes).

    Raises
    ------
    ValueError
        On a bad argument, naming it.
    """
    if not isinstance(queries, int) or queries < 1:
        raise ValueError(f"A trace needs a positive number of queries, not {queries!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"The seed must be a non-negative integer, not {seed!r}")
    sizes = sizes if isinstance(sizes, SizeDist) else SizeDist.parse(sizes)
    arrivals = arrivals if isinstance(arrivals, ArrivalProcess) else ArrivalProcess.parse(arrivals)
    try:
        _check_data(data)
    except _DataFieldError as error:
        raise ValueError(f"A trace's data: {error.field}: {error}") from None
    if data["kind"] == "file" and sizes.largest > data["samples"]:
        raise ValueError(f"Queries of up to {sizes.largest} candidates cannot be taken from a data file of "
                         f"{data['samples']} samples")
    header = TraceHeader(queries, seed, sizes.text, arrivals.text, dict(data), sizes.low, sizes.high)
    return header, _records(header, sizes, arrivals)


def _records(header, sizes, arrivals):
    size_rng, gap_rng = (np.random.default_rng(stream) for stream in np.random.SeedSequence(header.seed).spawn(2))
    data = header.data
    wrap = data["samples"] if data["kind"] == "file" else None
    t, first = 0, data.get("start", 0)
    for block in range(0, header.queries, _BLOCK):
        n = min(_BLOCK, header.queries - block)
        # Whole blocks are drawn so that a longer trace of the same seed begins with the shorter one.
        block_sizes, gaps = sizes.draw(size_rng, _BLOCK)[:n], arrivals.gaps_ns(gap_rng, _BLOCK)[:n]
        if block == 0:
            gaps[0] = 0
        for i in range(n):
            t += int(gaps[i])
            size = int(block_sizes[i])
            yield QueryRecord(block + i, t, size, first)
            first = first + size if wrap is None else (first + size) % wrap


def _line(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"


def write_trace(path, header, records, *, progress=None):
    """Write a trace to ``path`` (``.jsonl``, or ``.jsonl.gz`` compressed) all at once: the file appears only when
    complete (an interrupted write leaves no partial file and an existing file unchanged). Returns the records
    written."""
    path = Path(path)
    count = 0
    with replacing(path) as tmp, open(tmp, "wb") as raw:
        handle = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.suffix == ".gz" else raw
        with io.TextIOWrapper(handle, encoding="utf-8", newline="\n") as text:
            text.write(_line(header.to_json()))
            for record in records:
                text.write(_line({"q": record.q, "t_ns": record.t_ns, "size": record.size, "first": record.first}))
                count += 1
                if progress is not None and count % 1024 == 0:
                    progress.update(1024)
            if count != header.queries:     # before the file is put in place
                raise ValueError(f"{path}: the header announces {header.queries} queries, {count} were given")
        if progress is not None:
            progress.update(count % 1024)
    return count


def _open_lines(path):
    path = Path(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed by the reader, which outlives this call)
    except OSError as error:
        raise DataError(path, None, None, f"cannot open: {error.strerror}") from None
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


def _int_field(path, number, obj, name, low=0):
    value = obj.get(name)
    if name not in obj:
        raise DataError(path, number, name, "missing")
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise DataError(path, number, name, f"must be an integer >= {low}, not {value!r}")
    return value


def _parse(path, number, text):
    if not text.endswith("\n"):
        raise DataError(path, number, None, "truncated line (no end of line)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(path, number, None, f"not JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(obj, dict):
        raise DataError(path, number, None, f"must be a JSON object, not {type(obj).__name__}")
    return obj


def _header(path, lines):
    try:
        text = next(lines)
    except StopIteration:
        raise DataError(path, None, None, "empty: not a trace") from None
    obj = _parse(path, 1, text)
    if obj.get("format") != TRACE_FORMAT:
        raise DataError(path, 1, "format", f"not an rpaccel trace (format {obj.get('format')!r})")
    if obj.get("version") != TRACE_VERSION:
        raise DataError(path, 1, "version", f"version {obj.get('version')!r} is not one this rpaccel reads "
                                            f"({TRACE_VERSION})")
    for name in ("sizes", "arrivals"):
        if not isinstance(obj.get(name), str):
            raise DataError(path, 1, name, f"must be a string, not {obj.get(name)!r}")
    try:
        _check_data(obj.get("data"))
    except _DataFieldError as error:
        raise DataError(path, 1, f"data.{error.field}", str(error)) from None
    for name in ("min_size", "max_size"):
        _int_field(path, 1, obj, name, 1)
    if obj["min_size"] > obj["max_size"]:
        raise DataError(path, 1, "min_size", f"{obj['min_size']} is above max_size {obj['max_size']}")
    return TraceHeader(_int_field(path, 1, obj, "queries", 1), _int_field(path, 1, obj, "seed"), obj["sizes"],
                       obj["arrivals"], obj["data"], obj["min_size"], obj["max_size"])


def read_trace(path):
    """Open a trace: its :class:`TraceHeader` and an iterator that reads its :class:`QueryRecord` s one line at a
    time (bounded memory), checking each.

    Raises
    ------
    rpaccel.host.data.DataError
        At the header, or while iterating at the first bad record, naming the file, the line and the field: not
        JSON, a missing or mistyped field, a query number out of sequence, an arrival before the previous one, a
        sample beyond a data file, more or fewer records than the header announces (``truncated``), a corrupted
        ``.gz``.
    """
    handle = _open_lines(path)
    try:
        header = _header(path, iter(handle))
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as error:
        handle.close()
        raise DataError(path, 1, None, f"unreadable: {error}") from None
    except BaseException:
        handle.close()
        raise
    return header, _read_records(path, handle, header)


def _read_records(path, handle, header):
    wrap = header.data["samples"] if header.data["kind"] == "file" else None
    previous, count, number = 0, 0, 1
    with handle:
        try:
            for number, text in enumerate(handle, start=2):
                obj = _parse(path, number, text)
                q = _int_field(path, number, obj, "q")
                if q != count:
                    raise DataError(path, number, "q", f"query {q} out of sequence (expected {count})")
                if count == header.queries:
                    raise DataError(path, number, None, f"more records than the {header.queries} the header "
                                                        "announces")
                t = _int_field(path, number, obj, "t_ns")
                if t < previous:
                    raise DataError(path, number, "t_ns", f"arrival {t} before the previous query's ({previous})")
                size = _int_field(path, number, obj, "size", 1)
                first = _int_field(path, number, obj, "first")
                if wrap is not None and (first >= wrap or size > wrap):
                    raise DataError(path, number, "first" if first >= wrap else "size",
                                    f"beyond the data file's {wrap} samples")
                previous, count = t, count + 1
                yield QueryRecord(q, t, size, first)
        except (UnicodeDecodeError, OSError, EOFError, zlib.error) as error:
            raise DataError(path, number + 1, None, f"unreadable: {error}") from None
    if count != header.queries:
        raise DataError(path, number + 1, None, f"truncated: the header announces {header.queries} queries, the "
                                                f"file holds {count}")


def trace_summary(header, records):
    """What a trace holds: queries, duration, offered load, size and gap statistics (reads ``records`` once).

    Returns
    -------
    dict
        ``queries``, ``duration_s`` (first to last arrival), ``offered_qps`` (queries over the duration),
        ``candidates`` (total), ``size`` and ``gap_ms`` (``min``, ``mean``, ``p50``, ``p95``, ``p99``, ``max``),
        ``zero_gaps`` (share of gaps of 0 ns), and the header's ``seed``, ``sizes``, ``arrivals`` and ``data``.
    """
    sizes, times = [], []
    for record in records:
        sizes.append(record.size)
        times.append(record.t_ns)
    sizes, times = np.asarray(sizes, dtype=np.int64), np.asarray(times, dtype=np.int64)
    gaps = np.diff(times) / 1e6

    def stats(values):
        if not len(values):
            return None
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"min": float(values.min()), "mean": float(values.mean()), "p50": float(p50), "p95": float(p95),
                "p99": float(p99), "max": float(values.max())}

    duration = float(times[-1] - times[0]) / 1e9 if len(times) else 0.0
    return {"queries": len(sizes), "duration_s": duration,
            "offered_qps": (len(times) - 1) / duration if duration > 0 else None,
            "candidates": int(sizes.sum()), "size": stats(sizes), "gap_ms": stats(gaps),
            "zero_gaps": float(np.mean(gaps == 0)) if len(gaps) else None,
            "seed": header.seed, "sizes": header.sizes, "arrivals": header.arrivals, "data": header.data}


class TraceData:
    """The samples a trace's queries rank: :meth:`query` gives a :class:`QueryRecord`'s candidates as
    :class:`~rpaccel.host.data.Records`, from the synthetic stream (generated again from the header's options) or
    from the data file (read once, wrapping around at its end).

    Parameters
    ----------
    header : TraceHeader
    base : path-like, optional
        Folder a relative data-file path is taken from: the trace's (default: the current folder).

    Raises
    ------
    rpaccel.host.data.DataError
        If the data file cannot be read or no longer holds the header's sample count.
    """

    def __init__(self, header, base=None):
        from ..data import SyntheticConfig, SyntheticCriteo, load_records

        data = header.data
        if data["kind"] == "synthetic":
            config = SyntheticConfig.criteo(max_rows=data["max_rows"], skew=data["skew"], ctr=data["ctr"],
                                            seed=data["seed"])
            self._generator, self._records = SyntheticCriteo(config), None
        else:
            path = Path(data["path"]) if base is None else Path(base) / data["path"]
            self._generator, self._records = None, load_records(path)
            if len(self._records) != data["samples"]:
                raise DataError(path, None, None, f"holds {len(self._records)} samples; the trace was made for "
                                                  f"{data['samples']}")

    def query(self, record):
        """The candidates of ``record``: samples ``first`` to ``first + size - 1`` (wrapping around a file)."""
        if self._records is None:
            return self._generator.generate(record.size, start=record.first)
        index = (record.first + np.arange(record.size)) % len(self._records)
        return self._records.take(index)
