"""Golden model of :class:`rpaccel.rtl.embedding.EmbeddingSystem`: command scripts with their expected outputs.

An :class:`EmbeddingScript` builds the command stream of a run (memory loads, table configuration, preloads,
lookups, updates, flushes, counter reads), packed by the driver's encoder
(:class:`rpaccel.host.driver.embedding.EmbeddingEncoder`), and tracks what the unit must produce: the pooled
vectors (:func:`rpaccel.embedding.pool_bags`), the counters (:class:`rpaccel.cachemodel.EmbeddingCacheModel`) and
the lines read back. :func:`play` runs a script through the file-driven :class:`~rpaccel.sim.player.Player`,
:func:`decode` reads its outputs with the encoder's decoders and :func:`compare` checks every output.
"""

from dataclasses import dataclass, field

import numpy as np

from ...cachemodel import EmbeddingCacheModel
from ...embedding import EmbeddingLayout, LayoutError, pool_bags
from ...host.driver.codec import to_ints
from ...host.driver.embedding import EmbeddingEncoder

__all__ = ["EmbeddingScript", "RunResult", "compare", "decode", "play", "random_tables", "zipf_bags"]


class EmbeddingScript:
    """Commands for an :class:`~rpaccel.rtl.embedding.EmbeddingSystem` and the outputs they must produce.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        Configuration of the system the script is for.

    Attributes
    ----------
    encoder : rpaccel.host.driver.embedding.EmbeddingEncoder
        The encoder of the system's commands and decoder of its outputs.
    pooled : list of numpy.ndarray
        Expected pooled vectors, in blocks (one ``(bags, max_emb_dim)`` array per :meth:`lookup`).
    pooled_meta : list of (numpy.ndarray, numpy.ndarray)
        Expected ``(table, end)`` of those vectors.
    counters : list of dict
        Expected counter snapshots (every counter but ``cycles``).
    mem_reads : list of int
        Expected lines of the host's memory reads.
    """

    def __init__(self, config):
        self.config = config
        self.encoder = EmbeddingEncoder(config)
        self.geometry = self.encoder.geometry
        self._blocks = []
        self.pooled, self.pooled_meta, self.counters, self.mem_reads = [], [], [], []
        self.layout = self.data = self.model = None
        self.lookups = 0

    @property
    def words(self):
        """The packed system commands, in order, as ``(n, limbs)`` words (see :mod:`rpaccel.host.driver.codec`)."""
        if len(self._blocks) > 1:
            self._blocks = [np.concatenate(self._blocks)]
        return self._blocks[0] if self._blocks else np.zeros((0, self.encoder.command.limbs), dtype=np.uint64)

    @property
    def commands(self):
        """The packed system commands, in order, as Python ints."""
        return to_ints(self.words)

    # Commands ---------------------------------------------------------------------------------------------

    def load(self, layout, data, *, preload=True):
        """Write every table into memory, configure every table, flush, and preload the static rows.

        ``data[t]`` is table ``t`` as a ``(rows, dim)`` int8 array (already renumbered).
        """
        if layout.geometry != self.geometry:
            raise LayoutError("The layout was made for another geometry than the script's configuration")
        self.layout, self.data = layout, [np.array(d, dtype=np.int8) for d in data]
        if len(self.data) != len(layout):
            raise LayoutError(f"Got data for {len(self.data)} tables, the layout has {len(layout)}")
        self.model = EmbeddingCacheModel(layout)
        for t in range(len(layout)):
            self._blocks.append(self.encoder.load_table(layout, self.data, t))
        self.configure()
        self.flush()
        if preload:
            for t in range(len(layout)):
                self.preload(t)

    def configure(self, layout=None):
        """CONFIG every table of ``layout`` (default: the loaded one; a new layout must keep the placement)."""
        layout = layout or self.layout
        self._blocks.append(self.encoder.configure(layout))
        if layout is not self.layout:
            if layout.mem_base != self.layout.mem_base or layout.row_lines != self.layout.row_lines:
                raise LayoutError("A new configuration must keep the tables' memory placement")
            self.layout = layout
            counts = self.model.counts
            self.model = EmbeddingCacheModel(layout)
            self.model.counts = counts
            self.model.flush()
            self._blocks.append(self.encoder.flush())

    def flush(self):
        """FLUSH the dynamic cache."""
        self._blocks.append(self.encoder.flush())
        self.model.flush()

    def preload(self, table):
        """PRELOAD the static rows of ``table``."""
        self._blocks.append(self.encoder.preload(table))
        self.model.preload(table)

    def counters_read(self, *, clear=False):
        """Read the counters (and clear them)."""
        self._blocks.append(self.encoder.read_counters(clear=clear))
        self.counters.append(dict(self.model.counts))
        if clear:
            self.model.clear_counters()

    def mem_read(self, addr):
        """Read memory line ``addr`` through the host port."""
        if self.layout is None or not 0 <= addr < self.layout.mem_lines:
            raise LayoutError(f"Line {addr} is outside the loaded tables")
        self._blocks.append(self.encoder.memory_reads([addr]))
        self.mem_reads.append(self._line_value(int(addr)))

    def _line_value(self, addr):
        layout = self.layout
        t = int(np.searchsorted(layout.mem_base, addr, side="right")) - 1
        k = addr - layout.mem_base[t]
        n, lb = layout.row_lines[t], self.geometry.line_bytes
        row, j = divmod(k, n)
        if row >= layout.tables[t].rows:
            return 0
        return int.from_bytes(self.data[t][row, j * lb:(j + 1) * lb].tobytes(), "little")

    def update(self, table, row, values):
        """Write row ``row`` of ``table`` (``dim`` int8 values) through the unit: memory and on-chip copies."""
        spec = self.layout.tables[table]
        self.layout.check_ids(table, [row], where="update")
        values = np.asarray(values, dtype=np.int8)
        if values.shape != (spec.dim,):
            raise LayoutError(f"Update of table {table}: {values.shape} values, not ({spec.dim},)")
        self.data[table][row] = values
        self._blocks.append(self.encoder.update(table, row, values.reshape(-1, self.geometry.line_bytes)))

    def lookup(self, bag_tables, offsets, ids, *, ends=None, check=True):
        """LOOKUP every ID of a sequence of bags (see :func:`rpaccel.embedding.pool_bags`).

        ``ends`` marks the last bag of each item (default: only the final bag). With ``check=False``
        out-of-range IDs are sent anyway (the unit counts them and returns zero rows).
        """
        layout = self.layout
        bag_tables = np.asarray(bag_tables, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        if check:
            expected = pool_bags(layout, self.data, bag_tables, offsets, ids)
        else:
            expected = self._pool_unchecked(bag_tables, offsets, ids)
        counts = np.diff(offsets)
        if ends is None:
            ends = np.arange(len(bag_tables)) == len(bag_tables) - 1
        ends = np.asarray(ends, dtype=bool)
        if ends.shape != bag_tables.shape:
            raise LayoutError(f"ends must have one flag per bag ({len(bag_tables)}), not {ends.shape}")
        id_tables = np.repeat(bag_tables, counts)
        last = np.zeros(len(ids), dtype=np.int64)
        last[offsets[1:] - 1] = 1
        end = np.zeros(len(ids), dtype=np.int64)
        end[offsets[1:] - 1] = ends
        self._blocks.append(self.encoder.lookups(id_tables, ids, last, end))
        self.pooled.append(expected)
        self.pooled_meta.append((bag_tables, ends))
        # The caches see the IDs in order: walk the runs of consecutive IDs of one table.
        change = np.flatnonzero(np.diff(id_tables)) + 1
        for s, e in zip(np.concatenate([[0], change]).tolist(), np.concatenate([change, [len(ids)]]).tolist()):
            self.model.lookup(int(id_tables[s]), ids[s:e])
        self.lookups += len(ids)

    def _pool_unchecked(self, bag_tables, offsets, ids):
        # Out-of-range IDs read as zero rows.
        safe = ids.copy()
        id_tables = np.repeat(bag_tables, np.diff(offsets))
        rows = np.array([s.rows for s in self.layout.tables])[id_tables]
        bad = (ids < 0) | (ids >= rows)
        safe[bad] = 0
        data = [np.vstack([d, np.zeros((1, d.shape[1]), dtype=np.int8)]) for d in self.data]
        layout = EmbeddingLayout(self.geometry, [type(s)(s.rows + 1, s.dim, s.static_rows, s.m, s.s)
                                                 for s in self.layout.tables])
        safe[bad] = rows[bad]  # the extra zero row
        return pool_bags(layout, data, bag_tables, offsets, safe)

    # Expected outputs -------------------------------------------------------------------------------------

    @property
    def expected_pooled(self):
        """All expected pooled vectors, ``(bags, max_emb_dim)``."""
        if not self.pooled:
            return np.zeros((0, self.geometry.row_bytes), dtype=np.int64)
        return np.concatenate(self.pooled)

    def expect(self):
        """``{output port: count}`` for :meth:`rpaccel.sim.player.Player.run`."""
        return {"pooled": len(self.expected_pooled), "counters": len(self.counters), "mem_rsp": len(self.mem_reads)}


@dataclass
class RunResult:
    """Outputs of a played script, decoded."""

    pooled: np.ndarray
    tables: np.ndarray
    ends: np.ndarray
    counters: list
    mem_reads: list
    cycles: int
    wall_seconds: float
    ports: dict = field(default_factory=dict)


def decode(script, pooled, counters, mem_reads, *, cycles=0, wall_seconds=0.0, ports=None):
    """A :class:`RunResult` from the raw payload bits of each output port (Python ints, or ``(n, limbs)``
    words)."""
    vectors, tables, ends = script.encoder.decode_pooled(pooled)
    return RunResult(pooled=vectors, tables=tables, ends=ends, counters=script.encoder.decode_counters(counters),
                     mem_reads=list(mem_reads), cycles=cycles, wall_seconds=wall_seconds, ports=ports or {})


def play(player, script, *, pause=0.0, seed=1, max_cycles=100_000_000):
    """Run ``script`` on ``player`` (a :class:`~rpaccel.sim.player.Player` of an ``EmbeddingSystem`` of the same
    configuration) and decode its outputs."""
    result = player.run({"cmd": script.commands}, expect=script.expect(), pause=pause, seed=seed,
                        max_cycles=max_cycles, packed=True)
    out = result.outputs
    return decode(script, out["pooled"], out["counters"], out["mem_rsp"], cycles=result.cycles,
                  wall_seconds=result.wall_seconds, ports=result.ports)


def compare(script, result):
    """Compare a run with the script's expectations; return a list of mismatch descriptions (empty: all equal)."""
    problems = []
    expected = script.expected_pooled
    if result.pooled.shape != expected.shape:
        problems.append(f"pooled: {len(result.pooled)} vectors, expected {len(expected)}")
    else:
        bad = np.flatnonzero((result.pooled != expected).any(axis=1))
        if bad.size:
            b = int(bad[0])
            problems.append(f"pooled: {bad.size} of {len(expected)} vectors differ; first: bag {b}, "
                            f"got {result.pooled[b].tolist()}, expected {expected[b].tolist()}")
        tables = np.concatenate([t for t, _ in script.pooled_meta]) if script.pooled_meta else np.zeros(0)
        ends = np.concatenate([e for _, e in script.pooled_meta]) if script.pooled_meta else np.zeros(0)
        if not np.array_equal(result.tables, tables):
            problems.append(f"pooled: table tags differ from bag {int(np.flatnonzero(result.tables != tables)[0])}")
        if not np.array_equal(result.ends, ends):
            problems.append(f"pooled: end flags differ from bag {int(np.flatnonzero(result.ends != ends)[0])}")
    for k, (got, want) in enumerate(zip(result.counters, script.counters)):
        diff = {name: (got[name], want[name]) for name in want if got[name] != want[name]}
        if diff:
            problems.append(f"counters #{k}: " + ", ".join(f"{n} = {g} (reference model {w})"
                                                          for n, (g, w) in diff.items()))
    if len(result.counters) != len(script.counters):
        problems.append(f"{len(result.counters)} counter snapshots, expected {len(script.counters)}")
    if result.mem_reads != script.mem_reads:
        problems.append("memory reads differ")
    return problems


# Stimulus ------------------------------------------------------------------------------------------------

def random_tables(rng, layout):
    """Random int8 contents for every table of ``layout``."""
    return [rng.integers(-128, 128, size=(s.rows, s.dim), dtype=np.int8) for s in layout.tables]


def zipf_bags(rng, samplers, items, pooling):
    """Bags of ``items`` items, one bag per table in table order, IDs drawn from per-table samplers.

    Parameters
    ----------
    samplers : sequence of rpaccel.zipf.ZipfSampler
        One per table.
    items : int
    pooling : int or (int, int)
        IDs per bag, or the inclusive range to draw it from uniformly.

    Returns
    -------
    (bag_tables, offsets, ids, ends)
    """
    tables = len(samplers)
    bag_tables = np.tile(np.arange(tables), items)
    if isinstance(pooling, tuple):
        counts = rng.integers(pooling[0], pooling[1] + 1, size=len(bag_tables))
    else:
        counts = np.full(len(bag_tables), pooling)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    id_tables = np.repeat(bag_tables, counts)
    ids = np.empty(len(id_tables), dtype=np.int64)
    for t, sampler in enumerate(samplers):
        where = np.flatnonzero(id_tables == t)
        ids[where] = sampler.sample(rng, len(where))
    ends = (np.arange(len(bag_tables)) % tables) == tables - 1
    return bag_tables, offsets, ids, ends
