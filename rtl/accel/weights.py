"""The weight loader: executes WEIGHTS commands, copying weight words from memory into the MLP engine's weight
buffer."""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..lib.credit import CreditCounter
from ..lib.queue import Queue
from ..lib.slice import RegisterSlice
from ..memory import checked_init
from ..mlp import WAIT_BITS, satisfied, wload_layout
from .isa import ChipGeometry

__all__ = ["WeightLoader"]


def _pow2_at_least(n):
    return 1 << max(n - 1, 0).bit_length()


class WeightLoader(wiring.Component):
    """Executes WEIGHTS commands (:meth:`~rpaccel.rtl.accel.isa.ChipGeometry.weights_layout`): copies ``words``
    weight words from memory line ``mem_addr`` to the weight buffer from address ``w_addr``.

    A weight word is ``word_bytes = array_cols`` bytes, packed densely from the start of line ``mem_addr``: byte
    ``j`` of word ``w`` at byte ``w * word_bytes + j``. A line of ``L`` bytes holds ``L / word_bytes`` words, or a
    word spans ``word_bytes / L`` lines (one of the two must divide the other).

    Commands run in order. With ``wait``, a command starts (reads nothing) until ``layers_done[lane]`` has reached
    ``wait_layers`` (modulo 256, as the lanes' own waits), so it cannot overwrite weights a layer still uses. Its
    lines are read in bursts of at most ``max_burst`` lines, as many in flight as the line buffer has room for
    (``buffer_lines``, at least two bursts), so the memory's responses are never held up by back-pressure on
    ``wload``: ``mem.resp.ready`` is always high. The reads of the next command start as soon as those of the
    current one are issued (and its wait is met), while the current one's words are still being written. Words go
    out on ``wload`` one per cycle while lines come in fast enough (a word spanning ``S`` lines takes ``S``
    cycles), through a register slice. A command is complete when its last word has been accepted on ``wload``
    (a command of no words, when every earlier word has been); ``done`` counts completed commands.

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    buffer_lines : int, optional
        Lines the loader buffers (and so may have in flight). Default: enough to cover the configuration's
        memory latency at the rate of one word per cycle (or the memory's bandwidth, if lower), plus a burst,
        rounded up to a power of two, and at least two bursts.

    Members
    -------
    cmd : In(stream.Signature(geometry.weights_layout()))
    mem : Out(geometry.emb_layouts.memory)
        Reads only.
    wload : Out(stream.Signature(rpaccel.rtl.mlp.wload_layout(geometry.engine)))
        ``{addr, data}``: one weight word to write.
    layers_done : In(WAIT_BITS).array(geometry.lanes)
        Each lane's completed layers, modulo 256.
    done : Out(WAIT_BITS)
        WEIGHTS commands completed, modulo 256.
    busy : Out(1)
        A command accepted and not complete, or lines or words inside.
    idle : Out(1)
        Not ``busy``.
    """

    #: Commands whose reads have started and whose words are not all sent (the emitter's queue).
    JOBS = 4

    @checked_init
    def __init__(self, geometry, *, buffer_lines=None):
        if not isinstance(geometry, ChipGeometry):
            raise TypeError(f"Weight loader geometry must be a ChipGeometry, not {geometry!r}")
        word_bytes, line_bytes = geometry.engine.word_bytes, geometry.line_bytes
        if word_bytes % line_bytes and line_bytes % word_bytes:
            raise ValueError(f"Weight loader needs weight words of {word_bytes} bytes to divide or be a multiple "
                             f"of the {line_bytes}-byte memory lines")
        max_burst = geometry.emb.max_burst
        if buffer_lines is None:
            config = geometry.config
            bytes_per_cycle = min(word_bytes, config.mem_bytes_per_cycle)
            in_flight = -(-config.mem_latency_cycles * bytes_per_cycle // line_bytes)
            buffer_lines = max(2 * max_burst, _pow2_at_least(in_flight + max_burst))
        elif not isinstance(buffer_lines, int) or isinstance(buffer_lines, bool) or buffer_lines < 2 * max_burst:
            raise ValueError(f"Weight loader buffer lines must be an integer of at least two bursts "
                             f"({2 * max_burst} lines), not {buffer_lines!r}")
        self.geometry, self.buffer_lines = geometry, buffer_lines
        #: Words per line (1 if a word spans lines) and lines per word (1 if a line holds words).
        self.words_per_line = max(line_bytes // word_bytes, 1)
        self.lines_per_word = max(word_bytes // line_bytes, 1)
        super().__init__({
            "cmd": In(stream.Signature(geometry.weights_layout())),
            "mem": Out(geometry.emb_layouts.memory),
            "wload": Out(stream.Signature(wload_layout(geometry.engine))),
            "layers_done": In(WAIT_BITS).array(geometry.lanes),
            "done": Out(WAIT_BITS),
            "busy": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        command = g.weights_layout()
        job_layout = data.StructLayout({"w_addr": command["w_addr"].shape, "words": command["words"].shape})
        m.submodules.jobs = jobs = Queue(job_layout.size, depth=self.JOBS, register="read")
        m.submodules.lines = lines = Queue(8 * g.line_bytes, depth=self.buffer_lines, register="read")
        m.submodules.credits = credits = CreditCounter(self.buffer_lines, need=g.emb.max_burst,
                                                       max_take=g.emb.max_burst)
        out_layout = data.StructLayout({"word": wload_layout(g.engine), "last": 1})
        m.submodules.out = out = RegisterSlice(out_layout)
        issuing = self._issuer(m, job_layout, jobs, credits)
        active, popped = self._emitter(m, job_layout, jobs, lines, out)

        m.d.comb += [lines.w_en.eq(self.mem.resp.valid), lines.w_data.eq(self.mem.resp.payload),
                     self.mem.resp.ready.eq(lines.w_rdy), credits.give.eq(popped)]
        m.d.comb += [self.busy.eq(issuing | (jobs.level != 0) | active | ~out.idle),
                     self.idle.eq(~self.busy)]
        return m

    def _lines(self, words):
        """The lines that hold ``words`` weight words (the last one possibly in part)."""
        P, S = self.words_per_line, self.lines_per_word
        return words * S if S > 1 else (words + P - 1) >> (P.bit_length() - 1)

    def _issuer(self, m, job_layout, jobs, credits):
        """Takes a command, waits for its lane, pushes its job for the emitter and issues its reads. Returns
        "holds a command or a request"."""
        g, S = self.geometry, self.lines_per_word
        max_burst = g.emb.max_burst
        cmd = self.cmd.payload
        held, started = Signal(name="held"), Signal(name="started")  # a command; its reads are being issued
        addr = Signal(g.addr_bits, name="read_addr")
        left = Signal(range(((1 << len(cmd.words)) - 1) * S + 1), name="read_lines")  # lines not yet requested
        lane, wait, wait_layers = Signal.like(cmd.lane), Signal(), Signal(WAIT_BITS)
        job = Signal(job_layout)
        req_valid = Signal()
        req_addr, req_length = Signal.like(addr), Signal.like(self.mem.req.payload.length)
        burst = Signal(range(max_burst + 1))
        issue = Signal()
        m.d.comb += [self.cmd.ready.eq(~held),
                     self.mem.req.valid.eq(req_valid), self.mem.req.payload.addr.eq(req_addr),
                     self.mem.req.payload.length.eq(req_length),
                     burst.eq(Mux(left >= max_burst, max_burst, left)),
                     credits.take.eq(Mux(issue, burst, 0)), jobs.w_data.eq(job)]

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [held.eq(1), started.eq(0), addr.eq(cmd.mem_addr), left.eq(self._lines(cmd.words)),
                         lane.eq(cmd.lane),
                         wait.eq(cmd.wait), wait_layers.eq(cmd.wait_layers), job.w_addr.eq(cmd.w_addr),
                         job.words.eq(cmd.words)]
        with m.If(held & ~started & (~wait | satisfied(Array(self.layers_done)[lane], wait_layers))):
            m.d.comb += jobs.w_en.eq(1)
            with m.If(jobs.w_rdy):
                m.d.sync += [started.eq(1), held.eq(left != 0)]
        m.d.comb += issue.eq(held & started & (~req_valid | self.mem.req.ready) & credits.room)
        with m.If(issue):
            m.d.sync += [req_valid.eq(1), req_addr.eq(addr), req_length.eq(burst - 1), addr.eq(addr + burst),
                         left.eq(left - burst), held.eq(left != burst)]
        with m.Elif(self.mem.req.ready):
            m.d.sync += req_valid.eq(0)
        return held | req_valid

    def _emitter(self, m, job_layout, jobs, lines, out):
        """Takes the jobs in order and cuts their lines into words for ``out``; counts completed commands.
        Returns ``(holds a job, a line is popped this cycle)``."""
        g, P, S = self.geometry, self.words_per_line, self.lines_per_word
        line_bits, word_bits = 8 * g.line_bytes, 8 * g.engine.word_bytes
        head = job_layout(jobs.r_data)
        active = Signal(name="job_active")
        w_addr = Signal.like(head.w_addr, name="write_addr")
        left = Signal.like(head.words, name="write_words")  # words of the job not yet sent to `out`
        final = Signal(name="final_word")                   # left == 1
        sub = Signal(range(P), name="word_in_line")
        part = Signal(range(S), name="line_in_word")
        gathered = Signal((S - 1) * line_bits, name="gathered")  # the earlier lines of a word spanning S lines
        collect, emit, popped = Signal(), Signal(), Signal()
        line = lines.r_data
        collecting = (part != S - 1) if S > 1 else 0
        word = Cat(gathered, line) if S > 1 else line.word_select(sub, word_bits) if P > 1 else line
        m.d.comb += [
            collect.eq(active & lines.r_rdy & collecting),
            out.i.valid.eq(active & lines.r_rdy & ~collecting),
            out.i.payload.word.addr.eq(w_addr), out.i.payload.word.data.eq(word), out.i.payload.last.eq(final),
            emit.eq(out.i.valid & out.i.ready),
            popped.eq(collect | (emit & ((sub == P - 1) | final))),
            lines.r_en.eq(popped),
        ]
        m.d.comb += [self.wload.valid.eq(out.o.valid), self.wload.payload.eq(out.o.payload.word),
                     out.o.ready.eq(self.wload.ready)]
        with m.If(collect):
            m.d.sync += [gathered.eq(Cat(gathered[line_bits:], line)), part.eq(part + 1)]
        with m.If(emit):
            m.d.sync += [w_addr.eq(w_addr + 1), left.eq(left - 1), final.eq(left == 2), part.eq(0),
                         sub.eq(sub + 1 if P > 1 else 0)]
            with m.If(final):
                m.d.sync += active.eq(0)

        # The next job: loaded when none is active or in the cycle of the last word; a job of no words completes
        # once every earlier word has been accepted.
        empty = head.words == 0
        take = jobs.r_rdy & Mux(empty, ~active & out.idle, ~active | (emit & final))
        m.d.comb += jobs.r_en.eq(take)
        with m.If(take & ~empty):
            m.d.sync += [active.eq(1), w_addr.eq(head.w_addr), left.eq(head.words), final.eq(head.words == 1),
                         sub.eq(0), part.eq(0)]
        completed = (self.wload.valid & self.wload.ready & out.o.payload.last) | (take & empty)
        m.d.sync += self.done.eq(self.done + completed)
        return active, popped
