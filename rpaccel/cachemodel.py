"""Reference model of the embedding unit's caches: exactly the RTL's hit, miss and eviction counts.

The policy (also in docs/embedding.md):

* **Static cache.** A lookup of row ``id`` of table ``t`` with ``id < H_t`` (the table's static rows) is a static
  hit; it touches neither the dynamic cache nor memory. Static hits are counted per row.
* **Dynamic cache.** Every other in-range row is ``n`` line accesses, lines ``a .. a + n - 1`` in order, where
  ``a`` is the row's first memory line. Line ``a`` maps to set ``a mod sets`` with tag ``a div sets``. Each set
  keeps true LRU order over its ``ways`` lines: a hit makes the line the most recently used; a miss allocates the
  line in place of the least recently used way (an invalid way when there is one: invalid ways are always the
  least recent), counting an eviction if that way held a valid line. Tags and LRU order change at lookup time,
  in lookup order, whatever the memory latency: a lookup that finds a line whose fill is still in flight is a
  hit (it waits for that fill behind the miss that requested it).
* **Out-of-range IDs** (``id >= rows``) count as range errors, read as a zero row and touch no cache.
* **Updates** of a row (write-through with update of any cached copy) change no counts and no LRU order;
  a **flush** invalidates every dynamic line.

:class:`LRUCache` is the dynamic cache alone, :class:`EmbeddingCacheModel` the whole unit on a layout. Neither
depends on simulation code, so the host's models can use them directly.
"""

import numpy as np

from .embedding import EmbeddingLayout, LayoutError, _bag_arrays

__all__ = ["COUNTERS", "EmbeddingCacheModel", "LRUCache"]

#: Counter names of the embedding unit, in the order of the RTL's counter record.
COUNTERS = ("cycles", "lookups", "static_hits", "line_hits", "line_misses", "evictions", "range_errors",
            "mem_lines")


class LRUCache:
    """Set-associative cache of line addresses with true LRU replacement.

    The state is one row of ``ways`` line addresses per set, least recently used first and invalid ways (``-1``)
    before the valid ones. :meth:`access_lines` takes a block of lines at once, in numpy: with true LRU a line is
    cached exactly when fewer than ``ways`` other lines of its set were used since its own last use (the stack
    property), so each line's hit comes from the lines of its set around it in the block and the set's state
    before it, not from a step per line (see :meth:`access_lines`).

    Parameters
    ----------
    sets : int
        Number of sets (a power of two).
    ways : int
        Lines per set (at least 1).

    Attributes
    ----------
    hits, misses, evictions : int
        Counts since construction or :meth:`clear_counters`.
    """

    #: The window elements :meth:`access_lines` compares at once (queries times window length) while counting
    #: the distinct lines between a line's two uses; longer windows are counted in further rounds.
    WINDOW_ELEMENTS = 1 << 20

    def __init__(self, sets, ways):
        if not isinstance(sets, int) or isinstance(sets, bool) or sets <= 0 or sets & (sets - 1):
            raise ValueError(f"Cache sets must be a power of two, not {sets!r}")
        if not isinstance(ways, int) or isinstance(ways, bool) or ways <= 0:
            raise ValueError(f"A cache needs at least one way, not {ways!r} (to run without a dynamic cache, set "
                             "dyn_cache_ways = 0 in the configuration)")
        self.sets, self.ways = sets, ways
        self._mask = sets - 1
        self.flush()
        self.clear_counters()

    def flush(self):
        """Invalidate every line."""
        self._lines = np.full((self.sets, self.ways), -1, dtype=np.int64)
        self._valid = 0

    def clear_counters(self):
        self.hits = self.misses = self.evictions = 0

    def access(self, line):
        """Look up line address ``line`` (non-negative); return ``True`` on a hit."""
        if line < 0:
            raise ValueError(f"A line address must be non-negative, not {line}")
        row = self._lines[line & self._mask]
        found = np.flatnonzero(row == line)
        if found.size:
            way = int(found[0])
            self.hits += 1
        else:
            way = 0
            self.misses += 1
            self.evictions += int(row[0] >= 0)
            self._valid += int(row[0] < 0)
        row[way:-1] = row[way + 1:]
        row[-1] = line
        return bool(found.size)

    def access_lines(self, lines):
        """Look up the line addresses ``lines`` in order (as :meth:`access` each).

        Parameters
        ----------
        lines : sequence of int or numpy.ndarray
            Line addresses (non-negative).

        Returns
        -------
        numpy.ndarray
            ``bool``, one per line: ``True`` for a hit.

        Notes
        -----
        The lines are ordered by set (stable), so that each set's accesses are a run. A line used before in the
        block, at ``p``, is a hit when fewer than ``ways`` distinct lines lie between ``p`` and it (those whose
        previous use in the block is before ``p`` or absent). A line's first use in the block is a hit when the
        set held it at depth ``d`` (``d`` lines used more recently) and ``d`` plus the block's distinct lines
        before it in the set, less those among the ``d``, is below ``ways``. The set's new state is its last
        ``ways`` distinct lines: the block's, by their last use, after the lines it held and did not use.
        """
        lines = np.asarray(lines, dtype=np.int64).reshape(-1)
        n, ways = len(lines), self.ways
        if not n:
            return np.zeros(0, dtype=bool)
        if lines.min() < 0:
            raise ValueError(f"A line address must be non-negative, not {int(lines.min())} (line "
                             f"{int(np.argmin(lines))} of the block)")
        # The block by set: position k of the runs is access order[k].
        order = _stable_order(lines & self._mask, self.sets)
        seq = lines[order]
        sets = seq & self._mask
        boundary = np.empty(n, dtype=bool)
        boundary[0] = True
        np.not_equal(sets[1:], sets[:-1], out=boundary[1:])
        start = np.flatnonzero(boundary)
        run = np.cumsum(boundary) - 1                                               # the run (touched set) of k
        # Previous use of the same line in the block (a line's uses are in its set's run), and its last use.
        by_line = _stable_order(seq)
        same = np.flatnonzero(seq[by_line[1:]] == seq[by_line[:-1]])
        later, earlier = by_line[same + 1], by_line[same]
        prev = np.full(n, -1, dtype=np.int64)
        prev[later] = earlier
        last = np.ones(n, dtype=bool)
        last[earlier] = False
        hits = np.empty(n, dtype=bool)
        # Lines used before in the block: the distinct lines between the two uses.
        gap = later - earlier - 1
        hits[later] = gap < ways
        query = later[gap >= ways]
        if query.size:
            hits[query] = self._few_between(prev, query, ways)
        # First uses: where the set's state before the block (least recent first) held the line, if it did.
        first = np.flatnonzero(prev < 0)
        owner = run[first]
        touched = sets[start]
        state = self._lines[touched]
        held = state.ravel()
        found = np.flatnonzero(state[owner] == seq[first, None])
        user, way = np.divmod(found, ways)                   # the first use (of ``first``) and where its line was
        slot = owner[user] * ways + way
        # A held line is still held if the lines used since (``depth`` held more recently, and the block's distinct
        # lines before it in the run, ``before``, less the held ones among them) are fewer than the ways.
        before = (np.arange(len(first)) - np.flatnonzero(boundary[first])[owner])[user]
        depth = ways - 1 - way
        hit_first = np.zeros(len(first), dtype=bool)
        sure = depth + before < ways
        hit_first[user[sure]] = True
        unsure = np.flatnonzero(~sure & (before < ways))
        if unsure.size:
            first_use = np.full(held.shape, n, dtype=np.int64)
            first_use[slot] = first[user]
            newer = np.arange(ways) > way[unsure, None]
            earlier = first_use.reshape(-1, ways)[owner[user[unsure]]] < first[user[unsure], None]
            shared = np.count_nonzero(earlier & newer, axis=1)
            hit_first[user[unsure]] = depth[unsure] + before[unsure] - shared < ways
        hits[first] = hit_first
        # The new state, the last ``ways`` of: the lines held and not used, then the block's by their last use.
        kept = held >= 0
        kept[slot] = False
        total = np.cumsum(kept)
        row_end = total[ways - 1::ways]                      # lines kept up to each run's end
        uses = np.bincount(owner, minlength=len(start))      # distinct lines the block used per run
        new = np.full(held.shape, -1, dtype=np.int64)
        at = np.flatnonzero(kept)
        row = at // ways
        column = total[at] - 1 - row_end[row] + ways - uses[row]
        fits = column >= 0
        new[(row * ways + column)[fits]] = held[at[fits]]
        recent = np.flatnonzero(last)
        row = run[recent]
        column = np.arange(len(recent)) - np.cumsum(uses)[row] + ways
        fits = column >= 0
        new[(row * ways + column)[fits]] = seq[recent[fits]]
        valid = int(np.count_nonzero(new >= 0)) - int(np.count_nonzero(held >= 0))
        self._lines[touched] = new.reshape(-1, ways)
        result = np.empty(n, dtype=bool)
        result[order] = hits
        count = int(np.count_nonzero(hits))
        self.hits += count
        self.misses += n - count
        self.evictions += n - count - valid
        self._valid += valid
        return result

    def contains(self, line):
        """Whether line ``line`` is cached (no LRU update, no count)."""
        return line >= 0 and bool((self._lines[line & self._mask] == line).any())

    def contains_lines(self, lines):
        """:meth:`contains` of each of ``lines``, as a ``bool`` array."""
        lines = np.asarray(lines, dtype=np.int64).reshape(-1)
        if not self._valid:
            return np.zeros(len(lines), dtype=bool)
        return (lines >= 0) & (self._lines[lines & self._mask] == lines[:, None]).any(axis=1)

    def _few_between(self, prev, query, ways):
        """For the run positions ``query`` whose line was used before at ``prev[query]``: whether fewer than
        ``ways`` distinct lines were used between (those whose previous use is absent or before it), counted a
        window of :data:`WINDOW_ELEMENTS` at a time until settled."""
        n, p = len(prev), prev[query]
        gap = query - p - 1
        distinct = np.zeros(len(query), dtype=np.int64)
        todo, seen = np.arange(len(query)), 0
        while todo.size:
            span = min(int(gap[todo].max()) - seen, max(ways, self.WINDOW_ELEMENTS // todo.size))
            offsets = seen + np.arange(span)
            window = np.minimum(p[todo, None] + 1 + offsets, n - 1)
            new = (prev[window] <= p[todo, None]) & (offsets < gap[todo, None])
            distinct[todo] += new.sum(axis=1)
            seen += span
            # Settled: the whole window seen, or ``ways`` distinct lines in it already (a miss).
            todo = todo[(gap[todo] > seen) & (distinct[todo] < ways)]
        return distinct < ways


def _stable_order(values, bound=None):
    """``np.argsort(values, kind="stable")`` of non-negative int64 ``values`` (below ``bound`` if given): a radix
    sort of 16-bit values where they fit, else sorted as one key per value with its index in the low bits where they
    fit (numpy's sort of plain integers is several times faster than a stable argsort of 64-bit ones)."""
    if bound is not None and bound <= 1 << 16:
        return np.argsort(values.astype(np.uint16), kind="stable")
    n = len(values)
    bits = max(1, (n - 1).bit_length())
    if int(values.max()) >> (63 - bits):
        return np.argsort(values, kind="stable")
    keys = (values << bits) | np.arange(n)
    keys.sort()
    return keys & ((1 << bits) - 1)


class EmbeddingCacheModel:
    """The static and dynamic caches of an embedding unit on a layout, with the unit's counters.

    Parameters
    ----------
    layout : rpaccel.embedding.EmbeddingLayout
        Tables, their static rows and placement, and the unit's geometry.
    """

    def __init__(self, layout):
        if not isinstance(layout, EmbeddingLayout):
            raise TypeError(f"Expected an EmbeddingLayout, not {layout!r}")
        self.layout = layout
        g = layout.geometry
        self.dynamic = LRUCache(g.sets, g.ways) if g.ways else None
        self.clear_counters()

    def clear_counters(self):
        """Zero every counter (the RTL's COUNTERS command with ``clear``)."""
        self.counts = dict.fromkeys(COUNTERS[1:], 0)
        self.counts["mem_lines"] = 0
        if self.dynamic is not None:
            self.dynamic.clear_counters()

    def flush(self):
        """Invalidate the dynamic cache."""
        if self.dynamic is not None:
            self.dynamic.flush()

    def preload(self, table):
        """Account for the memory lines a PRELOAD of ``table`` reads."""
        self.counts["mem_lines"] += self.layout.tables[table].static_rows * self.layout.row_lines[table]

    def lookup(self, table, ids, *, check=False):
        """Look up rows ``ids`` of ``table`` in order, updating the counters.

        With ``check``, an out-of-range ID raises :class:`~rpaccel.embedding.LayoutError`; without, it is counted
        as a range error (as the RTL does).
        """
        spec = self.layout.tables[table]
        ids = np.asarray(ids, dtype=np.int64)
        if check:
            self.layout.check_ids(table, ids)
        n = self.layout.row_lines[table]
        in_range = (ids >= 0) & (ids < spec.rows)
        static = in_range & (ids < spec.static_rows)
        c = self.counts
        c["lookups"] += len(ids)
        c["range_errors"] += int(np.count_nonzero(~in_range))
        c["static_hits"] += int(np.count_nonzero(static))
        dynamic_ids = ids[in_range & ~static]
        bases = np.asarray(self.layout.line_address(table, dynamic_ids), dtype=np.int64)
        if self.dynamic is None:
            c["line_misses"] += n * len(bases)
            c["mem_lines"] += n * len(bases)
            return
        cache = self.dynamic
        hits, misses, evictions = cache.hits, cache.misses, cache.evictions
        cache.access_lines((bases[:, None] + np.arange(n)).reshape(-1))
        c["line_hits"] += cache.hits - hits
        c["line_misses"] += cache.misses - misses
        c["evictions"] += cache.evictions - evictions
        c["mem_lines"] += cache.misses - misses

    def lookup_bags(self, bag_tables, offsets, ids):
        """Look up every ID of a sequence of bags (see :func:`rpaccel.embedding.pool_bags`), in order."""
        bag_tables, offsets, ids, _ = _bag_arrays(self.layout, bag_tables, offsets, ids)
        # Consecutive bags of the same table are one run of lookups.
        if not len(bag_tables):
            return
        change = np.flatnonzero(np.diff(bag_tables)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [len(bag_tables)]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            self.lookup(int(bag_tables[s]), ids[offsets[s]:offsets[e]])

    def contains(self, table, row):
        """Where row ``row`` of ``table`` is on chip: ``"static"``, ``"dynamic"`` (all its lines), or ``None``."""
        spec = self.layout.tables[table]
        if not 0 <= row < spec.rows:
            raise LayoutError(f"Row {row} is out of range for table {table} ({spec.rows} rows)")
        if row < spec.static_rows:
            return "static"
        base = int(self.layout.line_address(table, row))
        n = self.layout.row_lines[table]
        if self.dynamic is not None and all(self.dynamic.contains(a) for a in range(base, base + n)):
            return "dynamic"
        return None
