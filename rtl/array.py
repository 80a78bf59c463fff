"""Reconfigurable weight-stationary systolic array: one R x C array or independent sub-arrays, chosen at run time.

The array is an R x C grid of :class:`~rpaccel.rtl.pe.ProcessingElement` built from B x B blocks. At run time
the ``split`` input chooses how many independent sub-arrays it works as (one of ``config.splits``: 1 is the
whole array, 2 the left and right halves, ``4**k`` a ``2**k x 2**k`` grid; see
:meth:`rpaccel.config.AccelConfig.subarray_shape`). Sub-array ``s`` (its *slot*) has its own streams:

* ``w<s>``: weights, one row of a tile per transfer (``cols`` int8 values), rows in order 0, 1, ...,
  ``rows - 1``; ``rows`` transfers make a tile. Tiles go alternately into the two weight banks of the PEs.
* ``x<s>``: items, one activation vector per transfer (``rows`` int8 values), with ``last`` set on the last
  item that uses the current tile, and a ``tag`` of any shape that comes back with the result.
* ``y<s>``: results, one per item, in order: ``psum[c] = sum(a[r] * W[r][c] for r in range(rows))`` (int32)
  with the item's ``tag``.

The weights of the next tile shift in while the current tile computes (double buffering): the array accepts a
weight row only into a bank that no accepted item still needs, and an item only when its tile is complete, so
any interleaving of the three streams, with any idle cycles and any back-pressure, gives the same results.

Inside a sub-array, activations enter row ``r`` delayed by ``r`` cycles (skew), partial sums (only as wide as
a column of R products needs, see :attr:`ArrayGeometry.psum_bits`) enter the top row as zero and leave the
bottom row of column ``c`` delayed by ``cols - 1 - c`` cycles (deskew), so a result is presented
``rows + cols + 4`` cycles after its item was accepted (:meth:`ArrayGeometry.latency`; three of them are the
PE's pipeline, one the register after the slot's result multiplexer). The skew and deskew delays are circular
buffers in LUT RAM. Weights enter at the bottom row of each column and shift up one row per transfer; column
``c`` receives a row ``c`` cycles after column 0, so a bank is free again for loading ``rows - 1`` cycles
after the last item of its tile was accepted (the item has passed column ``c`` by the time the load reaches
it): a tile of ``2 * rows - 2`` or more items hides the next tile's load fully.

Flow control: each sub-array is one pipeline with a clock enable (the PEs' ``en``), computed from the fill
level of a three-entry output FIFO and registered twice, the second time per block and per skew line, so that
no combinational path runs from ``y.ready`` into the array or to ``x.ready``/``w.ready`` and the enable crosses
the die from flip-flop to flip-flop. A stalled sub-array freezes its items, its partial sums and its weight
loads together. What a slot accepts is registered next to its handshake logic, and the entry and load points
take it from there.

Changing ``split`` discards every loaded tile and every item in flight (the controller changes it only when
the array is idle) and holds the streams for :attr:`ArrayGeometry.settle_cycles`. A ``split`` value that is not
in ``config.splits`` stops every slot. The array takes ``split`` into a register of its own (a change takes
effect a cycle later), compares that with a second copy, and every block and slot decodes it into a registered
one-hot replica of its own (:func:`rpaccel.rtl.lib.select.split_modes`), so no split-dependent multiplexer hangs
on a die-wide net.

A reset is handled like a change of split: a register takes the domain's reset and restarts the slots a cycle
later, so the control registers take no reset of their own and the reset net reaches one flip-flop here rather
than every slot's and block's.
"""

from dataclasses import dataclass
from itertools import product

from amaranth.hdl import Cat, Module, Mux, ResetInserter, ResetSignal, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import AccelConfig
from ..numeric import ACC_BITS, ACT_BITS, INT8_MIN
from .floorplan import array_dsp_sites, dsp_rows
from .lib.select import pick, replica, split_modes
from .pe import ProcessingElement

__all__ = ["ArrayGeometry", "Rect", "SystolicArray", "subarray_rects"]


@dataclass(frozen=True)
class Rect:
    """The PEs of one sub-array: rows ``row .. row + rows - 1``, columns ``col .. col + cols - 1``."""

    row: int
    col: int
    rows: int
    cols: int

    def contains(self, r, c):
        return self.row <= r < self.row + self.rows and self.col <= c < self.col + self.cols

    @property
    def bottom(self):
        """Index of the last row."""
        return self.row + self.rows - 1


def subarray_rects(config, n):
    """The sub-arrays of ``config``'s array split into ``n``, by slot.

    Slot order: for 2, left then right; for ``4**k``, row-major over the ``2**k x 2**k`` grid (so slot 1 is
    always in the right half, slot 0 always at the top left).
    """
    rows, cols = config.subarray_shape(n)  # raises ConfigError on a split the array cannot make
    if n == 2:
        return (Rect(0, 0, rows, cols), Rect(0, cols, rows, cols))
    side = config.array_cols // cols
    return tuple(Rect(i * rows, j * cols, rows, cols) for i in range(side) for j in range(side))


class ArrayGeometry:
    """Where every sub-array of every split lies (pure Python, shared by the RTL, models and host code).

    Attributes
    ----------
    splits : tuple of int
        The supported sub-array counts, ascending.
    rects : dict
        ``{n: (Rect, ...)}`` by slot.
    slots : int
        Number of slots (the largest split).
    slot_rows, slot_cols : list of int
        Largest sub-array shape each slot ever has (the widths of its stream payloads).
    """

    def __init__(self, config):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"Array configuration must be an AccelConfig, not {config!r}")
        self.rows, self.cols, self.block = config.array_rows, config.array_cols, config.block
        self.splits = tuple(sorted(config.splits))
        self.rects = {n: subarray_rects(config, n) for n in self.splits}
        self.slots = max(self.splits)
        self.slot_rows = [max(self.rects[n][s].rows for n in self.modes_of(s)) for s in range(self.slots)]
        self.slot_cols = [max(self.rects[n][s].cols for n in self.modes_of(s)) for s in range(self.slots)]

    def modes_of(self, slot):
        """The splits in which ``slot`` exists."""
        return [n for n in self.splits if slot < n]

    def owner(self, n, r, c):
        """The slot whose sub-array holds PE ``(r, c)`` when split into ``n``."""
        return next(s for s, rect in enumerate(self.rects[n]) if rect.contains(r, c))

    def shape(self, n):
        """``(rows, cols)`` of each sub-array when split into ``n``."""
        rect = self.rects[n][0]
        return rect.rows, rect.cols

    @property
    def psum_bits(self):
        """Width of the partial sums inside the array: a column of R int8 products stays within
        ``[-16256 R, 16384 R]``; results leave sign-extended to int32."""
        return (self.rows * -INT8_MIN * -INT8_MIN).bit_length() + 1

    @property
    def settle_cycles(self):
        """Cycles the array holds its streams after reset or a change of split: the longest delay line (the
        item tracker of the largest sub-array, ``latency - 1``), plus the two cycles the delay lines' registered
        read addresses take to follow the new split, plus the two cycles after a reset in which the clock enable
        (registered twice) is still low, so every line advances by its whole length while the streams are
        held."""
        return max(self.latency(n) for n in self.splits) + 3

    def latency(self, n):
        """Cycles from accepting an item to presenting its result in a never-stalled sub-array of split ``n``."""
        rows, cols = self.shape(n)
        return rows + cols + ProcessingElement.LATENCY + 1


def x_layout(rows, tag_shape):
    """Payload of an item stream: ``rows`` activations, the end-of-tile flag and the tag."""
    return data.StructLayout({"a": data.ArrayLayout(signed(ACT_BITS), rows), "last": 1, "tag": tag_shape})


def y_layout(cols, tag_shape):
    """Payload of a result stream: ``cols`` int32 sums and the tag."""
    return data.StructLayout({"psum": data.ArrayLayout(signed(ACC_BITS), cols), "tag": tag_shape})


def _placements(geometry, r, c):
    """For every split ``n``: ``(n, s, rect)``, the sub-array ``s`` that owns PE ``(r, c)`` and its rectangle."""
    for n in geometry.splits:
        s = geometry.owner(n, r, c)
        yield n, s, geometry.rects[n][s]


def _delay_line(m, name, value, delays, enable):
    """``value`` delayed by ``d`` cycles in which ``enable`` is high, for the ``(condition, d)`` of ``delays``
    that holds (``d = 0``: not delayed).

    A circular buffer: one write and one read per cycle whatever the delay (a register chain would move every
    stage), which is cheap both as FPGA LUT RAM and in a simulator. Its contents are not reset. Unlike
    :class:`rpaccel.rtl.lib.delay.DelayLine` (a fixed delay, always running, its output in a register), the delay
    follows the split (0 passes ``value`` through), the line advances only with the slot's enable, and the read
    is asynchronous from a registered address: the PEs' and the result registers take its output directly.
    """
    value = Cat(value)
    longest = max(d for _, d in delays)
    if longest == 0:
        return value
    depth = 1 << (longest - 1).bit_length() if longest > 1 else 2
    memory = Memory(shape=len(value), depth=depth, init=[])
    m.submodules[name] = memory
    write = memory.write_port()
    read = memory.read_port(domain="comb")
    # The read address is a register: the delay (a constant per split) is registered first, so a change of
    # split reaches the address two cycles later (the settle time allows for it). No reset: the settle time
    # after a reset fills every line with bubbles wherever its pointers stand.
    pointer = Signal(range(depth), name=f"{name}_ptr", reset_less=True)
    offset = Signal(range(depth), name=f"{name}_offset", reset_less=True)
    read_addr = Signal(range(depth), name=f"{name}_raddr", reset_less=True)
    m.d.sync += [offset.eq(pick(delays)), read_addr.eq(pointer + enable - offset)]
    m.d.comb += [
        write.en.eq(enable),
        write.addr.eq(pointer),
        write.data.eq(value),
        read.addr.eq(read_addr),
    ]
    with m.If(enable):
        m.d.sync += pointer.eq(pointer + 1)
    if all(d for _, d in delays):
        return read.data
    return pick([(condition, value if d == 0 else read.data) for condition, d in delays], value)



class SystolicArray(wiring.Component):
    """R x C weight-stationary int8 systolic array, split at run time into independent sub-arrays.

    See the module documentation for the streams, timing and flow control.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
        Array size, block size, supported splits and how many PEs get DSP multipliers (``array_dsp_pes``;
        PEs are numbered row-major).
    tag_shape : shape-like
        Shape of the tag that travels with each item (default: none).

    Members
    -------
    split : In(range(max(splits) + 1))
        Number of sub-arrays.
    x<s> : In(stream.Signature(x_layout(slot_rows[s], tag_shape)))
        Items of slot ``s``.
    w<s> : In(stream.Signature(data.ArrayLayout(signed(8), slot_cols[s])))
        Weight rows of slot ``s``.
    y<s> : Out(stream.Signature(y_layout(slot_cols[s], tag_shape)))
        Results of slot ``s``.
    """

    #: Depth of each slot's output FIFO: two entries let a never-stalled consumer take a result every cycle, the
    #: third takes the result of the cycle the clock enable needs to reach the whole sub-array (see ``early``).
    FIFO_DEPTH = 3
    # Cycles (out of ``rows``) a released bank does not wait before loading; 2 is exact (tests plant 3).
    _GUARD = 2

    def __init__(self, config, *, tag_shape=0):
        self.config = config
        try:
            self.geometry = geometry = ArrayGeometry(config)
        except Exception:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise
        self.tag_shape = tag_shape
        members = {"split": In(range(geometry.slots + 1))}
        for s in range(geometry.slots):
            members[f"x{s}"] = In(stream.Signature(x_layout(geometry.slot_rows[s], tag_shape)))
            members[f"w{s}"] = In(stream.Signature(data.ArrayLayout(signed(ACT_BITS), geometry.slot_cols[s])))
            members[f"y{s}"] = Out(stream.Signature(y_layout(geometry.slot_cols[s], tag_shape)))
        super().__init__(members)

    def port(self, name, slot):
        """The stream ``name`` (``"x"``, ``"w"`` or ``"y"``) of ``slot``."""
        return getattr(self, f"{name}{slot}")

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        split, changed, quiet = self._split_in_use(m)
        slot_mode = [split_modes(m, split, g.splits, name=f"slot{s}") for s in range(g.slots)]
        block_mode = {(br, bc): split_modes(m, split, g.splits, name=f"block_{br}_{bc}")
                      for br in range(g.rows // g.block) for bc in range(g.cols // g.block)}
        slots = [self._slot_control(m, s, split, changed, quiet, slot_mode[s]) for s in range(g.slots)]
        local = _LocalRegisters(m, split, [slot.en_mid for slot in slots])
        pe = self._processing_elements(m, platform)
        accepted = [self._accepted(m, s, slot) for s, slot in enumerate(slots)]
        entry = self._entry_points(local, block_mode, accepted)
        load, exits = self._load_and_exit_points(local, block_mode, accepted, pe)
        for (br, bc), mode in block_mode.items():
            self._wire_block(m, local, mode, pe, br, bc, entry, load)
        for s, slot in enumerate(slots):
            self._slot_results(m, local, s, slot, slot_mode[s], exits)
        return m

    def _split_in_use(self, m):
        """The split in use: returns ``(split, changed, quiet)``.

        ``split`` (from the caller's register) is registered first, next to the slots' control, so the
        comparison and the streams' ready signals do not wait for a net from the caller's register across the
        die; ``changed``: it differs from the array's second copy, or the array restarts after a reset (a cycle
        later, from a register, so the state takes no reset). A change resets the bank state and the output
        FIFOs, then holds every stream for ``settle_cycles`` while the delay lines fill with bubbles: ``quiet``
        when that is over (``settled`` is ``settle == 0`` a cycle ahead, in a register, so the streams' ready
        signals, which fan out to the slots' input registers, are a compare of the split and a few registers).
        """
        split = Signal.like(self.split, name="split", reset_less=True)
        split_q = Signal.like(self.split, name="split_q", reset_less=True)
        restart = Signal(name="restart", reset_less=True)
        changed = Signal()
        settle = Signal(range(self.settle_cycles + 1), init=self.settle_cycles, reset_less=True)
        settled = Signal(reset_less=True)
        m.d.sync += [split.eq(self.split), split_q.eq(split), restart.eq(ResetSignal())]
        m.d.comb += changed.eq((split_q != split) | restart)
        with m.If(changed):
            m.d.sync += [settle.eq(self.settle_cycles), settled.eq(0)]
        with m.Elif(settle != 0):
            m.d.sync += [settle.eq(settle - 1), settled.eq(settle == 1)]
        return split, changed, ~changed & settled

    def _slot_control(self, m, s, split, changed, quiet, mode):
        """Slot ``s``'s stream handshakes, weight-bank state, output FIFO and clock enable."""
        g = self.geometry
        x, w, y = self.port("x", s), self.port("w", s), self.port("y", s)
        modes = g.modes_of(s)
        slot = _Slot(en=Signal(name=f"en{s}"), en_mid=Signal(name=f"en_mid{s}"), x_fire=Signal(name=f"x_fire{s}"),
                     w_fire=Signal(name=f"w_fire{s}"), use_bank=Signal(name=f"use_bank{s}", reset_less=True),
                     load_bank=Signal(name=f"load_bank{s}", reset_less=True))
        active = replica(m, Cat(split == n for n in modes).any(), name=f"active{s}", reset_less=True)
        full = [Signal(name=f"full{s}_{b}", reset_less=True) for b in range(2)]
        busy = [Signal(range(g.slot_rows[s] + 1), name=f"busy{s}_{b}", reset_less=True) for b in range(2)]
        m.d.comb += [
            w.ready.eq(slot.en & active & quiet & ~Mux(slot.load_bank, full[1], full[0])
                       & (Mux(slot.load_bank, busy[1], busy[0]) == 0)),
            x.ready.eq(slot.en & active & quiet & Mux(slot.use_bank, full[1], full[0])),
            slot.w_fire.eq(w.valid & w.ready),
            slot.x_fire.eq(x.valid & x.ready),
        ]
        self._banks(m, s, slot, full, busy, pick([(mode[n], g.rects[n][s].rows) for n in modes]), changed)

        # Output FIFO; the clock enable of the whole sub-array follows its fill level two cycles late: the
        # decision (`early`) is registered once here (`en_mid`) and once more next to every block and delay
        # line (the replicas of the enable, and `en` here), so the path across the die runs from flip-flop to
        # flip-flop. The FIFO's third entry takes the result of the extra cycle.
        layout = y_layout(g.slot_cols[s], self.tag_shape)
        slot.fifo = m.submodules[f"fifo{s}"] = ResetInserter(changed)(SyncFIFO(width=layout.size,
                                                                               depth=self.FIFO_DEPTH))
        level_next = slot.fifo.level + slot.fifo.w_en - (slot.fifo.r_rdy & y.ready)
        early = Signal(name=f"early{s}")
        m.d.comb += [
            early.eq(level_next < self.FIFO_DEPTH - 1),
            y.valid.eq(slot.fifo.r_rdy),
            y.payload.eq(slot.fifo.r_data),
            slot.fifo.r_en.eq(y.ready),
        ]
        m.d.sync += [slot.en_mid.eq(early), slot.en.eq(slot.en_mid)]
        return slot

    def _banks(self, m, s, slot, full, busy, slot_rows, changed):
        """The two weight banks of slot ``s``: ``full`` once a tile is loaded, until its last item is accepted;
        ``busy`` counts the enabled cycles until a released bank may load again.

        A row accepted in cycle u reaches column c of the bank at the end of cycle u + 1 + c; the last item of
        a tile (accepted in cycle t) reads its last weight of column c, in the bottom row, at the end of cycle
        t + rows + c. The same clock edge is safe, so u >= t + rows - 1: the bank may load again after rows - 2
        more enabled cycles. The updates below are in priority order (a later one wins): a change of split
        resets everything.
        """
        load_row = Signal(range(self.geometry.slot_rows[s]), name=f"load_row{s}", reset_less=True)
        loaded = slot.w_fire & (load_row == slot_rows - 1)
        released = slot.x_fire & self.port("x", s).payload.last
        for b in range(2):
            with m.If(slot.en & (busy[b] != 0)):
                m.d.sync += busy[b].eq(busy[b] - 1)
        with m.If(loaded):
            m.d.sync += [load_row.eq(0), slot.load_bank.eq(~slot.load_bank)]
        with m.Elif(slot.w_fire):
            m.d.sync += load_row.eq(load_row + 1)
        with m.If(released):
            m.d.sync += slot.use_bank.eq(~slot.use_bank)
        for b in range(2):
            with m.If(loaded & (slot.load_bank == b)):
                m.d.sync += full[b].eq(1)
            with m.If(released & (slot.use_bank == b)):
                m.d.sync += [full[b].eq(0), busy[b].eq(Mux(slot_rows > self._GUARD, slot_rows - self._GUARD, 0))]
        with m.If(changed):
            m.d.sync += [full[0].eq(0), full[1].eq(0), busy[0].eq(0), busy[1].eq(0), load_row.eq(0),
                         slot.load_bank.eq(0), slot.use_bank.eq(0)]

    def _processing_elements(self, m, platform):
        """The PEs, ``pe[r][c]``, numbered row-major; the first ``array_dsp_pes`` get hard multipliers, laid out
        on the device's multiplier sites where rtl.floorplan knows them."""
        rows, cols, dsp_pes = self.geometry.rows, self.geometry.cols, self.config.array_dsp_pes
        sites = array_dsp_sites(rows, cols, dsp_pes, dsp_rows(platform))
        pe = [[ProcessingElement(multiplier="dsp" if r * cols + c < dsp_pes else "lut",
                                 psum_bits=self.geometry.psum_bits, dsp_site=sites.get((r, c)))
               for c in range(cols)] for r in range(rows)]
        for r, c in product(range(rows), range(cols)):
            m.submodules[f"pe_{r}_{c}"] = pe[r][c]
        return pe

    def _accepted(self, m, s, slot):
        """What slot ``s`` accepted in its last enabled cycle, registered next to its handshake logic: the item's
        activations with its bank (``x_q``), and the weight row with its fire and bank (``w_q``).

        The entry and load points across the array take these registers, one cycle less delayed, so no
        handshake decision travels across the die in the cycle it is made. The activations are taken whether or
        not an item was accepted: a bubble's products only ever add into the bubble's own partial sums, which no
        result reads (the item tracker says which outputs are items), so the 8 x rows flip-flops do not wait for
        the handshake. No reset: after a reset or a change of split the streams are held until every line has
        carried these registers' bubbles through.
        """
        x, w = self.port("x", s), self.port("w", s)
        x_q = Signal(data.StructLayout({"a": x.payload.a.shape(), "bank": 1}), name=f"x_q{s}", reset_less=True)
        w_q = Signal(data.StructLayout({"row": w.payload.shape(), "fire": 1, "bank": 1}), name=f"w_q{s}",
                     reset_less=True)
        with m.If(slot.en):
            m.d.sync += [x_q.a.eq(x.payload.a), x_q.bank.eq(slot.use_bank),
                         w_q.row.eq(w.payload), w_q.fire.eq(slot.w_fire), w_q.bank.eq(slot.load_bank)]
        return x_q, w_q

    def _entry_points(self, local, block_mode, accepted):
        """Activation entry points, the left column of a sub-array: ``{(r, c): (splits, a, bank)}``. Row r of
        the sub-array (local row) reaches the PEs r + 1 cycles after its item was accepted (skew): one in
        ``x_q``, r in the entry's delay line."""
        g, entry = self.geometry, {}
        for r, c in product(range(g.rows), range(g.cols)):
            sources = {n: (s, r - rect.row) for n, s, rect in _placements(g, r, c) if rect.col == c}
            if sources:
                mode = block_mode[r // g.block, c // g.block]
                value = pick([(mode[n], Cat(accepted[s][0].a[local_row], accepted[s][0].bank))
                              for n, (s, local_row) in sources.items()])
                out = local.delay(f"entry_{r}_{c}", value, {n: local_row for n, (_, local_row) in sources.items()},
                                  {n: s for n, (s, _) in sources.items()}, mode)
                entry[r, c] = (set(sources), out[:ACT_BITS].as_signed(), out[ACT_BITS])
        return entry

    def _load_and_exit_points(self, local, block_mode, accepted, pe):
        """Weight load points and result exit points, both on the bottom row of a sub-array: ``({(r, c): (row,
        fire, bank)}, {(r, c): psum})``. Column c of the sub-array (local column) receives each weight row c + 1
        cycles after the row was accepted (one in ``w_q``, c in the load's delay line); its sums leave delayed
        by cols - 1 - c cycles (deskew)."""
        g, load, exits = self.geometry, {}, {}
        for r, c in product(range(g.rows), range(g.cols)):
            sources = {n: (s, c - rect.col, rect.cols) for n, s, rect in _placements(g, r, c) if rect.bottom == r}
            if sources:
                mode = block_mode[r // g.block, c // g.block]
                owners = {n: s for n, (s, _, _) in sources.items()}
                value = pick([(mode[n], Cat(accepted[s][1].row[col], accepted[s][1].fire, accepted[s][1].bank))
                              for n, (s, col, _) in sources.items()])
                out = local.delay(f"load_{r}_{c}", value, {n: col for n, (_, col, _) in sources.items()}, owners,
                                  mode)
                load[r, c] = (out[:ACT_BITS].as_signed(), out[ACT_BITS], out[ACT_BITS + 1])
                exits[r, c] = local.delay(f"exit_{r}_{c}", pe[r][c].psum_out,
                                          {n: width - 1 - col for n, (_, col, width) in sources.items()},
                                          owners, mode).as_signed()
        return load, exits

    def _wire_block(self, m, local, mode, pe, br, bc, entry, load):
        """Block ``(br, bc)``'s PEs: its clock enable, and the load controls of each column's load point (shared
        by the column's PEs in the block)."""
        g = self.geometry
        r0, c0 = br * g.block, bc * g.block
        block_en = local.enable(f"block_en_{br}_{bc}", {n: g.owner(n, r0, c0) for n in g.splits}, mode)
        bottoms = {n: g.rects[n][g.owner(n, r0, c0)].bottom for n in g.splits}
        for c in range(c0, c0 + g.block):
            w_shift = Signal(name=f"w_shift_{br}_{c}")
            w_bank = Signal(name=f"w_bank_{br}_{c}")
            m.d.comb += [
                w_shift.eq(block_en & pick([(mode[n], load[bottom, c][1]) for n, bottom in bottoms.items()])),
                w_bank.eq(pick([(mode[n], load[bottom, c][2]) for n, bottom in bottoms.items()])),
            ]
            for r in range(r0, r0 + g.block):
                m.d.comb += [pe[r][c].en.eq(block_en), pe[r][c].w_shift.eq(w_shift), pe[r][c].w_bank.eq(w_bank)]
                self._wire_pe(m, local, pe, r, c, entry,
                              [n for n, bottom in bottoms.items() if bottom == r], load)

    def _wire_pe(self, m, local, pe, r, c, entry, bottom_here, load):
        """PE ``(r, c)``'s data inputs: activations from the left (or an entry point), the partial sum from above
        (or zero at a sub-array's top row), the weight chains from below (or a load point where a sub-array's
        bottom row is here, in ``bottom_here``'s splits; always in the array's bottom row)."""
        g, p = self.geometry, pe[r][c]
        left_a, left_bank = (pe[r][c - 1].a_out, pe[r][c - 1].bank_out) if c else (0, 0)
        if (r, c) in entry:
            modes, a_tap, bank_tap = entry[r, c]
            here = local.flag(f"entry_here_{r}_{c}", modes)
            left_a, left_bank = Mux(here, a_tap, left_a), Mux(here, bank_tap, left_bank)
        m.d.comb += [p.a_in.eq(left_a), p.bank_in.eq(left_bank)]
        top = [n for n in g.splits if g.rects[n][g.owner(n, r, c)].row == r]
        above = pe[r - 1][c].psum_out if r else 0
        if r and top:
            above = Mux(local.flag(f"top_here_{r}_{c}", top), 0, above)
        m.d.comb += p.psum_in.eq(above)
        at_load = local.flag(f"load_here_{r}_{c}", bottom_here) if bottom_here and r + 1 < g.rows else None
        for bank in range(2):  # a load chain per bank: w_bank only enables the registers
            if r + 1 == g.rows:
                source = load[r, c][0]
            elif at_load is not None:
                source = Mux(at_load, load[r, c][0], pe[r + 1][c].w_out[bank])
            else:
                source = pe[r + 1][c].w_out[bank]
            m.d.comb += p.w_in[bank].eq(source)

    def _slot_results(self, m, local, s, slot, mode, exits):
        """Slot ``s``'s item tracker (valid and tag) aligned with the results, and its output FIFO's input.

        The results, chosen among the exit points by the split, and the tracker's output are registered (one
        more stage of the slot's pipeline, enabled with it), so that neither the delay lines' LUT RAM nor the
        split decode lies on a path into the output FIFO's LUT RAM. No reset: see :meth:`_accepted`.
        """
        g = self.geometry
        modes = g.modes_of(s)
        tracked = local.delay(f"track{s}", Cat(slot.x_fire, self.port("x", s).payload.tag),
                              {n: g.latency(n) - 2 for n in modes}, dict.fromkeys(modes, s), mode)
        psums = [Signal(signed(ACC_BITS), name=f"result{s}_{col}", reset_less=True) for col in range(g.slot_cols[s])]
        track_q = Signal.like(tracked, name=f"track{s}_q", reset_less=True)
        with m.If(slot.en):
            m.d.sync += track_q.eq(tracked)
            m.d.sync += [psum.eq(pick([(mode[n], exits[g.rects[n][s].bottom, g.rects[n][s].col + col])
                                       for n in modes if col < g.rects[n][s].cols]))
                         for col, psum in enumerate(psums)]
        m.d.comb += [
            slot.fifo.w_en.eq(slot.en & track_q[0]),
            slot.fifo.w_data.eq(Cat(*psums, track_q[1:])),
        ]

    @property
    def settle_cycles(self):
        """Cycles the streams are held after reset or a change of split (see :class:`ArrayGeometry`)."""
        return self.geometry.settle_cycles


@dataclass
class _Slot:
    """The control signals of one slot that the rest of the array uses."""

    en: Signal
    en_mid: Signal
    x_fire: Signal
    w_fire: Signal
    use_bank: Signal
    load_bank: Signal
    fifo: object = None


class _LocalRegisters:
    """Registers the pieces of the array take next to their own logic: copies of a slot's clock enable, flags of
    the split in use, and delay lines enabled by the owning slot."""

    def __init__(self, m, split, en_mid):
        self.m, self.split, self.en_mid = m, split, en_mid

    def enable(self, name, owners, mode):
        """A replica of the clock enable of the slot that owns a piece of logic in each mode (``{n: slot}``). No
        reset: during a reset it takes the owner's ``en_mid``, which is reset."""
        return replica(self.m, pick([(mode[n], self.en_mid[slot]) for n, slot in owners.items()]), name=name,
                       reset_less=True)

    def flag(self, name, modes):
        """A register of its own, next to the PE that uses it: the split is one of ``modes`` (one cycle later,
        like the decodes)."""
        return replica(self.m, Cat(self.split == n for n in modes).any(), name=name, reset_less=True)

    def delay(self, name, value, delays, owners, mode):
        """``value`` delayed by ``delays[n]`` enabled cycles of the owning slot ``owners[n]`` in split ``n``."""
        return _delay_line(self.m, name, value, [(mode[n], d) for n, d in delays.items()],
                           self.enable(f"{name}_en", owners, mode))
