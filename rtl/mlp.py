"""MLP engine: the reconfigurable systolic array with weight, activation and accumulator buffers and
post-processing, running whole multi-layer perceptrons from on-chip buffers.

Structure (one *lane* per slot of the array; in split ``n`` lanes ``0 .. n-1`` work, each on its own
sub-array)::

    wload ──> weight memory ──(round-robin reads)──> lane fetchers ──> array w<l>   (tile rows)
                                                                  └──> n-tile FIFO   (bias, params, destination)
    cmd<l> ──> dispatcher ──> loader  : act<l> stream ──────────────> activation memory (lane slices)
                          ├─> fetcher : weight words of each layer, in program order
                          └─> feeder  : activation memory ──> array x<l> ──> array y<l>
                                        ──> accumulate (accumulator memory, across k-tiles)
                                        ──> post-processors (bias, requantise, ReLU or raw; shared by lanes)
                                        ──> activation memory (next layer's input) or out<l> stream

A lane executes a stream of commands (:class:`MLPCommand`):

* ``INPUT``: take ``items * ktiles`` words from the lane's ``act`` stream and store word ``j`` of item ``i`` at
  ``in_base + j * stride + i`` (the stream gives all items' word 0, then all items' word 1, ...).
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
from itertools import pairwise

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
from .lib.queue import Queue as SlicedFIFO
from .lib.select import pick, pick_keyed, replica, split_modes
from .lib.slice import RegisterSlice
from .memory import RegisteredRAM
from .postproc import PostProcessor, RequantParams

__all__ = ["ADDR_BITS", "COUNT_BITS", "WAIT_BITS", "EngineGeometry", "MLPCommand", "MLPEngine", "MLPLane", "Op",
           "SplitShape", "wload_layout"]

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



def _take_command(m, fifo, start, name):
    """The command at the head of ``fifo``, taken off it in the cycle ``start`` is high and held in registers,
    with its counts less one precomputed: a sequencer then compares registers with registers, not the FIFO's
    LUT RAM output through a subtractor."""
    head = MLPCommand(fifo.r_data)
    cmd = Signal(MLPCommand, name=f"{name}_cmd", reset_less=True)
    last = {field: Signal(COUNT_BITS, name=f"{name}_last_{field}", reset_less=True)
            for field in ("items", "ktiles", "ntiles")}
    m.d.comb += fifo.r_en.eq(start)
    with m.If(start):
        m.d.sync += [cmd.eq(head), *(reg.eq(getattr(head, field) - 1) for field, reg in last.items())]
    return head, cmd, last


def _satisfied(done, wait):
    """``done`` has reached ``wait`` (modulo 2**WAIT_BITS, within half the range)."""
    return ~(done - wait)[WAIT_BITS - 1]


def _beat_layout(postprocs):
    return data.StructLayout({"acc": data.ArrayLayout(signed(ACC_BITS), postprocs),
                              "bias": data.ArrayLayout(signed(ACC_BITS), postprocs),
                              "params": RequantParams})


class MLPLane(wiring.Component):
    """The sequencers and datapath of one lane (see the module documentation); built by :class:`MLPEngine`.

    Parameters
    ----------
    geometry : EngineGeometry
    lane : int
    act_addr_width : int
        Address width of the lane's ports of the activation memory.
    """

    #: Depth of the FIFOs between the units. The accumulator FIFO holds a burst of last-k-tile results while the
    #: post-processors take them in beats (two per result on a quarter of the small array), so the array keeps
    #: running into the next n-tile; the word FIFO smooths the lanes' turns at the weight memory. The word and
    #: result-tag FIFOs present their heads from registers (``SyncFIFOBuffered``): the unpacker's multiplexers
    #: and the write-back then start at a flip-flop, not at a LUT RAM's read address. The accumulator and n-tile
    #: FIFOs, whose columns go to post-processors across the die, are cut by column with pointers of their own
    #: (``rtl.pipeline.SlicedFIFO``). (They were tried with registered heads too: the head register's clock
    #: enable, driven by the consumer's decision, became the critical path.)
    WORD_FIFO = 16
    FEED_FIFO = 8
    ACC_FIFO = 16
    NTILE_FIFO = 4
    RESULT_FIFO = 16

    def __init__(self, geometry, lane, *, act_addr_width):
        self.geometry = g = geometry
        self.lane = lane
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
        g = self.geometry
        modes = g.lane_modes(self.lane)
        shapes = [g.splits[n] for n in modes]
        mode = split_modes(m, self.split, modes, name="lane")
        active = Cat(mode.values()).any()

        def const(attr):
            # The value for the split in use, by the lane's current `mode` (each unit below decodes the split
            # into registers of its own, so no decode register fans out across the lane).
            return pick([(mode[s.n], getattr(s, attr)) for s in shapes])

        def decode(unit):
            return split_modes(m, self.split, modes, name=f"{unit}_lane")

        rows, cols = g.lane_rows(self.lane), g.lane_cols(self.lane)
        word_bytes = g.word_bytes
        tag_layout = g.tag_layout()

        inputs_done = Signal(WAIT_BITS)
        layers_done = Signal(WAIT_BITS)
        inputs_sent = Signal(WAIT_BITS)
        layers_sent = Signal(WAIT_BITS)
        m.d.comb += [
            self.inputs_done.eq(inputs_done),
            self.layers_done.eq(layers_done),
            self.idle.eq((inputs_done == inputs_sent) & (layers_done == layers_sent)),
        ]

        # Dispatcher: INPUT commands to the loader, LAYER commands to both the fetcher and the feeder.
        width = MLPCommand.as_shape().size
        m.submodules.load_q = load_q = SyncFIFO(width=width, depth=2)
        m.submodules.fetch_q = fetch_q = SyncFIFO(width=width, depth=2)
        m.submodules.feed_q = feed_q = SyncFIFO(width=width, depth=2)
        is_layer = self.cmd.payload.op == Op.LAYER
        m.d.comb += [
            self.cmd.ready.eq(active & Mux(is_layer, fetch_q.w_rdy & feed_q.w_rdy, load_q.w_rdy)),
            load_q.w_data.eq(self.cmd.payload), fetch_q.w_data.eq(self.cmd.payload),
            feed_q.w_data.eq(self.cmd.payload),
            load_q.w_en.eq(self.cmd.valid & self.cmd.ready & ~is_layer),
            fetch_q.w_en.eq(self.cmd.valid & self.cmd.ready & is_layer),
            feed_q.w_en.eq(self.cmd.valid & self.cmd.ready & is_layer),
        ]
        with m.If(load_q.w_en):
            m.d.sync += inputs_sent.eq(inputs_sent + 1)
        with m.If(fetch_q.w_en):
            m.d.sync += layers_sent.eq(layers_sent + 1)

        # Result writer (defined here, driven below): its write-back register has priority on the activation
        # memory write port, so the loader yields to a register, not to the writer's decision.
        writer_writes = Signal()
        wb_valid = Signal()

        # Loader: INPUT commands, from the act stream into the activation memory.
        loading = Signal()
        ld_item = Signal(COUNT_BITS)
        ld_word = Signal(COUNT_BITS)
        ld_row = Signal(ADDR_BITS)
        act_fire = Signal()
        m.d.comb += [
            self.act.ready.eq(loading & ~wb_valid),
            act_fire.eq(self.act.valid & self.act.ready),
        ]
        ld_start = Signal()
        lc_head, lc, lc_last = _take_command(m, load_q, ld_start, "load")
        m.d.comb += ld_start.eq(~loading & load_q.r_rdy & _satisfied(layers_done, lc_head.wait_layers))
        with m.If(ld_start):
            m.d.sync += [loading.eq(1), ld_item.eq(0), ld_word.eq(0), ld_row.eq(lc_head.in_base)]
        with m.If(act_fire):
            with m.If(ld_item == lc_last["items"]):
                m.d.sync += [ld_item.eq(0), ld_word.eq(ld_word + 1), ld_row.eq(ld_row + lc.stride)]
                with m.If(ld_word == lc_last["ktiles"]):
                    m.d.sync += [loading.eq(0), inputs_done.eq(inputs_done + 1)]
            with m.Else():
                m.d.sync += ld_item.eq(ld_item + 1)

        # Fetcher, request side: the layer's weight words in order, each tagged with what it is.
        word_tag = data.StructLayout({
            "bias": 1, "bias_last": 1, "params": RequantParams, "to_output": 1, "out_row": ADDR_BITS,
            "out_off": range(rows), "last_ntile": 1})
        m.submodules.word_fifo = word_fifo = SyncFIFOBuffered(width=word_bytes * ACT_BITS + word_tag.size,
                                                              depth=self.WORD_FIFO)
        fetching = Signal()
        f_addr = Signal(ADDR_BITS)
        f_nt = Signal(COUNT_BITS)
        f_kt = Signal(COUNT_BITS)
        f_word = Signal(range(max(max(s.tile_words, s.bias_words) for s in shapes) + 1))
        f_tile = Signal()  # 0: bias words of the n-tile, 1: tile words
        f_out_row = Signal(ADDR_BITS)
        f_out_off = Signal(range(rows))
        f_tag = Signal(word_tag)
        # The tag of a request, delayed to meet its word (the weight memory answers WRESP_LATENCY cycles later).
        f_tags = [Signal(word_tag, name=f"f_tag_d{k}", reset_less=True) for k in range(WRESP_LATENCY)]
        # Words requested and not yet read from the word FIFO (in flight or waiting): a register, so that a
        # request never waits on the FIFO's level arithmetic.
        reserved = Signal(range(self.WORD_FIFO + 1))
        mode = decode("fetch")
        bias_words, tile_words = const("bias_words"), const("tile_words")
        lane_rows, lane_cols = const("rows"), const("cols")
        f_start = Signal()
        fc_head, fc, fc_last = _take_command(m, fetch_q, f_start, "fetch")
        m.d.comb += f_start.eq(~fetching & fetch_q.r_rdy)
        m.d.comb += [
            self.wreq.valid.eq(fetching & (reserved != self.WORD_FIFO)),
            self.wreq.payload.eq(f_addr),
            f_tag.bias.eq(~f_tile),
            f_tag.bias_last.eq(~f_tile & (f_word == bias_words - 1)),
            f_tag.params.eq(fc.params),
            f_tag.to_output.eq(fc.to_output),
            f_tag.out_row.eq(f_out_row),
            f_tag.out_off.eq(f_out_off),
            f_tag.last_ntile.eq(f_nt == fc_last["ntiles"]),
            word_fifo.w_en.eq(self.wresp_valid),
            word_fifo.w_data.eq(Cat(self.wresp, f_tags[-1])),
        ]
        wreq_fire = self.wreq.valid & self.wreq.ready
        m.d.sync += [f_tags[0].eq(f_tag), *(later.eq(earlier) for earlier, later in pairwise(f_tags)),
                     reserved.eq(reserved + wreq_fire - (word_fifo.r_en & word_fifo.r_rdy))]
        with m.If(f_start):
            m.d.sync += [fetching.eq(1), f_addr.eq(fc_head.w_base), f_nt.eq(0), f_kt.eq(0), f_word.eq(0),
                         f_tile.eq(0), f_out_row.eq(fc_head.out_base), f_out_off.eq(0)]
        with m.If(wreq_fire):
            m.d.sync += f_addr.eq(f_addr + 1)
            with m.If(~f_tile):
                with m.If(f_word == bias_words - 1):
                    m.d.sync += [f_word.eq(0), f_tile.eq(1)]
                with m.Else():
                    m.d.sync += f_word.eq(f_word + 1)
            with m.Elif(f_word == tile_words - 1):
                m.d.sync += f_word.eq(0)
                with m.If(f_kt == fc_last["ktiles"]):
                    m.d.sync += [f_kt.eq(0), f_tile.eq(0)]
                    with m.If(f_nt == fc_last["ntiles"]):
                        m.d.sync += fetching.eq(0)
                    with m.Else():
                        m.d.sync += f_nt.eq(f_nt + 1)
                        with m.If(f_out_off == lane_rows - lane_cols):
                            m.d.sync += [f_out_off.eq(0), f_out_row.eq(f_out_row + fc.stride)]
                        with m.Else():
                            m.d.sync += f_out_off.eq(f_out_off + lane_cols)
                with m.Else():
                    m.d.sync += f_kt.eq(f_kt + 1)
            with m.Else():
                m.d.sync += f_word.eq(f_word + 1)

        mode = decode("unpack")
        # Fetcher, unpack side: bias words into the n-tile FIFO, tile words into weight rows for the array.
        ntile_layout = data.StructLayout({
            "bias": data.ArrayLayout(signed(ACC_BITS), cols), "params": RequantParams, "to_output": 1,
            "out_row": ADDR_BITS, "out_off": range(rows), "last_ntile": 1})
        # Cut by bias element (each goes to its own post-processor), the rest in a slice of its own.
        m.submodules.ntile_fifo = ntile_fifo = SlicedFIFO([ACC_BITS] * cols + [ntile_layout.size - cols * ACC_BITS],
                                                          depth=self.NTILE_FIFO)
        word = data.ArrayLayout(signed(ACT_BITS), word_bytes)(word_fifo.r_data[:word_bytes * ACT_BITS])
        wtag = word_tag(word_fifo.r_data[word_bytes * ACT_BITS:])
        max_bias_words = max(s.bias_words for s in shapes)
        bias_slots = [Signal(word_bytes * ACT_BITS, name=f"bias_word{k}", reset_less=True)
                      for k in range(max_bias_words - 1)]
        bias_index = Signal(range(max_bias_words))
        row_index = Signal(range(max(s.rows_per_word for s in shapes)))
        ntile_in = Signal(ntile_layout)
        m.d.comb += [
            ntile_in.bias.eq(pick([(mode[s.n], Cat(*bias_slots[:s.bias_words - 1], word.as_value()))
                                    for s in shapes])),
            ntile_in.params.eq(wtag.params), ntile_in.to_output.eq(wtag.to_output),
            ntile_in.out_row.eq(wtag.out_row), ntile_in.out_off.eq(wtag.out_off),
            ntile_in.last_ntile.eq(wtag.last_ntile),
            ntile_fifo.w_data.eq(ntile_in),
            self.w.valid.eq(word_fifo.r_rdy & ~wtag.bias),
        ]
        for e in range(cols):
            # Weight e of the row comes from byte row_index * cols + e of the word.
            m.d.comb += self.w.payload[e].eq(pick_keyed(
                [(mode[s.n] & (row_index == j), j * s.cols + e) for s in shapes if e < s.cols
                 for j in range(s.rows_per_word)], lambda byte: word[byte]))
        with m.If(word_fifo.r_rdy & wtag.bias):
            with m.If(wtag.bias_last):
                m.d.comb += [ntile_fifo.w_en.eq(1), word_fifo.r_en.eq(ntile_fifo.w_rdy)]
                with m.If(ntile_fifo.w_rdy):
                    m.d.sync += bias_index.eq(0)
            with m.Else():
                m.d.comb += word_fifo.r_en.eq(1)
                m.d.sync += bias_index.eq(bias_index + 1)
                for k, slot in enumerate(bias_slots):
                    with m.If(bias_index == k):
                        m.d.sync += slot.eq(word.as_value())
        with m.If(self.w.valid & self.w.ready):
            with m.If(row_index == const("rows_per_word") - 1):
                m.d.sync += row_index.eq(0)
                m.d.comb += word_fifo.r_en.eq(1)
            with m.Else():
                m.d.sync += row_index.eq(row_index + 1)

        # Feeder: LAYER commands, activation words into the array, tagged for accumulation and output.
        m.submodules.feed_fifo = feed_fifo = SyncFIFO(width=rows * ACT_BITS + tag_layout.size,
                                                      depth=self.FEED_FIFO)
        feeding = Signal()
        d_item = Signal(COUNT_BITS)
        d_kt = Signal(COUNT_BITS)
        d_nt = Signal(COUNT_BITS)
        d_row = Signal(ADDR_BITS)
        # Words read or being read and not yet taken by the array (the feed FIFO's level, counted ahead).
        d_reserved = Signal(range(self.FEED_FIFO + 1))
        # A read's valid flag and tag, following it through the activation memory (LaneMemory.READ_LATENCY).
        latency = LaneMemory.READ_LATENCY
        d_inflight = [Signal(name=f"d_inflight{k}") for k in range(latency)]
        d_tag = Signal(tag_layout)
        d_tags = [Signal(tag_layout, name=f"d_tag{k}", reset_less=True) for k in range(latency)]
        issue = Signal()
        d_start = Signal()
        dc_head, dc, dc_last = _take_command(m, feed_q, d_start, "feed")
        m.d.comb += d_start.eq(~feeding & feed_q.r_rdy & _satisfied(inputs_done, dc_head.wait_inputs)
                               & _satisfied(layers_done, dc_head.wait_layers))
        with m.If(d_start):
            m.d.sync += [feeding.eq(1), d_item.eq(0), d_kt.eq(0), d_nt.eq(0), d_row.eq(dc_head.in_base)]
        m.d.comb += [
            issue.eq(feeding & (d_reserved != self.FEED_FIFO)),
            self.act_r.en.eq(issue),
            self.act_r.addr.eq(d_row + d_item),
            d_tag.acc.eq(dc.acc_base + d_item),
            d_tag.item.eq(d_item),
            d_tag.first.eq(d_kt == 0),
            d_tag.final.eq(d_kt == dc_last["ktiles"]),
            d_tag.end.eq(d_item == dc_last["items"]),
            feed_fifo.w_en.eq(d_inflight[-1]),
            feed_fifo.w_data.eq(Cat(self.act_r.data, d_tags[-1])),
        ]
        m.d.sync += [d_inflight[0].eq(issue), d_tags[0].eq(d_tag),
                     *(later.eq(earlier) for earlier, later in pairwise(d_inflight)),
                     *(later.eq(earlier) for earlier, later in pairwise(d_tags)),
                     d_reserved.eq(d_reserved + issue - (feed_fifo.r_en & feed_fifo.r_rdy))]
        with m.If(issue):
            with m.If(d_item == dc_last["items"]):
                m.d.sync += d_item.eq(0)
                with m.If(d_kt == dc_last["ktiles"]):
                    m.d.sync += [d_kt.eq(0), d_row.eq(dc.in_base)]
                    with m.If(d_nt == dc_last["ntiles"]):
                        m.d.sync += feeding.eq(0)
                    with m.Else():
                        m.d.sync += d_nt.eq(d_nt + 1)
                with m.Else():
                    m.d.sync += [d_kt.eq(d_kt + 1), d_row.eq(d_row + dc.stride)]
            with m.Else():
                m.d.sync += d_item.eq(d_item + 1)
        feed_tag = tag_layout(feed_fifo.r_data[rows * ACT_BITS:])
        m.d.comb += [
            self.x.valid.eq(feed_fifo.r_rdy),
            self.x.payload.a.eq(feed_fifo.r_data[:rows * ACT_BITS]),
            self.x.payload.last.eq(feed_tag.end),
            self.x.payload.tag.eq(feed_tag),
            feed_fifo.r_en.eq(self.x.ready),
        ]

        # Accumulate: the first k-tile writes the accumulator row, later ones add to it, the last one goes on
        # to post-processing. An accepted item is registered (stage A), where each column reads the item's row of
        # its accumulator (LUT RAM read asynchronously, one memory per column, each addressed by a copy of the row
        # register of its own: one address net to every LUT-RAM cell of the lane would cross the lane) into a
        # register; in stage B the sum is formed and written back (or, after the last k-tile, sent on). So no
        # cycle holds both the LUT-RAM read and the 32-bit carry chain. An item whose row the item ahead of it
        # writes in the same cycle (consecutive k-tiles of a one-item chunk) takes that item's sum instead of the
        # memory's stale word (`forward`, decided a cycle ahead into registers), so no item ever waits.
        # Accepting needs only a register (`room`): the accumulator FIFO's free entries not yet promised to a
        # last-k-tile result, counted in `credits` (one free entry is required for any item, as one may be).
        # In LUT RAM where the device has it: at most 64 rows deep, block RAM would be 512 rows deep and mostly
        # empty (and the block RAMs are spoken for by the weight and activation memories and the embedding unit).
        lut_ram = not isinstance(platform, SiliconBluePlatform)  # the iCE40 has none
        # Cut by column (each goes to its own post-processor), the tag in a slice of its own.
        m.submodules.acc_fifo = acc_fifo = SlicedFIFO([ACC_BITS] * cols + [tag_layout.size], depth=self.ACC_FIFO)
        a_valid, b_valid = Signal(), Signal()
        a_psum = Signal(data.ArrayLayout(signed(ACC_BITS), cols), reset_less=True)
        b_psum = Signal(data.ArrayLayout(signed(ACC_BITS), cols), reset_less=True)
        a_tag, b_tag = Signal(tag_layout, reset_less=True), Signal(tag_layout, reset_less=True)
        y_fire = Signal()
        room = Signal(init=1)
        credits = Signal(range(self.ACC_FIFO + 1), init=self.ACC_FIFO)
        credits_next = Signal.like(credits)
        m.d.comb += [
            self.y.ready.eq(room),
            y_fire.eq(self.y.valid & self.y.ready),
            credits_next.eq(credits - (y_fire & self.y.payload.tag.final) + (acc_fifo.r_en & acc_fifo.r_rdy)),
        ]
        m.d.sync += [a_valid.eq(y_fire), a_psum.eq(self.y.payload.psum), a_tag.eq(self.y.payload.tag),
                     b_valid.eq(a_valid), b_psum.eq(a_psum), b_tag.eq(a_tag),
                     credits.eq(credits_next), room.eq(credits_next != 0)]
        # Next cycle the item now in A is in B, and writes its row unless final; the item arriving reads that row.
        forward_next = a_valid & ~a_tag.final & (a_tag.acc == self.y.payload.tag.acc)
        total = [Signal(signed(ACC_BITS), name=f"total{c}") for c in range(cols)]
        for c in range(cols):
            acc_mem = Memory(shape=signed(ACC_BITS), depth=g.lane_acc_rows(self.lane), init=[],
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

        mode = decode("beat")
        # Post-process: the result vector in beats over the lane's post-processors, with the n-tile's bias and
        # parameters. The post-processors never stall: a beat is issued only when the result FIFO has room for
        # every beat in flight, counted in `pp_credits` (the result FIFO's entries neither filled nor promised
        # to a beat in flight) with the decision `pp_room` in a register. The result tags need no check of their
        # own: a result's tag lives from the issue of its last beat to the writer taking that beat, so there are
        # never more tags than beats holding credits.
        postprocs = g.lane_postprocs(self.lane)
        acc_head = data.ArrayLayout(signed(ACC_BITS), cols)(acc_fifo.r_data[:cols * ACC_BITS])
        acc_tag = tag_layout(acc_fifo.r_data[cols * ACC_BITS:])
        nt_head = ntile_layout(ntile_fifo.r_data)
        out_layout = data.StructLayout({"addr": ADDR_BITS, "off": range(rows), "to_output": 1, "layer_done": 1})
        m.submodules.out_tags = out_tags = SyncFIFOBuffered(width=out_layout.size, depth=self.RESULT_FIFO)
        m.submodules.result_fifo = result_fifo = SyncFIFO(width=postprocs * ACC_BITS, depth=self.RESULT_FIFO)
        max_beats = max(s.beats for s in shapes)
        beat = Signal(range(max_beats))
        beat_next = Signal.like(beat)
        pp_credits = Signal(range(self.RESULT_FIFO + 1), init=self.RESULT_FIFO)
        pp_credits_next = Signal.like(pp_credits)
        pp_room = Signal(init=1)
        last_beat = beat == const("beats") - 1
        pp_issue = Signal()
        out_tag_in = Signal(out_layout)
        # The beat leaves the lane in a register (the post-processors may lie across the die), one cycle later.
        pp_valid = Signal()
        pp_beat = Signal(self.pp_i.payload.shape(), reset_less=True)
        m.d.sync += [pp_valid.eq(pp_issue), pp_beat.params.eq(nt_head.params)]
        m.d.comb += [
            pp_issue.eq(acc_fifo.r_rdy & ntile_fifo.r_rdy & pp_room),
            pp_credits_next.eq(pp_credits - pp_issue + (result_fifo.r_en & result_fifo.r_rdy)),
            self.pp_i.valid.eq(pp_valid),
            self.pp_i.payload.eq(pp_beat),
            out_tag_in.addr.eq(nt_head.out_row + acc_tag.item),
            out_tag_in.off.eq(nt_head.out_off),
            out_tag_in.to_output.eq(nt_head.to_output),
            out_tag_in.layer_done.eq(acc_tag.end & nt_head.last_ntile),
            out_tags.w_data.eq(out_tag_in),
        ]
        for e in range(postprocs):
            # Each element's multiplexers (next to its post-processor, which may lie across the die from the
            # others) take the split and the beat from copies of their own: the beat's as a register of the
            # counter's next value, equal to it in every cycle.
            element_mode = decode(f"beat{e}")
            element_beat = replica(m, beat_next, name=f"beat{e}")
            choices = [(element_mode[s.n] & (element_beat == b), b * s.postprocs + e)
                       for s in shapes if e < s.postprocs for b in range(s.beats)]
            m.d.sync += [
                pp_beat.acc[e].eq(pick_keyed(choices, lambda i: acc_head[i])),
                pp_beat.bias[e].eq(pick_keyed(choices, lambda i: nt_head.bias[i])),
            ]
        m.d.sync += [pp_credits.eq(pp_credits_next), pp_room.eq(pp_credits_next != 0)]
        m.d.comb += beat_next.eq(beat)
        m.d.sync += beat.eq(beat_next)
        with m.If(pp_issue):
            with m.If(last_beat):
                m.d.comb += [beat_next.eq(0), acc_fifo.r_en.eq(1), out_tags.w_en.eq(1),
                             ntile_fifo.r_en.eq(acc_tag.end)]
            with m.Else():
                m.d.comb += beat_next.eq(beat + 1)
        m.d.comb += [
            self.pp_o.ready.eq(1),
            result_fifo.w_en.eq(self.pp_o.valid),
            result_fifo.w_data.eq(self.pp_o.payload),
        ]

        mode = decode("write")
        # Collect the beats of a result and write it: to the activation memory (the low byte of each result,
        # at its element offset in the word) or to the out stream, through a one-entry output register.
        res_head = data.ArrayLayout(signed(ACC_BITS), postprocs)(result_fifo.r_data)
        tag_head = out_layout(out_tags.r_data)
        out_beat = Signal(range(max_beats))
        partial = [data.ArrayLayout(signed(ACC_BITS), postprocs)(
                   Signal(postprocs * ACC_BITS, name=f"partial{b}", reset_less=True)) for b in range(max_beats - 1)]
        vector = Signal(data.ArrayLayout(signed(ACC_BITS), cols))
        for c in range(cols):
            # Element c of a result comes in beat c // postprocs from post-processor c % postprocs: the head of
            # the result FIFO for the last beat, an earlier beat's register otherwise.
            sources = []
            for s in shapes:
                if c < s.cols:
                    beat_of, e = divmod(c, s.postprocs)
                    sources.append((mode[s.n], ("head", e) if beat_of == s.beats - 1 else (beat_of, e)))
            m.d.comb += vector[c].eq(pick_keyed(
                sources, lambda key: res_head[key[1]] if key[0] == "head" else partial[key[0]][key[1]]))
        out_valid = Signal()
        out_data = Signal(data.ArrayLayout(signed(ACC_BITS), cols), reset_less=True)
        out_last = out_beat == const("beats") - 1
        take = Signal()
        m.d.comb += [
            take.eq(result_fifo.r_rdy & (~out_last | ~tag_head.to_output | ~out_valid | self.out.ready)),
            result_fifo.r_en.eq(take),
            writer_writes.eq(take & out_last & ~tag_head.to_output),
            self.out.valid.eq(out_valid),
            self.out.payload.eq(out_data),
        ]
        # The output register loads whenever it is free, so the enable of its cols x 32 flip-flops depends on
        # out_valid and out.ready only, not on the FIFOs' heads; out_valid says whether what it loaded is a result.
        with m.If(~out_valid | self.out.ready):
            m.d.sync += [out_valid.eq(take & out_last & tag_head.to_output), out_data.eq(vector)]
        with m.If(take):
            with m.If(out_last):
                m.d.sync += out_beat.eq(0)
                m.d.comb += out_tags.r_en.eq(1)
            with m.Else():
                m.d.sync += out_beat.eq(out_beat + 1)
                for b, reg in enumerate(partial):
                    with m.If(out_beat == b):
                        m.d.sync += reg.eq(res_head)

        # The activation memory write port: the writer's write-back register (a result at its element offset,
        # the other elements disabled), else the loader. A layer completes when its last result is written there
        # (or, for the out stream, taken).
        mask = pick([(mode[s.n], (1 << s.cols) - 1) for s in shapes])
        wb = Signal(data.StructLayout({"addr": len(self.act_w.addr), "en": len(self.act_w.en),
                                       "data": self.act_w.data.shape()}), name="wb", reset_less=True)
        wb_done = Signal()
        out_done = Signal()
        m.d.sync += [wb_valid.eq(writer_writes), wb_done.eq(writer_writes & tag_head.layer_done),
                     out_done.eq(take & out_last & tag_head.to_output & tag_head.layer_done),
                     layers_done.eq(layers_done + wb_done + out_done)]
        with m.If(writer_writes):
            m.d.sync += [
                wb.addr.eq(tag_head.addr),
                wb.en.eq(mask << tag_head.off),
                wb.data.eq(Cat(pick_keyed([(mode[s.n], p % s.cols) for s in shapes],
                                          lambda c: vector[c][:ACT_BITS]) for p in range(rows))),
            ]
        with m.If(wb_valid):
            m.d.comb += [self.act_w.addr.eq(wb.addr), self.act_w.en.eq(wb.en), self.act_w.data.eq(wb.data)]
        with m.Elif(act_fire):
            m.d.comb += [
                self.act_w.addr.eq(ld_row + ld_item),
                self.act_w.en.eq((1 << rows) - 1),
                self.act_w.data.eq(self.act.payload),
            ]
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
        }
        for lane in range(g.lanes):
            members[f"cmd{lane}"] = In(stream.Signature(MLPCommand))
            members[f"act{lane}"] = In(stream.Signature(data.ArrayLayout(signed(ACT_BITS), g.lane_rows(lane))))
            members[f"out{lane}"] = Out(stream.Signature(data.ArrayLayout(signed(ACC_BITS), g.lane_cols(lane))))
        return members

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        cols = self.config.array_cols

        # The lanes, the activation memory and the post-processor routing each decode `split` into registers
        # of their own (rpaccel.rtl.select.split_modes): all follow a change one cycle later. The array
        # registers its input before it compares or decodes it (so it follows a cycle later too).

        m.submodules.array = array = SystolicArray(self.config, tag_shape=g.tag_layout())
        m.submodules.act_mem = act_mem = g.act_memory()
        m.d.comb += [array.split.eq(self.split), act_mem.split.eq(self.split)]

        # Between each lane and the array (which span the die apart on the ECP5): two register slices in a row
        # on each of the item, weight and result streams, so no combinational path runs between them (the
        # array's clock enables see the result slice's registered ready; the lane's accumulator addresses come
        # from the slice's registers), and each side's handshake logic meets a slice of its own that the placer
        # can put next to it (with one slice, one of the two sides' `ready` crossed the distance through
        # logic). A FIFO of LUT RAM on the results was tried: its read address had to reach storage cells the
        # placer spread between the array and the lane (13.9 ns of routing).
        lanes, slices = [], []
        for lane in range(g.lanes):
            unit = MLPLane(g, lane, act_addr_width=act_mem.addr_width(lane))
            m.submodules[f"lane{lane}"] = unit
            lanes.append(unit)
            m.d.comb += unit.split.eq(self.split)
            wiring.connect(m, wiring.flipped(getattr(self, f"cmd{lane}")), unit.cmd)
            wiring.connect(m, wiring.flipped(getattr(self, f"act{lane}")), unit.act)
            wiring.connect(m, unit.out, wiring.flipped(getattr(self, f"out{lane}")))
            lane_slices = []
            for name, source, sink in (("x", unit.x, array.port("x", lane)), ("w", unit.w, array.port("w", lane)),
                                       ("y", array.port("y", lane), unit.y)):
                near_source, near_sink = RegisterSlice(source.payload.shape()), RegisterSlice(source.payload.shape())
                m.submodules[f"{name}_slice{lane}"], m.submodules[f"{name}_slice{lane}b"] = near_source, near_sink
                wiring.connect(m, source, near_source.i)
                wiring.connect(m, near_source.o, near_sink.i)
                wiring.connect(m, near_sink.o, sink)
                lane_slices += [near_source, near_sink]
            slices.append(lane_slices)
            wiring.connect(m, unit.act_r, getattr(act_mem, f"read{lane}"))
            wiring.connect(m, unit.act_w, getattr(act_mem, f"write{lane}"))
        m.d.comb += self.idle.eq(Cat(unit.idle & Cat(s.idle for s in lane_slices).all()
                                     for unit, lane_slices in zip(lanes, slices)))

        # Weight memory: written by the host, read by the lanes' fetchers in round-robin order. Its 96 block
        # RAMs (on the small preset) lie across the die: the write port is registered here and again in a copy
        # per row of blocks inside the memory, the read address likewise.
        weights = RegisteredRAM(width=g.word_bytes * ACT_BITS, depth=g.weight_words, row_registers=True)
        m.submodules.weights = weights
        m.d.sync += [
            weights.w_en.eq(self.wload.valid),
            weights.w_addr.eq(self.wload.payload.addr),
            weights.w_data.eq(self.wload.payload.data),
        ]
        m.d.comb += self.wload.ready.eq(1)
        # Round-robin arbitration with a registered grant: `grant` names the lane that may read this cycle (its
        # request fires if it is still valid), chosen in the previous cycle from the requests then and the lane
        # after the last grant, so no path runs from one lane's request through the arbiter into another's
        # counters. A lane alone is granted every cycle; a grant whose request has just ended is wasted.
        grant = Signal(g.lanes)
        pointer = Signal(range(g.lanes))
        fire = Cat(unit.wreq.valid & grant[k] for k, unit in enumerate(lanes))
        grant_next = Signal(g.lanes)
        order = [[(start + k) % g.lanes for k in range(g.lanes)] for start in range(g.lanes)]
        for start, lanes_in_order in enumerate(order):
            with m.If(pointer == start):
                for k in reversed(lanes_in_order):
                    with m.If(lanes[k].wreq.valid):
                        m.d.comb += grant_next.eq(1 << k)
        m.d.sync += grant.eq(grant_next)
        for k in range(g.lanes):
            with m.If(grant_next[k]):
                m.d.sync += pointer.eq((k + 1) % g.lanes)
        # The request that fires in cycle t: its address is registered (t + 1), the memory answers five cycles
        # later (t + 6), and its data are registered (t + 7, WRESP_LATENCY), when the lane takes them.
        read_addr = Signal.like(weights.r_addr)
        resp = Signal.like(weights.r_data, reset_less=True)
        resp_to = [Signal(g.lanes, name=f"resp_to{k}") for k in range(WRESP_LATENCY)]
        assert 1 + weights.latency + 1 == WRESP_LATENCY
        m.d.sync += [read_addr.eq(pick([(grant[k], unit.wreq.payload) for k, unit in enumerate(lanes)])),
                     resp.eq(weights.r_data), resp_to[0].eq(fire),
                     *(later.eq(earlier) for earlier, later in pairwise(resp_to))]
        m.d.comb += weights.r_addr.eq(read_addr)
        for k, unit in enumerate(lanes):
            m.d.comb += [
                unit.wreq.ready.eq(grant[k]),
                unit.wresp.eq(resp),
                unit.wresp_valid.eq(resp_to[-1][k]),
            ]

        # Post-processors: one per array column; in split n, lane l owns processors l * cols/n .. + cols/n.
        # They never stall (the lanes count the beats in flight), so a register on each side of them, after the
        # routing multiplexers, costs nothing but two cycles of latency and keeps the lanes' FIFOs and the
        # post-processors' adders out of each other's paths.
        postprocs = [PostProcessor() for _ in range(cols)]
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
        return m
