"""An untimed functional model of the chip: its command set executed unit by unit, without cycles.

:class:`FunctionalChip` holds the chip of docs/chip.md as Python objects: the memory, the controller, the fetcher,
the embedding unit (its caches through :mod:`rpaccel.cachemodel`), one front end and MLP engine lane per lane of
the array, the joiner with the interaction unit, the score sequencers with the top-k and filter units and their
survivors banks, and the weight loader. Each unit has its instruction queue; the streams between units are deques of
numpy blocks in the order both ends follow. :meth:`FunctionalChip.run` takes packed command words
(:meth:`~rpaccel.rtl.accel.isa.ChipGeometry.command_layout`), steps the units round-robin until none can make
progress, and returns the packed response words (:meth:`~rpaccel.rtl.accel.isa.ChipGeometry.response_layout`) and
the functional counters. Values follow the numeric rules (:mod:`rpaccel.host.reference`'s arithmetic); a program
whose streams do not line up raises :class:`Deadlock` naming every blocked unit and what it waits for, so the model
is the reference for "does this program run".

What the model follows of the RTL where docs/chip.md leaves a choice:

* **Decode-time checks** are :class:`rpaccel.rtl.accel.controller.Controller`'s, against the state the commands
  before left (the split, the weight buffer's pages loaded by accepted WEIGHTS, the tables configured by accepted
  EMB CONFIGs of non-zero rows); the first failing check in the controller's priority order gives the code and the
  detail (``score``). Per opcode, highest priority first:

  - unknown opcode: ``OPCODE`` (the opcode);
  - ``MEM_WRITE``: ``ADDRESS`` (``addr``); ``MEM_READ``: ``ADDRESS`` if ``addr + length`` is beyond the memory
    (``addr``); ``SPLIT``: ``SPLIT`` (``n``);
  - ``WEIGHTS``: ``LANE`` (with ``wait``; ``lane``), ``WEIGHTS`` (0 words or beyond the buffer; ``w_addr + words``),
    ``ADDRESS`` (the lines read beyond the memory; ``mem_addr``);
  - ``EMB``: ``FIELD`` (op ``LOOKUP``, ``COUNTERS`` or unknown; the op), ``TABLE`` (at or above ``emb_tables``);
  - ``FETCH``: ``LANE``, ``ITEMS`` (0 or above the lane's accumulator rows), ``FIELD`` (source; the source),
    ``FIELD`` (vectors or dimension 0 or too large; ``dim | vectors << dim bits``), ``UNIT`` (``SURVIVORS`` from
    a holder at or above ``holders``), ``INDEX`` (``SURVIVORS`` with ``first + items`` beyond the holder's positions,
    ``k_max`` for a top-k unit and ``filter_capacity`` for a filter unit; ``RANGE`` with ``first + items > count``;
    ``first + items``), ``TABLE`` (``vectors - 1`` above the tables configured; ``vectors - 1``), ``ADDRESS``
    (``list_addr``, then ``base``, beyond the memory);
  - ``LANE``: ``LANE``, ``ITEMS`` (as FETCH), ``WEIGHTS`` (a LAYER whose ``w_base`` page was never loaded;
    ``w_base``);
  - ``SCORE``: ``LANE``, ``ITEMS`` (0 items), ``FIELD`` (``dest`` 3; the dest), ``UNIT`` (``dest`` TOPK at or above
    ``topk_units``, FILTER at or above ``filter_units``), ``K`` (``dest`` TOPK or FILTER with ``last`` and ``k`` 0 or
    above ``k_max``, respectively ``filter_capacity``).

* **Run-time errors**: a ``LIST`` index at or above ``count`` answers ERROR ``INDEX`` (index ``FETCH``, detail the
  index) from the fetcher and the item uses candidate ``count - 1``; a filter query of more than ``filter_capacity``
  candidates keeps the best of its first ``filter_capacity`` and answers ERROR ``ITEMS`` (index ``SCORE``, detail 0,
  the closing SCORE's tag) in place of its last KEPT, with or without ``report``. Every ERROR has ``last`` set; only
  refused commands count in ``ERRORS``.
* **Queues**: a unit's command waits in the controller until its queue has room (:data:`QUEUE_DEPTH`, plus the
  unit's own command queue: a lane front end's, the weight loader's jobs), as in the RTL; the completion counts
  the waits compare modulo 256 then stay within range.
* **Barriers**: ``SYNC``, ``MEM_WRITE``, ``MEM_READ``, ``SPLIT`` and ``COUNTERS`` wait until every queue is empty and
  the chip is quiet (no unit holding work, no stream holding data, no top-k or filter unit holding an open query).
  A SPLIT clears the lanes' activation memories (their contents are undefined across a split).
* **Counters**: ``COMMANDS`` counts the commands that have left the controller (a COUNTERS answers the count
  before it, and with ``clear`` is not counted), ``ERRORS`` the refused ones, ``EMB_*`` the embedding unit's counts,
  ``MEM_READ_LINES``/``MEM_WRITE_LINES`` the lines through the memory arbiter: the controller's MEM_READ and
  MEM_WRITE, the fetcher's (``dense_lines`` per record, then the lookup lines holding the count and the entries, and
  the lines of a LIST), the embedding unit's (misses, preloads, UPDATE write-throughs) and the weight loader's (the
  lines holding its words). The timing counters (``CYCLES``, ``BUSY_*``) are answered as 0: the model has no cycles.
* **Holders**: the units whose kept results a ``SURVIVORS`` FETCH reads are the top-k units (holder ``u``), then the
  filter units (holder ``topk_units + f``); a top-k result is kept best first, a filter result in arrival order (the
  ``k`` best as a set, :func:`rpaccel.sim.golden.score.filter_keep`).
* **Streams**: the chip's streams are item-major. An INPUT stores word ``j`` of item ``i`` (the ``j``-th word of the
  lane's rows cut from the item's ``src_words`` words) at ``in_base + j * stride + i``; one whose ``ktiles`` words need
  more than ``src_words`` give never starts (a :class:`Deadlock`). The joiner takes ``F - 1``
  pooled vectors per item by count (the ``end`` flags are not checked). A survivors bank holds what its earlier
  results left beyond the last result's count.
* **Joiner**: per lane, as the RTL's: the lane's jobs, a FIFO of ``join_buffer_words`` words into which the
  pooled writer puts the embedding unit's vectors in fetch order (each job's into its lane's, while it has room),
  and an output buffer of ``join_output_words`` words (``inter[l]``); a lane's head job, once its bottom block is
  in, sends each item once the FIFO holds its pooled vectors and the buffer has room for its output, whatever
  another lane waits for. An INPUT from ``inter[l]`` takes the whole items there as they come. The fetcher starts
  a FETCH only once every pooled vector of the FETCHes before it is in its lane's FIFO: the RTL's fetcher may run
  ahead by what the embedding unit's queues hold, so the model is the stricter (a program it runs, the RTL runs).
* **Embedding unit**: a dynamic cache hit reads the data the line was filled with, so a MEM_WRITE under a cached line
  is seen only after a FLUSH (or an eviction); UPDATE writes memory and every on-chip copy (as the RTL does).
* **Batches** (the model's own, for speed; no effect on responses or counters): the fetcher prepares the FETCHes in
  its queue up to the next EMB (or later ``SURVIVORS`` FETCH) together when the first starts, and the embedding unit
  runs their lookups through the caches as one block when the first one's reach it (:class:`_Fetcher`); each FETCH
  still starts, and its pooled vectors still leave, in turn. A pooled vector's bytes beyond its join's ``dim`` are
  left zero where no join reads them. After a :class:`Deadlock` the embedding counters may include the lookups of
  FETCHes prepared but never started.

Example::

    chip = FunctionalChip(config)
    result = chip.run(words)            # words: (n, limbs) packed commands
    result.responses                    # (m, limbs) packed responses
    result.counters["EMB_LOOKUPS"]
"""

import functools
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape

from ...cachemodel import LRUCache
from ...embedding import ceil_log2
from ...host.driver.codec import LIMB_BITS, codec
from ...host.driver.embedding import line_limbs
from ...host.driver.interaction import output_words
from ...host.models import pair_indices
from ...numeric import INT8_MAX, INT8_MIN, requantize, topk
from ...rtl.accel.controller import WEIGHT_PAGES, counter_ids
from ...rtl.accel.isa import (
    ActSource,
    ChipGeometry,
    Counter,
    ErrorCode,
    FetchSource,
    Opcode,
    OutDest,
    ResponseKind,
    ScoreDest,
)
from ...rtl.accel.lanes import LaneFrontEnd
from ...rtl.accel.weights import WeightLoader
from ...rtl.embedding import EmbeddingOp
from ...rtl.interaction import MODES
from ...rtl.mlp import WAIT_BITS, Op
from ...threads import one_blas_thread
from ..golden.interaction import interaction_model
from ..golden.score import filter_keep

__all__ = ["ChipRun", "Deadlock", "FunctionalChip", "PagedMemory"]

_WAIT_MOD = 1 << WAIT_BITS
#: Commands the controller's queue of each unit holds (``Controller(queue_depth=16)``).
QUEUE_DEPTH = 16


class Deadlock(RuntimeError):
    """The chip's units stopped with work left: a program whose streams or waits do not line up.

    Attributes
    ----------
    blocked : list of str
        One line per blocked unit (or stream holding data no command takes): what it waits for.
    """

    def __init__(self, blocked):
        self.blocked = list(blocked)
        super().__init__("The chip stopped with work left:\n  " + "\n  ".join(self.blocked))


@dataclass
class ChipRun:
    """What :meth:`FunctionalChip.run` returns.

    Attributes
    ----------
    responses : numpy.ndarray
        ``(n, limbs)`` packed response words, in the model's (deterministic) order.
    counters : dict
        The functional counters by :class:`~rpaccel.rtl.accel.isa.Counter` name (``COMMANDS``, ``ERRORS``,
        ``EMB_*``, ``MEM_READ_LINES``, ``MEM_WRITE_LINES``) after the run, since reset or the last clear.
    """

    responses: np.ndarray
    counters: dict


def _satisfied(done, wait):
    """``done`` has reached ``wait``, modulo 256 within half the range (as :func:`rpaccel.rtl.mlp.satisfied`)."""
    return (done - wait) % _WAIT_MOD < _WAIT_MOD // 2


def _ceil_div(a, b):
    return -(-a // b)


def _wrap(values, bits):
    """Two's complement wrap of integers to ``bits`` bits (what a register of that width holds), as int64."""
    values = np.asarray(values)
    if bits in (8, 16, 32):
        return values.astype(f"int{bits}").astype(np.int64)
    shift = np.uint64(64 - bits)
    wrapped = values.astype(np.int64).view(np.uint64) << shift
    return wrapped.view(np.int64) >> np.int64(64 - bits)


def _exact_float(terms):
    """The float type in which a sum of ``terms`` products of int8 values is exact in any order: every partial sum
    is an integer of magnitude at most ``terms * 2**14``, exact in float32 up to 1,024 terms (``2**24``), in
    float64 beyond (BLAS's float32 products are several times faster on the small matrices of a sub-batch)."""
    return np.float32 if terms << 14 <= 1 << 24 else np.float64


def _requantize(acc, m, s, relu=False):
    """:func:`rpaccel.numeric.requantize` of int32 accumulators ``acc`` (int64) with one ``(m, s)``, without its
    checks of the operands (which a layer's sums and parameters fields pass by construction): a handful of passes
    over a sub-batch's results in place of its twenty (``test_requantize_equals_the_numeric_rule``)."""
    q = acc * m
    if s:
        q += 1 << (s - 1)
        q >>= s
    np.minimum(q, INT8_MAX, out=q)
    return np.maximum(q, 0 if relu else INT8_MIN, out=q)


def _dot_interaction(vectors, m, s):
    """:func:`~rpaccel.sim.golden.interaction.interaction_model`'s ``dot`` outputs of ``(n, F, d)`` int8 items: the
    bottom vector, then every pair's dot product requantised, with the items' Gram matrices as one batched float
    product (exact, :func:`_exact_float`; both operands contiguous, as BLAS takes them)."""
    n, f, d = vectors.shape
    floats = vectors.astype(_exact_float(d))
    gram = np.matmul(floats, np.ascontiguousarray(floats.transpose(0, 2, 1))).reshape(n, f * f)
    out = np.empty((n, d + f * (f - 1) // 2), dtype=np.int64)
    out[:, :d] = vectors[:, 0]
    out[:, d:] = _requantize(gram[:, _pairs(f)].astype(np.int64), m, s)
    return out


@functools.cache
def _pairs(vectors):
    """:func:`~rpaccel.host.models.pair_indices` of ``vectors`` as indices of a flattened Gram matrix."""
    rows, cols = pair_indices(vectors)
    return rows * vectors + cols


class PagedMemory:
    """The chip's memory: ``lines`` lines of ``line_bytes`` bytes, allocated in pages as they are written (so the
    ``paper`` preset's 16 GiB cost only what a program touches); unwritten lines read as zero, and addresses wrap
    modulo ``lines`` (a line address has the memory's address bits).

    The pages written are slots of one byte array (slot 0 a page of zeros that is never written, what unwritten
    pages read), found through a sorted page table: a read or a write of any lines is one gather or scatter.

    Parameters
    ----------
    lines, line_bytes : int
    """

    PAGE_BITS = 12
    #: A write whose runs of consecutive lines are this long on average copies them a page at a time.
    RUN_LINES = 64

    def __init__(self, lines, line_bytes):
        self.lines, self.line_bytes = lines, line_bytes
        self._pages = np.zeros(0, dtype=np.int64)       # the pages written, sorted
        self._slots = np.zeros(0, dtype=np.int64)       # their slots
        self._store = np.zeros((2 << self.PAGE_BITS, line_bytes), dtype=np.uint8)
        self._used = 1
        self.version = 0                                # counts the writes

    def _index(self, flat):
        """Rows of the store of the line addresses ``flat`` (already wrapped)."""
        pages = flat >> self.PAGE_BITS
        where = np.minimum(np.searchsorted(self._pages, pages), max(len(self._pages) - 1, 0))
        slots = np.where(self._pages[where] == pages, self._slots[where], 0) if len(self._pages) else 0
        return (slots << self.PAGE_BITS) | (flat & ((1 << self.PAGE_BITS) - 1))

    def read(self, addresses):
        """The lines at ``addresses`` (any shape), as ``(*shape, line_bytes)`` uint8."""
        addresses = np.asarray(addresses, dtype=np.int64)
        return np.take(self._store, self._index(addresses % self.lines), axis=0)

    def write(self, addresses, lines):
        """Write ``lines`` (``(n, line_bytes)`` bytes) at ``addresses`` (``n``; a later duplicate wins)."""
        flat = np.asarray(addresses, dtype=np.int64).reshape(-1) % self.lines
        lines = np.asarray(lines).astype(np.uint8, copy=False).reshape(len(flat), self.line_bytes)
        if not len(flat):
            return
        self.version += 1
        starts = np.flatnonzero(np.diff(flat) != 1) + 1
        if len(starts) * self.RUN_LINES < len(flat):
            # Runs of lines (a memory image, with its gaps): the pages allocated at once, then a copy per page of
            # each run, in order.
            size = 1 << self.PAGE_BITS
            runs = [(int(flat[start]), start, end) for start, end in
                    zip([0, *starts.tolist()], [*starts.tolist(), len(flat)])]
            pages = [np.arange(first >> self.PAGE_BITS, ((first + end - start - 1) >> self.PAGE_BITS) + 1)
                     for first, start, end in runs]
            self._allocate(np.unique(np.concatenate(pages)), full={
                page for (first, start, end), spans in zip(runs, pages) for page in spans.tolist()
                if first <= page * size and (page + 1) * size <= first + end - start})
            for (first, start, end), spans in zip(runs, pages):
                rows = self._index(np.maximum(spans << self.PAGE_BITS, first))
                for page, row in zip(spans.tolist(), rows.tolist()):
                    low = max(page << self.PAGE_BITS, first)
                    high = min((page + 1) << self.PAGE_BITS, first + end - start)
                    self._store[row:row + high - low] = lines[start + low - first:start + high - first]
            return
        pages = flat >> self.PAGE_BITS
        self._allocate(pages[np.flatnonzero(np.diff(pages, prepend=-1))])      # each run of a page once
        self._store[self._index(flat)] = lines

    def _allocate(self, pages, full=frozenset()):
        """Give each of ``pages`` not written before its slot: zeros, but for the pages in ``full``, which the
        caller writes whole."""
        new = np.setdiff1d(pages, self._pages)
        if not new.size:
            return
        slots = self._used + np.arange(new.size)
        used, self._used = self._used, self._used + new.size
        if self._used << self.PAGE_BITS > len(self._store):
            store = np.empty((max(2 * len(self._store), self._used << self.PAGE_BITS), self.line_bytes),
                             dtype=np.uint8)
            store[:used << self.PAGE_BITS] = self._store[:used << self.PAGE_BITS]
            self._store = store
        for page, slot in zip(new.tolist(), slots.tolist()):
            if page not in full:
                self._store[slot << self.PAGE_BITS:(slot + 1) << self.PAGE_BITS] = 0
        pages = np.concatenate([self._pages, new])
        order = np.argsort(pages)
        self._pages, self._slots = pages[order], np.concatenate([self._slots, slots])[order]

    def read_bytes(self, line, count):
        """``count`` bytes from the start of line ``line`` (over as many lines as they need), as uint8: a copy per
        page."""
        lines, first = _ceil_div(count, self.line_bytes), line % self.lines
        if first + lines > self.lines:
            return self.read(line + np.arange(lines)).reshape(-1)[:count]
        out = np.zeros((lines, self.line_bytes), dtype=np.uint8)
        size = 1 << self.PAGE_BITS
        for page in range(first >> self.PAGE_BITS, ((first + lines - 1) >> self.PAGE_BITS) + 1):
            where = int(np.searchsorted(self._pages, page))
            if where < len(self._pages) and self._pages[where] == page:
                low, high = max(first, page * size), min(first + lines, (page + 1) * size)
                row = int(self._slots[where]) * size + low - page * size
                out[low - first:high - first] = self._store[row:row + high - low]
        return out.reshape(-1)[:count]


class _Stream:
    """A stream between two units: numpy blocks whose first axis is the transfers, in order."""

    def __init__(self, name):
        self.name = name
        self.blocks = deque()
        self.count = 0

    def __len__(self):
        return self.count

    def push(self, block):
        if len(block):
            self.blocks.append(block)
            self.count += len(block)

    def take(self, n):
        """The next ``n`` transfers (the caller checked that there are as many), as one array."""
        parts, need = [], n
        while need:
            block = self.blocks[0]
            if len(block) <= need:
                parts.append(self.blocks.popleft())
                need -= len(block)
            else:
                parts.append(block[:need])
                self.blocks[0] = block[need:]
                need = 0
        self.count -= n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _Responses:
    """Response columns gathered in blocks, packed once at the end."""

    FIELDS = ("kind", "tag", "last", "code", "index", "score")

    def __init__(self, geometry):
        self.line_bytes = geometry.line_bytes
        self.codec = codec(geometry.response_layout())
        self.blocks = []

    def add(self, kind, tag, *, count=1, last=0, code=ErrorCode.NONE, index=0, score=0, data=None):
        columns = {"kind": kind.value, "tag": tag, "last": last, "code": code.value, "index": index, "score": score}
        block = {name: np.broadcast_to(np.asarray(value, dtype=np.int64), (count,)) for name, value in columns.items()}
        block["data"] = np.zeros((count, self.line_bytes), dtype=np.uint8) if data is None else data
        self.blocks.append(block)

    def pack(self):
        if not self.blocks:
            return np.zeros((0, self.codec.limbs), dtype=np.uint64)
        columns = {name: np.concatenate([b[name] for b in self.blocks]) for name in self.FIELDS}
        limbs = line_limbs(np.concatenate([b["data"] for b in self.blocks]))
        columns["data"] = limbs[:, 0] if 8 * self.line_bytes <= LIMB_BITS else limbs
        return self.codec.pack(columns)


def _rows(tree):
    """Unpacked columns as a list of rows, each nested dicts of Python ints (limbs of a wide leaf as a uint64
    array)."""
    if isinstance(tree, dict):
        names = list(tree)
        return [dict(zip(names, values)) for values in zip(*(_rows(tree[name]) for name in names))]
    if tree.ndim == 1:
        return tree.tolist()
    return list(np.asarray(tree, dtype=np.uint64))


def _widened(rows, width):
    """``rows`` (``(n, w)``, ``w <= width``) with zero columns up to ``width``."""
    if rows.shape[1] == width:
        return rows
    wide = np.zeros((len(rows), width), dtype=rows.dtype)
    wide[:, :rows.shape[1]] = rows
    return wide


def _lines_of(column, line_bytes):
    """Unpacked line fields (``(n,)`` integers, or ``(n, limbs)`` uint64 limbs) as ``(n, line_bytes)`` uint8 (a view
    of the limbs where it can be)."""
    column = np.asarray(column)
    limbs = np.ascontiguousarray(column, dtype="<u8").reshape(len(column), -1)
    return limbs.view(np.uint8)[:, :line_bytes]


# Units -------------------------------------------------------------------------------------------------------------


class _Unit:
    """A unit of the chip: ``step`` makes what progress it can (returns whether it made any), ``finished`` says
    whether every instruction it was given is done, ``idle`` whether it also holds nothing else, ``waiting`` what
    blocks it (``None`` when idle)."""

    name = "unit"

    def __init__(self, chip):
        self.chip = chip

    def finished(self):
        return not self.queue

    def idle(self):
        return self.finished()


class _Fetcher(_Unit):
    """FETCH and EMB commands, in order (docs/chip.md, "Units"; rtl/accel/fetch.py).

    A FETCH's values (its indices, dense words and LOOKUPs) depend only on memory and, for ``SURVIVORS``, on its
    top-k or filter unit's kept result, and nothing changes memory while the fetcher's queue holds commands (a
    MEM_WRITE waits for the chip to be quiet, an UPDATE is an EMB in the same queue). So when the head FETCH starts,
    the fetcher prepares it with the FETCHes behind it in one go (:meth:`_prepare`): up to the first EMB, the first
    later ``SURVIVORS`` FETCH (its result may not be kept yet) or the first of other record geometry, at most
    :attr:`BATCH`. Each still starts when it reaches the head, as it would alone (its join job, its INDEX errors,
    its memory lines counted, its streams written); the embedding unit computes their LOOKUPs as one block
    (:class:`_LookupBatch`)."""

    name = "fetcher"
    #: FETCHes prepared at once at most (1: each alone; the queue holds at most this many).
    BATCH = QUEUE_DEPTH

    def __init__(self, chip):
        super().__init__(chip)
        g = chip.geometry
        self.queue = deque()
        self.ready = deque()    # the prepared FETCHes at the head of the queue, in order
        self.surplus = 0        # the pooled vectors of the FETCHes so far beyond those their joins take
        self.entry_bytes = g.lookup_entry_bits // 8
        self.entry_codec = codec(g.lookup_entry_layout())
        self.entry_mask = np.uint64((1 << g.lookup_entry_layout().size) - 1)

    def step(self):
        chip, progress = self.chip, False
        while self.queue:
            tag, emb, arg = self.queue[0]
            if emb:
                chip.embedding.queue.append(("cmd", tag, arg))
            else:
                if chip.joiner.order:
                    return progress
                if arg["source"] == FetchSource.SURVIVORS.value:
                    unit = chip.holders[arg["unit"]]
                    if not _satisfied(unit.results_done, arg["wait_results"]):
                        return progress
                self._fetch(tag, arg)
            self.queue.popleft()
            progress = True
        return progress

    def waiting(self):
        if not self.queue:
            return None
        tag, emb, arg = self.queue[0]
        if not emb and self.chip.joiner.order:
            return f"FETCH (tag {tag}) waits for the pooled vectors of the FETCHes before it to enter the joiner"
        if emb or arg["source"] != FetchSource.SURVIVORS.value:
            return f"{'EMB' if emb else 'FETCH'} (tag {tag}) queued"
        unit = self.chip.holders[arg["unit"]]
        return f"FETCH (tag {tag}) waits for result {arg['wait_results']} of {unit.name} ({unit.results_done} done)"

    def _indices(self, arg):
        """A FETCH's candidate indices, the details of its INDEX errors (a LIST's indices at or above ``count``)
        and the memory lines its list reads."""
        chip, items = self.chip, arg["items"]
        source = arg["source"]
        if source == FetchSource.RANGE.value:
            return arg["first"] + np.arange(items, dtype=np.int64), None, 0
        if source == FetchSource.SURVIVORS.value:
            unit = chip.holders[arg["unit"]]
            positions = arg["first"] + np.arange(items)
            indices = unit.banks[arg["wait_results"] % 2, positions].copy()
            if arg["release"]:
                unit.releases = (unit.releases + 1) % _WAIT_MOD
            return indices, None, 0
        raw = chip.memory.read_bytes(arg["list_addr"], 2 * items)
        # The fetcher's list reader reads the list's lines once per phase (twice where the records have lookups).
        phases = 2 if arg["stride"] > arg["dense_lines"] else 1
        lines = phases * _ceil_div(2 * items, chip.geometry.line_bytes)
        indices = raw.view("<u2").astype(np.int64)
        bad = np.flatnonzero(indices >= arg["count"])
        if not bad.size:
            return indices, None, lines
        errors = indices[bad]
        indices[bad] = arg["count"] - 1
        return indices, errors, lines

    def _fetch(self, tag, arg):
        """Start the head FETCH (prepared with those behind it if it was not)."""
        chip = self.chip
        if not self.ready:
            self._prepare()
        indices, errors, lines, dense, lookups = self.ready.popleft()
        lane = arg["lane"]
        chip.joiner.add({"tag": tag, "lane": lane, "items": arg["items"], "params": arg["join"]})
        if errors is not None:
            chip.error(tag, ErrorCode.INDEX, Opcode.FETCH, errors)
        chip.count(Counter.MEM_READ_LINES, lines)
        chip.index[lane].push(indices)
        chip.dense[lane].push(dense)
        if lookups is not None:
            chip.embedding.queue.append(("lookup", tag, lookups))

    def _prepare(self):
        """The head FETCH and those behind it that can go with it (see the class docs), each as ``(indices, INDEX
        error details or None, memory lines, dense words, (batch, k) of its LOOKUPs or None)`` in :attr:`ready`."""
        g = self.chip.geometry
        head = self.queue[0][2]
        shape = (head["stride"], head["dense_lines"], head["dense_words"])
        fetches = []
        for _tag, emb, arg in self.queue:
            if emb or len(fetches) == self.BATCH or (fetches and (
                    arg["source"] == FetchSource.SURVIVORS.value
                    or (arg["stride"], arg["dense_lines"], arg["dense_words"]) != shape)):
                break
            fetches.append(arg)
        stride, dense_lines, dense_words = shape
        found = [self._indices(arg) for arg in fetches]
        items = np.array([arg["items"] for arg in fetches])
        item_ends = np.cumsum(items)
        indices = np.concatenate([indices for indices, _, _ in found])
        lines = np.array([lines for _, _, lines in found]) + items * dense_lines
        # Phase 1: every item's dense words (bytes beyond the dense lines are zero).
        lb = g.line_bytes
        first_lines = np.repeat([arg["base"] for arg in fetches], items) + indices * stride
        want = dense_words * g.rows
        dense = np.zeros((len(indices), max(want, dense_lines * lb)), dtype=np.uint8)
        if dense_lines:
            dense[:, :dense_lines * lb] = self.chip.memory.read(
                first_lines[:, None] + np.arange(dense_lines)).reshape(len(indices), -1)
        dense = dense[:, :want].view(np.int8).reshape(-1, g.rows)
        words = np.concatenate([[0], item_ends * dense_words])
        # Phase 2: every item's lookups.
        area = stride - dense_lines
        holds = area * lb // self.entry_bytes - 1 if area > 0 else -1
        batch = None
        if holds >= 0:
            raw = self.chip.memory.read(first_lines[:, None] + dense_lines + np.arange(area)).reshape(len(indices), -1)
            entries = raw[:, :(holds + 1) * self.entry_bytes].copy().view(f"<u{self.entry_bytes}").astype(np.uint64)
            counts = np.minimum(entries[:, 0], np.uint64(holds)).astype(np.int64)
            entry_lines = np.cumsum(_ceil_div((counts + 1) * self.entry_bytes, lb))
            lines += np.diff(entry_lines[item_ends - 1], prepend=0)
            taken = np.arange(holds + 1)[None, :] <= counts[:, None]
            taken[:, 0] = False
            fields = self.entry_codec.unpack((entries[taken] & self.entry_mask)[:, None])
            ends = np.cumsum(counts)
            final = np.zeros(int(ends[-1]), dtype=np.int64)
            final[ends[counts > 0] - 1] = 1
            last = fields["last"] | final
            lookup_ends = np.concatenate([[0], ends[item_ends - 1]])
            bags = np.diff(np.concatenate([[0], np.cumsum(last)])[lookup_ends])
            batch = _LookupBatch(np.stack([fields["table"], fields["id"], last, final], axis=1), lookup_ends,
                                 self._width(fetches, bags.tolist()))
        else:
            self._width(fetches, [0] * len(fetches))
        starts = item_ends - items
        for k, ((_, errors, _), start, end) in enumerate(zip(found, starts.tolist(), item_ends.tolist())):
            lookups = (batch, k) if batch is not None and batch.ends[k + 1] > batch.ends[k] else None
            self.ready.append((indices[start:end], errors, int(lines[k]), dense[words[k]:words[k + 1]], lookups))


    def _width(self, fetches, bags):
        """The bytes of the pooled vectors of ``fetches`` (making ``bags`` bags each) the joiner reads: their join's
        dim where each FETCH's vectors are its own join's (every FETCH so far made as many as its join takes),
        else every row byte."""
        width, row_bytes = 0, self.chip.geometry.emb.row_bytes
        for arg, made in zip(fetches, bags):
            taken = arg["items"] * (arg["join"]["vectors"] - 1)
            width = max(width, arg["join"]["dim"] if self.surplus == 0 and made == taken else row_bytes)
            self.surplus += made - taken
        return width


class _LookupBatch:
    """The LOOKUPs of FETCHes prepared together (:meth:`_Fetcher._prepare`), which the embedding unit computes as
    one block when the first of them reaches it (:meth:`_Embedding._part`).

    Attributes
    ----------
    lookups : numpy.ndarray
        ``(n, 4)``: table, ID, ``last`` (a bag's last ID), ``final`` (an item's last ID) of every FETCH's lookups in
        order; each FETCH's end with a ``last``, so no bag spans two FETCHes.
    ends : numpy.ndarray
        FETCH ``k``'s lookups are ``ends[k] .. ends[k + 1] - 1``.
    width : int
        The bytes of the pooled vectors the joiner reads (:meth:`_Fetcher._width`): those beyond are left zero.
    pooled, row_lines, missed, bags : numpy.ndarray or None
        Once computed: the pooled vectors (one per bag), each lookup's ``log2`` lines and dynamic cache misses
        (:meth:`_Embedding._lookups`), and FETCH ``k``'s bags ``bags[k] .. bags[k + 1] - 1``.
    """

    def __init__(self, lookups, ends, width):
        self.lookups, self.ends, self.width = lookups, ends, width
        self.pooled = self.row_lines = self.missed = self.bags = None

    def size(self, k):
        """FETCH ``k``'s lookups."""
        return int(self.ends[k + 1] - self.ends[k])


class _Embedding(_Unit):
    """The embedding unit (:mod:`rpaccel.rtl.embedding`): table configuration, static cache, dynamic cache (counts by
    :class:`rpaccel.cachemodel.LRUCache`, data as filled), pooling and requantisation.

    A dynamic line holds what memory held when it was filled: memory itself, but for the lines written while cached
    (by a MEM_WRITE, or an UPDATE that does not update the cached copy), whose filled data ``stale`` keeps until
    their next miss (:meth:`write_memory`)."""

    name = "embedding unit"
    CONFIG_FIELDS = ("rows", "static_rows", "static_base", "mem_base", "row_lines", "m", "s")
    #: Bags of up to this many lookups requantise through tables of every sum (:meth:`_requantized`), longer ones
    #: by arithmetic.
    LUT_LOOKUPS = 16

    def __init__(self, chip):
        super().__init__(chip)
        g = self.geometry = chip.geometry.emb
        self.queue = deque()
        # One entry per value of the command's table field (a table at or above max_tables reads zeros).
        entries = 1 << ceil_log2(max(g.tables, 2))
        self.config = {name: np.zeros(entries, dtype=np.int64) for name in self.CONFIG_FIELDS}
        self.static = np.zeros((max(g.static_lines, 1), g.line_bytes), dtype=np.uint8)
        self.dynamic = LRUCache(g.sets, g.ways) if g.ways else None
        self.stale = {}         # line address -> the data the dynamic cache holds for it, where memory differs
        self.partial = None     # (rows, tables) of a bag whose last ID has not come yet
        self._luts = {}         # lookups -> per table the pooled value of each sum of as many int8 values
        self.clear()

    def clear(self):
        self.counts = dict.fromkeys(("lookups", "static_hits", "line_hits", "line_misses", "evictions",
                                     "range_errors", "mem_lines"), 0)

    def step(self):
        progress = False
        while self.queue:
            kind, _tag, arg = self.queue.popleft()
            if kind == "lookup":
                self._part(*arg)
            else:
                self._command(arg)
            progress = True
        return progress

    def _part(self, batch, k):
        """FETCH ``k`` of ``batch``: its pooled vectors out, the batch's LOOKUPs computed (and counted) when its
        first FETCH comes (nothing else reaches the unit between its FETCHes, :class:`_Fetcher`)."""
        if batch.pooled is None:
            batch.pooled, batch.row_lines, batch.missed = self._lookups(batch.lookups, batch.width)
            bags = np.cumsum(batch.lookups[:, 2] != 0)
            batch.bags = np.concatenate([[0], bags[batch.ends[1:] - 1]])
        self.chip.pooled.push(batch.pooled[batch.bags[k]:batch.bags[k + 1]])

    def waiting(self):
        return None if self.idle() else "holds a bag whose last ID has not come"

    def idle(self):
        return not self.queue and self.partial is None

    def _command(self, cmd):
        chip, g, cfg = self.chip, self.geometry, self.config
        op, table = cmd["op"], cmd["table"]
        if op == EmbeddingOp.CONFIG.value:
            for name in self.CONFIG_FIELDS:
                cfg[name][table] = cmd["arg"]["config"][name]
            self._luts.clear()
        elif op == EmbeddingOp.PRELOAD.value:
            lines = int(cfg["static_rows"][table]) << int(cfg["row_lines"][table]) if g.static_rows else 0
            if lines:
                data = chip.memory.read(cfg["mem_base"][table] + np.arange(lines))
                self.static[(cfg["static_base"][table] + np.arange(lines)) % len(self.static)] = data
            self.counts["mem_lines"] += lines
            chip.count(Counter.MEM_READ_LINES, lines)
        elif op == EmbeddingOp.UPDATE.value:
            update = cmd["arg"]["update"]
            row, first = update["id"], (update["id"] << int(cfg["row_lines"][table])) + update["line"]
            line = int(cfg["mem_base"][table]) + first
            data = _lines_of([update["data"]], g.line_bytes)
            self.write_memory(np.array([line % chip.memory.lines]), data)
            chip.count(Counter.MEM_WRITE_LINES, 1)
            if g.static_rows and row < cfg["rows"][table] and row < cfg["static_rows"][table]:
                self.static[(int(cfg["static_base"][table]) + first) % len(self.static)] = data[0]
            elif self.dynamic is not None and row < cfg["rows"][table] and self.dynamic.contains(line):
                self.stale.pop(line, None)          # the cached copy updated: memory's data again
        elif op == EmbeddingOp.FLUSH.value and self.dynamic is not None:
            self.dynamic.flush()
            self.stale.clear()

    def write_memory(self, addresses, lines):
        """Write memory lines (``(n, line_bytes)`` at the wrapped ``addresses``), a cached line keeping its data."""
        if self.dynamic is not None:
            for k in np.flatnonzero(self.dynamic.contains_lines(addresses)).tolist():
                line = int(addresses[k])
                if line not in self.stale:
                    self.stale[line] = self.chip.memory.read(line)
        self.chip.memory.write(addresses, lines)

    def _lookups(self, lookups, width=None):
        """Rows of a block of LOOKUPs through the caches, pooled per bag, requantised.

        Parameters
        ----------
        lookups : numpy.ndarray
            ``(n, 4)``: table, ID, ``last``, ``final`` per lookup.
        width : int, optional
            The bytes of each pooled vector to compute (the row's bytes beyond, zero, pool to zeros), ``row_bytes``
            if not given.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray, numpy.ndarray)
            The pooled vectors of the bags the block ends (:meth:`_pool`), ``width`` bytes each; per lookup its
            row's ``log2`` lines and the lines of it the dynamic cache missed (all its lines without one; none for
            a static hit or an ID out of range), in the unit's order.
        """
        chip, g, cfg = self.chip, self.geometry, self.config
        width = g.row_bytes if width is None else width
        tables, ids, last, _ = lookups.T
        row_lines = np.minimum(cfg["row_lines"][tables], g.bank_bits)     # a row is at most max_emb_dim bytes
        in_range = ids < cfg["rows"][tables]
        static = in_range & (ids < cfg["static_rows"][tables]) if g.static_rows else np.zeros(len(ids), bool)
        first = ids << row_lines
        # The rows' bytes pooled: at most the widest row's (those beyond pool to zeros).
        cols = min(width, g.line_bytes << int(row_lines.max(initial=0)))
        counts = self.counts
        counts["lookups"] += len(ids)
        counts["range_errors"] += int(np.count_nonzero(~in_range))
        statics = int(np.count_nonzero(static))
        counts["static_hits"] += statics
        dynamic = np.flatnonzero(in_range & ~static)
        bases = (cfg["mem_base"][tables[dynamic]] + first[dynamic]) % chip.memory.lines
        spans = 1 << row_lines[dynamic]
        offsets = np.cumsum(spans) - spans
        lines = np.repeat(bases - offsets, spans) + np.arange(int(spans.sum()))
        data = chip.memory.read(lines)
        if self.dynamic is None:
            misses = len(lines)
        else:
            cache = self.dynamic
            hits, evictions = cache.hits, cache.evictions
            hit = cache.access_lines(lines)
            if self.stale:
                self._stale_lines(lines, hit, data)
            counts["line_hits"] += cache.hits - hits
            counts["evictions"] += cache.evictions - evictions
            misses = len(lines) - (cache.hits - hits)
        counts["line_misses"] += misses
        counts["mem_lines"] += misses
        chip.count(Counter.MEM_READ_LINES, misses)
        if len(dynamic) == len(ids) and len(ids) and row_lines.min() == row_lines.max():
            # Every row from memory, of one size: the lines read are the rows, one after another.
            rows = data.reshape(len(ids), -1)[:, :cols]
        else:
            rows = np.zeros((len(ids), cols), dtype=np.uint8)
            for n in np.unique(row_lines[static]).tolist() if statics else ():
                where = np.flatnonzero(static & (row_lines == n))
                lines_of = (cfg["static_base"][tables[where]] + first[where])[:, None] + np.arange(1 << n)
                part = self.static[lines_of % len(self.static)].reshape(len(where), -1)[:, :cols]
                rows[where, :part.shape[1]] = part
            for n in np.unique(row_lines[dynamic]).tolist():
                where = row_lines[dynamic] == n
                part = data[offsets[where][:, None] + np.arange(1 << n)].reshape(int(where.sum()), -1)[:, :cols]
                rows[dynamic[where], :part.shape[1]] = part
        missed = np.zeros(len(ids), dtype=np.int64)
        if self.dynamic is None:
            missed[dynamic] = spans
        elif len(dynamic):
            missed[dynamic] = np.add.reduceat(~hit, offsets)
        return _widened(self._pool(rows.view(np.int8), tables, last), width), row_lines, missed

    def _stale_lines(self, lines, hit, data):
        """A block's lines written while cached: a hit reads the data the line was filled with, a miss fills it
        again from memory (from then on it is memory's)."""
        stale = self.stale
        for k in np.flatnonzero(np.isin(lines, np.fromiter(stale, dtype=np.int64, count=len(stale)))).tolist():
            line = int(lines[k])
            if not hit[k]:
                stale.pop(line, None)
            elif line in stale:
                data[k] = stale[line]

    def _pool(self, rows, tables, last):
        """Sum each bag's rows in the unit's accumulators, requantise with its table's ``(m, s)`` (the table of the
        bag's last ID): the pooled vectors of the bags ``rows`` ends (as wide as the rows, or as a bag's rows
        before its last, which are kept until it comes)."""
        ends = np.flatnonzero(last)
        if self.partial is not None:
            width = max(rows.shape[1], self.partial[0].shape[1])
            rows = np.concatenate([_widened(self.partial[0], width), _widened(rows, width)])
            tables = np.concatenate([self.partial[1], tables])
            ends = ends + len(self.partial[0])
        self.partial = None
        done = ends[-1] + 1 if ends.size else 0
        if done < len(rows):
            self.partial = (rows[done:], tables[done:])
        if not ends.size:
            return np.zeros((0, rows.shape[1]), dtype=np.int64)
        bags = len(ends)
        length = done // bags
        if length * bags == done and (ends == np.arange(length - 1, done, length)).all():    # bags of one length
            sums = rows[:done] if length == 1 else rows[:done].reshape(bags, length, -1).sum(axis=1)
        else:
            starts = np.concatenate([[0], ends[:-1] + 1])
            sums = np.add.reduceat(rows[:done].astype(np.int64), starts, axis=0)
            length = int((ends + 1 - starts).max())
        bag_tables = tables[ends]
        if length <= self.LUT_LOOKUPS:
            return self._requantized(sums, bag_tables, length)
        m, s = self.config["m"][bag_tables], self.config["s"][bag_tables]
        return requantize(_wrap(sums, self.geometry.acc_bits), m[:, None], s[:, None])

    def _requantized(self, sums, bag_tables, length):
        """The pooled values of ``sums`` (bags x elements, of at most ``length`` rows each) through a table per
        table and bag length: its accumulator wrapped and requantised with its ``(m, s)`` for each sum ``length``
        int8 values can make (made when first needed after the table's CONFIG), indexed in the narrowest integers
        that hold the tables' indices."""
        low, size = -128 * length, 255 * length + 1
        luts = self._luts.get(length)
        if luts is None:
            values = _wrap(np.arange(low, low + size), self.geometry.acc_bits)
            m, s = self.config["m"][:, None], self.config["s"][:, None]
            luts = self._luts[length] = requantize(values[None, :], m, s).astype(np.int8).reshape(-1)
        kind = np.uint16 if len(luts) <= 1 << 16 else np.intp
        if sums.dtype == np.int8:
            # Bags of one: the rows themselves, ``value - low`` (value + 128) their bytes with the top bit flipped.
            index = (sums.view(np.uint8) ^ np.uint8(128)).astype(kind)
        else:
            index = (sums - low).astype(kind)
        index += (bag_tables * size).astype(kind)[:, None]
        return luts[index]


class _Lane(_Unit):
    """A lane front end and its MLP engine lane: the LANE queue and its gate, the engine's loader (INPUT) and
    layer (LAYER) sequencers, the activation memory (docs/chip.md; rtl/mlp.py)."""

    def __init__(self, chip, lane):
        super().__init__(chip)
        self.lane = lane
        self.name = f"lane {lane}"
        self.queue = deque()
        self.loads = deque()
        self.layers = deque()
        self.inputs_done = self.layers_done = 0
        self.loaded = 0         # items the head INPUT has taken
        self.memory = None

    def reset_memory(self, split):
        shape = self.chip.geometry.engine.splits[split]
        self.memory = np.zeros((shape.act_words, shape.rows), dtype=np.int8) if self.lane < split else None

    def step(self):
        progress = False
        while self.queue and _satisfied(self.chip.weights.done, self.queue[0][1]["wait_weights"]):
            tag, arg = self.queue.popleft()
            (self.loads if arg["cmd"]["op"] == Op.INPUT else self.layers).append((tag, arg))
            progress = True
        moved = True
        while moved:
            moved = self._load() | self._layer()
            progress |= moved
        return progress

    def _shape(self):
        return self.chip.geometry.engine.splits[self.chip.split]

    def _load_block(self):
        """Why the head INPUT cannot start, or ``None``."""
        tag, arg = self.loads[0]
        cmd, r = arg["cmd"], self._shape().rows
        source = self.chip.inter[self.lane] if arg["src"] == ActSource.INTERACT.value else self.chip.dense[self.lane]
        if not _satisfied(self.layers_done, cmd["wait_layers"]):
            return f"INPUT (tag {tag}) waits for {cmd['wait_layers']} layers ({self.layers_done} done)"
        if cmd["ktiles"] * r > arg["src_words"] * self.chip.geometry.rows:
            return (f"INPUT (tag {tag}) wants {cmd['ktiles']} words of {r} per item, its {arg['src_words']} words "
                    f"of {self.chip.geometry.rows} hold fewer")
        if len(source) < arg["src_words"]:
            return (f"INPUT (tag {tag}) has taken {self.loaded} of {cmd['items']} items and waits for "
                    f"{(cmd['items'] - self.loaded) * arg['src_words']} words on {source.name} ({len(source)} there)")
        return None

    def _load(self):
        """The head INPUT takes the whole items its source holds (the act multiplexer takes words as they come:
        the joiner's output buffer may hold fewer than the INPUT's)."""
        if not self.loads or self._load_block() is not None:
            return False
        _tag, arg = self.loads[0]
        cmd, r = arg["cmd"], self._shape().rows
        source = self.chip.inter[self.lane] if arg["src"] == ActSource.INTERACT.value else self.chip.dense[self.lane]
        items, kt, src_words = cmd["items"], cmd["ktiles"], arg["src_words"]
        n = items - self.loaded if not src_words else min(items - self.loaded, len(source) // src_words)
        words = source.take(n * src_words).reshape(n, -1)[:, :kt * r].reshape(n, kt, r).transpose(1, 0, 2)
        memory, base, stride = self.memory, cmd["in_base"], cmd["stride"]
        if stride == items and base + kt * items <= len(memory):
            # Word j of item i at base + j * items + i: the items' columns of a block of kt x items words.
            memory[base:base + kt * items].reshape(kt, items, r)[:, self.loaded:self.loaded + n] = words
        else:
            address = base + np.arange(kt)[:, None] * stride + self.loaded + np.arange(n)[None, :]
            memory[address % len(memory)] = words
        self.loaded += n
        if self.loaded == items:
            self.loads.popleft()
            self.loaded = 0
            self.inputs_done = (self.inputs_done + 1) % _WAIT_MOD
        return True

    def _layer_block(self):
        tag, arg = self.layers[0]
        cmd = arg["cmd"]
        if not _satisfied(self.inputs_done, cmd["wait_inputs"]):
            return f"LAYER (tag {tag}) waits for {cmd['wait_inputs']} inputs ({self.inputs_done} done)"
        if not _satisfied(self.layers_done, cmd["wait_layers"]):
            return f"LAYER (tag {tag}) waits for {cmd['wait_layers']} layers ({self.layers_done} done)"
        return None

    def _layer(self):
        if not self.layers or self._layer_block() is not None:
            return False
        _tag, arg = self.layers.popleft()
        cmd, shape = arg["cmd"], self._shape()
        r, c = shape.rows, shape.cols
        items, kt, nt = cmd["items"], cmd["ktiles"], cmd["ntiles"]
        weights, bias = self.chip.layer_weights(cmd["w_base"], kt, nt)
        # Word j of item i is at in_base + j * stride + i: a block of kt x items words where stride is items.
        memory, base, stride = self.memory, cmd["in_base"], cmd["stride"]
        x = np.empty((items, kt, r), dtype=weights.dtype)
        if stride == items and base + kt * items <= len(memory):
            x[:] = memory[base:base + kt * items].reshape(kt, items, r).transpose(1, 0, 2)
        else:
            rows = base + np.arange(kt)[:, None] * stride + np.arange(items)[None, :]
            x[:] = memory[rows % len(memory)].transpose(1, 0, 2)
        params = cmd["params"]
        product = np.matmul(x.reshape(items, kt * r), weights)
        if weights.dtype == np.float32:
            # At most 2**24 (_exact_float): an int32, to which the bias adds with the accumulator's wrap.
            total = product.astype(np.int32)
            total += bias
            total = total.astype(np.int64)
        else:
            total = _wrap(product.astype(np.int64) + bias, 32)
        out = total if params["raw"] else _requantize(total, params["m"], params["s"], params["relu"])
        if cmd["to_output"]:
            stream = self.chip.bottom if arg["dst"] == OutDest.JOIN.value else self.chip.logits
            stream[self.lane].push(out.reshape(items, nt, c).transpose(1, 0, 2).reshape(nt * items, c))
        else:
            self._store(cmd, (_wrap(out, 8) if params["raw"] else out).reshape(items, nt, c), r, c)
        self.layers_done = (self.layers_done + 1) % _WAIT_MOD
        return True

    def _store(self, cmd, values, r, c):
        """A layer's ``(items, nt, c)`` int8 results into the activation memory: n-tile ``j`` of item ``i`` at
        column ``(j * c) % r`` of word ``out_base + (j * c) // r * stride + i`` (a later n-tile over an earlier's)."""
        memory, base, stride = self.memory, cmd["out_base"], cmd["stride"]
        items, nt = values.shape[:2]
        per = r // c
        if stride == items and per * c == r and base + _ceil_div(nt, per) * items <= len(memory):
            # Words one after another: n-tiles j * per .. (j + 1) * per - 1 fill word j of each item, the last word's
            # first columns take the n-tiles left.
            words, left = divmod(nt, per)
            if words:
                block = values[:, :words * per].reshape(items, words, r).transpose(1, 0, 2)
                memory[base:base + words * items] = block.reshape(words * items, r)
            if left:
                memory[base + words * items:base + (words + 1) * items, :left * c] = \
                    values[:, words * per:].reshape(items, left * c)
            return
        tiles = np.arange(nt) * c
        words = (base + (tiles // r * stride)[:, None] + np.arange(items)) % len(memory)      # (nt, items)
        at = (words * r + (tiles % r)[:, None])[:, :, None] + np.arange(c)
        memory.reshape(-1)[at] = values.transpose(1, 0, 2)

    def waiting(self):
        reasons = []
        if self.queue:
            tag, arg = self.queue[0]
            reasons.append(f"LANE (tag {tag}) waits for {arg['wait_weights']} WEIGHTS ({self.chip.weights.done} done)")
        if self.loads:
            reasons.append(self._load_block() or "INPUT ready")
        if self.layers:
            reasons.append(self._layer_block() or "LAYER ready")
        return "; ".join(reasons) if reasons else None

    def finished(self):
        return not (self.queue or self.loads or self.layers)


class _Joiner(_Unit):
    """The joiner and the interaction unit (:mod:`rpaccel.rtl.accel.join`), per lane: the lane's jobs, its FIFO of
    pooled vectors (``join_buffer_words`` words) and its output buffer (``join_output_words`` words, ``inter[l]``).

    The pooled writer takes the embedding unit's vectors in fetch order into the FIFO of each job's lane while it
    has room; a lane's head job, once its bottom block is in, sends its items, each once the lane's FIFO holds its
    pooled vectors and the lane's output buffer has room for its output, whatever another lane's job waits for."""

    name = "joiner"

    def __init__(self, chip):
        super().__init__(chip)
        g = chip.geometry
        self.order = deque()        # the pooled writer's jobs, in fetch order: [job, vectors not yet written]
        self.jobs = [deque() for _ in range(g.lanes)]
        self.fifo = [_Stream(f"the joiner's FIFO[{lane}]") for lane in range(g.lanes)]
        self.fifo_words = [0] * g.lanes

    def add(self, job):
        """A FETCH's join job, ``{tag, lane, items, params}``."""
        self.order.append([job, job["items"] * (job["params"]["vectors"] - 1)])
        self.jobs[job["lane"]].append(dict(job, sent=0, block=None))

    def finished(self):
        return not (self.order or any(self.jobs))

    def idle(self):
        return self.finished() and not any(self.fifo_words)

    def _chunks(self, job):
        return _ceil_div(job["params"]["dim"], self.chip.geometry.rows)

    def _bottom_words(self, job):
        c = self.chip.geometry.engine.splits[self.chip.split].cols
        return job["items"] * _ceil_div(job["params"]["dim"], c)

    def step(self):
        progress, moved = False, True
        while moved:
            moved = self._write()
            for lane in range(self.chip.split):
                moved |= self._send(lane)
            progress |= moved
        return progress

    def _write(self):
        """Pooled vectors into the FIFOs, in fetch order, while the head job's lane's FIFO has room."""
        chip, moved = self.chip, False
        while self.order:
            job, left = self.order[0]
            lane, chunks = job["lane"], self._chunks(job)
            n = min(left, len(chip.pooled), (chip.config.join_buffer_words - self.fifo_words[lane]) // chunks)
            if n:
                self.fifo[lane].push(chip.pooled.take(n))
                self.fifo_words[lane] += n * chunks
                self.order[0][1] = left = left - n
                moved = True
            if left:
                return moved
            self.order.popleft()
        return moved

    def _send(self, lane):
        """Lane ``lane``'s items into the interaction unit and their output into its buffer, as far as they go."""
        chip, queue, moved = self.chip, self.jobs[lane], False
        while queue:
            job = queue[0]
            items, params = job["items"], job["params"]
            c, d, f = chip.geometry.engine.splits[chip.split].cols, params["dim"], params["vectors"]
            if job["block"] is None:
                if len(chip.bottom[lane]) < self._bottom_words(job):
                    return moved
                bottom = chip.bottom[lane].take(self._bottom_words(job)).reshape(-1, items, c).transpose(1, 0, 2)
                job["block"] = bottom.reshape(items, -1)[:, :d].astype(np.int8)      # the low 8 bits
                moved = True
            mode, rows = MODES[params["mode"]], chip.geometry.rows
            out_words = output_words(mode, f, d, rows)
            n = min(items - job["sent"], (chip.config.join_output_words - len(chip.inter[lane])) // out_words)
            if f > 1:
                n = min(n, len(self.fifo[lane]) // (f - 1))
            if n <= 0:
                return moved
            vectors = np.empty((n, f, d), dtype=np.int8)
            vectors[:, 0] = job["block"][job["sent"]:job["sent"] + n]
            if f > 1:
                vectors[:, 1:] = self.fifo[lane].take(n * (f - 1)).reshape(n, f - 1, -1)[:, :, :d]
                self.fifo_words[lane] -= n * (f - 1) * self._chunks(job)
            if mode == "dot":
                out = _dot_interaction(vectors, params["m"], params["s"])
            else:
                out = interaction_model(mode, vectors, params["m"], params["s"])
            words = np.zeros((n, out_words * rows), dtype=np.int8)
            words[:, :out.shape[1]] = out
            chip.inter[lane].push(words.reshape(-1, rows))
            job["sent"] += n
            moved = True
            if job["sent"] < items:
                return moved
            queue.popleft()
        return moved

    def waiting(self):
        chip, reasons = self.chip, []
        if self.order:
            job, left = self.order[0]
            reasons.append(f"the pooled writer waits to put {left} vectors of FETCH (tag {job['tag']}) into "
                           f"FIFO[{job['lane']}] ({self.fifo_words[job['lane']]} of "
                           f"{chip.config.join_buffer_words} words used; {len(chip.pooled)} vectors there)")
        for lane, queue in enumerate(self.jobs):
            if queue:
                job = queue[0]
                if job["block"] is None:
                    reasons.append(f"the join of FETCH (tag {job['tag']}) waits for {self._bottom_words(job)} "
                                   f"words on bottom[{lane}] ({len(chip.bottom[lane])} there)")
                else:
                    reasons.append(f"the join of FETCH (tag {job['tag']}) has sent {job['sent']} of "
                                   f"{job['items']} items; FIFO[{lane}] holds {len(self.fifo[lane])} vectors, "
                                   f"{chip.inter[lane].name} {len(chip.inter[lane])} of "
                                   f"{chip.config.join_output_words} words")
        return "; ".join(reasons) or None


class _Holder(_Unit):
    """A unit whose kept results FETCH reads (a top-k or a filter unit) and its survivors banks: the query it holds,
    its closed results waiting to be kept."""

    def __init__(self, chip, name, positions):
        super().__init__(chip)
        self.name = name
        self.owner = None                    # the lane whose query the unit holds
        self.scores, self.indices = [], []
        self.results = deque()               # closed queries: (tag, kept indices, keep, responses)
        self.results_done = self.releases = 0
        self.banks = np.zeros((2, positions), dtype=np.int64)

    def take(self, lane, scores, indices):
        self.owner = lane
        self.scores.append(scores)
        self.indices.append(indices)

    def close(self, tag, k, keep, report):
        kept, replies = self._select(tag, np.concatenate(self.scores), np.concatenate(self.indices), k, report)
        self.results.append((tag, kept, keep, replies))
        self.owner, self.scores, self.indices = None, [], []

    def _select(self, tag, scores, indices, k, report):
        """The kept indices of a closed query and its responses (keyword arguments of ``_Responses.add``)."""
        raise NotImplementedError

    def step(self):
        progress = False
        while self.results:
            _tag, kept, keep, replies = self.results[0]
            if keep:
                number = (self.results_done + 1) % _WAIT_MOD
                if not _satisfied(self.releases, (number - 2) % _WAIT_MOD):
                    return progress
                self.banks[number % 2, :len(kept)] = kept
                self.results_done = number
            for reply in replies:
                self.chip.responses.add(**reply)
            self.results.popleft()
            progress = True
        return progress

    def waiting(self):
        if self.results:
            number = (self.results_done + 1) % _WAIT_MOD
            return (f"result {number} (SCORE tag {self.results[0][0]}) waits for result {(number - 2) % _WAIT_MOD} "
                    f"to be released ({self.releases} releases)")
        if self.owner is not None:
            return f"holds an open query of lane {self.owner} (no SCORE with last closes it)"
        return None

    def finished(self):
        return not self.results

    def idle(self):
        return not self.results and self.owner is None


class _TopK(_Holder):
    """A top-k unit: the ``k`` best of a query, best first, as RANK responses."""

    def __init__(self, chip, unit):
        super().__init__(chip, f"top-k unit {unit}", chip.geometry.k_max)

    def _select(self, tag, scores, indices, k, report):
        scores, indices = topk(scores, k, indices)
        if not report:
            return indices, []
        last = np.zeros(len(scores), dtype=np.int64)
        last[-1] = 1
        return indices, [{"kind": ResponseKind.RANK, "tag": tag, "count": len(scores), "last": last,
                          "index": indices, "score": scores}]


class _Filter(_Holder):
    """A filter unit: the ``k`` best of a query as a set, in arrival order, as KEPT responses; the first
    ``filter_capacity`` candidates of a query only, and an ERROR in place of the last KEPT if there were more."""

    def __init__(self, chip, unit):
        self.capacity = chip.geometry.filter_capacity
        super().__init__(chip, f"filter unit {unit}", self.capacity)

    def _select(self, tag, scores, indices, k, report):
        kept, overflow = filter_keep(scores.tolist(), k, indices.tolist(), self.capacity)
        shown = (kept[:-1] if overflow else kept) if report else []
        replies = []
        if shown:
            last = np.zeros(len(shown), dtype=np.int64)
            last[-1] = not overflow
            replies.append({"kind": ResponseKind.KEPT, "tag": tag, "count": len(shown), "last": last,
                            "index": shown})
        if overflow:       # its ERROR replaces the last KEPT
            replies.append({"kind": ResponseKind.ERROR, "tag": tag, "last": 1, "code": ErrorCode.ITEMS,
                            "index": Opcode.SCORE.value})
        return np.array(kept, dtype=np.int64), replies


class _Scorer(_Unit):
    """A lane's score sequencer: its SCOREs in order, logits and indices to a top-k or filter unit or to the
    responses."""

    def __init__(self, chip, lane):
        super().__init__(chip)
        self.lane = lane
        self.name = f"score sequencer {lane}"
        self.queue = deque()

    def _block(self):
        tag, arg = self.queue[0]
        chip, lane = self.chip, self.lane
        for stream in (chip.logits[lane], chip.index[lane]):
            if len(stream) < arg["items"]:
                return f"SCORE (tag {tag}) waits for {arg['items']} on {stream.name} ({len(stream)} there)"
        if arg["dest"] != ScoreDest.RSP.value:
            unit = self._unit(arg)
            if unit.owner not in (None, lane):
                return f"SCORE (tag {tag}) waits for {unit.name}, which holds lane {unit.owner}'s query"
        return None

    def _unit(self, arg):
        """The top-k or filter unit a SCORE (not to the responses) names."""
        return (self.chip.filters if arg["dest"] == ScoreDest.FILTER.value else self.chip.topk)[arg["unit"]]

    def step(self):
        chip, progress = self.chip, False
        while self.queue and self._block() is None:
            tag, arg = self.queue.popleft()
            items = arg["items"]
            scores = chip.logits[self.lane].take(items)[:, 0]
            indices = chip.index[self.lane].take(items)
            if arg["dest"] == ScoreDest.RSP.value:
                last = np.zeros(items, dtype=np.int64)
                last[-1] = arg["last"]
                chip.responses.add(ResponseKind.LOGIT, tag, count=items, last=last, index=indices, score=scores)
            else:
                unit = self._unit(arg)
                unit.take(self.lane, scores, indices)
                if arg["last"]:
                    unit.close(tag, arg["k"], arg["keep"], arg["report"])
            progress = True
        return progress

    def waiting(self):
        return (self._block() or "SCORE ready") if self.queue else None


class _WeightLoader(_Unit):
    """WEIGHTS commands, in order: words from memory into the weight buffer, each range of the buffer remembered
    with the memory it came from (:meth:`source`)."""

    name = "weight loader"

    def __init__(self, chip):
        super().__init__(chip)
        self.queue = deque()
        self.done = 0
        self.loaded = {}        # (first word, end) of a load -> (memory address, memory version) it came from

    def _block(self):
        tag, arg = self.queue[0]
        lane = self.chip.lanes[arg["lane"]]
        if arg["wait"] and not _satisfied(lane.layers_done, arg["wait_layers"]):
            return (f"WEIGHTS (tag {tag}) waits for {arg['wait_layers']} layers of lane {arg['lane']} "
                    f"({lane.layers_done} done)")
        return None

    def step(self):
        chip, progress = self.chip, False
        while self.queue and self._block() is None:
            _tag, arg = self.queue.popleft()
            word_bytes, words = chip.geometry.engine.word_bytes, arg["words"]
            if words:
                chip.count(Counter.MEM_READ_LINES, _ceil_div(words * word_bytes, chip.geometry.line_bytes))
                start, end = arg["w_addr"], arg["w_addr"] + words
                data = chip.memory.read_bytes(arg["mem_addr"], words * word_bytes)
                chip.weight_buffer[start:end] = data.view(np.int8).reshape(words, word_bytes)
                chip.forget_weights(start, end)
                self.loaded = {span: load for span, load in self.loaded.items()
                               if not (span[0] < end and start < span[1])}
                self.loaded[start, end] = (arg["mem_addr"], chip.memory.version)
            self.done = (self.done + 1) % _WAIT_MOD
            progress = True
        return progress

    def waiting(self):
        return (self._block() or "WEIGHTS ready") if self.queue else None

    def source(self, start, count):
        """Where the buffer's words ``start .. start + count - 1`` came from, if one load wrote them all:
        ``(memory address, word offset in it, memory version)``, else ``None``."""
        for (first, end), (address, version) in self.loaded.items():
            if first <= start and start + count <= end:
                return address, start - first, version
        return None


# The chip ----------------------------------------------------------------------------------------------------------


class FunctionalChip:
    """The chip of a configuration as Python objects, executing packed command words (see the module docs).

    Parameters
    ----------
    config : rpaccel.config.AccelConfig

    Attributes
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    memory : PagedMemory
        ``mem_bytes / line_bytes`` lines.
    weight_buffer : numpy.ndarray
        ``weight_buffer_words x array_cols`` int8.
    split : int
        The current split (1 after reset).
    topk, filters : list
        The top-k units and the filter units; ``holders`` both, in holder order (a holder's ``results_done``,
        ``releases`` and ``banks`` are its kept results' state).
    """

    #: Layers :meth:`layer_weights` keeps at most (a new one beyond clears them).
    KEPT_LAYERS = 256

    def __init__(self, config):
        self.geometry = g = ChipGeometry(config)
        self.config = config
        self._command = codec(g.command_layout())
        self.memory = PagedMemory(1 << g.addr_bits, g.line_bytes)
        self.weight_buffer = np.zeros((g.engine.weight_words, g.engine.word_bytes), dtype=np.int8)
        self._layers = {}       # layer_weights: (ktiles, ntiles, split, source) -> (weights, bias)
        self._placed = {}       # of those, the ones kept by their place in the buffer -> the buffer's spans
        self.split = 1
        self.counters = dict.fromkeys(Counter, 0)
        # What the controller's checks read: the tables configured, the weight buffer's pages loaded.
        self.tables_configured = np.zeros(1 << ceil_log2(max(g.emb.tables, 2)), dtype=bool)
        self.weight_pages = np.zeros(min(WEIGHT_PAGES, g.engine.weight_words), dtype=bool)
        self._page_bits = (_ceil_div(g.engine.weight_words, len(self.weight_pages)) - 1).bit_length()
        self._dim_bits = Shape.cast(g.join_params_layout()["dim"].shape).width
        self.dense = [_Stream(f"dense[{lane}]") for lane in range(g.lanes)]
        self.inter = [_Stream(f"inter[{lane}]") for lane in range(g.lanes)]
        self.bottom = [_Stream(f"bottom[{lane}]") for lane in range(g.lanes)]
        self.logits = [_Stream(f"logits[{lane}]") for lane in range(g.lanes)]
        self.index = [_Stream(f"index[{lane}]") for lane in range(g.lanes)]
        self.pooled = _Stream("pooled")
        self.fetcher = _Fetcher(self)
        self.embedding = _Embedding(self)
        self.lanes = [_Lane(self, lane) for lane in range(g.lanes)]
        self.joiner = _Joiner(self)
        self.scorers = [_Scorer(self, lane) for lane in range(g.lanes)]
        self.topk = [_TopK(self, unit) for unit in range(g.units)]
        self.filters = [_Filter(self, unit) for unit in range(g.filters)]
        self.holders = [*self.topk, *self.filters]
        self.weights = _WeightLoader(self)
        self.units = [self.fetcher, self.embedding, *self.lanes, self.joiner, *self.scorers, *self.holders,
                      self.weights]
        self.streams = [*self.dense, *self.inter, *self.bottom, *self.logits, *self.index, self.pooled]
        self._split_units()
        for lane in self.lanes:
            lane.reset_memory(self.split)
        self.responses = None

    # The weight buffer's layers -----------------------------------------------------------------------------------

    def layer_weights(self, base, ktiles, ntiles):
        """The weights of a LAYER at word ``base`` of the weight buffer (``ktiles x ntiles`` tiles, each n-tile's
        bias words first) on the current split: ``(rows x cols)`` weights as floats (:func:`_exact_float`) and the
        int32 biases. They are kept (a query's layers run on every sub-batch) by the memory their words came from,
        where one WEIGHTS loaded them all (a query streaming its weights loads them again for each sub-batch), else
        by their place in the buffer until a WEIGHTS overwrites it."""
        shape, buffer = self.geometry.engine.splits[self.split], self.weight_buffer
        span = shape.bias_words + ktiles * shape.tile_words
        start, count = base % len(buffer), ntiles * span
        source = self.weights.source(start, count)
        key = (ktiles, ntiles, self.split, source if source is not None else base)
        entry = self._layers.get(key)
        if entry is None:
            r, c = shape.rows, shape.cols
            address = base + np.arange(ntiles)[:, None] * span + np.arange(span)
            words = buffer[address % len(buffer)]                               # (nt, span, word bytes)
            bias = words[:, :shape.bias_words].reshape(ntiles, -1)[:, :4 * c].copy().view("<i4").reshape(-1)
            weights = (words[:, shape.bias_words:].reshape(ntiles, ktiles * r, c).transpose(1, 0, 2)
                       .reshape(ktiles * r, ntiles * c))
            spans = ([] if source is not None else [(0, len(buffer))] if count >= len(buffer)
                     else [(start, start + count)] if start + count <= len(buffer)
                     else [(start, len(buffer)), (0, start + count - len(buffer))])
            if len(self._layers) >= self.KEPT_LAYERS:
                self._layers.clear()
                self._placed.clear()
            entry = self._layers[key] = (weights.astype(_exact_float(ktiles * r)), bias)
            if spans:
                self._placed[key] = spans
        return entry

    def forget_weights(self, start, end):
        """Drop the layers kept by their place in the buffer whose words ``start .. end - 1`` a WEIGHTS overwrote
        (those kept by their memory stay)."""
        for key in [key for key, spans in self._placed.items()
                    if any(low < end and start < high for low, high in spans)]:
            del self._layers[key], self._placed[key]

    # Counters and responses ------------------------------------------------------------------------------------

    def count(self, counter, n=1):
        self.counters[counter] = (self.counters[counter] + int(n)) % (1 << 32)

    def error(self, tag, code, op, detail):
        """ERROR responses (one per ``detail``, ``last`` set) for a command of opcode ``op`` (an Opcode, or an
        unknown number)."""
        detail = _wrap(np.atleast_1d(np.asarray(detail, dtype=np.int64)), 32)
        index = op.value if isinstance(op, Opcode) else op
        self.responses.add(ResponseKind.ERROR, tag, count=len(detail), last=1, code=code, index=index, score=detail)

    def refuse(self, tag, code, op, detail):
        """A command the controller refuses: its ERROR, counted."""
        self.error(tag, code, op, detail)
        self.count(Counter.ERRORS)

    def counter_values(self):
        """Every counter COUNTERS answers (those of the configuration's lanes and top-k units), ``{index: value}``
        in index order; the timing counters are 0."""
        values = {counter.value: value for counter, value in self.counters.items()}
        for name, value in self.embedding.counts.items():
            values[Counter[f"EMB_{name.upper()}"].value] = value % (1 << 32)
        return {index: values.get(index, 0) for index in counter_ids(self.geometry)}

    def functional_counters(self):
        """``{name: value}`` of the counters the model keeps."""
        values = self.counter_values()
        names = ("COMMANDS", "ERRORS", "EMB_LOOKUPS", "EMB_STATIC_HITS", "EMB_LINE_HITS", "EMB_LINE_MISSES",
                 "EMB_EVICTIONS", "EMB_RANGE_ERRORS", "EMB_MEM_LINES", "MEM_READ_LINES", "MEM_WRITE_LINES")
        return {name: values[Counter[name].value] for name in names}

    def clear_counters(self):
        self.counters = dict.fromkeys(Counter, 0)
        self.embedding.clear()

    # Controller ------------------------------------------------------------------------------------------------

    def _split_units(self):
        """The units and streams the current split uses, which the run steps and the barriers check (a lane at or
        above the split takes no command: its units and streams stay idle and empty)."""
        lanes = range(self.split)
        self._units = [self.fetcher, self.embedding, *self.lanes[:self.split], self.joiner,
                       *self.scorers[:self.split], *self.holders, self.weights]
        self._streams = [self.pooled, *(streams[lane] for streams in (self.dense, self.inter, self.bottom,
                                                                        self.logits, self.index) for lane in lanes)]

    def _idle(self):
        return all(unit.idle() for unit in self._units) and not any(len(s) for s in self._streams)

    def _check(self, op, arg):
        """The decode-time check of a command, as :class:`rpaccel.rtl.accel.controller.Controller` makes it:
        ``(ErrorCode, detail)`` of the first failing check in priority order, or ``None``."""
        g, split, lines = self.geometry, self.split, self.memory.lines
        acc_rows = g.engine.splits[split].acc_rows
        checks = ()
        if op == Opcode.MEM_READ:
            checks = ((arg["addr"] + arg["length"] >= lines, ErrorCode.ADDRESS, arg["addr"]),)
        elif op == Opcode.SPLIT:
            checks = ((arg["n"] not in g.engine.splits, ErrorCode.SPLIT, arg["n"]),)
        elif op == Opcode.WEIGHTS:
            end = arg["w_addr"] + arg["words"]
            read = _ceil_div(arg["words"] * g.engine.word_bytes, g.line_bytes)
            checks = ((arg["wait"] and arg["lane"] >= split, ErrorCode.LANE, arg["lane"]),
                      (arg["words"] == 0 or end > g.engine.weight_words, ErrorCode.WEIGHTS, end),
                      (arg["mem_addr"] + read > lines, ErrorCode.ADDRESS, arg["mem_addr"]))
        elif op == Opcode.EMB:
            checks = ((arg["op"] not in self._EMB_OPS, ErrorCode.FIELD, arg["op"]),
                      (arg["table"] >= g.emb.tables, ErrorCode.TABLE, arg["table"]))
        elif op == Opcode.FETCH:
            join, source, reach = arg["join"], arg["source"], arg["first"] + arg["items"]
            bad_join = not (1 <= join["vectors"] <= g.max_vectors and 1 <= join["dim"] <= g.max_dim)
            checks = (
                (arg["lane"] >= split, ErrorCode.LANE, arg["lane"]),
                (not 1 <= arg["items"] <= acc_rows, ErrorCode.ITEMS, arg["items"]),
                (source not in self._SOURCES, ErrorCode.FIELD, source),
                (bad_join, ErrorCode.FIELD, join["dim"] | join["vectors"] << self._dim_bits),
                (source == FetchSource.SURVIVORS.value and arg["unit"] >= g.holders, ErrorCode.UNIT, arg["unit"]),
                (source == FetchSource.SURVIVORS.value and reach > g.holder_positions(arg["unit"]), ErrorCode.INDEX,
                 reach),
                (source == FetchSource.RANGE.value and reach > arg["count"], ErrorCode.INDEX, reach),
                (join["vectors"] - 1 > int(self.tables_configured.sum()), ErrorCode.TABLE, join["vectors"] - 1),
                (source == FetchSource.LIST.value and arg["list_addr"] >= lines, ErrorCode.ADDRESS,
                 arg["list_addr"]),
                (arg["base"] >= lines, ErrorCode.ADDRESS, arg["base"]))
        elif op == Opcode.LANE:
            cmd = arg["cmd"]
            page = (cmd["w_base"] >> self._page_bits) & (WEIGHT_PAGES - 1)
            loaded = page < len(self.weight_pages) and self.weight_pages[page]
            checks = ((arg["lane"] >= split, ErrorCode.LANE, arg["lane"]),
                      (not 1 <= cmd["items"] <= acc_rows, ErrorCode.ITEMS, cmd["items"]),
                      (cmd["op"] == Op.LAYER and not loaded, ErrorCode.WEIGHTS, cmd["w_base"]))
        elif op == Opcode.SCORE:
            dest = arg["dest"]
            units, k_max = {ScoreDest.TOPK.value: (g.units, g.k_max),
                            ScoreDest.FILTER.value: (g.filters, g.filter_capacity)}.get(dest, (None, None))
            checks = ((arg["lane"] >= split, ErrorCode.LANE, arg["lane"]),
                      (arg["items"] == 0, ErrorCode.ITEMS, 0),
                      (dest not in self._DESTS, ErrorCode.FIELD, dest),
                      (units is not None and arg["unit"] >= units, ErrorCode.UNIT, arg["unit"]),
                      (units is not None and arg["last"] and not 1 <= arg["k"] <= k_max, ErrorCode.K, arg["k"]))
        return next(((code, detail) for failed, code, detail in checks if failed), None)

    _OPCODES = {op.value: op for op in Opcode}
    _EMB_OPS = (EmbeddingOp.CONFIG.value, EmbeddingOp.PRELOAD.value, EmbeddingOp.UPDATE.value, EmbeddingOp.FLUSH.value)
    _SOURCES = tuple(source.value for source in FetchSource)
    _DESTS = tuple(dest.value for dest in ScoreDest)
    _BARRIERS = (Opcode.SYNC, Opcode.MEM_WRITE, Opcode.MEM_READ, Opcode.SPLIT, Opcode.COUNTERS)
    _ARG = {Opcode.MEM_WRITE: "mem_write", Opcode.MEM_READ: "mem_read", Opcode.SPLIT: "split",
            Opcode.WEIGHTS: "weights", Opcode.EMB: "emb", Opcode.FETCH: "fetch", Opcode.LANE: "lane",
            Opcode.SCORE: "score", Opcode.COUNTERS: "counters"}
    _ARG_OPS = {name: op for op, name in _ARG.items()}

    def _queue_full(self, op, arg):
        """Whether command ``i``'s unit has no room for it: the controller's queue of :data:`QUEUE_DEPTH` and
        the unit's own command queue ahead of its work (a lane's front end, the weight loader's jobs). Bounded as
        the RTL's are, the units' completion counts stay within the modulo-256 window the waits compare in (with
        unbounded queues a lane could fall 128 layers behind the weight loader, and a wait would read as met)."""
        if op in (Opcode.FETCH, Opcode.EMB):
            queue, depth = self.fetcher.queue, QUEUE_DEPTH
        elif op == Opcode.WEIGHTS:
            queue, depth = self.weights.queue, QUEUE_DEPTH + WeightLoader.JOBS
        elif op == Opcode.LANE and (lane := arg["lane"]) < len(self.lanes):
            queue, depth = self.lanes[lane].queue, QUEUE_DEPTH + LaneFrontEnd.COMMANDS
        elif op == Opcode.SCORE and (lane := arg["lane"]) < len(self.scorers):
            queue, depth = self.scorers[lane].queue, QUEUE_DEPTH
        else:
            return False
        return len(queue) >= depth

    def _args(self, op):
        """The command indices of the run's ``op`` commands and their argument columns, unpacked when first asked
        for (a program's words are mostly MEM_WRITEs: each opcode's argument is unpacked from its own words)."""
        entry = self._arg_columns.get(op)
        if entry is None:
            rows = np.flatnonzero(self._ops == op.value)
            entry = self._arg_columns[op] = (rows, self._command.unpack(self._words[rows], ("arg", self._ARG[op])))
        return entry

    def _arg(self, op, i):
        """Command ``i``'s (an ``op``) argument as nested dicts of Python ints (those of every ``op`` command made
        together, once a run: the timed model asks again)."""
        entry = self._arg_rows.get(op)
        if entry is None:
            rows, columns = self._args(op)
            entry = self._arg_rows[op] = (rows.tolist(), _rows(columns))
        rows, args = entry
        return args[bisect_left(rows, i)]

    def argument(self, name, i):
        """Command ``i``'s argument of the last run, which is the ``name`` member of the command's argument union
        (``"fetch"``, ``"lane"``, ...), as nested dicts of Python ints."""
        return self._arg(self._ARG_OPS[name], i)

    def _controller(self):
        """Take commands while they can go (a barrier waits for every earlier command; a unit's command for room
        in its queue)."""
        progress = False
        while self._next < self._count:
            i = self._next
            op = self._OPCODES.get(int(self._ops[i]), int(self._ops[i]))
            tag = int(self._tags[i])
            if op in self._BARRIERS and not self._idle():
                return progress
            if op == Opcode.MEM_WRITE:
                progress = True
                self._mem_writes(i)
                continue
            arg = self._arg(op, i) if op in self._ARG else None
            if self._queue_full(op, arg):
                return progress
            progress = True
            self._next += 1
            if not isinstance(op, Opcode):
                refused = ErrorCode.OPCODE, op
            else:
                refused = self._check(op, arg)
            if refused is not None:
                self.refuse(tag, refused[0], op, refused[1])
            else:
                self._execute(op, tag, arg)
            # A command counts once it has left the controller: a COUNTERS's answer does not count itself, and
            # with clear it is not counted at all.
            if not (op == Opcode.COUNTERS and arg["clear"] and refused is None):
                self.count(Counter.COMMANDS)
        return progress

    def _mem_writes(self, i):
        """The run of MEM_WRITEs from command ``i`` at once (each waits only for the one before it)."""
        ops = self._ops[i:]
        others = np.flatnonzero(ops != Opcode.MEM_WRITE.value)
        end = i + (int(others[0]) if others.size else len(ops))
        self._next = end
        self.count(Counter.COMMANDS, end - i)
        columns = self._command.unpack(self._words[i:end], ("arg", "mem_write"))
        addresses, lines = columns["addr"], _lines_of(columns["data"], self.geometry.line_bytes)
        good = addresses < self.memory.lines
        if not good.all():
            for k in np.flatnonzero(~good).tolist():
                self.refuse(int(self._tags[i + k]), ErrorCode.ADDRESS, Opcode.MEM_WRITE, addresses[k])
            addresses, lines = addresses[good], lines[good]
        self.embedding.write_memory(addresses, lines)
        self.count(Counter.MEM_WRITE_LINES, len(addresses))

    def _execute(self, op, tag, arg):
        if op == Opcode.SYNC:
            self.responses.add(ResponseKind.DONE, tag, last=1)
        elif op == Opcode.MEM_READ:
            count = arg["length"] + 1
            last = np.zeros(count, dtype=np.int64)
            last[-1] = 1
            self.responses.add(ResponseKind.DATA, tag, count=count, last=last,
                               data=self.memory.read(arg["addr"] + np.arange(count)))
            self.count(Counter.MEM_READ_LINES, count)
        elif op == Opcode.SPLIT:
            self.split = arg["n"]
            self._split_units()
            for lane in self.lanes:
                lane.reset_memory(self.split)
        elif op == Opcode.COUNTERS:
            values = self.counter_values()
            last = np.zeros(len(values), dtype=np.int64)
            last[-1] = 1
            self.responses.add(ResponseKind.COUNTER, tag, count=len(values), last=last, index=list(values),
                               score=_wrap(list(values.values()), 32))
            if arg["clear"]:
                self.clear_counters()
        elif op == Opcode.WEIGHTS:
            first, last = arg["w_addr"] >> self._page_bits, (arg["w_addr"] + arg["words"] - 1) >> self._page_bits
            self.weight_pages[first:last + 1] = True
            self.weights.queue.append((tag, arg))
        elif op == Opcode.EMB:
            if arg["op"] == EmbeddingOp.CONFIG.value:
                self.tables_configured[arg["table"]] = arg["arg"]["config"]["rows"] != 0
            self.fetcher.queue.append((tag, True, arg))
        elif op == Opcode.FETCH:
            self.fetcher.queue.append((tag, False, arg))
        elif op == Opcode.LANE:
            self.lanes[arg["lane"]].queue.append((tag, arg))
        elif op == Opcode.SCORE:
            self.scorers[arg["lane"]].queue.append((tag, arg))

    # Running -----------------------------------------------------------------------------------------------------

    def run(self, words):
        """Execute packed command words; the chip's state (memory, tables, counters, ...) carries over between runs.

        Parameters
        ----------
        words : numpy.ndarray
            ``(n, limbs)`` uint64 words of :meth:`~rpaccel.rtl.accel.isa.ChipGeometry.command_layout`.

        Returns
        -------
        ChipRun

        Raises
        ------
        Deadlock
            If the units stop with work left (the message names each blocked unit and what it waits for).
        """
        with one_blas_thread():
            return self._run(np.asarray(words, dtype=np.uint64).reshape(-1, self._command.limbs))

    def _run(self, words):
        self._words, self._arg_columns, self._arg_rows = words, {}, {}
        self._ops = self._command.unpack(words, ("op",))
        self._tags = self._command.unpack(words, ("tag",))
        self._count, self._next = len(words), 0
        self.responses = _Responses(self.geometry)
        progress = True
        while progress:
            progress = self._controller()
            for unit in self._units:
                progress |= unit.step()
        blocked = []
        if self._next < self._count:
            op = Opcode(int(self._ops[self._next]))
            why = ("the chip to be quiet (every queue empty, every unit idle)" if op in self._BARRIERS else
                   f"room in its unit's queue ({QUEUE_DEPTH} commands and the unit's own)")
            blocked.append(f"controller: {op.name} (tag {int(self._tags[self._next])}) waits for {why}")
        blocked += [f"{unit.name}: {reason}" for unit in self.units if (reason := unit.waiting()) is not None]
        if not blocked:
            blocked += [f"{stream.name} holds {len(stream)} transfers no command takes"
                        for stream in self.streams if len(stream)]
        if blocked:
            raise Deadlock(blocked)
        return ChipRun(responses=self.responses.pack(), counters=self.functional_counters())
