"""The embedding system (:class:`rpaccel.rtl.embedding.EmbeddingSystem`): command encoder and output decoders.

The system takes one command stream ``cmd``: a command either for the embedding unit (LOOKUP, CONFIG, PRELOAD,
UPDATE, FLUSH, COUNTERS) or for the host port of its memory (a line write or read). It answers on ``pooled`` (one
requantised vector per bag), ``counters`` (one snapshot per COUNTERS command) and ``mem_rsp`` (one line per
memory read). :class:`EmbeddingEncoder` packs commands into words through the codec, a whole batch per call (a
run of 10**5 lookups is a few numpy operations); its decoders read the output words back. The unit's own commands
come from :class:`UnitCommands`, which the chip's ``EMB`` commands (:mod:`rpaccel.host.driver.chip`) share.

Example::

    encoder = EmbeddingEncoder(config)
    words = np.concatenate([encoder.configure(layout), encoder.lookups(tables, ids, last, end)])
    result = player.run({"cmd": to_ints(words)}, expect=..., packed=True)
    vectors, tables, ends = encoder.decode_pooled(result.outputs["pooled"])
"""

import numpy as np

from ...cachemodel import COUNTERS
from ...embedding import EmbeddingGeometry, LayoutError
from ...rtl.embedding import EmbeddingOp, EmbeddingSystem, Layouts
from .codec import LIMB_BITS, codec, from_ints

__all__ = ["EmbeddingEncoder", "UnitCommands", "line_limbs"]


def line_limbs(lines):
    """Lines given as ``(n, line_bytes)`` bytes (int8 or uint8) as ``(n, limbs)`` uint64 limbs, byte 0 lowest."""
    lines = np.ascontiguousarray(np.asarray(lines).astype(np.uint8, copy=False))
    count, size = lines.shape
    padded = np.zeros((count, -(-size // (LIMB_BITS // 8)) * (LIMB_BITS // 8)), dtype=np.uint8)
    padded[:, :size] = lines
    return padded.view("<u8").astype(np.uint64)


class UnitCommands:
    """The embedding unit's own commands (``Layouts.command``: ``{op, table, arg}``) as codec columns.

    The one place that knows how a CONFIG, PRELOAD, UPDATE, FLUSH, COUNTERS or LOOKUP command of the unit is
    filled in: :class:`EmbeddingEncoder` wraps them into the embedding system's command stream, the chip's driver
    (:mod:`rpaccel.host.driver.chip`) into its ``EMB`` commands. Every method returns ``(columns, count)``: the
    columns of a batch of ``count`` unit commands, ready for :meth:`~rpaccel.host.driver.codec.Codec.pack`.

    Parameters
    ----------
    geometry : rpaccel.embedding.EmbeddingGeometry
    """

    def __init__(self, geometry):
        self.geometry = geometry

    @staticmethod
    def _columns(op, table, arg, count):
        return {"op": op.value, "table": table, "arg": arg}, count

    def lines(self, lines):
        """``(n, line_bytes)`` bytes as the column of a line field (one integer per line up to 64 bits, limbs
        beyond)."""
        limbs = line_limbs(lines)
        return limbs[:, 0] if self.geometry.line_bytes * 8 <= LIMB_BITS else limbs

    def configure(self, layout):
        """CONFIG every table of ``layout`` (an :class:`~rpaccel.embedding.EmbeddingLayout`).

        Raises
        ------
        rpaccel.embedding.LayoutError
            If the layout was made for another geometry.
        """
        if layout.geometry != self.geometry:
            raise LayoutError("The layout was made for another geometry than the encoder's configuration")
        specs = layout.tables
        config = {"rows": [s.rows for s in specs], "static_rows": [s.static_rows for s in specs],
                  "static_base": list(layout.static_base), "mem_base": list(layout.mem_base),
                  "row_lines": [lines.bit_length() - 1 for lines in layout.row_lines],
                  "m": [s.m for s in specs], "s": [s.s for s in specs]}
        return self._columns(EmbeddingOp.CONFIG, np.arange(len(specs)), {"config": config}, len(specs))

    def flush(self):
        """FLUSH the dynamic cache."""
        return self._columns(EmbeddingOp.FLUSH, 0, _NO_ARG, 1)

    def preload(self, table):
        """PRELOAD the static rows of ``table``."""
        return self._columns(EmbeddingOp.PRELOAD, table, _NO_ARG, 1)

    def counters(self, *, clear=False):
        """Read the counters, and clear them if ``clear``."""
        return self._columns(EmbeddingOp.COUNTERS, 0, {"counters": {"clear": int(clear)}}, 1)

    def update(self, table, row, lines):
        """UPDATE row ``row`` of ``table`` with ``lines`` (``(row_lines, line_bytes)`` bytes), one command per
        line."""
        lines = np.asarray(lines)
        return self._columns(EmbeddingOp.UPDATE, table, {"update": {
            "id": row, "line": np.arange(len(lines)), "data": self.lines(lines)}}, len(lines))

    def lookups(self, tables, ids, last, end):
        """LOOKUP ``ids[i]`` in table ``tables[i]`` (see :meth:`EmbeddingEncoder.lookups`)."""
        return self._columns(EmbeddingOp.LOOKUP, tables, {"lookup": {"id": ids, "last": last, "end": end}},
                             len(np.asarray(ids)))


class EmbeddingEncoder:
    """Command words for, and output decoders of, an :class:`~rpaccel.rtl.embedding.EmbeddingSystem`.

    Every encoding method returns ``(n, limbs)`` packed words (see :mod:`rpaccel.host.driver.codec`) of the
    system's ``cmd`` stream; concatenate them in the order they are to be sent.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        Configuration of the system.

    Attributes
    ----------
    geometry : rpaccel.embedding.EmbeddingGeometry
    layouts : rpaccel.rtl.embedding.Layouts
        The system's payload layouts.
    """

    def __init__(self, config):
        self.geometry = EmbeddingGeometry.from_config(config)
        self.layouts = Layouts(self.geometry)
        self.unit = UnitCommands(self.geometry)
        self.command = codec(EmbeddingSystem.command_layout(self.layouts))
        self._pooled = codec(self.layouts.pooled)
        self._counters = codec(self.layouts.counters)

    def _unit(self, columns, count):
        return self.command.pack({"mem": 0, "body": {"unit": columns}}, count=count)

    def _memory(self, write, addresses, data):
        request = {"write": write, "addr": addresses, "length": 0, "data": data}
        return self.command.pack({"mem": 1, "body": {"mem": request}})

    # Memory ----------------------------------------------------------------------------------------------------

    def memory_writes(self, addresses, lines):
        """Write ``lines`` (``(n, line_bytes)`` bytes) to memory lines ``addresses`` through the host port."""
        lines = np.asarray(lines)
        if lines.ndim != 2 or lines.shape[1] != self.geometry.line_bytes:
            raise LayoutError(f"Memory lines must be given as (n, {self.geometry.line_bytes}) bytes, "
                              f"not {lines.shape}")
        return self._memory(1, np.asarray(addresses, dtype=np.int64), self.unit.lines(lines))

    def memory_reads(self, addresses):
        """Read memory lines ``addresses`` through the host port (one ``mem_rsp`` transfer each)."""
        return self._memory(0, np.asarray(addresses, dtype=np.int64), 0)

    def load_table(self, layout, data, table):
        """Write table ``table`` of ``data`` (``data[t]`` a ``(rows, dim)`` int8 array) to its memory lines.

        Raises
        ------
        LayoutError
            If the data does not have the table's rows and dimension.
        """
        spec = layout.tables[table]
        values = np.asarray(data[table], dtype=np.int8)
        if values.size != spec.rows * spec.dim:
            raise LayoutError(f"Table {table}: data has {values.size} values, not rows * dim = {spec.rows * spec.dim}")
        lines = values.reshape(-1, self.geometry.line_bytes)
        return self.memory_writes(layout.mem_base[table] + np.arange(len(lines)), lines)

    # Unit commands ---------------------------------------------------------------------------------------------

    def configure(self, layout):
        """CONFIG every table of ``layout`` (an :class:`~rpaccel.embedding.EmbeddingLayout`)."""
        return self._unit(*self.unit.configure(layout))

    def flush(self):
        """FLUSH the dynamic cache."""
        return self._unit(*self.unit.flush())

    def preload(self, table):
        """PRELOAD the static rows of ``table``."""
        return self._unit(*self.unit.preload(table))

    def read_counters(self, *, clear=False):
        """Read the counters (one ``counters`` transfer), and clear them if ``clear``."""
        return self._unit(*self.unit.counters(clear=clear))

    def update(self, table, row, lines):
        """UPDATE row ``row`` of ``table`` with ``lines`` (``(row_lines, line_bytes)`` bytes), one command per
        line."""
        return self._unit(*self.unit.update(table, row, lines))

    def lookups(self, tables, ids, last, end):
        """LOOKUP ``ids[i]`` in table ``tables[i]``; ``last`` marks the last ID of a bag, ``end`` the last ID of
        an item's last bag (arrays of one length, or scalars).

        Raises
        ------
        rpaccel.host.driver.codec.CodecError
            On an ID or table number its field cannot hold (naming the row).
        """
        return self._unit(*self.unit.lookups(tables, ids, last, end))

    # Decoders --------------------------------------------------------------------------------------------------

    def decode_pooled(self, words):
        """``(vectors, tables, ends)`` of ``pooled`` words (Python ints or ``(n, limbs)`` words): ``(n,
        max_emb_dim)`` int64 vectors, their tables, and their end-of-item flags (bool)."""
        columns = self._pooled.unpack(_words(words, self._pooled))
        return columns["data"], columns["table"], columns["end"].astype(bool)

    def decode_counters(self, words):
        """One ``{counter: value}`` dict per ``counters`` word (named as :data:`rpaccel.cachemodel.COUNTERS`)."""
        columns = self._counters.unpack(_words(words, self._counters))
        return [dict(zip(COUNTERS, values)) for values in zip(*(columns[name].tolist() for name in COUNTERS))]


# FLUSH and PRELOAD carry no argument: an all-zero one.
_NO_ARG = {"counters": {"clear": 0}}


def _words(words, codec_):
    if isinstance(words, np.ndarray) and words.ndim == 2:
        return words
    return from_ints(words, codec_.width)
