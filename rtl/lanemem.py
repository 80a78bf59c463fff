"""Memory shared by the sub-arrays: slices whose ownership follows the run-time split.

The MLP engine gives each sub-array (lane) its own activation and accumulator buffer, and the whole capacity must
be usable whatever the split: one lane when the array is whole, four when it is split in quarters. A
:class:`LaneMemory` is built from ``slices`` equal slices, each with one read and one write port. In split ``n``
lane ``l`` owns the ``slices / n`` consecutive slices starting at ``l * slices / n``; a word of the lane is
``q`` slices wide (its word width divided by the slice width), so the lane's slices form ``slices / n / q``
groups stacked in depth: lane address ``a`` is row ``a % depth`` of group ``a // depth``.

For example the ``small`` activation buffer has four slices of 8 bytes: the whole array reads 16-byte words from
two groups of two slices (twice the depth), each half of a split array reads 16-byte words from its own two
slices, and each quarter 8-byte words from its own slice.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .lib.delay import shift_register
from .lib.select import pick, pick_keyed, split_modes

__all__ = ["LaneMemory", "read_signature", "write_signature"]


def read_signature(addr_width, elem_shape, elems):
    """A read port as seen by its user: ``addr``/``en`` out, ``data`` (``elems`` elements) back one cycle later."""
    return wiring.Signature({
        "addr": Out(addr_width),
        "en": Out(1),
        "data": In(data.ArrayLayout(elem_shape, elems)),
    })


def write_signature(addr_width, elem_shape, elems):
    """A write port as seen by its user: ``addr``, ``data`` and one enable bit per element."""
    return wiring.Signature({
        "addr": Out(addr_width),
        "en": Out(elems),
        "data": Out(data.ArrayLayout(elem_shape, elems)),
    })



class LaneMemory(wiring.Component):
    """Slices of memory owned by the lanes of the current split (see the module documentation).

    Parameters
    ----------
    word_elems : dict
        ``{n: elements per lane word}`` for every split ``n`` (a multiple of ``slice_elems``).
    slices : int
        Number of slices (the largest split).
    slice_elems : int
        Elements per slice row.
    elem_shape : shape-like
        Shape of one element.
    depth : int
        Rows per slice (a power of two).

    Members
    -------
    split : In(range(slices + 1))
        The split in use; decoded into registers here, so a change takes effect one cycle later.
    read<l>, write<l> : In(read_signature(...)), In(write_signature(...))
        The ports of lane ``l``: its widest word, its largest address range over the splits it exists in.
        Read data arrive :attr:`READ_LATENCY` cycles after the address; a write lands a cycle after it is
        presented.

    Each slice takes its read address and its write port from registers of its own, after the multiplexers
    that choose the owning lane, and its read data go into a register next to it before the lanes' multiplexers:
    the slices' block RAMs lie apart on the FPGA, and neither the lanes' logic nor a block RAM's slow
    clock-to-output then shares a cycle with a wire across the die.
    """

    #: Cycles from a read address to its data: the slice's address register, the memory, the data register.
    READ_LATENCY = 3

    def __init__(self, *, word_elems, slices, slice_elems, elem_shape, depth):
        if depth & (depth - 1) or depth <= 0:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise ValueError(f"Lane memory slice depth must be a power of two, not {depth!r}")
        for n, elems in word_elems.items():
            if elems % slice_elems or slices % n or (slices // n) % (elems // slice_elems):
                self._MustUse__silence = True
                raise ValueError(f"A lane word of {elems} elements cannot be made of {slice_elems}-element slices "
                                 f"when {slices} slices are split {n} ways")
        self.word_elems = dict(sorted(word_elems.items()))
        self.slices, self.slice_elems, self.depth = slices, slice_elems, depth
        self.elem_shape = elem_shape
        members = {"split": In(range(slices + 1))}
        for lane in range(slices):
            elems = self.lane_elems(lane)
            members[f"read{lane}"] = In(read_signature(self.addr_width(lane), elem_shape, elems))
            members[f"write{lane}"] = In(write_signature(self.addr_width(lane), elem_shape, elems))
        super().__init__(members)

    def modes_of(self, lane):
        return [n for n in self.word_elems if lane < n]

    def lane_elems(self, lane):
        """Width of ``lane``'s port in elements (its widest word)."""
        return max(self.word_elems[n] for n in self.modes_of(lane))

    def groups(self, n):
        """Groups of slices each lane has in split ``n``."""
        return self.slices // n // (self.word_elems[n] // self.slice_elems)

    def capacity(self, n):
        """Words of each lane in split ``n``."""
        return self.groups(n) * self.depth

    def addr_width(self, lane):
        return max(1, max(self.capacity(n) for n in self.modes_of(lane)) - 1).bit_length()

    def elaborate(self, platform):
        m = Module()
        slice_data = [self._slice(m, j) for j in range(self.slices)]
        for lane in range(self.slices):
            self._read_data(m, lane, slice_data)
        return m

    @property
    def _row_bits(self):
        return (self.depth - 1).bit_length()

    def _slice(self, m, j):
        """Slice ``j``: its memory, and its port registers after the multiplexers that choose the owning lane
        (enables reset; addresses and data take no reset, so the reset net need not reach them); returns its
        registered read data."""
        row_bits, se = self._row_bits, self.slice_elems
        elem_width = Shape.cast(self.elem_shape).width
        mode = split_modes(m, self.split, self.word_elems, name=f"slice{j}")
        mem = Memory(shape=se * elem_width, depth=self.depth, init=[])
        m.submodules[f"slice{j}"] = mem
        mem_w, mem_r = mem.write_port(granularity=elem_width), mem.read_port()
        wp = Signal(data.StructLayout({"addr": row_bits, "data": se * elem_width}), name=f"wp{j}", reset_less=True)
        wp_en = Signal(se, name=f"wp{j}_en")
        rp_addr, rp_en = Signal(row_bits, name=f"rp{j}_addr", reset_less=True), Signal(name=f"rp{j}_en")
        data_q = Signal.like(mem_r.data, name=f"data{j}", reset_less=True)
        m.d.comb += [mem_w.addr.eq(wp.addr), mem_w.en.eq(wp_en), mem_w.data.eq(wp.data),
                     mem_r.addr.eq(rp_addr), mem_r.en.eq(rp_en)]
        m.d.sync += data_q.eq(mem_r.data)
        # In split n the slice belongs to `lane`, as the part `pos` of a word of its group `group`.
        reads, writes = [], []
        for n in self.word_elems:
            lane, local = divmod(j, self.slices // n)
            group, pos = divmod(local, self.word_elems[n] // se)
            reads.append((mode[n], lane))
            writes.append((mode[n], (lane, group if self.groups(n) > 1 else None, pos)))

        def write(key, part):
            lane, group, pos = key
            port = getattr(self, f"write{lane}")
            if part == "data":
                return Cat(port.data[pos * se + e] for e in range(se))
            enables = port.en[pos * se:(pos + 1) * se]
            return enables if group is None else Mux(port.addr[row_bits:] == group, enables, 0)

        m.d.sync += [
            rp_addr.eq(pick_keyed(reads, lambda lane: getattr(self, f"read{lane}").addr[:row_bits])),
            rp_en.eq(pick_keyed(reads, lambda lane: getattr(self, f"read{lane}").en)),
            wp.addr.eq(pick_keyed([(c, key[0]) for c, key in writes],
                                  lambda lane: getattr(self, f"write{lane}").addr[:row_bits])),
            wp.data.eq(pick_keyed([(c, key[0::2]) for c, key in writes],
                                  lambda key: write((key[0], None, key[1]), "data"))),
            wp_en.eq(pick_keyed(writes, lambda key: write(key, "en"))),
        ]
        return data_q

    def _read_data(self, m, lane, slice_data):
        """Read data of ``lane``: the slices of the group its read addressed, READ_LATENCY cycles before."""
        r = getattr(self, f"read{lane}")
        mode = split_modes(m, self.split, self.word_elems, name=f"read{lane}")
        group_q = shift_register(m, r.addr[self._row_bits:], self.READ_LATENCY, name=f"group{lane}_d", first=0,
                                 shape=range(max(self.groups(n) for n in self.modes_of(lane))), reset_less=True)[-1]
        choices = []
        for n in self.modes_of(lane):
            q = self.word_elems[n] // self.slice_elems
            for group in range(self.groups(n)):
                first = lane * (self.slices // n) + group * q
                word = Cat(slice_data[first + p] for p in range(q))
                choices.append((mode[n] & (group_q == group) if self.groups(n) > 1 else mode[n], word))
        m.d.comb += r.data.eq(pick(choices))
