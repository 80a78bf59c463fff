"""The chip's candidate fetcher: FETCH and EMB instructions to dense words, candidate indices and lookups.

docs/chip.md ("Units", "Memory: candidate records and lists") says what a FETCH does. The fetcher is three
decoupled stages:

* the **sequencer** takes the instructions in order. A FETCH (once its ``SURVIVORS`` result is complete) sends its
  join job, then walks its items twice, phase 1 and phase 2: per item it resolves the candidate index (``RANGE``:
  ``first + i``; ``SURVIVORS``: the survivors bank, read one cycle ahead; ``LIST``: the list lines a list reader
  fetches ahead), sends it to ``index[lane]`` (phase 1; a ``LIST`` index at or above ``count`` gives an ERROR
  response and becomes ``count - 1``) and puts out a *token*: the memory lines of the item's dense area (phase 1:
  the lines that hold the ``dense_words`` words sent, at most ``dense_lines`` and the record) or of its lookup area
  (phase 2: the rest of the record; a FETCH whose records have no lookup area has no phase 2). An EMB
  instruction is a token too, so it keeps its place among the lookups;
* the **issuer** computes a token's record address (``base + index * stride``, a pipeline stage of its own), turns
  the token into memory reads (bursts of at most ``max_burst`` lines) and a *descriptor* for the parser. A read is
  issued only when the response buffer has room for all its lines, so the fetcher always accepts the memory's
  responses: it never holds up the memory port that the embedding unit shares. List lines are requested between
  tokens, a line at a time, once the list queue has room for them;
* the **parser** takes the response lines in order, per descriptor, a step per cycle: a dense word (cut from the
  lines in pieces of ``min(rows, line_bytes)`` bytes) to ``dense[lane]``; the count of an item's lookups together
  with its first lookup, then a lookup per cycle to ``lookup`` as LOOKUP commands, then any unused lines of the
  lookup area, a line per cycle; a list line to the sequencer's list queue; an EMB command from its queue.

So with the memory keeping up, a FETCH takes about a cycle per dense word (at least a cycle per item) and a cycle
per lookup, plus the memory latency.

Phase 1 of a FETCH reads only dense areas and phase 2 only lookup areas, so a sub-batch's dense words never wait
behind its lookups. The joiner consumes a sub-batch's pooled vectors only after the lane has run the bottom MLP on
all of its dense words; dense words queued behind lookups could therefore deadlock the chip.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ...embedding import ceil_log2
from ..embedding import EmbeddingOp
from ..lib.queue import Queue
from ..memory import checked_init
from ..mlp import WAIT_BITS, satisfied
from .isa import INDEX_BITS, ChipGeometry, ErrorCode, FetchSource, Opcode, ResponseKind, survivors_address_layout

__all__ = ["Fetcher"]

# What a token and a descriptor are.
_DENSE, _LOOKUP, _EMB, _LIST = range(4)


class Fetcher(wiring.Component):
    """The candidate fetcher: executes FETCH and EMB instructions in order (see the module documentation).

    Parameters
    ----------
    geometry : rpaccel.rtl.accel.isa.ChipGeometry
    buffer_lines : int, optional
        Lines of the response buffer, the most lines the fetcher has requested and not parsed (at least
        ``2 * max_burst``; default the memory latency or four bursts, whichever is more, to a power of two).
    index_depth : int, optional
        Indices each lane's index queue holds (at least 2; default twice the accumulator rows). A FETCH puts out
        all of its indices before the lane can score any of them, so the depth bounds a FETCH's ``items``.
    emb_depth : int
        EMB instructions in flight (at least 2).

    Members
    -------
    cmd : In(stream.Signature(g.fetcher_instr_layout()))
        FETCH (``emb = 0``) and embedding unit commands (``emb = 1``), executed in order.
    mem : Out(g.emb_layouts.memory)
        Memory reads (records and lists).
    lookup : Out(stream.Signature(g.emb_layouts.command))
        To the embedding unit: each item's LOOKUP commands (phase 2), and the EMB commands in their place.
    dense : Out(stream.Signature(g.act_word_layout())).array(g.lanes)
        Each item's ``dense_words`` words, per lane.
    index : Out(stream.Signature(unsigned(INDEX_BITS))).array(g.lanes)
        Each item's candidate index, per lane (to the lane's score sequencer).
    join : Out(stream.Signature(g.join_job_layout()))
        One job per FETCH, sent when it starts.
    surv_addr : Out(survivors_address_layout(g))
        Read address into the survivors banks (read every cycle).
    surv_data : In(unsigned(INDEX_BITS))
        The index at ``surv_addr`` of the cycle before.
    results_done : In(WAIT_BITS).array(g.holders)
        Kept results completed per top-k unit (modulo 256).
    release : Out(1).array(g.holders)
        A one-cycle pulse when a ``SURVIVORS`` FETCH with ``release`` has read its last index.
    rsp : Out(stream.Signature(g.response_layout()))
        ERROR responses (a ``LIST`` index out of range).
    busy, idle : Out(1)
        An instruction in progress (items being walked, lines requested or being parsed: the ``BUSY_FETCH``
        counter); nothing in progress, queued, in flight or waiting for its taker.
    """

    @checked_init
    def __init__(self, geometry, *, buffer_lines=None, index_depth=None, emb_depth=2):
        if not isinstance(geometry, ChipGeometry):
            raise TypeError(f"Fetcher geometry must be a ChipGeometry, not {geometry!r}")
        g = self.g = geometry
        burst = g.emb.max_burst
        if buffer_lines is None:
            buffer_lines = 1 << ceil_log2(max(4 * burst, g.config.mem_latency_cycles))
        if index_depth is None:
            index_depth = 2 * g.config.acc_buffer_words
        for what, value, least in (("Response buffer lines", buffer_lines, 2 * burst),
                                   ("Index queue depth", index_depth, 2), ("EMB queue depth", emb_depth, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{what} must be an integer of at least {least}, not {value!r}")
        if 8 * g.line_bytes < g.lookup_entry_bits:
            raise ValueError(f"A memory line of {g.line_bytes} bytes is narrower than a {g.lookup_entry_bits}-bit "
                             "lookup entry")
        if g.rows % g.line_bytes and g.line_bytes % g.rows:
            raise ValueError(f"Dense words of {g.rows} bytes and memory lines of {g.line_bytes} bytes: one must "
                             "divide the other")
        self.buffer_lines, self.index_depth, self.emb_depth = buffer_lines, index_depth, emb_depth
        super().__init__({
            "cmd": In(stream.Signature(g.fetcher_instr_layout())),
            "mem": Out(g.emb_layouts.memory),
            "lookup": Out(stream.Signature(g.emb_layouts.command)),
            "dense": Out(stream.Signature(g.act_word_layout())).array(g.lanes),
            "index": Out(stream.Signature(unsigned(INDEX_BITS))).array(g.lanes),
            "join": Out(stream.Signature(g.join_job_layout())),
            "surv_addr": Out(survivors_address_layout(g)),
            "surv_data": In(unsigned(INDEX_BITS)),
            "results_done": In(WAIT_BITS).array(g.holders),
            "release": Out(1).array(g.holders),
            "rsp": Out(stream.Signature(g.response_layout())),
            "busy": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.g
        lb, burst, lanes = g.line_bytes, g.emb.max_burst, g.lanes
        line_bits = 8 * lb
        fetch_layout = g.fetch_layout()
        lane_shape = fetch_layout["lane"].shape
        # Dense words are cut from lines in chunks of min(rows, line) bytes: `per_line` chunks a line, `per_word`
        # a word (one of the two is 1).
        chunk = min(g.rows, lb)
        per_line, per_word = lb // chunk, g.rows // chunk
        entry_bits = g.lookup_entry_bits
        entries_per_line = line_bits // entry_bits
        indices_per_line = lb // 2
        # A token carries its record's place, ``base + index * stride + offset``, computed by the issuer (the
        # multiplication is a pipeline stage of its own).
        token_layout = data.StructLayout({"kind": 2, "lane": lane_shape, "words": 8, "lines": 16,
                                          "index": unsigned(INDEX_BITS), "base": unsigned(g.addr_bits),
                                          "stride": unsigned(16), "offset": unsigned(8)})
        desc_layout = data.StructLayout({"kind": 2, "lane": lane_shape, "words": 8, "lines": 16})
        list_depth = max(2, -(-self.buffer_lines // indices_per_line) + 2)

        m.submodules.responses = responses = fifo.SyncFIFOBuffered(width=line_bits, depth=self.buffer_lines)
        m.submodules.descriptors = descriptors = fifo.SyncFIFOBuffered(width=desc_layout.size,
                                                                        depth=self.buffer_lines)
        m.submodules.lists = lists = fifo.SyncFIFOBuffered(width=line_bits, depth=list_depth)
        m.submodules.embs = embs = fifo.SyncFIFOBuffered(width=g.emb_layouts.command.size, depth=self.emb_depth)
        index_queues = []
        for lane in range(lanes):
            queue = Queue(INDEX_BITS, depth=self.index_depth, register="read")
            m.submodules[f"index{lane}"] = queue
            index_queues.append(queue)
            m.d.comb += [self.index[lane].valid.eq(queue.r_rdy), self.index[lane].payload.eq(queue.r_data),
                         queue.r_en.eq(self.index[lane].ready)]

        # --- Sequencer -------------------------------------------------------------------------------------
        ins = Signal(fetch_layout)
        tag = Signal.like(self.cmd.payload.tag)
        active = Signal()
        phase = Signal()                # 0: dense areas (and indices); 1: lookup areas
        item = Signal(16)
        head = self.cmd.payload

        # The token register between the sequencer and the issuer.
        tok = Signal(token_layout)
        tok_valid = Signal()
        take_tok = Signal()
        tok_free = ~tok_valid | take_tok

        join_valid = Signal()
        join_free = ~join_valid | self.join.ready
        m.d.comb += self.join.valid.eq(join_valid)
        with m.If(self.join.ready):
            m.d.sync += join_valid.eq(0)

        rsp_valid = Signal()
        rsp_free = ~rsp_valid | self.rsp.ready
        m.d.comb += self.rsp.valid.eq(rsp_valid)
        with m.If(self.rsp.ready):
            m.d.sync += rsp_valid.eq(0)

        fetch = head.arg.fetch
        waited = satisfied(Array(self.results_done)[fetch.unit], fetch.wait_results)
        is_fetch = self.cmd.valid & ~head.emb & ~active
        start = is_fetch & join_free & ((fetch.source != FetchSource.SURVIVORS) | waited)
        pass_emb = self.cmd.valid & head.emb & ~active & tok_free & embs.w_rdy
        m.d.comb += [self.cmd.ready.eq(start | pass_emb),
                     embs.w_en.eq(pass_emb), embs.w_data.eq(head.arg.emb)]
        with m.If(start):
            m.d.sync += [ins.eq(fetch), tag.eq(head.tag), active.eq(fetch.items != 0), phase.eq(0), item.eq(0),
                         join_valid.eq(1), self.join.payload.lane.eq(fetch.lane),
                         self.join.payload.items.eq(fetch.items), self.join.payload.params.eq(fetch.join)]

        # The item's index.
        source = ins.source
        slot = item[:ceil_log2(indices_per_line)] if indices_per_line > 1 else Const(0, 1)
        list_index = lists.r_data.word_select(slot, 16)
        index = Signal(16)
        index_ready = Signal()
        with m.Switch(source):
            with m.Case(FetchSource.SURVIVORS):
                m.d.comb += [index.eq(self.surv_data), index_ready.eq(1)]
            with m.Case(FetchSource.LIST):
                m.d.comb += [index.eq(list_index), index_ready.eq(lists.r_rdy)]
            with m.Default():
                m.d.comb += [index.eq(ins.first + item), index_ready.eq(1)]
        error = (source == FetchSource.LIST) & (index >= ins.count)
        used = Mux(error, ins.count - 1, index)[:16]
        report = error & ~phase
        index_room = Array(q.w_rdy for q in index_queues)[ins.lane]
        emit = active & index_ready & tok_free & (phase | index_room) & (~report | rsp_free)
        last_item = item == ins.items - 1

        # Lines of an item's dense area that hold the words sent (at most the record), and of its lookup area.
        needed = (ins.dense_words * per_word + per_line - 1) >> ceil_log2(per_line)
        in_record = Mux(ins.stride < ins.dense_lines, ins.stride, ins.dense_lines)
        dense_read = Mux(needed < in_record, needed, in_record)
        has_lookups = ins.stride > ins.dense_lines
        lookup_lines = Mux(has_lookups, ins.stride - ins.dense_lines, 0)

        with m.If(emit):
            m.d.sync += [tok_valid.eq(1), tok.kind.eq(Mux(phase, _LOOKUP, _DENSE)), tok.lane.eq(ins.lane),
                         tok.words.eq(ins.dense_words),
                         tok.lines.eq(Mux(phase, lookup_lines, dense_read)),
                         tok.index.eq(used), tok.base.eq(ins.base), tok.stride.eq(ins.stride),
                         tok.offset.eq(Mux(phase, ins.dense_lines, 0)),
                         item.eq(item + 1)]
            with m.If(last_item):
                m.d.sync += [item.eq(0), phase.eq(1)]
                with m.If(phase | ~has_lookups):     # records without a lookup area: no phase 2
                    m.d.sync += active.eq(0)
                    with m.If((source == FetchSource.SURVIVORS) & ins.release):
                        m.d.comb += Array(self.release)[ins.unit].eq(1)
            m.d.comb += lists.r_en.eq((source == FetchSource.LIST) & ((slot == indices_per_line - 1) | last_item))
        with m.Elif(pass_emb):
            m.d.sync += [tok_valid.eq(1), tok.kind.eq(_EMB), tok.lines.eq(0)]
        with m.Elif(take_tok):
            m.d.sync += tok_valid.eq(0)
        for lane, queue in enumerate(index_queues):
            m.d.comb += [queue.w_en.eq(emit & ~phase & (ins.lane == lane)), queue.w_data.eq(used)]
        with m.If(emit & report):
            m.d.sync += [rsp_valid.eq(1), self.rsp.payload.eq(0), self.rsp.payload.kind.eq(ResponseKind.ERROR),
                         self.rsp.payload.tag.eq(tag), self.rsp.payload.last.eq(1),
                         self.rsp.payload.code.eq(ErrorCode.INDEX), self.rsp.payload.index.eq(Opcode.FETCH.value),
                         self.rsp.payload.score.eq(index)]

        # Survivors: the address of the item the sequencer works on in the next cycle, so its index is there.
        position = Signal(16)
        with m.If(start):
            m.d.comb += position.eq(fetch.first)
        with m.Elif(emit):
            m.d.comb += position.eq(ins.first + Mux(last_item, 0, item + 1))
        with m.Else():
            m.d.comb += position.eq(ins.first + item)
        m.d.comb += [self.surv_addr.unit.eq(Mux(start, fetch.unit, ins.unit)),
                     self.surv_addr.bank.eq(Mux(start, fetch.wait_results[0], ins.wait_results[0])),
                     self.surv_addr.position.eq(position)]

        # --- Issuer: tokens to memory reads and descriptors ------------------------------------------------------
        req_valid = Signal()
        req = Signal(self.mem.req.payload.shape())
        req_free = ~req_valid | self.mem.req.ready
        m.d.comb += [self.mem.req.valid.eq(req_valid), self.mem.req.payload.eq(req)]
        with m.If(self.mem.req.ready):
            m.d.sync += req_valid.eq(0)

        credit = Signal(range(self.buffer_lines + 1), init=self.buffer_lines)
        response_taken = Signal()
        left = Signal(16)               # lines of the current token still to request
        addr = Signal(g.addr_bits)
        size = Signal(range(burst + 1))
        m.d.comb += size.eq(Mux(left > burst, burst, left))
        issue = (left != 0) & req_free & (credit >= size)

        # The list reader: a LIST FETCH's list lines, once per phase, a line per request, ahead of the sequencer
        # by as many lines as the list queue has room for.
        list_lines = (ins.items + indices_per_line - 1) >> ceil_log2(indices_per_line)
        list_active = Signal()
        list_phase = Signal()
        list_line = Signal(16)
        list_credit = Signal(range(list_depth + 1), init=list_depth)
        issue_list = (list_active & (left == 0) & req_free & (credit != 0) & (list_credit != 0)
                      & descriptors.w_rdy)
        with m.If(start):
            m.d.sync += [list_active.eq((fetch.source == FetchSource.LIST) & (fetch.items != 0)),
                         list_phase.eq(0), list_line.eq(0)]
        with m.Elif(issue_list):
            m.d.sync += list_line.eq(list_line + 1)
            with m.If(list_line == list_lines - 1):
                m.d.sync += [list_line.eq(0), list_phase.eq(1)]
                with m.If(list_phase | ~has_lookups):
                    m.d.sync += list_active.eq(0)
        m.d.sync += list_credit.eq(list_credit - issue_list + (lists.r_en & lists.r_rdy))

        m.d.comb += take_tok.eq(tok_valid & descriptors.w_rdy & ~issue_list &
                                ((left == 0) | (issue & (left <= burst))))
        desc_in = Signal(desc_layout)
        m.d.comb += [descriptors.w_en.eq(issue_list | take_tok), descriptors.w_data.eq(desc_in)]
        with m.If(issue_list):
            m.d.comb += [desc_in.kind.eq(_LIST), desc_in.lines.eq(1)]
        with m.Else():
            m.d.comb += [desc_in.kind.eq(tok.kind), desc_in.lane.eq(tok.lane), desc_in.words.eq(tok.words),
                         desc_in.lines.eq(tok.lines)]

        with m.If(issue):
            m.d.sync += [req_valid.eq(1), req.write.eq(0), req.addr.eq(addr), req.length.eq(size - 1),
                         addr.eq(addr + size), left.eq(left - size)]
        with m.Elif(issue_list):
            m.d.sync += [req_valid.eq(1), req.write.eq(0), req.addr.eq(ins.list_addr + list_line),
                         req.length.eq(0)]
        with m.If(take_tok):
            m.d.sync += [left.eq(tok.lines), addr.eq(tok.base + tok.index * tok.stride + tok.offset)]
        m.d.sync += credit.eq(credit - Mux(issue, size, 0) - issue_list + response_taken)
        m.d.comb += [responses.w_en.eq(self.mem.resp.valid), responses.w_data.eq(self.mem.resp.payload),
                     self.mem.resp.ready.eq(responses.w_rdy)]

        # --- Parser: response lines per descriptor ---------------------------------------------------------------
        desc = Signal(desc_layout)
        p_active = Signal()
        lines = Signal(16)              # lines of the descriptor not yet taken from the response buffer
        # Dense words, or lookups (once counted: at most the entries of 2**16 lines), or the EMB command, to send.
        words = Signal(16 + ceil_log2(entries_per_line))
        counted = Signal()
        line_slot = Signal(range(max(per_line, 2)))
        word_slot = Signal(range(max(per_word, 2)))
        entry_slot = Signal(range(max(entries_per_line, 2)))
        partial = Signal(max((per_word - 1) * 8 * chunk, 1))
        lines_next, words_next = Signal.like(lines), Signal.like(words)
        m.d.comb += [lines_next.eq(lines - response_taken), words_next.eq(words)]
        line = responses.r_data
        have_line = responses.r_rdy
        m.d.comb += responses.r_en.eq(response_taken)
        kind = desc.kind

        # Dense words.
        have_chunk = (lines == 0) | have_line
        piece = Mux(lines == 0, 0, line.word_select(line_slot, 8 * chunk) if per_line > 1 else line)
        word_end = (word_slot == per_word - 1) if per_word > 1 else Const(1)
        dense_ready = Array(self.dense[lane].ready for lane in range(lanes))[desc.lane]
        dense_on = p_active & (kind == _DENSE) & (words != 0) & have_chunk
        dense_step = dense_on & (~word_end | dense_ready)
        for lane in range(lanes):
            m.d.comb += [self.dense[lane].valid.eq(dense_on & word_end & (desc.lane == lane)),
                         self.dense[lane].payload.eq(Cat(partial, piece) if per_word > 1 else piece)]
        with m.If(dense_step):
            m.d.comb += response_taken.eq((lines != 0) & ((line_slot == per_line - 1) | (word_end & (words == 1))))
            if per_line > 1:
                m.d.sync += line_slot.eq(line_slot + 1)
            if per_word > 1:
                m.d.sync += word_slot.eq(Mux(word_end, 0, word_slot + 1))
                with m.If(~word_end):
                    m.d.sync += partial.word_select(word_slot, 8 * chunk).eq(piece)
            with m.If(word_end):
                m.d.comb += words_next.eq(words - 1)

        # Lookups: the count, then the entries, then what is left of the lookup area. The count (entry 0) and the
        # first lookup (entry 1) go in one step when they share a line.
        entry = line.word_select(entry_slot, entry_bits) if entries_per_line > 1 else line
        on_lookups = p_active & (kind == _LOOKUP) & (lines != 0) & have_line
        capacity = (lines << ceil_log2(entries_per_line)) - 1
        count = Signal.like(words)
        m.d.comb += count.eq(Mux(entry > capacity, capacity, entry))
        counting = on_lookups & ~counted
        lookup_on = on_lookups & counted & (words != 0)
        if entries_per_line > 1:
            first = line.word_select(1, entry_bits)
            count_step = counting & ((count == 0) | self.lookup.ready)
            m.d.comb += self.lookup.valid.eq(lookup_on | (counting & (count != 0)))
        else:
            first = entry
            count_step = counting
            m.d.comb += self.lookup.valid.eq(lookup_on)
        sent = Mux(counting, first, entry)
        fields = data.View(g.lookup_entry_layout(), sent[:g.lookup_entry_layout().size])
        final = Mux(counting, count == 1, words == 1)
        with m.If(count_step):
            m.d.sync += counted.eq(1)
            if entries_per_line > 1:
                m.d.comb += [words_next.eq(Mux(count == 0, 0, count - 1)),
                             response_taken.eq((count <= 1) | (entries_per_line == 2))]
                m.d.sync += entry_slot.eq(2 % entries_per_line)
            else:
                m.d.comb += [words_next.eq(count), response_taken.eq(1)]
        with m.Elif(lookup_on & self.lookup.ready):
            m.d.comb += [words_next.eq(words - 1),
                         response_taken.eq((entry_slot == entries_per_line - 1) | final)]
            if entries_per_line > 1:
                m.d.sync += entry_slot.eq(entry_slot + 1)
        with m.Elif(on_lookups & counted & (words == 0)):
            m.d.comb += response_taken.eq(1)

        # EMB commands and list lines.
        emb_on = p_active & (kind == _EMB) & (words != 0) & embs.r_rdy
        with m.If(emb_on & self.lookup.ready):
            m.d.comb += [words_next.eq(0), embs.r_en.eq(1)]
        with m.If(p_active & (kind == _LIST) & have_line):
            m.d.comb += response_taken.eq(1)
        m.d.comb += [lists.w_en.eq(p_active & (kind == _LIST) & have_line), lists.w_data.eq(line)]

        with m.If(emb_on):
            m.d.comb += self.lookup.valid.eq(1)
        with m.If(kind == _EMB):
            m.d.comb += self.lookup.payload.eq(embs.r_data)
        with m.Else():
            m.d.comb += [self.lookup.payload.op.eq(EmbeddingOp.LOOKUP), self.lookup.payload.table.eq(fields.table),
                         self.lookup.payload.arg.lookup.id.eq(fields.id),
                         self.lookup.payload.arg.lookup.last.eq(fields.last | final),
                         self.lookup.payload.arg.lookup.end.eq(final)]

        # The next descriptor is taken in the cycle the current one completes.
        finish = p_active & (lines_next == 0) & (words_next == 0)
        next_desc = data.View(desc_layout, descriptors.r_data)
        load = descriptors.r_rdy & (~p_active | finish)
        m.d.comb += descriptors.r_en.eq(load)
        with m.If(load):
            m.d.sync += [p_active.eq(1), desc.eq(next_desc), lines.eq(next_desc.lines), counted.eq(0),
                         line_slot.eq(0), word_slot.eq(0), entry_slot.eq(0)]
            with m.Switch(next_desc.kind):
                with m.Case(_DENSE):
                    m.d.sync += words.eq(next_desc.words)
                with m.Case(_EMB):
                    m.d.sync += words.eq(1)
                with m.Default():
                    m.d.sync += words.eq(0)
        with m.Else():
            m.d.sync += [p_active.eq(p_active & ~finish), lines.eq(lines_next), words.eq(words_next)]

        # --- Status --------------------------------------------------------------------------------------------
        # Busy: an instruction in progress (its items walked, its lines requested or parsed). Not busy, but not
        # idle: only results waiting for their takers (indices for the score unit, a join job, an ERROR).
        busy = (active | tok_valid | (left != 0) | req_valid | (credit != self.buffer_lines) | descriptors.r_rdy
                | p_active | list_active | lists.r_rdy)
        waiting = join_valid | rsp_valid | Cat(q.r_rdy for q in index_queues).any()
        m.d.comb += [self.busy.eq(busy), self.idle.eq(~busy & ~waiting & ~self.cmd.valid)]
        return m
