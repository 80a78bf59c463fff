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

from collections import OrderedDict

import numpy as np

from .embedding import EmbeddingLayout, LayoutError, _bag_arrays

__all__ = ["COUNTERS", "EmbeddingCacheModel", "LRUCache"]

#: Counter names of the embedding unit, in the order of the RTL's counter record.
COUNTERS = ("cycles", "lookups", "static_hits", "line_hits", "line_misses", "evictions", "range_errors",
            "mem_lines")


class LRUCache:
    """Set-associative cache of line addresses with true LRU replacement.

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

    def __init__(self, sets, ways):
        if not isinstance(sets, int) or isinstance(sets, bool) or sets <= 0 or sets & (sets - 1):
            raise ValueError(f"Cache sets must be a power of two, not {sets!r}")
        if not isinstance(ways, int) or isinstance(ways, bool) or ways <= 0:
            raise ValueError(f"A cache needs at least one way, not {ways!r} (to run without a dynamic cache, set "
                             "dyn_cache_ways = 0 in the configuration)")
        self.sets, self.ways = sets, ways
        self._mask = sets - 1
        self._shift = sets.bit_length() - 1
        self.flush()
        self.clear_counters()

    def flush(self):
        """Invalidate every line."""
        self._sets = [OrderedDict() for _ in range(self.sets)]

    def clear_counters(self):
        self.hits = self.misses = self.evictions = 0

    def access(self, line):
        """Look up line address ``line``; return ``True`` on a hit."""
        entries = self._sets[line & self._mask]
        tag = line >> self._shift
        if tag in entries:
            entries.move_to_end(tag)
            self.hits += 1
            return True
        self.misses += 1
        if len(entries) == self.ways:
            entries.popitem(last=False)
            self.evictions += 1
        entries[tag] = True
        return False

    def access_lines(self, lines):
        """Look up the line addresses ``lines`` in order (as :meth:`access` each); return a list of ``True`` (hit)
        or ``False`` (miss), one per line."""
        sets, mask, shift, ways = self._sets, self._mask, self._shift, self.ways
        flags, evictions = [], 0
        for line in lines:
            entries = sets[line & mask]
            tag = line >> shift
            if tag in entries:
                entries.move_to_end(tag)
                flags.append(True)
            else:
                if len(entries) == ways:
                    entries.popitem(last=False)
                    evictions += 1
                entries[tag] = True
                flags.append(False)
        hits = sum(flags)
        self.hits += hits
        self.misses += len(flags) - hits
        self.evictions += evictions
        return flags

    def contains(self, line):
        """Whether line ``line`` is cached (no LRU update, no count)."""
        return (line >> self._shift) in self._sets[line & self._mask]


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
        bases = self.layout.line_address(table, dynamic_ids).tolist()
        if self.dynamic is None:
            c["line_misses"] += n * len(bases)
            c["mem_lines"] += n * len(bases)
            return
        cache = self.dynamic
        hits, misses, evictions = cache.hits, cache.misses, cache.evictions
        cache.access_lines([line for base in bases for line in range(base, base + n)])
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
