"""Embedding tables and the embedding unit's geometry: shared by the RTL, the golden models and the host.

* :class:`EmbeddingGeometry` derives every size of the embedding unit (line banks, address, tag and accumulator
  widths, queue depths) from an :class:`~rpaccel.config.AccelConfig` and checks that they fit together.
* :class:`TableSpec` and :class:`EmbeddingLayout` place a model's tables in memory and in the static cache and
  validate them against a geometry (row width a multiple of the line size, capacities, requantisation
  parameters), with errors that name the table and the value.
* :func:`pool_bags` is the numpy golden model of the unit's output: sum-pool int8 rows into int32, then
  requantise per table (:func:`rpaccel.numeric.requantize`).
* :func:`profile_counts`, :func:`renumbering` and :func:`allocate_static` are the host-side preparation of the
  static cache: count accesses in a trace, renumber each table's IDs by descending frequency (so the hot rows are
  IDs ``0 .. H_t - 1``) and split the static capacity between tables.

Rows, lines and banks
---------------------
Memory and both caches are organised in *lines* of ``dyn_cache_line_bytes`` bytes (``L``). A row of a table with
embedding dimension ``d`` (int8, so ``d`` bytes) is ``n = d / L`` consecutive lines, so ``L`` must divide ``d``;
``d`` and ``n`` are powers of two and ``d <= max_emb_dim`` (``E``). On chip, line address ``a`` lives in bank
``a mod B`` with ``B = E / L`` banks, so the ``n`` lines of any row sit in ``n`` different banks and the unit reads
a whole row per cycle. Table bases in memory are multiples of ``B`` lines, static bases multiples of ``n``.
"""

from dataclasses import dataclass

import numpy as np

from .numeric import INT8_MAX, INT8_MIN, check_requant_params, requantize

__all__ = [
    "EmbeddingGeometry",
    "EmbeddingLayout",
    "LayoutError",
    "TableSpec",
    "allocate_static",
    "ceil_log2",
    "pool_bags",
    "profile_counts",
    "renumbering",
]


class LayoutError(ValueError):
    """Tables do not fit the embedding unit (the message names the table, the field and the value)."""


def ceil_log2(n):
    """Smallest ``k`` with ``2**k >= n`` (0 for ``n <= 1``)."""
    return max(0, int(n - 1).bit_length())


def _next_pow2(n):
    return 1 << ceil_log2(n)


@dataclass(frozen=True)
class EmbeddingGeometry:
    """Sizes of one embedding unit, derived from a configuration (:meth:`from_config`).

    Attributes
    ----------
    row_bytes : int
        Widest row ``E`` (``max_emb_dim`` int8 values).
    line_bytes : int
        Line size ``L``: the unit of memory transfers and of the dynamic cache.
    tables : int
        Number of tables the unit can hold (``emb_tables``).
    static_rows : int
        Static cache capacity in rows of ``E`` bytes (0: no static cache).
    sets, ways : int
        Dynamic cache geometry (``ways = 0``: no dynamic cache).
    addr_bits : int
        Width of a memory line address.
    max_pooling : int
        Largest number of rows in one bag.
    requant_lanes : int
        Pooled elements requantised per cycle.
    max_outstanding : int
        Lines requested from memory and not yet consumed, at most.
    """

    row_bytes: int
    line_bytes: int
    tables: int
    static_rows: int
    sets: int
    ways: int
    addr_bits: int
    max_pooling: int
    requant_lanes: int
    max_outstanding: int

    @classmethod
    def from_config(cls, config):
        """The geometry of ``config``'s embedding unit.

        Raises
        ------
        rpaccel.config.ConfigError
            If the configuration's embedding fields do not fit together (the message names the fields).
        """
        from .config import ConfigError

        e, line = config.max_emb_dim, config.dyn_cache_line_bytes
        if line > e or e % line:
            raise ConfigError(f"dyn_cache_line_bytes ({line}) must divide the widest row (max_emb_dim = {e} bytes): "
                              "a row is a whole number of lines")
        banks = e // line
        if config.dyn_cache_ways and config.dyn_cache_sets < banks:
            raise ConfigError(f"dyn_cache_sets ({config.dyn_cache_sets}) must be at least the number of line banks "
                              f"({banks} = max_emb_dim / dyn_cache_line_bytes)")
        if config.max_outstanding_misses < banks:
            raise ConfigError(f"max_outstanding_misses ({config.max_outstanding_misses}) must be at least the lines "
                              f"of the widest row ({banks}), or a row that misses entirely could never be fetched")
        if config.mem_bytes < 2 * line * banks:
            raise ConfigError(f"mem_bytes ({config.mem_bytes}) must hold at least two rows of max_emb_dim bytes")
        addr_bits = ceil_log2(config.mem_bytes // line)
        if config.dyn_cache_ways and ceil_log2(config.dyn_cache_sets) >= addr_bits:
            raise ConfigError(f"dyn_cache_sets ({config.dyn_cache_sets}) must be smaller than the memory's "
                              f"{1 << addr_bits} lines")
        return cls(row_bytes=e, line_bytes=line, tables=config.emb_tables, static_rows=config.static_cache_rows,
                   sets=config.dyn_cache_sets if config.dyn_cache_ways else 0, ways=config.dyn_cache_ways,
                   addr_bits=addr_bits, max_pooling=config.max_pooling, requant_lanes=config.emb_requant_lanes,
                   max_outstanding=config.max_outstanding_misses)

    # Derived sizes -----------------------------------------------------------------------------------------

    @property
    def banks(self):
        """Line banks ``B = E / L``: a row of ``n`` lines is read from ``n`` banks at once."""
        return self.row_bytes // self.line_bytes

    @property
    def bank_bits(self):
        return ceil_log2(self.banks)

    @property
    def static_lines(self):
        """Static cache capacity in lines."""
        return self.static_rows * self.banks

    @property
    def static_bytes(self):
        """Static cache capacity in bytes."""
        return self.static_lines * self.line_bytes

    @property
    def dynamic_bytes(self):
        """Dynamic cache data capacity in bytes (tags not counted)."""
        return self.sets * self.ways * self.line_bytes

    @property
    def sets_per_bank(self):
        return self.sets // self.banks if self.ways else 0

    @property
    def tag_bits(self):
        """Width of a dynamic cache tag (line address above the set index)."""
        return self.addr_bits - ceil_log2(self.sets) if self.ways else 0

    @property
    def id_bits(self):
        """Width of a row ID (a table never has more rows than memory has lines)."""
        return self.addr_bits

    @property
    def acc_bits(self):
        """Width of a pooling accumulator: ``max_pooling`` int8 values never overflow it."""
        return 8 + ceil_log2(self.max_pooling)

    @property
    def max_row_lines_log2(self):
        return self.bank_bits

    @property
    def queue_depth(self):
        """Entries between the tag lookup and the row assembly: room for every outstanding miss and the hits
        between them."""
        return _next_pow2(max(16, 2 * self.max_outstanding))

    @property
    def max_burst(self):
        """Longest memory burst, in lines (a whole row, or a preload burst)."""
        return max(self.banks, 8)

    def describe(self):
        """The geometry and its derived sizes as a dict."""
        return {"row_bytes": self.row_bytes, "line_bytes": self.line_bytes, "banks": self.banks,
                "tables": self.tables, "static_bytes": self.static_bytes, "sets": self.sets, "ways": self.ways,
                "dynamic_bytes": self.dynamic_bytes, "addr_bits": self.addr_bits, "tag_bits": self.tag_bits,
                "acc_bits": self.acc_bits, "requant_lanes": self.requant_lanes,
                "max_outstanding": self.max_outstanding, "queue_depth": self.queue_depth}


@dataclass(frozen=True)
class TableSpec:
    """One embedding table as the unit sees it.

    Attributes
    ----------
    rows : int
        Number of rows.
    dim : int
        Embedding dimension (int8 values per row).
    static_rows : int
        Rows ``0 .. static_rows - 1`` (the hottest, after renumbering) held by the static cache.
    m, s : int
        Requantisation multiplier and shift of the pooled sums.
    """

    rows: int
    dim: int
    static_rows: int = 0
    m: int = 1
    s: int = 0


class EmbeddingLayout:
    """Placement of tables in memory and in the static cache, checked against a geometry.

    Parameters
    ----------
    geometry : EmbeddingGeometry
    tables : sequence of TableSpec

    Attributes
    ----------
    row_lines : list of int
        Lines per row of each table.
    mem_base : list of int
        First memory line of each table (a multiple of the bank count).
    static_base : list of int
        First static cache line of each table (a multiple of its row lines). Static regions are placed in
        descending order of row width, so every base stays aligned.
    mem_lines : int
        Memory lines used by all tables.

    Raises
    ------
    LayoutError
        If a table does not fit (the message names the table and the value).
    """

    def __init__(self, geometry, tables):
        self.geometry = g = geometry
        self.tables = list(tables)
        if not self.tables:
            raise LayoutError("A layout needs at least one table")
        if len(self.tables) > g.tables:
            raise LayoutError(f"{len(self.tables)} tables do not fit the unit's {g.tables} (emb_tables)")
        self.row_lines = []
        for t, spec in enumerate(self.tables):
            for name in ("rows", "dim", "static_rows", "m", "s"):
                value = getattr(spec, name)
                if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                    raise LayoutError(f"Table {t}: {name} must be an integer, not {value!r}")
            if spec.rows <= 0:
                raise LayoutError(f"Table {t}: rows must be positive, not {spec.rows}")
            if spec.dim <= 0 or spec.dim % g.line_bytes or spec.dim > g.row_bytes \
                    or spec.dim & (spec.dim - 1):
                raise LayoutError(
                    f"Table {t}: the line size ({g.line_bytes} bytes) must divide the row (dim {spec.dim}), "
                    f"and the row must be a power of two of at most {g.row_bytes} bytes")
            if not 0 <= spec.static_rows <= spec.rows:
                raise LayoutError(f"Table {t}: static_rows must be in [0, rows = {spec.rows}], "
                                  f"not {spec.static_rows}")
            try:
                check_requant_params(spec.m, spec.s)
            except ValueError as error:
                raise LayoutError(f"Table {t}: {error}") from None
            self.row_lines.append(spec.dim // g.line_bytes)

        self.mem_base, base = [], 0
        for spec, lines in zip(self.tables, self.row_lines):
            self.mem_base.append(base)
            base += -(-spec.rows * lines // g.banks) * g.banks
        self.mem_lines = base
        if base > 1 << g.addr_bits:
            raise LayoutError(f"Tables need {base} memory lines, more than the memory's {1 << g.addr_bits} "
                              f"(mem_bytes = {(1 << g.addr_bits) * g.line_bytes})")
        for t, spec in enumerate(self.tables):
            if spec.rows > 1 << g.id_bits:
                raise LayoutError(f"Table {t}: {spec.rows} rows exceed the {g.id_bits}-bit row IDs")

        self.static_base = [0] * len(self.tables)
        base = 0
        for t in sorted(range(len(self.tables)), key=lambda t: -self.row_lines[t]):
            self.static_base[t] = base
            base += self.tables[t].static_rows * self.row_lines[t]
        self.static_lines = base
        if base > g.static_lines:
            raise LayoutError(f"Static rows need {base} lines of the static cache, which holds {g.static_lines} "
                              f"(static_cache_rows = {g.static_rows})")

    def __len__(self):
        return len(self.tables)

    def line_address(self, table, ids):
        """Memory line address of the first line of rows ``ids`` of ``table``."""
        return self.mem_base[table] + np.asarray(ids, dtype=np.int64) * self.row_lines[table]

    def static_line(self, table, ids):
        """Static cache line of the first line of static rows ``ids`` of ``table``."""
        return self.static_base[table] + np.asarray(ids, dtype=np.int64) * self.row_lines[table]

    def check_ids(self, table, ids, where="bag"):
        """Raise :class:`LayoutError` naming the first ID of ``ids`` outside table ``table``."""
        ids = np.asarray(ids)
        bad = np.flatnonzero((ids < 0) | (ids >= self.tables[table].rows))
        if bad.size:
            raise LayoutError(f"{where}: ID {int(ids[bad[0]])} is out of range for table {table} "
                              f"({self.tables[table].rows} rows)")


def _bag_arrays(layout, bag_tables, offsets, ids):
    bag_tables = np.asarray(bag_tables, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    if offsets.shape != (len(bag_tables) + 1,) or offsets[0] != 0 or offsets[-1] != len(ids):
        raise LayoutError("offsets must hold len(bag_tables) + 1 values from 0 to len(ids)")
    counts = np.diff(offsets)
    if counts.size and (counts.min() < 1 or counts.max() > layout.geometry.max_pooling):
        bag = int(np.flatnonzero((counts < 1) | (counts > layout.geometry.max_pooling))[0])
        raise LayoutError(f"Bag {bag} holds {int(counts[bag])} IDs; a bag holds 1 to "
                          f"{layout.geometry.max_pooling} (max_pooling)")
    if bag_tables.size and (bag_tables.min() < 0 or bag_tables.max() >= len(layout)):
        bag = int(np.flatnonzero((bag_tables < 0) | (bag_tables >= len(layout)))[0])
        raise LayoutError(f"Bag {bag} names table {int(bag_tables[bag])}; the layout has {len(layout)}")
    return bag_tables, offsets, ids, counts


def pool_bags(layout, data, bag_tables, offsets, ids):
    """Golden pooled vectors: sum each bag's int8 rows into int32 and requantise with its table's ``(m, s)``.

    Parameters
    ----------
    layout : EmbeddingLayout
    data : sequence of numpy.ndarray
        ``data[t]`` holds table ``t`` as a ``(rows, dim)`` int8 array.
    bag_tables : array_like
        Table of each bag.
    offsets : array_like
        Bag ``b`` is ``ids[offsets[b]:offsets[b + 1]]`` (``len(bag_tables) + 1`` values, like
        ``torch.nn.EmbeddingBag``).
    ids : array_like
        Row IDs.

    Returns
    -------
    numpy.ndarray
        ``(bags, max_emb_dim)`` int8 values (dtype int64); elements beyond a table's dimension are 0.

    Raises
    ------
    LayoutError
        On an ID out of its table's range or a bag of a bad size (naming the bag).
    """
    bag_tables, offsets, ids, counts = _bag_arrays(layout, bag_tables, offsets, ids)
    out = np.zeros((len(bag_tables), layout.geometry.row_bytes), dtype=np.int64)
    id_tables = np.repeat(bag_tables, counts)
    for t, spec in enumerate(layout.tables):
        bags = np.flatnonzero(bag_tables == t)
        if not bags.size:
            continue
        table = np.asarray(data[t])
        if table.shape != (spec.rows, spec.dim):
            raise LayoutError(f"Table {t}: data has shape {table.shape}, not ({spec.rows}, {spec.dim})")
        table_ids = ids[id_tables == t]
        bad = np.flatnonzero((table_ids < 0) | (table_ids >= spec.rows))
        if bad.size:
            first = int(np.searchsorted(np.cumsum(counts[bags]), bad[0], side="right"))
            raise LayoutError(f"Bag {int(bags[first])}: ID {int(table_ids[bad[0]])} is out of range for table {t} "
                              f"({spec.rows} rows)")
        starts = np.concatenate([[0], np.cumsum(counts[bags])[:-1]])
        sums = np.add.reduceat(table[table_ids].astype(np.int64), starts, axis=0)
        out[bags, :spec.dim] = requantize(sums, spec.m, spec.s)
    assert out.min(initial=0) >= INT8_MIN and out.max(initial=0) <= INT8_MAX
    return out


# Host-side preparation of the static cache ---------------------------------------------------------------

def profile_counts(rows, ids):
    """Access count of every row of a table in a trace (``rows`` counts); raises on an ID out of range."""
    ids = np.asarray(ids, dtype=np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= rows))
    if bad.size:
        raise LayoutError(f"Trace position {int(bad[0])}: ID {int(ids[bad[0]])} is out of range ({rows} rows)")
    return np.bincount(ids, minlength=rows)


def renumbering(counts):
    """Renumber a table's rows by descending access count (ties: lower original ID first).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``new_of_old`` (the new ID of each original row: apply it to traces) and ``old_of_new`` (the original
        row of each new ID: ``table[old_of_new]`` is the renumbered table).
    """
    counts = np.asarray(counts)
    old_of_new = np.argsort(-counts, kind="stable")
    new_of_old = np.empty_like(old_of_new)
    new_of_old[old_of_new] = np.arange(len(counts))
    return new_of_old, old_of_new


def allocate_static(counts, row_lines, capacity_lines):
    """Split the static cache between tables: the rows with the most accesses per line, over all tables.

    Parameters
    ----------
    counts : sequence of array_like
        Access counts of each table's rows (any order).
    row_lines : sequence of int
        Lines per row of each table.
    capacity_lines : int
        Static cache capacity in lines.

    Returns
    -------
    list of int
        Static rows ``H_t`` per table (after :func:`renumbering`, rows ``0 .. H_t - 1``). Rows never accessed
        in the profile are not allocated. With equal row widths this is exactly the most frequent rows.
    """
    values, owners, sizes = [], [], []
    for t, (c, lines) in enumerate(zip(counts, row_lines)):
        c = np.sort(np.asarray(c, dtype=np.float64))[::-1]
        c = c[c > 0]
        values.append(c / lines)
        owners.append(np.full(len(c), t))
        sizes.append(np.full(len(c), lines))
    if not values:
        return []
    values, owners, sizes = (np.concatenate(a) for a in (values, owners, sizes))
    order = np.argsort(-values, kind="stable")
    taken = order[np.cumsum(sizes[order]) <= capacity_lines]
    return [int(n) for n in np.bincount(owners[taken], minlength=len(row_lines))]
