"""The memory port of the embedding unit, a timed memory model for simulation and a block-RAM memory for FPGAs.

Memory is an array of *lines* (``line_bytes`` bytes). A requester talks to it through a :class:`MemoryPort`:
requests ``{write, addr, length, data}`` on ``req`` (a read of ``length + 1`` consecutive lines from line
``addr``, or a write of one line), and the lines read on ``resp``, one per transfer, in request order. Writes are
posted (no response). A memory serves requests strictly in order, so a read issued after a write sees it.

Both memories have two such ports, ``port`` (the accelerator) and ``host`` (the host's path to load and read the
tables), served round-robin into one request queue:

* :class:`MemoryModel` delays every request by a configurable latency (the first line of a read appears on
  ``resp`` exactly ``latency`` cycles after the request was accepted, when nothing queues before it) and limits
  the bandwidth to ``bytes_per_cycle`` (a token bucket: one line costs ``line_bytes`` tokens, ``bytes_per_cycle``
  tokens arrive per cycle, at most ``line_bytes + bytes_per_cycle - 1`` are kept). It runs inside the simulated
  design, so long runs never wake Python. Its contents may live in an Amaranth memory (any simulator, small
  sizes) or in a plain Verilog array (``storage="verilog"``, for Verilator runs with megabytes of tables:
  Amaranth writes an initialiser line per memory word).
* :class:`BlockRAMMemory` serves the same ports from block RAM at one line per cycle (the FPGA stand-in for
  off-chip memory).
"""

import functools

from amaranth.hdl import Array, Cat, ClockSignal, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .ecp5 import is_ecp5
from .lib.credit import CreditCounter
from .lib.delay import shift_register
from .lib.select import replica

__all__ = ["STORAGE_VERILOG", "BlockRAMMemory", "MemoryModel", "MemoryPort", "RegisteredRAM", "checked_init"]


def checked_init(init):
    """Decorate a component's ``__init__`` so a component that fails its parameter checks is not reported as
    "created but never used" (Amaranth warns about every elaboratable object it never elaborated)."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except Exception:
            self._MustUse__silence = True
            raise
    return wrapper


def _check_positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TypeError(f"{what} must be a positive integer, not {value!r}")


def _check_pow2(what, value):
    _check_positive(what, value)
    if value & (value - 1):
        raise ValueError(f"{what} must be a power of two, not {value!r}")


class MemoryPort(wiring.Signature):
    """A line-organised memory port, as seen by the requester.

    Parameters
    ----------
    addr_bits : int
        Width of a line address.
    line_bytes : int
        Bytes per line (the data width of a transfer).
    max_burst : int
        Longest read burst in lines (``length`` is ``lines - 1``).

    Members
    -------
    req : Out(stream.Signature(request))
        ``{write, addr, length, data}``: a read of ``length + 1`` lines from ``addr``, or (``write``) a write of
        ``data`` to line ``addr`` (``length`` ignored).
    resp : In(stream.Signature(unsigned(8 * line_bytes)))
        Lines read, in request order.
    """

    def __init__(self, *, addr_bits, line_bytes, max_burst):
        _check_positive("Address width", addr_bits)
        _check_pow2("Line size", line_bytes)
        _check_positive("Maximum burst", max_burst)
        self.addr_bits, self.line_bytes, self.max_burst = addr_bits, line_bytes, max_burst
        #: Most lines of one read (``length + 1``; ``length`` is at least one bit wide).
        self.max_lines = max(max_burst, 2)
        self.request = data.StructLayout({
            "write": 1,
            "addr": unsigned(addr_bits),
            "length": range(self.max_lines),
            "data": unsigned(8 * line_bytes),
        })
        super().__init__({
            "req": Out(stream.Signature(self.request)),
            "resp": In(stream.Signature(unsigned(8 * line_bytes))),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_bits, self.line_bytes, self.max_burst) ==
                (other.addr_bits, other.line_bytes, other.max_burst))

    def __hash__(self):
        return hash((type(self), self.addr_bits, self.line_bytes, self.max_burst))

    def __repr__(self):
        return f"MemoryPort(addr_bits={self.addr_bits}, line_bytes={self.line_bytes}, max_burst={self.max_burst})"


#: The Verilog array behind ``storage="verilog"`` (appended to the generated Verilog by
#: :func:`rpaccel.sim.verilog.generate_verilog` through the component's ``extra_verilog``).
STORAGE_VERILOG = """\
// Simulation storage of rpaccel.rtl.memory.MemoryModel: a plain array, zeroed at time 0.
module rpaccel_sim_storage #(parameter WIDTH = 128, parameter ABITS = 10) (
  input clk,
  input we, input [ABITS-1:0] waddr, input [WIDTH-1:0] wdata,
  input re, input [ABITS-1:0] raddr, output reg [WIDTH-1:0] rdata
);
  reg [WIDTH-1:0] mem [0:(1 << ABITS) - 1];
  integer i;
  initial begin
    for (i = 0; i < (1 << ABITS); i = i + 1) mem[i] = 0;
    rdata = 0;
  end
  always @(posedge clk) begin
    if (we) mem[waddr] <= wdata;
    if (re) rdata <= mem[raddr];
  end
endmodule
"""


class _Memory(wiring.Component):
    """Request queue, in-order service and response routing shared by both memories."""

    #: Fewest cycles from accepting a read request to presenting its first line.
    MIN_LATENCY = 5
    # Cycles from serving a line out of storage to presenting it on a port.
    _SERVICE = 3
    _RESPONSE_DEPTH = 4

    @checked_init
    def __init__(self, *, lines, line_bytes, addr_bits, max_burst, latency, bytes_per_cycle, queue_depth,
                 storage, jitter=0):
        _check_pow2("Memory lines", lines)
        _check_positive("Request queue depth", queue_depth)
        if storage not in ("memory", "verilog"):
            raise ValueError(f"Storage must be 'memory' or 'verilog', not {storage!r}")
        signature = MemoryPort(addr_bits=addr_bits, line_bytes=line_bytes, max_burst=max_burst)
        if lines > 1 << addr_bits:
            raise ValueError(f"Memory of {lines} lines needs more than {addr_bits} address bits")
        self.lines, self.line_bytes, self.addr_bits, self.max_burst = lines, line_bytes, addr_bits, max_burst
        self.latency, self.bytes_per_cycle, self.queue_depth = latency, bytes_per_cycle, queue_depth
        self.storage, self.jitter = storage, jitter
        if storage == "verilog":
            #: Verilog the generated design needs beside Amaranth's output.
            self.extra_verilog = STORAGE_VERILOG
        super().__init__({"port": In(signature), "host": In(signature)})

    def _storage(self, m):
        width, abits = 8 * self.line_bytes, (self.lines - 1).bit_length()
        s = {name: Signal(shape, name=f"storage_{name}") for name, shape in (
            ("we", 1), ("waddr", abits), ("wdata", width), ("re", 1), ("raddr", abits), ("rdata", width))}
        if self.storage == "verilog":
            m.submodules.storage = Instance(
                "rpaccel_sim_storage", p_WIDTH=width, p_ABITS=max(abits, 1), i_clk=ClockSignal(),
                i_we=s["we"], i_waddr=s["waddr"], i_wdata=s["wdata"], i_re=s["re"], i_raddr=s["raddr"],
                o_rdata=s["rdata"])
        else:
            m.submodules.storage = mem = memory.Memory(shape=width, depth=self.lines, init=[])
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.en.eq(s["we"]), wp.addr.eq(s["waddr"]), wp.data.eq(s["wdata"]),
                         rp.en.eq(s["re"]), rp.addr.eq(s["raddr"]), s["rdata"].eq(rp.data)]
        return s

    def elaborate(self, platform):
        m = Module()
        request = self.port.req.payload.shape()
        timed = self.latency is not None
        entry = data.StructLayout({"host": 1, "req": request, "due": 32 if timed else 0})

        # Round-robin arbiter between the accelerator and the host, into the request queue.
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=entry.size, depth=self.queue_depth)
        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        last_host = Signal()
        grant_host = Signal()
        incoming = Signal(entry)
        m.d.comb += [
            grant_host.eq(self.host.req.valid & (~self.port.req.valid | ~last_host)),
            incoming.host.eq(grant_host),
            incoming.req.eq(Mux(grant_host, self.host.req.payload, self.port.req.payload)),
            queue.w_en.eq(self.port.req.valid | self.host.req.valid),
            queue.w_data.eq(incoming),
            self.port.req.ready.eq(queue.w_rdy & ~grant_host),
            self.host.req.ready.eq(queue.w_rdy & grant_host),
        ]
        if timed:
            m.d.comb += incoming.due.eq(now + (self.latency - self._SERVICE) + self._extra(m))
        with m.If(queue.w_en & queue.w_rdy):
            m.d.sync += last_host.eq(grant_host)

        # Service of the queue head, one line per beat.
        head = Signal(entry)
        m.d.comb += head.eq(queue.r_data)
        due = Signal(init=1)
        if timed:
            waited = Signal(32)
            m.d.comb += [waited.eq(now - head.due), due.eq(~waited[-1])]
        beat = Signal()
        credit = self._bandwidth(m, beat)
        m.submodules.responses = responses = fifo.SyncFIFO(width=8 * self.line_bytes + 1,
                                                           depth=self._RESPONSE_DEPTH)
        # A line read from storage: issued (in_flight), then registered (read), then queued for its port. The
        # block RAM's output is registered before anything else: it arrives late in the cycle. A line is read only
        # with a place for it in the response queue: `lines` counts those in the two stages and the queue.
        m.submodules.lines = lines = CreditCounter(self._RESPONSE_DEPTH)
        read = shift_register(m, beat & ~head.req.write, 2, name="line_read_d")[-1]
        read_host = shift_register(m, head.host, 2, name="line_host_d")[-1]
        read_data = Signal(8 * self.line_bytes)
        offset = Signal(range(max(self.max_burst, 2)))
        m.d.comb += [beat.eq(queue.r_rdy & due & credit & (head.req.write | lines.room)),
                     lines.take.eq(beat & ~head.req.write), lines.give.eq(responses.r_en & responses.r_rdy)]
        s = self._storage(m)
        addr = head.req.addr + offset
        m.d.comb += [
            s["waddr"].eq(addr), s["wdata"].eq(head.req.data), s["raddr"].eq(addr),
            s["we"].eq(beat & head.req.write), s["re"].eq(beat & ~head.req.write),
        ]
        m.d.sync += read_data.eq(s["rdata"])
        with m.If(beat):
            with m.If(head.req.write | (offset == head.req.length)):
                m.d.comb += queue.r_en.eq(1)
                m.d.sync += offset.eq(0)
            with m.Else():
                m.d.sync += offset.eq(offset + 1)

        # Read lines back to the port that asked, in order.
        m.d.comb += [
            responses.w_en.eq(read),
            responses.w_data.eq(read_data | (read_host << (8 * self.line_bytes))),
        ]
        to_host = responses.r_data[-1]
        for port, selected in ((self.port, ~to_host), (self.host, to_host)):
            m.d.comb += [port.resp.valid.eq(responses.r_rdy & selected),
                         port.resp.payload.eq(responses.r_data[:-1])]
        m.d.comb += responses.r_en.eq(Mux(to_host, self.host.resp.ready, self.port.resp.ready))
        return m

    def _extra(self, m):
        """Each request's extra latency, pseudo-random in ``[0, jitter]``: the low bits of a 16-bit LFSR (taps 16,
        15, 13, 4) that steps every cycle, folded into range. Requests are still served in order, so a request
        due before the one ahead of it waits for it."""
        if not self.jitter:
            return 0
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[15] ^ lfsr[14] ^ lfsr[12] ^ lfsr[3], lfsr[:15]))
        draw = lfsr[:self.jitter.bit_length()]
        return Mux(draw > self.jitter, draw - (self.jitter + 1), draw)

    def _bandwidth(self, m, beat):
        # Token bucket: bytes_per_cycle tokens arrive per cycle and a line costs line_bytes. The bucket holds
        # line_bytes + bytes_per_cycle - 1: under continuous demand no token is ever lost, so the long-run rate is
        # exactly bytes_per_cycle, and after an idle spell at most one extra line goes early.
        credit = Signal(init=1)
        rate, cost = self.bytes_per_cycle, self.line_bytes
        if rate is None or rate >= cost:
            return credit
        capacity = cost + rate - 1
        tokens = Signal(range(capacity + 1), init=cost)
        m.d.comb += credit.eq(tokens >= cost)
        with m.If(beat):
            m.d.sync += tokens.eq(tokens - cost + rate)
        with m.Elif(tokens + rate >= capacity):
            m.d.sync += tokens.eq(capacity)
        with m.Else():
            m.d.sync += tokens.eq(tokens + rate)
        return credit


class MemoryModel(_Memory):
    """Timed memory model: latency and bandwidth of off-chip memory, inside the simulated design.

    Parameters
    ----------
    lines : int
        Lines of storage (a power of two; addresses wrap modulo ``lines``).
    line_bytes : int
        Bytes per line.
    addr_bits : int
        Width of the ports' line addresses.
    max_burst : int
        Longest read burst (lines).
    latency : int
        Cycles from accepting a request to presenting its first line (at least :attr:`MIN_LATENCY`).
    bytes_per_cycle : int
        Bandwidth: at most one line per ``line_bytes / bytes_per_cycle`` cycles on average (reads and writes),
        at most one line per cycle.
    queue_depth : int
        Requests the model holds; with fewer, a requester sees back-pressure before the latency limits it.
    storage : str
        ``"memory"`` (an Amaranth memory) or ``"verilog"`` (a Verilog array; Verilator only).
    jitter : int
        Most extra cycles of latency a request may take, pseudo-random per request (a fixed LFSR sequence, so a run
        is repeatable); requests are still answered in order. 0 (the default): every request takes ``latency``.

    Members
    -------
    port, host : In(MemoryPort)
        The accelerator's and the host's ports.
    """

    @checked_init
    def __init__(self, *, lines, line_bytes, addr_bits, max_burst, latency, bytes_per_cycle, queue_depth=16,
                 storage="memory", jitter=0):
        _check_positive("Latency", latency)
        if not isinstance(jitter, int) or isinstance(jitter, bool) or not 0 <= jitter < 1 << 15:
            raise ValueError(f"Latency jitter must be an integer from 0 to {(1 << 15) - 1}, not {jitter!r}")
        if latency < self.MIN_LATENCY:
            raise ValueError(f"Latency must be at least {self.MIN_LATENCY} cycles (the model's own pipeline), "
                             f"not {latency}")
        _check_positive("Bandwidth (bytes per cycle)", bytes_per_cycle)
        if bytes_per_cycle > line_bytes:
            raise ValueError(f"Bandwidth of {bytes_per_cycle} bytes per cycle exceeds one {line_bytes}-byte line "
                             "per cycle, the most the model's port can carry")
        super().__init__(lines=lines, line_bytes=line_bytes, addr_bits=addr_bits, max_burst=max_burst,
                         latency=latency, bytes_per_cycle=bytes_per_cycle, queue_depth=queue_depth,
                         storage=storage, jitter=jitter)


class BlockRAMMemory(_Memory):
    """Memory served from block RAM at one line per cycle (the FPGA stand-in for off-chip memory).

    Parameters
    ----------
    lines, line_bytes, addr_bits, max_burst
        As for :class:`MemoryModel`. Reads answer :attr:`MIN_LATENCY` cycles after the request.
    """

    def __init__(self, *, lines, line_bytes, addr_bits, max_burst):
        super().__init__(lines=lines, line_bytes=line_bytes, addr_bits=addr_bits, max_burst=max_burst,
                         latency=None, bytes_per_cycle=None, queue_depth=4, storage="memory")


class RegisteredRAM(wiring.Component):
    """Simple dual-port RAM whose read data is registered twice: ``r_data`` is the word at the ``r_addr`` of two
    cycles before (read latency 2), for block RAM with its output register in use. With ``input_registers`` the
    write port and the read address are registered first as well (write one cycle later, read latency 3), so
    the paths into a block RAM far from its logic are single wires too; with ``write_register`` only the write
    port is (a write lands a cycle later, reads keep latency 2). ``row_registers`` is for a memory of many rows
    of blocks spread over the die: the write port and the read address pass two levels of registers, a copy per
    group of :attr:`GROUP_ROWS` rows and then a copy per row of DP16KD (kept apart by synthesis,
    :func:`rpaccel.rtl.lib.select.replica`), so no net has to reach more than a few blocks or copies; and the rows'
    outputs are selected within each group into a register before the groups are, so no multiplexer spans the
    die either (a write lands two cycles later, read latency 5, on every platform).

    On ECP5 it is built from DP16KD blocks (1024 x 18 each) with ``REGMODE_B = "OUTREG"``: Yosys maps inferred
    memories without the output register (the data arrive about 5.6 ns into the cycle at speed grade 6, too late
    for any routing at 125 MHz) and, for a read port that must return the old word when the other port writes the
    same address, adds a comparator and a multiplexer behind the block. Here a read of the word being written in
    the same cycle returns an undefined word; in simulation (no platform) it returns the old word inverted, so a
    design that depends on either behaviour fails its tests. Elsewhere it is an Amaranth memory and a register.

    Parameters
    ----------
    width, depth : int
    input_registers, write_register, row_registers : bool

    Members
    -------
    w_en, w_addr, w_data : In
        Write port.
    r_addr : In
        Read address (read every cycle).
    r_data : Out
        The word at ``r_addr`` :attr:`latency` cycles earlier.
    """

    TILE_DEPTH, TILE_WIDTH = 1024, 18
    #: Rows of blocks that share a copy of the input registers and an output register (``row_registers``).
    GROUP_ROWS = 4

    def __init__(self, *, width, depth, input_registers=False, write_register=False, row_registers=False):
        _check_positive("RAM width", width)
        _check_positive("RAM depth", depth)
        self.row_registers = bool(row_registers)
        self.width, self.depth = width, depth
        self.input_registers = bool(input_registers) and not self.row_registers
        self.write_register = (bool(write_register) or self.input_registers) and not self.row_registers
        #: Cycles from ``r_addr`` to ``r_data``.
        self.latency = 5 if self.row_registers else 3 if self.input_registers else 2
        bits = max((depth - 1).bit_length(), 1)
        super().__init__({"w_en": In(1), "w_addr": In(bits), "w_data": In(width), "r_addr": In(bits),
                          "r_data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if self.row_registers and is_ecp5(platform):
            self._ecp5_rows(m)
            return m
        if self.row_registers:
            # Elsewhere the same latencies: two levels of input registers, one register after the block's.
            inner = RegisteredRAM(width=self.width, depth=self.depth)
            m.submodules.inner = inner
            ports = (self.w_en, self.w_addr, self.w_data, self.r_addr)
            first = [Signal.like(port, name=f"{port.name}_q") for port in ports]
            m.d.sync += [reg.eq(port) for reg, port in zip(first, ports)]
            m.d.sync += [inner.w_en.eq(first[0]), inner.w_addr.eq(first[1]), inner.w_data.eq(first[2]),
                         inner.r_addr.eq(first[3]), self.r_data.eq(inner.r_data)]
            return m
        if self.write_register:
            inner = RegisteredRAM(width=self.width, depth=self.depth)
            m.submodules.inner = inner
            m.d.sync += [inner.w_en.eq(self.w_en), inner.w_addr.eq(self.w_addr), inner.w_data.eq(self.w_data)]
            m.d[("sync" if self.input_registers else "comb")] += inner.r_addr.eq(self.r_addr)
            m.d.comb += self.r_data.eq(inner.r_data)
            return m
        if is_ecp5(platform):
            self._ecp5(m)
            return m
        m.submodules.storage = storage = memory.Memory(shape=self.width, depth=self.depth, init=[])
        write, read = storage.write_port(), storage.read_port()
        m.d.comb += [write.en.eq(self.w_en), write.addr.eq(self.w_addr), write.data.eq(self.w_data),
                     read.addr.eq(self.r_addr)]
        if platform is None:
            collided = Signal()
            m.d.sync += [collided.eq(self.w_en & (self.w_addr == self.r_addr)),
                         self.r_data.eq(Mux(collided, ~read.data, read.data))]
        else:
            m.d.sync += self.r_data.eq(read.data)
        return m

    def _ecp5_rows(self, m):
        """``row_registers`` on the ECP5: input registers per group and per row, an output register per group."""
        tile_bits = (self.TILE_DEPTH - 1).bit_length()
        rows = -(-self.depth // self.TILE_DEPTH)
        groups = -(-rows // self.GROUP_ROWS)
        group_bits = max(1, (self.GROUP_ROWS - 1).bit_length())
        inputs = (self.w_en, self.w_addr, self.w_data, self.r_addr)
        # The row of a read, following its address to the outputs: the rows' output registers hold the word in
        # cycle t + 4 (address copies in t + 1 and t + 2, the block's read at the end of t + 2, its output register
        # at the end of t + 3), the group's register in t + 5.
        row_of = [self.r_addr[tile_bits:], *shift_register(m, self.r_addr[tile_bits:], 4, name="read_row_d",
                                                           shape=range(max(rows, 2)), reset_less=True)]
        group_out = []
        for g in range(groups):
            w_en, w_addr, w_data, r_addr = (replica(m, port, name=f"{port.name}_group{g}",
                                                    reset_less=port is not self.w_en) for port in inputs)
            members = range(g * self.GROUP_ROWS, min(rows, (g + 1) * self.GROUP_ROWS))
            outputs = []
            for r in members:
                row = {
                    "w_en": replica(m, w_en & (w_addr[tile_bits:] == r) if rows > 1 else w_en, name=f"w_en_row{r}"),
                    "w_addr": replica(m, w_addr[:tile_bits], name=f"w_addr_row{r}", reset_less=True),
                    "r_addr": replica(m, r_addr[:tile_bits], name=f"r_addr_row{r}", reset_less=True),
                    "w_data": replica(m, w_data, name=f"w_data_row{r}", reset_less=True),
                }
                outputs.append(self._ecp5_row(m, r, **row))
            select = replica(m, row_of[3][:group_bits] if rows > 1 else 0, name=f"select_group{g}", reset_less=True)
            out = Signal(self.width, name=f"group{g}", reset_less=True)
            m.d.sync += out.eq(outputs[0] if len(outputs) == 1 else Array(outputs)[select])
            group_out.append(out)
        group_of = Signal(range(max(groups, 2)), name="read_group", reset_less=True)
        m.d.sync += group_of.eq(row_of[4] >> group_bits if rows > 1 else 0)
        m.d.comb += self.r_data.eq(group_out[0] if groups == 1 else Array(group_out)[group_of])

    def _ecp5_row(self, m, r, *, w_en, w_addr, r_addr, w_data):
        """One row of DP16KD blocks with their output registers; returns the row's read data."""
        columns = -(-self.width // self.TILE_WIDTH)
        tile_bits = (self.TILE_DEPTH - 1).bit_length()
        w_data_row = Signal(columns * self.TILE_WIDTH, name=f"w_data_row{r}_wide")
        m.d.comb += w_data_row.eq(w_data)
        out = Signal(columns * self.TILE_WIDTH, name=f"row{r}")
        self._tiles(m, r, columns, tile_bits, w_en, w_addr, r_addr, w_data_row, out)
        return out[:self.width]

    def _ecp5(self, m):
        tile_bits = (self.TILE_DEPTH - 1).bit_length()
        rows = -(-self.depth // self.TILE_DEPTH)
        columns = -(-self.width // self.TILE_WIDTH)
        w_data = Signal(columns * self.TILE_WIDTH)
        m.d.comb += w_data.eq(self.w_data)
        outputs = []
        for r in range(rows):
            w_en = self.w_en & (self.w_addr[tile_bits:] == r) if rows > 1 else self.w_en
            out = Signal(columns * self.TILE_WIDTH, name=f"row{r}")
            outputs.append(out)
            self._tiles(m, r, columns, tile_bits, w_en, self.w_addr, self.r_addr, w_data, out)
        if rows == 1:
            m.d.comb += self.r_data.eq(outputs[0])
        else:
            # The row of a read, delayed to meet its data.
            row = shift_register(m, self.r_addr[tile_bits:], 2, name="row_q", shape=range(rows))[-1]
            m.d.comb += self.r_data.eq(Array(outputs)[row])

    def _tiles(self, m, r, columns, tile_bits, w_en, w_addr, r_addr, w_data_row, out):
        """The DP16KD blocks of row ``r`` (x18 mode, output register in use)."""
        for c in range(columns):
            ports = {}
            for k in range(14):
                # x18 mode: address in bits 13..4, byte write enables in bits 1..0.
                ports[f"i_ADA{k}"] = (w_addr[k - 4] if 4 <= k < 4 + tile_bits and k - 4 < len(w_addr)
                                      else (1 if k < 2 else 0))
                ports[f"i_ADB{k}"] = (r_addr[k - 4] if 4 <= k < 4 + tile_bits and k - 4 < len(r_addr)
                                      else 0)
            for k in range(self.TILE_WIDTH):
                ports[f"i_DIA{k}"] = w_data_row[c * self.TILE_WIDTH + k]
                ports[f"i_DIB{k}"] = 0
                ports[f"o_DOB{k}"] = out[c * self.TILE_WIDTH + k]
            for k in range(3):
                ports[f"i_CSA{k}"] = 0
                ports[f"i_CSB{k}"] = 0
            m.submodules[f"tile_{r}_{c}"] = Instance(
                "DP16KD",
                p_DATA_WIDTH_A=self.TILE_WIDTH, p_DATA_WIDTH_B=self.TILE_WIDTH,
                p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG", p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000", p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
                p_GSR="DISABLED",
                i_CLKA=ClockSignal(), i_CEA=1, i_OCEA=1, i_RSTA=0, i_WEA=w_en,
                i_CLKB=ClockSignal(), i_CEB=1, i_OCEB=1, i_RSTB=0, i_WEB=0,
                **ports)
