"""Golden model of :class:`rpaccel.rtl.embedding.EmbeddingSystem`: command scripts with their expected outputs.

An :class:`EmbeddingScript` builds the command stream of a run (memory loads, table configuration, preloads,
lookups, updates, flushes, counter reads) already packed into the system's command bits (vectorised with numpy:
packing each command through :func:`rpaccel.sim.payload.pack` costs ~50 us, too slow for runs of 10**5 lookups),
and tracks what the unit must produce: the pooled vectors (:func:`rpaccel.embedding.pool_bags`), the counters
(:class:`rpaccel.cachemodel.EmbeddingCacheModel`) and the lines read back. :func:`play` runs a script through the
file-driven :class:`~rpaccel.sim.player.Player` and :func:`compare` checks every output.
"""

from dataclasses import dataclass, field

import numpy as np

from ...cachemodel import COUNTERS, EmbeddingCacheModel
from ...embedding import EmbeddingGeometry, EmbeddingLayout, LayoutError, pool_bags
from ...rtl.embedding import EmbeddingOp, Layouts
from ...rtl.embedding import EmbeddingSystem as _System

__all__ = ["EmbeddingScript", "RunResult", "compare", "decode", "play", "random_tables", "zipf_bags"]


def _field(layout, path):
    """(offset, width) of the field at ``path`` (dotted) in a nested layout."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    offset, shape = 0, layout
    for name in path.split("."):
        shape = data.Layout.cast(shape)
        f = shape[name]
        offset += f.offset
        shape = f.shape
    return offset, Shape.cast(shape).width


def table_lines(layout, data, table):
    """Memory lines of ``table``: ``(addresses, values)`` with each value the line's bytes as a little-endian
    integer."""
    g = layout.geometry
    spec = layout.tables[table]
    values = np.ascontiguousarray(np.asarray(data[table], dtype=np.int8)).reshape(-1, g.line_bytes)
    if values.shape[0] != spec.rows * layout.row_lines[table]:
        raise LayoutError(f"Table {table}: data has {values.size} values, not rows * dim = {spec.rows * spec.dim}")
    raw = values.view(np.uint8).tobytes()
    step = g.line_bytes
    ints = [int.from_bytes(raw[k:k + step], "little") for k in range(0, len(raw), step)]
    return layout.mem_base[table] + np.arange(len(ints)), ints


class EmbeddingScript:
    """Commands for an :class:`~rpaccel.rtl.embedding.EmbeddingSystem` and the outputs they must produce.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        Configuration of the system the script is for.

    Attributes
    ----------
    commands : list of int
        Packed system commands, in order.
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
        self.geometry = g = EmbeddingGeometry.from_config(config)
        self.layouts = lay = Layouts(g)
        system = _System.command_layout(lay)
        self._mem_flag = 1 << _field(system, "mem")[0]
        self._body = _field(system, "body")[0]
        self._cmd = {name: _field(lay.command, name)[0] + self._body
                     for name in ("op", "table", "arg.lookup.id", "arg.lookup.last", "arg.lookup.end")}
        self.commands = []
        self.pooled, self.pooled_meta, self.counters, self.mem_reads = [], [], [], []
        self.layout = self.data = self.model = None
        self.lookups = 0

    # Encoding ---------------------------------------------------------------------------------------------

    def _unit(self, op, table=0, **fields):
        bits = (int(op.value) << self._cmd["op"]) | (int(table) << self._cmd["table"])
        for path, value in fields.items():
            offset, width = _field(self.layouts.command, path)
            value = int(value)
            if not 0 <= value < 1 << width:
                raise LayoutError(f"Command field {path} = {value} does not fit {width} bits")
            bits |= value << (offset + self._body)
        self.commands.append(bits)

    def _mem(self, write, addr, data=0):
        request = self.layouts.memory.request
        bits = self._mem_flag
        for name, value in (("write", write), ("addr", addr), ("data", data)):
            bits |= int(value) << (_field(request, name)[0] + self._body)
        self.commands.append(bits)

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
        request = self.layouts.memory.request
        write = self._mem_flag | (1 << (_field(request, "write")[0] + self._body))
        addr_at = _field(request, "addr")[0] + self._body
        data_at = _field(request, "data")[0] + self._body
        for t in range(len(layout)):
            addresses, values = table_lines(layout, self.data, t)
            header = (np.uint64(write) | (addresses.astype(np.uint64) << np.uint64(addr_at))).tolist()
            self.commands.extend(h | (v << data_at) for h, v in zip(header, values))
        self.configure()
        self.flush()
        if preload:
            for t in range(len(layout)):
                self.preload(t)

    def configure(self, layout=None):
        """CONFIG every table of ``layout`` (default: the loaded one; a new layout must keep the placement)."""
        layout = layout or self.layout
        for t, spec in enumerate(layout.tables):
            self._unit(EmbeddingOp.CONFIG, t, **{
                "arg.config.rows": spec.rows, "arg.config.static_rows": spec.static_rows,
                "arg.config.static_base": layout.static_base[t], "arg.config.mem_base": layout.mem_base[t],
                "arg.config.row_lines": layout.row_lines[t].bit_length() - 1,
                "arg.config.m": spec.m, "arg.config.s": spec.s})
        if layout is not self.layout:
            if layout.mem_base != self.layout.mem_base or layout.row_lines != self.layout.row_lines:
                raise LayoutError("A new configuration must keep the tables' memory placement")
            self.layout = layout
            counts = self.model.counts
            self.model = EmbeddingCacheModel(layout)
            self.model.counts = counts
            self.model.flush()
            self._unit(EmbeddingOp.FLUSH)

    def flush(self):
        self._unit(EmbeddingOp.FLUSH)
        self.model.flush()

    def preload(self, table):
        self._unit(EmbeddingOp.PRELOAD, table)
        self.model.preload(table)

    def counters_read(self, *, clear=False):
        """Read the counters (and clear them)."""
        self._unit(EmbeddingOp.COUNTERS, 0, **{"arg.counters.clear": int(clear)})
        self.counters.append(dict(self.model.counts))
        if clear:
            self.model.clear_counters()

    def mem_read(self, addr):
        """Read memory line ``addr`` through the host port."""
        if self.layout is None or not 0 <= addr < self.layout.mem_lines:
            raise LayoutError(f"Line {addr} is outside the loaded tables")
        self._mem(0, addr)
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
        lb = self.geometry.line_bytes
        for j in range(self.layout.row_lines[table]):
            self._unit(EmbeddingOp.UPDATE, table, **{
                "arg.update.id": row, "arg.update.line": j,
                "arg.update.data": int.from_bytes(values[j * lb:(j + 1) * lb].tobytes(), "little")})

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
        last = np.zeros(len(ids), dtype=np.uint64)
        last[offsets[1:] - 1] = 1
        end = np.zeros(len(ids), dtype=np.uint64)
        end[offsets[1:] - 1] = ends.astype(np.uint64)
        id_limit = 1 << self.geometry.id_bits
        if ids.size and (ids.min() < 0 or ids.max() >= id_limit):
            raise LayoutError(f"IDs must be in [0, {id_limit}) to be encoded")
        c = {k: np.uint64(v) for k, v in self._cmd.items()}
        bits = ((np.uint64(EmbeddingOp.LOOKUP.value) << c["op"]) | (id_tables.astype(np.uint64) << c["table"])
                | (ids.astype(np.uint64) << c["arg.lookup.id"]) | (last << c["arg.lookup.last"])
                | (end << c["arg.lookup.end"]))
        self.commands.extend(bits.tolist())
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


def _decode_pooled(layouts, words):
    g = layouts.g
    table_at, table_w = _field(layouts.pooled, "table")
    end_at, _ = _field(layouts.pooled, "end")
    data_at, _ = _field(layouts.pooled, "data")
    tables = np.array([(w >> table_at) & ((1 << table_w) - 1) for w in words], dtype=np.int64)
    ends = np.array([(w >> end_at) & 1 for w in words], dtype=bool)
    mask = (1 << (8 * g.row_bytes)) - 1
    raw = b"".join(((w >> data_at) & mask).to_bytes(g.row_bytes, "little") for w in words)
    vectors = np.frombuffer(raw, dtype=np.int8).reshape(len(words), g.row_bytes).astype(np.int64)
    return vectors, tables, ends


def _decode_counters(layouts, word):
    return {name: (word >> _field(layouts.counters, name)[0]) & 0xFFFF_FFFF for name in COUNTERS}


def decode(script, pooled, counters, mem_reads, *, cycles=0, wall_seconds=0.0, ports=None):
    """A :class:`RunResult` from the raw payload bits of each output port."""
    vectors, tables, ends = _decode_pooled(script.layouts, pooled)
    return RunResult(pooled=vectors, tables=tables, ends=ends,
                     counters=[_decode_counters(script.layouts, w) for w in counters],
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
