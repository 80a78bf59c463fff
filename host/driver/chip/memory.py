"""What the host stages in the chip's memory: candidate records, index lists, weight images, embedding tables.

docs/chip.md ("Memory") fixes the formats. A *record set* is ``count`` records of ``stride`` lines from line
``base``: a candidate's dense features (int8, element ``k`` at byte ``k`` of lines ``0 .. dense_lines - 1``), then
its lookups as 32- or 64-bit little-endian entries (:attr:`~rpaccel.rtl.accel.isa.ChipGeometry.lookup_entry_bits`),
the first holding the number of lookups, the others ``{id, table, last, end}`` in table order. A *list* is 16-bit
little-endian indices packed into lines. Weights are the weight buffer's words (:func:`~rpaccel.host.driver.mlp.
layout_weights`) packed back to back, ``line_bytes / array_cols`` to a line (or one word over several lines).
Embedding tables sit from line 0 as their :class:`~rpaccel.embedding.EmbeddingLayout` places them, each row zero-
padded to a whole power of two of lines.

Everything is built with whole-array numpy operations and kept in a :class:`MemoryImage`, blocks of lines that
:meth:`MemoryImage.commands` turns into MEM_WRITE words.
"""

from dataclasses import dataclass

import numpy as np

from ....embedding import ceil_log2
from ..codec import codec
from .encoding import ChipCommandError, geometry_of

__all__ = ["MemoryImage", "RecordSet", "decode_list", "decode_records", "encode_list", "encode_records", "list_lines",
           "stage_weights", "table_dim", "table_rows"]


class MemoryImage:
    """Lines to write into the chip's memory, and an allocator of the lines not yet used.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry or rpaccel.config.AccelConfig
    start : int
        First line the allocator hands out.

    Attributes
    ----------
    blocks : list of (int, numpy.ndarray)
        ``(first line, (n, line_bytes) uint8 lines)`` in the order they were written.
    top : int
        The first line not allocated.
    """

    def __init__(self, geometry, *, start=0):
        self.geometry = geometry_of(geometry)
        self.lines = 1 << self.geometry.addr_bits
        self.blocks = []
        self.top = start

    def allocate(self, count, *, align=1, what="data"):
        """The first of ``count`` free lines (a multiple of ``align``).

        Raises
        ------
        ChipCommandError
            If the memory has no room left (naming ``what`` needed it).
        """
        base = -(-self.top // align) * align
        if base + count > self.lines:
            raise ChipCommandError(f"Memory full: {what} needs {count} lines from line {base}, the memory has "
                                   f"{self.lines} (mem_bytes = {self.lines * self.geometry.line_bytes})")
        self.top = base + count
        return base

    def write(self, addr, lines):
        """Write ``lines`` (``(n, line_bytes)`` bytes) from line ``addr``."""
        lines = np.asarray(lines)
        if lines.ndim != 2 or lines.shape[1] != self.geometry.line_bytes:
            raise ChipCommandError(f"Memory lines must be (n, {self.geometry.line_bytes}) bytes, not {lines.shape}")
        if not 0 <= addr <= self.lines - len(lines):
            raise ChipCommandError(f"Lines {addr} .. {addr + len(lines) - 1} are outside the memory's {self.lines}")
        self.blocks.append((int(addr), lines.astype(np.uint8)))

    def place(self, lines, *, align=1, what="data"):
        """Allocate room for ``lines``, write them there and return the first line."""
        addr = self.allocate(len(lines), align=align, what=what)
        self.write(addr, lines)
        return addr

    def read(self, addr, count):
        """Lines ``addr .. addr + count - 1`` as the blocks written so far make them (zero where none wrote)."""
        out = np.zeros((count, self.geometry.line_bytes), dtype=np.uint8)
        for base, lines in self.blocks:
            low, high = max(addr, base), min(addr + count, base + len(lines))
            if low < high:
                out[low - addr:high - addr] = lines[low - base:high - base]
        return out

    def commands(self, encoder, *, tag=0):
        """MEM_WRITE words of every block, in order (``encoder`` a :class:`~.encoding.ChipEncoder`)."""
        words = [encoder.mem_write(addr, lines, tag=tag) for addr, lines in self.blocks if len(lines)]
        return np.concatenate(words) if words else encoder.nop(0)


def _to_lines(raw, line_bytes):
    """``(n, bytes)`` uint8 rows zero-padded to whole lines, as ``(n * lines, line_bytes)``."""
    n, size = raw.shape
    per = -(-size // line_bytes) * line_bytes
    padded = np.zeros((n, per), dtype=np.uint8)
    padded[:, :size] = raw
    return padded.reshape(-1, line_bytes)


# Candidate records ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordSet:
    """A candidate set in memory (the FETCH fields that name it) and what its records hold.

    Attributes
    ----------
    base, stride, count, dense_lines, dense_words : int
        The FETCH fields: first line, lines per record, candidates, lines of dense bytes, words of ``rows``
        elements the lane is sent per candidate.
    dense : int
        Dense features per candidate.
    table_base : int
        The chip table of the model's table 0 (its tables are consecutive).
    tables, pooling : int
        Bags per candidate and IDs per bag.
    """

    base: int
    stride: int
    count: int
    dense_lines: int
    dense_words: int
    dense: int
    table_base: int
    tables: int
    pooling: int

    def fetch_fields(self):
        """``{base, stride, count, dense_lines, dense_words}`` for :meth:`~.encoding.ChipEncoder.fetch`."""
        return {"base": self.base, "stride": self.stride, "count": self.count, "dense_lines": self.dense_lines,
                "dense_words": self.dense_words}


def encode_records(geometry, dense_q, ids, *, table_base=0):
    """The records of candidates ``dense_q`` (``(n, D)`` int8) with bags ``ids`` (``(n, T, P)``, table ``t``'s
    bag looked up in chip table ``table_base + t``).

    Returns
    -------
    (numpy.ndarray, int, int)
        ``(n * stride, line_bytes)`` uint8 lines, ``dense_lines`` and ``stride``.
    """
    g = geometry_of(geometry)
    dense_q = np.asarray(dense_q, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    n, dense = dense_q.shape
    _, tables, pooling = ids.shape
    lb, entry_bytes = g.line_bytes, g.lookup_entry_bits // 8
    if table_base + tables > g.emb.tables:
        raise ChipCommandError(f"Records name chip tables {table_base} .. {table_base + tables - 1}; the chip has "
                               f"{g.emb.tables} (emb_tables)")
    dense_lines = -(-dense // lb)
    lookups = tables * pooling
    stride = dense_lines + -(-(1 + lookups) * entry_bytes // lb)
    # Entries: bags in table order, ``last`` on a bag's final ID, ``end`` on the item's final ID.
    position = np.arange(lookups)
    table = np.broadcast_to(table_base + position // pooling, (n, lookups))
    last = np.broadcast_to(position % pooling == pooling - 1, (n, lookups))
    end = np.broadcast_to(position == lookups - 1, (n, lookups))
    packed = codec(g.lookup_entry_layout()).pack({"id": ids.reshape(n * lookups), "table": table.reshape(-1),
                                                  "last": last.reshape(-1), "end": end.reshape(-1)})
    entries = np.empty((n, 1 + lookups), dtype=np.uint64)
    entries[:, 0] = lookups
    entries[:, 1:] = packed[:, 0].reshape(n, lookups)
    record = np.zeros((n, stride * lb), dtype=np.uint8)
    record[:, :dense] = dense_q.astype(np.int8).view(np.uint8)
    raw = entries.astype(f"<u{entry_bytes}").view(np.uint8).reshape(n, -1)
    record[:, dense_lines * lb:dense_lines * lb + raw.shape[1]] = raw
    return record.reshape(n * stride, lb), dense_lines, stride


def decode_records(geometry, lines, *, count, stride, dense_lines, dense):
    """The candidates of ``count`` records of ``stride`` lines (``lines`` from the set's base): ``(dense_q, n,
    entries)``, ``dense_q`` ``(count, dense)`` int64, ``n`` ``(count,)`` lookups per record and ``entries`` the
    columns ``{id, table, last, end}`` of shape ``(count, max n)`` (zero beyond a record's ``n``)."""
    g = geometry_of(geometry)
    lb, entry_bytes = g.line_bytes, g.lookup_entry_bits // 8
    raw = np.asarray(lines, dtype=np.uint8).reshape(count, stride * lb)
    dense_q = raw[:, :dense].view(np.int8).astype(np.int64)
    area = np.ascontiguousarray(raw[:, dense_lines * lb:])
    area = area[:, :area.shape[1] // entry_bytes * entry_bytes]
    values = area.view(f"<u{entry_bytes}").astype(np.uint64)
    counts = np.minimum(values[:, 0].astype(np.int64), values.shape[1] - 1)
    width = int(counts.max(initial=0))
    held = np.arange(width)[None, :] < counts[:, None]
    words = np.where(held, values[:, 1:1 + width], 0).reshape(-1, 1)
    columns = codec(g.lookup_entry_layout()).unpack(words)
    return dense_q, counts, {name: column.reshape(count, width) for name, column in columns.items()}


# Index lists ----------------------------------------------------------------------------------------------------

def encode_list(geometry, indices):
    """Lines of a LIST: ``indices`` as 16-bit little-endian values packed from byte 0 (the last line padded)."""
    g = geometry_of(geometry)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= 1 << 16):
        raise ChipCommandError(f"A LIST holds 16-bit indices; {int(indices[(indices < 0) | (indices >= 1 << 16)][0])}"
                               " is not one")
    return _to_lines(indices.astype("<u2").view(np.uint8).reshape(1, -1), g.line_bytes)


def decode_list(geometry, lines, count):
    """The first ``count`` indices of a LIST's ``lines``."""
    return np.asarray(lines, dtype=np.uint8).reshape(-1).view("<u2")[:count].astype(np.int64)


def list_lines(geometry, count):
    """Lines a LIST of ``count`` indices takes."""
    return -(-2 * count // geometry_of(geometry).line_bytes)


# Weights ----------------------------------------------------------------------------------------------------------

def stage_weights(geometry, words):
    """Lines holding weight buffer ``words`` (``(n, array_cols)`` int8, a
    :class:`~rpaccel.host.driver.mlp.WeightImage`'s) back to back: word ``j`` at byte ``j * array_cols``."""
    g = geometry_of(geometry)
    words = np.asarray(words, dtype=np.int8)
    if words.ndim != 2 or words.shape[1] != g.engine.word_bytes:
        raise ChipCommandError(f"Weight words must be (n, {g.engine.word_bytes}) int8, not {words.shape}")
    return _to_lines(words.view(np.uint8).reshape(1, -1), g.line_bytes)


# Embedding tables ---------------------------------------------------------------------------------------------------

def table_dim(geometry, emb_dim):
    """Bytes of a chip table row holding ``emb_dim`` values: a power of two of whole lines (values beyond
    ``emb_dim`` are zero, pool to zero and are never read by the joiner).

    Raises
    ------
    ChipCommandError
        If that exceeds ``max_emb_dim``.
    """
    g = geometry_of(geometry)
    dim = max(g.line_bytes, 1 << ceil_log2(emb_dim))
    if dim > g.emb.row_bytes:
        raise ChipCommandError(f"Embedding dimension {emb_dim} needs rows of {dim} bytes; the chip's widest is "
                               f"{g.emb.row_bytes} (max_emb_dim)")
    return dim


def table_rows(qmodel, table, dim):
    """Rows of ``qmodel``'s table ``table`` zero-padded to ``dim`` bytes: ``(rows, dim)`` int8."""
    rows = qmodel.spec.tables[table]
    start = qmodel.offsets[table]
    out = np.zeros((rows, dim), dtype=np.int8)
    out[:, :qmodel.spec.emb_dim] = qmodel.emb[start:start + rows]
    return out
