"""Golden model of the chip's candidate fetcher (:mod:`rpaccel.rtl.accel.fetch`) and its memory images.

:func:`fetch_golden` says what every output stream of the fetcher carries for a sequence of fetcher instructions
(FETCH and EMB) over a memory image; :func:`record_image` and :func:`list_image` build the images (docs/chip.md,
"Memory: candidate records and lists").
"""

from dataclasses import dataclass, field

import numpy as np

from ...host.driver.codec import codec
from ...rtl.accel.isa import ErrorCode, FetchSource, Opcode, ResponseKind
from ...rtl.embedding import EmbeddingOp

__all__ = ["FetchOutputs", "fetch_golden", "list_image", "lookup_entry", "record_image"]


def lookup_entry(g, id, table, last, end):
    """One lookup entry ``{id, table, last, end}`` (``g.lookup_entry_layout()``) of a candidate record as an
    integer."""
    return codec(g.lookup_entry_layout()).pack_value({"id": id, "table": table, "last": last, "end": end})


def record_image(g, dense, lookups, *, stride, dense_lines, count=None):
    """The ``stride`` lines of one candidate record.

    Parameters
    ----------
    g : rpaccel.rtl.accel.isa.ChipGeometry
    dense : sequence of int
        The dense features, int8, element ``k`` at byte ``k`` (at most ``dense_lines * line_bytes``).
    lookups : sequence of tuple
        ``(id, table, last, end)`` per lookup, in order.
    stride, dense_lines : int
        Lines of the record and of its dense area.
    count : int, optional
        The number written into the count entry (default ``len(lookups)``; larger to build a record whose count
        overstates what it holds).

    Returns
    -------
    numpy.ndarray
        ``(stride, line_bytes)`` uint8.
    """
    lb, eb = g.line_bytes, g.lookup_entry_bits // 8
    dense = np.asarray(dense, dtype=np.int64)
    if len(dense) > min(dense_lines, stride) * lb:
        raise ValueError(f"{len(dense)} dense bytes do not fit {min(dense_lines, stride)} lines")
    image = np.zeros(stride * lb, dtype=np.uint8)
    image[:len(dense)] = dense.astype(np.uint8)
    entries = [len(lookups) if count is None else count] + [lookup_entry(g, *e) for e in lookups]
    start = dense_lines * lb
    if entries != [0] and start + len(entries) * eb > len(image):
        raise ValueError(f"{len(lookups)} lookups do not fit a record of {stride} lines ({dense_lines} dense)")
    for k, value in enumerate(entries if start < len(image) else []):
        image[start + k * eb:start + (k + 1) * eb] = list(int(value).to_bytes(eb, "little"))
    return image.reshape(stride, lb)


def list_image(g, indices):
    """A ``LIST`` of candidate indices: 16-bit little-endian, packed into lines (``(lines, line_bytes)`` uint8)."""
    per_line = g.line_bytes // 2
    words = np.zeros(-(-len(indices) // per_line) * per_line, dtype="<u2")
    words[:len(indices)] = indices
    return words.view(np.uint8).reshape(-1, g.line_bytes)


@dataclass
class FetchOutputs:
    """What each output stream of the fetcher carries (payload values as the stream drivers give them).

    Attributes
    ----------
    lookup : list of dict
        Embedding unit commands (LOOKUP, and EMB commands passed through).
    dense, index : list of list
        Per lane: dense words (lists of ``rows`` int8) and candidate indices.
    join : list of dict
        Join jobs ``{lane, items, params}``.
    rsp : list of dict
        ERROR responses.
    release : list of int
        The top-k unit of each release pulse, in order.
    """

    lookup: list = field(default_factory=list)
    dense: list = field(default_factory=list)
    index: list = field(default_factory=list)
    join: list = field(default_factory=list)
    rsp: list = field(default_factory=list)
    release: list = field(default_factory=list)


def _line(g, memory, addr):
    return memory[addr % (1 << g.addr_bits)]


def _indices(g, f, memory, survivors):
    source, items = FetchSource(f["source"]), f["items"]
    if source == FetchSource.RANGE:
        return [(f["first"] + i) & 0xFFFF for i in range(items)]
    if source == FetchSource.SURVIVORS:
        kept = survivors[(f["unit"], f["wait_results"])]
        return [int(kept[(f["first"] + i) % g.k_max]) for i in range(items)]
    per_line = g.line_bytes // 2
    return [int(_line(g, memory, f["list_addr"] + i // per_line).view("<u2")[i % per_line]) for i in range(items)]


def fetch_golden(g, instructions, memory, survivors=None):
    """What the fetcher sends for ``instructions``.

    Parameters
    ----------
    g : rpaccel.rtl.accel.isa.ChipGeometry
    instructions : sequence of dict
        Values of ``g.fetcher_instr_layout()``: ``{tag, emb, arg: {fetch: ...}}`` or ``{tag, emb: 1, arg: {emb:
        ...}}``.
    memory : numpy.ndarray
        ``(lines, line_bytes)`` uint8: the memory from line 0 (addresses wrap modulo ``2**g.addr_bits``).
    survivors : mapping, optional
        ``(unit, result) -> indices``: the kept result a ``SURVIVORS`` fetch with that ``unit`` and
        ``wait_results`` reads.

    Returns
    -------
    FetchOutputs
    """
    out = FetchOutputs(dense=[[] for _ in range(g.lanes)], index=[[] for _ in range(g.lanes)])
    lb, eb, rows = g.line_bytes, g.lookup_entry_bits // 8, g.rows
    entry = codec(g.lookup_entry_layout())
    for ins in instructions:
        if ins["emb"]:
            out.lookup.append(ins["arg"]["emb"])
            continue
        f = ins["arg"]["fetch"]
        lane, stride, dense_lines = f["lane"], f["stride"], f["dense_lines"]
        out.join.append({"lane": lane, "items": f["items"], "params": f["join"]})
        indices = []
        for index in _indices(g, f, memory, survivors):
            if FetchSource(f["source"]) == FetchSource.LIST and index >= f["count"]:
                out.rsp.append({"kind": ResponseKind.ERROR.value, "tag": ins["tag"], "last": 1,
                                "code": ErrorCode.INDEX.value, "index": Opcode.FETCH.value, "score": index,
                                "data": 0})
                index = f["count"] - 1
            indices.append(index)
        records = [np.stack([_line(g, memory, f["base"] + index * stride + k) for k in range(stride)])
                   if stride else np.zeros((0, lb), np.uint8) for index in indices]
        for index, record in zip(indices, records):
            out.index[lane].append(index)
            dense = np.zeros(f["dense_words"] * rows, dtype=np.uint8)
            area = record[:dense_lines].reshape(-1)[:len(dense)]
            dense[:len(area)] = area
            out.dense[lane] += [[int(v) for v in word] for word in dense.view(np.int8).reshape(-1, rows)]
        for record in records:
            area = record[dense_lines:].reshape(-1)
            entries = [int.from_bytes(bytes(area[k:k + eb]), "little") for k in range(0, len(area) - eb + 1, eb)]
            if not entries:
                continue
            n = min(entries[0], len(entries) - 1)
            for k, value in enumerate(entries[1:n + 1]):
                fields = entry.unpack_value(value & ((1 << entry.width) - 1))
                final = k == n - 1
                out.lookup.append({"op": EmbeddingOp.LOOKUP.value, "table": fields["table"],
                                   "arg": {"lookup": {"id": fields["id"], "last": fields["last"] | final,
                                                      "end": int(final)}}})
        if FetchSource(f["source"]) == FetchSource.SURVIVORS and f["release"]:
            out.release.append(f["unit"])
    return out
