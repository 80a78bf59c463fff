"""Click-through data: a synthetic Criteo-like generator, the Criteo Kaggle TSV format, DLRM's preprocessing.

Records
    :class:`Records` holds samples as they are in a file: a 0/1 label, integer dense features (with a
    missing mask) and 32-bit categorical values (with a missing mask), shaped ``(n, tables, pooling)`` so
    multi-hot models (RMC1-3 pool 20-120 IDs per table) fit too.

The Criteo Kaggle TSV format
    One sample per line: ``label<TAB>I1..I13<TAB>C1..C26``: the label ``0`` or ``1``, 13 integer fields, 26
    categorical fields of (up to) 8 hexadecimal digits; any feature field may be empty (missing). The reader
    (:func:`read_criteo_tsv`) streams a file (``.gz`` too) in chunks and reports a bad line as
    ``file:line: field: what is wrong``, or skips and counts bad lines with ``on_error="skip"``.

Preprocessing (:func:`preprocess`), as DLRM does for Criteo
    dense ``x -> log(1 + max(x, 0))`` (missing -> 0); categorical value ``v -> v mod rows`` of the model's
    table (missing -> 0), i.e. hashing into the table size.

The synthetic generator (:class:`SyntheticCriteo`)
    A deterministic stream of samples: dense features log-normal with per-feature missing rates, categorical
    IDs Zipf-distributed over each table (:class:`rpaccel.zipf.ZipfSampler`, hot IDs scattered by a fixed
    permutation), written as 32-bit values ``id + rows * k`` with a per-ID hash ``k``, so hashing into a table
    of the same size gives back ``id`` and a smaller table collides as real hashing does. Labels come from a
    planted model: ``logit = b + w_d * g(dense) + w_1 * sum_t a_t[id_t] + w_2 * sum_{i<j} <u_i, u_j>``, with
    per-ID biases ``a_t``, per-ID latent vectors ``u_t`` of dimension ``latent`` (32 by default) and a dense
    latent vector ``u_0``. A model whose embeddings are narrower than ``latent`` cannot represent the pairwise
    term exactly, so bigger models can learn more. Sample ``i`` depends only on the seed and ``i``.
"""

import gzip
import io
import math
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..zipf import ZipfSampler
from .files import FileFormatError, load_arrays, replacing, save_arrays
from .models import CRITEO_KAGGLE_ROWS

__all__ = ["CRITEO_DENSE", "CRITEO_FIELDS", "CRITEO_TABLES", "DataError", "ReadStats", "Records",
           "SyntheticConfig", "SyntheticCriteo", "load_records", "preprocess", "read_criteo_tsv",
           "save_records", "split_data", "write_criteo_tsv"]

CRITEO_DENSE = 13
CRITEO_TABLES = 26
CRITEO_FIELDS = 1 + CRITEO_DENSE + CRITEO_TABLES
FIELD_NAMES = ("label", *(f"I{i}" for i in range(1, CRITEO_DENSE + 1)), *(f"C{i}" for i in range(1, CRITEO_TABLES + 1)))
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_CHUNK = 65536
_RECORDS_FORMAT = "rpaccel-records-1"


class DataError(ValueError):
    """A data file or value is bad; the message names the file, the line and the field."""

    def __init__(self, path, line, field, message):
        self.path, self.line, self.field, self.reason = str(path), line, field, message
        where = self.path + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


@dataclass
class Records:
    """Samples as stored in a data file (before preprocessing).

    Attributes
    ----------
    labels : numpy.ndarray
        ``(n,)`` int8, 0 or 1.
    dense, dense_missing : numpy.ndarray
        ``(n, D)`` int64 values (0 where missing) and bool mask.
    cats, cat_missing : numpy.ndarray
        ``(n, T, P)`` int64 categorical values in ``[0, 2**32)`` (0 where missing) and bool mask.
    """

    labels: np.ndarray
    dense: np.ndarray
    dense_missing: np.ndarray
    cats: np.ndarray
    cat_missing: np.ndarray

    def __len__(self):
        return len(self.labels)

    @property
    def num_dense(self):
        return self.dense.shape[1]

    @property
    def num_tables(self):
        return self.cats.shape[1]

    @property
    def pooling(self):
        return self.cats.shape[2]

    def take(self, index):
        """The records at ``index`` (a slice or an index array)."""
        return Records(self.labels[index], self.dense[index], self.dense_missing[index], self.cats[index],
                       self.cat_missing[index])

    @staticmethod
    def concatenate(parts):
        parts = list(parts)
        if not parts:
            raise ValueError("no records to concatenate")
        return Records(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                         ("labels", "dense", "dense_missing", "cats", "cat_missing")))

    def arrays(self):
        return {"labels": self.labels, "dense": self.dense, "dense_missing": self.dense_missing,
                "cats": self.cats, "cat_missing": self.cat_missing}


def check_shape(records, spec, where="data"):
    """Raise :class:`DataError` unless the records have the model's dense inputs and tables."""
    if records.num_dense != spec.dense or records.num_tables != spec.num_tables:
        raise DataError(where, None, None,
                        f"has {records.num_dense} dense and {records.num_tables} categorical features per sample, "
                        f"but model {spec.name} takes {spec.dense} and {spec.num_tables}")


def preprocess(records, spec):
    """DLRM's preprocessing for ``spec``: ``(dense, ids)``.

    Returns
    -------
    dense : numpy.ndarray
        ``(n, D)`` float32, ``log(1 + max(x, 0))``, 0 where missing.
    ids : numpy.ndarray
        ``(n, T, P)`` int64, ``value mod rows_t``, 0 where missing.
    """
    check_shape(records, spec)
    dense = np.log1p(np.maximum(records.dense, 0).astype(np.float64)).astype(np.float32)
    dense[records.dense_missing] = 0.0
    rows = np.asarray(spec.tables, dtype=np.int64)[None, :, None]
    ids = np.where(records.cat_missing, 0, records.cats % rows)
    return dense, ids


# --- the Criteo TSV format ----------------------------------------------------------------------------------


@dataclass
class ReadStats:
    """What a reader saw: lines read, records kept, lines skipped by reason and the first few messages."""

    lines: int = 0
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def skip(self, error):
        self.skipped[error.reason.split(" (")[0] if error.field is None else f"bad {error.field}"] += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    @property
    def total_skipped(self):
        return sum(self.skipped.values())


def _not_ascii(path, number, line, error):
    """The :class:`DataError` of a line (bytes) holding a byte that is not ASCII."""
    field = line.count(b"\t", 0, error.start)
    where = f" in field {FIELD_NAMES[field]}" if field < CRITEO_FIELDS else ""
    return DataError(path, number, None,
                     f"not ASCII text (byte 0x{line[error.start]:02x}{where}, column {error.start + 1})")


def _parse_line(text, path, number):
    fields = text.split("\t")
    if len(fields) != CRITEO_FIELDS:
        raise DataError(path, number, None, f"expected {CRITEO_FIELDS} tab-separated fields (label, "
                        f"{CRITEO_DENSE} integer, {CRITEO_TABLES} categorical), found {len(fields)}")
    label = fields[0]
    if label not in ("0", "1"):
        raise DataError(path, number, "label", f"{label!r} is not 0 or 1")
    dense, dense_missing = [0] * CRITEO_DENSE, [False] * CRITEO_DENSE
    for i in range(CRITEO_DENSE):
        s = fields[1 + i]
        if not s:
            dense_missing[i] = True
            continue
        digits = s[1:] if s[0] == "-" else s
        if not digits or not _DIGITS.issuperset(digits):
            raise DataError(path, number, FIELD_NAMES[1 + i], f"{s!r} is not an integer")
        if len(digits) > 18:
            raise DataError(path, number, FIELD_NAMES[1 + i], f"{s!r} does not fit 64 bits")
        dense[i] = int(s)
    cats, cat_missing = [0] * CRITEO_TABLES, [False] * CRITEO_TABLES
    for i in range(CRITEO_TABLES):
        s = fields[1 + CRITEO_DENSE + i]
        if not s:
            cat_missing[i] = True
            continue
        if len(s) > 8 or not _HEX.issuperset(s):
            raise DataError(path, number, FIELD_NAMES[1 + CRITEO_DENSE + i],
                            f"{s!r} is not a hexadecimal value of at most 8 digits")
        cats[i] = int(s, 16)
    return int(label), dense, dense_missing, cats, cat_missing


def _records_from_rows(rows):
    n = len(rows)
    labels = np.fromiter((r[0] for r in rows), dtype=np.int8, count=n)
    dense = np.array([r[1] for r in rows], dtype=np.int64).reshape(n, CRITEO_DENSE)
    dense_missing = np.array([r[2] for r in rows], dtype=bool).reshape(n, CRITEO_DENSE)
    cats = np.array([r[3] for r in rows], dtype=np.int64).reshape(n, CRITEO_TABLES, 1)
    cat_missing = np.array([r[4] for r in rows], dtype=bool).reshape(n, CRITEO_TABLES, 1)
    return Records(labels, dense, dense_missing, cats, cat_missing)


def read_criteo_tsv(path, *, chunk=_CHUNK, limit=None, skip=0, on_error="raise", stats=None):
    """Stream a Criteo Kaggle TSV file (``.gz`` too) as :class:`Records` chunks.

    Parameters
    ----------
    path : path-like
        The file.
    chunk : int
        Records per yielded chunk.
    limit : int, optional
        Stop after this many records.
    skip : int
        Records to skip first (after bad lines are dropped).
    on_error : ``"raise"`` or ``"skip"``
        Raise :class:`DataError` on the first bad line, or skip bad lines and count them in ``stats``.
    stats : ReadStats, optional
        Filled with what was read.

    Raises
    ------
    DataError
        For a missing file, a bad line (``file:line: field: what``) or an empty result.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, None, "is a folder, not a data file")
    if not path.is_file():
        raise DataError(path, None, None, "no such file")
    rows, kept = [], 0
    try:
        # Lines are split as bytes and decoded one by one, so a byte that is not ASCII is reported on its own
        # line (and can be skipped like any bad line), not on the first line of the decoder's buffer.
        with _read_binary(path) as handle:
            for number, line in enumerate(handle, start=1):
                stats.lines = number
                try:
                    try:
                        text = line.decode("ascii").rstrip("\r\n")
                    except UnicodeDecodeError as error:
                        raise _not_ascii(path, number, line, error) from None
                    if not text:
                        raise DataError(path, number, None, "empty line")
                    row = _parse_line(text, path, number)
                except DataError as error:
                    if on_error == "raise":
                        raise
                    stats.skip(error)
                    continue
                kept += 1
                if kept <= skip:
                    continue
                rows.append(row)
                stats.records += 1
                if len(rows) == chunk:
                    yield _records_from_rows(rows)
                    rows = []
                if limit is not None and stats.records >= limit:
                    break
    except (OSError, EOFError) as error:
        raise DataError(path, None, None, f"cannot read: {error}") from None
    if rows:
        yield _records_from_rows(rows)


@contextmanager
def _write_binary(path):
    """A binary handle whose bytes become ``path`` once the ``with`` block ends without error (gzip-compressed,
    with no time stamp, if ``path`` ends in ``.gz``)."""
    path = Path(path)
    with (replacing(path) as tmp, open(tmp, "wb") as raw,
          gzip.GzipFile(path.name, "wb", fileobj=raw, mtime=0) if path.suffix == ".gz" else nullcontext(raw) as out):
        yield out


def _read_binary(path):
    return gzip.open(path, "rb") if Path(path).suffix == ".gz" else open(path, "rb")


def write_criteo_tsv(path, records):
    """Write records in the Criteo Kaggle TSV format (gzip-compressed if ``path`` ends in ``.gz``).

    ``records`` is a :class:`Records` or an iterable of them (written one after the other, so a long stream
    never sits in memory whole). The file appears only once it is complete (see
    :func:`rpaccel.host.files.replacing`); a ``.gz`` file carries no timestamp, so the same records give the same
    bytes.
    """
    path = Path(path)
    parts = [records] if isinstance(records, Records) else records
    with _write_binary(path) as binary, io.TextIOWrapper(binary, encoding="ascii", newline="") as handle:
        for part in parts:
            _write_tsv_lines(handle, part)
    return path


def _write_tsv_lines(handle, records):
    if records.num_dense != CRITEO_DENSE or records.num_tables != CRITEO_TABLES or records.pooling != 1:
        raise ValueError(f"the Criteo TSV format holds {CRITEO_DENSE} dense and {CRITEO_TABLES} one-hot categorical "
                         f"features, not {records.num_dense} and {records.num_tables} x {records.pooling}")
    for start in range(0, len(records), 16384):
        part = records.take(slice(start, start + 16384))
        dense = part.dense.tolist()
        dense_missing = part.dense_missing.tolist()
        cats = part.cats[:, :, 0].tolist()
        cat_missing = part.cat_missing[:, :, 0].tolist()
        lines = []
        for label, d, dm, c, cm in zip(part.labels.tolist(), dense, dense_missing, cats, cat_missing):
            fields = [str(label)]
            fields += ["" if m else str(v) for v, m in zip(d, dm)]
            fields += ["" if m else f"{v:08x}" for v, m in zip(c, cm)]
            lines.append("\t".join(fields))
        handle.write("\n".join(lines) + "\n")


def save_records(path, records):
    """Write records of any shape to a deterministic ``.npz`` file (see :mod:`rpaccel.host.files`)."""
    return save_arrays(path, {"format": _RECORDS_FORMAT, **records.arrays()})


def load_records(path, *, limit=None, skip=0, on_error="raise", stats=None, progress=None):
    """Read a whole data file: Criteo TSV (``.tsv``, ``.txt``, ``.gz`` or anything else) or records ``.npz``."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            arrays = load_arrays(path, kind="records file",
                                 required=("format", "labels", "dense", "dense_missing", "cats", "cat_missing"))
        except FileFormatError as error:
            raise DataError(path, None, None, str(error).split(": ", 1)[1]) from None
        if arrays["format"] != _RECORDS_FORMAT:
            raise DataError(path, None, None, f"unknown records format {arrays['format']!r}")
        records = Records(*(arrays[k] for k in ("labels", "dense", "dense_missing", "cats", "cat_missing")))
        end = None if limit is None else skip + limit
        records = records.take(slice(skip, end))
        if stats is not None:
            stats.lines = stats.records = len(records)
    else:
        parts = []
        for part in read_criteo_tsv(path, limit=limit, skip=skip, on_error=on_error, stats=stats):
            parts.append(part)
            if progress is not None:
                progress.update(len(part))
        if not parts:
            raise DataError(path, None, None, "holds no records" + (f" after skipping {skip}" if skip else ""))
        records = Records.concatenate(parts)
    if len(records) == 0:
        raise DataError(path, None, None, "holds no records")
    return records


def split_data(path, train_path, test_path, test_samples, *, progress=None):
    """Split a data file in two: its last ``test_samples`` samples into ``test_path``, the others into
    ``train_path``, in the input's format (a TSV file line by line, as it is; a records ``.npz`` by samples).

    The test part is the end of the file, as DLRM holds out the last day of Criteo's click logs: data in time
    order is tested on what came after training. Both files appear only when complete.

    ``progress`` (a :class:`~rpaccel.host.progress.Progress`), if given, counts the samples written.

    Returns
    -------
    (int, int)
        Samples (lines of a TSV file) written to ``train_path`` and ``test_path``.

    Raises
    ------
    DataError
        If the file is missing or unreadable, or holds ``test_samples`` samples or fewer.
    """
    if not isinstance(test_samples, int) or test_samples <= 0:
        raise ValueError(f"test_samples must be a positive integer, not {test_samples!r}")
    path = Path(path)
    outputs = (Path(train_path), Path(test_path))
    if len({p.suffix == ".npz" for p in (path, *outputs)}) > 1:
        raise DataError(path, None, None, "a split writes the input's format: records .npz to .npz files, "
                        "a TSV file to TSV files (.tsv, .txt, .gz)")
    if path.suffix == ".npz":
        records = load_records(path)
        total = len(records)
        if total <= test_samples:
            raise DataError(path, None, None, f"holds {total:,} samples, none left for training after "
                            f"{test_samples:,} for the test file")
        save_records(outputs[0], records.take(slice(0, total - test_samples)))
        save_records(outputs[1], records.take(slice(total - test_samples, None)))
        if progress is not None:
            progress.update(total)
        return total - test_samples, test_samples
    if path.is_dir():
        raise DataError(path, None, None, "is a folder, not a data file")
    if not path.is_file():
        raise DataError(path, None, None, "no such file")
    try:
        with _read_binary(path) as handle:
            total = sum(1 for _ in handle)
        if total <= test_samples:
            raise DataError(path, None, None, f"holds {total:,} lines, none left for training after "
                            f"{test_samples:,} for the test file")
        with _read_binary(path) as handle, _write_binary(outputs[0]) as train, _write_binary(outputs[1]) as test:
            for number, line in enumerate(handle, start=1):
                out = train if number <= total - test_samples else test
                out.write(line if line.endswith(b"\n") else line + b"\n")
                if progress is not None and (number % _CHUNK == 0 or number == total):
                    progress.update(number - progress.done)
    except (OSError, EOFError) as error:
        raise DataError(path, None, None, f"cannot read: {error}") from None
    return total - test_samples, test_samples


# --- the synthetic generator --------------------------------------------------------------------------------

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x):
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic click data.

    Parameters
    ----------
    dense : int
        Dense features (13 for the Criteo format).
    rows : tuple of int
        Distinct IDs of each categorical feature (26 for the Criteo format).
    pooling : int
        IDs per categorical feature and sample (1 for the Criteo format).
    skew : float
        Zipf exponent of the IDs (0 uniform; about 1 for real traces).
    latent : int
        Dimension of the planted model's per-ID vectors.
    ctr : float
        Target fraction of positive labels (Criteo Kaggle: about 0.26).
    weights : tuple of float
        Weights of the planted logit's dense, per-ID and pairwise terms (each term has unit variance).
    head : float
        The planted per-ID parameters of Zipf rank ``r`` are scaled by ``(1 + r / head) ** -0.5``: frequent IDs
        carry the signal, the long tail (which no model sees often enough to learn) adds little noise.
    missing : bool
        Leave fields empty at Criteo-like per-feature rates.
    seed : int
        Seed of the planted model and of the samples.
    """

    dense: int = CRITEO_DENSE
    rows: tuple = tuple(min(r, 20_000) for r in CRITEO_KAGGLE_ROWS)
    pooling: int = 1
    skew: float = 1.05
    latent: int = 32
    ctr: float = 0.25
    weights: tuple = (0.6, 0.8, 2.0)
    head: float = 100.0
    missing: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("dense", "pooling", "latent", "seed"):
            value = getattr(self, name)
            low = 0 if name in ("dense", "seed") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
        if not isinstance(self.rows, tuple) or not self.rows or not all(
                isinstance(r, int) and 0 < r < 2**32 for r in self.rows):
            raise ValueError(f"rows must be a non-empty tuple of integers in [1, 2**32), not {self.rows!r}")
        if not (isinstance(self.skew, (int, float)) and math.isfinite(self.skew) and self.skew >= 0):
            raise ValueError(f"skew must be a finite number >= 0, not {self.skew!r}")
        if not (isinstance(self.ctr, (int, float)) and 0 < self.ctr < 1):
            raise ValueError(f"ctr must be in (0, 1), not {self.ctr!r}")
        if not (isinstance(self.head, (int, float)) and self.head > 0):
            raise ValueError(f"head must be a positive number, not {self.head!r}")
        if len(self.weights) != 3 or not all(isinstance(w, (int, float)) and w >= 0 for w in self.weights):
            raise ValueError(f"weights must be three numbers >= 0, not {self.weights!r}")

    @classmethod
    def criteo(cls, *, max_rows=20_000, **kwargs):
        """The Criteo Kaggle layout (13 dense, 26 one-hot tables) with the Kaggle cardinalities capped at
        ``max_rows``."""
        return cls(rows=tuple(min(r, max_rows) for r in CRITEO_KAGGLE_ROWS), **kwargs)

    @classmethod
    def for_model(cls, spec, **kwargs):
        """Data shaped for ``spec``: its dense inputs, table rows and pooling."""
        return cls(dense=spec.dense, rows=tuple(spec.tables), pooling=spec.pooling, **kwargs)


class SyntheticCriteo:
    """A deterministic stream of Criteo-like samples with labels from a planted model (see the module notes).

    Parameters
    ----------
    config : SyntheticConfig
    """

    #: Planted per-ID parameters exist for the first ``POOL`` Zipf ranks of a table; rarer ranks share them
    #: (``rank mod POOL``), which bounds memory for big tables.
    POOL = 1 << 16
    HIDDEN = 16

    def __init__(self, config=None):
        self.config = config = config or SyntheticConfig()
        rng = np.random.default_rng([config.seed, 0])
        d, latent = config.dense, config.latent
        self.dense_mu = rng.uniform(0.3, 3.5, d)
        self.dense_sigma = rng.uniform(0.6, 1.6, d)
        self.dense_missing_rate = np.where(rng.random(d) < 0.5, 0.0, rng.uniform(0.0, 0.45, d)) \
            if config.missing else np.zeros(d)
        tables = len(config.rows)
        cat_rate = np.where(rng.random(tables) < 0.6, 0.0, rng.uniform(0.0, 0.45, tables))
        self.cat_missing_rate = cat_rate if config.missing and config.pooling == 1 else np.zeros(tables)
        self.samplers = [ZipfSampler(rows, config.skew, permute=np.random.default_rng([config.seed, 2, t]))
                         for t, rows in enumerate(config.rows)]
        self._salt = rng.integers(0, 2**62, tables, dtype=np.int64).astype(np.uint64)
        hidden = self.HIDDEN
        self.dense_a = rng.normal(0, 1 / math.sqrt(max(d, 1)), (hidden, d))
        self.dense_c = rng.normal(0, 0.5, hidden)
        self.dense_v = rng.normal(0, 1 / math.sqrt(hidden), hidden)
        sigma = latent ** -0.25  # <u_i, u_j> has unit variance
        self.dense_b = rng.normal(0, sigma / math.sqrt(hidden / 3), (latent, hidden))
        decay = [(1 + np.arange(min(rows, self.POOL)) / config.head) ** -0.5 for rows in config.rows]
        self.first = [(rng.normal(0, 1, len(k)) * k).astype(np.float32) for k in decay]
        self.latents = [(rng.normal(0, sigma, (len(k), latent)) * k[:, None]).astype(np.float32) for k in decay]
        pilot = self._features(self._chunk_raw((config.seed, 3), 16384))
        self.scales = [float(np.std(term)) or 1.0 for term in pilot]
        logits = self._combine(pilot, 0.0)
        low, high = -20.0, 20.0
        for _ in range(60):  # bisection on the pilot for the target click rate
            mid = (low + high) / 2
            low, high = (mid, high) if np.mean(1 / (1 + np.exp(-(logits + mid)))) < config.ctr else (low, mid)
        self.bias = (low + high) / 2

    # Sampling -------------------------------------------------------------------------------------------

    def _chunk_raw(self, key, n):
        """The first ``n`` samples of the chunk with RNG key ``key``. Each quantity has its own stream, drawn
        sample-major, so a shorter draw is a prefix of a longer one."""
        cfg = self.config
        d, tables, pooling = cfg.dense, len(cfg.rows), cfg.pooling

        def stream(i):
            return np.random.default_rng([*key, i])

        t = self.dense_mu + self.dense_sigma * stream(0).standard_normal((n, d))
        dense = np.floor(np.expm1(np.clip(t, 0, 30))).astype(np.int64)
        if d > 1:
            dense[:, 1] -= 3  # like Criteo's I2, a feature with small negative values
        dense_missing = stream(1).random((n, d)) < self.dense_missing_rate
        ranks = np.empty((n, tables, pooling), dtype=np.int64)
        ids = np.empty_like(ranks)
        for table, sampler in enumerate(self.samplers):
            r = np.searchsorted(sampler._cdf, stream(10 + table).random((n, pooling)), side="right")
            ranks[:, table] = np.minimum(r, sampler.n - 1)
            ids[:, table] = sampler.permutation[ranks[:, table]]
        cat_missing = stream(2).random((n, tables, 1)) < self.cat_missing_rate[:, None]
        cat_missing = np.broadcast_to(cat_missing, (n, tables, pooling)).copy()
        dense[dense_missing] = 0
        return dense, dense_missing, ranks, ids, cat_missing, stream(3).random(n)

    def _features(self, raw):
        dense, dense_missing, ranks, _, cat_missing, _ = raw
        z = (np.log1p(np.maximum(dense, 0)) - self.dense_mu) / self.dense_sigma
        z[dense_missing] = 0.0
        h = np.tanh(z @ self.dense_a.T + self.dense_c)
        g = h @ self.dense_v
        u0 = h @ self.dense_b.T
        first = np.zeros(len(dense))
        vsum = u0.copy()
        vsq = np.einsum("nl,nl->n", u0, u0)
        present = ~cat_missing
        for t in range(len(self.config.rows)):
            idx = ranks[:, t] % len(self.first[t])
            keep = present[:, t]
            first += (self.first[t][idx] * keep).sum(axis=1)
            u = (self.latents[t][idx] * keep[:, :, None]).mean(axis=1)
            vsum += u
            vsq += np.einsum("nl,nl->n", u, u)
        pairwise = (np.einsum("nl,nl->n", vsum, vsum) - vsq) / 2
        return g, first, pairwise

    def _combine(self, terms, bias):
        scales = getattr(self, "scales", [float(np.std(t)) or 1.0 for t in terms])
        return bias + sum(w * t / s for w, t, s in zip(self.config.weights, terms, scales))

    def _values(self, ids):
        """32-bit categorical values ``id + rows * k`` with ``k`` a hash of (seed, table, id)."""
        rows = np.asarray(self.config.rows, dtype=np.int64)[None, :, None]
        spread = (2**32 // rows).astype(np.uint64)
        key = _mix64(ids.astype(np.uint64) ^ self._salt[None, :, None])
        return ids + rows * (key % spread).astype(np.int64)

    def _chunk(self, index, count=_CHUNK):
        raw = self._chunk_raw((self.config.seed, 1, index), count)
        dense, dense_missing, _, ids, cat_missing, u = raw
        logits = self._combine(self._features(raw), self.bias)
        labels = (u < 1 / (1 + np.exp(-logits))).astype(np.int8)
        cats = np.where(cat_missing, 0, self._values(ids))
        return Records(labels, dense, dense_missing, cats, cat_missing), logits

    def generate(self, n, start=0, *, with_logits=False, progress=None):
        """Samples ``start .. start + n - 1`` of the stream (:class:`Records`); with ``with_logits`` also the
        planted model's logits (the best any model can do)."""
        if not isinstance(n, int) or n <= 0 or not isinstance(start, int) or start < 0:
            raise ValueError(f"sample count must be positive and start non-negative, not {n!r}, {start!r}")
        parts, logits = [], []
        first, last = start // _CHUNK, (start + n - 1) // _CHUNK
        for index in range(first, last + 1):
            lo = start - index * _CHUNK if index == first else 0
            hi = start + n - index * _CHUNK if index == last else _CHUNK
            records, z = self._chunk(index, hi)
            parts.append(records.take(slice(lo, hi)))
            logits.append(z[lo:hi])
            if progress is not None:
                progress.update(hi - lo)
        records = Records.concatenate(parts)
        return (records, np.concatenate(logits)) if with_logits else records
