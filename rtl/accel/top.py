"""RPAccel: the chip's top level, every unit joined (see docs/chip.md for the picture and the command set).

Host-facing, the chip has one command stream in (``cmd``) and one response stream out (``rsp``), and one memory
port, reached through the memory arbiter by the controller (MEM_WRITE and MEM_READ, which run only while every other
requester is idle), the fetcher, the embedding unit and the weight loader. The memory behind it is inside the
design (``memory="model"``: the timed memory model, for simulation; ``"bram"``: block RAM) or outside
(``"port"``: the port is the ``mem`` member, for a board's memory controller, and for synthesis with the port on
pins).
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..embedding import EmbeddingUnit
from ..memory import BlockRAMMemory, MemoryModel, checked_init
from ..mlp import MLPEngine
from .controller import Controller
from .fetch import Fetcher
from .isa import ChipGeometry
from .join import JoinUnit
from .lanes import LaneFrontEnd
from .memarb import MemoryArbiter, ReadBuffer
from .score import ScoreUnit
from .weights import WeightLoader

__all__ = ["RPAccel"]

#: Memory requesters behind the arbiter, in port order.
REQUESTERS = ("controller", "fetcher", "embedding", "weights")
#: Reads the memory arbiter lets be in flight: the memory model's latency (100 cycles at a line per cycle) needs
#: many to keep the embedding unit's misses and the weight loader's bursts going.
ARBITER_OUTSTANDING = 64
#: The memories.
MEMORIES = ("model", "bram", "port")


def _connect_ports(m, source, sink):
    """Connect two stream interfaces of possibly different but compatible payload shapes (``sink`` takes
    ``source``'s payload value)."""
    m.d.comb += [sink.valid.eq(source.valid), sink.payload.eq(source.payload), source.ready.eq(sink.ready)]


class RPAccel(wiring.Component):
    """The chip.

    Parameters
    ----------
    config : rpaccel.config.AccelConfig
    memory : str
        ``"model"`` (:class:`~rpaccel.rtl.memory.MemoryModel`, the configuration's latency and bandwidth),
        ``"bram"`` (:class:`~rpaccel.rtl.memory.BlockRAMMemory`) or ``"port"`` (no memory: the ``mem`` member).
    mem_lines : int, optional
        Lines of memory (default: all the configuration's ``mem_bytes``).
    storage : str
        The memory model's storage (``"memory"`` or ``"verilog"``).

    Members
    -------
    cmd : In(stream.Signature(command))
        Commands (``ChipGeometry.command_layout()``).
    rsp : Out(stream.Signature(response))
        Responses (``ChipGeometry.response_layout()``).
    mem : Out(MemoryPort)
        With ``memory="port"`` only: the memory port (``ChipGeometry.emb_layouts.memory``).
    """

    @checked_init
    def __init__(self, config, *, memory="model", mem_lines=None, storage="memory"):
        if memory not in MEMORIES:
            raise ValueError(f"Memory must be one of {', '.join(MEMORIES)}, not {memory!r}")
        self.config = config
        self.geometry = g = ChipGeometry(config)
        self.memory_kind, self.storage = memory, storage
        self.mem_lines = mem_lines if mem_lines is not None else 1 << g.addr_bits
        if (not isinstance(self.mem_lines, int) or self.mem_lines <= 0 or self.mem_lines & (self.mem_lines - 1)
                or self.mem_lines > 1 << g.addr_bits):
            raise ValueError(f"Memory lines must be a power of two of at most {1 << g.addr_bits}, not {mem_lines!r}")
        if storage == "verilog":
            from ..memory import STORAGE_VERILOG

            self.extra_verilog = STORAGE_VERILOG
        members = {"cmd": In(stream.Signature(g.command_layout())), "rsp": Out(stream.Signature(g.response_layout()))}
        if memory == "port":
            members["mem"] = Out(g.emb_layouts.memory)
        super().__init__(members)

    def _memory(self):
        g, config = self.geometry, self.config
        common = {"lines": self.mem_lines, "line_bytes": g.line_bytes, "addr_bits": g.addr_bits,
                  "max_burst": g.emb.max_burst}
        if self.memory_kind == "model":
            return MemoryModel(**common, latency=config.mem_latency_cycles, bytes_per_cycle=config.mem_bytes_per_cycle,
                               queue_depth=max(16, g.emb.max_outstanding), storage=self.storage,
                               jitter=config.mem_latency_jitter)
        return BlockRAMMemory(**common)

    def elaborate(self, platform):
        m = Module()
        g, config = self.geometry, self.config
        m.submodules.controller = ctrl = Controller(g, mem_lines=self.mem_lines, unit_responses=2)
        m.submodules.arbiter = arbiter = MemoryArbiter(g.emb_layouts.memory, len(REQUESTERS),
                                                       outstanding=ARBITER_OUTSTANDING)
        m.submodules.embedding = emb = EmbeddingUnit(config)
        m.submodules.fetcher = fetcher = Fetcher(g)
        m.submodules.join = join = JoinUnit(g)
        m.submodules.engine = engine = MLPEngine(config)
        m.submodules.score = score = ScoreUnit(g)
        m.submodules.weights = weights = WeightLoader(g)
        lanes = []
        for lane in range(g.lanes):
            m.submodules[f"lane{lane}"] = front = LaneFrontEnd(g, lane)
            lanes.append(front)

        # Host streams, memory.
        wiring.connect(m, wiring.flipped(self.cmd), ctrl.cmd)
        wiring.connect(m, ctrl.rsp, wiring.flipped(self.rsp))
        if self.memory_kind == "port":
            wiring.connect(m, arbiter.mem, wiring.flipped(self.mem))
        else:
            m.submodules.memory = memory = self._memory()
            wiring.connect(m, arbiter.mem, memory.port)
            m.d.comb += [memory.host.req.valid.eq(0), memory.host.resp.ready.eq(0)]
        # The embedding unit takes a missed line only when its pooled output can move (it waits on the joiner, and
        # so on the lanes and the weights they need from this port): its lines wait in a buffer of their own.
        port = g.emb_layouts.memory
        m.submodules.emb_reads = emb_reads = ReadBuffer(port, g.emb.max_outstanding + port.max_lines)
        wiring.connect(m, emb.mem, emb_reads.requester)
        for index, requester in enumerate((ctrl.mem, fetcher.mem, emb_reads.mem, weights.mem)):
            wiring.connect(m, requester, arbiter.req[index])

        # Instructions.
        wiring.connect(m, ctrl.fetch, fetcher.cmd)
        wiring.connect(m, ctrl.weights, weights.cmd)
        for lane, front in enumerate(lanes):
            wiring.connect(m, ctrl.lane[lane], front.cmd)
            wiring.connect(m, ctrl.score[lane], score.cmd[lane])

        # Data: fetcher -> embedding unit, lanes, joiner, score unit; embedding unit -> joiner, controller.
        _connect_ports(m, fetcher.lookup, emb.cmd)
        wiring.connect(m, emb.pooled, join.pooled)
        wiring.connect(m, emb.counters, ctrl.emb_counters)
        wiring.connect(m, fetcher.join, join.jobs)
        m.d.comb += [fetcher.surv_data.eq(score.surv_data), score.surv_addr.eq(fetcher.surv_addr)]
        for holder in range(g.holders):
            m.d.comb += [fetcher.results_done[holder].eq(score.results_done[holder]),
                         score.release[holder].eq(fetcher.release[holder])]
        wiring.connect(m, fetcher.rsp, ctrl.unit_rsp[0])
        wiring.connect(m, score.rsp, ctrl.unit_rsp[1])

        # Lanes: front ends between the engine and the units around it.
        for lane, front in enumerate(lanes):
            wiring.connect(m, fetcher.dense[lane], front.dense)
            wiring.connect(m, join.inter[lane], front.inter)
            wiring.connect(m, fetcher.index[lane], score.index[lane])
            wiring.connect(m, front.engine_cmd, getattr(engine, f"cmd{lane}"))
            wiring.connect(m, front.act, getattr(engine, f"act{lane}"))
            wiring.connect(m, getattr(engine, f"out{lane}"), front.out)
            wiring.connect(m, front.bottom, getattr(join, f"bottom{lane}"))
            wiring.connect(m, front.logits, getattr(score, f"logits{lane}"))
            m.d.comb += [front.weights_done.eq(weights.done), front.split.eq(ctrl.split)]
        wiring.connect(m, weights.wload, engine.wload)
        for lane in range(g.lanes):
            m.d.comb += weights.layers_done[lane].eq(engine.layers_done[lane])
        m.d.comb += [engine.split.eq(ctrl.split), join.split.eq(ctrl.split)]

        # Quiet (every unit idle) and busy, for the controller's barriers and counters.
        idle = [fetcher.idle, emb.idle, emb_reads.idle, join.idle, score.idle, weights.idle, arbiter.idle,
                engine.idle.all(), *(front.idle for front in lanes)]
        m.d.comb += ctrl.quiet.eq(Cat(idle).all())
        m.d.comb += [
            ctrl.busy.fetch.eq(fetcher.busy), ctrl.busy.embedding.eq(~emb.idle), ctrl.busy.join.eq(join.busy),
            ctrl.busy.interaction.eq(join.interaction_busy), ctrl.busy.weights.eq(weights.busy),
            ctrl.busy.lanes.eq(Cat(front.busy | ~engine.idle[lane] for lane, front in enumerate(lanes))),
            ctrl.busy.topk.eq(score.topk_busy), ctrl.busy.filters.eq(score.filter_busy[:g.filters]),
            ctrl.mem_read_lines.eq(arbiter.read_lines), ctrl.mem_write_lines.eq(arbiter.write_lines),
            arbiter.clear.eq(ctrl.clear_counters),
        ]
        return m

