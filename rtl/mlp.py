"""MLP engine: the reconfigurable systolic array with weight, activation and accumulator buffers and
post-processing, running whole multi-layer perceptrons from on-chip buffers.

Structure (one *lane* per slot of the array; in split ``n`` lanes ``0 .. n-1`` work, each on its own
sub-array). A lane (:class:`MLPLane`) is eight units joined by streams::

    wload ──> weight memory ──(round-robin reads)──> Fetcher ──> Unpacker ──> array w<l>   (tile rows)
                                                                          └──> n-tile FIFO  (bias, params, destination)
    cmd<l> ──> Dispatcher ──> Loader  : act<l> stream ───────────> activation memory (lane slices)
                          ├─> Fetcher : weight words of each layer, in program order
                          └─> Feeder  : activation memory ──> array x<l> ──> array y<l>
                                        ──> Accumulator (accumulator memory, across k-tiles)
                                        ──> BeatIssuer ──> post-processors (bias, requantise, ReLU or raw;
                                            shared by lanes)
                                        ──> Writer ──> activation memory (next layer's input) or out<l> stream

A lane executes a stream of commands (:class:`MLPCommand`):

* ``INPUT``: take ``items * ktiles`` words from the lane's ``act`` stream and store word ``j`` of item ``i`` at
  ``in_base + j * stride + i`` (the stream gives item 0's words 0 .. ktiles - 1, then item 1's, ...: the order
  in which the chip's fetcher and joiner produce them).
* ``LAYER``: one layer over a chunk of ``items`` items: for every n-tile, for every k-tile, every item's
  activation word ``in_base + kt * stride + i`` goes through the array with the tile's weights; partial sums
  accumulate in accumulator rows ``acc_base + i``; after the last k-tile the post-processors add the n-tile's
  bias and requantise (``params``); the results go to the activation memory (word
  ``out_base + (nt * cols) // rows * stride + i`` at element ``(nt * cols) % rows``), or, with ``to_output``,
  to the ``out`` stream (one vector of ``cols`` int32 per item and n-tile, n-tile major).

Commands of one lane start in order within each unit, and overlap across units: the fetcher streams weights
ahead of the feeder (so the next tile's weights load while the current one computes), the loader fills the
next chunk's inputs while layers run. Dependencies are explicit: a command waits until ``wait_inputs`` INPUT
and ``wait_layers`` LAYER commands of its lane have completed (counted modulo 256; a LAYER completes when its
last result has been written). The host-side layout code (:mod:`rpaccel.host.driver.mlp`) builds the weight
image and the command and input streams of a whole batch, chunk by chunk, so the host never steps in per
layer.

Weight memory layout of one layer for split ``n`` (words of ``array_cols`` bytes): for each n-tile, the bias
(``cols`` int32, little-endian, ``bias_words`` words), then for each k-tile its ``rows`` weight rows (``cols``
int8 each, packed ``array_cols // cols`` rows to a word).
"""

import enum
from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.vendor import SiliconBluePlatform

from ..config import AccelConfig, ConfigError
from ..numeric import ACC_BITS, ACT_BITS
from .array import ArrayGeometry, SystolicArray, x_layout, y_layout
from .lanemem import LaneMemory, read_signature, write_signature
from .lib.credit import CreditCounter
from .lib.delay import shift_register
from .lib.queue import Queue
from .lib.select import pick, pick_keyed, replica, split_modes
from .lib.slice import RegisterSlice
from .memory import RegisteredRAM
from .postproc import PostProcessor, RequantParams

__all__ = ["ADDR_BITS", "COUNT_BITS", "WAIT_BITS", "Accumulator", "BeatIssuer", "CounterNest", "satisfied",
           "Dispatcher", "EngineGeometry", "Feeder", "Fetcher", "Loader", "MLPCommand", "MLPEngine", "MLPLane", "Op",
           "SplitShape", "Unpacker", "Writer", "wload_layout"]

#: Width of buffer addresses and of item/tile counts in commands.
ADDR_BITS = 16
COUNT_BITS = 16
#: Width of the completion counters commands wait on.
WAIT_BITS = 8
#: Cycles from a granted weight-memory request to its word at the lane: registered address, the weight memory
#: (``rtl.memory.RegisteredRAM`` with row registers: copies of the address per group of rows of block RAMs and
#: per row, the block RAM, its output register, a register per group after the rows' multiplexer) and
#: registered data.
WRESP_LATENCY = 7


class Op(enum.IntEnum):
    """Command opcodes."""

    INPUT = 0
    LAYER = 1


class MLPCommand(data.Struct):
    """One command of a lane (see the module documentation).

    Members
    -------
    op : unsigned(1)
        :class:`Op`.
    wait_inputs, wait_layers : unsigned(8)
        Start only once this many INPUT / LAYER commands of the lane have completed (modulo 256).
    items : unsigned(16)
        Items in the chunk (at least 1).
    stride : unsigned(16)
        Words between successive words of one item in the activation memory.
    in_base : unsigned(16)
        INPUT: where the words go. LAYER: where the layer's input words are.
    out_base : unsigned(16)
        LAYER: where the results go (unless ``to_output``).
    acc_base : unsigned(16)
        LAYER: first accumulator row used.
    w_base : unsigned(16)
        LAYER: first weight memory word of the layer.
    ktiles : unsigned(16)
        LAYER: k-tiles (input words per item). INPUT: words per item.
    ntiles : unsigned(16)
        LAYER: n-tiles.
    params : RequantParams
        LAYER: requantisation, ReLU, raw output.
    to_output : unsigned(1)
        LAYER: send the results to the ``out`` stream instead of the activation memory.
    """

    op: unsigned(1)
    wait_inputs: unsigned(WAIT_BITS)
    wait_layers: unsigned(WAIT_BITS)
    items: unsigned(COUNT_BITS)
    stride: unsigned(ADDR_BITS)
    in_base: unsigned(ADDR_BITS)
    out_base: unsigned(ADDR_BITS)
    acc_base: unsigned(ADDR_BITS)
    w_base: unsigned(ADDR_BITS)
    ktiles: unsigned(COUNT_BITS)
    ntiles: unsigned(COUNT_BITS)
    params: RequantParams
    to_output: unsigned(1)


@dataclass(frozen=True)
class SplitShape:
    """What a lane looks like in one split.

    Attributes
    ----------
    n : int
        The split (number of lanes).
    rows, cols : int
        Sub-array shape: elements per activation word, outputs per n-tile.
    rows_per_word, tile_words, bias_words : int
        Weight rows per weight memory word, words per tile, words per bias vector.
    postprocs, beats : int
        Post-processors of each lane, and cycles they take for one result vector.
    act_words, acc_rows : int
        Activation memory words and accumulator rows of each lane.
    """

    n: int
    rows: int
    cols: int
    rows_per_word: int
    tile_words: int
    bias_words: int
    postprocs: int
    beats: int
    act_words: int
    acc_rows: int


class EngineGeometry:
    """Sizes of the MLP engine for a configuration (pure Python, shared by the RTL and the host layout code).

    Raises
    ------
    ConfigError
        If the configuration cannot be built (a sub-array whose rows are not a multiple of its columns, an
        activation buffer that does not divide into power-of-two slices, more than 65536 words).
    """

    def __init__(self, config):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"Engine configuration must be an AccelConfig, not {config!r}")
        self.config = config
        self.array = array = ArrayGeometry(config)
        self.lanes = array.slots
        self.word_bytes = config.array_cols
        self.weight_words = config.weight_buffer_words
        if self.weight_words > 1 << ADDR_BITS:
            raise ConfigError(f"weight_buffer_words must be at most {1 << ADDR_BITS}, not {self.weight_words}")
        shapes = {n: array.shape(n) for n in array.splits}
        self.act_slice_elems = min(rows for rows, _ in shapes.values())
        self.act_depth = self._slice_depth("act_buffer_words", config.act_buffer_words * config.array_rows,
                                           self.act_slice_elems)
        self.splits = {}
        for n, (rows, cols) in shapes.items():
            if rows % cols:
                raise ConfigError(f"The MLP engine needs sub-arrays whose rows are a multiple of their columns; "
                                  f"split {n} of the {config.array_rows}x{config.array_cols} array is {rows}x{cols}")
            if n > config.array_cols:
                raise ConfigError(f"Split {n} has more lanes than the {config.array_cols} post-processors")
            postprocs = config.array_cols // n
            per_lane = self.lanes // n
            act_groups = per_lane // (rows // self.act_slice_elems)
            # Each lane has its own accumulator (LUT RAM): a lane of split n gets the rows that keep
            # rows x columns at the whole array's acc_buffer_words x array_cols.
            acc_rows = config.acc_buffer_words * config.array_cols // (n * cols)
            if acc_rows < 1:
                raise ConfigError(f"acc_buffer_words = {config.acc_buffer_words} leaves no accumulator row to the "
                                  f"lanes of split {n}")
            self.splits[n] = SplitShape(
                n=n, rows=rows, cols=cols, rows_per_word=self.word_bytes // cols,
                tile_words=-(-rows * cols // self.word_bytes), bias_words=-(-4 * cols // self.word_bytes),
                postprocs=postprocs, beats=cols // postprocs,
                act_words=act_groups * self.act_depth, acc_rows=acc_rows)
            if rows * cols % self.word_bytes or cols % postprocs:
                raise ConfigError(f"Split {n}: a {rows}x{cols} tile does not pack into {self.word_bytes}-byte words")
            if self.splits[n].act_words > 1 << ADDR_BITS:
                raise ConfigError(f"act_buffer_words gives lanes of more than {1 << ADDR_BITS} words")

    def _slice_depth(self, field, elems, slice_elems):
        depth, rest = divmod(elems, self.lanes * slice_elems)
        if rest or depth & (depth - 1):
            raise ConfigError(f"{field} must split into {self.lanes} power-of-two slices of {slice_elems} elements, "
                              f"not {getattr(self.config, field)!r}")
        return depth

    def lane_modes(self, lane):
        """The splits in which ``lane`` works."""
        return [n for n in self.splits if lane < n]

    def lane_rows(self, lane):
        return max(self.splits[n].rows for n in self.lane_modes(lane))

    def lane_cols(self, lane):
        return max(self.splits[n].cols for n in self.lane_modes(lane))

    def lane_postprocs(self, lane):
        return max(self.splits[n].postprocs for n in self.lane_modes(lane))

    @property
    def max_acc_rows(self):
        return max(s.acc_rows for s in self.splits.values())

    def tag_layout(self):
        """What travels through the array with each item."""
        rows = range(self.max_acc_rows)
        return data.StructLayout({"acc": rows, "item": rows, "first": 1, "final": 1, "end": 1})

    def act_memory(self):
        return LaneMemory(word_elems={n: s.rows for n, s in self.splits.items()}, slices=self.lanes,
                          slice_elems=self.act_slice_elems, elem_shape=signed(ACT_BITS), depth=self.act_depth)

    def lane_acc_rows(self, lane):
        """Rows of ``lane``'s accumulator: the most it needs in any split."""
        return max(self.splits[n].acc_rows for n in self.lane_modes(lane))


def wload_layout(geometry):
    """Payload of the engine's ``wload`` stream: a weight memory address and the word to write there."""
    return data.StructLayout({"addr": range(geometry.weight_words),
                              "data": data.ArrayLayout(signed(ACT_BITS), geometry.word_bytes)})


def satisfied(done, wait):
    """``done`` has reached ``wait`` (modulo 2**WAIT_BITS, within half the range)."""
    return ~(done - wait)[WAIT_BITS - 1]


def _latch_command(m, cmd, start, name):
    """The command at the head of the stream ``cmd``, taken off it in the cycle ``start`` is high (``start``
    implies ``cmd.valid``) and held in a register: a sequencer's logic then starts at flip-flops, not at the
    command queue's LUT RAM."""
    reg = Signal(MLPCommand, name=f"{name}_cmd", reset_less=True)
    m.d.comb += cmd.ready.eq(start)
    with m.If(start):
        m.d.sync += reg.eq(cmd.payload)
    return reg


class CounterNest(wiring.Component):
    """The counters of a loop nest over a command's fields (innermost first, e.g. ``("items", "ktiles",
    "ntiles")``): every sequencer of a lane counts its work with one.

    Parameters
    ----------
    levels : tuple of str
        :class:`MLPCommand` count fields (``items``, ``ktiles``, ``ntiles``), innermost first, each at most once.

    Members
    -------
    start : In(1)
        Begin a nest: every count to 0, each level's ``limit - 1`` into a register (so the compares below are
        between registers), ``running`` set. Only while not ``running``.
    limit : In(StructLayout({level: unsigned(16)}))
        Iterations of each level (at least 1), taken at ``start``.
    step : In(1)
        One iteration of the innermost level done. Only while ``running``.
    running : Out(1)
        Between ``start`` and the last ``step``.
    count : Out(StructLayout({level: unsigned(16)}))
        The current iteration of each level.
    last : Out(StructLayout({level: 1}))
        ``count`` is the level's last iteration.
    wrap : Out(StructLayout({level: 1}))
        This ``step`` ends the level's last iteration (and so every inner level's); the inner levels restart at 0,
        the next outer one advances. The outermost level's ``wrap`` ends the nest (its count then holds).
    """

    def __init__(self, levels):
        if (not isinstance(levels, (tuple, list)) or not levels or len(set(levels)) != len(levels)
                or any(level not in ("items", "ktiles", "ntiles") for level in levels)):
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise ValueError(f"Counter nest levels must be some of items, ktiles, ntiles, not {levels!r}")
        self.levels = tuple(levels)
        counts = data.StructLayout(dict.fromkeys(self.levels, unsigned(COUNT_BITS)))
        flags = data.StructLayout(dict.fromkeys(self.levels, 1))
        super().__init__({"start": In(1), "limit": In(counts), "step": In(1), "running": Out(1),
                          "count": Out(counts), "last": Out(flags), "wrap": Out(flags)})

    def elaborate(self, platform):
        m = Module()
        carry = self.step
        with m.If(self.start):
            m.d.sync += self.running.eq(1)
        for level in self.levels:
            count, last = self.count[level], Signal(COUNT_BITS, name=f"last_{level}", reset_less=True)
            m.d.comb += [self.last[level].eq(count == last), self.wrap[level].eq(carry & self.last[level])]
            with m.If(self.start):
                m.d.sync += [count.eq(0), last.eq(self.limit[level] - 1)]
            with m.Elif(carry & ~self.last[level]):
                m.d.sync += count.eq(count + 1)
            with m.Elif(self.wrap[level]):  # the inner levels restart, the outermost holds
                if level != self.levels[-1]:
                    m.d.sync += count.eq(0)
            carry = self.wrap[level]
        with m.If(carry):
            m.d.sync += self.running.eq(0)
        return m


class _LaneUnit(wiring.Component):
    """A unit of a lane: the lane's splits and sizes, and a decode of ``split`` into registers of its own (so no
    decode register fans out across the lane)."""

    def __init__(self, geometry, lane, members):
        self.geometry, self.lane = geometry, lane
        self.shapes = [geometry.splits[n] for n in geometry.lane_modes(lane)]
        self.rows, self.cols = geometry.lane_rows(lane), geometry.lane_cols(lane)
        self.postprocs = geometry.lane_postprocs(lane)
        super().__init__({"split": In(range(geometry.lanes + 1)), **members})

    def decode(self, m, name):
        """``{n: split == n}`` for the lane's splits, one cycle late, in registers ``<name>_lane_mode<n>``."""
        return split_modes(m, self.split, [s.n for s in self.shapes], name=f"{name}_lane")

    def per_split(self, mode, attr):
        """:class:`SplitShape` ``attr`` of the split in use, by the decode ``mode``."""
        return pick([(mode[s.n], getattr(s, attr)) for s in self.shapes])


def _word_tag(rows):
    """What the fetcher tags each weight word with."""
    return data.StructLayout({"bias": 1, "bias_last": 1, "params": RequantParams, "to_output": 1,
                              "out_row": ADDR_BITS, "out_off": range(rows), "last_ntile": 1})


def _ntile_layout(rows, cols):
    """What the post-processing of an n-tile needs: its bias, parameters and destination."""
    return data.StructLayout({"bias": data.ArrayLayout(signed(ACC_BITS), cols), "params": RequantParams,
                              "to_output": 1, "out_row": ADDR_BITS, "out_off": range(rows), "last_ntile": 1})


def _out_tag_layout(rows):
    """Where a result goes, and whether it completes its layer."""
    return data.StructLayout({"addr": ADDR_BITS, "off": range(rows), "to_output": 1, "layer_done": 1})


def _beat_layout(postprocs):
    return data.StructLayout({"acc": data.ArrayLayout(signed(ACC_BITS), postprocs),
                              "bias": data.ArrayLayout(signed(ACC_BITS), postprocs),
                              "params": RequantParams})


def _fifo_stream(m, fifo, stream_):
    """The read side of ``fifo`` (an ``amaranth.lib.fifo`` or :class:`~.lib.queue.Queue`) as the stream ``stream_``."""
    m.d.comb += [stream_.valid.eq(fifo.r_rdy), stream_.payload.eq(fifo.r_data), fifo.r_en.eq(stream_.ready)]


class Dispatcher(_LaneUnit):
    """Sends the lane's commands on in order while the lane's split is in use: INPUT commands to the loader,
    LAYER commands to both the fetcher and the feeder, each through a queue of its own; counts what it sent.

    Members
    -------
    cmd : In(stream.Signature(MLPCommand))
    load, fetch, feed : Out(stream.Signature(MLPCommand))
    inputs_sent, layers_sent : Out(8)
        INPUT and LAYER commands sent (modulo 256).
    """

    #: Depth of each queue.
    QUEUE = 2

    def __init__(self, geometry, lane):
        command = stream.Signature(MLPCommand)
        super().__init__(geometry, lane, {"cmd": In(command), "load": Out(command), "fetch": Out(command),
                                          "feed": Out(command), "inputs_sent": Out(WAIT_BITS),
                                          "layers_sent": Out(WAIT_BITS)})

    def elaborate(self, platform):
        m = Module()
        active = Cat(self.decode(m, "dispatch").values()).any()
        queues = {}
        for name in ("load", "fetch", "feed"):
            queues[name] = m.submodules[f"{name}_q"] = SyncFIFO(width=MLPCommand.as_shape().size, depth=self.QUEUE)
            m.d.comb += queues[name].w_data.eq(self.cmd.payload)
            _fifo_stream(m, queues[name], getattr(self, name))
        is_layer = self.cmd.payload.op == Op.LAYER
        accepted = self.cmd.valid & self.cmd.ready
        m.d.comb += [
            self.cmd.ready.eq(active & Mux(is_layer, queues["fetch"].w_rdy & queues["feed"].w_rdy,
                                           queues["load"].w_rdy)),
            queues["load"].w_en.eq(accepted & ~is_layer),
            queues["fetch"].w_en.eq(accepted & is_layer),
            queues["feed"].w_en.eq(accepted & is_layer),
        ]
        with m.If(queues["load"].w_en):
            m.d.sync += self.inputs_sent.eq(self.inputs_sent + 1)
        with m.If(queues["fetch"].w_en):
            m.d.sync += self.layers_sent.eq(self.layers_sent + 1)
        return m


class Loader(_LaneUnit):
    """INPUT commands: the ``act`` stream (item after item, ``ktiles`` words each) into the activation memory,
    word ``j`` of item ``i`` at ``in_base + j * stride + i``.

    Members
    -------
    cmd : In(stream.Signature(MLPCommand))
    act : In(stream.Signature(data.ArrayLayout(signed(8), rows)))
    write : Out(write_signature(...))
        The word taken from ``act`` (all enables low in other cycles).
    hold : In(1)
        The write port is taken (by the writer's write-back register): take no word.
    layers_done : In(8)
        For the commands' ``wait_layers``.
    inputs_done : Out(8)
        INPUT commands completed (modulo 256).
    """

    def __init__(self, geometry, lane, *, act_addr_width):
        rows = geometry.lane_rows(lane)
        super().__init__(geometry, lane, {
            "cmd": In(stream.Signature(MLPCommand)),
            "act": In(stream.Signature(data.ArrayLayout(signed(ACT_BITS), rows))),
            "write": Out(write_signature(act_addr_width, signed(ACT_BITS), rows)),
            "hold": In(1), "layers_done": In(WAIT_BITS), "inputs_done": Out(WAIT_BITS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.nest = nest = CounterNest(("ktiles", "items"))
        start = ~nest.running & self.cmd.valid & satisfied(self.layers_done, self.cmd.payload.wait_layers)
        cmd = _latch_command(m, self.cmd, start, "load")
        item = Signal(ADDR_BITS)  # in_base + item
        addr = Signal(ADDR_BITS)  # in_base + word * stride + item: the next word's address
        fire = self.act.valid & self.act.ready
        m.d.comb += [
            nest.start.eq(start), nest.limit.items.eq(self.cmd.payload.items),
            nest.limit.ktiles.eq(self.cmd.payload.ktiles), nest.step.eq(fire),
            self.act.ready.eq(nest.running & ~self.hold),
        ]
        with m.If(start):
            m.d.sync += [item.eq(self.cmd.payload.in_base), addr.eq(self.cmd.payload.in_base)]
        with m.Elif(nest.wrap.ktiles):  # (`start` only while not running, words only while running)
            m.d.sync += [item.eq(item + 1), addr.eq(item + 1)]
        with m.Elif(fire):
            m.d.sync += addr.eq(addr + cmd.stride)
        with m.If(nest.wrap.items):
            m.d.sync += self.inputs_done.eq(self.inputs_done + 1)
        with m.If(fire):
            m.d.comb += [self.write.addr.eq(addr), self.write.en.eq((1 << self.rows) - 1),
                         self.write.data.eq(self.act.payload)]
        return m


class Fetcher(_LaneUnit):
    """LAYER commands, request side: the layer's weight memory words in order (for each n-tile its bias words,
    then the words of each k-tile), each answer tagged with what it is, into the word FIFO.

    Members
    -------
    cmd : In(stream.Signature(MLPCommand))
    wreq : Out(stream.Signature(unsigned(16)))
        Weight memory addresses.
    wresp, wresp_valid : In(data.ArrayLayout(signed(8), word_bytes)), In(1)
        The word of a granted request, WRESP_LATENCY cycles later.
    words : Out(stream.Signature(StructLayout({data, tag})))
        The word FIFO's head (a register, ``SyncFIFOBuffered``).
    """

    #: Depth of the word FIFO: it smooths the lanes' turns at the weight memory.
    WORD_FIFO = 16

    def __init__(self, geometry, lane):
        rows = geometry.lane_rows(lane)
        word = data.StructLayout({"data": data.ArrayLayout(signed(ACT_BITS), geometry.word_bytes),
                                  "tag": _word_tag(rows)})
        super().__init__(geometry, lane, {
            "cmd": In(stream.Signature(MLPCommand)),
            "wreq": Out(stream.Signature(unsigned(ADDR_BITS))),
            "wresp": In(data.ArrayLayout(signed(ACT_BITS), geometry.word_bytes)),
            "wresp_valid": In(1),
            "words": Out(stream.Signature(word))})

    def elaborate(self, platform):
        m = Module()
        mode = self.decode(m, "fetch")
        bias_words, tile_words = self.per_split(mode, "bias_words"), self.per_split(mode, "tile_words")
        lane_rows, lane_cols = self.per_split(mode, "rows"), self.per_split(mode, "cols")
        word_tag = _word_tag(self.rows)
        m.submodules.word_fifo = word_fifo = SyncFIFOBuffered(width=self.words.payload.shape().size,
                                                              depth=self.WORD_FIFO)
        _fifo_stream(m, word_fifo, self.words)
        # Words requested and not yet read from the word FIFO (in flight or waiting) hold credits: a request
        # never waits on the FIFO's level arithmetic.
        m.submodules.credits = credits = CreditCounter(self.WORD_FIFO, registered=False)
        m.submodules.nest = nest = CounterNest(("ktiles", "ntiles"))
        start = ~nest.running & self.cmd.valid
        cmd = _latch_command(m, self.cmd, start, "fetch")
        addr = Signal(ADDR_BITS)
        word = Signal(range(max(max(s.tile_words, s.bias_words) for s in self.shapes) + 1))
        in_tile = Signal()  # 0: the bias words of the n-tile, 1: tile words
        out_row = Signal(ADDR_BITS)
        out_off = Signal(range(self.rows))
        tag = Signal(word_tag)
        fire = self.wreq.valid & self.wreq.ready
        bias_end = ~in_tile & (word == bias_words - 1)
        tile_end = in_tile & (word == tile_words - 1)
        m.d.comb += [
            nest.start.eq(start), nest.limit.ktiles.eq(self.cmd.payload.ktiles),
            nest.limit.ntiles.eq(self.cmd.payload.ntiles), nest.step.eq(fire & tile_end),
            credits.take.eq(fire), credits.give.eq(word_fifo.r_en & word_fifo.r_rdy),
            self.wreq.valid.eq(nest.running & credits.room),
            self.wreq.payload.eq(addr),
            tag.bias.eq(~in_tile), tag.bias_last.eq(bias_end), tag.params.eq(cmd.params),
            tag.to_output.eq(cmd.to_output), tag.out_row.eq(out_row), tag.out_off.eq(out_off),
            tag.last_ntile.eq(nest.last.ntiles),
            # The tag of a request meets its word WRESP_LATENCY cycles later.
            word_fifo.w_en.eq(self.wresp_valid),
            word_fifo.w_data.eq(Cat(self.wresp, shift_register(m, tag, WRESP_LATENCY, name="f_tag_d", first=0,
                                                               shape=word_tag, reset_less=True)[-1])),
        ]
        with m.If(start):
            m.d.sync += [addr.eq(self.cmd.payload.w_base), word.eq(0), in_tile.eq(0),
                         out_row.eq(self.cmd.payload.out_base), out_off.eq(0)]
        with m.If(fire):
            m.d.sync += [addr.eq(addr + 1), word.eq(Mux(bias_end | tile_end, 0, word + 1))]
        with m.If(fire & bias_end):
            m.d.sync += in_tile.eq(1)
        with m.If(nest.wrap.ktiles):
            m.d.sync += in_tile.eq(0)
            # The next n-tile's results go cols elements on, into the next word when this one is full.
            with m.If(~nest.last.ntiles & (out_off == lane_rows - lane_cols)):
                m.d.sync += [out_off.eq(0), out_row.eq(out_row + cmd.stride)]
            with m.Elif(~nest.last.ntiles):
                m.d.sync += out_off.eq(out_off + lane_cols)
        return m


class Unpacker(_LaneUnit):
    """LAYER commands, answer side: bias words (collected) into the n-tile FIFO with the n-tile's parameters and
    destination; tile words cut into weight rows for the array.

    Members
    -------
    words : In(stream.Signature(...))
        The fetcher's tagged words.
    w : Out(stream.Signature(data.ArrayLayout(signed(8), cols)))
        Weight rows, to the array.
    ntiles : Out(stream.Signature(ntile layout))
        The n-tile FIFO's head.
    """

    #: Depth of the n-tile FIFO.
    NTILE_FIFO = 4

    def __init__(self, geometry, lane):
        rows, cols = geometry.lane_rows(lane), geometry.lane_cols(lane)
        word = data.StructLayout({"data": data.ArrayLayout(signed(ACT_BITS), geometry.word_bytes),
                                  "tag": _word_tag(rows)})
        super().__init__(geometry, lane, {
            "words": In(stream.Signature(word)),
            "w": Out(stream.Signature(data.ArrayLayout(signed(ACT_BITS), cols))),
            "ntiles": Out(stream.Signature(_ntile_layout(rows, cols)))})

    def elaborate(self, platform):
        m = Module()
        mode = self.decode(m, "unpack")
        ntile_layout = _ntile_layout(self.rows, self.cols)
        # Cut by bias element (each goes to its own post-processor), the rest in a slice of its own.
        m.submodules.ntile_fifo = ntile_fifo = Queue(
            [ACC_BITS] * self.cols + [ntile_layout.size - self.cols * ACC_BITS], depth=self.NTILE_FIFO)
        _fifo_stream(m, ntile_fifo, self.ntiles)
        word, tag = self.words.payload.data, self.words.payload.tag
        max_bias_words = max(s.bias_words for s in self.shapes)
        bias_slots = [Signal(len(word.as_value()), name=f"bias_word{k}", reset_less=True)
                      for k in range(max_bias_words - 1)]
        bias_index = Signal(range(max_bias_words))
        row_index = Signal(range(max(s.rows_per_word for s in self.shapes)))
        ntile_in = Signal(ntile_layout)
        m.d.comb += [
            ntile_in.bias.eq(pick([(mode[s.n], Cat(*bias_slots[:s.bias_words - 1], word.as_value()))
                                    for s in self.shapes])),
            ntile_in.params.eq(tag.params), ntile_in.to_output.eq(tag.to_output),
            ntile_in.out_row.eq(tag.out_row), ntile_in.out_off.eq(tag.out_off),
            ntile_in.last_ntile.eq(tag.last_ntile),
            ntile_fifo.w_data.eq(ntile_in),
            self.w.valid.eq(self.words.valid & ~tag.bias),
        ]
        for e in range(self.cols):
            # Weight e of the row comes from byte row_index * cols + e of the word.
            m.d.comb += self.w.payload[e].eq(pick_keyed(
                [(mode[s.n] & (row_index == j), j * s.cols + e) for s in self.shapes if e < s.cols
                 for j in range(s.rows_per_word)], lambda byte: word[byte]))
        # A bias word is kept (`collect`), or completes the bias with the word itself (`complete`); a tile word
        # is read once its last row is taken (`word_done`).
        collect = self.words.valid & tag.bias & ~tag.bias_last
        complete = self.words.valid & tag.bias & tag.bias_last
        row_taken = self.w.valid & self.w.ready
        word_done = row_taken & (row_index == self.per_split(mode, "rows_per_word") - 1)
        m.d.comb += [ntile_fifo.w_en.eq(complete),
                     self.words.ready.eq((complete & ntile_fifo.w_rdy) | collect | word_done)]
        with m.If(complete & ntile_fifo.w_rdy):
            m.d.sync += bias_index.eq(0)
        with m.If(collect):
            m.d.sync += bias_index.eq(bias_index + 1)
        for k, slot in enumerate(bias_slots):
            with m.If(collect & (bias_index == k)):
                m.d.sync += slot.eq(word.as_value())
        with m.If(word_done):
            m.d.sync += row_index.eq(0)
        with m.Elif(row_taken):
            m.d.sync += row_index.eq(row_index + 1)
        return m


class Feeder(_LaneUnit):
    """LAYER commands, item side: for every n-tile, k-tile and item, the item's activation word read from the
    activation memory into the array, tagged for accumulation and output.

    Members
    -------
    cmd : In(stream.Signature(MLPCommand))
    inputs_done, layers_done : In(8)
        For the commands' ``wait_inputs`` and ``wait_layers``.
    act_r : Out(read_signature(...))
        The lane's read port of the activation memory.
    x : Out(stream.Signature(x_layout(rows, tag)))
        Items, to the array.
    """

    #: Depth of the feed FIFO, which takes the reads in flight.
    FEED_FIFO = 8

    def __init__(self, geometry, lane, *, act_addr_width):
        rows = geometry.lane_rows(lane)
        super().__init__(geometry, lane, {
            "cmd": In(stream.Signature(MLPCommand)),
            "inputs_done": In(WAIT_BITS), "layers_done": In(WAIT_BITS),
            "act_r": Out(read_signature(act_addr_width, signed(ACT_BITS), rows)),
            "x": Out(stream.Signature(x_layout(rows, geometry.tag_layout())))})

    def elaborate(self, platform):
        m = Module()
        tag_layout = self.geometry.tag_layout()
        m.submodules.feed_fifo = feed_fifo = SyncFIFO(width=self.rows * ACT_BITS + tag_layout.size,
                                                      depth=self.FEED_FIFO)
        # Words read or being read and not yet taken by the array (the feed FIFO's level, counted ahead).
        m.submodules.credits = credits = CreditCounter(self.FEED_FIFO, registered=False)
        m.submodules.nest = nest = CounterNest(("items", "ktiles", "ntiles"))
        head = self.cmd.payload
        start = (~nest.running & self.cmd.valid & satisfied(self.inputs_done, head.wait_inputs)
                 & satisfied(self.layers_done, head.wait_layers))
        cmd = _latch_command(m, self.cmd, start, "feed")
        row = Signal(ADDR_BITS)  # in_base + k-tile * stride
        issue = Signal()
        tag = Signal(tag_layout)
        m.d.comb += [
            nest.start.eq(start), nest.limit.items.eq(head.items), nest.limit.ktiles.eq(head.ktiles),
            nest.limit.ntiles.eq(head.ntiles), nest.step.eq(issue),
            issue.eq(nest.running & credits.room),
            credits.take.eq(issue), credits.give.eq(feed_fifo.r_en & feed_fifo.r_rdy),
            self.act_r.en.eq(issue),
            self.act_r.addr.eq(row + nest.count.items),
            tag.acc.eq(cmd.acc_base + nest.count.items),
            tag.item.eq(nest.count.items),
            tag.first.eq(nest.count.ktiles == 0),
            tag.final.eq(nest.last.ktiles),
            tag.end.eq(nest.last.items),
            # A read's valid flag and tag follow it through the activation memory.
            feed_fifo.w_en.eq(shift_register(m, issue, LaneMemory.READ_LATENCY, name="d_inflight", first=0,
                                             shape=1)[-1]),
            feed_fifo.w_data.eq(Cat(self.act_r.data, shift_register(m, tag, LaneMemory.READ_LATENCY, name="d_tag",
                                                                    first=0, shape=tag_layout, reset_less=True)[-1])),
        ]
        with m.If(start):
            m.d.sync += row.eq(head.in_base)
        with m.Elif(nest.wrap.ktiles):
            m.d.sync += row.eq(cmd.in_base)
        with m.Elif(nest.wrap.items):
            m.d.sync += row.eq(row + cmd.stride)
        feed_tag = tag_layout(feed_fifo.r_data[self.rows * ACT_BITS:])
        m.d.comb += [
            self.x.valid.eq(feed_fifo.r_rdy),
            self.x.payload.a.eq(feed_fifo.r_data[:self.rows * ACT_BITS]),
            self.x.payload.last.eq(feed_tag.end),
            self.x.payload.tag.eq(feed_tag),
            feed_fifo.r_en.eq(self.x.ready),
        ]
        return m


class Accumulator(_LaneUnit):
    """The array's results summed across k-tiles in the lane's accumulator memory; each last k-tile's sum into
    the accumulator FIFO.

    The first k-tile writes the accumulator row, later ones add to it. An accepted result is registered (stage
    A), where each column reads the item's row of its accumulator (LUT RAM read asynchronously, one memory per
    column, each addressed by a copy of the row register of its own: one address net to every LUT-RAM cell of
    the lane would cross the lane) into a register; in stage B the sum is formed and written back (or, after
    the last k-tile, sent on). So no cycle holds both the LUT-RAM read and the 32-bit carry chain. An item
    whose row the item ahead of it writes in the same cycle (consecutive k-tiles of a one-item chunk) takes
    that item's sum instead of the memory's stale word (``forward``, decided a cycle ahead into registers), so
    no item ever waits. Accepting needs only a register: the accumulator FIFO's free entries not yet promised
    to a last-k-tile result, counted in credits (one free entry is required for any item, as one may be
    final). In LUT RAM where the device has it: at most 64 rows deep, block RAM would be 512 rows deep and
    mostly empty (and the block RAMs are spoken for by the weight and activation memories and the embedding
    unit).

    Members
    -------
    y : In(stream.Signature(y_layout(cols, tag)))
        Results of the array.
    sums : Out(stream.Signature(StructLayout({acc, tag})))
        The accumulator FIFO's head: final sums with their tags.
    """

    #: Depth of the accumulator FIFO: it holds a burst of last-k-tile results while the post-processors take
    #: them in beats (two per result on a quarter of the small array), so the array keeps running into the
    #: next n-tile.
    ACC_FIFO = 16

    def __init__(self, geometry, lane):
        cols, tag = geometry.lane_cols(lane), geometry.tag_layout()
        super().__init__(geometry, lane, {
            "y": In(stream.Signature(y_layout(cols, tag))),
            "sums": Out(stream.Signature(data.StructLayout({"acc": data.ArrayLayout(signed(ACC_BITS), cols),
                                                            "tag": tag})))})

    def elaborate(self, platform):
        m = Module()
        cols, tag_layout = self.cols, self.geometry.tag_layout()
        lut_ram = not isinstance(platform, SiliconBluePlatform)  # the iCE40 has none
        # Cut by column (each goes to its own post-processor), the tag in a slice of its own.
        m.submodules.acc_fifo = acc_fifo = Queue([ACC_BITS] * cols + [tag_layout.size], depth=self.ACC_FIFO)
        _fifo_stream(m, acc_fifo, self.sums)
        m.submodules.credits = credits = CreditCounter(self.ACC_FIFO)
        a_valid, b_valid = Signal(), Signal()
        a_psum = Signal(data.ArrayLayout(signed(ACC_BITS), cols), reset_less=True)
        b_psum = Signal(data.ArrayLayout(signed(ACC_BITS), cols), reset_less=True)
        a_tag, b_tag = Signal(tag_layout, reset_less=True), Signal(tag_layout, reset_less=True)
        fire = self.y.valid & self.y.ready
        m.d.comb += [
            self.y.ready.eq(credits.room),
            credits.take.eq(fire & self.y.payload.tag.final),
            credits.give.eq(acc_fifo.r_en & acc_fifo.r_rdy),
        ]
        m.d.sync += [a_valid.eq(fire), a_psum.eq(self.y.payload.psum), a_tag.eq(self.y.payload.tag),
                     b_valid.eq(a_valid), b_psum.eq(a_psum), b_tag.eq(a_tag)]
        # Next cycle the item now in A is in B, and writes its row unless final; the item arriving reads that row.
        forward_next = a_valid & ~a_tag.final & (a_tag.acc == self.y.payload.tag.acc)
        total = [Signal(signed(ACC_BITS), name=f"total{c}") for c in range(cols)]
        for c in range(cols):
            acc_mem = Memory(shape=signed(ACC_BITS), depth=self.geometry.lane_acc_rows(self.lane), init=[],
                             attrs={"ram_style": "distributed"} if lut_ram else None)
            m.submodules[f"acc_mem{c}"] = acc_mem
            acc_w, acc_r = acc_mem.write_port(), acc_mem.read_port(domain="comb")
            read_row = replica(m, self.y.payload.tag.acc, name=f"acc_row{c}", reset_less=True)  # == a_tag.acc
            first = replica(m, self.y.payload.tag.first, name=f"acc_first{c}", reset_less=True)  # == a_tag.first
            write_row = replica(m, a_tag.acc, name=f"acc_wrow{c}", reset_less=True)  # == b_tag.acc
            writes = replica(m, a_valid & ~a_tag.final, name=f"acc_write{c}",  # == b_valid & ~b_tag.final
                             reset_less=True)  # a write during a reset goes to a row whose first k-tile overwrites it
            forward = replica(m, forward_next, name=f"acc_forward{c}", reset_less=True)
            # What the item in B adds to: zero on its first k-tile, decided in A, so that no flag lies on the
            # path through the carry chain.
            previous = Signal(signed(ACC_BITS), name=f"acc_prev{c}", reset_less=True)
            m.d.sync += previous.eq(Mux(first, 0, Mux(forward, total[c], acc_r.data)))
            m.d.comb += [
                acc_r.addr.eq(read_row),
                total[c].eq(b_psum[c] + previous),
                acc_w.addr.eq(write_row),
                acc_w.data.eq(total[c]),
                acc_w.en.eq(writes),
            ]
        m.d.comb += [
            acc_fifo.w_en.eq(b_valid & b_tag.final),
            acc_fifo.w_data.eq(Cat(*total, b_tag)),
        ]
        return m


class BeatIssuer(_LaneUnit):
    """Each final sum in beats over the lane's post-processors, with its n-tile's bias and parameters; the
    post-processors' results into the result FIFO, each result's destination into the result-tag FIFO.

    The post-processors never stall: a beat is issued only when the result FIFO has room for every beat in
    flight, counted in credits with the decision in a register. The result tags need no check of their own: a
    result's tag lives from the issue of its last beat to the writer taking that beat, so there are never more
    tags than beats holding credits. The beat leaves the lane in a register (the post-processors may lie across
    the die), one cycle later.

    Members
    -------
    sums : In(stream.Signature(...))
        The accumulator's final sums.
    ntiles : In(stream.Signature(...))
        The unpacker's n-tile FIFO.
    pp_i : Out(stream.Signature(beat layout))
    pp_o : In(stream.Signature(data.ArrayLayout(signed(32), postprocs)))
        To and from the lane's post-processors (their ``ready`` is ignored: they never stall).
    results : Out(stream.Signature(data.ArrayLayout(signed(32), postprocs)))
        The result FIFO's head (one beat).
    tags : Out(stream.Signature(out tag layout))
        The result-tag FIFO's head (a register, ``SyncFIFOBuffered``): one per result, with its last beat.
    """

    #: Depth of the result and result-tag FIFOs.
    RESULT_FIFO = 16

    def __init__(self, geometry, lane):
        rows, cols, postprocs, tag = (geometry.lane_rows(lane), geometry.lane_cols(lane),
                                      geometry.lane_postprocs(lane), geometry.tag_layout())
        results = data.ArrayLayout(signed(ACC_BITS), postprocs)
        super().__init__(geometry, lane, {
            "sums": In(stream.Signature(data.StructLayout({"acc": data.ArrayLayout(signed(ACC_BITS), cols),
                                                           "tag": tag}))),
            "ntiles": In(stream.Signature(_ntile_layout(rows, cols))),
            "pp_i": Out(stream.Signature(_beat_layout(postprocs))),
            "pp_o": In(stream.Signature(results)),
            "results": Out(stream.Signature(results)),
            "tags": Out(stream.Signature(_out_tag_layout(rows)))})

    def elaborate(self, platform):
        m = Module()
        mode = self.decode(m, "beat")
        out_layout = _out_tag_layout(self.rows)
        m.submodules.out_tags = out_tags = SyncFIFOBuffered(width=out_layout.size, depth=self.RESULT_FIFO)
        m.submodules.result_fifo = result_fifo = SyncFIFO(width=self.postprocs * ACC_BITS, depth=self.RESULT_FIFO)
        _fifo_stream(m, out_tags, self.tags)
        _fifo_stream(m, result_fifo, self.results)
        m.submodules.credits = credits = CreditCounter(self.RESULT_FIFO)
        acc, acc_tag, ntile = self.sums.payload.acc, self.sums.payload.tag, self.ntiles.payload
        beat = Signal(range(max(s.beats for s in self.shapes)))
        beat_next = Signal.like(beat)
        issue = Signal()
        out_tag = Signal(out_layout)
        pp_valid = Signal()
        pp_beat = Signal(self.pp_i.payload.shape(), reset_less=True)
        m.d.sync += [pp_valid.eq(issue), pp_beat.params.eq(ntile.params), beat.eq(beat_next)]
        m.d.comb += [
            issue.eq(self.sums.valid & self.ntiles.valid & credits.room),
            credits.take.eq(issue), credits.give.eq(result_fifo.r_en & result_fifo.r_rdy),
            self.pp_i.valid.eq(pp_valid),
            self.pp_i.payload.eq(pp_beat),
            out_tag.addr.eq(ntile.out_row + acc_tag.item),
            out_tag.off.eq(ntile.out_off),
            out_tag.to_output.eq(ntile.to_output),
            out_tag.layer_done.eq(acc_tag.end & ntile.last_ntile),
            out_tags.w_data.eq(out_tag),
            self.pp_o.ready.eq(1),
            result_fifo.w_en.eq(self.pp_o.valid),
            result_fifo.w_data.eq(self.pp_o.payload),
        ]
        for e in range(self.postprocs):
            # Each element's multiplexers (next to its post-processor, which may lie across the die from the
            # others) take the split and the beat from copies of their own: the beat's as a register of the
            # counter's next value, equal to it in every cycle.
            element_mode = self.decode(m, f"beat{e}")
            element_beat = replica(m, beat_next, name=f"beat{e}")
            choices = [(element_mode[s.n] & (element_beat == b), b * s.postprocs + e)
                       for s in self.shapes if e < s.postprocs for b in range(s.beats)]
            m.d.sync += [
                pp_beat.acc[e].eq(pick_keyed(choices, lambda i: acc[i])),
                pp_beat.bias[e].eq(pick_keyed(choices, lambda i: ntile.bias[i])),
            ]
        m.d.comb += beat_next.eq(beat)
        with m.If(issue & (beat == self.per_split(mode, "beats") - 1)):
            m.d.comb += [beat_next.eq(0), self.sums.ready.eq(1), out_tags.w_en.eq(1),
                         self.ntiles.ready.eq(acc_tag.end)]
        with m.Elif(issue):
            m.d.comb += beat_next.eq(beat + 1)
        return m


class Writer(_LaneUnit):
    """Collects the beats of each result and writes it: to the activation memory (the low byte of each result,
    at its element offset in the word) through a write-back register, or to the ``out`` stream through an
    output register. A layer completes when its last result is written there (or, for the out stream, taken).

    Members
    -------
    results, tags : In(stream.Signature(...))
        The beat issuer's result and result-tag FIFOs.
    out : Out(stream.Signature(data.ArrayLayout(signed(32), cols)))
    wb : Out(write_signature(...)), wb_valid : Out(1)
        The write-back register, for the activation memory's write port (which it has before the loader).
    layers_done : Out(8)
        LAYER commands completed (modulo 256).
    """

    def __init__(self, geometry, lane, *, act_addr_width):
        rows, cols, postprocs = geometry.lane_rows(lane), geometry.lane_cols(lane), geometry.lane_postprocs(lane)
        super().__init__(geometry, lane, {
            "results": In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), postprocs))),
            "tags": In(stream.Signature(_out_tag_layout(rows))),
            "out": Out(stream.Signature(data.ArrayLayout(signed(ACC_BITS), cols))),
            "wb": Out(write_signature(act_addr_width, signed(ACT_BITS), rows)),
            "wb_valid": Out(1),
            "layers_done": Out(WAIT_BITS)})

    def elaborate(self, platform):
        m = Module()
        mode = self.decode(m, "write")
        tag = self.tags.payload
        take, last_beat = Signal(), Signal()
        vector = self._collect(m, mode, take, last_beat)
        out_valid = Signal()
        out_data = Signal(data.ArrayLayout(signed(ACC_BITS), self.cols), reset_less=True)
        writes = Signal()
        m.d.comb += [
            take.eq(self.results.valid & (~last_beat | ~tag.to_output | ~out_valid | self.out.ready)),
            writes.eq(take & last_beat & ~tag.to_output),
            self.results.ready.eq(take),
            self.tags.ready.eq(take & last_beat),
            self.out.valid.eq(out_valid),
            self.out.payload.eq(out_data),
        ]
        # The output register loads whenever it is free, so the enable of its cols x 32 flip-flops depends on
        # out_valid and out.ready only, not on the FIFOs' heads; out_valid says whether what it loaded is a result.
        with m.If(~out_valid | self.out.ready):
            m.d.sync += [out_valid.eq(take & last_beat & tag.to_output), out_data.eq(vector)]
        self._write_back(m, mode, vector, writes, take & last_beat & tag.to_output & tag.layer_done)
        return m

    def _collect(self, m, mode, take, last_beat):
        """The result vector whose last beat is at the head of the result FIFO: element ``c`` comes in beat
        ``c // postprocs`` from post-processor ``c % postprocs``, from the head for the last beat (``last_beat``),
        from a register that kept an earlier beat when it was taken (``take``) otherwise."""
        head = self.results.payload
        beats = max(s.beats for s in self.shapes)
        beat = Signal(range(beats), name="out_beat")
        partial = [Signal(head.shape(), name=f"partial{b}", reset_less=True) for b in range(beats - 1)]
        m.d.comb += last_beat.eq(beat == self.per_split(mode, "beats") - 1)
        with m.If(take & last_beat):
            m.d.sync += beat.eq(0)
        with m.Elif(take):
            m.d.sync += beat.eq(beat + 1)
        for b, reg in enumerate(partial):
            with m.If(take & ~last_beat & (beat == b)):
                m.d.sync += reg.eq(head)
        vector = Signal(data.ArrayLayout(signed(ACC_BITS), self.cols))
        for c in range(self.cols):
            sources = [(mode[s.n], ("head", e) if beat_of == s.beats - 1 else (beat_of, e))
                       for s in self.shapes if c < s.cols for beat_of, e in [divmod(c, s.postprocs)]]
            m.d.comb += vector[c].eq(pick_keyed(
                sources, lambda key: head[key[1]] if key[0] == "head" else partial[key[0]][key[1]]))
        return vector

    def _write_back(self, m, mode, vector, writes, out_done):
        """The write-back register: a result at its element offset in the word, the other elements disabled,
        loaded when the writer ``writes``; and the count of completed layers."""
        tag = self.tags.payload
        wb = Signal(data.StructLayout({"addr": len(self.wb.addr), "en": len(self.wb.en),
                                       "data": self.wb.data.shape()}), name="wb", reset_less=True)
        wb_valid, wb_done, out_done_q = Signal(name="wb_valid"), Signal(name="wb_done"), Signal(name="out_done")
        m.d.sync += [wb_valid.eq(writes), wb_done.eq(writes & tag.layer_done), out_done_q.eq(out_done),
                     self.layers_done.eq(self.layers_done + wb_done + out_done_q)]
        mask = pick([(mode[s.n], (1 << s.cols) - 1) for s in self.shapes])
        with m.If(writes):
            m.d.sync += [
                wb.addr.eq(tag.addr),
                wb.en.eq(mask << tag.off),
                wb.data.eq(Cat(pick_keyed([(mode[s.n], p % s.cols) for s in self.shapes],
                                          lambda c: vector[c][:ACT_BITS]) for p in range(self.rows))),
            ]
        m.d.comb += [self.wb_valid.eq(wb_valid), self.wb.addr.eq(wb.addr), self.wb.en.eq(wb.en),
                     self.wb.data.eq(wb.data)]


class MLPLane(wiring.Component):
    """The units of one lane (see the module documentation), joined by streams; built by :class:`MLPEngine`.

    Parameters
    ----------
    geometry : EngineGeometry
    lane : int
    act_addr_width : int
        Address width of the lane's ports of the activation memory.
    """

    def __init__(self, geometry, lane, *, act_addr_width):
        self.geometry = g = geometry
        self.lane = lane
        self.act_addr_width = act_addr_width
        rows, cols, postprocs = g.lane_rows(lane), g.lane_cols(lane), g.lane_postprocs(lane)
        tag = g.tag_layout()
        super().__init__({
            "split": In(range(g.lanes + 1)),
            "cmd": In(stream.Signature(MLPCommand)),
            "act": In(stream.Signature(data.ArrayLayout(signed(ACT_BITS), rows))),
            "out": Out(stream.Signature(data.ArrayLayout(signed(ACC_BITS), cols))),
            "x": Out(stream.Signature(x_layout(rows, tag))),
            "w": Out(stream.Signature(data.ArrayLayout(signed(ACT_BITS), cols))),
            "y": In(stream.Signature(y_layout(cols, tag))),
            "wreq": Out(stream.Signature(unsigned(ADDR_BITS))),
            "wresp": In(data.ArrayLayout(signed(ACT_BITS), g.word_bytes)),
            "wresp_valid": In(1),
            "act_r": Out(read_signature(act_addr_width, signed(ACT_BITS), rows)),
            "act_w": Out(write_signature(act_addr_width, signed(ACT_BITS), rows)),
            "pp_i": Out(stream.Signature(_beat_layout(postprocs))),
            "pp_o": In(stream.Signature(data.ArrayLayout(signed(ACC_BITS), postprocs))),
            "idle": Out(1),
            "inputs_done": Out(WAIT_BITS),
            "layers_done": Out(WAIT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        g, lane, width = self.geometry, self.lane, self.act_addr_width
        m.submodules.dispatcher = dispatcher = Dispatcher(g, lane)
        m.submodules.loader = loader = Loader(g, lane, act_addr_width=width)
        m.submodules.fetcher = fetcher = Fetcher(g, lane)
        m.submodules.unpacker = unpacker = Unpacker(g, lane)
        m.submodules.feeder = feeder = Feeder(g, lane, act_addr_width=width)
        m.submodules.accumulator = accumulator = Accumulator(g, lane)
        m.submodules.issuer = issuer = BeatIssuer(g, lane)
        m.submodules.writer = writer = Writer(g, lane, act_addr_width=width)
        for unit in (dispatcher, loader, fetcher, unpacker, feeder, accumulator, issuer, writer):
            m.d.comb += unit.split.eq(self.split)
        for source, sink in [
            (wiring.flipped(self.cmd), dispatcher.cmd), (dispatcher.load, loader.cmd),
            (dispatcher.fetch, fetcher.cmd), (dispatcher.feed, feeder.cmd),
            (wiring.flipped(self.act), loader.act),
            (fetcher.wreq, wiring.flipped(self.wreq)), (fetcher.words, unpacker.words),
            (unpacker.w, wiring.flipped(self.w)), (unpacker.ntiles, issuer.ntiles),
            (feeder.act_r, wiring.flipped(self.act_r)), (feeder.x, wiring.flipped(self.x)),
            (wiring.flipped(self.y), accumulator.y), (accumulator.sums, issuer.sums),
            (issuer.pp_i, wiring.flipped(self.pp_i)), (wiring.flipped(self.pp_o), issuer.pp_o),
            (issuer.results, writer.results), (issuer.tags, writer.tags),
            (writer.out, wiring.flipped(self.out)),
        ]:
            wiring.connect(m, source, sink)
        m.d.comb += [
            fetcher.wresp.eq(self.wresp), fetcher.wresp_valid.eq(self.wresp_valid),
            loader.hold.eq(writer.wb_valid),
            loader.layers_done.eq(writer.layers_done),
            feeder.inputs_done.eq(loader.inputs_done), feeder.layers_done.eq(writer.layers_done),
            self.inputs_done.eq(loader.inputs_done), self.layers_done.eq(writer.layers_done),
            self.idle.eq((loader.inputs_done == dispatcher.inputs_sent)
                         & (writer.layers_done == dispatcher.layers_sent)),
        ]
        # The activation memory's write port: the writer's write-back register, else the loader's word (the
        # loader yields to a register, not to the writer's decision).
        with m.If(writer.wb_valid):
            m.d.comb += [self.act_w.addr.eq(writer.wb.addr), self.act_w.en.eq(writer.wb.en),
                         self.act_w.data.eq(writer.wb.data)]
        with m.Else():
            m.d.comb += [self.act_w.addr.eq(loader.write.addr), self.act_w.en.eq(loader.write.en),
                         self.act_w.data.eq(loader.write.data)]
        return m


class MLPEngine(wiring.Component):
    """The MLP engine: systolic array, weight/activation/accumulator buffers, post-processors, one lane per slot.

    See the module documentation for the commands, the buffers and the weight layout.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig

    Members
    -------
    split : In(range(lanes + 1))
        Number of sub-arrays (lanes); change it only while every lane is ``idle``.
    wload : In(stream.Signature({addr, data}))
        Writes one weight memory word (``array_cols`` int8) per transfer.
    cmd<l> : In(stream.Signature(MLPCommand))
        Commands of lane ``l``.
    act<l> : In(stream.Signature(data.ArrayLayout(signed(8), rows)))
        Input words of lane ``l`` (for its INPUT commands).
    out<l> : Out(stream.Signature(data.ArrayLayout(signed(32), cols)))
        Results of lane ``l``'s output layers.
    idle : Out(lanes)
        Lane ``l`` has completed every command it accepted.
    layers_done : Out(8).array(lanes)
        LAYER commands lane ``l`` has completed (modulo 256; what a weight loader waits on before it overwrites a
        layer's weights).
    """

    def __init__(self, config):
        self.config = config
        try:
            self.geometry = EngineGeometry(config)
        except Exception:
            self._MustUse__silence = True  # never built: no "created but never used" warning on top of the error
            raise
        super().__init__(self.members(self.geometry))

    @staticmethod
    def members(geometry):
        """The signature members of an engine of ``geometry`` (for wrappers that mirror its ports)."""
        g = geometry
        members = {
            "split": In(range(g.lanes + 1)),
            "wload": In(stream.Signature(wload_layout(g))),
            "idle": Out(g.lanes),
            "layers_done": Out(WAIT_BITS).array(g.lanes),
        }
        for lane in range(g.lanes):
            members[f"cmd{lane}"] = In(stream.Signature(MLPCommand))
            members[f"act{lane}"] = In(stream.Signature(data.ArrayLayout(signed(ACT_BITS), g.lane_rows(lane))))
            members[f"out{lane}"] = Out(stream.Signature(data.ArrayLayout(signed(ACC_BITS), g.lane_cols(lane))))
        return members

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        # The lanes, the activation memory and the post-processor routing each decode `split` into registers
        # of their own (rpaccel.rtl.lib.select.split_modes): all follow a change one cycle later. The array
        # registers its input before it compares or decodes it (so it follows a cycle later too).
        m.submodules.array = array = SystolicArray(self.config, tag_shape=g.tag_layout())
        m.submodules.act_mem = act_mem = g.act_memory()
        m.d.comb += [array.split.eq(self.split), act_mem.split.eq(self.split)]
        lanes = []
        for lane in range(g.lanes):
            unit, slices = self._lane(m, lane, array, act_mem)
            m.d.comb += [self.idle[lane].eq(unit.idle & Cat(s.idle for s in slices).all()),
                         self.layers_done[lane].eq(unit.layers_done)]
            lanes.append(unit)
        self._weight_memory(m, lanes)
        self._postprocessors(m, lanes)
        return m

    def _lane(self, m, lane, array, act_mem):
        """Lane ``lane`` and the register slices between it and the array; returns both.

        Two register slices in a row on each of the item, weight and result streams (the lanes and the array
        span the die apart on the ECP5), so no combinational path runs between them (the array's clock enables
        see the result slice's registered ready; the lane's accumulator addresses come from the slice's
        registers), and each side's handshake logic meets a slice of its own that the placer can put next to it
        (with one slice, one of the two sides' `ready` crossed the distance through logic). A FIFO of LUT RAM on
        the results was tried: its read address had to reach storage cells the placer spread between the array
        and the lane (13.9 ns of routing).
        """
        unit = MLPLane(self.geometry, lane, act_addr_width=act_mem.addr_width(lane))
        m.submodules[f"lane{lane}"] = unit
        m.d.comb += unit.split.eq(self.split)
        wiring.connect(m, wiring.flipped(getattr(self, f"cmd{lane}")), unit.cmd)
        wiring.connect(m, wiring.flipped(getattr(self, f"act{lane}")), unit.act)
        wiring.connect(m, unit.out, wiring.flipped(getattr(self, f"out{lane}")))
        wiring.connect(m, unit.act_r, getattr(act_mem, f"read{lane}"))
        wiring.connect(m, unit.act_w, getattr(act_mem, f"write{lane}"))
        slices = []
        for name, source, sink in (("x", unit.x, array.port("x", lane)), ("w", unit.w, array.port("w", lane)),
                                   ("y", array.port("y", lane), unit.y)):
            near_source, near_sink = RegisterSlice(source.payload.shape()), RegisterSlice(source.payload.shape())
            m.submodules[f"{name}_slice{lane}"], m.submodules[f"{name}_slice{lane}b"] = near_source, near_sink
            wiring.connect(m, source, near_source.i)
            wiring.connect(m, near_source.o, near_sink.i)
            wiring.connect(m, near_sink.o, sink)
            slices += [near_source, near_sink]
        return unit, slices

    def _weight_memory(self, m, lanes):
        """The weight memory: written by the host, read by the lanes' fetchers in round-robin order.

        Its 96 block RAMs (on the small preset) lie across the die: the write port is registered here and again
        in a copy per row of blocks inside the memory, the read address likewise. The request granted in cycle
        t: its address is registered (t + 1), the memory answers five cycles later (t + 6), and its data are
        registered (t + 7, WRESP_LATENCY), when the lane takes them.
        """
        g = self.geometry
        weights = RegisteredRAM(width=g.word_bytes * ACT_BITS, depth=g.weight_words, row_registers=True)
        m.submodules.weights = weights
        m.d.sync += [
            weights.w_en.eq(self.wload.valid),
            weights.w_addr.eq(self.wload.payload.addr),
            weights.w_data.eq(self.wload.payload.data),
        ]
        m.d.comb += self.wload.ready.eq(1)
        grant = _round_robin(m, [unit.wreq.valid for unit in lanes])
        fire = Cat(unit.wreq.valid & grant[k] for k, unit in enumerate(lanes))
        read_addr = Signal.like(weights.r_addr)
        resp = Signal.like(weights.r_data, reset_less=True)
        assert 1 + weights.latency + 1 == WRESP_LATENCY
        resp_to = shift_register(m, fire, WRESP_LATENCY, name="resp_to", first=0, shape=g.lanes)[-1]
        m.d.sync += [read_addr.eq(pick([(grant[k], unit.wreq.payload) for k, unit in enumerate(lanes)])),
                     resp.eq(weights.r_data)]
        m.d.comb += weights.r_addr.eq(read_addr)
        for k, unit in enumerate(lanes):
            m.d.comb += [unit.wreq.ready.eq(grant[k]), unit.wresp.eq(resp), unit.wresp_valid.eq(resp_to[k])]

    def _postprocessors(self, m, lanes):
        """One post-processor per array column; in split n, lane l owns processors l * cols/n .. + cols/n.

        They never stall (the lanes count the beats in flight), so a register on each side of them, after the
        routing multiplexers, costs nothing but two cycles of latency and keeps the lanes' FIFOs and the
        post-processors' adders out of each other's paths.
        """
        g = self.geometry
        postprocs = [PostProcessor() for _ in range(self.config.array_cols)]
        for p, unit in enumerate(postprocs):
            m.submodules[f"postproc{p}"] = unit
            mode = split_modes(m, self.split, g.splits, name=f"postproc{p}")
            owners = [(mode[n], divmod(p, s.postprocs)) for n, s in g.splits.items()]  # (lane, its element)
            lane_of = [(c, key[0]) for c, key in owners]
            valid = Signal(name=f"pp_in_valid{p}")
            payload = Signal.like(unit.i.payload, name=f"pp_in{p}", reset_less=True)
            m.d.sync += [
                valid.eq(pick_keyed(lane_of, lambda k: lanes[k].pp_i.valid)),
                payload.acc.eq(pick_keyed(owners, lambda key: lanes[key[0]].pp_i.payload.acc[key[1]])),
                payload.bias.eq(pick_keyed(owners, lambda key: lanes[key[0]].pp_i.payload.bias[key[1]])),
                payload.params.eq(pick_keyed(lane_of, lambda k: lanes[k].pp_i.payload.params)),
            ]
            m.d.comb += [unit.i.valid.eq(valid), unit.i.payload.eq(payload), unit.o.ready.eq(1)]
        for k, lane in enumerate(lanes):
            mode = split_modes(m, self.split, g.splits, name=f"pp_route{k}")
            groups = [(mode[n], k * s.postprocs, s.postprocs) for n, s in g.splits.items() if k < n]
            valid = Signal(name=f"pp_out_valid{k}")
            payload = Signal.like(lane.pp_o.payload, name=f"pp_out{k}", reset_less=True)
            m.d.sync += valid.eq(pick_keyed([(c, first) for c, first, _ in groups],
                                            lambda first: postprocs[first].o.valid))
            for e in range(g.lane_postprocs(k)):
                m.d.sync += payload[e].eq(pick_keyed([(c, first + e) for c, first, count in groups if e < count],
                                                     lambda p: postprocs[p].o.payload))
            m.d.comb += [lane.pp_i.ready.eq(1), lane.pp_o.valid.eq(valid), lane.pp_o.payload.eq(payload)]


def _round_robin(m, requests):
    """Round-robin arbitration with a registered grant: returns ``grant``, a one-hot register naming the
    requester that may go this cycle (its request fires if it is still valid), chosen in the previous cycle from
    the requests then and the requester after the last grant, so no path runs from one requester's request
    through the arbiter into another's counters. A requester alone is granted every cycle; a grant whose request
    has just ended is wasted."""
    count = len(requests)
    grant, grant_next = Signal(count, name="grant"), Signal(count, name="grant_next")
    pointer = Signal(range(count), name="pointer")
    for start in range(count):
        with m.If(pointer == start):  # the first requester from `start` on
            m.d.comb += grant_next.eq(pick([(requests[(start + j) % count], 1 << (start + j) % count)
                                            for j in range(count)]))
    m.d.sync += grant.eq(grant_next)
    for k in range(count):
        with m.If(grant_next[k]):
            m.d.sync += pointer.eq((k + 1) % count)
    return grant
